//! The checkpoint directory.
//!
//! ```text
//! CHECKPOINT/
//!   metadata            JSON: format_version, query_id, plan_fingerprint, created_at_ms
//!   job                 JSON: the job's parts (tables, watermarks, queries) as normalised text
//!   offsets/N           JSON: what epoch N reads (written before it runs)
//!   commits/N           JSON: CommitRecord (written after its sink committed)
//!   sinks/NAME/N        JSON: the sink's commit record for epoch N (files published)
//!   progress/N          JSON: the progress record of epoch N (informational)
//!   lock                the running driver (pid, host, start); held with an exclusive flock
//! ```
//!
//! The same layout works under an object-store prefix (`--checkpoint s3://bucket/prefix`):
//! `offsets/N` and `commits/N` are created with a conditional PUT (`If-None-Match: *`), every
//! other record is a plain PUT (atomic on an object store), and instead of `lock` the driver
//! holds a renewed `lease` object ([`crate::lease`]).
//!
//! `offsets/N` and `commits/N` are created only if absent (a synced hidden file renamed into
//! place with `RENAME_NOREPLACE`), so a second writer can never replace an entry; together with
//! the lock this fences drivers.
//! Retention keeps the last K epochs of every log.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{CheckpointError, Result};
use crate::lease::{Lease, LEASE_TTL};
use crate::location::{Location, ObjectRoot};
use crate::recovery::{ownership, EpochLog, Ownership};
use crate::{Epoch, QueryId};

/// Version of the on-disk layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Identity of the query a checkpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMetadata {
    /// Layout version; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Stable id of the query, used in output file names so that replays overwrite rather than
    /// duplicate (validated when read: it names files).
    pub query_id: QueryId,
    /// Hash of the query's text; a checkpoint is refused for a different query.
    pub plan_fingerprint: String,
    /// When the checkpoint was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
}

/// What `commits/N` records about a committed epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The epoch committed.
    pub epoch: Epoch,
    /// When the commit was written (milliseconds since the Unix epoch).
    pub committed_at_ms: u64,
    /// Rows the sink received in this epoch.
    pub output_rows: u64,
    /// The largest event time read up to and including this epoch (ms since the Unix epoch),
    /// for queries with a watermark: the next epoch's watermark derives from it.
    #[serde(default)]
    pub max_event_ms: Option<i64>,
    /// The same per source table with a watermark (each keeps its own).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub max_event_by_source: std::collections::BTreeMap<String, i64>,
}

/// A checkpoint directory for one query.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    /// The local directory; for an object store, its URL (for messages only).
    root: PathBuf,
    /// The object-store prefix, when the checkpoint is not a local directory.
    object: Option<ObjectRoot>,
    /// The lease this store's driver holds on an object-store checkpoint.
    lease: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<Lease>>>>,
    metadata: QueryMetadata,
    durable: bool,
    /// The oldest epoch whose log entries may still exist: found by listing the logs at the
    /// first [`CheckpointStore::retain`], then kept up to date, so that retention deletes by
    /// name instead of listing every retained entry each epoch.
    retained_from: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
    /// What this store last wrote (a driver holds the checkpoint's lock, so nobody else
    /// writes): epochs are planned from memory rather than by listing and re-reading the logs.
    recent: std::sync::Arc<std::sync::Mutex<Recent>>,
    /// Expired log entries kept (hidden) for reuse, by directory: a new entry takes one over
    /// instead of allocating an inode, so that a long-running query does not churn inodes
    /// (creating files right after deleting others is slow on some filesystems).
    free: std::sync::Arc<std::sync::Mutex<HashMap<PathBuf, Vec<PathBuf>>>>,
}

/// Expired entries kept for reuse per log directory; more are deleted.
const MAX_FREE_ENTRIES: usize = 16;

/// The newest log entries, known once listed and kept current by this store's own writes.
#[derive(Debug, Default)]
struct Recent {
    log: Option<EpochLog>,
    offsets: Option<(Epoch, Vec<u8>)>,
    commit: Option<(Epoch, Vec<u8>)>,
}

/// Holds a checkpoint for one driver until dropped (the kernel releases it if the process dies).
#[derive(Debug)]
pub struct CheckpointLock {
    _file: Option<fs::File>,
    _lease: Option<std::sync::Arc<Lease>>,
}

impl CheckpointStore {
    /// Opens the checkpoint at `root`, creating it for `fingerprint` when it has no metadata yet.
    /// An existing checkpoint must carry the same fingerprint and format version; otherwise a
    /// clear error is returned and nothing is touched.
    pub fn open_or_create(
        location: impl Into<Location>,
        fingerprint: &str,
        new_query_id: &QueryId,
    ) -> Result<Self> {
        let root = match location.into() {
            Location::Local(root) => root,
            Location::Object(object) => {
                let metadata = object_open_or_create(&object, fingerprint, new_query_id)?;
                return Ok(Self::with_object(object, metadata));
            }
        };
        let root = root.as_path();
        let meta_path = root.join("metadata");
        let metadata = match fs::read(&meta_path) {
            Ok(bytes) => {
                let found: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&meta_path, e))?;
                let version = found
                    .get("format_version")
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| corrupt(&meta_path, "no format_version"))?;
                if version != u64::from(FORMAT_VERSION) {
                    return Err(CheckpointError::IncompatibleFormat {
                        path: root.to_path_buf(),
                        expected: FORMAT_VERSION,
                        found: version as u32,
                    });
                }
                let found: QueryMetadata =
                    serde_json::from_value(found).map_err(|e| corrupt(&meta_path, e))?;
                let recorded_any = epochs_in(&root.join("offsets"))
                    .map(|e| !e.is_empty())
                    .unwrap_or(true);
                let decision = ownership(&found.plan_fingerprint, fingerprint, recorded_any);
                if decision == Ownership::Adopt {
                    // A query that failed before recording any epoch (a planning error, say)
                    // does not lock the checkpoint: the corrected query takes it over.
                    let adopted = QueryMetadata {
                        plan_fingerprint: fingerprint.to_string(),
                        ..found
                    };
                    write_atomic(&meta_path, &to_json(&adopted))?;
                    return Ok(Self::local(root, adopted));
                }
                if decision == Ownership::Refuse {
                    return Err(CheckpointError::FingerprintMismatch {
                        path: root.to_path_buf(),
                        expected: fingerprint.to_string(),
                        found: found.plan_fingerprint,
                    });
                }
                found
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let metadata = QueryMetadata {
                    format_version: FORMAT_VERSION,
                    query_id: new_query_id.clone(),
                    plan_fingerprint: fingerprint.to_string(),
                    created_at_ms: now_ms(),
                };
                for dir in ["offsets", "commits", "sinks", "progress"] {
                    create_dir(&root.join(dir))?;
                }
                write_atomic(&meta_path, &to_json(&metadata))?;
                metadata
            }
            Err(e) => return Err(io("read", &meta_path, e)),
        };
        Ok(Self::local(root, metadata))
    }

    fn local(root: &Path, metadata: QueryMetadata) -> Self {
        Self {
            root: root.to_path_buf(),
            object: None,
            lease: Default::default(),
            metadata,
            durable: true,
            retained_from: Default::default(),
            recent: Default::default(),
            free: Default::default(),
        }
    }

    fn with_object(object: ObjectRoot, metadata: QueryMetadata) -> Self {
        Self {
            root: PathBuf::from(object.url()),
            object: Some(object),
            ..Self::local(Path::new(""), metadata)
        }
    }

    /// Whether log writes are fsynced (default). Turning it off trades crash safety on power
    /// loss for latency; process crashes stay safe.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Takes the checkpoint for this process: refused while another live process holds it.
    pub fn lock(&self) -> Result<CheckpointLock> {
        use std::os::unix::io::AsRawFd;
        if let Some(object) = &self.object {
            let lease = std::sync::Arc::new(Lease::acquire(object, LEASE_TTL)?);
            *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease.clone());
            return Ok(CheckpointLock {
                _file: None,
                _lease: Some(lease),
            });
        }
        let path = self.root.join("lock");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let owner = fs::read_to_string(&path)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "owner unknown".into());
            return Err(CheckpointError::Locked {
                path: self.root.clone(),
                owner: owner.trim().to_string(),
            });
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let owner = format!(
            "pid {} on {host}, started at {} ms",
            std::process::id(),
            now_ms()
        );
        let _ = file.set_len(0);
        let _ = file.write_all(owner.as_bytes());
        Ok(CheckpointLock {
            _file: Some(file),
            _lease: None,
        })
    }

    /// Opens an existing checkpoint read-only (for inspection), whatever its fingerprint.
    pub fn open_existing(location: impl Into<Location>) -> Result<Self> {
        match location.into() {
            Location::Local(root) => {
                let meta_path = root.join("metadata");
                let bytes = fs::read(&meta_path).map_err(|e| io("read", &meta_path, e))?;
                let metadata: QueryMetadata =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(&meta_path, e))?;
                Ok(Self::local(&root, metadata))
            }
            Location::Object(object) => {
                let metadata =
                    object_read(&object, "metadata")?.ok_or_else(|| CheckpointError::Corrupt {
                        path: object.url_of("metadata").into(),
                        message: "no checkpoint here (no metadata object)".into(),
                    })?;
                Ok(Self::with_object(object, metadata))
            }
        }
    }

    /// The checkpoint's root directory (for an object store, its URL).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where operator state snapshots go: `CHECKPOINT/state`.
    pub fn state_location(&self) -> Location {
        match &self.object {
            Some(object) => Location::Object(object.child("state")),
            None => Location::Local(self.root.join("state")),
        }
    }

    /// The object-store prefix, when the checkpoint is not a local directory.
    pub fn object(&self) -> Option<&ObjectRoot> {
        self.object.as_ref()
    }

    /// On an object store: fails if the background renewals found this driver's lease taken
    /// over or expired (no request is made; the driver checks between epochs, so an idle
    /// driver stops too).
    pub fn check_lease(&self) -> Result<()> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match lease {
            Some(lease) => lease.check(),
            None => Ok(()),
        }
    }

    /// On an object store: renews this driver's lease now and fails if another driver took it
    /// over. (Locally the `flock` cannot be lost while the process lives.)
    pub fn confirm_lease(&self) -> Result<()> {
        let lease = self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match lease {
            Some(lease) => lease.confirm(),
            None => Ok(()),
        }
    }

    /// The query this checkpoint belongs to.
    pub fn metadata(&self) -> &QueryMetadata {
        &self.metadata
    }

    /// What the offsets and commit logs hold.
    pub fn epoch_log(&self) -> Result<EpochLog> {
        let mut recent = self.recent();
        if let Some(log) = &recent.log {
            return Ok(log.clone());
        }
        let log = EpochLog {
            last_planned: self.epochs("offsets")?.into_iter().max(),
            last_committed: self.epochs("commits")?.into_iter().max(),
        };
        recent.log = Some(log.clone());
        Ok(log)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An expired entry of `path`'s directory to write `path` into, if one is kept.
    fn take_free(&self, path: &Path) -> Option<PathBuf> {
        let dir = path.parent()?;
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.get_mut(dir)?.pop()
    }

    /// Retires an expired entry: hidden and kept for reuse (when `reuse` and fewer than
    /// [`MAX_FREE_ENTRIES`] are kept), or deleted.
    fn release(&self, dir: &Path, name: u64, reuse: bool) -> Result<()> {
        let path = dir.join(name.to_string());
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let pool = free.entry(dir.to_path_buf()).or_default();
        let result = if reuse && pool.len() < MAX_FREE_ENTRIES {
            let hidden = dir.join(format!(".free.{name}"));
            fs::rename(&path, &hidden).map(|()| pool.push(hidden))
        } else {
            fs::remove_file(&path)
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &path, e)),
            _ => Ok(()),
        }
    }

    /// Records what `epoch` reads. Must happen before any of its work runs. Fails with
    /// [`CheckpointError::Fenced`] if the entry exists.
    pub fn write_offsets<T: Serialize>(&self, epoch: Epoch, offsets: &T) -> Result<()> {
        let bytes = to_json(offsets);
        let path = self.offsets_path(epoch);
        match &self.object {
            Some(object) => object_create(object, &format!("offsets/{epoch}"), &bytes)?,
            None => create_new(&path, &bytes, self.durable, self.take_free(&path))?,
        }
        let mut recent = self.recent();
        if let Some(log) = &mut recent.log {
            log.last_planned = log.last_planned.max(Some(epoch));
        }
        recent.offsets = Some((epoch, bytes));
        Ok(())
    }

    /// What `epoch` reads, if recorded.
    pub fn read_offsets<T: DeserializeOwned>(&self, epoch: Epoch) -> Result<Option<T>> {
        let path = self.offsets_path(epoch);
        if let Some((_, bytes)) = self.recent().offsets.as_ref().filter(|(e, _)| *e == epoch) {
            return parse_json(&path, bytes).map(Some);
        }
        self.read_json(&path, &format!("offsets/{epoch}"))
    }

    /// Marks `epoch` committed. Must happen after its sink commit.
    pub fn write_commit(&self, record: &CommitRecord) -> Result<()> {
        let bytes = to_json(record);
        let path = self.root.join("commits").join(record.epoch.to_string());
        match &self.object {
            Some(object) => {
                self.confirm_lease()?;
                object_create(object, &format!("commits/{}", record.epoch), &bytes)?
            }
            None => create_new(&path, &bytes, self.durable, self.take_free(&path))?,
        }
        let mut recent = self.recent();
        if let Some(log) = &mut recent.log {
            log.last_committed = log.last_committed.max(Some(record.epoch));
        }
        recent.commit = Some((record.epoch, bytes));
        Ok(())
    }

    /// Keeps the definition of the job that writes this checkpoint (`job`: its tables and
    /// queries, for `sluice checkpoint check` to compare a changed job with).
    pub fn write_job<T: Serialize>(&self, job: &T) -> Result<()> {
        if let Some(object) = &self.object {
            return object_put(object, "job", to_json(job));
        }
        let path = self.root.join("job");
        write_file(&path, &to_json(job), self.durable, None)
    }

    /// The job definition [`CheckpointStore::write_job`] kept, if any (checkpoints written
    /// before it was kept have none).
    pub fn read_job<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.read_json(&self.root.join("job"), "job")
    }

    /// Keeps `epoch`'s progress record (informational; not fsynced).
    pub fn write_progress<T: Serialize>(&self, epoch: Epoch, progress: &T) -> Result<()> {
        if let Some(object) = &self.object {
            return object_put(object, &format!("progress/{epoch}"), to_json(progress));
        }
        let dir = self.root.join("progress");
        create_dir(&dir)?;
        let path = dir.join(epoch.to_string());
        write_file(&path, &to_json(progress), false, self.take_free(&path))
    }

    /// The progress record of `epoch`, if kept.
    pub fn read_progress<T: DeserializeOwned>(&self, epoch: Epoch) -> Result<Option<T>> {
        let rel = format!("progress/{epoch}");
        self.read_json(&self.root.join(&rel), &rel)
    }

    /// The epochs with an entry in `offsets/`, oldest first.
    pub fn planned_epochs(&self) -> Result<Vec<Epoch>> {
        let mut out = self.epochs("offsets")?;
        out.sort();
        Ok(out)
    }

    /// The epochs with an entry in the log directory `dir`.
    fn epochs(&self, dir: &str) -> Result<Vec<Epoch>> {
        match &self.object {
            Some(object) => Ok(object
                .list_names(dir)?
                .iter()
                .filter_map(|name| name.parse::<u64>().ok().map(Epoch))
                .collect()),
            None => epochs_in(&self.root.join(dir)),
        }
    }

    /// Reads the JSON record at `path` (local) or `rel` (object store), if there is one.
    fn read_json<T: DeserializeOwned>(&self, path: &Path, rel: &str) -> Result<Option<T>> {
        match &self.object {
            Some(object) => object_read(object, rel),
            None => read_json(path),
        }
    }

    /// Deletes log entries of epochs older than the newest `keep` before `latest` (offsets,
    /// commits, sink records, progress). `latest` itself is always kept: the next epoch starts
    /// where it ended.
    pub fn retain(&self, latest: Epoch, keep: u64) -> Result<()> {
        let keep = keep.max(1);
        let Some(oldest_kept) = latest.0.checked_sub(keep - 1) else {
            return Ok(());
        };
        if let Some(object) = &self.object {
            let mut from = self.retained_from.lock().unwrap_or_else(|p| p.into_inner());
            return object_retain(object, &mut from, oldest_kept);
        }
        // (directory, whether its expired entries are kept for reuse)
        let mut dirs = vec![
            (self.root.join("offsets"), true),
            (self.root.join("commits"), true),
            (self.root.join("progress"), true),
        ];
        if let Ok(sinks) = fs::read_dir(self.root.join("sinks")) {
            dirs.extend(sinks.flatten().map(|e| (e.path(), false)));
        }
        let mut from = self.retained_from.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, reuse) in dirs {
            match *from {
                Some(from) => {
                    for n in from..oldest_kept {
                        self.release(&dir, n, reuse)?;
                    }
                }
                None => {
                    // Entries an earlier run kept for reuse go.
                    if let Ok(entries) = fs::read_dir(&dir) {
                        for entry in entries.flatten() {
                            if entry.file_name().to_string_lossy().starts_with(".free.") {
                                let _ = fs::remove_file(entry.path());
                            }
                        }
                    }
                    for epoch in epochs_in(&dir)? {
                        if epoch.0 < oldest_kept {
                            self.release(&dir, epoch.0, reuse)?;
                        }
                    }
                }
            }
        }
        *from = Some(from.map_or(oldest_kept, |f| f.max(oldest_kept)));
        Ok(())
    }

    /// The commit record of `epoch`, if it committed.
    pub fn read_commit(&self, epoch: Epoch) -> Result<Option<CommitRecord>> {
        let path = self.root.join("commits").join(epoch.to_string());
        if let Some((_, bytes)) = self.recent().commit.as_ref().filter(|(e, _)| *e == epoch) {
            return parse_json(&path, bytes).map(Some);
        }
        self.read_json(&path, &format!("commits/{epoch}"))
    }

    /// Records what sink `sink` publishes for `epoch` (before publishing, so a crash mid-publish
    /// can be completed on restart).
    pub fn write_sink_record<T: Serialize>(
        &self,
        sink: &str,
        epoch: Epoch,
        record: &T,
    ) -> Result<()> {
        if let Some(object) = &self.object {
            self.confirm_lease()?;
            return object_put(object, &format!("sinks/{sink}/{epoch}"), to_json(record));
        }
        let dir = self.root.join("sinks").join(sink);
        create_dir(&dir)?;
        write_file(
            &dir.join(epoch.to_string()),
            &to_json(record),
            self.durable,
            None,
        )
    }

    /// The sink commit record of `epoch`, if one was written.
    pub fn read_sink_record<T: DeserializeOwned>(
        &self,
        sink: &str,
        epoch: Epoch,
    ) -> Result<Option<T>> {
        let rel = format!("sinks/{sink}/{epoch}");
        self.read_json(&self.root.join(&rel), &rel)
    }

    /// Records the offsets `epoch` skipped (`gaps/N`), before its sink publishes, so that the
    /// record survives a crash between publishing and committing. Kept forever: retention
    /// never deletes it, so the checkpoint always says which offsets never reached the output.
    /// A replay that skipped nothing overwrites it with an empty record.
    pub fn write_gaps<T: Serialize>(&self, epoch: Epoch, gaps: &T) -> Result<()> {
        if let Some(object) = &self.object {
            return object_put(object, &format!("gaps/{epoch}"), to_json(gaps));
        }
        let dir = self.root.join("gaps");
        create_dir(&dir)?;
        write_file(
            &dir.join(epoch.to_string()),
            &to_json(gaps),
            self.durable,
            None,
        )
    }

    /// The gaps recorded for `epoch`, if any.
    pub fn read_gaps<T: DeserializeOwned>(&self, epoch: Epoch) -> Result<Option<T>> {
        let rel = format!("gaps/{epoch}");
        self.read_json(&self.root.join(&rel), &rel)
    }

    /// The epochs with a `gaps/N` record, oldest first.
    pub fn gap_epochs(&self) -> Result<Vec<Epoch>> {
        let mut out = self.epochs("gaps")?;
        out.sort();
        Ok(out)
    }

    fn offsets_path(&self, epoch: Epoch) -> PathBuf {
        self.root.join("offsets").join(epoch.to_string())
    }
}

fn epochs_in(dir: &Path) -> Result<Vec<Epoch>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io("list", dir, e))?;
        // Temp files of interrupted writes (".N.tmp") are not log entries.
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(Epoch(n));
        }
    }
    Ok(out)
}

/// Creates `path` with `bytes` only if it does not exist: the content is written (and synced
/// when `durable`) under a hidden name — an expired entry being reused, or a new temp file —
/// that is then renamed into place without replacing (`renameat2(RENAME_NOREPLACE)`; a hard
/// link where the file system lacks it). Atomic, and failing if the name is taken.
fn create_new(path: &Path, bytes: &[u8], durable: bool, reuse: Option<PathBuf>) -> Result<()> {
    let (dir, staged) = write_staged(path, bytes, durable, reuse)?;
    match rename_noreplace(&staged, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&staged);
            return Err(CheckpointError::Fenced {
                path: path.to_path_buf(),
            });
        }
        Err(e) => {
            let _ = fs::remove_file(&staged);
            return Err(io("move into place", path, e));
        }
    }
    if durable {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync directory", dir, e))?;
    }
    Ok(())
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (old, new) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            old.as_ptr(),
            libc::AT_FDCWD,
            new.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without RENAME_NOREPLACE: a hard link is create-if-absent too.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            let _ = fs::remove_file(from);
            Ok(())
        }
        _ => Err(err),
    }
}

fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => parse_json(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path, e)),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value)
        .expect("checkpoint records are plain data and always serialize")
}

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one,
/// also across a power loss: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, bytes, true, None)
}

/// [`write_atomic`], with the fsyncs only when `durable` (a rename is atomic either way).
fn write_file(path: &Path, bytes: &[u8], durable: bool, reuse: Option<PathBuf>) -> Result<()> {
    let (dir, staged) = write_staged(path, bytes, durable, reuse)?;
    fs::rename(&staged, path).map_err(|e| io("rename into place", path, e))?;
    if !durable {
        return Ok(());
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync directory", dir, e))
}

/// Writes `bytes` under a hidden name beside `path` (synced when `durable`) and returns the
/// directory and that name. With `reuse` (an expired entry of the same directory, hidden
/// already) the content is written over the old one in place and the file cut to length:
/// unlike truncating to zero, this frees and allocates no blocks when the sizes are alike.
fn write_staged<'a>(
    path: &'a Path,
    bytes: &[u8],
    durable: bool,
    reuse: Option<PathBuf>,
) -> Result<(&'a Path, PathBuf)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if let Some(free) = reuse {
        if let Ok(mut file) = fs::OpenOptions::new().write(true).open(&free) {
            let written = file
                .write_all(bytes)
                .and_then(|()| file.set_len(bytes.len() as u64))
                .and_then(|()| if durable { file.sync_all() } else { Ok(()) });
            match written {
                Ok(()) => return Ok((dir, free)),
                Err(e) => return Err(io("write", &free, e)),
            }
        }
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|_| if durable { file.sync_all() } else { Ok(()) })
        .map_err(|e| io("write", &tmp, e))?;
    Ok((dir, tmp))
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io("create", dir, e))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

mod object;
use object::{object_create, object_open_or_create, object_put, object_read, object_retain};

#[cfg(test)]
mod tests;
