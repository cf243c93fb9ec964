//! Errors of sources and sinks.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// What can go wrong reading from a source or writing to a sink.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A table's `WITH (...)` options are wrong: unknown connector or option, missing or bad
    /// value. The user's mistake.
    #[error("table '{table}': {message}")]
    InvalidOptions { table: String, message: String },
    /// The configured path matched nothing.
    #[error("table '{table}': path '{path}' does not exist or matches no files")]
    MissingPath { table: String, path: String },
    /// A record in an input file could not be read. `line` is 1-based where the format has lines.
    #[error("{}: {message}", location(path, *line))]
    BadRecord {
        path: PathBuf,
        line: Option<u64>,
        message: String,
    },
    /// A Kafka record could not be decoded (policy `fail`).
    #[error("kafka topic '{topic}' partition {partition} offset {offset}: {message}")]
    BadMessage {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// Offsets the query has not read are no longer on the broker (policy `fail`).
    #[error("kafka topic '{topic}' partition {partition}: {message}")]
    OffsetsLost {
        topic: String,
        partition: i32,
        message: String,
    },
    /// Talking to the Kafka cluster failed.
    #[error("kafka ({bootstrap_servers}) topic '{topic}': {message}")]
    Kafka {
        bootstrap_servers: String,
        topic: String,
        message: String,
    },
    /// A file's columns do not match the table's schema.
    #[error("{path}: {message}")]
    SchemaMismatch { path: PathBuf, message: String },
    /// A filesystem operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading Parquet failed.
    #[error("{path}: parquet error: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// An Arrow computation failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Recording a sink commit in the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] sluice_checkpoint::CheckpointError),
    /// An object-store call failed (the message names the URL and the store's answer).
    #[error(transparent)]
    Store(#[from] sluice_checkpoint::StoreError),
    /// A broken invariant: our bug, never the user's.
    #[error("internal error: {0}")]
    Internal(String),
}

fn location(path: &std::path::Path, line: Option<u64>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

impl ConnectorError {
    /// Whether a retry may succeed: I/O may be transient; bad data and bad options are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Io { .. } | ConnectorError::Kafka { .. } => true,
            ConnectorError::Checkpoint(e) => e.is_retryable(),
            ConnectorError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ConnectorError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
