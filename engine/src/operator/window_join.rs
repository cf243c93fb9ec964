//! Window joins of two streams: rows of both sides are kept in RocksDB until the watermark
//! passes their window's end, then the window is joined once, complete, and dropped.
//!
//! A join of two streams in a streaming query must equate the two sides' `window_end`
//! (windows from `TUMBLE`/`HOP`/`SESSION` on each side), as Flink's window join does. The
//! planner keeps DataFusion's hash join (both sides shuffled by the join keys, which include
//! the window) and wraps it in [`WindowJoinExec`]. Per epoch and partition it
//! 1. stores the epoch's rows of both sides under (window end, side, epoch, row number) —
//!    deterministic keys, so a replayed epoch rewrites the same entries,
//! 2. reads the rows of every window the watermark has passed (one ordered range scan),
//!    runs DataFusion's join over them and deletes them.
//!
//! Because a window is joined only when both sides are complete, every join type DataFusion
//! plans as a hash join (inner, left/right/full outer, semi, anti) gives final rows, emitted
//! once. Rows behind the watermark are dropped at the source like any late row.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::state::{Redistribution, StatePartition};

use super::key_groups::{key_groups_of, open_state};
use super::nodes::{emit_when_done, event_millis, final_properties, task_inputs};
use super::stateful::{
    closes_at, collect_partition, snapshot_partition, window_prefix, OperatorStateMetrics, FLOOR,
};

/// The planned shape of a window join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowJoinSpec {
    /// Operator id within the query.
    pub operator: u32,
    /// Index of `window_end` in the left input.
    pub left_end: usize,
    /// Index of `window_end` in the right input.
    pub right_end: usize,
}

impl WindowJoinSpec {
    /// The window-end columns of a hash join that equates them, if it does.
    pub fn of(join: &HashJoinExec) -> Option<(usize, usize)> {
        let is_end = |e: &Arc<dyn PhysicalExpr>| {
            e.downcast_ref::<Column>()
                .filter(|c| c.name().rsplit('.').next() == Some("window_end"))
                .map(|c| c.index())
        };
        join.on()
            .iter()
            .find_map(|(l, r)| Some((is_end(l)?, is_end(r)?)))
    }
}

/// A streaming window join (see the module documentation).
#[derive(Debug, Clone)]
pub struct WindowJoinExec {
    /// What it is.
    pub spec: WindowJoinSpec,
    /// DataFusion's partitioned hash join; its inputs are this operator's inputs.
    pub join: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
}

/// Stored bytes of closed windows joined at a time (whole windows: a chunk ends with the
/// window its last entry belongs to).
const CLOSE_CHUNK_BYTES: usize = 32 << 20;

const LEFT: u8 = 0;
const RIGHT: u8 = 1;

impl WindowJoinExec {
    /// Wraps `join`, a partitioned [`HashJoinExec`].
    pub fn try_new(spec: WindowJoinSpec, join: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        let hash = join.downcast_ref::<HashJoinExec>().ok_or_else(|| {
            DataFusionError::Internal("a window join wraps a HashJoinExec".into())
        })?;
        if *hash.partition_mode() != PartitionMode::Partitioned {
            return Err(DataFusionError::NotImplemented(format!(
                "a window join planned in {:?} mode",
                hash.partition_mode()
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
        let (left, right) = (hash.left().clone(), hash.right().clone());
        let (left_schema, right_schema) = (left.schema(), right.schema());
        let left_codec = Codec::new(&left_schema)?;
        let right_codec = Codec::new(&right_schema)?;

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
                    JoinSide(&left_codec, &left_schema, left_on),
                    JoinSide(&right_codec, &right_schema, right_on),
                ],
                max: state.key_groups.unwrap_or(1),
                side_at: 8,
            },
        )?;
        let lock = || handle.lock().unwrap_or_else(|p| p.into_inner());
        // Each side's rows go to state batch by batch as they arrive: an epoch that reads a
        // large backlog never holds all of it in memory.
        let at = (inputs.epoch, partition as u32);
        let mut updated = 0u64;
        for (input, codec, end, side) in [
            (&left, &left_codec, self.spec.left_end, LEFT),
            (&right, &right_codec, self.spec.right_end, RIGHT),
        ] {
            let mut stream = input.execute(partition, ctx.clone())?;
            let mut row = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let mut puts = Vec::with_capacity(batch.num_rows());
                codec.entries(&batch, end, side, (at, row), &mut puts)?;
                row += batch.num_rows() as u64;
                updated += puts.len() as u64;
                lock().write(&puts, &[]).map_err(ext)?;
            }
        }
        // The windows the watermark has passed are joined and dropped a bounded chunk of
        // whole windows at a time (keys are ordered by window end, then side).
        let mut output = Vec::new();
        let mut evicted = 0u64;
        if let Some(wm) = inputs.watermark_ms {
            let bound = window_prefix(wm.saturating_add(1)).to_vec();
            let mut from = Vec::new();
            loop {
                let taken = take_closed(&mut lock(), &from, &bound, CLOSE_CHUNK_BYTES);
                let Some((closed, next)) = taken.map_err(ext)? else {
                    break;
                };
                from = next;
                evicted += closed.len() as u64;
                self.join_closed(closed, [&left_codec, &right_codec], &ctx, &mut output)
                    .await?;
            }
        }
        let next_close = lock()
            .first_key(&[], Some(&[FLOOR]))
            .map_err(ext)?
            .and_then(|k| closes_at(&k, false));
        let restored = handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .was_restored();
        snapshot_partition(
            &handle,
            &state,
            inputs.epoch,
            OperatorStateMetrics {
                operator: self.spec.operator,
                rows_updated: updated,
                rows_evicted: evicted,
                update_us: started.elapsed().as_micros() as u64,
                restored_partitions: u64::from(restored),
                next_close_ms: next_close,
                ..Default::default()
            },
        )?;
        Ok(output)
    }
}

/// A stored key and value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// Takes (reads and deletes) the stored entries of the next closed windows — keys from `from`
/// up to `bound` — about `max_bytes` of them but always whole windows; returns them with the
/// key the next chunk starts at, or `None` when no closed window is left.
fn take_closed(
    part: &mut StatePartition,
    from: &[u8],
    bound: &[u8],
    max_bytes: usize,
) -> sluice_checkpoint::Result<Option<(Vec<Entry>, Vec<u8>)>> {
    let mut chunk = part.scan_limited(from, Some(bound), max_bytes)?;
    let Some((last_key, last_end)) = chunk
        .last()
        .and_then(|(k, _)| Some((k.clone(), closes_at(k, false)?)))
    else {
        return Ok(None);
    };
    // The rest of the chunk's last window.
    let window_done = window_prefix(last_end.saturating_add(1)).to_vec();
    let mut after = last_key;
    after.push(0);
    chunk.extend(part.scan(&after, Some(&window_done))?);
    part.delete_range(from, &window_done)?;
    Ok(Some((chunk, window_done)))
}

impl WindowJoinExec {
    /// Joins closed windows' stored rows (each window complete) and appends the result.
    async fn join_closed(
        &self,
        closed: Vec<Entry>,
        [left_codec, right_codec]: [&Codec; 2],
        ctx: &Arc<TaskContext>,
        output: &mut Vec<RecordBatch>,
    ) -> DfResult<()> {
        let (mut lefts, mut rights) = (Vec::new(), Vec::new());
        for (key, value) in closed {
            match key.get(8) {
                Some(&LEFT) => lefts.push(value),
                Some(&RIGHT) => rights.push(value),
                _ => {
                    return Err(DataFusionError::Execution(
                        "window join state holds an entry of neither side".into(),
                    ))
                }
            }
        }
        if lefts.is_empty() && rights.is_empty() {
            return Ok(());
        }
        let hash = self.hash();
        let (left_schema, right_schema) = (hash.left().schema(), hash.right().schema());
        let sides = [
            left_codec.decode(&left_schema, &lefts)?,
            right_codec.decode(&right_schema, &rights)?,
        ];
        join_batches(&self.join, sides, &self.schema(), ctx, output).await
    }
}

/// Runs `join` (a hash join) over one batch per side and appends its rows, as `schema`.
pub(super) async fn join_batches(
    join: &Arc<dyn ExecutionPlan>,
    [left, right]: [RecordBatch; 2],
    schema: &SchemaRef,
    ctx: &Arc<TaskContext>,
    output: &mut Vec<RecordBatch>,
) -> DfResult<()> {
    let (left_schema, right_schema) = (left.schema(), right.schema());
    let left_mem: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&[vec![left]], left_schema, None)?;
    let right_mem: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&[vec![right]], right_schema, None)?;
    let join = join.clone().replace_children(
        vec![left_mem, right_mem],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )?;
    for batch in collect_partition(&join, 0, ctx.clone()).await? {
        output.push(RecordBatch::try_new(
            schema.clone(),
            batch.columns().to_vec(),
        )?);
    }
    Ok(())
}

/// Places a stream join's stored rows by key group when its partition count changes: the
/// hash of the row's join keys, which its side's shuffle hashed. The side is the key's byte
/// at `side_at`.
pub(super) struct JoinEntries<'a> {
    pub sides: [JoinSide<'a>; 2],
    pub max: u32,
    pub side_at: usize,
}

/// One side of a stream join: how its rows are stored, and its join keys.
pub(super) struct JoinSide<'a>(
    pub &'a Codec,
    pub &'a SchemaRef,
    pub Vec<Arc<dyn PhysicalExpr>>,
);

impl Redistribution for JoinEntries<'_> {
    fn key_groups(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<u32>>, String> {
        let mut out = vec![None; entries.len()];
        for (side, JoinSide(codec, schema, on)) in self.sides.iter().enumerate() {
            let rows: Vec<usize> = (0..entries.len())
                .filter(|&i| entries[i].0.get(self.side_at) == Some(&(side as u8)))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let values: Vec<Vec<u8>> = rows.iter().map(|&i| entries[i].1.clone()).collect();
            let groups = (|| {
                let batch = codec.decode(schema, &values)?;
                let columns = on
                    .iter()
                    .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                    .collect::<DfResult<Vec<_>>>()?;
                key_groups_of(&columns, batch.num_rows(), self.max)
            })()
            .map_err(|e| e.to_string())?;
            for (&i, g) in rows.iter().zip(groups) {
                out[i] = Some(g);
            }
        }
        match out.iter().position(Option::is_none) {
            Some(i) => Err(format!(
                "a stream join entry of neither side (key of {} bytes)",
                entries[i].0.len()
            )),
            None => Ok(out),
        }
    }

    fn merge(&self, _key: &[u8], kept: &[u8], _other: &[u8]) -> Vec<u8> {
        kept.to_vec()
    }
}

/// One side's rows as state entries.
pub(super) struct Codec {
    pub rows: RowConverter,
}

impl Codec {
    pub(super) fn new(schema: &SchemaRef) -> DfResult<Self> {
        Ok(Self {
            rows: RowConverter::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?,
        })
    }

    /// Entries keyed (window end, side, epoch, partition, row number) — unique however
    /// partitions are later merged; rows without a window end can match nothing in an
    /// equi-join on it and are not kept.
    fn entries(
        &self,
        batch: &RecordBatch,
        end: usize,
        side: u8,
        ((epoch, partition), first_row): ((sluice_checkpoint::Epoch, u32), u64),
        out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> DfResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let ends = event_millis(batch.column(end))?;
        let rows = self.rows.convert_columns(batch.columns())?;
        for (i, row) in rows.iter().enumerate() {
            if ends.is_null(i) {
                continue;
            }
            let mut key = Vec::with_capacity(8 + 1 + 8 + 4 + 8);
            key.extend_from_slice(&window_prefix(ends.value(i)));
            key.push(side);
            key.extend_from_slice(&epoch.0.to_be_bytes());
            key.extend_from_slice(&partition.to_be_bytes());
            key.extend_from_slice(&(first_row + i as u64).to_be_bytes());
            out.push((key, row.as_ref().to_vec()));
        }
        Ok(())
    }

    pub(super) fn decode(&self, schema: &SchemaRef, values: &[Vec<u8>]) -> DfResult<RecordBatch> {
        if values.is_empty() {
            return Ok(RecordBatch::new_empty(schema.clone()));
        }
        let parser = self.rows.parser();
        let columns = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.rows
                .convert_rows(values.iter().map(|v| parser.parse(v)))
        }))
        .map_err(|_| {
            DataFusionError::Execution(
                "stored stream join state does not decode with this query's row layout".into(),
            )
        })??;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

impl DisplayAs for WindowJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowJoinExec: operator={}", self.spec.operator)
    }
}

impl ExecutionPlan for WindowJoinExec {
    fn name(&self) -> &str {
        "WindowJoinExec"
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
            .ok_or_else(|| DataFusionError::Internal("WindowJoinExec has one child".into()))?;
        Ok(Arc::new(WindowJoinExec::try_new(self.spec, child)?))
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
    use sluice_checkpoint::location::Location;
    use sluice_checkpoint::state::{StateBackend, StateConfig, StatePartitionId};

    use super::*;

    /// A key of side `side` in the window ending at `end`.
    fn key(end: i64, side: u8, row: u8) -> Vec<u8> {
        let mut k = window_prefix(end).to_vec();
        k.extend_from_slice(&[side, row]);
        k
    }

    #[test]
    fn closed_windows_are_taken_in_bounded_chunks_of_whole_windows_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let backend = StateBackend::new(&dir.path().join("db"), StateConfig::default()).unwrap();
        let id = StatePartitionId {
            query_id: sluice_checkpoint::QueryId::new("q").unwrap(),
            operator: 0,
            partition: 0,
            key_groups: None,
        };
        let store = Location::from(dir.path().join("store"));
        let part = backend.open(&id, &store, None).unwrap();
        let mut part = part.lock().unwrap();
        // Windows ending at 10, 20, 30 (three rows each, both sides) and 40 (open).
        let mut puts = Vec::new();
        for end in [10, 20, 30, 40] {
            for (side, row) in [(LEFT, 0), (LEFT, 1), (RIGHT, 0)] {
                puts.push((key(end, side, row), vec![7u8; 10]));
            }
        }
        part.write(&puts, &[]).unwrap();
        let bound = window_prefix(31).to_vec();
        // A budget smaller than one entry: one whole window per chunk.
        let mut from = Vec::new();
        let mut chunks = Vec::new();
        while let Some((chunk, next)) = take_closed(&mut part, &from, &bound, 1).unwrap() {
            from = next;
            chunks.push(chunk.into_iter().map(|(k, _)| k).collect::<Vec<_>>());
        }
        let want: Vec<Vec<Vec<u8>>> = [10, 20, 30]
            .iter()
            .map(|&end| vec![key(end, LEFT, 0), key(end, LEFT, 1), key(end, RIGHT, 0)])
            .collect();
        assert_eq!(chunks, want);
        // Taken means deleted; the open window stays.
        let left: Vec<Vec<u8>> = part
            .scan(&[], None)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            left,
            [key(40, LEFT, 0), key(40, LEFT, 1), key(40, RIGHT, 0)]
        );
        // A large budget takes every closed window at once.
        part.write(&puts[..9], &[]).unwrap();
        let (all, next) = take_closed(&mut part, &[], &bound, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(all.len(), 9);
        assert_eq!(next, window_prefix(31).to_vec());
        assert!(take_closed(&mut part, &next, &bound, 1 << 20)
            .unwrap()
            .is_none());
    }
}
