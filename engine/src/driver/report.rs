//! What the driver records and reports about an epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::Epoch;
use sluice_connectors::SourceEpoch;

/// What `offsets/N` holds: everything an epoch reads, decided before it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochInput {
    /// The epoch.
    pub epoch: Epoch,
    /// When the epoch was planned (ms since the Unix epoch); replays reuse it.
    pub batch_timestamp_ms: u64,
    /// Per source table: the splits the epoch reads and where the source stands after it.
    pub sources: BTreeMap<String, SourceEpoch>,
    /// The event-time watermark the epoch runs with (ms since the Unix epoch): the largest
    /// event time read by earlier epochs minus the declared delay.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// The largest event time read by the epochs before this one.
    #[serde(default)]
    pub max_event_ms: Option<i64>,
    /// Per streamed table with a watermark: its own watermark, from which the query's is the
    /// least of the active ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_watermarks: BTreeMap<String, SourceWatermark>,
    /// The query's partition count (shuffles and state) in this epoch.
    #[serde(default)]
    pub partitions: Option<usize>,
    /// The key groups keyed state is divided into, fixed by the checkpoint's first epoch;
    /// `None` in a checkpoint written before key groups (whose partition count cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<u32>,
}

/// One source's watermark as an epoch saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceWatermark {
    /// The largest event time this table's records held, in epochs before this one.
    pub max_event_ms: Option<i64>,
    /// That minus the table's declared delay (`None` before its first record).
    pub watermark_ms: Option<i64>,
    /// Batch time of the last epoch that read new records of the table.
    pub last_active_ms: u64,
    /// No new records for the idle timeout: it does not hold the query's watermark back.
    pub idle: bool,
}

/// When a streaming query's epochs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Epochs start every interval; one that overruns is followed at once. Nothing new: no
    /// epoch.
    Interval(Duration),
    /// One epoch over everything available (per-trigger limits ignored), then exit.
    Once,
    /// Epochs within the per-trigger limits until everything available at start is read, then
    /// exit.
    AvailableNow,
}

impl std::str::FromStr for Trigger {
    type Err = String;

    /// `once`, `available-now`, or an interval in the one duration grammar of SQL options
    /// (`200ms`, `1s`, `5m`, `1h`, `2 seconds`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "once" => return Ok(Trigger::Once),
            "available-now" | "available_now" => return Ok(Trigger::AvailableNow),
            _ => {}
        }
        let ms = crate::job::streaming_sql::duration_ms(&s).map_err(|e| {
            format!("'{s}' is not a trigger ({e}): use an interval (200ms, 1s, 5m), 'once' or 'available-now'")
        })?;
        Ok(Trigger::Interval(Duration::from_millis(ms as u64)))
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Interval(d) => write!(f, "{}ms", d.as_millis()),
            Trigger::Once => f.write_str("once"),
            Trigger::AvailableNow => f.write_str("available-now"),
        }
    }
}

/// What an epoch produced.
#[derive(Debug, Clone, Default)]
pub struct EpochResult {
    /// Rows the sink received.
    pub output_rows: u64,
    /// Files published.
    pub files: usize,
    /// Bytes published.
    pub bytes: u64,
    /// What the scans read and set aside.
    pub read: sluice_connectors::ReadCounters,
    /// What the stateful operators did, per operator.
    pub state: Vec<crate::protocol::OperatorStateMetrics>,
    /// The printed rows, for console queries.
    pub console: Option<String>,
    /// Task attempts started, re-runs and speculative copies included.
    pub attempts: usize,
    /// Tasks that needed more than one attempt, with every attempt.
    pub retried: Vec<RetriedTask>,
    /// Executors lost during the epoch.
    pub lost: Vec<LostExecutor>,
    /// Object-store requests that failed transiently (and were retried).
    pub store_retries: u64,
    /// What each table received (`output_rows`, `files` and `bytes` are their sums).
    pub sinks: BTreeMap<String, sluice_connectors::CommitSummary>,
    /// Per stage: its tasks' durations and rows.
    pub stages: Vec<StageProgress>,
    /// Task attempts by how they ended.
    pub task_outcomes: BTreeMap<String, u64>,
}

/// A task that ran more than once in an epoch (lineage recovery, retries, speculation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetriedTask {
    /// The stage.
    pub stage: usize,
    /// The partition.
    pub partition: usize,
    /// Every attempt, in order; `executor` is the id in `lost_executors` or a live one.
    pub attempts: Vec<super::scheduler::AttemptRecord>,
}

/// An executor the driver declared lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostExecutor {
    /// Its id in this driver's run.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Why it was declared lost.
    pub reason: String,
    /// Tasks of the epoch that ran again because of it.
    pub tasks_rerun: usize,
}

/// Durations in milliseconds, as progress records carry them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DurationsMs {
    /// Asking sources what the epoch reads.
    pub offset_planning: f64,
    /// Writing `offsets/N`.
    pub offsets_write: f64,
    /// Running the tasks.
    pub execution: f64,
    /// The sink's commit.
    pub sink_commit: f64,
    /// Writing `commits/N`.
    pub commit_write: f64,
    /// The whole epoch.
    pub total: f64,
}

/// One partition's range in a progress record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// The partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// One past the last offset read.
    pub end: i64,
    /// Records behind the partition's end when the epoch was planned.
    pub lag: i64,
}

/// One source in a progress record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceProgress {
    /// Splits read.
    pub splits: usize,
    /// Kafka: per-partition ranges and lag.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub partitions: Vec<PartitionProgress>,
    /// Offsets skipped because they were gone from the broker.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub gaps: Vec<sluice_connectors::OffsetGap>,
    /// A watermarked stream's own watermark (the query's is the least of the active ones).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub watermark_ms: Option<i64>,
    /// Whether the stream was idle (no new records for the idle timeout).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub idle: bool,
    /// Rows read from it (a table read by several scans counts each).
    #[serde(default)]
    pub input_rows: u64,
    /// Its bad records skipped.
    #[serde(default)]
    pub skipped_records: u64,
    /// Its bad records sent to the dead-letter table.
    #[serde(default)]
    pub dead_lettered_records: u64,
}

/// The least, median and largest of a stage's task values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (zeros when empty).
    pub fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let Some((&min, &max)) = values.first().zip(values.last()) else {
            return Spread::default();
        };
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            // To the thousandth (a microsecond of a duration in milliseconds), as the
            // values are: a record read back from its JSON then equals the one reported.
            ((values[mid - 1] + values[mid]) / 2.0 * 1e3).round() / 1e3
        };
        Spread { min, median, max }
    }
}

/// One stage of an epoch: its tasks' durations and output rows, for skew at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    /// The stage (its index in the DAG, as `sluice explain` numbers it).
    pub stage: usize,
    /// Tasks that produced its output.
    pub tasks: usize,
    /// Task wall times, milliseconds.
    pub task_ms: Spread,
    /// Rows each task produced.
    pub task_rows: Spread,
    /// Rows of all its tasks.
    pub rows: u64,
    /// Bytes its tasks' operators spilled to disk (aggregations, sorts, joins over their share
    /// of the memory pool).
    #[serde(default)]
    pub spilled_bytes: u64,
    /// The most an executor's memory pool held while it ran (the largest of its tasks'
    /// executors, bytes).
    #[serde(default)]
    pub peak_pool_bytes: u64,
    /// Tasks not run because their output from an earlier epoch is still on their executor (a
    /// static table's scan whose files did not change).
    #[serde(default)]
    pub cached_tasks: usize,
    /// Skew: the largest task's rows and time over the median task's.
    #[serde(default)]
    pub skew: Skew,
    /// Partitions split across tasks and coalesced into a neighbour's task, when any (see
    /// *Skew and small partitions*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<super::adaptive::StageAdaptation>,
}

impl StageProgress {
    /// A stage's record from its tasks' reports.
    pub fn of(
        stage: crate::protocol::StageId,
        reports: &[(
            usize,
            crate::protocol::ExecutorId,
            &crate::protocol::TaskReport,
        )],
        adaptive: Option<super::adaptive::StageAdaptation>,
    ) -> Self {
        let spread = |f: fn(&crate::protocol::TaskReport) -> f64| {
            Spread::of(reports.iter().map(|(_, _, r)| f(r)).collect())
        };
        let task_ms = spread(|r| r.elapsed_us as f64 / 1e3);
        let task_rows = spread(|r| r.output_rows as f64);
        Self {
            stage: stage.0,
            tasks: reports.len(),
            skew: Skew::of(&task_rows, &task_ms),
            adaptive,
            task_ms,
            task_rows,
            rows: reports.iter().map(|(_, _, r)| r.output_rows).sum(),
            spilled_bytes: reports.iter().map(|(_, _, r)| r.spilled_bytes).sum(),
            peak_pool_bytes: reports
                .iter()
                .map(|(_, _, r)| r.peak_pool_bytes)
                .max()
                .unwrap_or(0),
            cached_tasks: reports
                .iter()
                .filter(|(_, _, r)| r.cached_from.is_some())
                .count(),
        }
    }
}

/// How much a stage's largest task exceeds its median one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Skew {
    /// max / median of the rows each task produced (0 when the median is 0).
    pub rows: f64,
    /// max / median of the tasks' wall times.
    pub ms: f64,
}

impl Skew {
    /// From a stage's spreads.
    pub fn of(rows: &Spread, ms: &Spread) -> Self {
        let ratio = |s: &Spread| {
            if s.median > 0.0 {
                (s.max / s.median * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        Self {
            rows: ratio(rows),
            ms: ratio(ms),
        }
    }
}

/// The progress record of one epoch (printed with `--progress json`, kept under
/// `CHECKPOINT/progress/N`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochProgress {
    /// The query.
    pub query_id: sluice_checkpoint::QueryId,
    /// The epoch.
    pub epoch: u64,
    /// The epoch's batch timestamp (ms since the Unix epoch).
    pub batch_timestamp_ms: u64,
    /// Whether this run re-ran an epoch recorded by an earlier run.
    pub replay: bool,
    /// Records read from sources (decoded rows plus bad records set aside).
    pub input_rows: u64,
    /// Input rows per second of wall time since the previous epoch started.
    pub input_rows_per_second: f64,
    /// Wall time from the previous epoch's start to this one's, in this run (the previous
    /// epoch's whole cycle: its phases, its progress record and retention, the trigger wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_previous_epoch_ms: Option<f64>,
    /// Input rows per second of this epoch's duration.
    pub processed_rows_per_second: f64,
    /// Bad records skipped.
    pub skipped_records: u64,
    /// Bad records sent to the dead-letter table.
    pub dead_lettered_records: u64,
    /// Phase durations.
    pub duration_ms: DurationsMs,
    /// Per source table.
    pub sources: BTreeMap<String, SourceProgress>,
    /// Rows the sink received.
    pub sink_rows: u64,
    /// Files the sink published.
    pub sink_files: usize,
    /// Bytes the sink published.
    pub sink_bytes: u64,
    /// Per table written: rows, files and bytes (a statement set writes several; `sink_*`
    /// are their sums).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sinks: BTreeMap<String, sluice_connectors::CommitSummary>,
    /// The watermark the epoch ran with (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// Rows dropped for arriving behind the watermark.
    #[serde(default)]
    pub late_records: u64,
    /// Kafka offsets inside read ranges without a record because the topic is compacted.
    #[serde(default)]
    pub compacted_offsets: u64,
    /// Kafka offsets inside read ranges without a record on topics declared
    /// `transactional = 'true'` (transaction markers, aborted records).
    #[serde(default)]
    pub transaction_offsets: u64,
    /// Kafka offsets inside read ranges that nothing explains, skipped under
    /// `on_offsets_lost = 'skip'`; listed in the sources' `gaps` and in `gaps/N`.
    #[serde(default)]
    pub lost_offsets: u64,
    /// Per stateful operator: keys total/updated/evicted, state and snapshot bytes, times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<crate::protocol::OperatorStateMetrics>,
    /// Bytes spilled to executors' disks, all stages.
    #[serde(default)]
    pub spilled_bytes: u64,
    /// The most any executor's memory pool held at once, as of this epoch's tasks.
    #[serde(default)]
    pub peak_pool_bytes: u64,
    /// Task attempts started (one per task when nothing failed).
    #[serde(default)]
    pub task_attempts: usize,
    /// Task attempts by how they ended: `succeeded`, `failed`, `fetch_failed`,
    /// `executor_lost`, `output_lost`, `superseded`.
    #[serde(default)]
    pub task_outcomes: BTreeMap<String, u64>,
    /// Per stage: task count, task durations (`task_ms`) and rows (`task_rows`) as
    /// {min, median, max}, and its rows in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageProgress>,
    /// Tasks that ran more than once, with their attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_tasks: Vec<RetriedTask>,
    /// Object-store requests of the driver and executors since the previous epoch that met a
    /// network error, a 5xx or a throttling answer and were retried with backoff.
    #[serde(default)]
    pub store_retries: u64,
    /// Executors lost during the epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_executors: Vec<LostExecutor>,
    /// Dynamic allocation's decision after this epoch, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationRecord>,
}

/// Dynamic allocation's decision after an epoch, in its progress record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocationRecord {
    /// Executors the epoch ran with (and those starting).
    pub executors: usize,
    /// Executors wanted from now on.
    pub target: usize,
    /// Why.
    pub reason: String,
    /// Records waiting in the sources when the epoch was planned (the backlog it measured).
    pub backlog: u64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl EpochProgress {
    /// The record of a committed epoch.
    pub fn new(
        query_id: &sluice_checkpoint::QueryId,
        input: &EpochInput,
        replay: bool,
        result: &EpochResult,
        timings: &Timings,
        since_previous: Option<Duration>,
    ) -> Self {
        let read = &result.read;
        let input_rows = read.rows + read.skipped + read.dead_lettered;
        let rate = |d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                (input_rows as f64 / d.as_secs_f64()).round()
            }
        };
        let sources = input
            .sources
            .iter()
            .map(|(name, s)| {
                let partitions = s
                    .splits
                    .iter()
                    .filter_map(|split| match split {
                        sluice_connectors::Split::Kafka(k) => Some(PartitionProgress {
                            partition: k.partition,
                            start: k.start,
                            end: k.end,
                            lag: s
                                .available
                                .get(&k.partition)
                                .map(|h| (h - k.end).max(0))
                                .unwrap_or(0),
                        }),
                        _ => None,
                    })
                    .collect();
                // Gaps found while reading belong to the source reading their topic.
                let topic = s.kafka.as_ref().map(|k| k.topic.as_str());
                let mut gaps = s.gaps.clone();
                gaps.extend(
                    read.gaps
                        .iter()
                        .filter(|g| Some(g.topic.as_str()) == topic)
                        .cloned(),
                );
                (
                    name.clone(),
                    SourceProgress {
                        splits: s.splits.len(),
                        partitions,
                        gaps,
                        watermark_ms: input
                            .source_watermarks
                            .get(name)
                            .and_then(|w| w.watermark_ms),
                        idle: input.source_watermarks.get(name).is_some_and(|w| w.idle),
                        input_rows: read.by_table.get(name).map_or(0, |t| t.rows),
                        skipped_records: read.by_table.get(name).map_or(0, |t| t.skipped),
                        dead_lettered_records: read
                            .by_table
                            .get(name)
                            .map_or(0, |t| t.dead_lettered),
                    },
                )
            })
            .collect();
        Self {
            query_id: query_id.clone(),
            epoch: input.epoch.0,
            batch_timestamp_ms: input.batch_timestamp_ms,
            replay,
            input_rows,
            input_rows_per_second: rate(since_previous.unwrap_or(timings.total)),
            since_previous_epoch_ms: since_previous.map(ms),
            processed_rows_per_second: rate(timings.total),
            skipped_records: read.skipped,
            dead_lettered_records: read.dead_lettered,
            duration_ms: DurationsMs {
                offset_planning: ms(timings.offsets),
                offsets_write: ms(timings.offsets_write),
                execution: ms(timings.execution),
                sink_commit: ms(timings.commit),
                commit_write: ms(timings.commit_write),
                total: ms(timings.total),
            },
            sources,
            sink_rows: result.output_rows,
            sink_files: result.files,
            sink_bytes: result.bytes,
            sinks: result.sinks.clone(),
            stages: result.stages.clone(),
            task_outcomes: result.task_outcomes.clone(),
            watermark_ms: input.watermark_ms,
            late_records: read.late,
            compacted_offsets: read.compacted_offsets,
            transaction_offsets: read.transaction_offsets,
            lost_offsets: read.lost_offsets,
            state: result.state.clone(),
            spilled_bytes: result.stages.iter().map(|s| s.spilled_bytes).sum(),
            peak_pool_bytes: result
                .stages
                .iter()
                .map(|s| s.peak_pool_bytes)
                .max()
                .unwrap_or(0),
            task_attempts: result.attempts,
            retried_tasks: result.retried.clone(),
            store_retries: result.store_retries,
            lost_executors: result.lost.clone(),
            allocation: None,
        }
    }

    /// Records waiting in the sources when the epoch was planned (Kafka lag).
    pub fn backlog(&self) -> u64 {
        self.sources
            .values()
            .flat_map(|s| &s.partitions)
            .map(|p| p.lag.max(0) as u64)
            .sum()
    }

    /// One human line for the log.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "sluice: epoch {} committed: {} rows in, {} rows in {} files out, {:.1} ms{}",
            self.epoch,
            self.input_rows,
            self.sink_rows,
            self.sink_files,
            self.duration_ms.total,
            if self.replay { " (replayed)" } else { "" }
        );
        if self.skipped_records > 0 {
            line.push_str(&format!(", {} bad records skipped", self.skipped_records));
        }
        if self.late_records > 0 {
            line.push_str(&format!(", {} late records dropped", self.late_records));
        }
        if self.compacted_offsets > 0 {
            line.push_str(&format!(
                ", {} offsets compacted away",
                self.compacted_offsets
            ));
        }
        if self.transaction_offsets > 0 {
            line.push_str(&format!(
                ", {} offsets of transaction markers or aborted transactions",
                self.transaction_offsets
            ));
        }
        for op in &self.state {
            line.push_str(&format!(
                ", state op {}: {} keys ({} updated, {} evicted), snapshot {} KiB in {:.1} ms",
                op.operator,
                op.rows_total,
                op.rows_updated,
                op.rows_evicted,
                op.snapshot_uploaded_bytes / 1024,
                op.snapshot_us as f64 / 1000.0
            ));
        }
        if self.dead_lettered_records > 0 {
            line.push_str(&format!(
                ", {} bad records dead-lettered",
                self.dead_lettered_records
            ));
        }
        for (name, s) in &self.sources {
            for g in &s.gaps {
                line.push_str(&format!(
                    "; {name}: SKIPPED offsets of partition {} from {} (resumed at {}): {}",
                    g.partition, g.expected, g.resumed_at, g.reason
                ));
            }
        }
        line
    }
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
    /// Asking sources what the epoch reads.
    pub offsets: Duration,
    /// Writing the offsets log.
    pub offsets_write: Duration,
    /// From installing the query to the last task.
    pub execution: Duration,
    /// The sink's commit.
    pub commit: Duration,
    /// Writing the commit log.
    pub commit_write: Duration,
    /// Everything.
    pub total: Duration,
}

/// The result of running a job.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The query's id (stable across runs on one checkpoint).
    pub query_id: sluice_checkpoint::QueryId,
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
    /// Epochs committed by this run.
    pub epochs: u64,
    /// The run stopped because the user asked (Ctrl-C / SIGTERM) after an epoch committed.
    pub stopped_by_user: bool,
}

impl JobReport {
    /// A report of `query_id` with nothing in it yet.
    pub fn empty(query_id: sluice_checkpoint::QueryId) -> Self {
        Self {
            query_id,
            epoch: Epoch(0),
            outcome: EpochOutcome::AlreadyCommitted,
            output_rows: 0,
            files: 0,
            console: None,
            executors: vec![],
            timings: Timings::default(),
            stages: 0,
            tasks: 0,
            epochs: 0,
            stopped_by_user: false,
        }
    }
}

/// Writes `gaps/N` — every offset the epoch skipped, found when planning (retention,
/// truncation) or while reading (offsets without records, `on_offsets_lost = 'skip'`) — before
/// the sink publishes, so a reader of the checkpoint can list what never reached the output.
/// An epoch without gaps writes nothing, unless an earlier attempt left a record to replace.
pub(super) fn record_gaps(
    store: &sluice_checkpoint::CheckpointStore,
    input: &EpochInput,
    read: &sluice_connectors::ReadCounters,
) -> crate::error::Result<()> {
    let mut gaps: BTreeMap<String, Vec<sluice_connectors::OffsetGap>> = BTreeMap::new();
    for (table, source) in &input.sources {
        let topic = source.kafka.as_ref().map(|k| k.topic.as_str());
        let found: Vec<_> = source
            .gaps
            .iter()
            .chain(read.gaps.iter().filter(|g| Some(g.topic.as_str()) == topic))
            .cloned()
            .collect();
        if !found.is_empty() {
            gaps.insert(table.clone(), found);
        }
    }
    if !gaps.is_empty() || store.read_gaps::<serde_json::Value>(input.epoch)?.is_some() {
        store.write_gaps(input.epoch, &gaps)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spread_reads_back_from_its_json_unchanged() {
        // (11.793 + 3.821) / 2 is 7.8069999999999995 in f64, which serde_json reads back as
        // 7.807: the progress a program observed differed from the record on disk.
        let two = super::Spread::of(vec![11.793, 3.821]);
        let json = serde_json::to_string(&two).unwrap();
        let back: super::Spread = serde_json::from_str(&json).unwrap();
        assert_eq!(back, two, "{json}");
        assert_eq!((two.min, two.median, two.max), (3.821, 7.807, 11.793));
    }
}
