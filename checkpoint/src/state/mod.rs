//! Keyed operator state on RocksDB, with incremental snapshots into the checkpoint store.
//!
//! Each executor owns one [`StateBackend`]: a directory of RocksDB instances, one per
//! (query, operator, partition) it was given, sharing one block cache and one write-buffer
//! budget so the executor's state memory is bounded however many partitions it holds.
//!
//! A [`StatePartition`] is one such instance. After an epoch's task has written its changes,
//! [`StatePartition::snapshot`] takes a RocksDB checkpoint (hard links) and uploads to the
//! checkpoint store only the SST files the store does not hold yet, plus the small files that
//! describe the database and a manifest:
//!
//! ```text
//! CHECKPOINT/state/op-O/kg-S-E/sst/INCARNATION-NNNNNN.sst   immutable, shared by snapshots
//! CHECKPOINT/state/op-O/kg-S-E/epoch-N/snapshot.json        manifest: local name → stored name
//! CHECKPOINT/state/op-O/kg-S-E/epoch-N/{CURRENT,MANIFEST-*,OPTIONS-*}
//! ```
//!
//! Between full snapshots, an epoch's snapshot is a **changelog**: the epoch's writes (puts and
//! deletes, in order), appended to one file and referenced by the manifest together with the
//! full snapshot it builds on — one sequential file write instead of a memtable flush and a
//! RocksDB checkpoint, and a memtable whose short-lived keys (a window written in one epoch and
//! closed in the next) cancel out before they ever reach an SST. A full snapshot is taken at the
//! first epoch, after [`StateConfig::max_changelogs`] changelogs (default [`MAX_CHANGELOGS`]), or when an epoch wrote more than
//! [`MAX_CHANGELOG_BYTES`]. An epoch that wrote nothing to a partition writes no snapshot of it:
//! restoring an epoch without its own snapshot restores the newest one before it. Restoring a
//! changelog snapshot restores its base, then replays the changelogs in order:
//!
//! ```text
//! CHECKPOINT/state/op-O/kg-S-E/changelog/INCARNATION-N.log       one epoch's writes
//! ```
//!
//! The store is the checkpoint's `state/` directory or, for a checkpoint on an object store,
//! its `state/` prefix (see [`remote`] for how a snapshot is published without rename there):
//! an executor on any host restores a partition by downloading the files its manifest names.
//!
//! A partition's directory names the key groups `S..E` it holds (see [`KeyGroups`]);
//! checkpoints written before key groups use `part-P` (partition `P`).
//!
//! An SST's stored name carries the *incarnation* of the database that wrote it (a fresh id
//! each time an instance is created or restored), so an instance restored from an older epoch
//! can never mistake one of its new files for a same-named file written by an abandoned attempt.
//! [`collect_garbage`] deletes snapshots older than the oldest retained epoch and SSTs no
//! retained manifest references.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, Options, WriteBatch, WriteBufferManager, DB,
};
use serde::{Deserialize, Serialize};

use crate::error::{CheckpointError, Result};
use crate::location::Location;
use crate::{Epoch, QueryId};

mod changelog;
mod key_groups;
mod remote;
use changelog::{log_op, replay_changelog, LOG_DELETE, LOG_DELETE_RANGE, LOG_PUT};
pub use changelog::{parse_changelog, ChangelogOp};
pub use key_groups::{KeyGroups, Redistribution};
use remote::{epoch_dir, Remote, MANIFEST};

/// Memory limits shared by all state partitions of one executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateConfig {
    /// Block cache (reads) shared by every instance.
    pub block_cache_bytes: usize,
    /// Memtable budget across every instance (charged to the block cache).
    pub write_buffer_bytes: usize,
    /// Changelog snapshots between full snapshots (0: every snapshot is full).
    pub max_changelogs: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            max_changelogs: MAX_CHANGELOGS,
        }
    }
}

/// Names one keyed state partition of one stateful operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StatePartitionId {
    /// The query (state of different queries never mixes).
    pub query_id: QueryId,
    /// The stateful operator within the query.
    pub operator: u32,
    /// The partition (task) of that operator.
    pub partition: u32,
    /// The key groups it holds; `None` for a checkpoint written before key groups, whose
    /// partitions are numbered (and whose partition count cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<KeyGroups>,
}

impl StatePartitionId {
    /// Its directory relative to a state root: `op-O/kg-S-E` (key groups `S..E`), or
    /// `op-O/part-P` for a checkpoint written before key groups.
    pub fn relative_dir(&self) -> String {
        match self.key_groups {
            Some(kg) => format!("op-{}/{}", self.operator, kg.dir_name()),
            None => format!("op-{}/part-{}", self.operator, self.partition),
        }
    }
}

/// The manifest of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// The epoch whose state it holds.
    pub epoch: Epoch,
    /// SST files: local file name → stored name under `sst/`, with sizes.
    pub sst: BTreeMap<String, StoredFile>,
    /// The small files copied into the snapshot's own directory.
    pub small: Vec<String>,
    /// On an object store, the subdirectory of the full snapshot's `epoch-N/` holding the small
    /// files (the incarnation that wrote them: attempts of one epoch never overwrite each
    /// other's files); on a file system they are in `epoch-N/` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub small_dir: Option<String>,
    /// A changelog snapshot: the epoch of the full snapshot it builds on (whose `sst` and
    /// `small` this manifest repeats)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Epoch>,
    /// ...and the changelogs under `changelog/` to replay onto it, in order, with sizes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changelogs: Vec<StoredFile>,
}

/// Changelog snapshots taken before the next full snapshot.
pub const MAX_CHANGELOGS: usize = 10;
/// An epoch that wrote more than this takes a full snapshot.
pub const MAX_CHANGELOG_BYTES: usize = 64 << 20;

/// One SST as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredFile {
    /// Name under `sst/`.
    pub stored: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What one snapshot cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Bytes uploaded (new SSTs and the small files).
    pub uploaded_bytes: u64,
    /// Bytes of SSTs the snapshot references (the state's on-disk size).
    pub total_bytes: u64,
    /// Wall time of flush, checkpoint and upload, in microseconds.
    pub elapsed_us: u64,
}

/// The RocksDB instances of one executor.
pub struct StateBackend {
    root: PathBuf,
    config: StateConfig,
    cache: Cache,
    write_buffers: WriteBufferManager,
    partitions: Mutex<HashMap<StatePartitionId, Arc<Mutex<StatePartition>>>>,
}

impl std::fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBackend")
            .field("root", &self.root)
            .finish()
    }
}

/// One open RocksDB instance holding one state partition.
pub struct StatePartition {
    id: StatePartitionId,
    dir: PathBuf,
    db: DB,
    /// The epoch whose snapshot this instance last took (or was restored from).
    epoch: Option<Epoch>,
    /// Written since that snapshot: the instance no longer holds exactly `epoch` (a task
    /// attempt that failed after writing must not leave its writes to the next attempt).
    dirty: bool,
    /// Local SST name → stored file, for files already in the store.
    stored: BTreeMap<String, StoredFile>,
    incarnation: String,
    /// Writes since the last snapshot, in changelog format.
    log: Vec<u8>,
    max_changelogs: usize,
    /// The full snapshot the instance's changelogs build on, and those changelogs; `None`
    /// until a full snapshot is taken or restored.
    chain: Option<Chain>,
    /// Whether the last `open` restored this instance from the store (rather than reusing it
    /// as it was in memory).
    restored: bool,
}

#[derive(Debug, Clone)]
struct Chain {
    base: Epoch,
    small: Vec<String>,
    small_dir: Option<String>,
    changelogs: Vec<StoredFile>,
}

impl std::fmt::Debug for StatePartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatePartition")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .finish()
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn db_error(path: &Path, e: rocksdb::Error) -> CheckpointError {
    CheckpointError::Io {
        action: "use RocksDB state at",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.into_string()),
    }
}

fn incarnation() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{:x}-{:x}-{n}",
        std::process::id(),
        (nanos & 0xffff_ffff_ffff) as u64
    )
}

impl StateBackend {
    /// A backend keeping its instances under `root` (executor-local disk).
    pub fn new(root: &Path, config: StateConfig) -> Result<Self> {
        fs::create_dir_all(root).map_err(io("create state directory", root))?;
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_bytes,
            false,
            cache.clone(),
        );
        Ok(StateBackend {
            root: root.to_path_buf(),
            config,
            cache,
            write_buffers,
            partitions: Mutex::new(HashMap::new()),
        })
    }

    fn options(&self) -> Options {
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&self.cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&block);
        opts.set_write_buffer_manager(&self.write_buffers);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        opts
    }

    /// The instance for `id`, positioned at `restore`: the last committed epoch whose snapshot
    /// holds this partition's state (`None`: the partition starts empty).
    ///
    /// An instance already open at that epoch is reused as it is (the common case: a partition
    /// stays on its executor). Otherwise the local copy is discarded and the snapshot is
    /// restored from `store` (`CHECKPOINT/state`, a directory or an object-store prefix).
    pub fn open(
        &self,
        id: &StatePartitionId,
        store: &Location,
        restore: Option<Epoch>,
    ) -> Result<Arc<Mutex<StatePartition>>> {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = partitions.get(id) {
            let ready = existing
                .lock()
                .map(|p| p.epoch == restore && !p.dirty)
                .unwrap_or(false);
            if ready {
                if let Ok(mut p) = existing.lock() {
                    p.restored = false;
                }
                return Ok(existing.clone());
            }
            partitions.remove(id);
        }
        // Each instance gets its own directory: an abandoned instance that someone still holds
        // (a superseded task attempt) keeps its RocksDB lock without blocking the new one.
        let part_dir = self.root.join(id.query_id.as_str()).join(id.relative_dir());
        if part_dir.exists() {
            fs::remove_dir_all(&part_dir).map_err(io("remove stale state", &part_dir))?;
        }
        let incarnation = incarnation();
        let dir = part_dir.join(&incarnation);
        fs::create_dir_all(&dir).map_err(io("create state directory", &dir))?;
        let db_dir = dir.join("db");
        let (db, stored, chain) = match restore {
            Some(epoch) => self.restore_db(id, store, epoch, &db_dir)?,
            None => (self.open_db(&db_dir)?, BTreeMap::new(), None),
        };
        let partition = Arc::new(Mutex::new(StatePartition {
            id: id.clone(),
            dir,
            db,
            epoch: restore,
            dirty: false,
            stored,
            incarnation,
            log: Vec::new(),
            max_changelogs: self.config.max_changelogs,
            chain,
            restored: restore.is_some(),
        }));
        partitions.insert(id.clone(), partition.clone());
        Ok(partition)
    }

    fn open_db(&self, db_dir: &Path) -> Result<DB> {
        DB::open(&self.options(), db_dir).map_err(|e| db_error(db_dir, e))
    }

    /// Downloads the snapshot holding `id` at `epoch` into `db_dir`, opens it and replays its
    /// changelogs.
    fn restore_db(
        &self,
        id: &StatePartitionId,
        store: &Location,
        epoch: Epoch,
        db_dir: &Path,
    ) -> Result<(DB, BTreeMap<String, StoredFile>, Option<Chain>)> {
        let remote = Remote::of(store).child(&id.relative_dir());
        let manifest = find_manifest(&remote, epoch)?;
        fs::create_dir_all(db_dir).map_err(io("create state directory", db_dir))?;
        for (local, file) in &manifest.sst {
            remote.download(&format!("sst/{}", file.stored), &db_dir.join(local), true)?;
        }
        // The small files live with the full snapshot; RocksDB modifies them (copies).
        let base = manifest.base.unwrap_or(manifest.epoch);
        let small_dir = match &manifest.small_dir {
            Some(dir) => format!("{}/{dir}", epoch_dir(base.0)),
            None => epoch_dir(base.0),
        };
        for name in &manifest.small {
            remote.download(&format!("{small_dir}/{name}"), &db_dir.join(name), false)?;
        }
        let mut replay = Vec::new();
        for log in &manifest.changelogs {
            let rel = format!("changelog/{}", log.stored);
            let bytes = remote.read(&rel)?.ok_or_else(|| CheckpointError::Corrupt {
                path: remote.name(&rel),
                message: "a changelog the snapshot names is missing".into(),
            })?;
            replay.push((remote.name(&rel), bytes));
        }
        let db = self.open_db(db_dir)?;
        for (name, bytes) in &replay {
            replay_changelog(&db, bytes, name)?;
        }
        let chain = Chain {
            base,
            small: manifest.small.clone(),
            small_dir: manifest.small_dir.clone(),
            changelogs: manifest.changelogs,
        };
        Ok((db, manifest.sst, Some(chain)))
    }

    /// The instances held in memory with the epoch each is at, leaving out any written since
    /// (an executor reports these when it registers with a restarted driver).
    pub fn held(&self) -> Vec<(StatePartitionId, Option<Epoch>)> {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions
            .iter()
            .filter_map(|(id, p)| {
                let p = p.lock().ok()?;
                (!p.dirty).then(|| (id.clone(), p.epoch))
            })
            .collect()
    }

    /// Closes and forgets every instance of `query_id` (the query ended).
    pub fn close_query(&self, query_id: &QueryId) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        partitions.retain(|id, _| &id.query_id != query_id);
        let _ = fs::remove_dir_all(self.root.join(query_id.as_str()));
    }
}

/// The manifest that holds a partition's state as of `epoch`: the epoch's own, or — when the
/// partition took no snapshot then because nothing changed — the newest one before it.
fn find_manifest(remote: &Remote, epoch: Epoch) -> Result<SnapshotManifest> {
    if let Some(manifest) = try_read_manifest(remote, epoch)? {
        return Ok(manifest);
    }
    if let Some(n) = remote.snapshot_epochs()?.range(..epoch.0).next_back() {
        return read_manifest(remote, Epoch(*n));
    }
    Err(CheckpointError::Corrupt {
        path: remote.name(&epoch_dir(epoch.0)),
        message: format!("no state snapshot of epoch {} or before it", epoch.0),
    })
}

fn read_manifest(remote: &Remote, epoch: Epoch) -> Result<SnapshotManifest> {
    try_read_manifest(remote, epoch)?.ok_or_else(|| CheckpointError::Corrupt {
        path: remote.name(&format!("{}/{MANIFEST}", epoch_dir(epoch.0))),
        message: "the state snapshot's manifest is missing".into(),
    })
}

fn try_read_manifest(remote: &Remote, epoch: Epoch) -> Result<Option<SnapshotManifest>> {
    let rel = format!("{}/{MANIFEST}", epoch_dir(epoch.0));
    let Some(bytes) = remote.read(&rel)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CheckpointError::Corrupt {
            path: remote.name(&rel),
            message: e.to_string(),
        })
}

impl StatePartition {
    /// Its id.
    pub fn id(&self) -> &StatePartitionId {
        &self.id
    }

    /// Whether the last `open` restored it from the store rather than reusing it in memory.
    pub fn was_restored(&self) -> bool {
        self.restored
    }

    /// The epoch whose snapshot this instance last took or was restored from.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Values of `keys` (in order), `None` where absent.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .multi_get(keys.iter().map(|k| k.as_ref()))
            .into_iter()
            .map(|r| r.map_err(|e| db_error(&self.dir, e)))
            .collect()
    }

    /// Applies puts then deletes atomically.
    pub fn write(&mut self, puts: &[(Vec<u8>, Vec<u8>)], deletes: &[Vec<u8>]) -> Result<()> {
        self.dirty = true;
        let mut batch = WriteBatch::default();
        for (k, v) in puts {
            batch.put(k, v);
            log_op(&mut self.log, LOG_PUT, k, v);
        }
        for k in deletes {
            batch.delete(k);
            log_op(&mut self.log, LOG_DELETE, k, &[]);
        }
        let mut opts = rocksdb::WriteOptions::default();
        // Every write is covered by the epoch's snapshot and a crash restores from it, so the
        // write-ahead log would only cost time.
        opts.disable_wal(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| db_error(&self.dir, e))
    }

    /// Deletes every key with `from <= key < to` (one range tombstone).
    pub fn delete_range(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.dirty = true;
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        log_op(&mut self.log, LOG_DELETE_RANGE, from, to);
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| db_error(&self.dir, e))
    }

    /// Every entry with `from <= key < to` (`to = None`: to the end), in key order.
    pub fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_limited(from, to, usize::MAX)
    }

    /// Entries with `from <= key < to` (`to = None`: to the end) in key order, stopping after
    /// the one that brings their keys' and values' bytes to `max_bytes`.
    pub fn scan_limited(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(to) = to {
            opts.set_iterate_upper_bound(to.to_vec());
        }
        opts.fill_cache(false);
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.db.iterator_opt(
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
            opts,
        ) {
            let (k, v) = item.map_err(|e| db_error(&self.dir, e))?;
            bytes += k.len() + v.len();
            out.push((k.into_vec(), v.into_vec()));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The first key with `from <= key < to` (`to = None`: to the end), if any.
    pub fn first_key(&self, from: &[u8], to: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        Ok(self.scan_limited(from, to, 1)?.pop().map(|(k, _)| k))
    }

    /// RocksDB's estimate of the number of keys.
    pub fn estimated_keys(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Snapshots the instance as epoch `epoch` into `store` (`CHECKPOINT/state`), uploading
    /// only SSTs the store does not have. `durable` fsyncs what it writes to a file system.
    pub fn snapshot(
        &mut self,
        epoch: Epoch,
        store: &Location,
        durable: bool,
    ) -> Result<SnapshotStats> {
        let started = Instant::now();
        if let (true, Some(chain), Some(_)) = (self.log.is_empty(), &self.chain, self.epoch) {
            // Nothing written since the last snapshot, which therefore holds this epoch's state
            // too: no file is written (restore finds it as the newest snapshot before an epoch).
            let total_bytes = self.stored.values().map(|f| f.bytes).sum::<u64>()
                + chain.changelogs.iter().map(|f| f.bytes).sum::<u64>();
            self.epoch = Some(epoch);
            self.dirty = false;
            return Ok(SnapshotStats {
                uploaded_bytes: 0,
                total_bytes,
                elapsed_us: started.elapsed().as_micros() as u64,
            });
        }
        let chained = match &self.chain {
            Some(chain) => {
                chain.changelogs.len() < self.max_changelogs
                    && self.log.len() <= MAX_CHANGELOG_BYTES
            }
            None => false,
        };
        let remote = Remote::of(store).child(&self.id.relative_dir());
        let mut stats = if chained {
            self.changelog_snapshot(epoch, &remote, durable)?
        } else {
            self.full_snapshot(epoch, &remote, durable)?
        };
        self.log.clear();
        self.epoch = Some(epoch);
        self.dirty = false;
        stats.elapsed_us = started.elapsed().as_micros() as u64;
        Ok(stats)
    }

    /// Appends the epoch's writes to a changelog and publishes a manifest referencing the
    /// chain's base and every changelog since it.
    fn changelog_snapshot(
        &mut self,
        epoch: Epoch,
        remote: &Remote,
        durable: bool,
    ) -> Result<SnapshotStats> {
        let Some(chain) = self.chain.clone() else {
            return Err(CheckpointError::Corrupt {
                path: self.dir.clone(),
                message: "a changelog snapshot without a base".into(),
            });
        };
        let name = format!("{}-{}.log", self.incarnation, epoch.0);
        remote.write(&format!("changelog/{name}"), &self.log, durable)?;
        let mut changelogs = chain.changelogs.clone();
        changelogs.push(StoredFile {
            stored: name,
            bytes: self.log.len() as u64,
        });
        let mut manifest = SnapshotManifest {
            epoch,
            sst: self.stored.clone(),
            small: chain.small.clone(),
            small_dir: chain.small_dir.clone(),
            base: Some(chain.base),
            changelogs: changelogs.clone(),
        };
        remote.publish(&mut manifest, &[], &self.incarnation, durable)?;
        self.chain = Some(Chain {
            changelogs,
            ..chain
        });
        Ok(SnapshotStats {
            uploaded_bytes: self.log.len() as u64,
            total_bytes: manifest.sst.values().map(|f| f.bytes).sum::<u64>()
                + manifest.changelogs.iter().map(|f| f.bytes).sum::<u64>(),
            elapsed_us: 0,
        })
    }

    /// Flushes, checkpoints and uploads the SSTs the store lacks: a new chain base.
    fn full_snapshot(
        &mut self,
        epoch: Epoch,
        remote: &Remote,
        durable: bool,
    ) -> Result<SnapshotStats> {
        self.db.flush().map_err(|e| db_error(&self.dir, e))?;
        let local = self.dir.join(format!("snapshot-{}", epoch.0));
        if local.exists() {
            fs::remove_dir_all(&local).map_err(io("remove old local snapshot", &local))?;
        }
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&local))
            .map_err(|e| db_error(&local, e))?;
        let mut manifest = SnapshotManifest {
            epoch,
            sst: BTreeMap::new(),
            small: Vec::new(),
            small_dir: None,
            base: None,
            changelogs: Vec::new(),
        };
        let mut stats = SnapshotStats::default();
        let mut small = Vec::new();
        let entries = fs::read_dir(&local).map_err(io("list snapshot", &local))?;
        for entry in entries {
            let entry = entry.map_err(io("list snapshot", &local))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".sst") {
                let file = match self.stored.get(&name) {
                    Some(file) => file.clone(),
                    None => {
                        let stored = format!("{}-{}", self.incarnation, name);
                        let bytes = remote.upload(&path, &format!("sst/{stored}"), durable)?;
                        stats.uploaded_bytes += bytes;
                        StoredFile { stored, bytes }
                    }
                };
                stats.total_bytes += file.bytes;
                manifest.sst.insert(name, file);
            } else {
                small.push((name, path));
            }
        }
        small.sort();
        manifest.small = small.iter().map(|(name, _)| name.clone()).collect();
        // The new SSTs' directory entries: only when there are any (an empty partition's
        // first snapshot has none, and no `sst` directory yet).
        if durable && !remote.is_object() && stats.uploaded_bytes > 0 {
            remote::sync(&remote.name("sst"))?;
        }
        stats.uploaded_bytes +=
            remote.publish(&mut manifest, &small, &self.incarnation, durable)?;
        fs::remove_dir_all(&local).map_err(io("remove local snapshot", &local))?;
        self.stored = manifest.sst;
        self.chain = Some(Chain {
            base: epoch,
            small: manifest.small,
            small_dir: manifest.small_dir,
            changelogs: Vec::new(),
        });
        Ok(stats)
    }
}

/// Deletes, under `store` (`CHECKPOINT/state`), every snapshot of an epoch before `oldest` —
/// except each partition's newest one at or before `oldest`, which recovery may still need — and
/// every SST and changelog no remaining manifest references. Returns the number of snapshots
/// and files removed.
pub fn collect_garbage(store: &Location, oldest: Epoch) -> Result<usize> {
    let store = Remote::of(store);
    let mut removed = 0;
    for op in store.names("")?.iter().filter(|n| n.starts_with("op-")) {
        let parts = store.names(op)?;
        for part in parts
            .iter()
            .filter(|n| n.starts_with("part-") || n.starts_with("kg-"))
        {
            removed += collect_partition(&store.child(&format!("{op}/{part}")), oldest)?;
        }
    }
    Ok(removed)
}

fn collect_partition(remote: &Remote, oldest: Epoch) -> Result<usize> {
    let epochs = remote.snapshot_epochs()?;
    // Keep the newest snapshot at or before `oldest`, everything after it, and the full
    // snapshots their changelogs build on.
    let floor = epochs.range(..=oldest.0).next_back().copied();
    let mut removed = 0;
    let mut referenced = BTreeSet::new();
    let mut logs = BTreeSet::new();
    let mut keep = BTreeSet::new();
    for &n in &epochs {
        if Some(n) < floor || (floor.is_none() && n < oldest.0) {
            continue;
        }
        let manifest = read_manifest(remote, Epoch(n))?;
        keep.insert(n);
        keep.extend(manifest.base.map(|b| b.0));
        referenced.extend(manifest.sst.into_values().map(|f| f.stored));
        logs.extend(manifest.changelogs.into_iter().map(|f| f.stored));
    }
    for &n in &epochs {
        if !keep.contains(&n) {
            // The manifest first: a snapshot half-deleted by a crash is no snapshot at all.
            remote.remove_file(&format!("{}/{MANIFEST}", epoch_dir(n)))?;
            remote.remove_dir(&epoch_dir(n))?;
            removed += 1;
        }
    }
    let mut unreferenced: Vec<String> = remote
        .names("changelog")?
        .into_iter()
        .filter(|name| !logs.contains(name))
        .map(|name| format!("changelog/{name}"))
        .collect();
    unreferenced.extend(
        remote
            .names("sst")?
            .into_iter()
            .filter(|name| !referenced.contains(name))
            .map(|name| format!("sst/{name}")),
    );
    remote.remove_files(&unreferenced)?;
    Ok(removed + unreferenced.len())
}

#[cfg(test)]
mod tests;
