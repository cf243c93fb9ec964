//! Session windows: groups of a key's rows separated by less than a gap.
//!
//! `TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))` gives every row the
//! proto-session `[date_time, date_time + gap)` as `window_start` / `window_end`. An
//! aggregation grouped by `window_start, window_end, k...` holds sessions per key `k...` (the
//! other group columns, as with Spark's `session_window`); overlapping sessions of a key merge
//! into one `[first event, last event + gap)`. Touching sessions do not merge: two rows belong
//! to one session when their event times differ by less than the gap.
//!
//! Merging works on aggregate *state* (DataFusion's partial accumulators), so any aggregate
//! DataFusion can merge works: [`assign_sessions`] gives every state row the bounds of the
//! merged session it falls in and a `PartialReduce` aggregate then merges rows with equal
//! bounds and key. The shuffle before the final aggregate is hashed on the key columns only,
//! so all of a key's sessions meet in one partition.
//!
//! Bounded jobs run [`SessionMergeExec`]; streaming jobs keep open sessions in RocksDB (see
//! [`super::stateful`]).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};

use std::sync::Mutex;

use sluice_checkpoint::state::StatePartition;

use super::nodes::{emit_when_done, event_millis, final_properties};
use super::stateful::{
    aggregate_over, closes_at, collect_partition, concat, final_aggregate, over_batches,
    window_prefix, RowCodec, StatefulAggregateExec, FLOOR,
};
use super::OutputMode;

/// Where a session aggregate's bounds are among its group columns; the other group columns
/// are the session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionColumns {
    /// Index of `window_start`.
    pub start: usize,
    /// Index of `window_end`.
    pub end: usize,
}

impl SessionColumns {
    /// The session bounds of a final aggregate grouped by `window_start` and `window_end`.
    pub fn of(agg: &AggregateExec) -> Option<Self> {
        let groups = agg.group_expr().expr();
        let named = |want: &str| {
            groups
                .iter()
                .position(|(_, name)| name.rsplit('.').next() == Some(want))
        };
        Some(Self {
            start: named("window_start")?,
            end: named("window_end")?,
        })
    }

    /// The key columns among `groups` group columns.
    pub fn keys(&self, groups: usize) -> Vec<usize> {
        (0..groups)
            .filter(|i| *i != self.start && *i != self.end)
            .collect()
    }
}

/// The key columns of `batch` in Arrow's row format (prefix-free, ordered), one per row; empty
/// keys when there are no key columns (one session sequence for the whole stream).
pub fn key_bytes(batch: &RecordBatch, keys: &[usize]) -> DfResult<Vec<Vec<u8>>> {
    if keys.is_empty() {
        return Ok(vec![Vec::new(); batch.num_rows()]);
    }
    let conv = RowConverter::new(
        keys.iter()
            .map(|&i| SortField::new(batch.schema().field(i).data_type().clone()))
            .collect(),
    )?;
    let cols: Vec<ArrayRef> = keys.iter().map(|&i| batch.column(i).clone()).collect();
    let rows = conv.convert_columns(&cols)?;
    Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
}

/// Replaces each row's `window_start` / `window_end` with the bounds of the merged session it
/// belongs to: rows of one key whose intervals overlap (transitively) form one session from
/// the least start to the greatest end. Rows with a null bound stay as they are.
pub fn assign_sessions(
    batch: &RecordBatch,
    cols: SessionColumns,
    keys: &[usize],
) -> DfResult<RecordBatch> {
    let n = batch.num_rows();
    let raw = |i: usize| -> DfResult<Int64Array> {
        let cast = arrow::compute::cast(batch.column(i), &DataType::Int64)?;
        cast.as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("cast to Int64 gave another type".into()))
    };
    let starts = raw(cols.start)?;
    let ends = raw(cols.end)?;
    let key = key_bytes(batch, keys)?;
    let mut order: Vec<usize> = (0..n)
        .filter(|&i| starts.is_valid(i) && ends.is_valid(i))
        .collect();
    order.sort_by(|&a, &b| {
        key[a]
            .cmp(&key[b])
            .then(starts.value(a).cmp(&starts.value(b)))
    });
    let mut new_start: Vec<Option<i64>> = (0..n)
        .map(|i| starts.is_valid(i).then(|| starts.value(i)))
        .collect();
    let mut new_end: Vec<Option<i64>> = (0..n)
        .map(|i| ends.is_valid(i).then(|| ends.value(i)))
        .collect();
    let mut members: Vec<usize> = Vec::new();
    let (mut lo, mut hi) = (0i64, 0i64);
    let mut flush = |members: &mut Vec<usize>, lo: i64, hi: i64| {
        for &m in members.iter() {
            new_start[m] = Some(lo);
            new_end[m] = Some(hi);
        }
        members.clear();
    };
    for &i in &order {
        let (s, e) = (starts.value(i), ends.value(i));
        match members.last() {
            Some(&last) if key[last] == key[i] && s < hi => hi = hi.max(e),
            _ => {
                flush(&mut members, lo, hi);
                lo = s;
                hi = e;
            }
        }
        members.push(i);
    }
    flush(&mut members, lo, hi);
    let back = |values: Vec<Option<i64>>, i: usize| -> DfResult<ArrayRef> {
        let array: ArrayRef = Arc::new(Int64Array::from(values));
        Ok(arrow::compute::cast(
            &array,
            batch.schema().field(i).data_type(),
        )?)
    };
    let mut columns = batch.columns().to_vec();
    columns[cols.start] = back(new_start, cols.start)?;
    columns[cols.end] = back(new_end, cols.end)?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Merges the sessions among `rows` (aggregate state rows of `agg`): bounds assigned, then
/// rows of one session reduced to one.
pub async fn merge_sessions(
    agg: &AggregateExec,
    cols: SessionColumns,
    rows: RecordBatch,
    ctx: Arc<TaskContext>,
) -> DfResult<RecordBatch> {
    let schema = rows.schema();
    let keys = cols.keys(agg.group_expr().expr().len());
    let assigned = assign_sessions(&rows, cols, &keys)?;
    let plan = over_batches(agg, AggregateMode::PartialReduce, &schema, vec![assigned])?;
    concat(&schema, collect_partition(&plan, 0, ctx).await?)
}

/// First byte of the session-end index of a session-window aggregate (below the expiry index).
pub(super) const SESSION_INDEX: u8 = 0xFE;
/// Bytes before the state key in a session index key: the marker and the session end.
const SESSION_INDEX_PREFIX: usize = 9;

/// The session index key of state `key` of a session ending at `end_ms`.
fn session_index_key(end_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SESSION_INDEX_PREFIX + key.len());
    out.push(SESSION_INDEX);
    out.extend_from_slice(&window_prefix(end_ms));
    out.extend_from_slice(key);
    out
}

impl StatefulAggregateExec {
    /// One epoch of a session-window aggregate. Open sessions are stored under the key
    /// columns followed by the session start, so a key's sessions are one range scan; an
    /// index by session end (`SESSION_INDEX`, end, state key) finds the sessions the
    /// watermark closes. Returns (sessions written, sessions closed, rows to emit, the
    /// watermark that closes the next session in append mode).
    pub(super) async fn update_sessions(
        &self,
        cols: SessionColumns,
        epoch_rows: RecordBatch,
        codec: &RowCodec,
        handle: &Mutex<StatePartition>,
        watermark_ms: Option<i64>,
        ctx: Arc<TaskContext>,
    ) -> DfResult<(u64, u64, Option<RecordBatch>, Option<i64>)> {
        let ext = |e: sluice_checkpoint::CheckpointError| DataFusionError::External(Box::new(e));
        let lock = || handle.lock().unwrap_or_else(|p| p.into_inner());
        let schema = epoch_rows.schema();
        let keys = cols.keys(self.agg().group_expr().expr().len());
        let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut deletes: Vec<Vec<u8>> = Vec::new();
        if epoch_rows.num_rows() > 0 {
            // The open sessions of every key this epoch touches (one scan per distinct key).
            let distinct: std::collections::BTreeSet<Vec<u8>> =
                key_bytes(&epoch_rows, &keys)?.into_iter().collect();
            let mut stored_keys = Vec::new();
            let mut stored_values = Vec::new();
            {
                let part = lock();
                for key in distinct {
                    let mut to = key.clone();
                    if key.is_empty() {
                        to.push(FLOOR);
                    } else {
                        // Keys are prefix-free: every state key of this key is below it + 0xFF..
                        to.extend_from_slice(&[0xFF; 9]);
                    }
                    for (k, v) in part.scan(&key, Some(&to)).map_err(ext)? {
                        stored_keys.push(k);
                        stored_values.push(v);
                    }
                }
            }
            let mut all = vec![epoch_rows];
            if !stored_values.is_empty() {
                let stored = codec.decode(&schema, &stored_values)?;
                let ends = event_millis(stored.column(cols.end))?;
                for (i, key) in stored_keys.into_iter().enumerate() {
                    deletes.push(session_index_key(ends.value(i), &key));
                    deletes.push(key);
                }
                all.push(stored);
            }
            let merged =
                merge_sessions(self.agg(), cols, concat(&schema, all)?, ctx.clone()).await?;
            let starts = event_millis(merged.column(cols.start))?;
            let ends = event_millis(merged.column(cols.end))?;
            let values = codec.values(&merged, 0)?;
            for ((i, mut key), value) in key_bytes(&merged, &keys)?
                .into_iter()
                .enumerate()
                .zip(values)
            {
                key.extend_from_slice(&window_prefix(starts.value(i)));
                puts.push((session_index_key(ends.value(i), &key), Vec::new()));
                puts.push((key, value));
            }
            // A session that did not change is written again, not deleted.
            let written: std::collections::HashSet<&[u8]> =
                puts.iter().map(|(k, _)| k.as_slice()).collect();
            deletes.retain(|k| !written.contains(k.as_slice()));
        }
        let updated = (puts.len() / 2) as u64;
        let mut part = lock();
        part.write(&puts, &deletes).map_err(ext)?;
        // Sessions the watermark has passed are final.
        let mut closed_values = Vec::new();
        let mut closed_keys = Vec::new();
        if let Some(wm) = watermark_ms {
            let mut to = vec![SESSION_INDEX];
            to.extend_from_slice(&window_prefix(wm.saturating_add(1)));
            let index: Vec<Vec<u8>> = part
                .scan(&[SESSION_INDEX], Some(&to))
                .map_err(ext)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let state_keys: Vec<Vec<u8>> = index
                .iter()
                .map(|k| k[SESSION_INDEX_PREFIX..].to_vec())
                .collect();
            closed_values = part
                .get_many(&state_keys)
                .map_err(ext)?
                .into_iter()
                .flatten()
                .collect();
            closed_keys = index.into_iter().chain(state_keys).collect();
            part.write(&[], &closed_keys).map_err(ext)?;
        }
        let evicted = (closed_keys.len() / 2) as u64;
        let next_close = if self.spec.mode == OutputMode::Append {
            part.first_key(&[SESSION_INDEX], Some(&[SESSION_INDEX + 1]))
                .map_err(ext)?
                .and_then(|k| closes_at(k.get(1..)?, false))
        } else {
            None
        };
        let rows = match self.spec.mode {
            OutputMode::Append => (!closed_values.is_empty()).then_some(closed_values),
            _ => {
                let all: Vec<Vec<u8>> = part
                    .scan(&[], Some(&[FLOOR]))
                    .map_err(ext)?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                (!all.is_empty()).then_some(all)
            }
        };
        let rows = rows.map(|r| codec.decode(&schema, &r)).transpose()?;
        Ok((updated, evicted, rows, next_close))
    }
}

/// Makes the shuffle below a session aggregate hash on the session key only (not on the
/// per-row bounds), so every session of a key is merged in one partition. Without key
/// columns, all rows go to one partition.
pub fn hash_on_key(input: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut done = false;
    let plan = input.transform_down(|node| {
        if done {
            return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
        }
        let Some(rep) = node.downcast_ref::<RepartitionExec>() else {
            return Ok(Transformed::no(node));
        };
        let Partitioning::Hash(exprs, partitions) = rep.partitioning().clone() else {
            return Ok(Transformed::no(node));
        };
        done = true;
        let mut keyed: Vec<Arc<dyn PhysicalExpr>> = exprs
            .into_iter()
            .filter(|e| {
                e.downcast_ref::<Column>().is_none_or(|c| {
                    let name = c.name().rsplit('.').next().unwrap_or_default();
                    name != "window_start" && name != "window_end"
                })
            })
            .collect();
        if keyed.is_empty() {
            keyed.push(Arc::new(Literal::new(ScalarValue::Int64(Some(0)))));
        }
        let new =
            RepartitionExec::try_new(rep.input().clone(), Partitioning::Hash(keyed, partitions))?;
        Ok(Transformed::new(
            Arc::new(new) as _,
            true,
            TreeNodeRecursion::Jump,
        ))
    })?;
    Ok(plan.data)
}

/// A bounded job's session aggregate: the final aggregate of one partition, with sessions
/// merged between its partial and final steps.
#[derive(Debug, Clone)]
pub struct SessionMergeExec {
    /// Where the bounds are.
    pub cols: SessionColumns,
    /// DataFusion's final aggregate, whose input is this operator's input.
    pub aggregate: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
}

impl SessionMergeExec {
    /// Wraps `aggregate`, a final-mode [`AggregateExec`] grouped by the session bounds.
    pub fn try_new(cols: SessionColumns, aggregate: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        final_aggregate(&aggregate, "session windows")?;
        let props = final_properties(&aggregate);
        Ok(Self {
            cols,
            aggregate,
            props,
        })
    }

    fn agg(&self) -> &AggregateExec {
        self.aggregate
            .downcast_ref::<AggregateExec>()
            .expect("checked in try_new")
    }

    async fn run(&self, partition: usize, ctx: Arc<TaskContext>) -> DfResult<Vec<RecordBatch>> {
        let agg = self.agg();
        let reduce = aggregate_over(agg, AggregateMode::PartialReduce, agg.input().clone())?;
        let schema = reduce.schema();
        let rows = concat(
            &schema,
            collect_partition(&reduce, partition, ctx.clone()).await?,
        )?;
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let merged = merge_sessions(agg, self.cols, rows, ctx.clone()).await?;
        let plan = over_batches(agg, AggregateMode::Final, &schema, vec![merged])?;
        collect_partition(&plan, 0, ctx)
            .await?
            .into_iter()
            .map(|b| Ok(RecordBatch::try_new(self.schema(), b.columns().to_vec())?))
            .collect()
    }
}

impl DisplayAs for SessionMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SessionMergeExec")
    }
}

impl ExecutionPlan for SessionMergeExec {
    fn name(&self) -> &str {
        "SessionMergeExec"
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
        let child = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("SessionMergeExec has one child".into()))?;
        Ok(Arc::new(SessionMergeExec::try_new(self.cols, child)?))
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
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};

    fn batch(rows: &[(&str, i64)], gap: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("window_start", DataType::Int64, true),
            Field::new("window_end", DataType::Int64, true),
            Field::new("user", DataType::Utf8, true),
        ]));
        let starts: Int64Array = rows.iter().map(|r| Some(r.1)).collect();
        let ends: Int64Array = rows.iter().map(|r| Some(r.1 + gap)).collect();
        let users: StringArray = rows.iter().map(|r| Some(r.0)).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(starts), Arc::new(ends), Arc::new(users)],
        )
        .unwrap()
    }

    fn bounds(b: &RecordBatch) -> Vec<(i64, i64)> {
        let s = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let e = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        (0..b.num_rows())
            .map(|i| (s.value(i), e.value(i)))
            .collect()
    }

    #[test]
    fn rows_closer_than_the_gap_share_a_session_per_key() {
        let cols = SessionColumns { start: 0, end: 1 };
        // a: 0, 5, 12 chain (gap 10), then 30 alone (30 - 12 = 18 >= 10); b: 20 touches a's
        // first session's end (22) but is another key; c: 0 and 10 only touch, no merge.
        let b = batch(
            &[
                ("a", 12),
                ("a", 0),
                ("b", 20),
                ("a", 30),
                ("a", 5),
                ("c", 0),
                ("c", 10),
            ],
            10,
        );
        let out = assign_sessions(&b, cols, &[2]).unwrap();
        assert_eq!(
            bounds(&out),
            vec![
                (0, 22),
                (0, 22),
                (20, 30),
                (30, 40),
                (0, 22),
                (0, 10),
                (10, 20)
            ]
        );
        // Without key columns everything is one sequence: 0..22 absorbs b's 20, and 30 only
        // touches that session's end.
        let out = assign_sessions(&b, cols, &[]).unwrap();
        assert_eq!(bounds(&out)[2], (0, 30));
        assert_eq!(bounds(&out)[3], (30, 40));
    }
}
