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
//!
//! What it does not own: what an epoch's offsets *mean* (sources define that; this crate stores
//! them as serde values) or how a sink publishes (connectors do that).

pub mod error;
pub mod recovery;
pub mod state;
pub mod store;

pub use error::{CheckpointError, Result};
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
