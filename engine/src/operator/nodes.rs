//! Sluice's own physical operators: the leaves of every stage plan.
//!
//! - [`SourceScanExec`] reads the splits the driver assigned to a task (from the epoch's
//!   offsets), through a connector's [`SplitReader`](sluice_connectors::SplitReader).
//! - [`ShuffleReaderExec`] reads the outputs of upstream stages from the executors holding them.
//!
//! Both are planned once per query; what they read in a given epoch arrives per task as a
//! [`TaskInputs`] extension of the task's DataFusion session config, so a cached plan runs any
//! epoch unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, Statistics,
};
use sluice_checkpoint::Epoch;
use sluice_connectors::{ReadContext, ReadCounters, Source, SourceSpec, Split};

use crate::protocol::{FetchRequest, MapOutputLocation, StageId};

/// Fetches one upstream output as a stream of batches (from a peer over QUIC, or locally).
pub trait ShuffleFetch: Send + Sync + fmt::Debug {
    /// Streams the output named by `request` from `location`.
    fn fetch(
        &self,
        location: &MapOutputLocation,
        request: FetchRequest,
        schema: SchemaRef,
    ) -> SendableRecordBatchStream;
}

/// What one task reads in this epoch; attached to the task's session config.
#[derive(Debug)]
pub struct TaskInputs {
    /// The query.
    pub query_id: sluice_checkpoint::QueryId,
    /// The epoch.
    pub epoch: Epoch,
    /// Per scanned table: the splits of each scan partition.
    pub splits: BTreeMap<String, Vec<Vec<Split>>>,
    /// Per input stage: where its outputs live.
    pub inputs: BTreeMap<StageId, Vec<MapOutputLocation>>,
    /// How to fetch them.
    pub fetcher: Arc<dyn ShuffleFetch>,
    /// Bad records the task's scans set aside.
    pub read_counters: std::sync::Mutex<ReadCounters>,
    /// The epoch's event-time watermark (milliseconds), when the query declares one.
    pub watermark_ms: Option<i64>,
    /// The epoch's batch time (milliseconds since the Unix epoch; replays reuse it).
    pub batch_timestamp_ms: i64,
    /// Keyed state, when the query has stateful operators.
    pub state: Option<crate::operator::stateful::TaskState>,
}

pub(crate) fn task_inputs(ctx: &TaskContext) -> DfResult<Arc<TaskInputs>> {
    ctx.session_config()
        .get_extension::<TaskInputs>()
        .ok_or_else(|| {
            DataFusionError::Internal("task context carries no Sluice task inputs".into())
        })
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// Reads a source table's splits for one partition.
#[derive(Debug, Clone)]
pub struct SourceScanExec {
    /// The table's name; keys the task's split assignment.
    pub table: String,
    /// How to read it.
    pub spec: SourceSpec,
    /// The table's full schema.
    pub schema: SchemaRef,
    /// Columns to produce (indices into `schema`).
    pub projection: Option<Vec<usize>>,
    /// Scan partitions (= tasks reading this table in its stage).
    pub partitions: usize,
    /// The table's event-time column, when it declares a watermark.
    pub event_time: Option<EventTime>,
    /// A bounded table's size when planned (files: their bytes), the planner's statistic for
    /// broadcasting it to a join; not sent to executors.
    pub size_bytes: Option<u64>,
    projected: SchemaRef,
    props: Arc<PlanProperties>,
}

impl SourceScanExec {
    /// A scan of `table` with `partitions` partitions.
    pub fn try_new(
        table: String,
        spec: SourceSpec,
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        partitions: usize,
    ) -> DfResult<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let props = properties(projected.clone(), partitions);
        Ok(Self {
            table,
            spec,
            schema,
            projection,
            partitions,
            event_time: None,
            size_bytes: None,
            projected,
            props,
        })
    }

    /// The same scan, with the table's size for the planner.
    pub fn with_size_bytes(mut self, size_bytes: Option<u64>) -> Self {
        self.size_bytes = size_bytes;
        self
    }

    /// The same scan, tracking (and with `drop_late`, filtering by) event time.
    pub fn with_event_time(mut self, event_time: Option<EventTime>) -> Self {
        self.event_time = event_time;
        self
    }
}

/// A scan's event-time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventTime {
    /// Its index in the table's full schema.
    pub column: usize,
    /// Whether rows behind the epoch's watermark are dropped (and counted as late): set when a
    /// stateful operator consumes the scan.
    pub drop_late: bool,
}

/// Milliseconds since the Unix epoch of an event-time array (timestamps of any unit; integers
/// are taken as milliseconds).
pub fn event_millis(array: &arrow::array::ArrayRef) -> DfResult<arrow::array::Int64Array> {
    use arrow::datatypes::{DataType, TimeUnit};
    let (raw, divisor) = match array.data_type() {
        DataType::Timestamp(unit, _) => {
            let divisor = match unit {
                TimeUnit::Second => -1000,
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            (arrow::compute::cast(array, &DataType::Int64)?, divisor)
        }
        DataType::Int64 | DataType::Int32 | DataType::UInt32 => {
            (arrow::compute::cast(array, &DataType::Int64)?, 1)
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "an event-time column must be a TIMESTAMP (or BIGINT milliseconds), not {other}"
            )))
        }
    };
    let raw = raw
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Int64 gave another type".into()))?;
    Ok(match divisor {
        1 => raw.clone(),
        d if d < 0 => raw.unary(|v| v.saturating_mul(-d)),
        d => raw.unary(|v| v.div_euclid(d)),
    })
}

impl DisplayAs for SourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SourceScanExec: table={}, {}, partitions={}",
            self.table,
            self.spec.describe(),
            self.partitions
        )
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// The table's bytes when known (a bounded file table), shared evenly by the partitions;
    /// nothing else is known before reading.
    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.projected);
        if let Some(bytes) = self.size_bytes {
            let share = match partition {
                None => bytes,
                Some(_) => bytes / self.partitions.max(1) as u64,
            };
            stats.total_byte_size = Precision::Inexact(share as usize);
        }
        Ok(Arc::new(stats))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let inputs = task_inputs(&context)?;
        let splits = inputs
            .splits
            .get(&self.table)
            .and_then(|parts| parts.get(partition))
            .cloned()
            .unwrap_or_default();
        let source = self.spec.build(self.schema.clone());
        let ctx = ReadContext {
            query_id: inputs.query_id.clone(),
            epoch: inputs.epoch,
        };
        // A scan producing no columns (count(*)) still needs row counts: read one column and
        // drop it.
        let (mut read_projection, count_only) = match &self.projection {
            Some(p) if p.is_empty() && !self.schema.fields().is_empty() => (Some(vec![0]), true),
            other => (other.clone(), false),
        };
        // The event-time column is read even when the query does not use it: the watermark
        // needs it. It is dropped again after the scan has looked at it.
        let mut event = None;
        let mut keep = None;
        if let Some(et) = self.event_time {
            match &mut read_projection {
                None => event = Some(et.column),
                Some(p) => match p.iter().position(|&c| c == et.column) {
                    Some(i) if !count_only => event = Some(i),
                    _ => {
                        let width = if count_only { 0 } else { p.len() };
                        keep = Some((0..width).collect::<Vec<_>>());
                        p.push(et.column);
                        event = Some(p.len() - 1);
                    }
                },
            }
        }
        let state = ScanState {
            table: self.table.clone(),
            source,
            ctx,
            inputs,
            splits: splits.into(),
            current: None,
            projection: read_projection,
            count_only,
            schema: self.projected.clone(),
            rows: 0,
            event,
            keep,
            drop_late: self.event_time.is_some_and(|e| e.drop_late),
            late: 0,
            max_event_ms: None,
        };
        // Reading and decoding run inline, in the task: executors run tasks on a dedicated
        // compute runtime (one thread per slot) that nothing latency-sensitive shares, so a
        // batch is decoded and aggregated by the same thread without a hand-off — as
        // DataFusion's own scans do. Memory stays bounded: one batch of one split at a time.
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next() {
                Ok(Some(batch)) => Some((Ok(batch), Some(state))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.projected.clone(),
            stream,
        )))
    }
}

/// Where a scan partition is in its splits.
struct ScanState {
    table: String,
    source: Arc<dyn Source>,
    ctx: ReadContext,
    inputs: Arc<TaskInputs>,
    splits: std::collections::VecDeque<Split>,
    current: Option<Box<dyn sluice_connectors::SplitReader>>,
    projection: Option<Vec<usize>>,
    count_only: bool,
    schema: SchemaRef,
    /// Rows read from the current split.
    rows: u64,
    /// Index of the event-time column in read batches.
    event: Option<usize>,
    /// Columns of read batches to pass on, when the event-time column was added for the scan.
    keep: Option<Vec<usize>>,
    drop_late: bool,
    late: u64,
    max_event_ms: Option<i64>,
}

impl ScanState {
    fn next(&mut self) -> DfResult<Option<RecordBatch>> {
        let ext = |e: sluice_connectors::ConnectorError| DataFusionError::External(Box::new(e));
        loop {
            if self.current.is_none() {
                let Some(split) = self.splits.pop_front() else {
                    return Ok(None);
                };
                self.current = Some(
                    self.source
                        .open(&split, self.projection.as_deref(), &self.ctx)
                        .map_err(ext)?,
                );
            }
            let mut next = self
                .current
                .as_mut()
                .expect("opened above")
                .next_batch()
                .map_err(ext)?;
            if let Some(batch) = &next {
                self.rows += batch.num_rows() as u64;
            }
            if let (Some(batch), Some(col)) = (&next, self.event) {
                next = Some(self.track_event_time(batch, col)?);
            }
            match next {
                Some(batch) if self.count_only => {
                    return Ok(Some(RecordBatch::try_new_with_options(
                        self.schema.clone(),
                        vec![],
                        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                    )?))
                }
                Some(batch) => return Ok(Some(batch)),
                None => {
                    let mut counters = self
                        .current
                        .as_ref()
                        .map(|r| r.counters())
                        .unwrap_or_default();
                    counters.rows = std::mem::take(&mut self.rows);
                    counters.late = std::mem::take(&mut self.late);
                    counters.max_event_ms = self.max_event_ms.take();
                    if let Some(max) = counters.max_event_ms {
                        counters.max_event_by_table.insert(self.table.clone(), max);
                    }
                    counters.by_table.insert(
                        self.table.clone(),
                        sluice_connectors::TableReads {
                            rows: counters.rows,
                            skipped: counters.skipped,
                            dead_lettered: counters.dead_lettered,
                        },
                    );
                    self.inputs
                        .read_counters
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(counters);
                    self.current = None;
                }
            }
        }
    }
}

impl ScanState {
    /// Notes the batch's largest event time, drops rows behind the watermark when asked, and
    /// removes the event-time column if only the scan wanted it.
    fn track_event_time(&mut self, batch: &RecordBatch, col: usize) -> DfResult<RecordBatch> {
        let millis = event_millis(batch.column(col))?;
        if let Some(max) = arrow::compute::max(&millis) {
            self.max_event_ms = Some(self.max_event_ms.map_or(max, |m| m.max(max)));
        }
        let mut batch = batch.clone();
        if let (true, Some(wm)) = (self.drop_late, self.inputs.watermark_ms) {
            let on_time: arrow::array::BooleanArray = millis
                .iter()
                .map(|v| Some(v.is_none_or(|v| v >= wm)))
                .collect();
            let kept = on_time.true_count();
            if kept < batch.num_rows() {
                self.late += (batch.num_rows() - kept) as u64;
                batch = arrow::compute::filter_record_batch(&batch, &on_time)?;
            }
        }
        if let Some(keep) = &self.keep {
            if self.count_only {
                return Ok(RecordBatch::try_new_with_options(
                    Arc::new(Schema::empty()),
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?);
            }
            batch = batch.project(keep)?;
        }
        Ok(batch)
    }
}

/// How a shuffle reader maps its partitions onto upstream outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReadMode {
    /// Partition `p` reads shuffle partition `p` of every upstream task.
    Hash,
    /// Partition `p` reads the whole output of upstream task `p`.
    Gather,
}

/// Reads the outputs of an upstream stage.
#[derive(Debug, Clone)]
pub struct ShuffleReaderExec {
    /// The upstream stage.
    pub stage: StageId,
    /// Schema of the upstream output.
    pub schema: SchemaRef,
    /// Partitions of this reader.
    pub partitions: usize,
    /// How partitions map to upstream outputs.
    pub mode: ReadMode,
    props: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    /// A reader of `stage`'s outputs.
    pub fn new(stage: StageId, schema: SchemaRef, partitions: usize, mode: ReadMode) -> Self {
        let props = properties(schema.clone(), partitions);
        Self {
            stage,
            schema,
            partitions,
            mode,
            props,
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: stage={}, mode={:?}, partitions={}",
            self.stage, self.mode, self.partitions
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let inputs = task_inputs(&context)?;
        let locations = inputs.inputs.get(&self.stage).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "task has no locations for input stage {}",
                self.stage
            ))
        })?;
        // An output kept from an earlier epoch (a static table's scan) is asked for by it.
        let request = |l: &MapOutputLocation, reduce_partition: usize| FetchRequest {
            query_id: inputs.query_id.clone(),
            epoch: l.epoch.unwrap_or(inputs.epoch),
            stage: self.stage,
            map_partition: l.map_partition,
            reduce_partition,
        };
        let streams: Vec<SendableRecordBatchStream> = match self.mode {
            ReadMode::Hash => locations
                .iter()
                .map(|l| {
                    // A coalescing task names each partition it reads.
                    let reduce = l.reduce_partition.unwrap_or(partition);
                    inputs
                        .fetcher
                        .fetch(l, request(l, reduce), self.schema.clone())
                })
                .collect(),
            ReadMode::Gather => locations
                .iter()
                .filter(|l| l.map_partition == partition)
                .map(|l| inputs.fetcher.fetch(l, request(l, 0), self.schema.clone()))
                .collect(),
        };
        let merged = futures::stream::select_all(streams);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            merged,
        )))
    }
}

/// Encodes a schema for plan and sink descriptors.
pub fn schema_to_json(schema: &Schema) -> String {
    serde_json::to_string(schema).expect("arrow schemas always serialize")
}

/// Decodes a schema written by [`schema_to_json`].
pub fn schema_from_json(json: &str) -> DfResult<SchemaRef> {
    serde_json::from_str::<Schema>(json)
        .map(Arc::new)
        .map_err(|e| DataFusionError::Internal(format!("undecodable schema: {e}")))
}

/// Plan properties of an operator that wraps `inner` (its schema and partition count) and
/// emits only once its input is consumed.
pub(super) fn final_properties(inner: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(inner.schema()),
        Partitioning::UnknownPartitioning(inner.output_partitioning().partition_count()),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The stream of the batches `run` returns once it completes (operators that need their whole
/// input before they emit).
pub(super) fn emit_when_done<F>(schema: SchemaRef, run: F) -> SendableRecordBatchStream
where
    F: std::future::Future<Output = DfResult<Vec<RecordBatch>>> + Send + 'static,
{
    use futures::StreamExt;
    let stream = futures::stream::once(run)
        .map(|result| match result {
            Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        })
        .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}
