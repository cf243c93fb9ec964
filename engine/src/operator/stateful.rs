//! Stateful streaming aggregation: DataFusion's aggregate, continued across epochs through
//! keyed state in RocksDB.
//!
//! The planner keeps DataFusion's two-phase aggregation (partial aggregate → shuffle by key →
//! final aggregate) and replaces the final aggregate of a streaming query with
//! [`StatefulAggregateExec`]. Per epoch and partition it
//! 1. merges the epoch's shuffled partial states into one state row per key (DataFusion's
//!    `PartialReduce` mode — the epoch's rows are pre-aggregated before state is touched),
//! 2. reads the stored state of exactly those keys with one RocksDB `multi_get`,
//! 3. merges stored and new state (`PartialReduce` again) and writes it back in one batch,
//! 4. emits by output mode — `update`: the changed keys; `append`: the windows the watermark
//!    has passed, which are then evicted; `complete`: every key — finalising accumulator
//!    state with DataFusion's `Final` mode,
//! 5. snapshots the partition into the checkpoint store before the task reports success.
//!
//! Keys are the group columns in Arrow's row format, prefixed for windowed aggregates by the
//! window end (milliseconds, big-endian with the sign bit flipped) so that closing windows is
//! one ordered range scan. Values are the whole state row (group columns and accumulator state)
//! in row format. Any accumulator DataFusion can merge (count, sum, min, max, avg, count
//! distinct, ...) is supported without Sluice knowing its state layout.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::state::{Redistribution, StateBackend, StatePartition};
use sluice_checkpoint::Epoch;

use super::key_groups::{key_groups_of, open_state};
use super::nodes::{emit_when_done, event_millis, final_properties, task_inputs};
use super::session::SessionColumns;
use super::session::SESSION_INDEX;
use super::OutputMode;

/// What a stateful task needs besides its inputs; part of the task's [`TaskInputs`].
///
/// [`TaskInputs`]: super::nodes::TaskInputs
#[derive(Debug, Clone)]
pub struct TaskState {
    /// The executor's RocksDB instances.
    pub backend: Arc<StateBackend>,
    /// `CHECKPOINT/state`.
    pub store: sluice_checkpoint::Location,
    /// Whether snapshots are fsynced.
    pub durable: bool,
    /// The last committed epoch (state is restored to it), `None` before the first commit.
    pub restore: Option<Epoch>,
    /// The partition count `restore` was committed with, when it differs from this task's.
    pub restore_partitions: Option<u32>,
    /// The query's key groups; `None` for a checkpoint written before key groups.
    pub key_groups: Option<u32>,
    /// What each stateful operator of the task did.
    pub metrics: Arc<Mutex<Vec<OperatorStateMetrics>>>,
}

pub use crate::protocol::OperatorStateMetrics;

/// The planned shape of a stateful aggregate (what the codec carries besides the aggregate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatefulSpec {
    /// Operator id within the query.
    pub operator: u32,
    /// How results are emitted.
    pub mode: OutputMode,
    /// Whether the time column is the event time itself rather than a window end: such a
    /// key is final only once the watermark is strictly past it (a row *at* the watermark is
    /// still on time), a window once the watermark reaches its end.
    #[serde(default)]
    pub event_time_key: bool,
    /// Keys not updated for this long (by epoch batch time, milliseconds) are dropped.
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// Index of the group column that says when a key is final: `window_end` for windowed
    /// aggregates, else the watermarked event-time column when grouped by it.
    pub window_end: Option<usize>,
    /// Session windows: where the session bounds are among the group columns.
    #[serde(default)]
    pub session: Option<SessionColumns>,
    /// Deduplication by key (`ROW_NUMBER() ... WHERE rn = 1`, see `plan::dedup`): the
    /// aggregates are each column's first value, and a key already in state is a duplicate.
    #[serde(default)]
    pub keep_first: bool,
}

/// The final aggregate of a streaming query, with its state in RocksDB.
#[derive(Debug, Clone)]
pub struct StatefulAggregateExec {
    /// What it is.
    pub spec: StatefulSpec,
    /// DataFusion's final aggregate (`Final` or `FinalPartitioned`) whose expressions it
    /// evaluates; its input is this operator's input.
    pub aggregate: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
}

impl StatefulAggregateExec {
    /// Wraps `aggregate`, which must be a final-mode [`AggregateExec`].
    pub fn try_new(spec: StatefulSpec, aggregate: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        final_aggregate(&aggregate, "streaming aggregation")?;
        let props = final_properties(&aggregate);
        Ok(Self {
            spec,
            aggregate,
            props,
        })
    }

    /// The names of the group columns (the first columns of the output).
    pub fn group_columns(&self) -> Vec<String> {
        let groups = self.agg().group_expr().expr().len();
        self.schema().fields()[..groups]
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    pub(super) fn agg(&self) -> &AggregateExec {
        self.aggregate
            .downcast_ref::<AggregateExec>()
            .expect("checked in try_new")
    }

    /// Every key of one of this operator's state partitions, decoded with its layout: one row
    /// per key holding the group columns and the accumulators' state (what `sluice checkpoint
    /// state` prints). The indexes kept beside the keys (window floor, expiry and session
    /// indexes) are left out.
    pub fn state_rows(&self, part: &StatePartition) -> DfResult<RecordBatch> {
        let agg_input = self.agg().input().clone();
        let reduce = aggregate_over(self.agg(), AggregateMode::PartialReduce, agg_input)?;
        let schema = reduce.schema();
        let codec = RowCodec::new(
            &schema,
            self.agg().group_expr().expr().len(),
            self.spec.window_end,
            self.spec.ttl_ms.is_some(),
        )?;
        let entries = part
            .scan(&[], Some(&[FLOOR]))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let values: Vec<Vec<u8>> = entries.into_iter().map(|(_, v)| v).collect();
        codec.decode(&schema, &values)
    }

    async fn run(&self, partition: usize, ctx: Arc<TaskContext>) -> DfResult<Vec<RecordBatch>> {
        let inputs = task_inputs(&ctx)?;
        let state = inputs.state.clone().ok_or_else(|| {
            DataFusionError::Internal("a stateful task was sent without its state".into())
        })?;
        let started = Instant::now();
        // 1. The epoch's partial states, one row per key.
        let agg_input = self.agg().input().clone();
        let reduce = aggregate_over(self.agg(), AggregateMode::PartialReduce, agg_input)?;
        let state_schema = reduce.schema();
        let epoch_rows = concat(
            &state_schema,
            collect_partition(&reduce, partition, ctx.clone()).await?,
        )?;

        let ext = |e: sluice_checkpoint::CheckpointError| DataFusionError::External(Box::new(e));
        let groups = self.agg().group_expr().expr().len();
        let codec = RowCodec::new(
            &state_schema,
            groups,
            self.spec.window_end,
            self.spec.ttl_ms.is_some(),
        )?;
        let handle = open_state(
            &state,
            &inputs.query_id,
            self.spec.operator,
            partition,
            self.properties().output_partitioning().partition_count(),
            &StoredEntries {
                codec: &codec,
                schema: &state_schema,
                hashed: match self.spec.session {
                    Some(cols) => cols.keys(groups),
                    None => (0..groups).collect(),
                },
                constant_key: self
                    .spec
                    .session
                    .is_some_and(|cols| cols.keys(groups).is_empty()),
                max: state.key_groups.unwrap_or(1),
                indexed: Default::default(),
            },
        )?;
        // The partition's lock is taken in short synchronous sections, never across an await.
        let lock = || handle.lock().unwrap_or_else(|p| p.into_inner());
        let now = inputs.batch_timestamp_ms;
        let dedup = self.agg().aggr_expr().is_empty() || self.spec.keep_first;

        let (updated, evicted, to_emit, next_close) = if let Some(cols) = self.spec.session {
            self.update_sessions(
                cols,
                epoch_rows,
                &codec,
                &handle,
                inputs.watermark_ms,
                ctx.clone(),
            )
            .await?
        } else {
            // State TTL: drop the keys whose expiry (last update + ttl) is due, through the
            // expiry index (one range scan; keys are found by time, never by scanning state).
            let mut expired = 0u64;
            if self.spec.ttl_ms.is_some() {
                let mut part = lock();
                let due = part
                    .scan(
                        &[TTL_INDEX],
                        Some(&ttl_index_key(now.saturating_add(1), &[])),
                    )
                    .map_err(ext)?;
                let mut deletes = Vec::with_capacity(due.len() * 2);
                for (index_key, _) in due {
                    deletes.push(index_key[TTL_INDEX_PREFIX..].to_vec());
                    deletes.push(index_key);
                    expired += 1;
                }
                part.write(&[], &deletes).map_err(ext)?;
            }

            // 2–3. Stored state of the epoch's keys, merged with the new.
            let mut merged = epoch_rows;
            // Expiry index entries replaced by this epoch's updates.
            let mut stale_index: Vec<Vec<u8>> = Vec::new();
            if merged.num_rows() > 0 {
                let keys = codec.keys(&merged)?;
                let found = self.lookup(&keys, &handle)?;
                if let (Some(ttl), false) = (self.spec.ttl_ms, dedup) {
                    for (key, value) in keys.iter().zip(&found) {
                        if let Some(stamp) = value.as_deref().and_then(stamp_of) {
                            let old = ttl_index_key(stamp.saturating_add(ttl), key);
                            if old != ttl_index_key(now.saturating_add(ttl), key) {
                                stale_index.push(old);
                            }
                        }
                    }
                }
                if dedup {
                    // Deduplication (DISTINCT, GROUP BY without aggregates): a stored key is a
                    // duplicate; only keys never seen are written and emitted.
                    let new: arrow::array::BooleanArray =
                        found.iter().map(|v| Some(v.is_none())).collect();
                    merged = arrow::compute::filter_record_batch(&merged, &new)?;
                }
                let stored: Vec<Vec<u8>> = found.into_iter().flatten().collect();
                if !stored.is_empty() && !dedup {
                    let old = codec.decode(&state_schema, &stored)?;
                    let plan = over_batches(
                        self.agg(),
                        AggregateMode::PartialReduce,
                        &state_schema,
                        vec![merged, old],
                    )?;
                    merged = concat(
                        &state_schema,
                        collect_partition(&plan, 0, ctx.clone()).await?,
                    )?;
                }
            }
            let mut puts: Vec<(Vec<u8>, Vec<u8>)> = if merged.num_rows() > 0 {
                codec
                    .keys(&merged)?
                    .into_iter()
                    .zip(codec.values(&merged, now)?)
                    .collect()
            } else {
                Vec::new()
            };
            let updated = puts.len() as u64;
            // Keys are ordered by window end: remember the greatest written, so that later
            // epochs skip looking up keys of windows beyond it (they cannot be stored).
            if self.spec.window_end.is_some() {
                if let Some(last) = puts.iter().map(|(k, _)| &k[..8]).max() {
                    let known = lock().get_many(&[[HORIZON]]).map_err(ext)?.pop().flatten();
                    if known.as_deref().is_none_or(|k| k < last) {
                        puts.push((vec![HORIZON], last.to_vec()));
                    }
                }
            }
            if let Some(ttl) = self.spec.ttl_ms {
                let index: Vec<_> = puts
                    .iter()
                    .map(|(k, _)| (ttl_index_key(now.saturating_add(ttl), k), Vec::new()))
                    .collect();
                puts.extend(index);
            }
            // 4. Write; then close the windows the watermark has passed (keys are ordered by window
            // end: everything before the first key of end wm+1).
            let (evicted, to_emit, next_close) = {
                let mut part = lock();
                part.write(&puts, &stale_index).map_err(ext)?;
                // Everything below the last closing bound (`FLOOR`) is already gone: the scan
                // starts there rather than wading through the tombstones of closed windows, and
                // the closed range is dropped with one range delete.
                let floor = |part: &StatePartition| -> DfResult<Vec<u8>> {
                    let stored = part.get_many(&[[FLOOR]]).map_err(ext)?.pop().flatten();
                    Ok(stored.unwrap_or_default())
                };
                let closed = match (self.spec.window_end, inputs.watermark_ms) {
                    (Some(_), Some(wm)) => {
                        let end = if self.spec.event_time_key {
                            wm
                        } else {
                            wm.saturating_add(1)
                        };
                        let bound = window_prefix(end).to_vec().min(vec![FLOOR]);
                        let floor = floor(&part)?;
                        if floor < bound {
                            let closed = part.scan(&floor, Some(&bound)).map_err(ext)?;
                            if !closed.is_empty() {
                                part.delete_range(&floor, &bound).map_err(ext)?;
                            }
                            part.write(&[(vec![FLOOR], bound)], &[]).map_err(ext)?;
                            closed
                        } else {
                            Vec::new()
                        }
                    }
                    _ => Vec::new(),
                };
                // The window the watermark closes next: the first one still held.
                let next_close = match (self.spec.window_end, self.spec.mode) {
                    (Some(_), OutputMode::Append) => part
                        .first_key(&floor(&part)?, Some(&[FLOOR]))
                        .map_err(ext)?
                        .and_then(|k| closes_at(&k, self.spec.event_time_key)),
                    _ => None,
                };
                let (closed_keys, closed_rows): (Vec<_>, Vec<_>) = closed.into_iter().unzip();
                let rows = match self.spec.mode {
                    OutputMode::Update => (merged.num_rows() > 0).then(|| Ok(merged.clone())),
                    OutputMode::Append => {
                        (!closed_rows.is_empty()).then(|| codec.decode(&state_schema, &closed_rows))
                    }
                    OutputMode::Complete => {
                        let all: Vec<Vec<u8>> = part
                            .scan(&[], Some(&[FLOOR]))
                            .map_err(ext)?
                            .into_iter()
                            .map(|(_, v)| v)
                            .collect();
                        (!all.is_empty()).then(|| codec.decode(&state_schema, &all))
                    }
                };
                (
                    closed_keys.len() as u64 + expired,
                    rows.transpose()?,
                    next_close,
                )
            };
            (updated, evicted, to_emit, next_close)
        };
        let mut output = Vec::new();
        if let Some(rows) = to_emit {
            let plan = over_batches(self.agg(), AggregateMode::Final, &state_schema, vec![rows])?;
            for batch in collect_partition(&plan, 0, ctx.clone()).await? {
                // Same columns as the planned aggregate; align field metadata and nullability.
                output.push(RecordBatch::try_new(
                    self.schema(),
                    batch.columns().to_vec(),
                )?);
            }
        }
        let update_us = started.elapsed().as_micros() as u64;
        let restored = lock().was_restored();

        // 5. Snapshot before the task reports success: the epoch commits only with it.
        snapshot_partition(
            &handle,
            &state,
            inputs.epoch,
            OperatorStateMetrics {
                operator: self.spec.operator,
                rows_updated: updated,
                rows_evicted: evicted,
                update_us,
                restored_partitions: u64::from(restored),
                next_close_ms: next_close,
                ..Default::default()
            },
        )?;
        Ok(output)
    }
}

impl StatefulAggregateExec {
    /// The stored state of `keys`. For a windowed aggregate, keys of windows ending after
    /// the greatest window ever written are known to be absent and are not looked up — in the
    /// usual stream whose time moves forward, that is most of an epoch's keys.
    fn lookup(
        &self,
        keys: &[Vec<u8>],
        handle: &Mutex<StatePartition>,
    ) -> DfResult<Vec<Option<Vec<u8>>>> {
        let ext = |e: sluice_checkpoint::CheckpointError| DataFusionError::External(Box::new(e));
        let part = handle.lock().unwrap_or_else(|p| p.into_inner());
        if self.spec.window_end.is_none() {
            return part.get_many(keys).map_err(ext);
        }
        // No horizon recorded (a new partition, or state from before it was kept): look
        // everything up.
        let Some(horizon) = part.get_many(&[[HORIZON]]).map_err(ext)?.pop().flatten() else {
            return part.get_many(keys).map_err(ext);
        };
        let wanted: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].get(..8).is_some_and(|end| end <= &horizon[..]))
            .collect();
        let got = part
            .get_many(&wanted.iter().map(|&i| &keys[i]).collect::<Vec<_>>())
            .map_err(ext)?;
        let mut found = vec![None; keys.len()];
        for (i, value) in wanted.into_iter().zip(got) {
            found[i] = value;
        }
        Ok(found)
    }
}

/// `plan` as the final-mode (`Final` or `FinalPartitioned`) [`AggregateExec`] that `what`
/// wraps, or an error saying what it is instead.
pub(super) fn final_aggregate<'a>(
    plan: &'a Arc<dyn ExecutionPlan>,
    what: &str,
) -> DfResult<&'a AggregateExec> {
    let agg = plan.downcast_ref::<AggregateExec>().ok_or_else(|| {
        DataFusionError::Internal(format!(
            "{what} wraps an AggregateExec, not {}",
            plan.name()
        ))
    })?;
    match agg.mode() {
        AggregateMode::Final | AggregateMode::FinalPartitioned => Ok(agg),
        mode => Err(DataFusionError::NotImplemented(format!(
            "{what} over a {mode:?} aggregate"
        ))),
    }
}

/// Snapshots an operator partition as of `epoch` (before its task reports success: the epoch
/// commits only with it) and records `metrics`, completed with the state's size and the
/// snapshot's numbers.
pub(super) fn snapshot_partition(
    handle: &Mutex<StatePartition>,
    state: &TaskState,
    epoch: Epoch,
    mut metrics: OperatorStateMetrics,
) -> DfResult<()> {
    {
        let mut part = handle.lock().unwrap_or_else(|p| p.into_inner());
        let snap = part
            .snapshot(epoch, &state.store, state.durable)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        metrics.rows_total = part.estimated_keys();
        metrics.state_bytes = snap.total_bytes;
        metrics.snapshot_uploaded_bytes = snap.uploaded_bytes;
        metrics.snapshot_us = snap.elapsed_us;
    }
    state
        .metrics
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(metrics);
    Ok(())
}

/// An aggregate of `mode` with `agg`'s expressions over `input`.
pub(super) fn aggregate_over(
    agg: &AggregateExec,
    mode: AggregateMode,
    input: Arc<dyn ExecutionPlan>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    Ok(Arc::new(AggregateExec::try_new(
        mode,
        agg.group_expr().clone(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        input,
        agg.input_schema(),
    )?))
}

/// An aggregate of `mode` with `agg`'s expressions over `batches`.
pub(super) fn over_batches(
    agg: &AggregateExec,
    mode: AggregateMode,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let memory = MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None)?;
    aggregate_over(agg, mode, memory)
}

pub(super) async fn collect_partition(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
    ctx: Arc<TaskContext>,
) -> DfResult<Vec<RecordBatch>> {
    let mut stream = plan.execute(partition, ctx)?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        out.push(batch?);
    }
    Ok(out)
}

pub(super) fn concat(schema: &SchemaRef, batches: Vec<RecordBatch>) -> DfResult<RecordBatch> {
    Ok(arrow::compute::concat_batches(schema, &batches)?)
}

/// The 8-byte key prefix of a window ending at `end_ms`: big-endian with the sign bit flipped,
/// so byte order is numeric order.
pub(super) fn window_prefix(end_ms: i64) -> [u8; 8] {
    ((end_ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// The least watermark that closes the window of state `key` (which starts with its window
/// end's prefix): its end, or just past it when the key is the event time itself (a row at
/// exactly the watermark is not late).
pub(super) fn closes_at(key: &[u8], event_time_key: bool) -> Option<i64> {
    let prefix: [u8; 8] = key.get(..8)?.try_into().ok()?;
    let end = (u64::from_be_bytes(prefix) ^ (1 << 63)) as i64;
    Some(end.saturating_add(i64::from(event_time_key)))
}

/// First byte of the expiry index entries of a query with `state_ttl`. State keys never start
/// with it: they start with a window end (sign-flipped, so 0xFF only for end times beyond
/// year 2^55), or with Arrow's row format, whose first byte is a null/valid sentinel (0–2).
const TTL_INDEX: u8 = 0xFF;
/// The key holding the bound below which a windowed aggregate has closed (deleted) every key.
/// State keys sort below it; it is the upper bound of every scan over all state.
pub(super) const FLOOR: u8 = 0xFC;
/// The key holding the greatest window-end prefix a windowed aggregate has written (the
/// session and expiry indexes sort above it).
pub(super) const HORIZON: u8 = 0xFD;

/// Bytes before the state key in an expiry index key: the marker and the expiry time.
const TTL_INDEX_PREFIX: usize = 9;

/// The expiry index key of state `key` expiring at `expiry_ms` (ordered by expiry).
fn ttl_index_key(expiry_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TTL_INDEX_PREFIX + key.len());
    out.push(TTL_INDEX);
    out.extend_from_slice(&window_prefix(expiry_ms));
    out.extend_from_slice(key);
    out
}

/// The last-update time stamped on a value of a query with `state_ttl`.
fn stamp_of(value: &[u8]) -> Option<i64> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
}

/// Places a stateful aggregate's stored entries by key group when its partition count changes:
/// a state row's group is the hash of the columns its shuffle hashed (read from the value,
/// which holds the whole row); an index entry (expiry, session end) goes with the state key it
/// ends with; the window bounds are kept by every partition (the lowest closing bound, the
/// highest written window).
pub(super) struct StoredEntries<'a> {
    pub(super) codec: &'a RowCodec,
    pub(super) schema: &'a SchemaRef,
    /// The state columns the shuffle hashed (the group columns; a session's key columns).
    pub(super) hashed: Vec<usize>,
    /// A session aggregate without key columns: its shuffle hashes a constant.
    pub(super) constant_key: bool,
    pub(super) max: u32,
    /// The group of each state key seen, for the index entries (which sort after them).
    pub(super) indexed: std::cell::RefCell<std::collections::HashMap<Vec<u8>, u32>>,
}

impl Redistribution for StoredEntries<'_> {
    fn key_groups(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<u32>>, String> {
        let rows: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].0.first().is_some_and(|b| *b < FLOOR))
            .collect();
        let mut out = vec![None; entries.len()];
        if !rows.is_empty() {
            let values: Vec<Vec<u8>> = rows.iter().map(|&i| entries[i].1.clone()).collect();
            let batch = self
                .codec
                .decode(self.schema, &values)
                .map_err(|e| e.to_string())?;
            let columns: Vec<ArrayRef> = self
                .hashed
                .iter()
                .map(|&c| batch.column(c).clone())
                .collect();
            // A session aggregate without key columns hashes a constant (see `hash_on_key`).
            let columns = if self.constant_key {
                vec![Arc::new(arrow::array::Int64Array::from(vec![0; rows.len()])) as ArrayRef]
            } else {
                columns
            };
            let groups =
                key_groups_of(&columns, rows.len(), self.max).map_err(|e| e.to_string())?;
            let mut indexed = self.indexed.borrow_mut();
            for (&i, g) in rows.iter().zip(groups) {
                out[i] = Some(g);
                indexed.insert(entries[i].0.clone(), g);
            }
        }
        let indexed = self.indexed.borrow();
        for (i, (key, _)) in entries.iter().enumerate() {
            match key.first() {
                // Both indexes put 9 bytes (marker, time) before the state key.
                Some(&TTL_INDEX) | Some(&SESSION_INDEX) => {
                    let state_key = key.get(TTL_INDEX_PREFIX..).unwrap_or_default();
                    out[i] = Some(*indexed.get(state_key).ok_or_else(|| {
                        "an index entry names a state key that is not stored".to_string()
                    })?);
                }
                Some(&FLOOR) | Some(&HORIZON) => {}
                Some(_) => {}
                None => return Err("an empty state key".into()),
            }
        }
        Ok(out)
    }

    fn merge(&self, key: &[u8], kept: &[u8], other: &[u8]) -> Vec<u8> {
        match key {
            [FLOOR] => kept.min(other).to_vec(),
            _ => kept.max(other).to_vec(),
        }
    }
}

/// Encodes state rows as RocksDB keys and values.
pub(super) struct RowCodec {
    keys: Option<RowConverter>,
    groups: usize,
    values: RowConverter,
    window_end: Option<usize>,
    /// Values start with their last-update time (8 bytes, big-endian), for `state_ttl`.
    stamped: bool,
}

impl RowCodec {
    fn new(
        schema: &SchemaRef,
        groups: usize,
        window_end: Option<usize>,
        stamped: bool,
    ) -> DfResult<Self> {
        let sort = |f: &arrow::datatypes::FieldRef| SortField::new(f.data_type().clone());
        let keys = if groups == 0 {
            None
        } else {
            Some(RowConverter::new(
                schema.fields()[..groups].iter().map(sort).collect(),
            )?)
        };
        let values = RowConverter::new(schema.fields().iter().map(sort).collect())?;
        Ok(Self {
            keys,
            groups,
            values,
            window_end,
            stamped,
        })
    }

    fn keys(&self, batch: &RecordBatch) -> DfResult<Vec<Vec<u8>>> {
        let n = batch.num_rows();
        let mut out: Vec<Vec<u8>> = match self.window_end {
            Some(i) => event_millis(batch.column(i))?
                .iter()
                .map(|v| window_prefix(v.unwrap_or(i64::MIN)).to_vec())
                .collect(),
            None => vec![Vec::new(); n],
        };
        match &self.keys {
            Some(conv) => {
                let cols: Vec<ArrayRef> = batch.columns()[..self.groups].to_vec();
                let rows = conv.convert_columns(&cols)?;
                for (key, row) in out.iter_mut().zip(rows.iter()) {
                    key.extend_from_slice(row.as_ref());
                }
            }
            None => out.iter_mut().for_each(|k| k.push(0)),
        }
        Ok(out)
    }

    pub(super) fn values(&self, batch: &RecordBatch, now_ms: i64) -> DfResult<Vec<Vec<u8>>> {
        let rows = self.values.convert_columns(batch.columns())?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut v = Vec::with_capacity(r.as_ref().len() + 8);
                if self.stamped {
                    v.extend_from_slice(&now_ms.to_be_bytes());
                }
                v.extend_from_slice(r.as_ref());
                v
            })
            .collect())
    }

    pub(super) fn decode(&self, schema: &SchemaRef, values: &[Vec<u8>]) -> DfResult<RecordBatch> {
        let parser = self.values.parser();
        // State is written by this operator and checksummed by RocksDB; still, undecodable
        // bytes must be an error, not a crashed executor.
        let columns = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let skip = if self.stamped { 8 } else { 0 };
            let rows = values
                .iter()
                .map(|v| parser.parse(v.get(skip..).unwrap_or_default()));
            self.values.convert_rows(rows)
        }))
        .map_err(|_| {
            DataFusionError::Execution(
                "stored operator state does not decode with this query's state layout".into(),
            )
        })??;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

impl DisplayAs for StatefulAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StatefulAggregateExec: operator={}, mode={:?}, windowed={}",
            self.spec.operator,
            self.spec.mode,
            self.spec.window_end.is_some()
        )
    }
}

impl ExecutionPlan for StatefulAggregateExec {
    fn name(&self) -> &str {
        "StatefulAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.aggregate]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let child = children.into_iter().next().ok_or_else(|| {
            DataFusionError::Internal("StatefulAggregateExec has one child".into())
        })?;
        Ok(Arc::new(StatefulAggregateExec::try_new(self.spec, child)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let this = self.clone();
        Ok(emit_when_done(self.schema(), async move {
            this.run(partition, context).await
        }))
    }
}

#[cfg(test)]
mod tests;
