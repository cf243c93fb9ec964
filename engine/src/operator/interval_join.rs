//! Interval joins of two streams: rows of both sides are joined as soon as both are there, on
//! the join keys and a bounded difference of their event times, and each side's rows are kept
//! in RocksDB only while a row of the other side may still arrive to match them.
//!
//! `ON l.k = r.k AND l.t BETWEEN r.t - INTERVAL 'a' AND r.t + INTERVAL 'b'` (or `>=`, `>`,
//! `<=`, `<` in any arrangement, with constant intervals) is an interval join when `l.t` and
//! `r.t` are event times — a watermarked source column or the end of a closed window — as in
//! Flink's interval join. Nexmark q7 joins the bids with their 10-second window's maximum
//! this way. The planner keeps DataFusion's hash join (both sides shuffled by the join keys;
//! its filter holds the whole condition) and wraps it in [`IntervalJoinExec`]. Per epoch and
//! partition, with `lower ≤ l.t − r.t ≤ upper` the bounds the condition admits:
//! 1. the epoch's right rows are stored under (side, time, epoch, partition, row number);
//! 2. the epoch's left rows, ~32 MiB at a time, are joined with the stored right rows whose
//!    time can match (one range scan: old rows and this epoch's), then stored;
//! 3. the stored left rows of earlier epochs are joined with this epoch's right rows (range
//!    scans around each chunk of them), so every pair with a new row is joined exactly once;
//! 4. rows no future row can match are dropped: future rows are at or after the watermark
//!    (later source rows behind it are dropped as late; windows close after it), so a left
//!    row goes once `l.t < watermark + lower`, a right row once `r.t < watermark − upper`.
//!
//! Matches are emitted in the epoch both rows have arrived in, not when the watermark passes;
//! only inner joins are interval joins (an outer one would have to wait for the watermark to
//! emit a row's absence of matches).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinSide, JoinType, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::utils::ColumnIndex;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::state::StatePartition;
use sluice_checkpoint::Epoch;

use super::key_groups::open_state;
use super::nodes::{emit_when_done, event_millis, final_properties, task_inputs};
use super::stateful::{snapshot_partition, window_prefix, OperatorStateMetrics};
use super::window_join::{join_batches, Codec, Entry, JoinEntries, JoinSide as Side};

/// The planned shape of an interval join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalJoinSpec {
    /// Operator id within the query.
    pub operator: u32,
    /// Index of the event-time column in the left input.
    pub left_time: usize,
    /// Index of the event-time column in the right input.
    pub right_time: usize,
    /// The least `left time − right time` (milliseconds) the join's condition admits, less a
    /// millisecond (strict comparisons and sub-millisecond times only keep rows longer).
    pub lower_ms: i64,
    /// The greatest `left time − right time` (milliseconds) it admits, plus a millisecond.
    pub upper_ms: i64,
}

/// The time bounds a join's condition puts on its two sides: the columns and the least and
/// greatest `left − right` difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// The left input's time column.
    pub left_time: usize,
    /// The right input's time column.
    pub right_time: usize,
    /// Least difference, milliseconds (widened, see [`IntervalJoinSpec::lower_ms`]).
    pub lower_ms: i64,
    /// Greatest difference, milliseconds (widened).
    pub upper_ms: i64,
}

const NANOS_PER_MS: i64 = 1_000_000;

impl TimeBounds {
    /// The bounds of `join`'s filter: `Ok(None)` when it compares no column of one side with
    /// one of the other; an error naming what is missing when it bounds them on one side only
    /// or compares more than one pair of columns.
    pub fn of(join: &HashJoinExec) -> Result<Option<Self>, String> {
        let Some(filter) = join.filter() else {
            return Ok(None);
        };
        let cols = filter.column_indices();
        let name = |side: JoinSide, index: usize| {
            let schema = match side {
                JoinSide::Left => join.left().schema(),
                _ => join.right().schema(),
            };
            schema
                .fields()
                .get(index)
                .map(|f| f.name().clone())
                .unwrap_or_default()
        };
        let mut pair: Option<(usize, usize)> = None;
        let (mut lower, mut upper): (Option<i64>, Option<i64>) = (None, None);
        for conjunct in split_conjunction(filter.expression()) {
            let Some(cmp) = conjunct.downcast_ref::<BinaryExpr>() else {
                continue;
            };
            let op = *cmp.op();
            if !matches!(
                op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) {
                continue;
            }
            let is_time = |(side, index, _): &(JoinSide, usize, i64)| {
                let schema = match side {
                    JoinSide::Left => join.left().schema(),
                    _ => join.right().schema(),
                };
                schema.fields().get(*index).is_some_and(|f| {
                    matches!(f.data_type(), arrow::datatypes::DataType::Timestamp(..))
                })
            };
            let time = |e| linear(e, cols).filter(is_time);
            let (Some(a), Some(b)) = (time(cmp.left()), time(cmp.right())) else {
                continue;
            };
            // As `left + l_off  op  right + r_off`.
            let (l, r, op) = match (a.0, b.0) {
                (JoinSide::Left, JoinSide::Right) => (a, b, op),
                (JoinSide::Right, JoinSide::Left) => match op.swap() {
                    Some(swapped) => (b, a, swapped),
                    None => continue,
                },
                _ => continue,
            };
            if let Some((lt, rt)) = pair.filter(|&p| p != (l.1, r.1)) {
                return Err(format!(
                    "an interval join compares one time column of each side; this one compares {} with {} and {} with {}",
                    name(JoinSide::Left, lt),
                    name(JoinSide::Right, rt),
                    name(JoinSide::Left, l.1),
                    name(JoinSide::Right, r.1)
                ));
            }
            pair = Some((l.1, r.1));
            // left − right  op  r_off − l_off
            let Some(k) = r.2.checked_sub(l.2) else {
                continue;
            };
            match op {
                Operator::Gt | Operator::GtEq => lower = Some(lower.map_or(k, |x| x.max(k))),
                _ => upper = Some(upper.map_or(k, |x| x.min(k))),
            }
        }
        let Some((left_time, right_time)) = pair else {
            return Ok(None);
        };
        let (l, r) = (
            name(JoinSide::Left, left_time),
            name(JoinSide::Right, right_time),
        );
        match (lower, upper) {
            (Some(lower), Some(upper)) => Ok(Some(Self {
                left_time,
                right_time,
                lower_ms: lower.div_euclid(NANOS_PER_MS).saturating_sub(1),
                upper_ms: (-(-upper).div_euclid(NANOS_PER_MS)).saturating_add(1),
            })),
            (None, _) => Err(format!(
                "an interval join bounds its time difference on both sides: add a lower bound, e.g. left.{l} >= right.{r} - INTERVAL '10' SECOND (or left.{l} BETWEEN right.{r} - INTERVAL ... AND right.{r} + INTERVAL ...), left and right being the join's two sides"
            )),
            (_, None) => Err(format!(
                "an interval join bounds its time difference on both sides: add an upper bound, e.g. left.{l} <= right.{r} + INTERVAL '10' SECOND (or left.{l} BETWEEN right.{r} - INTERVAL ... AND right.{r} + INTERVAL ...), left and right being the join's two sides"
            )),
        }
    }
}

/// `expr` as one side's column plus a constant offset in nanoseconds.
fn linear(expr: &Arc<dyn PhysicalExpr>, cols: &[ColumnIndex]) -> Option<(JoinSide, usize, i64)> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        let at = cols.get(c.index())?;
        return Some((at.side, at.index, 0));
    }
    if let Some(cast) = expr.downcast_ref::<CastExpr>() {
        // A cast between timestamp units keeps the instant (to within the widened bounds).
        return matches!(cast.cast_type(), arrow::datatypes::DataType::Timestamp(..))
            .then(|| linear(cast.expr(), cols))
            .flatten();
    }
    let sum = expr.downcast_ref::<BinaryExpr>()?;
    match sum.op() {
        Operator::Plus => {
            if let Some(c) = constant_nanos(sum.right()) {
                let (side, index, off) = linear(sum.left(), cols)?;
                Some((side, index, off.checked_add(c)?))
            } else {
                let c = constant_nanos(sum.left())?;
                let (side, index, off) = linear(sum.right(), cols)?;
                Some((side, index, off.checked_add(c)?))
            }
        }
        Operator::Minus => {
            let c = constant_nanos(sum.right())?;
            let (side, index, off) = linear(sum.left(), cols)?;
            Some((side, index, off.checked_sub(c)?))
        }
        _ => None,
    }
}

/// A literal interval or duration of fixed length, in nanoseconds (months have none).
fn constant_nanos(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match expr.downcast_ref::<Literal>()?.value() {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => i64::from(v.days)
            .checked_mul(DAY)?
            .checked_add(i64::from(v.milliseconds).checked_mul(NANOS_PER_MS)?),
        ScalarValue::DurationSecond(Some(v)) => v.checked_mul(1_000_000_000),
        ScalarValue::DurationMillisecond(Some(v)) => v.checked_mul(NANOS_PER_MS),
        ScalarValue::DurationMicrosecond(Some(v)) => v.checked_mul(1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(*v),
        _ => None,
    }
}

/// A streaming interval join (see the module documentation).
#[derive(Debug, Clone)]
pub struct IntervalJoinExec {
    /// What it is.
    pub spec: IntervalJoinSpec,
    /// DataFusion's partitioned hash join; its inputs are this operator's inputs.
    pub join: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
}

/// Bytes of rows joined at a time: a chunk of one side's new rows, and of stored rows read
/// to match them.
const CHUNK_BYTES: usize = 32 << 20;

const LEFT: u8 = 0;
const RIGHT: u8 = 1;
/// Where a stored key's epoch starts: after the side and the time.
const EPOCH_AT: usize = 9;

/// The first key of `side`'s rows at `time_ms` or later.
fn time_key(side: u8, time_ms: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(side);
    key.extend_from_slice(&window_prefix(time_ms));
    key
}

/// The key bounds of `side`'s rows with `from_ms <= time <= to_ms`.
fn time_range(side: u8, from_ms: i64, to_ms: i64) -> (Vec<u8>, Vec<u8>) {
    let end = match to_ms.checked_add(1) {
        Some(after) => time_key(side, after),
        None => vec![side + 1],
    };
    (time_key(side, from_ms), end)
}

fn epoch_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.get(EPOCH_AT..EPOCH_AT + 8)?.try_into().ok()?,
    ))
}

/// The next ~`CHUNK_BYTES` of stored rows from `from` up to `to`, moving `from` past them;
/// `None` when none is left.
fn next_chunk(
    part: &std::sync::Mutex<StatePartition>,
    from: &mut Vec<u8>,
    to: &[u8],
) -> DfResult<Option<Vec<Entry>>> {
    let chunk = part
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .scan_limited(from, Some(to), CHUNK_BYTES)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let Some((last, _)) = chunk.last() else {
        return Ok(None);
    };
    *from = last.clone();
    from.push(0);
    Ok(Some(chunk))
}

/// One side as the join reads it: its input, how rows are stored, its time column.
struct SideOf {
    codec: Codec,
    schema: SchemaRef,
    time: usize,
    side: u8,
}

impl SideOf {
    /// The rows' entries keyed (side, time, epoch, partition, row number) — unique however
    /// partitions are later merged — for the rows whose time is at least `keep_from` (the
    /// others can match no future row); rows without a time match nothing and are skipped.
    fn entries(
        &self,
        batch: &RecordBatch,
        (epoch, partition, first_row): (Epoch, u32, u64),
        keep_from: i64,
    ) -> DfResult<Vec<Entry>> {
        let times = event_millis(batch.column(self.time))?;
        let rows = self.codec.rows.convert_columns(batch.columns())?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for (i, row) in rows.iter().enumerate() {
            if times.is_null(i) || times.value(i) < keep_from {
                continue;
            }
            let mut key = time_key(self.side, times.value(i));
            key.extend_from_slice(&epoch.0.to_be_bytes());
            key.extend_from_slice(&partition.to_be_bytes());
            key.extend_from_slice(&(first_row + i as u64).to_be_bytes());
            out.push((key, row.as_ref().to_vec()));
        }
        Ok(out)
    }

    /// The least and greatest time of `batch`'s rows, if any has one.
    fn span(&self, batch: &RecordBatch) -> DfResult<Option<(i64, i64)>> {
        let times = event_millis(batch.column(self.time))?;
        Ok(arrow::compute::min(&times).zip(arrow::compute::max(&times)))
    }

    fn decode(&self, entries: &[Entry]) -> DfResult<RecordBatch> {
        let values: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.clone()).collect();
        self.codec.decode(&self.schema, &values)
    }
}

impl IntervalJoinExec {
    /// Wraps `join`, a partitioned inner [`HashJoinExec`].
    pub fn try_new(spec: IntervalJoinSpec, join: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        let hash = join.downcast_ref::<HashJoinExec>().ok_or_else(|| {
            DataFusionError::Internal("an interval join wraps a HashJoinExec".into())
        })?;
        if *hash.partition_mode() != PartitionMode::Partitioned {
            return Err(DataFusionError::NotImplemented(format!(
                "an interval join planned in {:?} mode",
                hash.partition_mode()
            )));
        }
        if *hash.join_type() != JoinType::Inner {
            return Err(DataFusionError::NotImplemented(format!(
                "a {} interval join (interval joins are inner joins)",
                hash.join_type()
            )));
        }
        let props = final_properties(&join);
        Ok(Self { spec, join, props })
    }

    fn hash(&self) -> &HashJoinExec {
        self.join
            .downcast_ref::<HashJoinExec>()
            .expect("checked in try_new")
    }

    async fn run(&self, partition: usize, ctx: Arc<TaskContext>) -> DfResult<Vec<RecordBatch>> {
        let inputs = task_inputs(&ctx)?;
        let state = inputs.state.clone().ok_or_else(|| {
            DataFusionError::Internal("a stateful task was sent without its state".into())
        })?;
        let started = Instant::now();
        let hash = self.hash();
        let (left_input, right_input) = (hash.left().clone(), hash.right().clone());
        let side = |input: &Arc<dyn ExecutionPlan>, time, side| -> DfResult<SideOf> {
            let schema = input.schema();
            Ok(SideOf {
                codec: Codec::new(&schema)?,
                schema,
                time,
                side,
            })
        };
        let left = side(&left_input, self.spec.left_time, LEFT)?;
        let right = side(&right_input, self.spec.right_time, RIGHT)?;
        let (lower, upper) = (self.spec.lower_ms, self.spec.upper_ms);
        let ext = |e: sluice_checkpoint::CheckpointError| DataFusionError::External(Box::new(e));
        let (left_on, right_on): (Vec<_>, Vec<_>) = hash.on().iter().cloned().unzip();
        let handle = open_state(
            &state,
            &inputs.query_id,
            self.spec.operator,
            partition,
            self.properties().output_partitioning().partition_count(),
            &JoinEntries {
                sides: [
                    Side(&left.codec, &left.schema, left_on),
                    Side(&right.codec, &right.schema, right_on),
                ],
                max: state.key_groups.unwrap_or(1),
                side_at: 0,
            },
        )?;
        let write = |puts: &[Entry]| {
            handle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(puts, &[])
                .map_err(ext)
        };
        let epoch = inputs.epoch;
        let at = |row| (epoch, partition as u32, row);
        let mut output = Vec::new();
        let mut updated = 0u64;

        // 1. This epoch's right rows, stored (all of them: step 2 reads them back).
        let mut stream = right_input.execute(partition, ctx.clone())?;
        let (mut row, mut new_right) = (0u64, 0u64);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let puts = right.entries(&batch, at(row), i64::MIN)?;
            row += batch.num_rows() as u64;
            new_right += puts.len() as u64;
            write(&puts)?;
        }
        updated += new_right;

        // 2. This epoch's left rows, a chunk at a time, joined with every stored right row
        // their times can match, then stored (those a future right row can still match).
        let keep_left = inputs
            .watermark_ms
            .map_or(i64::MIN, |wm| wm.saturating_add(lower));
        let mut stream = left_input.execute(partition, ctx.clone())?;
        let (mut row, mut pending, mut bytes) = (0u64, Vec::new(), 0usize);
        loop {
            let next = stream.next().await.transpose()?;
            let done = next.is_none();
            if let Some(batch) = next {
                bytes += batch.get_array_memory_size();
                pending.push(batch);
            }
            if pending.is_empty() && done {
                break;
            }
            if pending.is_empty() || (!done && bytes < CHUNK_BYTES) {
                continue;
            }
            let chunk = concat_batches(&left.schema, &pending)?;
            pending.clear();
            bytes = 0;
            if let Some((first, last)) = left.span(&chunk)? {
                // right time ∈ [left time − upper, left time − lower]
                let (mut from, to) = time_range(
                    RIGHT,
                    first.saturating_sub(upper),
                    last.saturating_sub(lower),
                );
                while let Some(stored) = next_chunk(&handle, &mut from, &to)? {
                    let stored = right.decode(&stored)?;
                    self.join_into([chunk.clone(), stored], &ctx, &mut output)
                        .await?;
                }
            }
            let puts = left.entries(&chunk, at(row), keep_left)?;
            row += chunk.num_rows() as u64;
            updated += puts.len() as u64;
            write(&puts)?;
            if done {
                break;
            }
        }

        // 3. Earlier epochs' left rows joined with this epoch's right rows.
        let (mut from, to) = (vec![RIGHT], [RIGHT + 1]);
        if new_right == 0 {
            from = to.to_vec();
        }
        while let Some(stored) = next_chunk(&handle, &mut from, &to)? {
            let new: Vec<Entry> = stored
                .into_iter()
                .filter(|(k, _)| epoch_of(k) == Some(epoch.0))
                .collect();
            let new = right.decode(&new)?;
            let Some((first, last)) = right.span(&new)? else {
                continue;
            };
            // left time ∈ [right time + lower, right time + upper]
            let (mut from, to) = time_range(
                LEFT,
                first.saturating_add(lower),
                last.saturating_add(upper),
            );
            while let Some(stored) = next_chunk(&handle, &mut from, &to)? {
                let old: Vec<Entry> = stored
                    .into_iter()
                    .filter(|(k, _)| epoch_of(k) != Some(epoch.0))
                    .collect();
                if !old.is_empty() {
                    let old = left.decode(&old)?;
                    self.join_into([old, new.clone()], &ctx, &mut output)
                        .await?;
                }
            }
        }

        // 4. Rows no future row can match.
        if let Some(wm) = inputs.watermark_ms {
            let mut part = handle.lock().unwrap_or_else(|p| p.into_inner());
            part.delete_range(&[LEFT], &time_key(LEFT, wm.saturating_add(lower)))
                .map_err(ext)?;
            part.delete_range(&[RIGHT], &time_key(RIGHT, wm.saturating_sub(upper)))
                .map_err(ext)?;
        }
        let restored = handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .was_restored();
        snapshot_partition(
            &handle,
            &state,
            epoch,
            OperatorStateMetrics {
                operator: self.spec.operator,
                rows_updated: updated,
                update_us: started.elapsed().as_micros() as u64,
                restored_partitions: u64::from(restored),
                ..Default::default()
            },
        )?;
        Ok(output)
    }
}

impl IntervalJoinExec {
    /// Joins one batch of each side (either may be empty) and appends the matches.
    async fn join_into(
        &self,
        sides: [RecordBatch; 2],
        ctx: &Arc<TaskContext>,
        output: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        if sides.iter().any(|b| b.num_rows() == 0) {
            return Ok(());
        }
        join_batches(&self.join, sides, &self.schema(), ctx, output).await
    }
}

impl DisplayAs for IntervalJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.spec;
        write!(
            f,
            "IntervalJoinExec: operator={}, left_time={}, right_time={}, left-right in [{} ms, {} ms]",
            s.operator, s.left_time, s.right_time, s.lower_ms, s.upper_ms
        )
    }
}

impl ExecutionPlan for IntervalJoinExec {
    fn name(&self) -> &str {
        "IntervalJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.join]
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
        let child = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("IntervalJoinExec has one child".into()))?;
        Ok(Arc::new(IntervalJoinExec::try_new(self.spec, child)?))
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
mod tests {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The time bounds of the hash join DataFusion plans for `l JOIN r ON l.k = r.k AND cond`.
    async fn bounds(cond: &str) -> Result<Option<TimeBounds>, String> {
        let ctx = SessionContext::new_with_config(super::super::session_config(2));
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false),
            Field::new("u", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        ]));
        for name in ["l", "r"] {
            let table = MemTable::try_new(schema.clone(), vec![vec![]]).unwrap();
            ctx.register_table(name, Arc::new(table)).unwrap();
        }
        let plan = ctx
            .sql(&format!(
                "SELECT l.v, r.v FROM l JOIN r ON l.k = r.k AND {cond}"
            ))
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<&HashJoinExec> {
            plan.downcast_ref::<HashJoinExec>()
                .or_else(|| plan.children().into_iter().find_map(find))
        }
        TimeBounds::of(find(&plan).expect("a hash join"))
    }

    fn widened(lower_ms: i64, upper_ms: i64) -> Option<TimeBounds> {
        Some(TimeBounds {
            left_time: 2,
            right_time: 2,
            lower_ms: lower_ms - 1,
            upper_ms: upper_ms + 1,
        })
    }

    #[tokio::test]
    async fn time_bounds_are_read_from_any_arrangement_of_the_condition() {
        let between = "l.t BETWEEN r.t - INTERVAL '10' SECOND AND r.t + INTERVAL '5' SECOND";
        assert_eq!(bounds(between).await, Ok(widened(-10_000, 5_000)));
        // The right side's column on the left of the comparisons, strict ones: the bounds
        // are still those of l.t − r.t.
        let swapped = "r.t > l.t - INTERVAL '1' MINUTE AND r.t <= l.t";
        assert_eq!(bounds(swapped).await, Ok(widened(0, 60_000)));
        // Offsets on both sides, and the tighter of two bounds.
        let both = "l.t + INTERVAL '2' SECOND >= r.t AND l.t <= r.t + INTERVAL '3' SECOND \
                    AND l.t <= r.t + INTERVAL '1' HOUR";
        assert_eq!(bounds(both).await, Ok(widened(-2_000, 3_000)));
        // Nexmark q7: a bid in the 10 seconds before its window's end.
        let q7 = "l.t >= r.t - INTERVAL '10' SECOND AND l.t < r.t";
        assert_eq!(bounds(q7).await, Ok(widened(-10_000, 0)));
    }

    #[tokio::test]
    async fn conditions_without_both_time_bounds_say_what_is_missing() {
        // Comparisons of columns that are not times bound no time.
        assert_eq!(bounds("l.v > r.v").await, Ok(None));
        let err = bounds("l.t >= r.t").await.unwrap_err();
        assert!(err.contains("add an upper bound"), "{err}");
        let err = bounds("l.t < r.t + INTERVAL '1' DAY").await.unwrap_err();
        assert!(err.contains("add a lower bound"), "{err}");
        // A month has no fixed length: that comparison bounds nothing.
        let err = bounds("l.t >= r.t - INTERVAL '1' MONTH AND l.t <= r.t")
            .await
            .unwrap_err();
        assert!(err.contains("add a lower bound"), "{err}");
        let err = bounds("l.t >= r.t AND l.t <= r.t + INTERVAL '1' SECOND AND l.u <= r.t").await;
        assert!(err.is_err_and(|e| e.contains("compares one time column of each side")));
    }
}
