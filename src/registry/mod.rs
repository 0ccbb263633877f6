//! The registry: the truth about services and their instances.
//!
//! It validates nothing itself (its inputs are validated types). Every write
//! goes through one committer task, which groups the writes waiting at that
//! moment into one store commit (group commit: one fsync for many writes),
//! numbers them with a monotonically increasing index, applies them only
//! once the store has returned, tells the [`Observer`] which services
//! changed, and only then answers the writers. A write that is answered is
//! durable; a write that failed changed nothing. It knows nothing of DNS or
//! HTTP.

pub mod codec;
mod committer;
pub mod events;
mod leases;
pub mod model;
pub mod store;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use committer::{Queued, Write, Written};
use model::{Instance, InstanceId, InstanceSpec, ServiceName, ServiceSettings};
use store::{Store, StoreError, StoredState};

/// The current state of one service, as observers and readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The service.
    pub name: ServiceName,
    /// Its settings, if any were set (defaults apply otherwise).
    pub settings: Option<ServiceSettings>,
    /// Its instances, ordered by id. Empty when the service is gone.
    pub instances: Vec<Arc<Instance>>,
}

impl ServiceState {
    /// Whether the service exists: it has instances or settings (DESIGN §1).
    pub fn exists(&self) -> bool {
        self.settings.is_some() || !self.instances.is_empty()
    }

    /// The service as an observer sees it, every instance possibly changed.
    pub fn view(&self) -> ServiceView<'_> {
        ServiceView {
            name: &self.name,
            settings: self.settings.as_ref(),
            instances: self.instances.iter().collect(),
            changed: None,
        }
    }
}

/// One changed service as observers see it, borrowed from the registry for
/// the length of the call: handing out references costs nothing per
/// instance, where owned copies cost two atomic operations on every
/// instance's count, which for large services was most of a commit's time.
#[derive(Debug, Clone)]
pub struct ServiceView<'a> {
    /// The service.
    pub name: &'a ServiceName,
    /// Its settings, if any were set (defaults apply otherwise).
    pub settings: Option<&'a ServiceSettings>,
    /// Its instances, ordered by id. Empty when the service is gone.
    pub instances: Vec<&'a Arc<Instance>>,
    /// The instances this change put or removed, by id, each with its new
    /// state (`None`: removed); `None` when any may have changed (at
    /// start-up and after an import).
    pub changed: Option<Vec<InstanceChange<'a>>>,
}

/// An instance a change put (with its new state) or removed (`None`).
pub type InstanceChange<'a> = (&'a InstanceId, Option<&'a Arc<Instance>>);

impl ServiceView<'_> {
    /// Whether the service exists: it has instances or settings (DESIGN §1).
    pub fn exists(&self) -> bool {
        self.settings.is_some() || !self.instances.is_empty()
    }

    /// An owned copy.
    pub fn to_state(&self) -> ServiceState {
        ServiceState {
            name: self.name.clone(),
            settings: self.settings.cloned(),
            instances: self.instances.iter().map(|&i| i.clone()).collect(),
        }
    }
}

/// Told about every committed change, synchronously, before the writes that
/// caused it are acknowledged: whatever it publishes is visible by then.
pub trait Observer: Send + Sync + 'static {
    /// `services` changed (each at most once, in name order), as of `index`;
    /// each is given whole, with what changed in it. At start-up, every
    /// service at once.
    fn services_changed(&self, services: &[ServiceView<'_>], index: u64);
}

/// Several observers, told in order.
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn services_changed(&self, services: &[ServiceView<'_>], index: u64) {
        for observer in &self.0 {
            observer.services_changed(services, index);
        }
    }
}

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such service or instance.
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write (`cas`), or an import over existing data, found
    /// another state than the caller expected.
    #[error("{what} is at index {actual}, not {expected}")]
    Conflict {
        /// What was being written.
        what: String,
        /// The index the caller expected.
        expected: u64,
        /// The index it is at (0 when absent).
        actual: u64,
    },
    /// A heartbeat for an instance registered without a lease.
    #[error("{0} has no lease to renew; register it with a lease")]
    NoLease(String),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Summary of one service for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSummary {
    /// The service.
    pub name: ServiceName,
    /// How many instances it has, in any state.
    pub instances: usize,
    /// How many of them are served.
    pub served: usize,
    /// Its settings, if set.
    pub settings: Option<ServiceSettings>,
}

/// What the registry and its committer share.
struct Shared {
    /// Where changes are made durable before they are applied.
    store: Arc<dyn Store>,
    /// The committed state. The committer holds it only to apply a committed
    /// batch; readers only to copy out.
    state: RwLock<StoredState>,
    /// The index of the last applied change, readable without a lock.
    index: AtomicU64,
    /// Told of every change (the DNS projection, in the server).
    observer: Arc<dyn Observer>,
    /// The index after each commit round, for blocking reads and watches.
    changes: tokio::sync::watch::Sender<u64>,
    /// Recent changes, for watches.
    events: parking_lot::Mutex<events::EventLog>,
    /// Lease timers (in memory; see `leases`).
    leases: parking_lot::Mutex<leases::Leases>,
    /// Wakes the lease task when a deadline may have moved earlier.
    lease_moved: Arc<tokio::sync::Notify>,
}

/// The registry. Cheap to share behind an `Arc`.
pub struct Registry {
    /// State shared with the committer task.
    shared: Arc<Shared>,
    /// Writes waiting for the committer.
    queue: mpsc::Sender<Queued>,
}

/// Writes that may wait for the committer at once; more wait to be queued.
const QUEUE_DEPTH: usize = 4096;

impl Registry {
    /// Loads the store's state, tells `observer` about every service in it,
    /// and starts the committer task (so it must be called inside a tokio
    /// runtime).
    pub async fn open(
        store: Arc<dyn Store>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, StoreError> {
        let state = store.load().await?;
        let shared = Arc::new(Shared {
            store,
            changes: tokio::sync::watch::Sender::new(state.index),
            events: parking_lot::Mutex::new(events::EventLog::new(state.index)),
            leases: parking_lot::Mutex::new(leases::Leases::restore(
                &state,
                tokio::time::Instant::now(),
            )),
            lease_moved: Arc::new(tokio::sync::Notify::new()),
            index: AtomicU64::new(state.index),
            state: RwLock::new(state),
            observer,
        });
        let index = shared.index.load(Ordering::Acquire);
        {
            let state = shared.state.read();
            let names = service_names(&state);
            let views: Vec<_> = names
                .iter()
                .map(|name| service_view(&state, name, None))
                .collect();
            shared.observer.services_changed(&views, index);
        }
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(committer::run(shared.clone(), receiver));
        tokio::spawn(committer::run_leases(
            Arc::downgrade(&shared),
            shared.lease_moved.clone(),
            queue.downgrade(),
        ));
        Ok(Self { shared, queue })
    }

    /// The index of the last change; never goes backwards.
    pub fn index(&self) -> u64 {
        self.shared.index.load(Ordering::Acquire)
    }

    /// The kind of store behind the registry.
    pub fn store_kind(&self) -> &'static str {
        self.shared.store.kind()
    }

    async fn write(&self, write: Write) -> Result<Written, RegistryError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            RegistryError::Store(StoreError::Unavailable(
                "the registry is shutting down".into(),
            ))
        };
        self.queue
            .send(Queued { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Registers or replaces `id` of `service`. With `cas`, writes only if the
    /// instance's modify index is `cas` (0: only if it does not exist).
    /// Registering what is already there changes nothing and keeps the index.
    pub async fn put_instance(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        spec: InstanceSpec,
        cas: Option<u64>,
    ) -> Result<Arc<Instance>, RegistryError> {
        let write = Write::PutInstance {
            service: service.clone(),
            id: id.clone(),
            spec,
            cas,
        };
        match self.write(write).await? {
            Written::Instance(instance) => Ok(instance),
            Written::Index(_) => unreachable!("a put answers with the instance"),
        }
    }

    /// Removes `id` of `service`; returns the index of the removal.
    pub async fn delete_instance(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        cas: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let write = Write::DeleteInstance {
            service: service.clone(),
            id: id.clone(),
            cas,
        };
        self.write(write).await.map(Written::index)
    }

    /// Sets the status of `id` of `service`, keeping the rest of its
    /// registration; returns the instance as it now is (its index unchanged
    /// when it already had that status).
    pub async fn set_status(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        status: model::Status,
    ) -> Result<Arc<Instance>, RegistryError> {
        let write = Write::SetStatus {
            service: service.clone(),
            id: id.clone(),
            status,
        };
        match self.write(write).await? {
            Written::Instance(instance) => Ok(instance),
            Written::Index(_) => unreachable!("a status change answers with the instance"),
        }
    }

    /// A heartbeat: renews the lease of `id` of `service`. An alive instance
    /// is renewed in memory (no disk write); one whose lease had lapsed is
    /// made passing again, durably. An instance without a lease is refused.
    pub async fn heartbeat(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Result<Arc<Instance>, RegistryError> {
        let instance = self.instance(service, id).ok_or_else(|| {
            RegistryError::NotFound(format!("instance {id} of service {service}"))
        })?;
        if instance.spec.lease.is_none() {
            return Err(RegistryError::NoLease(format!(
                "instance {id} of service {service}"
            )));
        }
        if instance.health == model::Health::Critical {
            let write = Write::Revive {
                service: service.clone(),
                id: id.clone(),
            };
            return match self.write(write).await? {
                Written::Instance(instance) => Ok(instance),
                Written::Index(_) => unreachable!("a revival answers with the instance"),
            };
        }
        self.shared
            .leases
            .lock()
            .renew(service, &instance, tokio::time::Instant::now());
        Ok(instance)
    }

    /// Records what the checks of `id` of `service` say. Ignored when the
    /// instance is gone or its checks are no longer `checks` (a result from
    /// before a re-registration).
    pub async fn set_check_health(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        checks: Vec<model::Check>,
        health: model::Health,
    ) -> Result<(), RegistryError> {
        let write = Write::CheckHealth {
            service: service.clone(),
            id: id.clone(),
            checks,
            health,
        };
        self.write(write).await.map(|_| ())
    }

    /// How long until the lease of `id` of `service` lapses (or, once it has,
    /// until the instance is removed), if it has a lease.
    pub fn lease_remaining(
        &self,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Option<std::time::Duration> {
        let timer = self.shared.leases.lock().timer(service, id)?;
        Some(
            timer
                .at
                .saturating_duration_since(tokio::time::Instant::now()),
        )
    }

    /// Waits until the index passes `index`, or for `wait`, whichever comes
    /// first; returns the index then (Consul-style blocking reads).
    pub async fn wait_past(&self, index: u64, wait: std::time::Duration) -> u64 {
        let mut changes = self.shared.changes.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|now| *now > index)).await;
        self.index()
    }

    /// The committed changes after `index`, in order; `None` when some are
    /// no longer kept (read the whole state again, then go on from its index).
    pub fn changes_after(&self, index: u64) -> Option<Vec<events::ChangeEvent>> {
        self.shared.events.lock().after(index)
    }

    /// Sets a service's settings; returns the index of the change (unchanged
    /// when the settings already were these).
    pub async fn put_settings(
        &self,
        service: &ServiceName,
        settings: ServiceSettings,
    ) -> Result<u64, RegistryError> {
        let write = Write::PutSettings {
            service: service.clone(),
            settings,
        };
        self.write(write).await.map(Written::index)
    }

    /// Replaces everything with `backup` in one commit, keeping its
    /// instances' indexes. Into an empty registry the index becomes the
    /// backup's; over existing data (only with `replace`) it moves past both,
    /// so it never goes backwards. Returns the new index.
    pub async fn restore(&self, backup: StoredState, replace: bool) -> Result<u64, RegistryError> {
        self.write(Write::Restore { backup, replace })
            .await
            .map(Written::index)
    }

    /// Everything, as of one index (for export).
    pub fn export(&self) -> StoredState {
        self.shared.state.read().clone()
    }

    /// One instance.
    pub fn instance(&self, service: &ServiceName, id: &InstanceId) -> Option<Arc<Instance>> {
        self.shared
            .state
            .read()
            .instances
            .get(service)?
            .get(id)
            .cloned()
    }

    /// One service's whole state, if it exists.
    pub fn service(&self, name: &ServiceName) -> Option<ServiceState> {
        let service = service_state(&self.shared.state.read(), name);
        service.exists().then_some(service)
    }

    /// Names of every existing service, sorted.
    pub fn service_names(&self) -> Vec<ServiceName> {
        service_names(&self.shared.state.read())
    }

    /// A summary of every service, sorted by name.
    pub fn services(&self) -> Vec<ServiceSummary> {
        let state = self.shared.state.read();
        service_names(&state)
            .into_iter()
            .map(|name| {
                let instances = state.instances.get(&name);
                ServiceSummary {
                    instances: instances.map_or(0, |m| m.len()),
                    served: instances.map_or(0, |m| m.values().filter(|i| i.is_served()).count()),
                    settings: state.settings.get(&name).cloned(),
                    name,
                }
            })
            .collect()
    }
}

/// Names of every existing service in `state`, sorted.
fn service_names(state: &StoredState) -> Vec<ServiceName> {
    let mut names: Vec<ServiceName> = state.instances.keys().cloned().collect();
    names.extend(state.settings.keys().cloned());
    names.sort();
    names.dedup();
    names
}

/// `name` in `state` as observers see it, with the instances `changed`
/// (`None`: any may have).
fn service_view<'a>(
    state: &'a StoredState,
    name: &'a ServiceName,
    changed: Option<&'a BTreeSet<InstanceId>>,
) -> ServiceView<'a> {
    let instances = state.instances.get(name);
    ServiceView {
        name,
        settings: state.settings.get(name),
        instances: instances.map(|m| m.values().collect()).unwrap_or_default(),
        changed: changed.map(|ids| {
            ids.iter()
                .map(|id| (id, instances.and_then(|m| m.get(id))))
                .collect()
        }),
    }
}

/// The state of `name` in `state` (empty when it does not exist).
fn service_state(state: &StoredState, name: &ServiceName) -> ServiceState {
    service_view(state, name, None).to_state()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Status;
    use parking_lot::Mutex;
    use store::MemoryStore;

    #[derive(Default)]
    struct Seen(Mutex<Vec<ServiceState>>);
    impl Observer for Seen {
        fn services_changed(&self, services: &[ServiceView<'_>], _index: u64) {
            self.0
                .lock()
                .extend(services.iter().map(ServiceView::to_state));
        }
    }

    fn spec(port: u16) -> InstanceSpec {
        InstanceSpec::new("10.0.0.5".parse().unwrap(), port)
    }

    async fn open() -> (Registry, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let registry = Registry::open(Arc::new(MemoryStore::new()), seen.clone())
            .await
            .unwrap();
        (registry, seen)
    }

    #[tokio::test]
    async fn writes_bump_the_index_and_tell_the_observer() {
        let (registry, seen) = open().await;
        let web = ServiceName::parse("web").unwrap();
        let id = InstanceId::parse("web-1").unwrap();
        let first = registry
            .put_instance(&web, &id, spec(80), None)
            .await
            .unwrap();
        assert_eq!(
            (first.create_index, first.modify_index, registry.index()),
            (1, 1, 1)
        );

        // The same registration again changes nothing.
        let again = registry
            .put_instance(&web, &id, spec(80), None)
            .await
            .unwrap();
        assert_eq!(again.modify_index, 1);
        assert_eq!(registry.index(), 1);

        let mut changed = spec(81);
        changed.status = Status::OutOfService;
        let second = registry
            .put_instance(&web, &id, changed, None)
            .await
            .unwrap();
        assert_eq!((second.create_index, second.modify_index), (1, 2));

        assert_eq!(registry.delete_instance(&web, &id, None).await.unwrap(), 3);
        assert!(registry.service(&web).is_none());
        let seen = seen.0.lock();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].instances.is_empty());
    }

    #[tokio::test]
    async fn cas_refuses_a_stale_write() {
        let (registry, _) = open().await;
        let web = ServiceName::parse("web").unwrap();
        let id = InstanceId::parse("web-1").unwrap();
        registry
            .put_instance(&web, &id, spec(80), Some(0))
            .await
            .unwrap();
        let err = registry
            .put_instance(&web, &id, spec(81), Some(0))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Conflict { actual: 1, .. }));
        registry
            .put_instance(&web, &id, spec(81), Some(1))
            .await
            .unwrap();
        assert!(matches!(
            registry
                .delete_instance(&web, &InstanceId::parse("nope").unwrap(), None)
                .await,
            Err(RegistryError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn reopening_a_store_restores_state_and_index() {
        let store = Arc::new(MemoryStore::new());
        let seen = Arc::new(Seen::default());
        let registry = Registry::open(store.clone(), seen.clone()).await.unwrap();
        let web = ServiceName::parse("web").unwrap();
        for n in 0..3 {
            let id = InstanceId::parse(&format!("web-{n}")).unwrap();
            registry
                .put_instance(&web, &id, spec(80), None)
                .await
                .unwrap();
        }
        let seen2 = Arc::new(Seen::default());
        let reopened = Registry::open(store, seen2.clone()).await.unwrap();
        assert_eq!(reopened.index(), 3);
        assert_eq!(reopened.service(&web).unwrap().instances.len(), 3);
        assert_eq!(seen2.0.lock().len(), 1);
    }

    /// A memory store that counts commits, takes a while for each (so writes
    /// pile up behind it), and fails on demand.
    #[derive(Default)]
    struct Slow {
        inner: MemoryStore,
        commits: std::sync::atomic::AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Store for Slow {
        async fn load(&self) -> Result<StoredState, StoreError> {
            self.inner.load().await
        }
        async fn commit(&self, changes: &[store::Change]) -> Result<(), StoreError> {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("disk on fire".into()));
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.inner.commit(changes).await
        }
        fn kind(&self) -> &'static str {
            "slow"
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits() {
        let store = Arc::new(Slow::default());
        let registry = Arc::new(
            Registry::open(store.clone(), Arc::new(Seen::default()))
                .await
                .unwrap(),
        );
        let web = ServiceName::parse("web").unwrap();
        let writes: Vec<_> = (0..64)
            .map(|n| {
                let (registry, web) = (registry.clone(), web.clone());
                tokio::spawn(async move {
                    let id = InstanceId::parse(&format!("w{n}")).unwrap();
                    registry
                        .put_instance(&web, &id, spec(80), None)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut indexes = Vec::new();
        for write in writes {
            indexes.push(write.await.unwrap().modify_index);
        }
        indexes.sort();
        assert_eq!(
            indexes,
            (1..=64).collect::<Vec<_>>(),
            "one index each, none lost"
        );
        let commits = store.commits.load(Ordering::SeqCst);
        assert!(commits < 16, "64 writes took {commits} commits");
        // What was acknowledged is what the store holds.
        assert_eq!(store.inner.load().await.unwrap().instances[&web].len(), 64);
    }

    #[tokio::test]
    async fn a_failed_commit_changes_nothing() {
        let store = Arc::new(Slow::default());
        let seen = Arc::new(Seen::default());
        let registry = Registry::open(store.clone(), seen.clone()).await.unwrap();
        let web = ServiceName::parse("web").unwrap();
        let id = InstanceId::parse("w1").unwrap();
        store.fail.store(true, Ordering::SeqCst);
        let err = registry
            .put_instance(&web, &id, spec(80), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Store(_)), "{err}");
        assert_eq!(registry.index(), 0);
        assert!(registry.instance(&web, &id).is_none());
        assert!(seen.0.lock().is_empty(), "nothing published");
        store.fail.store(false, Ordering::SeqCst);
        assert_eq!(
            registry
                .put_instance(&web, &id, spec(80), None)
                .await
                .unwrap()
                .modify_index,
            1
        );
    }

    #[tokio::test]
    async fn restore_keeps_or_advances_the_index() {
        let (registry, _) = open().await;
        let web = ServiceName::parse("web").unwrap();
        let mut backup = StoredState::default();
        let instance = spec(80).into_instance(InstanceId::parse("w1").unwrap(), 3, 17);
        backup
            .instances
            .entry(web.clone())
            .or_default()
            .insert(Arc::new(instance));
        backup.index = 20;
        assert_eq!(
            registry.restore(backup.clone(), false).await.unwrap(),
            20,
            "into an empty registry"
        );
        assert_eq!(
            registry
                .instance(&web, &InstanceId::parse("w1").unwrap())
                .unwrap()
                .modify_index,
            17
        );
        assert!(matches!(
            registry.restore(backup.clone(), false).await,
            Err(RegistryError::Conflict { .. })
        ));
        assert_eq!(
            registry.restore(backup, true).await.unwrap(),
            21,
            "never backwards"
        );
    }

    fn leased(port: u16, lease: u64, deregister_after: u64) -> InstanceSpec {
        let mut s = spec(port);
        s.lease = Some(model::Millis::saturating(std::time::Duration::from_secs(
            lease,
        )));
        s.deregister_after =
            model::Millis::saturating(std::time::Duration::from_secs(deregister_after));
        s
    }

    fn health(
        registry: &Registry,
        service: &ServiceName,
        id: &InstanceId,
    ) -> Option<model::Health> {
        registry.instance(service, id).map(|i| i.health)
    }

    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_turns_critical_and_then_the_instance_goes() {
        use model::Health::{Critical, Passing};
        let (registry, seen) = open().await;
        let (web, id) = (
            ServiceName::parse("web").unwrap(),
            InstanceId::parse("w1").unwrap(),
        );
        registry
            .put_instance(&web, &id, leased(80, 10, 60), None)
            .await
            .unwrap();
        sleep_ms(9_900).await;
        assert_eq!(health(&registry, &web, &id), Some(Passing));
        // A heartbeat moves the deadline to 19.9 s, without a write.
        let index = registry.index();
        registry.heartbeat(&web, &id).await.unwrap();
        assert_eq!(registry.index(), index);
        sleep_ms(9_950).await; // 19.85 s
        assert_eq!(health(&registry, &web, &id), Some(Passing));
        sleep_ms(100).await; // 19.95 s: 50 ms past the deadline
        assert_eq!(health(&registry, &web, &id), Some(Critical));
        assert!(
            !seen.0.lock().last().unwrap().instances[0].is_served(),
            "DNS was told"
        );
        // A heartbeat brings it back, durably.
        let revived = registry.heartbeat(&web, &id).await.unwrap();
        assert_eq!(
            (revived.health, revived.modify_index),
            (Passing, registry.index())
        );
        // Silence: critical after the lease, removed after deregister_after.
        sleep_ms(10_050).await;
        assert_eq!(health(&registry, &web, &id), Some(Critical));
        sleep_ms(59_000).await;
        assert_eq!(health(&registry, &web, &id), Some(Critical));
        sleep_ms(1_100).await;
        assert_eq!(health(&registry, &web, &id), None, "deregistered");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_need_a_known_leased_instance() {
        let (registry, _) = open().await;
        let (web, id) = (
            ServiceName::parse("web").unwrap(),
            InstanceId::parse("w1").unwrap(),
        );
        assert!(matches!(
            registry.heartbeat(&web, &id).await,
            Err(RegistryError::NotFound(_))
        ));
        registry
            .put_instance(&web, &id, spec(80), None)
            .await
            .unwrap();
        assert!(matches!(
            registry.heartbeat(&web, &id).await,
            Err(RegistryError::NoLease(_))
        ));
        // Registering again without a lease stops the timer.
        registry
            .put_instance(&web, &id, leased(80, 1, 1), None)
            .await
            .unwrap();
        registry
            .put_instance(&web, &id, spec(80), None)
            .await
            .unwrap();
        sleep_ms(5_000).await;
        assert_eq!(health(&registry, &web, &id), Some(model::Health::Passing));
    }

    #[tokio::test(start_paused = true)]
    async fn restored_leases_get_a_full_period_of_grace() {
        use model::Health::{Critical, Passing};
        let store = Arc::new(MemoryStore::new());
        let (web, id) = (
            ServiceName::parse("web").unwrap(),
            InstanceId::parse("w1").unwrap(),
        );
        {
            let registry = Registry::open(store.clone(), Arc::new(Seen::default()))
                .await
                .unwrap();
            registry
                .put_instance(&web, &id, leased(80, 10, 60), None)
                .await
                .unwrap();
            sleep_ms(9_000).await; // 1 s left when the server "stops"
        }
        sleep_ms(3_600_000).await; // down for an hour
        let registry = Registry::open(store, Arc::new(Seen::default()))
            .await
            .unwrap();
        sleep_ms(9_900).await;
        assert_eq!(
            health(&registry, &web, &id),
            Some(Passing),
            "no mass expiry on start"
        );
        sleep_ms(200).await;
        assert_eq!(health(&registry, &web, &id), Some(Critical));
    }
}
