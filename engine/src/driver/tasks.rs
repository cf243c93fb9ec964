//! The task side of an epoch: waiting for executors, scheduling the stage DAG's tasks,
//! handling what executors report, and fetching console results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_checkpoint::Epoch;
use sluice_connectors::console::ConsolePrinter;
use sluice_connectors::Split;
use tracing::{info, warn};

use super::cluster::{Cluster, ClusterEvent};
use super::scheduler::{EpochFailure, EpochScheduler, StageShape};
use super::{assign_splits, send, ClusterMode, EpochInput, EpochRunner, Member};
use crate::error::{describe_datafusion, EngineError, Result};
use crate::plan::PlannedQuery;
use crate::protocol::{
    ExecutorId, FetchRequest, MapOutputLocation, QueryInstall, StageOutput, TaskDescriptor,
    TaskOutcome, ToDriver, ToExecutor,
};
use crate::shuffle::{Fetcher, ShuffleClient};

impl EpochRunner<'_> {
    /// Waits until `count` executors have registered.
    pub(super) async fn await_executors(&mut self, count: usize) -> Result<()> {
        let timeout = match &self.config.cluster {
            ClusterMode::Standalone {
                register_timeout, ..
            } => *register_timeout,
            ClusterMode::Local { .. } => Duration::from_secs(60),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while self.members.len() < count {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| {
                    EngineError::Cluster(format!(
                        "only {} of {count} executors registered within {}s",
                        self.members.len(),
                        timeout.as_secs()
                    ))
                })?
                .ok_or_else(|| EngineError::Internal("cluster event channel closed".into()))?;
            match event {
                ClusterEvent::Registered {
                    executor,
                    info,
                    sender,
                } => {
                    self.members.insert(
                        executor,
                        Member {
                            info,
                            sender,
                            last_seen: Instant::now(),
                            peak_rss_bytes: 0,
                        },
                    );
                }
                ClusterEvent::ProcessExited { name, status } => {
                    return Err(EngineError::Cluster(format!(
                        "{name} {status} before registering (its log is above)"
                    )))
                }
                ClusterEvent::Disconnected { executor, reason } => {
                    self.members.remove(&executor);
                    warn!(%executor, "executor left before the job started: {reason}");
                }
                ClusterEvent::Message {
                    executor,
                    message: ToDriver::Heartbeat(m),
                } => self.heartbeat(executor, m.peak_rss_bytes),
                ClusterEvent::Message { .. } => {}
            }
        }
        Ok(())
    }

    pub(super) fn heartbeat(&mut self, executor: ExecutorId, peak_rss_bytes: u64) {
        if let Some(m) = self.members.get_mut(&executor) {
            m.last_seen = Instant::now();
            m.peak_rss_bytes = m.peak_rss_bytes.max(peak_rss_bytes);
        }
    }

    /// Runs every task of the epoch; returns the finished scheduler (its reports hold outputs).
    pub(super) async fn schedule(
        &mut self,
        planned: &PlannedQuery,
        install: &QueryInstall,
        input: &EpochInput,
    ) -> Result<EpochScheduler> {
        let shapes = planned
            .stages
            .iter()
            .map(|s| StageShape {
                id: s.id,
                tasks: s.tasks,
                inputs: s.inputs.clone(),
                pinned: planned.stateful_stages.contains(&s.id),
            })
            .collect();
        let mut scheduler = EpochScheduler::new(shapes, self.attempts);
        scheduler.set_preferred(self.placement.clone());
        // Stateful operators start from the last committed epoch's snapshot.
        let restore = if planned.stateful_stages.is_empty() {
            None
        } else {
            input.epoch.0.checked_sub(1).map(Epoch)
        };
        for (id, m) in &self.members {
            scheduler.add_executor(*id, m.info.slots);
        }
        // Split assignment per (table, scan partitions), computed once per epoch.
        let mut assignments: BTreeMap<(String, usize), Vec<Vec<Split>>> = BTreeMap::new();
        for stage in &planned.stages {
            for (table, parts) in &stage.tables {
                let splits = input
                    .sources
                    .get(table)
                    .map(|s| s.splits.clone())
                    .unwrap_or_default();
                assignments
                    .entry((table.clone(), *parts))
                    .or_insert_with(|| assign_splits(splits, *parts));
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        info!(
            epoch = input.epoch.0,
            stages = planned.stages.len(),
            executors = self.members.len(),
            "scheduling epoch"
        );
        loop {
            for a in scheduler.poll() {
                let stage = &planned.stages[a.task.stage.0];
                let splits = stage
                    .tables
                    .iter()
                    .map(|(t, parts)| (t.clone(), assignments[&(t.clone(), *parts)].clone()))
                    .collect();
                let inputs = stage
                    .inputs
                    .iter()
                    .map(|s| (*s, self.locations(&scheduler, *s)))
                    .collect();
                let task = TaskDescriptor {
                    attempt: a.attempt,
                    query_id: self.query_id.clone(),
                    epoch: input.epoch,
                    task: a.task,
                    splits,
                    inputs,
                    watermark_ms: input.watermark_ms,
                    batch_timestamp_ms: input.batch_timestamp_ms as i64,
                    restore,
                };
                if let Some(member) = self.members.get(&a.executor) {
                    send(member, ToExecutor::RunTask(task)).await;
                }
            }
            self.attempts = scheduler.next_attempt();
            if scheduler.is_complete() {
                self.placement = scheduler.placement();
                return Ok(scheduler);
            }
            tokio::select! {
                event = self.events.recv() => {
                    let event = event.ok_or_else(|| EngineError::Internal("cluster event channel closed".into()))?;
                    if let Some(failure) = self.handle(&mut scheduler, install, event).await {
                        return Err(self.describe_failure(failure));
                    }
                }
                _ = tick.tick() => {
                    let timeout = self.config.heartbeat_timeout;
                    let silent: Vec<ExecutorId> = self
                        .members
                        .iter()
                        .filter(|(_, m)| m.last_seen.elapsed() > timeout)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in silent {
                        let name = self.members.remove(&id).map(|m| m.info.name).unwrap_or_default();
                        if let Some(EpochFailure::ExecutorLost { tasks, .. }) = scheduler.on_executor_lost(id) {
                            return Err(EngineError::ExecutorLost {
                                executor: name,
                                reason: format!("no heartbeat for {}s while it held {} task(s) of the epoch", timeout.as_secs(), tasks.len()),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Applies one cluster event; returns a failure that ends the epoch.
    pub(super) async fn handle(
        &mut self,
        scheduler: &mut EpochScheduler,
        install: &QueryInstall,
        event: ClusterEvent,
    ) -> Option<EpochFailure> {
        match event {
            ClusterEvent::Message { executor, message } => {
                if let Some(m) = self.members.get_mut(&executor) {
                    m.last_seen = Instant::now();
                }
                match message {
                    ToDriver::TaskFinished {
                        attempt,
                        outcome: TaskOutcome::Succeeded(report),
                    } => {
                        self.heartbeat(executor, report.peak_rss_bytes);
                        scheduler.on_succeeded(attempt, report);
                        None
                    }
                    ToDriver::TaskFinished {
                        attempt,
                        outcome: TaskOutcome::Failed { message, retryable },
                    } => scheduler.on_failed(attempt, message, retryable),
                    ToDriver::Heartbeat(m) => {
                        self.heartbeat(executor, m.peak_rss_bytes);
                        None
                    }
                    ToDriver::Register(_) => None,
                }
            }
            ClusterEvent::Registered {
                executor,
                info,
                sender,
            } => {
                // A late joiner takes part from now on.
                let member = Member {
                    info,
                    sender,
                    last_seen: Instant::now(),
                    peak_rss_bytes: 0,
                };
                send(&member, ToExecutor::InstallQuery(Box::new(install.clone()))).await;
                scheduler.add_executor(executor, member.info.slots);
                self.members.insert(executor, member);
                None
            }
            ClusterEvent::Disconnected { executor, reason } => {
                let failure = scheduler.on_executor_lost(executor);
                if failure.is_some() {
                    warn!(%executor, "executor lost mid-epoch: {reason}");
                }
                self.members.remove(&executor).map(|m| m.info.name);
                failure.map(|f| match f {
                    EpochFailure::ExecutorLost { tasks, .. } => EpochFailure::TaskFailed {
                        task: tasks[0],
                        executor,
                        message: format!(
                            "executor {executor} {reason}; {} task(s) of the epoch were on it",
                            tasks.len()
                        ),
                        retryable: true,
                    },
                    other => other,
                })
            }
            ClusterEvent::ProcessExited { name, status } => {
                let id = self
                    .members
                    .iter()
                    .find(|(_, m)| m.info.name == name)
                    .map(|(id, _)| *id)?;
                let failure = scheduler.on_executor_lost(id);
                self.members.remove(&id);
                failure.map(|f| match f {
                    EpochFailure::ExecutorLost { tasks, .. } => EpochFailure::TaskFailed {
                        task: tasks[0],
                        executor: id,
                        message: format!(
                            "{name} {status} while it held {} task(s) of the epoch",
                            tasks.len()
                        ),
                        retryable: true,
                    },
                    other => other,
                })
            }
        }
    }

    pub(super) fn describe_failure(&self, failure: EpochFailure) -> EngineError {
        match failure {
            EpochFailure::TaskFailed {
                task,
                executor,
                message,
                retryable,
            } => EngineError::TaskFailed {
                stage: task.stage.0,
                partition: task.partition,
                executor: executor.to_string(),
                message,
                retryable,
            },
            EpochFailure::ExecutorLost { executor, tasks } => EngineError::ExecutorLost {
                executor: executor.to_string(),
                reason: format!("it held {} task(s) of the epoch", tasks.len()),
            },
        }
    }

    pub(super) fn locations(
        &self,
        scheduler: &EpochScheduler,
        stage: crate::protocol::StageId,
    ) -> Vec<MapOutputLocation> {
        scheduler
            .outputs(stage)
            .into_iter()
            .filter_map(|(p, executor)| {
                self.members.get(&executor).map(|m| MapOutputLocation {
                    map_partition: p,
                    executor,
                    addr: m.info.data_addr,
                })
            })
            .collect()
    }

    /// Streams the final stage's rows from the executors into a bounded printer.
    pub(super) async fn fetch_results(
        &mut self,
        cluster: &Cluster,
        planned: &PlannedQuery,
        scheduler: &EpochScheduler,
        epoch: Epoch,
    ) -> Result<ConsolePrinter> {
        let final_stage = planned.stages.last().expect("a plan has a final stage");
        debug_assert_eq!(final_stage.output, StageOutput::Result);
        let schema = final_stage.plan.schema();
        let client = Arc::new(ShuffleClient::new(
            cluster.endpoint.clone(),
            None,
            tokio::runtime::Handle::current(),
        ));
        let fetcher = Fetcher(client);
        let mut printer = ConsolePrinter::new(self.config.max_result_rows);
        for (partition, executor, report) in scheduler.reports(final_stage.id) {
            if printer.is_full() {
                printer.count_unfetched(report.output_rows);
                continue;
            }
            let Some(member) = self.members.get(&executor) else {
                return Err(EngineError::ExecutorLost {
                    executor: executor.to_string(),
                    reason: "it held query results".into(),
                });
            };
            let location = MapOutputLocation {
                map_partition: partition,
                executor,
                addr: member.info.data_addr,
            };
            let request = FetchRequest {
                query_id: self.query_id.clone(),
                epoch,
                stage: final_stage.id,
                map_partition: partition,
                reduce_partition: 0,
            };
            let mut stream = crate::plan::nodes::ShuffleFetch::fetch(
                &fetcher,
                &location,
                request,
                schema.clone(),
            );
            let mut seen = 0u64;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| {
                    EngineError::Cluster(format!("fetching results: {}", describe_datafusion(&e)))
                })?;
                seen += batch.num_rows() as u64;
                printer.push(&batch);
                if printer.is_full() {
                    break; // dropping the stream cancels the transfer
                }
            }
            printer.count_unfetched(report.output_rows.saturating_sub(seen));
        }
        Ok(printer)
    }
}
