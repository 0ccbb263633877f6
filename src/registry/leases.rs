//! Lease timers: when an instance's lease lapses it must turn critical, and
//! when it has been critical for `deregister_after` it must go.
//!
//! Deadlines live in memory only. A heartbeat moves one without a disk
//! write; after a restart every lease gets a full period of grace, so no
//! instance expires because the server was down. One task sleeps until the
//! earliest deadline (tokio's clock, so tests can pause it) and hands due
//! timers to the committer as writes, which check that the timer is still
//! the current one before acting.

use std::collections::{BTreeSet, HashMap};

use tokio::time::Instant;

use super::model::{Health, Instance, InstanceId, ServiceName};
use super::store::{Change, StoredState};

/// What happens when a timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Due {
    /// The lease lapsed: the instance turns critical.
    Expire,
    /// Critical for `deregister_after`: the instance is removed.
    Reap,
}

/// One instance's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// When.
    pub at: Instant,
    /// What.
    pub due: Due,
}

type Key = (ServiceName, InstanceId);

/// Every running timer, by deadline and by instance.
#[derive(Debug, Default)]
pub struct Leases {
    by_deadline: BTreeSet<(Instant, Key)>,
    by_instance: HashMap<Key, Timer>,
}

impl Leases {
    /// Timers for everything in `state`, each with a full period from `now`.
    pub fn restore(state: &StoredState, now: Instant) -> Self {
        let mut leases = Self::default();
        for (service, instances) in &state.instances {
            for instance in instances.values() {
                leases.schedule_for(service, instance, now);
            }
        }
        leases
    }

    /// The current timer of an instance.
    pub fn timer(&self, service: &ServiceName, id: &InstanceId) -> Option<Timer> {
        self.by_instance
            .get(&(service.clone(), id.clone()))
            .copied()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// Removes and returns the timers due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<(ServiceName, InstanceId, Timer)> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_deadline.first() {
            if *at > now {
                break;
            }
            let (at, key) = self.by_deadline.pop_first().expect("just looked");
            if let Some(timer) = self.by_instance.get(&key).copied().filter(|t| t.at == at) {
                due.push((key.0, key.1, timer));
            }
        }
        due
    }

    fn set(&mut self, key: Key, timer: Option<Timer>) {
        if let Some(old) = self.by_instance.remove(&key) {
            self.by_deadline.remove(&(old.at, key.clone()));
        }
        if let Some(timer) = timer {
            self.by_deadline.insert((timer.at, key.clone()));
            self.by_instance.insert(key, timer);
        }
    }

    /// A heartbeat: the lease runs again from `now`.
    pub fn renew(&mut self, service: &ServiceName, instance: &Instance, now: Instant) {
        let timer = instance.spec.lease.map(|lease| Timer {
            at: now + lease.get(),
            due: Due::Expire,
        });
        self.set((service.clone(), instance.id.clone()), timer);
    }

    /// The timer an instance should have, starting from `now`: none without
    /// a lease; the lease while it is alive; removal once it is critical
    /// (an existing removal keeps its time).
    fn schedule_for(&mut self, service: &ServiceName, instance: &Instance, now: Instant) {
        let key = (service.clone(), instance.id.clone());
        let Some(lease) = instance.spec.lease else {
            return self.set(key, None);
        };
        let timer = if instance.health == Health::Critical {
            if let Some(existing) = self.by_instance.get(&key).filter(|t| t.due == Due::Reap) {
                *existing
            } else {
                Timer {
                    at: now + instance.spec.deregister_after.get(),
                    due: Due::Reap,
                }
            }
        } else {
            Timer {
                at: now + lease.get(),
                due: Due::Expire,
            }
        };
        self.set(key, Some(timer));
    }

    /// Follows a committed change.
    pub fn apply(&mut self, change: &Change, now: Instant) {
        match change {
            Change::PutInstance {
                service, instance, ..
            } => self.schedule_for(service, instance, now),
            Change::DeleteInstance { service, id, .. } => {
                self.set((service.clone(), id.clone()), None)
            }
            Change::PutSettings { .. } => {}
            Change::Restore { state } => *self = Self::restore(state, now),
        }
    }
}
