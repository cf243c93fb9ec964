//! What the driver records and reports about an epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::Epoch;
use sluice_connectors::Split;

/// What `offsets/N` holds for a file-sourced epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochInput {
    /// The epoch.
    pub epoch: Epoch,
    /// When the epoch was planned (ms since the Unix epoch); replays reuse it.
    pub batch_timestamp_ms: u64,
    /// Per source table: the splits the epoch reads.
    pub sources: BTreeMap<String, Vec<Split>>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochOutcome {
    /// The epoch ran and committed.
    Committed,
    /// The checkpoint already held a committed epoch 0: nothing ran.
    AlreadyCommitted,
    /// A previous run had recorded its sink commit; this run completed the publish.
    CommitCompleted,
}

/// Resource use of one executor over the run.
#[derive(Debug, Clone)]
pub struct ExecutorSummary {
    /// Its name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Peak resident set size seen in heartbeats.
    pub peak_rss_bytes: u64,
}

/// Durations of the phases of a run.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Parsing, planning and schema inference.
    pub planning: Duration,
    /// Listing splits and writing the offsets log.
    pub offsets: Duration,
    /// From installing the query to the last task.
    pub execution: Duration,
    /// Sink commit and commit log write.
    pub commit: Duration,
    /// Everything.
    pub total: Duration,
}

/// The result of running a job.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The query's id (stable across runs on one checkpoint).
    pub query_id: String,
    /// The epoch.
    pub epoch: Epoch,
    /// How it ended.
    pub outcome: EpochOutcome,
    /// Rows delivered to the sink.
    pub output_rows: u64,
    /// Files published.
    pub files: usize,
    /// The printed result, for console queries.
    pub console: Option<String>,
    /// Executors used.
    pub executors: Vec<ExecutorSummary>,
    /// Phase durations.
    pub timings: Timings,
    /// Stages in the query.
    pub stages: usize,
    /// Task attempts run.
    pub tasks: u64,
}
