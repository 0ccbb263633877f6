//! The embedded store: one redb file in the data directory.
//!
//! A commit returns only after redb's transaction commit has returned with
//! `Durability::Immediate` (written and synced), so whatever the registry
//! acknowledges survives `kill -9` and power loss; a transaction is atomic,
//! so a crash never leaves half a change. Records are the registry's JSON
//! form ([`crate::registry::codec`]) and are checked again when loaded. The
//! file carries a format version; the directory is locked for the life of
//! the process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Change, Store, StoreError, StoredState};
use crate::registry::codec::{
    Fields, InstanceJson, SETTINGS_FIELDS, instance_from_json, settings_from, settings_to_json,
};
use crate::registry::model::{Instance, ServiceName};

/// The database file in the data directory.
pub const DB_FILE: &str = "signpost.redb";
/// The lock file in the data directory, held while a server uses it.
pub const LOCK_FILE: &str = "LOCK";
/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// redb's page cache. The registry keeps every instance in memory already
/// and reads the file only at start, so the cache need only hold the pages
/// a commit touches; redb's default (1 GiB) would end up caching the whole
/// file and double the memory of a large registry.
const CACHE_SIZE: usize = 16 << 20;
/// Instances by (service, id), as JSON.
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");
/// Settings by service, as JSON.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// `format_version` and `index`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Why a data directory cannot be used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory or file cannot be created, opened or read.
    #[error(
        "data directory {path}: {source}; check that it exists, is a directory and can be read and written"
    )]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "data directory {path} is in use by another signpost (its {LOCK_FILE} file is locked); stop that server or choose another --data-dir"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// Written by a newer signpost.
    #[error(
        "{path} was written by a newer signpost (data format {found}; this one reads format {FORMAT_VERSION}); run the newer signpost, or start this one on an empty --data-dir and `signpost import` an export"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The format version found.
        found: u64,
    },
    /// The file is damaged or not a signpost database.
    #[error(
        "{path} is damaged or not a signpost database ({detail}); move it aside and `signpost import` a backup into a fresh --data-dir (signpost never starts empty over it)"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found wrong.
        detail: String,
    },
}

/// The embedded store.
pub struct RedbStore {
    /// The database (shared with blocking tasks).
    db: Arc<Database>,
    /// The database file, for messages.
    path: PathBuf,
    /// Holds the directory's lock while the store lives.
    _lock: File,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`: locks the directory, opens the
    /// database and checks its format version.
    pub fn open(dir: &Path) -> Result<Self, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataDirError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DataDirError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }

        let path = dir.join(DB_FILE);
        let corrupt = |detail: String| DataDirError::Corrupt {
            path: path.clone(),
            detail,
        };
        let exists = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta.len() > 0,
            Ok(_) => {
                return Err(DataDirError::Io {
                    path: path.clone(),
                    source: std::io::Error::other("is not a regular file"),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&path)(e)),
        };
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_SIZE);
        let opened = if exists {
            builder.open(&path)
        } else {
            builder.create(&path)
        };
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => DataDirError::Locked {
                path: dir.to_owned(),
            },
            // redb says "not a redb database" as an InvalidData I/O error.
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(source.to_string())
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => DataDirError::Io {
                path: path.clone(),
                source,
            },
            other => corrupt(other.to_string()),
        })?;

        // Check (or, for a new file, write) the format version.
        let txn = db.begin_write().map_err(|e| corrupt(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| corrupt(e.to_string()))?;
            let version = meta
                .get("format_version")
                .map_err(|e| corrupt(e.to_string()))?
                .map(|v| v.value());
            match version {
                Some(found) if found > FORMAT_VERSION => {
                    return Err(DataDirError::TooNew { path, found });
                }
                Some(_) => {}
                None => {
                    let instances = txn
                        .open_table(INSTANCES)
                        .map_err(|e| corrupt(e.to_string()))?;
                    if !instances.is_empty().map_err(|e| corrupt(e.to_string()))? {
                        return Err(corrupt("it holds instances but no format version".into()));
                    }
                    drop(instances);
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| corrupt(e.to_string()))?;
                }
            }
            txn.open_table(SETTINGS)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        txn.commit().map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            db: Arc::new(db),
            path,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_blocking(db: &Database, path: &Path) -> Result<StoredState, StoreError> {
        let damaged = |detail: String| StoreError::Corrupt(format!("{}: {detail}", path.display()));
        let txn = db.begin_read().map_err(|e| damaged(e.to_string()))?;
        let mut state = StoredState::default();
        let meta = txn.open_table(META).map_err(|e| damaged(e.to_string()))?;
        state.index = meta
            .get("index")
            .map_err(|e| damaged(e.to_string()))?
            .map_or(0, |v| v.value());

        let instances = txn
            .open_table(INSTANCES)
            .map_err(|e| damaged(e.to_string()))?;
        // Read the records in key order, then decode them on every core:
        // decoding is most of a start's time.
        let mut records = Vec::new();
        for entry in instances.iter().map_err(|e| damaged(e.to_string()))? {
            let (key, value) = entry.map_err(|e| damaged(e.to_string()))?;
            let (service, id) = key.value();
            records.push((service.to_owned(), id.to_owned(), value.value().to_vec()));
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        let chunk = records.len().div_ceil(workers).max(1);
        let decoded: Vec<Result<Vec<(ServiceName, Instance)>, StoreError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = records
                    .chunks(chunk)
                    .map(|part| scope.spawn(|| decode_instances(part, &damaged)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(damaged("decoding a record panicked".to_string()))
                        })
                    })
                    .collect()
            });
        drop(records);
        for part in decoded {
            for (service, instance) in part? {
                state.index = state.index.max(instance.modify_index);
                state
                    .instances
                    .entry(service)
                    .or_default()
                    .insert(instance.id.clone(), Arc::new(instance));
            }
        }

        let settings = txn
            .open_table(SETTINGS)
            .map_err(|e| damaged(e.to_string()))?;
        for entry in settings.iter().map_err(|e| damaged(e.to_string()))? {
            let (key, value) = entry.map_err(|e| damaged(e.to_string()))?;
            let record = format!("settings of {}", key.value());
            let name =
                ServiceName::parse(key.value()).map_err(|e| damaged(format!("{record}: {e}")))?;
            let json = serde_json::from_slice(value.value())
                .map_err(|e| damaged(format!("{record}: {e}")))?;
            let parsed = Fields::of(json, SETTINGS_FIELDS, &[])
                .and_then(|mut f| settings_from(&mut f))
                .map_err(|e| damaged(format!("{record}: {e}")))?;
            state.settings.insert(name, parsed);
        }
        Ok(state)
    }

    fn commit_blocking(db: &Database, changes: &[Change]) -> Result<(), StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("disk commit failed: {e}"));
        let txn = db.begin_write().map_err(|e| failed(&e))?;
        {
            let mut instances = txn.open_table(INSTANCES).map_err(|e| failed(&e))?;
            let mut settings = txn.open_table(SETTINGS).map_err(|e| failed(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| failed(&e))?;
            let mut index = meta
                .get("index")
                .map_err(|e| failed(&e))?
                .map_or(0, |v| v.value());
            for change in changes {
                match change {
                    Change::PutInstance {
                        service, instance, ..
                    } => {
                        let json = record(service, instance)?;
                        instances
                            .insert((service.as_str(), instance.id.as_str()), json.as_slice())
                            .map_err(|e| failed(&e))?;
                    }
                    Change::DeleteInstance { service, id, .. } => {
                        instances
                            .remove((service.as_str(), id.as_str()))
                            .map_err(|e| failed(&e))?;
                    }
                    Change::PutSettings {
                        service,
                        settings: s,
                        ..
                    } => {
                        let json = settings_to_json(s).to_string();
                        settings
                            .insert(service.as_str(), json.as_bytes())
                            .map_err(|e| failed(&e))?;
                    }
                    Change::Restore { state } => {
                        instances.retain(|_, _| false).map_err(|e| failed(&e))?;
                        settings.retain(|_, _| false).map_err(|e| failed(&e))?;
                        for (service, by_id) in &state.instances {
                            for instance in by_id.values() {
                                let json = record(service, instance)?;
                                instances
                                    .insert(
                                        (service.as_str(), instance.id.as_str()),
                                        json.as_slice(),
                                    )
                                    .map_err(|e| failed(&e))?;
                            }
                        }
                        for (service, s) in &state.settings {
                            let json = settings_to_json(s).to_string();
                            settings
                                .insert(service.as_str(), json.as_bytes())
                                .map_err(|e| failed(&e))?;
                        }
                        index = state.index;
                    }
                }
                index = index.max(change.index());
            }
            meta.insert("index", index).map_err(|e| failed(&e))?;
        }
        // Durability::Immediate (the default): returns once synced to disk.
        txn.commit().map_err(|e| failed(&e))
    }
}

/// Decodes stored instance records `(service, id, JSON)`, checking that
/// each is stored under its own key.
fn decode_instances(
    records: &[(String, String, Vec<u8>)],
    damaged: &(dyn Fn(String) -> StoreError + Sync),
) -> Result<Vec<(ServiceName, Instance)>, StoreError> {
    records
        .iter()
        .map(|(service, id, value)| {
            let record = || format!("instance {id} of {service}");
            let json =
                serde_json::from_slice(value).map_err(|e| damaged(format!("{}: {e}", record())))?;
            let (stored_service, instance) =
                instance_from_json(json).map_err(|e| damaged(format!("{}: {e}", record())))?;
            if stored_service.as_str() != service || instance.id.as_str() != id {
                return Err(damaged(format!(
                    "{} is stored under the wrong key",
                    record()
                )));
            }
            Ok((stored_service, instance))
        })
        .collect()
}

/// The stored form of an instance.
fn record(service: &ServiceName, instance: &Instance) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&InstanceJson::new(service, instance)).map_err(|e| {
        StoreError::Unavailable(format!("cannot encode instance {}: {e}", instance.id))
    })
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn load(&self) -> Result<StoredState, StoreError> {
        let db = self.db.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || Self::load_blocking(&db, &path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("load task failed: {e}")))?
    }

    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        // On the server's multi-threaded runtime the committer blocks its own
        // worker for the commit (the others take its tasks), and goes on with
        // the round the moment the disk returns. Handing the commit to a
        // blocking thread instead left the committer waiting in the run queue
        // behind HTTP tasks for about a millisecond a round.
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(|| Self::commit_blocking(&self.db, changes));
        }
        let db = self.db.clone();
        let changes = changes.to_vec();
        tokio::task::spawn_blocking(move || Self::commit_blocking(&db, &changes))
            .await
            .map_err(|e| StoreError::Unavailable(format!("commit task failed: {e}")))?
    }

    fn kind(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("signpost-redb-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let d = dir("locked");
        let first = RedbStore::open(&d).unwrap();
        let err = RedbStore::open(&d).unwrap_err();
        assert!(matches!(err, DataDirError::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&d.display().to_string()));
        drop(first);
        RedbStore::open(&d).expect("the lock goes with the store");
    }

    #[test]
    fn an_unreadable_place_is_refused() {
        let d = dir("unreadable");
        std::fs::create_dir_all(d.join(DB_FILE)).unwrap();
        let err = RedbStore::open(&d).unwrap_err();
        assert!(matches!(err, DataDirError::Io { .. }), "{err}");
        assert!(err.to_string().contains(DB_FILE), "{err}");
        let file = dir("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            RedbStore::open(&file).unwrap_err(),
            DataDirError::Io { .. }
        ));
    }

    #[test]
    fn a_newer_format_is_refused() {
        let d = dir("newer");
        drop(RedbStore::open(&d).unwrap());
        let db = Database::open(d.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = RedbStore::open(&d).unwrap_err();
        assert!(
            matches!(err, DataDirError::TooNew { found, .. } if found == FORMAT_VERSION + 1),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let d = dir("garbage");
        std::fs::create_dir_all(&d).unwrap();
        let garbage: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(d.join(DB_FILE), &garbage).unwrap();
        let err = RedbStore::open(&d).unwrap_err();
        assert!(matches!(err, DataDirError::Corrupt { .. }), "{err}");
        assert_eq!(
            std::fs::read(d.join(DB_FILE)).unwrap(),
            garbage,
            "left as it was"
        );
    }

    #[tokio::test]
    async fn a_damaged_record_fails_the_load_naming_it() {
        let d = dir("record");
        drop(RedbStore::open(&d).unwrap());
        let db = Database::open(d.join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(INSTANCES)
            .unwrap()
            .insert(("web", "w1"), br#"{"port": 0}"#.as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let store = RedbStore::open(&d).unwrap();
        let err = store.load().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("instance w1 of web")),
            "{err}"
        );
    }
}
