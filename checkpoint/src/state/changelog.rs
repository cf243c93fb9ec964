//! Changelog snapshots: one epoch's state writes as a file, and their replay.

use std::fs;
use std::path::Path;

use rocksdb::{WriteBatch, DB};

use super::{db_error, io, sync_file, SnapshotManifest};
use crate::error::{CheckpointError, Result};

pub(super) const LOG_PUT: u8 = 1;
pub(super) const LOG_DELETE: u8 = 2;
/// Key: the range's start; value: its end (exclusive).
pub(super) const LOG_DELETE_RANGE: u8 = 3;

/// Appends one operation to a changelog: op, key length, key, value length, value.
pub(super) fn log_op(log: &mut Vec<u8>, op: u8, key: &[u8], value: &[u8]) {
    log.push(op);
    log.extend_from_slice(&(key.len() as u32).to_le_bytes());
    log.extend_from_slice(key);
    log.extend_from_slice(&(value.len() as u32).to_le_bytes());
    log.extend_from_slice(value);
}

/// Applies the changelog at `path` to `db`; a truncated or malformed log is an error naming
/// the file, never a panic.
pub(super) fn replay_changelog(db: &DB, path: &Path) -> Result<()> {
    let bytes = fs::read(path).map_err(io("read state changelog", path))?;
    let corrupt = |at: usize| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: format!("changelog malformed at byte {at}"),
    };
    let mut batch = WriteBatch::default();
    let mut at = 0;
    fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len())?;
        let out = &bytes[*at..end];
        *at = end;
        Some(out)
    }
    fn len(b: &[u8]) -> usize {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    }
    while at < bytes.len() {
        let start = at;
        let mut next = |n: usize| take(&bytes, &mut at, n).ok_or(corrupt(start));
        let op = next(1)?[0];
        let key_len = len(next(4)?);
        let key = next(key_len)?;
        let value_len = len(next(4)?);
        let value = next(value_len)?;
        match op {
            LOG_PUT => batch.put(key, value),
            LOG_DELETE => batch.delete(key),
            LOG_DELETE_RANGE => batch.delete_range(key, value),
            _ => return Err(corrupt(start)),
        }
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.disable_wal(true);
    db.write_opt(batch, &opts).map_err(|e| db_error(path, e))
}

pub(super) fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    fs::write(path, bytes).map_err(io("write state file", path))?;
    if durable {
        sync_file(path)?;
    }
    Ok(())
}

/// Publishes `manifest` as `epoch-N/snapshot.json` under `remote` (staged, then renamed).
pub(super) fn publish_manifest(
    remote: &Path,
    manifest: &SnapshotManifest,
    incarnation: &str,
    durable: bool,
) -> Result<()> {
    let staging = remote.join(format!("epoch-{}.{incarnation}.tmp", manifest.epoch.0));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("remove state staging", &staging))?;
    }
    fs::create_dir_all(&staging).map_err(io("create state staging", &staging))?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| CheckpointError::Corrupt {
        path: staging.clone(),
        message: e.to_string(),
    })?;
    write_file(&staging.join("snapshot.json"), &json, durable)?;
    let target = remote.join(format!("epoch-{}", manifest.epoch.0));
    if target.exists() {
        // An earlier attempt of this epoch that never committed.
        fs::remove_dir_all(&target).map_err(io("replace state snapshot", &target))?;
    }
    fs::rename(&staging, &target).map_err(io("publish state snapshot", &target))?;
    if durable {
        sync_file(remote)?;
    }
    Ok(())
}
