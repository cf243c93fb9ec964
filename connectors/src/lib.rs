//! `sluice-connectors`: where data enters and leaves a Sluice query.
//!
//! What this crate owns:
//! - The connector contracts: [`Source`] (driver side: what an epoch reads, as [`Split`]s),
//!   [`SplitReader`] (executor side: the batches of one split), [`Sink`] /
//!   [`SinkWriter`] (executor side: stage one task's output) and [`Committer`] (driver side:
//!   publish an epoch's staged output exactly once).
//! - [`options`]: parsing and validating a table's `WITH (...)` options into a typed spec.
//! - [`kafka`]: the Kafka source: driver-decided offset ranges per epoch, raw and JSON
//!   decoders building Arrow arrays directly, bad-record policies and a dead-letter table.
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
pub mod kafka;
pub mod nexmark;
pub mod options;
pub mod parquet_sink;

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::{CheckpointStore, Epoch, QueryId};

pub use error::{ConnectorError, Result};
pub use options::{
    BadRecordPolicy, ConnectorSpec, FileFormat, FileSourceSpec, KafkaFormat, KafkaSinkSpec,
    KafkaSourceSpec, ParquetSinkSpec, StartPosition,
};

/// A file, or some row groups of a Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSplit {
    /// The file to read.
    pub path: String,
    /// For Parquet: the row groups of `path` this split covers (`None`: the whole file).
    pub row_groups: Option<Vec<usize>>,
    /// Approximate bytes, used to balance splits across tasks.
    pub bytes: u64,
}

/// A fixed offset range of one Kafka partition: records with `start <= offset < end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSplit {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// One past the last offset read.
    pub end: i64,
}

/// One unit of input an epoch reads. The driver decides an epoch's splits and records them in
/// the offsets log before any task runs; a replay reads exactly the same splits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Part of a file source.
    File(FileSplit),
    /// Part of a Kafka topic.
    Kafka(KafkaSplit),
    /// A range of generated events (the Nexmark source).
    Generated(GeneratedSplit),
}

/// Events `[from, to)` of a generated stream whose event 0 happens at `base_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSplit {
    /// First event id.
    pub from: u64,
    /// One past the last event id.
    pub to: u64,
    /// Event time of event 0 (ms since the Unix epoch).
    pub base_ms: i64,
}

impl Split {
    /// A size used to balance splits across tasks (bytes for files, records for Kafka).
    pub fn weight(&self) -> u64 {
        match self {
            Split::File(f) => f.bytes,
            Split::Kafka(k) => (k.end - k.start).max(0) as u64,
            Split::Generated(g) => g.to.saturating_sub(g.from),
        }
    }

    /// Records in the split when known up front (Kafka ranges).
    pub fn records(&self) -> Option<u64> {
        match self {
            Split::File(_) => None,
            Split::Kafka(k) => Some((k.end - k.start).max(0) as u64),
            Split::Generated(g) => Some(g.to.saturating_sub(g.from)),
        }
    }
}

/// A range of offsets that an epoch did not read and that is recorded as skipped: deleted by
/// retention before it was read, missing because the partition was truncated or recreated
/// (both found when the epoch is planned), or absent from the broker's answers inside the
/// epoch's range (found by the reader; `on_offsets_lost = 'skip'`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetGap {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the query expected to read next.
    pub expected: i64,
    /// The offset reading resumed at: the offsets `expected..resumed_at` never reached the
    /// query.
    pub resumed_at: i64,
    /// Why.
    pub reason: String,
}

/// Where a Kafka source reads from (kept in the offsets log so inspection can measure lag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaEndpoint {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic.
    pub topic: String,
}

/// What one source contributes to one epoch, as recorded in `offsets/N`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEpoch {
    /// The splits the epoch reads.
    pub splits: Vec<Split>,
    /// Where the source stands once the epoch is read (Kafka: the next offset of every known
    /// partition); the next epoch starts here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub position: BTreeMap<i32, i64>,
    /// Kafka: each partition's high watermark when the epoch was planned (for lag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub available: BTreeMap<i32, i64>,
    /// Offsets that were skipped rather than read (never silently).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<OffsetGap>,
    /// The broker and topic, for Kafka sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaEndpoint>,
    /// Streamed file tables: how far the files read so far go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileProgress>,
    /// A static file table read again by a streaming query: what its files were (names, sizes,
    /// modification times, hashed), so the driver can keep what it read while they stay the
    /// same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// The files a streamed file table has read up to and including an epoch. Files are read in
/// name order, so the last name and the count say exactly which were read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    /// The greatest path read so far.
    pub last: String,
    /// How many files have been read so far.
    pub count: u64,
}

impl SourceEpoch {
    /// Records the epoch reads, when known up front.
    pub fn records(&self) -> u64 {
        self.splits.iter().filter_map(|s| s.records()).sum()
    }
}

/// How much a source may plan into one epoch.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest<'a> {
    /// What the previous epoch recorded for this source (`None` for the query's first epoch).
    pub previous: Option<&'a SourceEpoch>,
    /// The source's per-trigger limit applies (not under `--trigger once`).
    pub respect_limit: bool,
    /// Read no further than this position (the backlog captured by `--trigger available-now`).
    pub until: Option<&'a BTreeMap<i32, i64>>,
    /// Read everything a bounded source holds again in this epoch, not only what is new: set
    /// for a bounded (static) table in a streaming query, such as the dimension side of a
    /// stream–static join, which every epoch's rows must meet in full.
    pub rescan: bool,
}

/// Driver side of a source: decides what an epoch reads.
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The schema of the rows this source produces.
    fn schema(&self) -> SchemaRef;
    /// Whether everything the source will ever hold is available now (files): a query over
    /// bounded sources only is one epoch.
    fn bounded(&self) -> bool {
        true
    }
    /// A bounded source's size in bytes now (files: the sum of their sizes), for the planner
    /// to decide whether a join may broadcast it; `None` when unknown or unbounded.
    fn size_bytes(&self) -> Option<u64> {
        None
    }
    /// What the next epoch reads. The driver records the result in the offsets log before any
    /// task runs.
    fn plan_epoch(&self, request: &PlanRequest<'_>) -> Result<SourceEpoch>;
    /// The end of what is available now (Kafka: each partition's high watermark); `None` for
    /// bounded sources.
    fn available_end(&self) -> Result<Option<BTreeMap<i32, i64>>> {
        Ok(None)
    }
    /// Called after an epoch that read `epoch` committed (Kafka: report the position to a
    /// monitoring consumer group when configured).
    fn on_commit(&self, _epoch: &SourceEpoch) -> Result<()> {
        Ok(())
    }
    /// Called when the next epoch will be planned as soon as the current one commits (a
    /// trigger that is already due): a source may start finding out what is new now, so that
    /// planning the next epoch does not wait for it (Kafka: the latest offsets are fetched
    /// while the current epoch commits).
    fn prepare_next_epoch(&self) {}
    /// Executor side: a reader for one split producing only the `projection` columns (indices
    /// into [`Source::schema`]; `None` means all).
    fn open(
        &self,
        split: &Split,
        projection: Option<&[usize]>,
        ctx: &ReadContext,
    ) -> Result<Box<dyn SplitReader>>;
}

/// What a reader needs to know about the task it runs in.
#[derive(Debug, Clone)]
pub struct ReadContext {
    /// The query's stable id.
    pub query_id: QueryId,
    /// The epoch being read.
    pub epoch: Epoch,
}

/// What readers read, and the records they set aside under their source's bad-record policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadCounters {
    /// Rows produced.
    pub rows: u64,
    /// Bad records skipped (`on_bad_record = 'skip'`).
    pub skipped: u64,
    /// Bad records written to the dead-letter table (`on_bad_record = 'dead_letter'`).
    pub dead_lettered: u64,
    /// Rows dropped because their event time was behind the watermark.
    #[serde(default)]
    pub late: u64,
    /// The largest event time read (milliseconds since the epoch), for tables with a
    /// watermark.
    #[serde(default)]
    pub max_event_ms: Option<i64>,
    /// The same per table (each source keeps its own watermark). (No `skip_serializing_if`:
    /// task reports travel in a format that is not self-describing.)
    #[serde(default)]
    pub max_event_by_table: BTreeMap<String, i64>,
    /// Kafka offsets inside a read range that held no record because the topic is compacted
    /// (`cleanup.policy` includes `compact`).
    #[serde(default)]
    pub compacted_offsets: u64,
    /// Kafka offsets inside a read range that held no record on a topic declared
    /// `transactional = 'true'` (transaction markers, records of aborted transactions).
    #[serde(default)]
    pub transaction_offsets: u64,
    /// Kafka offsets inside a read range that held no record and that nothing explains: data
    /// lost by the broker or a client, skipped under `on_offsets_lost = 'skip'` and listed in
    /// `gaps` (under `fail` the read fails instead).
    #[serde(default)]
    pub lost_offsets: u64,
    /// The runs of lost offsets, as recorded in the checkpoint's `gaps/N`.
    #[serde(default)]
    pub gaps: Vec<OffsetGap>,
    /// Rows and bad records per table read.
    #[serde(default)]
    pub by_table: BTreeMap<String, TableReads>,
}

/// What the scans of one table read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReads {
    /// Rows produced.
    pub rows: u64,
    /// Bad records skipped.
    pub skipped: u64,
    /// Bad records sent to the dead-letter table.
    pub dead_lettered: u64,
}

impl ReadCounters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: ReadCounters) {
        self.rows += other.rows;
        self.skipped += other.skipped;
        self.dead_lettered += other.dead_lettered;
        self.late += other.late;
        self.max_event_ms = match (self.max_event_ms, other.max_event_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (table, max) in other.max_event_by_table {
            let mine = self.max_event_by_table.entry(table).or_insert(max);
            *mine = (*mine).max(max);
        }
        self.compacted_offsets += other.compacted_offsets;
        self.transaction_offsets += other.transaction_offsets;
        self.lost_offsets += other.lost_offsets;
        self.gaps.extend(other.gaps);
        for (table, reads) in other.by_table {
            let mine = self.by_table.entry(table).or_default();
            mine.rows += reads.rows;
            mine.skipped += reads.skipped;
            mine.dead_lettered += reads.dead_lettered;
        }
    }
}

/// Reads the record batches of one split, in bounded memory.
pub trait SplitReader: Send {
    /// The next batch, or `None` when the split is exhausted.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
    /// Bad records set aside so far.
    fn counters(&self) -> ReadCounters {
        ReadCounters::default()
    }
}

/// How to build a sink on any process, symmetric with [`SourceSpec`]: one kind per connector,
/// each with its own options type. The one place that builds writers (executors) and
/// committers (the driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkSpec {
    /// Rows stay on the executors; the driver fetches and prints them.
    Console,
    /// Parquet files, published exactly once.
    Parquet(ParquetSinkSpec),
    /// A Kafka topic (at least once).
    Kafka(KafkaSinkSpec),
}

impl SinkSpec {
    /// The executors' side: writes rows of `schema` (`None` for the console, whose rows the
    /// driver fetches). Also validates the options against the schema (partition and key
    /// columns), so the driver calls it once when planning.
    pub fn writer(&self, schema: SchemaRef) -> Result<Option<std::sync::Arc<dyn Sink>>> {
        Ok(match self {
            SinkSpec::Console => None,
            SinkSpec::Parquet(spec) => Some(std::sync::Arc::new(parquet_sink::ParquetSink::new(
                spec.clone(),
                schema,
            )?)),
            SinkSpec::Kafka(spec) => Some(std::sync::Arc::new(kafka::sink::KafkaSink::new(
                spec.clone(),
                schema,
            )?)),
        })
    }

    /// The driver's side: publishes an epoch's output (`None` for the console).
    pub fn committer(&self) -> Result<Option<std::sync::Arc<dyn Committer>>> {
        Ok(match self {
            SinkSpec::Console => None,
            SinkSpec::Parquet(spec) => Some(std::sync::Arc::new(
                parquet_sink::ParquetCommitter::new(spec.clone())?,
            )),
            SinkSpec::Kafka(_) => Some(std::sync::Arc::new(kafka::sink::KafkaCommitter)),
        })
    }

    /// The driver prints the rows (the console sink).
    pub fn is_console(&self) -> bool {
        matches!(self, SinkSpec::Console)
    }
}

/// How to build a source on any process: what a scan carries in a stage plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceSpec {
    /// Parquet, CSV or JSON files.
    File(FileSourceSpec),
    /// A Kafka topic.
    Kafka(KafkaSourceSpec),
    /// The Nexmark event generator.
    Nexmark(nexmark::NexmarkSpec),
}

impl SourceSpec {
    /// The source, given its (declared or inferred) schema.
    pub fn build(&self, schema: SchemaRef) -> std::sync::Arc<dyn Source> {
        match self {
            SourceSpec::File(spec) => {
                std::sync::Arc::new(file::FileSource::new(spec.clone(), schema))
            }
            SourceSpec::Kafka(spec) => {
                std::sync::Arc::new(kafka::KafkaSource::new(spec.clone(), schema))
            }
            SourceSpec::Nexmark(spec) => {
                std::sync::Arc::new(nexmark::NexmarkSource::new(spec.clone()))
            }
        }
    }

    /// A short description for plans.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::File(f) => format!("{:?} files", f.format),
            SourceSpec::Kafka(k) => format!("kafka topic={} format={:?}", k.topic, k.format),
            SourceSpec::Nexmark(n) => format!("nexmark kind={:?} rate={}", n.kind, n.rate),
        }
    }
}

/// What a task's sink writer needs to know to name its output deterministically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterContext {
    /// The query's stable id (from the checkpoint).
    pub query_id: QueryId,
    /// The epoch being written.
    pub epoch: Epoch,
    /// The task's partition within its stage.
    pub task: usize,
    /// Unique per task attempt, so retried attempts never write over each other's staged files.
    pub attempt: String,
}

/// Executor side of a sink: stages one task's output.
pub trait Sink: Send + Sync + std::fmt::Debug {
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
    /// Records delivered directly (sinks that stage no files, such as Kafka).
    #[serde(default)]
    pub records: u64,
    /// Bytes delivered directly.
    #[serde(default)]
    pub bytes: u64,
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

/// What [`Committer::record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A publication was recorded; [`Committer::finish_recorded`] carries it out.
    Publish,
    /// Nothing to publish; this is what the epoch delivered.
    Done(CommitSummary),
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
    /// The first half of [`Committer::commit`], for a statement set whose tables publish
    /// together: records what publishing `receipts` will do (`sinks/TABLE/N`, overwriting a
    /// record an earlier attempt left) and publishes nothing; [`Committer::finish_recorded`]
    /// publishes it. `Done` when nothing is left to publish (nothing was staged, or the sink
    /// delivers directly, as Kafka's does).
    fn record(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<Recorded>;
    /// Whether `epoch`'s publication was recorded (then it may be unfinished: a crash came
    /// before `commits/N`). Reads only.
    fn publish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<bool>;
    /// Completes `epoch`'s recorded publication (idempotent); an error when none was recorded.
    fn finish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<CommitSummary>;
    /// Discards everything staged for `epoch` by this query (after a failed epoch).
    fn abort(&self, query_id: &QueryId, epoch: Epoch);
}
