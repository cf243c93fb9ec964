//! Changelog snapshots: one epoch's state writes as a file, and their replay.

use std::path::Path;

use rocksdb::{WriteBatch, DB};

use super::db_error;
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

/// One operation of a changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangelogOp<'a> {
    /// Set `key` to `value`.
    Put(&'a [u8], &'a [u8]),
    /// Delete `key`.
    Delete(&'a [u8]),
    /// Delete the keys from the first (inclusive) to the second (exclusive).
    DeleteRange(&'a [u8], &'a [u8]),
}

/// Parses a changelog (the bytes of a `changelog/N` file). `Err(at)`: it is malformed —
/// truncated or holding an unknown operation — at byte `at`. Never panics.
pub fn parse_changelog(bytes: &[u8]) -> std::result::Result<Vec<ChangelogOp<'_>>, usize> {
    fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len())?;
        let out = &bytes[*at..end];
        *at = end;
        Some(out)
    }
    fn length(bytes: &[u8], at: &mut usize) -> Option<usize> {
        let b = take(bytes, at, 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut ops = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let mut op = || {
            let kind = take(bytes, &mut at, 1)?[0];
            let key_len = length(bytes, &mut at)?;
            let key = take(bytes, &mut at, key_len)?;
            let value_len = length(bytes, &mut at)?;
            let value = take(bytes, &mut at, value_len)?;
            match kind {
                LOG_PUT => Some(ChangelogOp::Put(key, value)),
                LOG_DELETE => Some(ChangelogOp::Delete(key)),
                LOG_DELETE_RANGE => Some(ChangelogOp::DeleteRange(key, value)),
                _ => None,
            }
        };
        ops.push(op().ok_or(start)?);
    }
    Ok(ops)
}

/// Applies the changelog `bytes` (read from `path`) to `db`; a truncated or malformed log is
/// an error naming the file, never a panic.
pub(super) fn replay_changelog(db: &DB, bytes: &[u8], path: &Path) -> Result<()> {
    let ops = parse_changelog(bytes).map_err(|at| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        message: format!("changelog malformed at byte {at}"),
    })?;
    let mut batch = WriteBatch::default();
    for op in ops {
        match op {
            ChangelogOp::Put(key, value) => batch.put(key, value),
            ChangelogOp::Delete(key) => batch.delete(key),
            ChangelogOp::DeleteRange(from, to) => batch.delete_range(from, to),
        }
    }
    let mut opts = rocksdb::WriteOptions::default();
    opts.disable_wal(true);
    db.write_opt(batch, &opts).map_err(|e| db_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelogs_round_trip_and_malformed_ones_name_the_byte() {
        let mut log = Vec::new();
        log_op(&mut log, LOG_PUT, b"k1", b"v1");
        log_op(&mut log, LOG_DELETE, b"k2", b"");
        log_op(&mut log, LOG_DELETE_RANGE, b"a", b"z");
        assert_eq!(
            parse_changelog(&log).unwrap(),
            vec![
                ChangelogOp::Put(b"k1", b"v1"),
                ChangelogOp::Delete(b"k2"),
                ChangelogOp::DeleteRange(b"a", b"z"),
            ]
        );
        let second = 1 + 4 + 2 + 4 + 2;
        // Truncated anywhere inside the second operation: malformed where it starts.
        for cut in second + 1..second + 11 {
            assert_eq!(parse_changelog(&log[..cut]), Err(second), "cut at {cut}");
        }
        let mut unknown = log.clone();
        unknown[second] = 9;
        assert_eq!(parse_changelog(&unknown), Err(second));
        // A length past the end, even one that overflows an offset.
        assert_eq!(parse_changelog(&[1, 255, 255, 255, 255]), Err(0));
        assert_eq!(parse_changelog(&[]), Ok(vec![]));
    }
}
