//! The embedded store: a write-ahead log and one redb file in the data
//! directory.
//!
//! A commit appends the round's changes to the log ([`super::wal`]) and
//! returns once that record is synced, so whatever the registry
//! acknowledges survives `kill -9` and power loss. The changes reach the
//! redb file in checkpoints: every [`CHECKPOINT_EVERY`] (or
//! [`CHECKPOINT_BYTES`] of log) a background thread applies the records
//! since the last checkpoint in one redb transaction, which also records
//! the last log record it holds (`wal_seq`). A redb transaction is atomic
//! and the log is read back record by whole record, so a crash never leaves
//! half a change. At start the records past `wal_seq` are applied to the
//! file before anything is loaded.
//!
//! Why a log in front of redb: a redb commit of one write costs about
//! 0.3 ms here (it rewrites and syncs the B-tree pages on the path to every
//! changed key), a synced append to a preallocated file about 0.1 ms, and
//! one checkpoint transaction of thousands of writes costs far less per
//! write than many small commits. Records are the registry's JSON form
//! ([`crate::registry::codec`]) and are checked again when loaded. The file
//! carries a format version; the directory is locked for the life of the
//! process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use super::wal::{WAL_FILES, Wal};
use super::{Change, Instances, Store, StoreError, StoredState};
use crate::registry::codec::{
    Fields, InstanceJson, SETTINGS_FIELDS, instance_from_json, settings_from, settings_to_json,
};
use crate::registry::model::{Instance, ServiceName};

/// The database file in the data directory.
pub const DB_FILE: &str = "signpost.redb";
/// The lock file in the data directory, held while a server uses it.
pub const LOCK_FILE: &str = "LOCK";
/// The on-disk format this build writes and reads. 2 added the write-ahead
/// log (a signpost that reads only format 1 would not replay it); a format 1
/// file is upgraded when opened.
pub const FORMAT_VERSION: u64 = 2;
/// Longest a change waits in the log alone before a checkpoint starts.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Log bytes after which a checkpoint starts sooner.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;

/// redb's page cache. The registry keeps every instance in memory already
/// and reads the file only at start, so the cache need only hold the pages
/// a commit touches; redb's default (1 GiB) would end up caching the whole
/// file and double the memory of a large registry.
const CACHE_SIZE: usize = 16 << 20;
/// Instance records read and decoded at a time at start-up.
const LOAD_BATCH: usize = 16_384;
/// Instances by (service, id), as JSON.
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");
/// Settings by service, as JSON.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// `format_version`, `index` and `wal_seq` (the last log record applied).
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
    inner: Arc<Inner>,
}

struct Inner {
    /// The database (shared with the checkpoint thread).
    db: Arc<Database>,
    /// The database file, for messages.
    path: PathBuf,
    /// The log and what it holds that the file does not yet. Only the
    /// registry's committer takes it, one round at a time.
    log: Mutex<Log>,
    /// Holds the directory's lock while the store lives (dropped last).
    _lock: File,
}

/// A checkpoint thread.
type Checkpoint = JoinHandle<Result<(), StoreError>>;

/// The log's side of the store.
struct Log {
    wal: Wal,
    /// Payloads of the records not yet in a checkpoint, oldest first.
    pending: Vec<Vec<u8>>,
    /// When the oldest of them was appended.
    since: Instant,
    /// How long a change may wait for a checkpoint (tests shorten it).
    every: Duration,
    /// The checkpoint running, if any, and the payloads it applies. They
    /// stay here until it has succeeded: a checkpoint that fails, panics or
    /// cannot start gives them back to `pending`.
    running: Option<(Checkpoint, Arc<[Vec<u8>]>)>,
    /// Whether every record in the file the log is not writing is in the
    /// redb file, so the log may roll into it.
    other_applied: bool,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
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
            if version != Some(FORMAT_VERSION) {
                meta.insert("format_version", FORMAT_VERSION)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
            txn.open_table(SETTINGS)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        txn.commit().map_err(|e| corrupt(e.to_string()))?;

        // Apply what the log holds past the file's last checkpoint.
        let applied = read_meta(&db, "wal_seq").map_err(corrupt)?;
        let wal_error = |e: super::wal::WalError| match e.io {
            Some(source) => DataDirError::Io {
                path: e.path,
                source,
            },
            None => DataDirError::Corrupt {
                path: e.path,
                detail: e.detail,
            },
        };
        let (mut wal, records) = Wal::open(dir, applied).map_err(wal_error)?;
        if let Some(last) = records.last() {
            let last = last.seq;
            let payloads: Vec<_> = records.into_iter().map(|r| r.payload).collect();
            checkpoint(&db, &payloads, last).map_err(|e| corrupt(e.to_string()))?;
            tracing::info!(
                records = payloads.len(),
                "applied the write-ahead log's records to {}",
                path.display()
            );
        }
        wal.restart().map_err(|source| DataDirError::Io {
            path: dir.join(WAL_FILES[0]),
            source,
        })?;
        let log = Log {
            wal,
            pending: Vec::new(),
            since: Instant::now(),
            every: CHECKPOINT_EVERY,
            running: None,
            other_applied: true,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                path,
                log: Mutex::new(log),
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Sets how long a change may wait in the log alone before a checkpoint
    /// starts ([`CHECKPOINT_EVERY`] unless set; zero starts one at every
    /// commit when none is running).
    pub fn checkpoint_interval(self, every: Duration) -> Self {
        self.inner.log.lock().every = every;
        self
    }

    fn load_blocking(db: &Database, path: &Path) -> Result<StoredState, StoreError> {
        let damaged = |detail: String| StoreError::Corrupt(format!("{}: {detail}", path.display()));
        let txn = db.begin_read().map_err(|e| damaged(e.to_string()))?;
        let mut state = StoredState::default();
        let mut index = 0;
        let meta = txn.open_table(META).map_err(|e| damaged(e.to_string()))?;
        state.index = meta
            .get("index")
            .map_err(|e| damaged(e.to_string()))?
            .map_or(0, |v| v.value());

        let instances = txn
            .open_table(INSTANCES)
            .map_err(|e| damaged(e.to_string()))?;
        // Read the records in key order a batch at a time, and decode each
        // batch on every core: decoding is most of a start's time. Reading
        // every record first took more memory than the registry itself, and
        // memory freed after a start goes back to the system only slowly.
        let workers = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        // Records come by service, in id order: one name for all of a
        // service's instances.
        let mut service: Option<(String, Vec<Arc<Instance>>)> = None;
        let mut finish = |service: Option<(String, Vec<Arc<Instance>>)>| {
            if let Some((name, instances)) = service {
                let name = ServiceName::parse(&name).map_err(|e| damaged(e.to_string()))?;
                let instances = Instances::from_unsorted(instances)
                    .map_err(|id| damaged(format!("instance {id} of {name} is stored twice")))?;
                state.instances.insert(name, instances);
            }
            Ok::<_, StoreError>(())
        };
        let mut entries = instances.iter().map_err(|e| damaged(e.to_string()))?;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        loop {
            batch.clear();
            for entry in entries.by_ref().take(LOAD_BATCH) {
                let (key, value) = entry.map_err(|e| damaged(e.to_string()))?;
                let (service, id) = key.value();
                batch.push((service.to_owned(), id.to_owned(), value.value().to_vec()));
            }
            if batch.is_empty() {
                break;
            }
            let chunk = batch.len().div_ceil(workers);
            let decoded: Vec<Result<Vec<Instance>, StoreError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
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
            for (part, records) in decoded.into_iter().zip(batch.chunks(chunk)) {
                for (instance, (name, _, _)) in part?.into_iter().zip(records) {
                    index = index.max(instance.modify_index);
                    if service.as_ref().is_none_or(|(current, _)| current != name) {
                        finish(service.replace((name.clone(), Vec::new())))?;
                    }
                    if let Some((_, instances)) = &mut service {
                        instances.push(Arc::new(instance));
                    }
                }
            }
        }
        finish(service)?;
        state.index = state.index.max(index);

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
}

impl Inner {
    /// Commits one round: a synced log record, or, for a restore, a redb
    /// transaction of its own.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut log = self.log.lock();
        log.reap();
        if changes.iter().any(|c| matches!(c, Change::Restore { .. })) {
            return self.commit_restore(&mut log, changes);
        }
        let payload = encode(changes)?;
        log.wal.append(&payload).map_err(|e| {
            StoreError::Unavailable(format!(
                "disk commit failed: {}: {e}",
                log.wal.active_path().display()
            ))
        })?;
        if log.pending.is_empty() {
            log.since = Instant::now();
        }
        log.pending.push(payload);
        if log.running.is_none()
            && (log.since.elapsed() >= log.every || log.wal.written() >= CHECKPOINT_BYTES)
        {
            log.start_checkpoint(&self.db);
        }
        Ok(())
    }

    /// A restore replaces the file's contents in one transaction, with
    /// everything the log holds, after any checkpoint running has ended.
    fn commit_restore(&self, log: &mut Log, changes: &[Change]) -> Result<(), StoreError> {
        log.wait();
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("disk commit failed: {e}"));
        let txn = self.db.begin_write().map_err(|e| failed(&e))?;
        {
            let mut tables = Tables::open(&txn).map_err(|e| failed(&e))?;
            for payload in &log.pending {
                tables.apply(payload)?;
            }
            for change in changes {
                match change {
                    Change::Restore { state } => tables.restore(state)?,
                    other => tables.apply(&encode(std::slice::from_ref(other))?)?,
                }
            }
            tables.finish(log.wal.last_seq()).map_err(|e| failed(&e))?;
        }
        txn.commit().map_err(|e| failed(&e))?;
        log.pending.clear();
        log.other_applied = true;
        Ok(())
    }
}

impl Log {
    /// Takes the result of a checkpoint that has ended, if any.
    fn reap(&mut self) {
        if self
            .running
            .as_ref()
            .is_some_and(|(thread, _)| thread.is_finished())
        {
            self.wait();
        }
    }

    /// Waits for the checkpoint running, if any, and takes its result.
    fn wait(&mut self) {
        let Some((thread, payloads)) = self.running.take() else {
            return;
        };
        let result = thread.join().unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the checkpoint thread panicked".into(),
            ))
        });
        match result {
            Ok(()) => self.other_applied = true,
            Err(error) => {
                tracing::warn!(%error, "checkpoint failed; its changes stay in the log and are tried again");
                self.give_back(&payloads);
            }
        }
    }

    /// Puts the payloads of a checkpoint that did not happen back in front
    /// of `pending`, so the next checkpoint applies them.
    fn give_back(&mut self, payloads: &[Vec<u8>]) {
        let mut all = payloads.to_vec();
        all.append(&mut self.pending);
        self.pending = all;
    }

    /// Hands everything pending to a checkpoint thread. The log first moves
    /// to its other file if that file is all applied; otherwise (a
    /// checkpoint failed) it stays where it is, and this checkpoint covers
    /// both files.
    fn start_checkpoint(&mut self, db: &Arc<Database>) {
        if self.other_applied {
            if let Err(error) = self.wal.roll() {
                tracing::warn!(%error, "cannot switch write-ahead log files; checkpoint postponed");
                return;
            }
            self.other_applied = false;
        }
        let payloads: Arc<[Vec<u8>]> = std::mem::take(&mut self.pending).into();
        let upto = self.wal.last_seq();
        let db = db.clone();
        let applied = payloads.clone();
        let spawned = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let started = Instant::now();
                let records = applied.len();
                let result = checkpoint(&db, &applied, upto);
                tracing::debug!(
                    records,
                    upto,
                    ms = started.elapsed().as_millis() as u64,
                    ok = result.is_ok(),
                    "checkpoint"
                );
                result
            });
        match spawned {
            Ok(thread) => self.running = Some((thread, payloads)),
            Err(error) => {
                tracing::warn!(%error, "cannot start a checkpoint thread");
                self.give_back(&payloads);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The checkpoint thread holds the database: let it finish, so the
        // file is closed when the lock is released.
        self.log.get_mut().wait();
    }
}

/// Applies log payloads to the file in one durable transaction that also
/// records `upto` as the last log record applied.
fn checkpoint(db: &Database, payloads: &[Vec<u8>], upto: u64) -> Result<(), StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("checkpoint: {e}"));
    let txn = db.begin_write().map_err(|e| failed(&e))?;
    {
        let mut tables = Tables::open(&txn).map_err(|e| failed(&e))?;
        for payload in payloads {
            tables.apply(payload)?;
        }
        tables.finish(upto).map_err(|e| failed(&e))?;
    }
    // Durability::Immediate (the default): returns once synced to disk.
    txn.commit().map_err(|e| failed(&e))
}

/// Reads a value from the meta table (0 when absent).
fn read_meta(db: &Database, key: &str) -> Result<u64, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta = txn.open_table(META).map_err(|e| e.to_string())?;
    Ok(meta
        .get(key)
        .map_err(|e| e.to_string())?
        .map_or(0, |v| v.value()))
}

/// The tables of one write transaction, and the highest index written.
struct Tables<'t> {
    instances: Table<'t, (&'static str, &'static str), &'static [u8]>,
    settings: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    index: u64,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        let meta = txn.open_table(META)?;
        let index = meta.get("index")?.map_or(0, |v| v.value());
        Ok(Self {
            instances: txn.open_table(INSTANCES)?,
            settings: txn.open_table(SETTINGS)?,
            meta,
            index,
        })
    }

    /// Applies one log payload.
    fn apply(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("checkpoint: {e}"));
        for op in Ops(payload) {
            let op = op.map_err(|e| StoreError::Corrupt(format!("write-ahead log: {e}")))?;
            match op.kind {
                OP_PUT => self
                    .instances
                    .insert((op.service, op.id), op.value)
                    .map(drop),
                OP_DELETE => self.instances.remove((op.service, op.id)).map(drop),
                _ => self.settings.insert(op.service, op.value).map(drop),
            }
            .map_err(|e| failed(&e))?;
            self.index = self.index.max(op.index);
        }
        Ok(())
    }

    /// Replaces everything with `state`.
    fn restore(&mut self, state: &StoredState) -> Result<(), StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("disk commit failed: {e}"));
        self.instances
            .retain(|_, _| false)
            .map_err(|e| failed(&e))?;
        self.settings.retain(|_, _| false).map_err(|e| failed(&e))?;
        for (service, by_id) in &state.instances {
            for instance in by_id.values() {
                let json = record(service, instance)?;
                self.instances
                    .insert((service.as_str(), instance.id.as_str()), json.as_slice())
                    .map_err(|e| failed(&e))?;
            }
        }
        for (service, s) in &state.settings {
            let json = settings_to_json(s).to_string();
            self.settings
                .insert(service.as_str(), json.as_bytes())
                .map_err(|e| failed(&e))?;
        }
        self.index = state.index;
        Ok(())
    }

    /// Records the index and the last log record applied.
    fn finish(mut self, upto: u64) -> Result<(), redb::StorageError> {
        self.meta.insert("index", self.index)?;
        self.meta.insert("wal_seq", upto)?;
        Ok(())
    }
}

/// Log payload operations: put an instance record, delete one, put a
/// service's settings.
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_SETTINGS: u8 = 3;

/// One operation of a log payload:
/// `kind: u8 | index: u64 | service: u16-prefixed | id: u16-prefixed | value: u32-prefixed`.
struct Op<'p> {
    kind: u8,
    index: u64,
    service: &'p str,
    id: &'p str,
    value: &'p [u8],
}

/// A round's changes as one log payload. Restores never go to the log.
fn encode(changes: &[Change]) -> Result<Vec<u8>, StoreError> {
    fn push(out: &mut Vec<u8>, kind: u8, index: u64, service: &str, id: &str, value: &[u8]) {
        out.push(kind);
        out.extend_from_slice(&index.to_le_bytes());
        // Names are at most 255 bytes (DNS), values far below 4 GiB.
        out.extend_from_slice(&(service.len() as u16).to_le_bytes());
        out.extend_from_slice(service.as_bytes());
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(512 * changes.len());
    for change in changes {
        match change {
            Change::PutInstance {
                service,
                instance,
                index,
            } => {
                let json = record(service, instance)?;
                push(
                    &mut out,
                    OP_PUT,
                    *index,
                    service.as_str(),
                    instance.id.as_str(),
                    &json,
                );
            }
            Change::DeleteInstance { service, id, index } => {
                push(
                    &mut out,
                    OP_DELETE,
                    *index,
                    service.as_str(),
                    id.as_str(),
                    &[],
                );
            }
            Change::PutSettings {
                service,
                settings,
                index,
            } => {
                let json = settings_to_json(settings).to_string();
                push(
                    &mut out,
                    OP_SETTINGS,
                    *index,
                    service.as_str(),
                    "",
                    json.as_bytes(),
                );
            }
            Change::Restore { .. } => {
                return Err(StoreError::Unavailable(
                    "a restore is not written to the log".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// The operations of a payload, in order.
struct Ops<'p>(&'p [u8]);

impl<'p> Iterator for Ops<'p> {
    type Item = Result<Op<'p>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut take = |n: usize| -> Result<&'p [u8], String> {
            if self.0.len() < n {
                self.0 = &[];
                return Err("a record ends inside an operation".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        };
        let op = (|| {
            let kind = take(1)?[0];
            if !(OP_PUT..=OP_SETTINGS).contains(&kind) {
                return Err(format!("unknown operation {kind}"));
            }
            let index = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let text = |bytes: &'p [u8]| {
                std::str::from_utf8(bytes).map_err(|_| "a name is not UTF-8".to_string())
            };
            let n = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
            let service = text(take(n.into())?)?;
            let n = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
            let id = text(take(n.into())?)?;
            let n = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
            let value = take(n as usize)?;
            Ok(Op {
                kind,
                index,
                service,
                id,
                value,
            })
        })();
        Some(op)
    }
}

/// Decodes stored instance records `(service, id, JSON)`, checking that
/// each is stored under its own key.
fn decode_instances(
    records: &[(String, String, Vec<u8>)],
    damaged: &(dyn Fn(String) -> StoreError + Sync),
) -> Result<Vec<Instance>, StoreError> {
    records
        .iter()
        .map(|(service, id, value)| {
            let record = || format!("instance {id} of {service}");
            let json =
                serde_json::from_slice(value).map_err(|e| damaged(format!("{}: {e}", record())))?;
            let (stored_service, instance) =
                instance_from_json(json).map_err(|e| damaged(format!("{}: {e}", record())))?;
            if stored_service != *service || instance.id.as_str() != id {
                return Err(damaged(format!(
                    "{} is stored under the wrong key",
                    record()
                )));
            }
            Ok(instance)
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
        let db = self.inner.db.clone();
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || Self::load_blocking(&db, &path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("load task failed: {e}")))?
    }

    async fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if changes.is_empty() {
            return Ok(());
        }
        // On the server's multi-threaded runtime the committer blocks its own
        // worker for the commit (the others take its tasks), and goes on with
        // the round the moment the disk returns. Handing the commit to a
        // blocking thread instead left the committer waiting in the run queue
        // behind HTTP tasks for about a millisecond a round.
        if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(|| self.inner.commit(changes));
        }
        let inner = self.inner.clone();
        let changes = changes.to_vec();
        tokio::task::spawn_blocking(move || inner.commit(&changes))
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

    fn instance_change(service: &str, id: &str, index: u64) -> Change {
        let spec = crate::registry::model::InstanceSpec::new("10.0.0.1".parse().unwrap(), 80);
        let id = crate::registry::model::InstanceId::parse(id).unwrap();
        Change::PutInstance {
            service: ServiceName::parse(service).unwrap(),
            instance: Arc::new(spec.into_instance(id, index, index)),
            index,
        }
    }

    fn stored_instances(d: &Path) -> u64 {
        let db = Database::open(d.join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        txn.open_table(INSTANCES).unwrap().len().unwrap()
    }

    /// Commits three instances of "web" (indexes 1–3) to a store in `d`
    /// that never checkpoints, then closes it.
    async fn three_writes_in_the_log_only(d: &Path) {
        let store = RedbStore::open(d)
            .unwrap()
            .checkpoint_interval(Duration::MAX);
        for i in 1..=3 {
            store
                .commit(&[instance_change("web", &format!("w{i}"), i)])
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_log_is_applied_before_loading() {
        let d = dir("replay");
        three_writes_in_the_log_only(&d).await;
        // Acknowledged, but only in the log.
        assert_eq!(stored_instances(&d), 0);
        let store = RedbStore::open(&d).unwrap();
        let loaded = store.load().await.unwrap();
        assert_eq!(loaded.index, 3);
        assert_eq!(loaded.instances.values().map(|m| m.len()).sum::<usize>(), 3);
        assert_eq!(read_meta(&store.inner.db, "wal_seq").unwrap(), 3);
        drop(store);
        assert_eq!(stored_instances(&d), 3, "applied to the file at start");
    }

    #[tokio::test]
    async fn checkpoints_at_every_round_lose_nothing() {
        let d = dir("checkpoints");
        let mut expected = StoredState::default();
        {
            let store = RedbStore::open(&d)
                .unwrap()
                .checkpoint_interval(Duration::ZERO);
            for i in 1..=200u64 {
                let changes = [
                    instance_change("web", &format!("w{}", i % 50), 2 * i - 1),
                    instance_change("api", &format!("a{i}"), 2 * i),
                ];
                store.commit(&changes).await.unwrap();
                for change in &changes {
                    expected.apply(change);
                }
            }
            let log = store.inner.log.lock();
            assert_eq!(log.wal.last_seq(), 200);
        }
        // Every checkpoint started has ended (the store waits for it).
        assert!(stored_instances(&d) > 0);
        let store = RedbStore::open(&d).unwrap();
        assert_eq!(store.load().await.unwrap(), expected);
        assert_eq!(read_meta(&store.inner.db, "wal_seq").unwrap(), 200);
        // Numbering goes on after a restart.
        store
            .commit(&[instance_change("web", "late", 401)])
            .await
            .unwrap();
        assert_eq!(store.inner.log.lock().wal.last_seq(), 201);
    }

    #[tokio::test]
    async fn a_restore_takes_the_log_with_it() {
        let d = dir("restore");
        {
            let store = RedbStore::open(&d)
                .unwrap()
                .checkpoint_interval(Duration::MAX);
            store
                .commit(&[instance_change("web", "w1", 1)])
                .await
                .unwrap();
            let mut state = StoredState::default();
            state.apply(&instance_change("db", "d1", 5));
            state.index = 9;
            store.commit(&[Change::Restore { state }]).await.unwrap();
            store
                .commit(&[instance_change("db", "d2", 10)])
                .await
                .unwrap();
        }
        let store = RedbStore::open(&d).unwrap();
        let loaded = store.load().await.unwrap();
        let names: Vec<_> = loaded.instances.keys().map(|s| s.as_str()).collect();
        assert_eq!(names, ["db"], "the log's put before the restore is gone");
        assert_eq!(
            loaded.instances[&ServiceName::parse("db").unwrap()].len(),
            2
        );
        assert_eq!(loaded.index, 10);
    }

    #[tokio::test]
    async fn a_damaged_log_is_refused_naming_it() {
        let d = dir("damaged-log");
        three_writes_in_the_log_only(&d).await;
        // Flip a byte inside the first record's payload.
        let wal = d.join(WAL_FILES[0]);
        let mut bytes = std::fs::read(&wal).unwrap();
        let at = super::super::wal::HEADER_LEN as usize + 40;
        bytes[at] ^= 0xff;
        std::fs::write(&wal, &bytes).unwrap();
        let err = RedbStore::open(&d).unwrap_err();
        assert!(matches!(err, DataDirError::Corrupt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(WAL_FILES[0]), "{message}");
        assert!(message.contains("record 1 is damaged"), "{message}");
        assert_eq!(
            stored_instances(&d),
            0,
            "nothing applied from a damaged log"
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
