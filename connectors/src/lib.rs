//! `sluice-connectors`: where data enters and leaves a Sluice query.
//!
//! What this crate owns:
//! - The connector contracts: [`Source`] (driver side: what an epoch reads, as [`Split`]s),
//!   [`SplitReader`] (executor side: the batches of one split), [`Sink`] /
//!   [`SinkWriter`] (executor side: stage one task's output) and [`Committer`] (driver side:
//!   publish an epoch's staged output exactly once).
//! - [`options`]: parsing and validating a table's `WITH (...)` options into a typed spec.
//! - [`file`]: Parquet, CSV and JSON-lines file sources (a file, a directory or a glob; split by
//!   file and Parquet row group).
//! - [`parquet_sink`]: the Parquet sink with hive-style `partition_by`, staged writes and atomic,
//!   idempotent publication under deterministic names.
//! - [`console`]: the bounded printer behind `sluice run -e`.
//!
//! What it does not own: planning and scheduling (the engine) or the checkpoint layout
//! (`sluice-checkpoint`; this crate only writes its sink records there).

pub mod console;
pub mod error;
pub mod file;
pub mod options;
pub mod parquet_sink;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::{CheckpointStore, Epoch};

pub use error::{ConnectorError, Result};
pub use options::{ConnectorSpec, FileFormat, FileSourceSpec, ParquetSinkSpec};

/// One unit of input an epoch reads: a file, or some row groups of a Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// The file to read.
    pub path: String,
    /// For Parquet: the row groups of `path` this split covers (`None`: the whole file).
    pub row_groups: Option<Vec<usize>>,
    /// Approximate bytes, used to balance splits across tasks.
    pub bytes: u64,
}

/// Driver side of a source: decides what an epoch reads.
pub trait Source: Send + Sync {
    /// The schema of the rows this source produces.
    fn schema(&self) -> SchemaRef;
    /// The splits of everything available now. A bounded file source returns all of its input;
    /// the driver records the result in the offsets log before any task runs.
    fn plan_splits(&self) -> Result<Vec<Split>>;
    /// Executor side: a reader for one split producing only the `projection` columns (indices
    /// into [`Source::schema`]; `None` means all).
    fn open(&self, split: &Split, projection: Option<&[usize]>) -> Result<Box<dyn SplitReader>>;
}

/// Reads the record batches of one split, in bounded memory.
pub trait SplitReader: Send {
    /// The next batch, or `None` when the split is exhausted.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

/// What a task's sink writer needs to know to name its output deterministically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterContext {
    /// The query's stable id (from the checkpoint).
    pub query_id: String,
    /// The epoch being written.
    pub epoch: Epoch,
    /// The task's partition within its stage.
    pub task: usize,
    /// Unique per task attempt, so retried attempts never write over each other's staged files.
    pub attempt: String,
}

/// Executor side of a sink: stages one task's output.
pub trait Sink: Send + Sync {
    /// Opens a writer for one task of one epoch.
    fn open_writer(&self, ctx: &WriterContext) -> Result<Box<dyn SinkWriter>>;
}

/// Stages the output of one task. Nothing it writes is visible to readers until the driver's
/// [`Committer`] publishes the epoch.
pub trait SinkWriter: Send {
    /// Appends a batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Closes all staged files and describes them for the committer.
    fn finish(self: Box<Self>) -> Result<WriterReceipt>;
}

/// A staged output file, as reported by a writer to the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Where the writer staged the file.
    pub staged_path: String,
    /// Where the file is published, relative to the table root.
    pub final_path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// What a task's writer staged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReceipt {
    /// The staged files.
    pub files: Vec<StagedFile>,
}

/// What a commit published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSummary {
    /// Files published.
    pub files: usize,
    /// Rows published.
    pub rows: u64,
    /// Bytes published.
    pub bytes: u64,
}

/// Driver side of a sink: publishes an epoch's staged output exactly once.
pub trait Committer: Send + Sync {
    /// Publishes everything `receipts` staged for `epoch`. Records the publication in `store`
    /// first, so a crash part-way is completed by [`Committer::recover`]; publishing an epoch
    /// that was already published changes nothing.
    fn commit(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<CommitSummary>;
    /// Completes a publication that was recorded but maybe not finished. `Ok(None)` when
    /// nothing was recorded for `epoch` (the epoch must run again).
    fn recover(&self, store: &CheckpointStore, epoch: Epoch) -> Result<Option<CommitSummary>>;
    /// Discards everything staged for `epoch` by this query (after a failed epoch).
    fn abort(&self, query_id: &str, epoch: Epoch);
}
