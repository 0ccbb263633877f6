//! The write path: one task that turns queued writes into grouped commits.
//!
//! Each round takes every write waiting (up to a bound), checks each against
//! the committed state plus the writes before it in the same round, numbers
//! the accepted ones, commits them to the store in one transaction, and
//! only after the store has returned applies them, tells the observer, and
//! answers the writers. If the commit fails, every write of the round is
//! answered with the error and nothing changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::leases::{Due, Timer};
use super::model::{
    Check, Health, Instance, InstanceId, InstanceSpec, ServiceName, ServiceSettings, Status,
};
use super::store::{Change, StoredState};
use super::{RegistryError, Shared, service_names, service_view};

/// Most writes in one commit: bounds the latency of the first one in it.
const MAX_BATCH: usize = 1024;

/// A write, as asked for.
pub(super) enum Write {
    PutInstance {
        service: ServiceName,
        id: InstanceId,
        spec: InstanceSpec,
        cas: Option<u64>,
    },
    DeleteInstance {
        service: ServiceName,
        id: InstanceId,
        cas: Option<u64>,
    },
    PutSettings {
        service: ServiceName,
        settings: ServiceSettings,
    },
    SetStatus {
        service: ServiceName,
        id: InstanceId,
        status: Status,
    },
    /// A lease timer came due (checked against the current timer first).
    Timer {
        service: ServiceName,
        id: InstanceId,
        timer: Timer,
    },
    /// A heartbeat for an instance whose lease had lapsed.
    Revive {
        service: ServiceName,
        id: InstanceId,
    },
    /// What the instance's checks say now (void if its checks changed).
    CheckHealth {
        service: ServiceName,
        id: InstanceId,
        checks: Vec<Check>,
        health: Health,
    },
    Restore {
        backup: StoredState,
        replace: bool,
    },
}

/// What a write answers with.
pub(super) enum Written {
    /// The instance as stored.
    Instance(Arc<Instance>),
    /// The index the write created (or the current one, for a no-op).
    Index(u64),
}

impl Written {
    pub(super) fn index(self) -> u64 {
        match self {
            Written::Instance(instance) => instance.modify_index,
            Written::Index(index) => index,
        }
    }
}

/// A write and where its answer goes.
pub(super) struct Queued {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Written, RegistryError>>,
}

/// Runs until every `Registry` handle is gone.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Queued>) {
    let mut carried: Option<Queued> = None;
    // The previous round's publishing, which may still be running.
    let mut publishing: Option<Publishing> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => {
                    finish(publishing).await;
                    return;
                }
            },
        };
        let mut batch = vec![first];
        // A restore replaces everything, so it is committed on its own.
        if !matches!(batch[0].write, Write::Restore { .. }) {
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) if matches!(next.write, Write::Restore { .. }) => {
                        carried = Some(next);
                        break;
                    }
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        publishing = commit_batch(&shared, batch, publishing).await;
    }
}

/// A round being published: observers told, then writers answered.
type Publishing = tokio::task::JoinHandle<()>;

/// Waits for a round's publishing to end.
async fn finish(publishing: Option<Publishing>) {
    if let Some(publishing) = publishing {
        // It only panics if an observer did; nothing is left to undo.
        let _ = publishing.await;
    }
}

/// Sleeps until the earliest lease timer, then hands the due ones to the
/// committer. Ends when the registry is gone.
pub(super) async fn run_leases(
    shared: std::sync::Weak<Shared>,
    moved: Arc<tokio::sync::Notify>,
    queue: mpsc::WeakSender<Queued>,
) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.leases.lock().next(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = moved.notified() => continue,
                }
            }
            None => {
                moved.notified().await;
                continue;
            }
        }
        let (Some(shared), Some(queue)) = (shared.upgrade(), queue.upgrade()) else {
            return;
        };
        let due = shared.leases.lock().take_due(tokio::time::Instant::now());
        drop(shared);
        for (service, id, timer) in due {
            let (reply, _answer) = oneshot::channel();
            let write = Write::Timer { service, id, timer };
            if queue.send(Queued { write, reply }).await.is_err() {
                return;
            }
        }
    }
}

/// The committed state plus the changes accepted so far in this round.
struct Plan<'s> {
    state: &'s StoredState,
    index: u64,
    instances: HashMap<(ServiceName, InstanceId), Option<Arc<Instance>>>,
    settings: HashMap<ServiceName, ServiceSettings>,
    changes: Vec<Change>,
}

impl<'s> Plan<'s> {
    fn new(state: &'s StoredState, index: u64) -> Self {
        Self {
            state,
            index,
            instances: HashMap::new(),
            settings: HashMap::new(),
            changes: Vec::new(),
        }
    }

    fn instance(&self, service: &ServiceName, id: &InstanceId) -> Option<Arc<Instance>> {
        match self.instances.get(&(service.clone(), id.clone())) {
            Some(planned) => planned.clone(),
            None => self.state.instances.get(service)?.get(id).cloned(),
        }
    }

    /// Plans `existing` changed by `change` (its registration otherwise the
    /// same), at the next index.
    fn put_modified(
        &mut self,
        service: ServiceName,
        existing: &Instance,
        change: impl FnOnce(&mut Instance),
    ) -> Written {
        let mut instance = existing.clone();
        instance.modify_index = self.next_index();
        change(&mut instance);
        self.record(service, instance)
    }

    /// Plans `instance` (its modify index already the new index) as the
    /// instance's new state.
    fn record(&mut self, service: ServiceName, instance: Instance) -> Written {
        let instance = Arc::new(instance);
        self.instances.insert(
            (service.clone(), instance.id.clone()),
            Some(instance.clone()),
        );
        self.changes.push(Change::PutInstance {
            service,
            instance: instance.clone(),
            index: instance.modify_index,
        });
        Written::Instance(instance)
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Checks `write` and, if it changes anything, plans its change.
    fn plan(&mut self, write: Write) -> Result<Written, RegistryError> {
        match write {
            Write::PutInstance {
                service,
                id,
                spec,
                cas,
            } => {
                let existing = self.instance(&service, &id);
                check_cas(cas, existing.as_deref(), &service, &id)?;
                // Registering again is a sign of life: it changes nothing only
                // when the instance is already passing.
                if let Some(existing) = existing
                    .as_ref()
                    .filter(|e| e.spec == spec && e.health == Health::Passing)
                {
                    return Ok(Written::Instance(existing.clone()));
                }
                let index = self.next_index();
                let create_index = existing.as_ref().map_or(index, |e| e.create_index);
                let mut instance = spec.into_instance(id.clone(), create_index, index);
                // Same checks, same verdict: a new weight is not a reason to
                // wait for the checks again.
                if let Some(existing) = existing
                    .as_ref()
                    .filter(|e| e.spec.checks == instance.spec.checks)
                {
                    instance.check_health = existing.check_health;
                }
                Ok(self.record(service, instance))
            }
            Write::DeleteInstance { service, id, cas } => {
                let Some(existing) = self.instance(&service, &id) else {
                    return Err(RegistryError::NotFound(format!(
                        "instance {id} of service {service}"
                    )));
                };
                check_cas(cas, Some(&existing), &service, &id)?;
                let index = self.next_index();
                self.instances.insert((service.clone(), id.clone()), None);
                self.changes
                    .push(Change::DeleteInstance { service, id, index });
                Ok(Written::Index(index))
            }
            Write::SetStatus {
                service,
                id,
                status,
            } => {
                let Some(existing) = self.instance(&service, &id) else {
                    return Err(RegistryError::NotFound(format!(
                        "instance {id} of service {service}"
                    )));
                };
                let mut spec = existing.spec.clone();
                spec.status = status;
                self.plan(Write::PutInstance {
                    service,
                    id,
                    spec,
                    cas: Some(existing.modify_index),
                })
            }
            Write::Timer { service, id, timer } => {
                let Some(existing) = self.instance(&service, &id) else {
                    return Ok(Written::Index(self.index));
                };
                match timer.due {
                    Due::Expire
                        if existing.spec.lease.is_some() && existing.health != Health::Critical =>
                    {
                        Ok(self.put_modified(service, &existing, |i| i.health = Health::Critical))
                    }
                    Due::Reap if existing.health == Health::Critical => {
                        self.plan(Write::DeleteInstance {
                            service,
                            id,
                            cas: None,
                        })
                    }
                    _ => Ok(Written::Index(self.index)),
                }
            }
            Write::CheckHealth {
                service,
                id,
                checks,
                health,
            } => {
                let Some(existing) = self.instance(&service, &id) else {
                    return Ok(Written::Index(self.index));
                };
                if existing.spec.checks[..] != checks[..] || existing.check_health == health {
                    return Ok(Written::Index(self.index));
                }
                Ok(self.put_modified(service, &existing, |i| i.check_health = health))
            }
            Write::Revive { service, id } => {
                let Some(existing) = self.instance(&service, &id) else {
                    return Err(RegistryError::NotFound(format!(
                        "instance {id} of service {service}"
                    )));
                };
                if existing.health == Health::Passing {
                    return Ok(Written::Instance(existing));
                }
                Ok(self.put_modified(service, &existing, |i| i.health = Health::Passing))
            }
            Write::PutSettings { service, settings } => {
                let current = self
                    .settings
                    .get(&service)
                    .or_else(|| self.state.settings.get(&service));
                if current == Some(&settings) {
                    return Ok(Written::Index(self.index));
                }
                let index = self.next_index();
                self.settings.insert(service.clone(), settings.clone());
                self.changes.push(Change::PutSettings {
                    service,
                    settings,
                    index,
                });
                Ok(Written::Index(index))
            }
            Write::Restore {
                mut backup,
                replace,
            } => {
                let empty = self.state.instances.is_empty() && self.state.settings.is_empty();
                if !empty && !replace {
                    return Err(RegistryError::Conflict {
                        what: "the registry (it is not empty; import with replace to overwrite it)"
                            .into(),
                        expected: 0,
                        actual: self.index,
                    });
                }
                let floor = backup
                    .instances
                    .values()
                    .flat_map(|m| m.values())
                    .map(|i| i.modify_index)
                    .max();
                backup.index = backup.index.max(floor.unwrap_or(0));
                if self.index > 0 {
                    backup.index = backup.index.max(self.index) + 1;
                }
                self.index = backup.index;
                self.changes.push(Change::Restore { state: backup });
                Ok(Written::Index(self.index))
            }
        }
    }
}

fn check_cas(
    cas: Option<u64>,
    existing: Option<&Instance>,
    service: &ServiceName,
    id: &InstanceId,
) -> Result<(), RegistryError> {
    let actual = existing.map_or(0, |i| i.modify_index);
    match cas {
        Some(expected) if expected != actual => Err(RegistryError::Conflict {
            what: format!("instance {id} of {service}"),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// The services a round touched, each with the instances it put or
/// removed (`None`: any may have changed).
type Touched = BTreeMap<ServiceName, Option<BTreeSet<InstanceId>>>;

/// Adds what `change` touches to `out`.
fn touched(change: &Change, before: &StoredState, out: &mut Touched) {
    let mut instance = |service: &ServiceName, id: &InstanceId| {
        if let Some(ids) = out
            .entry(service.clone())
            .or_insert_with(|| Some(BTreeSet::new()))
        {
            ids.insert(id.clone());
        }
    };
    match change {
        Change::PutInstance {
            service,
            instance: i,
            ..
        } => instance(service, &i.id),
        Change::DeleteInstance { service, id, .. } => instance(service, id),
        Change::PutSettings { service, .. } => {
            out.entry(service.clone())
                .or_insert_with(|| Some(BTreeSet::new()));
        }
        Change::Restore { state } => {
            for name in service_names(before)
                .into_iter()
                .chain(service_names(state))
            {
                out.insert(name, None);
            }
        }
    }
}

/// Commits one round. The store commit overlaps the previous round's
/// publishing (`previous`); this round is applied only after that has
/// ended, so rounds are applied, published and answered in order. Returns
/// this round's publishing, which runs on while the next round commits.
async fn commit_batch(
    shared: &Arc<Shared>,
    batch: Vec<Queued>,
    previous: Option<Publishing>,
) -> Option<Publishing> {
    let started = std::time::Instant::now();
    let writes = batch.len();
    let mut accepted = Vec::with_capacity(batch.len());
    let changes = {
        let state = shared.state.read();
        let mut plan = Plan::new(&state, shared.index.load(Ordering::Acquire));
        for Queued { write, reply } in batch {
            // A timer that a heartbeat has since replaced is void.
            if let Write::Timer { service, id, timer } = &write
                && shared.leases.lock().timer(service, id) != Some(*timer)
            {
                let _ = reply.send(Ok(Written::Index(plan.index)));
                continue;
            }
            match plan.plan(write) {
                Ok(written) => accepted.push((reply, written)),
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
        plan.changes
    };
    let planned = started.elapsed();
    if changes.is_empty() {
        // Nothing changed, but what the writers saw may be the previous
        // round's: they are answered once it is published.
        finish(previous).await;
        for (reply, written) in accepted {
            let _ = reply.send(Ok(written));
        }
        return None;
    }
    if let Err(error) = shared.store.commit(&changes).await {
        tracing::warn!(%error, writes = accepted.len(), "commit failed; nothing was changed");
        for (reply, _) in accepted {
            let _ = reply.send(Err(RegistryError::Store(error.clone())));
        }
        return previous;
    }
    let committed = started.elapsed();
    finish(previous).await;
    let mut services = Touched::new();
    {
        let mut state = shared.state.write();
        for change in &changes {
            touched(change, &state, &mut services);
            state.apply(change);
        }
        shared.index.store(state.index, Ordering::Release);
        let mut log = shared.events.lock();
        for change in &changes {
            log.push(change.into());
        }
        drop(log);
        let now = tokio::time::Instant::now();
        let mut leases = shared.leases.lock();
        for change in &changes {
            leases.apply(change, now);
        }
        drop(leases);
        shared.lease_moved.notify_one();
        shared.changes.send_replace(state.index);
    }
    let index = shared.index.load(Ordering::Acquire);
    let shared = shared.clone();
    let changes = changes.len();
    Some(tokio::spawn(async move {
        // Observers borrow the state: the read lock is held while they
        // work (the next round waits for this task before it applies).
        let touched_services = services.len();
        {
            let state = shared.state.read();
            let views: Vec<_> = services
                .iter()
                .map(|(name, ids)| service_view(&state, name, ids.as_ref()))
                .collect();
            shared.observer.services_changed(&views, index);
        }
        tracing::debug!(
            writes,
            changes,
            services = touched_services,
            plan_us = planned.as_micros() as u64,
            commit_us = (committed - planned).as_micros() as u64,
            publish_us = (started.elapsed() - committed).as_micros() as u64,
            "commit round"
        );
        for (reply, written) in accepted {
            let _ = reply.send(Ok(written));
        }
    }))
}
