//! Where the registry keeps its state: the `Store` trait and the in-memory store.
//!
//! The registry applies a change to its own copy only after `commit` has
//! returned, so a store that returns from `commit` only once the change is
//! durable makes every acknowledged write durable. Stores know nothing of the
//! registry's rules (validation, indexes); they keep what they are given.

pub mod redb;

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::model::{Instance, InstanceId, ServiceName, ServiceSettings};

/// One change, as committed to a store. `index` is the registry index it
/// creates; a store keeps the highest index it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace an instance.
    PutInstance {
        /// The service it belongs to.
        service: ServiceName,
        /// The instance, with its indexes already set.
        instance: Instance,
        /// The registry index of this change.
        index: u64,
    },
    /// Remove an instance.
    DeleteInstance {
        /// The service it belonged to.
        service: ServiceName,
        /// Its id.
        id: InstanceId,
        /// The registry index of this change.
        index: u64,
    },
    /// Create or replace a service's settings.
    PutSettings {
        /// The service.
        service: ServiceName,
        /// The new settings.
        settings: ServiceSettings,
        /// The registry index of this change.
        index: u64,
    },
    /// Replace everything (an import); `state.index` is the new index.
    Restore {
        /// The whole new state.
        state: StoredState,
    },
}

impl Change {
    /// The registry index this change creates.
    pub fn index(&self) -> u64 {
        match self {
            Change::PutInstance { index, .. }
            | Change::DeleteInstance { index, .. }
            | Change::PutSettings { index, .. } => *index,
            Change::Restore { state } => state.index,
        }
    }
}

/// Everything a store holds, as loaded at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Highest index committed.
    pub index: u64,
    /// Instances by service and id.
    pub instances: BTreeMap<ServiceName, BTreeMap<InstanceId, Instance>>,
    /// Settings of the services that have them.
    pub settings: BTreeMap<ServiceName, ServiceSettings>,
}

impl StoredState {
    /// Applies a committed change; shared by every store and by the registry.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::PutInstance {
                service, instance, ..
            } => {
                self.instances
                    .entry(service.clone())
                    .or_default()
                    .insert(instance.id.clone(), instance.clone());
            }
            Change::DeleteInstance { service, id, .. } => {
                if let Some(instances) = self.instances.get_mut(service) {
                    instances.remove(id);
                    if instances.is_empty() {
                        self.instances.remove(service);
                    }
                }
            }
            Change::PutSettings {
                service, settings, ..
            } => {
                self.settings.insert(service.clone(), settings.clone());
            }
            Change::Restore { state } => *self = state.clone(),
        }
        self.index = self.index.max(change.index());
    }
}

/// A failure of the store; the change it was given was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written now; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// What the store holds does not read back as valid state.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}

/// The durable home of the registry's state.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything, once, at start-up.
    async fn load(&self) -> Result<StoredState, StoreError>;

    /// Makes `changes` durable, all or none, in order. Returns only when they are.
    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;

    /// A short name for logs and `/ready` (`memory`, `redb`, `etcd`).
    fn kind(&self) -> &'static str;
}

/// Keeps state in memory only: for tests and throwaway use. Nothing survives
/// the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// The committed state; the lock is held only to copy in or out.
    state: Mutex<StoredState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        Ok(self.state.lock().clone())
    }

    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        for change in changes {
            state.apply(change);
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
