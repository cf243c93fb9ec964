//! `sluice-checkpoint`: the durable record of a query's progress.
//!
//! What this crate owns:
//! - [`CheckpointStore`]: a checkpoint directory with `metadata` (query id, plan fingerprint,
//!   format version), the offsets log `offsets/N` (what epoch N reads, written *before* it
//!   runs), the commit log `commits/N` (written after its sink committed), and per-sink commit
//!   records `sinks/NAME/N`. Every file is written atomically and durably (temp file, fsync,
//!   rename, fsync of the directory), so a crash leaves either the old or the new file.
//! - [`state`]: keyed operator state on RocksDB (one instance per operator partition, shared
//!   memory budget per executor) with incremental snapshots into `state/`.
//! - [`recovery`]: the pure decision of what a (re)starting driver does next, from what it
//!   observes in the store.
//! - [`location`]: a local path or an object-store URL (`s3://bucket/prefix`) and the
//!   synchronous calls on it the checkpoint, sinks and file sources use; [`lease`]: one driver
//!   per checkpoint on an object store.
//!
//! What it does not own: what an epoch's offsets *mean* (sources define that; this crate stores
//! them as serde values) or how a sink publishes (connectors do that).

pub mod error;
pub mod lease;
pub mod location;
pub mod recovery;
pub mod state;
pub mod store;

pub use error::{CheckpointError, Result};
pub use location::{Location, ObjectRoot, StoreError};
pub use recovery::{ownership, EpochAction, EpochLog, Ownership};
pub use store::{CheckpointLock, CheckpointStore, CommitRecord, QueryMetadata, FORMAT_VERSION};

use serde::{Deserialize, Serialize};

/// A micro-batch number. Epoch 0 is a query's first; a bounded job is exactly epoch 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A query's id, stable across the runs on one checkpoint. It names sink staging directories,
/// output files and state directories, so it is 1 to 64 ASCII letters, digits, `-` or `_`
/// (Sluice makes a UUID's 32 hex digits); anything else is refused where it enters — read from
/// a checkpoint, decoded from a peer's message — never used.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueryId(String);

impl QueryId {
    /// Validates `id`; the error says what is wrong.
    pub fn new(id: impl Into<String>) -> std::result::Result<Self, String> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(id))
        } else {
            Err(format!(
                "query_id {id:?} is not 1 to 64 ASCII letters, digits, '-' or '_' (it names output files)"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its first 8 characters, for file names.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(8)]
    }
}

impl TryFrom<String> for QueryId {
    type Error = String;

    fn try_from(id: String) -> std::result::Result<Self, String> {
        Self::new(id)
    }
}

impl From<QueryId> for String {
    fn from(id: QueryId) -> String {
        id.0
    }
}

impl std::fmt::Display for QueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueryId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn query_ids_that_cannot_name_files_are_refused() {
        assert_eq!(QueryId::new("0123abcd-x_y").unwrap().short(), "0123abcd");
        for bad in ["", "../x", "a/b", "é", "has space", &"a".repeat(65)] {
            let err = QueryId::new(bad).unwrap_err();
            assert!(err.contains("ASCII letters"), "{bad:?}: {err}");
            let json = serde_json::to_string(bad).unwrap();
            assert!(serde_json::from_str::<QueryId>(&json).is_err(), "{bad:?}");
        }
        let id: QueryId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
    }
}
