//! The registry: the truth about services and their instances.
//!
//! It validates nothing itself (its inputs are validated types), commits every
//! change to its [`Store`] before applying it, numbers changes with a
//! monotonically increasing index, and tells its [`Observer`] which service
//! changed. It knows nothing of DNS or HTTP.

pub mod model;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use model::{Instance, InstanceId, InstanceSpec, ServiceName, ServiceSettings};
use store::{Change, Store, StoreError, StoredState};

/// The current state of one service, as observers and readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The service.
    pub name: ServiceName,
    /// Its settings, if any were set (defaults apply otherwise).
    pub settings: Option<ServiceSettings>,
    /// Its instances, ordered by id. Empty when the service is gone.
    pub instances: Vec<Instance>,
}

impl ServiceState {
    /// Whether the service exists: it has instances or settings (DESIGN §1).
    pub fn exists(&self) -> bool {
        self.settings.is_some() || !self.instances.is_empty()
    }
}

/// Told about every committed change, synchronously, before the write that
/// caused it is acknowledged: whatever it publishes is visible by then.
pub trait Observer: Send + Sync + 'static {
    /// `service` changed; this is its whole new state.
    fn service_changed(&self, service: &ServiceState, index: u64);
}

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such service or instance.
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write (`cas`) found another modify index.
    #[error("{what} is at index {actual}, not {expected}")]
    Conflict {
        /// What was being written.
        what: String,
        /// The index the caller expected.
        expected: u64,
        /// The index it is at (0 when absent).
        actual: u64,
    },
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

/// The registry. Cheap to share behind an `Arc`.
pub struct Registry {
    /// Where changes are made durable before they are applied.
    store: Arc<dyn Store>,
    /// Serialises writers, across the store commit, so changes commit and
    /// apply in index order. Readers and DNS never take it.
    writer: tokio::sync::Mutex<()>,
    /// The committed state. Writers hold it only to apply a committed change;
    /// readers only to copy out.
    state: RwLock<StoredState>,
    /// The index of the last applied change, readable without a lock.
    index: AtomicU64,
    /// Told of every change (the DNS projection, in the server).
    observer: Arc<dyn Observer>,
}

impl Registry {
    /// Loads the store's state and tells `observer` about every service in it.
    pub async fn open(
        store: Arc<dyn Store>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, StoreError> {
        let state = store.load().await?;
        let registry = Self {
            store,
            writer: tokio::sync::Mutex::new(()),
            index: AtomicU64::new(state.index),
            state: RwLock::new(state),
            observer,
        };
        for name in registry.service_names() {
            if let Some(service) = registry.service(&name) {
                registry
                    .observer
                    .service_changed(&service, registry.index());
            }
        }
        Ok(registry)
    }

    /// The index of the last change; never goes backwards.
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// The kind of store behind the registry.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
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
    ) -> Result<Instance, RegistryError> {
        let _writer = self.writer.lock().await;
        let existing = self.instance(service, id);
        let actual = existing.as_ref().map_or(0, |i| i.modify_index);
        if let Some(expected) = cas
            && expected != actual
        {
            return Err(RegistryError::Conflict {
                what: format!("instance {id} of {service}"),
                expected,
                actual,
            });
        }
        if let Some(existing) = &existing
            && existing.spec == spec
        {
            return Ok(existing.clone());
        }
        let index = self.index() + 1;
        let create_index = existing.as_ref().map_or(index, |e| e.create_index);
        let instance = spec.into_instance(id.clone(), create_index, index);
        self.commit(
            service,
            Change::PutInstance {
                service: service.clone(),
                instance: instance.clone(),
                index,
            },
        )
        .await?;
        Ok(instance)
    }

    /// Removes `id` of `service`; returns the index of the removal.
    pub async fn delete_instance(
        &self,
        service: &ServiceName,
        id: &InstanceId,
        cas: Option<u64>,
    ) -> Result<u64, RegistryError> {
        let _writer = self.writer.lock().await;
        let Some(existing) = self.instance(service, id) else {
            return Err(RegistryError::NotFound(format!(
                "instance {id} of service {service}"
            )));
        };
        if let Some(expected) = cas
            && expected != existing.modify_index
        {
            return Err(RegistryError::Conflict {
                what: format!("instance {id} of {service}"),
                expected,
                actual: existing.modify_index,
            });
        }
        let index = self.index() + 1;
        self.commit(
            service,
            Change::DeleteInstance {
                service: service.clone(),
                id: id.clone(),
                index,
            },
        )
        .await?;
        Ok(index)
    }

    /// Sets a service's settings; returns the index of the change (unchanged
    /// when the settings already were these).
    pub async fn put_settings(
        &self,
        service: &ServiceName,
        settings: ServiceSettings,
    ) -> Result<u64, RegistryError> {
        let _writer = self.writer.lock().await;
        if self.state.read().settings.get(service) == Some(&settings) {
            return Ok(self.index());
        }
        let index = self.index() + 1;
        self.commit(
            service,
            Change::PutSettings {
                service: service.clone(),
                settings,
                index,
            },
        )
        .await?;
        Ok(index)
    }

    /// Commits `change` to the store, then applies it, publishes the index and
    /// tells the observer. Called with the writer lock held.
    async fn commit(&self, service: &ServiceName, change: Change) -> Result<(), RegistryError> {
        self.store.commit(std::slice::from_ref(&change)).await?;
        let index = change.index();
        self.state.write().apply(&change);
        self.index.store(index, Ordering::Release);
        let state = self.service(service).unwrap_or_else(|| gone(service));
        self.observer.service_changed(&state, index);
        Ok(())
    }

    /// One instance.
    pub fn instance(&self, service: &ServiceName, id: &InstanceId) -> Option<Instance> {
        self.state.read().instances.get(service)?.get(id).cloned()
    }

    /// One service's whole state, if it exists.
    pub fn service(&self, name: &ServiceName) -> Option<ServiceState> {
        let state = self.state.read();
        let service = ServiceState {
            name: name.clone(),
            settings: state.settings.get(name).cloned(),
            instances: state
                .instances
                .get(name)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
        };
        service.exists().then_some(service)
    }

    /// Names of every existing service, sorted.
    pub fn service_names(&self) -> Vec<ServiceName> {
        let state = self.state.read();
        let mut names: Vec<ServiceName> = state.instances.keys().cloned().collect();
        names.extend(state.settings.keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    /// A summary of every service, sorted by name.
    pub fn services(&self) -> Vec<ServiceSummary> {
        let state = self.state.read();
        let empty = BTreeMap::new();
        self.service_names()
            .into_iter()
            .map(|name| {
                let instances = state.instances.get(&name).unwrap_or(&empty);
                ServiceSummary {
                    instances: instances.len(),
                    served: instances.values().filter(|i| i.is_served()).count(),
                    settings: state.settings.get(&name).cloned(),
                    name,
                }
            })
            .collect()
    }
}

/// The state observers see for a service that no longer exists.
fn gone(name: &ServiceName) -> ServiceState {
    ServiceState {
        name: name.clone(),
        settings: None,
        instances: Vec::new(),
    }
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
        fn service_changed(&self, service: &ServiceState, _index: u64) {
            self.0.lock().push(service.clone());
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
}
