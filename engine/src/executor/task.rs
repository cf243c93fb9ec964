//! Running one task attempt on an executor.
//!
//! A task executes its stage's cached plan for one partition, with the epoch's inputs attached
//! to its DataFusion task context, and sends the output where the stage says: hash-partitioned
//! shuffle files, one whole shuffle file (gather and results), or the sink's staged files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};
use futures::StreamExt;
use sluice_connectors::{Sink, WriterContext};
use tracing::{debug, info_span, Instrument};

use crate::error::{datafusion_retryable, describe_datafusion};
use crate::operator::key_groups::KeyGroupPartitioner;
use crate::operator::nodes::{ShuffleFetch, TaskInputs};
use crate::operator::stateful::TaskState;
use crate::protocol::{StageId, StageOutput, TaskDescriptor, TaskOutcome, TaskReport};
use crate::shuffle::ShuffleStore;

/// A query's stages as decoded and cached by an executor.
#[derive(Debug)]
pub struct InstalledQuery {
    /// Decoded stage plans and their outputs.
    pub stages: HashMap<StageId, (Arc<dyn ExecutionPlan>, StageOutput)>,
    /// The sink of each stage writing a table (Parquet or Kafka).
    pub sinks: HashMap<StageId, Arc<dyn Sink>>,
    /// Where state is checkpointed, and whether snapshots are fsynced, when the query is
    /// stateful.
    pub state: Option<(sluice_checkpoint::Location, bool)>,
    /// The query's key groups (see [`crate::protocol::QueryInstall::key_groups`]).
    pub key_groups: Option<u32>,
}

/// Everything a task needs from its executor.
#[derive(Clone)]
pub struct TaskEnv {
    /// Session state holding functions and configuration; cloned into each task context.
    pub session: Arc<SessionState>,
    /// Local shuffle outputs.
    pub store: Arc<ShuffleStore>,
    /// Fetches inputs from peers.
    pub fetcher: Arc<dyn ShuffleFetch>,
    /// The executor's RocksDB state instances.
    pub state: Arc<sluice_checkpoint::state::StateBackend>,
    /// Test hook (`SLUICE_TEST_TASK_DELAY_MS`): every task waits this long before running, so
    /// tests can kill processes while an epoch is in flight.
    pub delay: Option<std::time::Duration>,
    /// This executor's name, a field of every task's log span.
    pub executor: Arc<str>,
    /// Its memory pool and spill directory.
    pub memory: Arc<super::memory::ExecutorMemory>,
}

/// Runs one attempt to completion and reports how it went.
pub async fn run(env: TaskEnv, query: Arc<InstalledQuery>, task: TaskDescriptor) -> TaskOutcome {
    let span = info_span!(
        "task",
        epoch = task.epoch.0,
        stage = task.task.stage.0,
        partition = task.task.partition,
        executor = &*env.executor
    );
    let started = Instant::now();
    if let Some(delay) = env.delay {
        tokio::time::sleep(delay).await;
    }
    let memory = env.memory.clone();
    match execute(env, query, task).instrument(span.clone()).await {
        Ok(mut report) => {
            report.peak_pool_bytes = memory.peak_pool_bytes();
            report.elapsed_us = started.elapsed().as_micros() as u64;
            report.peak_rss_bytes = super::peak_rss_bytes();
            report.store_retries = sluice_checkpoint::location::transient_failures();
            span.in_scope(|| {
                debug!(
                    rows = report.output_rows,
                    elapsed_ms = report.elapsed_us as f64 / 1000.0,
                    "task finished"
                )
            });
            TaskOutcome::Succeeded(Box::new(report))
        }
        Err(e) => match crate::shuffle::FetchFailed::find(&e) {
            Some(f) => TaskOutcome::FetchFailed {
                stage: f.stage,
                map_partition: f.map_partition,
                executor: f.executor,
                message: f.message.clone(),
            },
            None => TaskOutcome::Failed {
                message: memory
                    .describe_exhausted(&e)
                    .unwrap_or_else(|| describe_datafusion(&e)),
                retryable: datafusion_retryable(&e),
            },
        },
    }
}

/// How a hash stage splits its output.
enum Partitioner {
    KeyGroups(KeyGroupPartitioner),
    DataFusion(BatchPartitioner),
}

async fn execute(
    env: TaskEnv,
    query: Arc<InstalledQuery>,
    task: TaskDescriptor,
) -> DfResult<TaskReport> {
    let (plan, output) = query.stages.get(&task.task.stage).cloned().ok_or_else(|| {
        DataFusionError::Internal(format!("stage {} is not installed", task.task.stage))
    })?;
    // Every task runs its stage from a fresh copy of the decoded plan: DataFusion's operators
    // register new metrics on every execution (a copy kept across epochs would grow without
    // end), and an operator that collects an input once (a broadcast join) would share it
    // between tasks and epochs. State lives outside the plan, in the executor's backend.
    let plan = datafusion::physical_plan::execution_plan::reset_plan_states(plan)?;
    let partition = task.task.partition;
    // The plan partition it runs: its own, or the skewed partition it is a slice of.
    let run = task.plan_partition.unwrap_or(partition);
    let partitions = match &output {
        StageOutput::Hash { .. } => plan
            .children()
            .first()
            .map_or(0, |c| c.output_partitioning().partition_count()),
        _ => plan.output_partitioning().partition_count(),
    };
    if run >= partitions {
        return Err(DataFusionError::Internal(format!(
            "task {} asks for plan partition {run} of a stage with {partitions}",
            task.task
        )));
    }
    let inputs = TaskInputs {
        query_id: task.query_id.clone(),
        epoch: task.epoch,
        splits: task.splits.clone(),
        inputs: task.inputs.clone(),
        fetcher: env.fetcher.clone(),
        read_counters: Default::default(),
        watermark_ms: task.watermark_ms,
        batch_timestamp_ms: task.batch_timestamp_ms,
        state: query.state.as_ref().map(|(store, durable)| TaskState {
            backend: env.state.clone(),
            store: store.clone(),
            durable: *durable,
            restore: task.restore,
            restore_partitions: task.restore_partitions,
            key_groups: query.key_groups,
            metrics: Default::default(),
        }),
    };
    let inputs = Arc::new(inputs);
    let config = env.session.config().clone().with_extension(inputs.clone());
    let ctx = Arc::new(TaskContext::from(env.session.as_ref()).with_session_config(config));
    let mut report = TaskReport::default();
    match output {
        StageOutput::Hash { partitions } => {
            let repartition = plan.downcast_ref::<RepartitionExec>().ok_or_else(|| {
                DataFusionError::Internal("hash stage without RepartitionExec root".into())
            })?;
            let input = repartition.input().clone();
            let inputs_count = input.output_partitioning().partition_count();
            // By key group; a checkpoint from before key groups keeps DataFusion's hash modulo
            // the partition count, which its state was partitioned by.
            let mut partitioner = match (query.key_groups, repartition.partitioning()) {
                (Some(max), Partitioning::Hash(exprs, n)) => {
                    Partitioner::KeyGroups(KeyGroupPartitioner::new(exprs.clone(), *n, max))
                }
                (_, partitioning) => Partitioner::DataFusion(BatchPartitioner::try_new(
                    partitioning.clone(),
                    Time::new(),
                    run,
                    inputs_count,
                )?),
            };
            let mut writer = env.store.writer(
                &task.query_id,
                task.epoch,
                task.task.stage,
                partition,
                partitions,
                input.schema(),
            )?;
            let mut stream = input.execute(run, ctx)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                report.output_rows += batch.num_rows() as u64;
                match &mut partitioner {
                    Partitioner::KeyGroups(k) => k.partition(batch, |p, b| writer.write(p, &b))?,
                    Partitioner::DataFusion(d) => d.partition(batch, |p, b| writer.write(p, &b))?,
                }
            }
            let sizes = writer.finish(&env.store)?;
            report.partition_rows = sizes.rows;
            report.partition_bytes = sizes.bytes;
        }
        StageOutput::Gather | StageOutput::Result => {
            let mut writer = env.store.writer(
                &task.query_id,
                task.epoch,
                task.task.stage,
                partition,
                1,
                plan.schema(),
            )?;
            let mut stream = plan.execute(run, ctx)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                report.output_rows += batch.num_rows() as u64;
                writer.write(0, &batch)?;
            }
            let sizes = writer.finish(&env.store)?;
            report.partition_rows = sizes.rows;
            report.partition_bytes = sizes.bytes;
        }
        StageOutput::Sink => {
            let sink = query.sinks.get(&task.task.stage).ok_or_else(|| {
                DataFusionError::Internal(format!("sink stage {} without a sink", task.task.stage))
            })?;
            let writer_ctx = WriterContext {
                query_id: task.query_id.clone(),
                epoch: task.epoch,
                task: partition,
                attempt: format!("a{}", task.attempt.0),
            };
            let ext = |e: sluice_connectors::ConnectorError| DataFusionError::External(Box::new(e));
            let mut writer = sink.open_writer(&writer_ctx).map_err(ext)?;
            let mut stream = plan.execute(run, ctx)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                tracing::trace!(target: "sluice::latency", rows = batch.num_rows(), "sink batch");
                report.output_rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(ext)?;
            }
            report.receipt = Some(writer.finish().map_err(ext)?);
        }
    }
    // What its operators spilled (this copy of the plan ran only this task).
    (report.spilled_bytes, report.spill_files) = super::memory::spilled(&plan, run);
    report.read = inputs
        .read_counters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(state) = &inputs.state {
        report.state = state
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
    }
    Ok(report)
}
