//! Where the registry keeps its state: the `Store` trait and the in-memory store.
//!
//! The registry applies a change to its own copy only after `commit` has
//! returned, so a store that returns from `commit` only once the change is
//! durable makes every acknowledged write durable. Stores know nothing of the
//! registry's rules (validation, indexes); they keep what they are given.

pub mod redb;
pub mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;

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
        /// The instance, with its indexes already set. Shared with the
        /// registry's state and the DNS projection, never copied.
        instance: Arc<Instance>,
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

/// The instances of one service, ordered by id.
///
/// A sorted vector rather than a map: 8 bytes per instance, where a
/// `BTreeMap` node costs about 50 per entry when half full, which with a
/// million instances was a sixth of the server's memory. Lookups are binary
/// searches. An insert or removal moves the pointers after it; a change to
/// a service already costs a pass over all its instances (the DNS
/// projection rebuilds the service), so the order of the work is the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instances(Vec<Arc<Instance>>);

impl Instances {
    fn find(&self, id: &InstanceId) -> Result<usize, usize> {
        self.0.binary_search_by(|i| i.id.cmp(id))
    }

    /// Instances in any order; `Err` names an id that appears twice.
    pub fn from_unsorted(mut instances: Vec<Arc<Instance>>) -> Result<Self, InstanceId> {
        instances.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        if let Some(twice) = instances.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(twice[0].id.clone());
        }
        instances.shrink_to_fit();
        Ok(Self(instances))
    }

    /// The instance `id`.
    pub fn get(&self, id: &InstanceId) -> Option<&Arc<Instance>> {
        self.find(id).ok().map(|at| &self.0[at])
    }

    /// Adds `instance`, or replaces the one with its id (returned).
    pub fn insert(&mut self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        match self.find(&instance.id) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at], instance)),
            Err(at) => {
                self.0.insert(at, instance);
                None
            }
        }
    }

    /// Removes the instance `id`, if there is one.
    pub fn remove(&mut self, id: &InstanceId) -> Option<Arc<Instance>> {
        self.find(id).ok().map(|at| self.0.remove(at))
    }

    /// The instances, by id.
    pub fn values(&self) -> std::slice::Iter<'_, Arc<Instance>> {
        self.0.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Index<&InstanceId> for Instances {
    type Output = Arc<Instance>;

    fn index(&self, id: &InstanceId) -> &Arc<Instance> {
        self.get(id).expect("no instance with this id")
    }
}

/// Everything a store holds, as loaded at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredState {
    /// Highest index committed.
    pub index: u64,
    /// Instances by service and id.
    pub instances: BTreeMap<ServiceName, Instances>,
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
                    .insert(instance.clone());
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

/// One battery of tests, run against every store.
#[cfg(test)]
pub(crate) mod battery {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::registry::model::{Cluster, InstanceSpec, LbPolicy, Meta, Status, Tag};

    fn instance(id: &str, port: u16, index: u64) -> Instance {
        let mut spec = InstanceSpec::new("10.0.0.5".parse().unwrap(), port);
        spec.weight = 7;
        spec.priority = 3;
        spec.tags = Box::new([Tag::parse("v2").unwrap()]);
        spec.meta = Meta::parse([("version".to_string(), "1.4".to_string())].into()).unwrap();
        spec.cluster = Cluster::parse("dc2").unwrap();
        spec.ttl = 30;
        spec.status = Status::OutOfService;
        spec.into_instance(InstanceId::parse(id).unwrap(), 1, index)
    }

    fn put(service: &str, instance: Instance) -> Change {
        let index = instance.modify_index;
        Change::PutInstance {
            service: ServiceName::parse(service).unwrap(),
            instance: Arc::new(instance),
            index,
        }
    }

    /// `open` gives a handle on the same storage each time; the battery
    /// drops each handle before asking for the next.
    pub(crate) async fn run(open: impl Fn() -> Arc<dyn Store>) {
        let web = ServiceName::parse("web").unwrap();
        // One commit of several changes, applied in order.
        let changes = [
            put("web", instance("a", 1, 1)),
            put("web", instance("b", 2, 2)),
            put("api", instance("x", 3, 3)),
            Change::DeleteInstance {
                service: web.clone(),
                id: InstanceId::parse("b").unwrap(),
                index: 4,
            },
            Change::PutSettings {
                service: web.clone(),
                settings: ServiceSettings {
                    lb: LbPolicy::RoundRobin,
                    failover: vec![Cluster::parse("dc3").unwrap()],
                    fail_open: true,
                },
                index: 5,
            },
        ];
        {
            let store = open();
            assert_eq!(
                store.load().await.unwrap(),
                StoredState::default(),
                "{} starts empty",
                store.kind()
            );
            store.commit(&changes).await.unwrap();
        }
        // The store must read back what the in-memory reference makes of them.
        let mut expected = StoredState::default();
        for change in &changes {
            expected.apply(change);
        }
        {
            let store = open();
            let loaded = store.load().await.unwrap();
            assert_eq!(loaded, expected, "{} reads back every field", store.kind());
            assert_eq!(loaded.index, 5);
            // Replacing one instance keeps the others.
            store
                .commit(&[put("web", instance("a", 9, 6))])
                .await
                .unwrap();
        }
        {
            let store = open();
            let loaded = store.load().await.unwrap();
            assert_eq!(
                loaded.instances[&web][&InstanceId::parse("a").unwrap()]
                    .spec
                    .port,
                9
            );
            assert_eq!(loaded.instances.len(), 2);
            // A restore replaces everything, index included.
            let mut restored = StoredState::default();
            restored.apply(&put("db", instance("d", 5, 40)));
            restored.index = 42;
            store
                .commit(&[Change::Restore {
                    state: restored.clone(),
                }])
                .await
                .unwrap();
        }
        let store = open();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.index, 42);
        assert_eq!(
            loaded
                .instances
                .keys()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            ["db"]
        );
        assert!(loaded.settings.is_empty());
    }

    #[tokio::test]
    async fn memory_store() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        run(|| store.clone()).await;
    }

    #[tokio::test]
    async fn redb_store() {
        let dir = std::env::temp_dir().join(format!("signpost-battery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Changes read back from the log (no checkpoint before the handle
        // goes), and from the file (a checkpoint after every round).
        for every in [Duration::MAX, Duration::ZERO] {
            let _ = std::fs::remove_dir_all(&dir);
            run(|| {
                let store = super::redb::RedbStore::open(&dir).unwrap();
                Arc::new(store.checkpoint_interval(every)) as Arc<dyn Store>
            })
            .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::InstanceSpec;

    fn instance(id: &str, port: u16) -> Arc<Instance> {
        let spec = InstanceSpec::new("10.0.0.1".parse().unwrap(), port);
        Arc::new(spec.into_instance(InstanceId::parse(id).unwrap(), 1, 1))
    }

    fn ids(instances: &Instances) -> Vec<&str> {
        instances.values().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn instances_stay_in_id_order_through_inserts_and_removals() {
        let mut instances = Instances::default();
        for id in ["m", "c", "x", "a"] {
            assert!(instances.insert(instance(id, 1)).is_none());
        }
        assert_eq!(ids(&instances), ["a", "c", "m", "x"]);
        let replaced = instances.insert(instance("c", 2)).unwrap();
        assert_eq!(replaced.spec.port, 1);
        assert_eq!(instances[&InstanceId::parse("c").unwrap()].spec.port, 2);
        assert_eq!(instances.len(), 4);
        let id = |s: &str| InstanceId::parse(s).unwrap();
        assert_eq!(instances.remove(&id("m")).unwrap().id, id("m"));
        assert!(instances.remove(&id("m")).is_none());
        assert!(instances.get(&id("b")).is_none());
        assert_eq!(ids(&instances), ["a", "c", "x"]);
    }

    #[test]
    fn unsorted_instances_are_sorted_and_a_repeated_id_named() {
        let sorted =
            Instances::from_unsorted(vec![instance("b", 1), instance("a", 1), instance("c", 1)]);
        assert_eq!(ids(&sorted.unwrap()), ["a", "b", "c"]);
        let twice =
            Instances::from_unsorted(vec![instance("b", 1), instance("a", 1), instance("b", 2)]);
        assert_eq!(twice.unwrap_err().as_str(), "b");
    }
}
