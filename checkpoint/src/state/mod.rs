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
//! CHECKPOINT/state/op-O/part-P/sst/INCARNATION-NNNNNN.sst   immutable, shared by snapshots
//! CHECKPOINT/state/op-O/part-P/epoch-N/snapshot.json        manifest: local name → stored name
//! CHECKPOINT/state/op-O/part-P/epoch-N/{CURRENT,MANIFEST-*,OPTIONS-*}
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
//! CHECKPOINT/state/op-O/part-P/changelog/INCARNATION-N.log       one epoch's writes
//! ```
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
use crate::{Epoch, QueryId};

mod changelog;
use changelog::{
    log_op, publish_manifest, replay_changelog, write_file, LOG_DELETE, LOG_DELETE_RANGE, LOG_PUT,
};
pub use changelog::{parse_changelog, ChangelogOp};

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
    /// The partition (key group) of that operator.
    pub partition: u32,
}

impl StatePartitionId {
    /// Its directory relative to a state root: `op-O/part-P`.
    pub fn relative_dir(&self) -> PathBuf {
        PathBuf::from(format!("op-{}", self.operator)).join(format!("part-{}", self.partition))
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
    /// restored from `store` (`CHECKPOINT/state`).
    pub fn open(
        &self,
        id: &StatePartitionId,
        store: &Path,
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
        let mut stored = BTreeMap::new();
        let mut chain = None;
        let mut replay = Vec::new();
        if let Some(epoch) = restore {
            let remote = store.join(id.relative_dir());
            let manifest = find_manifest(&remote, epoch)?;
            fs::create_dir_all(&db_dir).map_err(io("create state directory", &db_dir))?;
            for (local, file) in &manifest.sst {
                let from = remote.join("sst").join(&file.stored);
                link_or_copy(&from, &db_dir.join(local))?;
            }
            // The small files live with the full snapshot.
            let base = manifest.base.unwrap_or(manifest.epoch);
            let snap_dir = remote.join(format!("epoch-{}", base.0));
            for name in &manifest.small {
                let from = snap_dir.join(name);
                fs::copy(&from, db_dir.join(name)).map_err(io("restore state file", &from))?;
            }
            replay = manifest
                .changelogs
                .iter()
                .map(|f| remote.join("changelog").join(&f.stored))
                .collect();
            chain = Some(Chain {
                base,
                small: manifest.small.clone(),
                changelogs: manifest.changelogs,
            });
            stored = manifest.sst;
        }
        let db = DB::open(&self.options(), &db_dir).map_err(|e| db_error(&db_dir, e))?;
        for path in &replay {
            replay_changelog(&db, path)?;
        }
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

/// Hard-links `from` to `to`, copying when they are on different filesystems.
fn link_or_copy(from: &Path, to: &Path) -> Result<u64> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(io("copy state file", from))?;
    }
    Ok(fs::metadata(to).map_err(io("stat state file", to))?.len())
}

/// The manifest that holds a partition's state as of `epoch`: the epoch's own, or — when the
/// partition took no snapshot then because nothing changed — the newest one before it.
fn find_manifest(remote: &Path, epoch: Epoch) -> Result<SnapshotManifest> {
    let own = remote.join(format!("epoch-{}", epoch.0));
    if !own.exists() {
        if let Some(n) = snapshot_epochs(remote).range(..epoch.0).next_back() {
            return read_manifest(remote, Epoch(*n));
        }
    }
    read_manifest(remote, epoch)
}

/// The epochs with a published snapshot under `remote`.
fn snapshot_epochs(remote: &Path) -> BTreeSet<u64> {
    let Ok(entries) = fs::read_dir(remote) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_prefix("epoch-")?
                .parse::<u64>()
                .ok()
        })
        .collect()
}

fn read_manifest(remote: &Path, epoch: Epoch) -> Result<SnapshotManifest> {
    let path = remote
        .join(format!("epoch-{}", epoch.0))
        .join("snapshot.json");
    let bytes = fs::read(&path).map_err(io("read state snapshot", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path,
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
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(to) = to {
            opts.set_iterate_upper_bound(to.to_vec());
        }
        opts.fill_cache(false);
        let mut out = Vec::new();
        for item in self.db.iterator_opt(
            rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward),
            opts,
        ) {
            let (k, v) = item.map_err(|e| db_error(&self.dir, e))?;
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
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
    /// only SSTs the store does not have. `durable` fsyncs what it writes.
    pub fn snapshot(&mut self, epoch: Epoch, store: &Path, durable: bool) -> Result<SnapshotStats> {
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
        let mut stats = if chained {
            self.changelog_snapshot(epoch, store, durable)?
        } else {
            self.full_snapshot(epoch, store, durable)?
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
        store: &Path,
        durable: bool,
    ) -> Result<SnapshotStats> {
        let Some(chain) = self.chain.clone() else {
            return Err(CheckpointError::Corrupt {
                path: self.dir.clone(),
                message: "a changelog snapshot without a base".into(),
            });
        };
        let remote = store.join(self.id.relative_dir());
        let log_dir = remote.join("changelog");
        fs::create_dir_all(&log_dir).map_err(io("create state directory", &log_dir))?;
        let name = format!("{}-{}.log", self.incarnation, epoch.0);
        let path = log_dir.join(&name);
        write_file(&path, &self.log, durable)?;
        if durable {
            sync_file(&log_dir)?;
        }
        let mut changelogs = chain.changelogs.clone();
        changelogs.push(StoredFile {
            stored: name,
            bytes: self.log.len() as u64,
        });
        let manifest = SnapshotManifest {
            epoch,
            sst: self.stored.clone(),
            small: chain.small.clone(),
            base: Some(chain.base),
            changelogs: changelogs.clone(),
        };
        publish_manifest(&remote, &manifest, &self.incarnation, durable)?;
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
        store: &Path,
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
        let remote = store.join(self.id.relative_dir());
        let sst_dir = remote.join("sst");
        fs::create_dir_all(&sst_dir).map_err(io("create state directory", &sst_dir))?;
        let staging = remote.join(format!("epoch-{}.{}.tmp", epoch.0, self.incarnation));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io("remove state staging", &staging))?;
        }
        fs::create_dir_all(&staging).map_err(io("create state staging", &staging))?;
        let mut manifest = SnapshotManifest {
            epoch,
            sst: BTreeMap::new(),
            small: Vec::new(),
            base: None,
            changelogs: Vec::new(),
        };
        let mut stats = SnapshotStats::default();
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
                        let target = sst_dir.join(&stored);
                        let bytes = link_or_copy(&path, &target)?;
                        if durable {
                            sync_file(&target)?;
                        }
                        stats.uploaded_bytes += bytes;
                        StoredFile { stored, bytes }
                    }
                };
                stats.total_bytes += file.bytes;
                manifest.sst.insert(name, file);
            } else {
                let target = staging.join(&name);
                stats.uploaded_bytes +=
                    fs::copy(&path, &target).map_err(io("upload state file", &path))?;
                if durable {
                    sync_file(&target)?;
                }
                manifest.small.push(name);
            }
        }
        manifest.small.sort();
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| CheckpointError::Corrupt {
            path: staging.clone(),
            message: e.to_string(),
        })?;
        let manifest_path = staging.join("snapshot.json");
        fs::write(&manifest_path, &json).map_err(io("write state manifest", &manifest_path))?;
        if durable {
            sync_file(&manifest_path)?;
            sync_file(&sst_dir)?;
        }
        let target = remote.join(format!("epoch-{}", epoch.0));
        if target.exists() {
            // An earlier attempt of this epoch that never committed.
            fs::remove_dir_all(&target).map_err(io("replace state snapshot", &target))?;
        }
        fs::rename(&staging, &target).map_err(io("publish state snapshot", &target))?;
        if durable {
            sync_file(&remote)?;
        }
        fs::remove_dir_all(&local).map_err(io("remove local snapshot", &local))?;
        self.stored = manifest.sst;
        self.chain = Some(Chain {
            base: epoch,
            small: manifest.small,
            changelogs: Vec::new(),
        });
        Ok(stats)
    }
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", path))
}

/// Deletes, under `store` (`CHECKPOINT/state`), every snapshot of an epoch before `oldest` —
/// except each partition's newest one at or before `oldest`, which recovery may still need — and
/// every SST no remaining manifest references. Returns the number of files removed.
pub fn collect_garbage(store: &Path, oldest: Epoch) -> Result<usize> {
    let mut removed = 0;
    let Ok(operators) = fs::read_dir(store) else {
        return Ok(0);
    };
    for op in operators.flatten() {
        let Ok(parts) = fs::read_dir(op.path()) else {
            continue;
        };
        for part in parts.flatten() {
            removed += collect_partition(&part.path(), oldest)?;
        }
    }
    Ok(removed)
}

fn collect_partition(remote: &Path, oldest: Epoch) -> Result<usize> {
    fs::read_dir(remote).map_err(io("list state", remote))?;
    let epochs = snapshot_epochs(remote);
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
            let dir = remote.join(format!("epoch-{n}"));
            fs::remove_dir_all(&dir).map_err(io("remove old state snapshot", &dir))?;
            removed += 1;
        }
    }
    if let Ok(files) = fs::read_dir(remote.join("changelog")) {
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if !logs.contains(&name) {
                let path = file.path();
                fs::remove_file(&path).map_err(io("remove unreferenced changelog", &path))?;
                removed += 1;
            }
        }
    }
    let sst_dir = remote.join("sst");
    if let Ok(files) = fs::read_dir(&sst_dir) {
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                let path = file.path();
                fs::remove_file(&path).map_err(io("remove unreferenced state file", &path))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
