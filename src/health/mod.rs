//! Active health checks: TCP connects and HTTP GETs, run on their own
//! schedule (first probe after a random part of the interval, so checks
//! spread out), bounded in concurrency, and never on the API's or DNS's
//! path. Each check keeps a rise/fall state; the instance's check health is
//! the worst of its checks, and only a change of it is written to the
//! registry. Knows the registry; the registry does not know it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::registry::model::{Check, CheckTarget, Health, Instance, InstanceId, ServiceName};
use crate::registry::{Observer, Registry, ServiceView};

/// Probes running at once, at most.
const MAX_CONCURRENT_PROBES: usize = 256;

/// One check's state: its verdict and how many outcomes in a row have
/// disagreed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckState {
    /// The verdict.
    pub health: Health,
    /// Consecutive outcomes against the verdict.
    pub streak: u32,
    /// No probe has run yet: a starting-critical check passes on its first pass.
    pub fresh: bool,
}

impl CheckState {
    /// The state before the first probe.
    pub fn new(initial: Health) -> Self {
        Self {
            health: initial,
            streak: 0,
            fresh: true,
        }
    }
}

/// The next state after a probe's `outcome` (passing, warning or critical):
/// a healthy check turns critical after `fall` failures in a row, a critical
/// one recovers after `rise` non-critical outcomes in a row (or its very
/// first one), and between passing and warning it follows the latest outcome.
pub fn next_state(state: CheckState, outcome: Health, rise: u32, fall: u32) -> CheckState {
    let fresh = false;
    match (state.health, outcome) {
        // Still waiting for a first pass, if it never had one.
        (Health::Critical, Health::Critical) => CheckState { streak: 0, ..state },
        (Health::Critical, ok) if state.fresh || state.streak + 1 >= rise => CheckState {
            health: ok,
            streak: 0,
            fresh,
        },
        (Health::Critical, _) => CheckState {
            streak: state.streak + 1,
            fresh,
            ..state
        },
        (_, Health::Critical) if state.streak + 1 >= fall => CheckState {
            health: Health::Critical,
            streak: 0,
            fresh,
        },
        (_, Health::Critical) => CheckState {
            streak: state.streak + 1,
            fresh,
            ..state
        },
        (_, ok) => CheckState {
            health: ok,
            streak: 0,
            fresh,
        },
    }
}

/// Runs one probe: its outcome and a line saying what happened.
async fn probe(
    target: &CheckTarget,
    timeout: Duration,
    http: &reqwest::Client,
) -> (Health, String) {
    let timed_out = || {
        format!(
            "no answer within {}",
            crate::registry::model::format_duration(timeout)
        )
    };
    match target {
        CheckTarget::Tcp(address) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(_)) => (Health::Passing, format!("connected to {address}")),
                Ok(Err(e)) => (Health::Critical, format!("connect to {address}: {e}")),
                Err(_) => (Health::Critical, timed_out()),
            }
        }
        CheckTarget::Http(url) => match http.get(url).timeout(timeout).send().await {
            Ok(r) => {
                let status = r.status();
                let health = if status.is_success() {
                    Health::Passing
                } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Health::Warning
                } else {
                    Health::Critical
                };
                (health, format!("HTTP {status}"))
            }
            Err(e) if e.is_timeout() => (Health::Critical, timed_out()),
            Err(e) => (Health::Critical, format!("GET {url}: {e}")),
        },
    }
}

/// The latest result of one check, for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The check (`tcp 10.0.0.5:8080`, `http http://...`).
    pub check: String,
    /// The check's verdict after its latest probe.
    pub health: Health,
    /// What the latest probe saw.
    pub output: String,
    /// When (RFC 3339).
    pub at: String,
}

type Key = (ServiceName, InstanceId);

/// The checks running for one instance.
struct Running {
    checks: Vec<Check>,
    tasks: Vec<AbortHandle>,
    /// The latest result of each check (none before its first probe).
    reports: Arc<Mutex<Vec<Option<CheckReport>>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The check scheduler; a registry observer.
pub struct Checker {
    /// Where results go; set once the registry is open.
    registry: OnceLock<Weak<Registry>>,
    /// Running checks by service, then instance: a change to one service
    /// looks only at that service's.
    running: Mutex<HashMap<ServiceName, HashMap<InstanceId, Running>>>,
    /// Bounds the probes in flight.
    limit: Arc<Semaphore>,
    /// HTTP client for HTTP checks (no redirects followed: a 3xx is not healthy).
    http: reqwest::Client,
}

impl Checker {
    /// A checker with nothing running.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            registry: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
            limit: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        })
    }

    /// Gives the checker the registry to report to.
    pub fn attach(&self, registry: &Arc<Registry>) {
        let _ = self.registry.set(Arc::downgrade(registry));
    }

    /// The latest result of each check of `id` of `service`.
    pub fn reports(&self, service: &ServiceName, id: &InstanceId) -> Vec<CheckReport> {
        let running = self.running.lock();
        let Some(r) = running.get(service).and_then(|by_id| by_id.get(id)) else {
            return Vec::new();
        };
        r.reports.lock().iter().flatten().cloned().collect()
    }

    /// How many checks are running (for logs and tests).
    pub fn running(&self) -> usize {
        self.running
            .lock()
            .values()
            .flat_map(|by_id| by_id.values())
            .map(|r| r.checks.len())
            .sum()
    }

    fn start(self: &Arc<Self>, key: Key, checks: Vec<Check>, initial: Health) -> Running {
        // The instance's verdict: the worst of its checks' verdicts.
        let verdicts = Arc::new(Mutex::new((vec![initial; checks.len()], initial)));
        let reports = Arc::new(Mutex::new(vec![None; checks.len()]));
        let tasks = checks
            .iter()
            .enumerate()
            .map(|(n, check)| {
                let (checker, key, checks, check) = (Arc::downgrade(self), key.clone(), checks.clone(), check.clone());
                let (verdicts, reports) = (verdicts.clone(), reports.clone());
                tokio::spawn(async move {
                    let jitter = rand::rng().random_range(Duration::ZERO..check.interval);
                    tokio::time::sleep(jitter).await;
                    let mut state = CheckState::new(initial);
                    let mut ticks = tokio::time::interval(check.interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let Some(checker) = checker.upgrade() else { return };
                        let (outcome, output) = {
                            let _permit = checker.limit.acquire().await;
                            probe(&check.target, check.timeout, &checker.http).await
                        };
                        state = next_state(state, outcome, check.rise, check.fall);
                        reports.lock()[n] = Some(CheckReport {
                            check: match &check.target {
                                CheckTarget::Tcp(a) => format!("tcp {a}"),
                                CheckTarget::Http(u) => format!("http {u}"),
                            },
                            health: state.health,
                            output,
                            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                        });
                        let (worst, reported) = {
                            let mut v = verdicts.lock();
                            v.0[n] = state.health;
                            (v.0.iter().copied().max().unwrap_or(Health::Passing), v.1)
                        };
                        if worst == reported {
                            continue;
                        }
                        // Counted as reported only once written, so a result
                        // that could not be recorded is tried again.
                        let Some(registry) = checker.registry.get().and_then(Weak::upgrade) else { continue };
                        match registry.set_check_health(&key.0, &key.1, checks.clone(), worst).await {
                            Ok(()) => verdicts.lock().1 = worst,
                            Err(error) => {
                                tracing::warn!(%error, service = %key.0, id = %key.1, "could not record a check result");
                            }
                        }
                    }
                })
                .abort_handle()
            })
            .collect();
        Running {
            checks,
            tasks,
            reports,
        }
    }
}

impl Checker {
    /// Starts, restarts or stops the checks of instance `id` of `service`
    /// to match `instance` (`None`: it is gone).
    fn follow(
        self: &Arc<Self>,
        by_id: &mut HashMap<InstanceId, Running>,
        service: &ServiceName,
        id: &InstanceId,
        instance: Option<&Instance>,
    ) {
        let wanted = instance.map_or(&[][..], |i| &i.spec.checks[..]);
        let current = by_id.get(id).map(|r| &r.checks[..]);
        if current.unwrap_or(&[]) == wanted {
            return;
        }
        // Dropping a `Running` stops its probes.
        by_id.remove(id);
        if let Some(instance) = instance.filter(|i| !i.spec.checks.is_empty()) {
            let key = (service.clone(), id.clone());
            let started = self.start(key, instance.spec.checks.to_vec(), instance.check_health);
            by_id.insert(id.clone(), started);
        }
    }
}

impl Observer for Arc<Checker> {
    fn services_changed(&self, services: &[ServiceView<'_>], _index: u64) {
        let mut running = self.running.lock();
        for service in services {
            let mut by_id = running.remove(service.name).unwrap_or_default();
            match &service.changed {
                // Only these instances changed: the others' checks go on.
                Some(changed) => {
                    for &(id, instance) in changed {
                        self.follow(&mut by_id, service.name, id, instance.map(|i| &**i));
                    }
                }
                None => {
                    let present: HashSet<&InstanceId> =
                        service.instances.iter().map(|i| &i.id).collect();
                    by_id.retain(|id, _| present.contains(id));
                    for instance in &service.instances {
                        self.follow(&mut by_id, service.name, &instance.id, Some(instance));
                    }
                }
            }
            if !by_id.is_empty() {
                running.insert(service.name.clone(), by_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Critical, Passing, Warning};

    #[tokio::test]
    async fn only_the_instances_that_changed_have_their_checks_touched() {
        use crate::registry::model::InstanceSpec;
        use crate::registry::store::MemoryStore;
        use std::time::Duration;

        let checker = Checker::new();
        let registry = Registry::open(Arc::new(MemoryStore::new()), Arc::new(checker.clone()))
            .await
            .unwrap();
        let web = ServiceName::parse("web").unwrap();
        let (a, b) = (
            InstanceId::parse("a").unwrap(),
            InstanceId::parse("b").unwrap(),
        );
        // A TCP check of a closed loopback port: it fails, harmlessly.
        let check = |port: u16| Check {
            target: CheckTarget::Tcp(format!("127.0.0.1:{port}")),
            interval: Duration::from_secs(3600),
            timeout: Duration::from_millis(100),
            rise: 1,
            fall: 1,
        };
        let mut with_check = InstanceSpec::new("10.0.0.1".parse().unwrap(), 80);
        with_check.checks = Box::new([check(9)]);
        registry
            .put_instance(&web, &a, with_check.clone(), None)
            .await
            .unwrap();
        let plain = InstanceSpec::new("10.0.0.2".parse().unwrap(), 80);
        registry
            .put_instance(&web, &b, plain.clone(), None)
            .await
            .unwrap();
        assert_eq!(checker.running(), 1);
        let tasks = |checker: &Checker| {
            checker.running.lock()[&web][&a]
                .tasks
                .iter()
                .map(|t| t.id())
                .collect::<Vec<_>>()
        };
        let first = tasks(&checker);

        // Another instance changes: a's probes go on untouched.
        let mut moved = plain;
        moved.port = 81;
        registry.put_instance(&web, &b, moved, None).await.unwrap();
        assert_eq!(tasks(&checker), first);

        // a's checks change: its probes are replaced.
        with_check.checks = Box::new([check(9), check(10)]);
        registry
            .put_instance(&web, &a, with_check, None)
            .await
            .unwrap();
        assert_eq!(checker.running(), 2);
        assert_ne!(tasks(&checker), first);

        // a goes: so do its probes, and the service's entry.
        registry.delete_instance(&web, &a, None).await.unwrap();
        assert_eq!(checker.running(), 0);
        assert!(checker.running.lock().get(&web).is_none());
    }

    fn run(initial: Health, outcomes: &[Health], rise: u32, fall: u32) -> Vec<Health> {
        let mut state = CheckState::new(initial);
        outcomes
            .iter()
            .map(|&o| {
                state = next_state(state, o, rise, fall);
                state.health
            })
            .collect()
    }

    #[test]
    fn a_new_check_passes_on_its_first_pass() {
        assert_eq!(
            run(Critical, &[Critical, Passing], 2, 3),
            [Critical, Passing]
        );
    }

    #[test]
    fn fall_failures_in_a_row_make_it_critical() {
        assert_eq!(
            run(
                Passing,
                &[Critical, Critical, Passing, Critical, Critical, Critical],
                2,
                3
            ),
            [Passing, Passing, Passing, Passing, Passing, Critical]
        );
    }

    #[test]
    fn rise_passes_in_a_row_bring_it_back() {
        let mut outcomes = vec![Critical; 3];
        outcomes.extend([Passing, Critical, Passing, Passing]);
        let seen = run(Passing, &outcomes, 2, 3);
        assert_eq!(seen[2..], [Critical, Critical, Critical, Critical, Passing]);
    }

    #[test]
    fn warning_follows_the_latest_outcome_while_not_critical() {
        assert_eq!(
            run(Passing, &[Warning, Passing, Warning], 2, 3),
            [Warning, Passing, Warning]
        );
    }
}
