//! `sluice checkpoint state`: the rows of a stateful operator's state at a committed epoch, read
//! from the checkpoint (like Spark's state data source): each partition's snapshot is restored
//! into a scratch RocksDB instance and decoded with the layout the job's plan gives the
//! operator.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_plan::ExecutionPlan;
use sluice_checkpoint::state::{KeyGroups, StateBackend, StateConfig, StatePartitionId};
use sluice_checkpoint::{CheckpointStore, Epoch};

use super::report::EpochInput;
use crate::error::{EngineError, Result};
use crate::job::Job;
use crate::operator::stateful::StatefulAggregateExec;

/// The state rows of `operator` (default: the query's only stateful aggregation) at `epoch`
/// (default: the last committed), with a leading `partition` column.
pub async fn state_rows(
    job: &Job,
    store: &CheckpointStore,
    operator: Option<u32>,
    epoch: Option<Epoch>,
) -> Result<(SchemaRef, Vec<RecordBatch>, Epoch, u32)> {
    let epoch = match epoch {
        Some(e) => e,
        None => store
            .epoch_log()?
            .last_committed
            .ok_or_else(|| EngineError::Config("the checkpoint has no committed epoch".into()))?,
    };
    if store.read_commit(epoch)?.is_none() {
        return Err(EngineError::Config(format!(
            "epoch {epoch} is not committed (or no longer kept) in this checkpoint"
        )));
    }
    let input = store.read_offsets::<EpochInput>(epoch)?;
    let key_groups = input.as_ref().and_then(|i| i.key_groups);
    let partitions = input.and_then(|i| i.partitions).ok_or_else(|| {
        EngineError::Config(format!("offsets/{epoch} records no partition count"))
    })?;
    let planned = crate::plan::plan(job, partitions).await?;
    let mut found: Vec<StatefulAggregateExec> = Vec::new();
    for stage in &planned.stages {
        collect(&stage.plan, &mut found);
    }
    let known: Vec<String> = found.iter().map(|s| s.spec.operator.to_string()).collect();
    let op = match operator {
        Some(n) => found.into_iter().find(|s| s.spec.operator == n),
        None if found.len() == 1 => found.into_iter().next(),
        None => None,
    }
    .ok_or_else(|| {
        EngineError::Config(if known.is_empty() {
            "the job has no stateful aggregation whose state could be shown (window and interval joins keep theirs in another layout)".into()
        } else {
            format!(
                "name the operator with --operator (the job's stateful aggregations: {})",
                known.join(", ")
            )
        })
    })?;
    let scratch = tempfile::tempdir()
        .map_err(|e| EngineError::Internal(format!("a scratch directory: {e}")))?;
    let backend = StateBackend::new(scratch.path(), StateConfig::default())?;
    let location = store.state_location();
    let mut batches = Vec::new();
    let mut schema = None;
    // The operator's tasks: the query's partitions, or one for an aggregate of everything.
    let tasks = op.properties().output_partitioning().partition_count();
    for p in 0..tasks {
        let id = StatePartitionId {
            query_id: store.metadata().query_id.clone(),
            operator: op.spec.operator,
            partition: p as u32,
            key_groups: key_groups.map(|max| KeyGroups::of_partition(p as u32, tasks as u32, max)),
        };
        let handle = backend.open(&id, &location, Some(epoch))?;
        let part = handle.lock().unwrap_or_else(|e| e.into_inner());
        let rows = op.state_rows(&part)?;
        let mut fields = vec![Arc::new(Field::new("partition", DataType::UInt32, false))];
        fields.extend(rows.schema().fields().iter().cloned());
        let with_partition = Arc::new(Schema::new(fields));
        let mut columns = vec![Arc::new(UInt32Array::from(vec![p as u32; rows.num_rows()])) as _];
        columns.extend(rows.columns().iter().cloned());
        batches.push(
            RecordBatch::try_new(with_partition.clone(), columns)
                .map_err(|e| EngineError::Internal(e.to_string()))?,
        );
        schema = Some(with_partition);
    }
    let schema = schema.ok_or_else(|| EngineError::Internal("no state partitions".into()))?;
    Ok((schema, batches, epoch, op.spec.operator))
}

fn collect(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<StatefulAggregateExec>) {
    if let Some(s) = plan.downcast_ref::<StatefulAggregateExec>() {
        out.push(s.clone());
    }
    for child in plan.children() {
        collect(child, out);
    }
}
