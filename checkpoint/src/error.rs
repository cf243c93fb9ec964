//! Errors of the checkpoint store.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// What can go wrong reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("checkpoint: failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file in the checkpoint could not be parsed; nothing was changed.
    #[error("checkpoint: {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The checkpoint belongs to a different query (its plan fingerprint differs).
    #[error(
        "checkpoint {path} was written by a different query (plan fingerprint {found}, this query \
         has {expected}); `sluice checkpoint check JOB {path}` says what changed; use a new \
         --checkpoint directory for a changed query"
    )]
    FingerprintMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// Another driver holds the checkpoint.
    #[error(
        "checkpoint {path} is in use by another driver ({owner}); two drivers on one checkpoint \
         would both write its epochs — stop the other one first"
    )]
    Locked { path: PathBuf, owner: String },
    /// An epoch's log entry already exists: another driver wrote it (fencing).
    #[error("checkpoint: {path} already exists; another driver is writing this checkpoint")]
    Fenced { path: PathBuf },
    /// An object-store call failed (the message names the URL and the store's answer).
    #[error("checkpoint: {0}")]
    Store(#[from] crate::location::StoreError),
    /// This driver's lease on an object-store checkpoint was taken over or expired: it must not
    /// commit anything more.
    #[error(
        "checkpoint {path} is no longer held by this driver: {reason}; stopping without \
         committing (the driver holding it now continues the query)"
    )]
    LeaseLost { path: PathBuf, reason: String },
    /// The checkpoint was written by an incompatible version of Sluice.
    #[error("checkpoint {path} has format version {found}, this build reads version {expected}")]
    IncompatibleFormat {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
}

impl CheckpointError {
    /// I/O errors may be transient; corruption and mismatches are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            CheckpointError::Io { .. } => true,
            CheckpointError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}
