//! Errors of the engine, split by whose mistake they are.

use datafusion::error::DataFusionError;

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can stop a query.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job's SQL is wrong; `location` is `FILE:LINE:COLUMN` when known.
    #[error("{location}{message}")]
    Sql { location: String, message: String },
    /// The query needs something the engine does not support yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A table's connector options or data are wrong.
    #[error(transparent)]
    Connector(#[from] sluice_connectors::ConnectorError),
    /// The checkpoint could not be used.
    #[error(transparent)]
    Checkpoint(#[from] sluice_checkpoint::CheckpointError),
    /// Cluster networking failed.
    #[error(transparent)]
    Net(#[from] sluice_net::NetError),
    /// A task failed on an executor.
    #[error("task {stage}/{partition} (stage/partition: {operator}) failed on executor {executor}: {message}")]
    TaskFailed {
        stage: usize,
        partition: usize,
        operator: String,
        executor: String,
        message: String,
        retryable: bool,
    },
    /// A task failed every attempt it was allowed.
    #[error("task {stage}/{partition} (stage/partition: {operator}) failed {attempts} attempts:{history}")]
    RetriesExhausted {
        stage: usize,
        partition: usize,
        operator: String,
        attempts: usize,
        history: String,
    },
    /// An executor died or stopped answering while the query needed it.
    #[error("executor {executor} was lost: {reason}")]
    ExecutorLost { executor: String, reason: String },
    /// An option that cannot work as given (the UI's address, its token).
    #[error("{0}")]
    Config(String),
    /// The cluster could not be brought up.
    #[error("cluster: {0}")]
    Cluster(String),
    /// The user interrupted the query.
    #[error("interrupted")]
    Interrupted,
    /// DataFusion reported an error while planning or executing.
    #[error("{}", describe_datafusion(.0))]
    DataFusion(#[from] DataFusionError),
    /// A broken invariant: our bug, never the user's.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Whether retrying the failed work may succeed (lost peers, I/O), as opposed to errors that
    /// will recur (bad SQL, bad data, bad options).
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Connector(e) => e.is_retryable(),
            EngineError::Checkpoint(e) => e.is_retryable(),
            EngineError::Net(e) => e.is_retryable(),
            EngineError::TaskFailed { retryable, .. } => *retryable,
            EngineError::ExecutorLost { .. } => true,
            _ => false,
        }
    }
}

/// Renders a DataFusion error without its wrapper prefixes, surfacing connector errors (bad
/// records, missing files) as they were raised.
pub fn describe_datafusion(e: &DataFusionError) -> String {
    match e {
        DataFusionError::External(inner) => {
            match inner.downcast_ref::<sluice_connectors::ConnectorError>() {
                Some(c) => c.to_string(),
                None => match inner.downcast_ref::<DataFusionError>() {
                    Some(d) => describe_datafusion(d),
                    None => inner.to_string(),
                },
            }
        }
        DataFusionError::Context(ctx, inner) => format!("{ctx}: {}", describe_datafusion(inner)),
        DataFusionError::Shared(inner) => describe_datafusion(inner),
        DataFusionError::ArrowError(inner, _) => inner.to_string(),
        DataFusionError::Diagnostic(_, inner) => describe_datafusion(inner),
        other => other.strip_backtrace(),
    }
}

/// Whether a DataFusion error is worth retrying: I/O, and the connector, checkpoint (operator
/// state) and network errors that operators wrap, by their own kind.
pub fn datafusion_retryable(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::External(inner) => {
            if let Some(c) = inner.downcast_ref::<sluice_connectors::ConnectorError>() {
                c.is_retryable()
            } else if let Some(c) = inner.downcast_ref::<sluice_checkpoint::CheckpointError>() {
                c.is_retryable()
            } else if let Some(n) = inner.downcast_ref::<sluice_net::NetError>() {
                n.is_retryable()
            } else if let Some(d) = inner.downcast_ref::<DataFusionError>() {
                datafusion_retryable(d)
            } else {
                false
            }
        }
        DataFusionError::IoError(_) => true,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_retryable(inner)
        }
        DataFusionError::Shared(inner) => datafusion_retryable(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_their_retryability() {
        let io = || std::io::Error::new(std::io::ErrorKind::Interrupted, "disk hiccup");
        let state_io = sluice_checkpoint::CheckpointError::Io {
            action: "write",
            path: "state/0".into(),
            source: io(),
        };
        assert!(state_io.is_retryable());
        let wrapped = DataFusionError::External(Box::new(state_io));
        assert!(datafusion_retryable(&wrapped));
        let nested = DataFusionError::Context(
            "stateful aggregate".into(),
            Box::new(DataFusionError::External(Box::new(wrapped))),
        );
        assert!(datafusion_retryable(&nested));
        let corrupt = sluice_checkpoint::CheckpointError::Corrupt {
            path: "state/0/changelog-3".into(),
            message: "truncated".into(),
        };
        assert!(!datafusion_retryable(&DataFusionError::External(Box::new(
            corrupt
        ))));
    }
}
