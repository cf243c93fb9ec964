//! The task side of an epoch: waiting for executors, scheduling the stage DAG's tasks,
//! handling what executors report, and fetching console results.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_checkpoint::Epoch;
use sluice_connectors::Split;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::cluster::{Cluster, ClusterEvent};
use super::events::{Event, Reporter};
use super::report::LostExecutor;
use super::scheduler::{AttemptOutcome, EpochFailure, EpochScheduler, StageShape};
use super::{assign_splits, ClusterMode, DriverConfig, EpochInput};
use crate::error::{EngineError, Result};
use crate::plan::PlannedQuery;
use crate::protocol::{
    ExecutorId, ExecutorInfo, QueryInstall, StageId, StageOutput, TaskDescriptor, TaskOutcome,
    ToDriver, ToExecutor,
};

/// A registered executor as the driver tracks it.
pub(super) struct Member {
    pub info: ExecutorInfo,
    pub sender: mpsc::Sender<ToExecutor>,
    pub connection: quinn::Connection,
    pub last_seen: Instant,
    /// When it last reported (wall clock, ms since the Unix epoch), for the UI.
    pub last_seen_ms: u64,
    /// Resident set size at its last heartbeat.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Its transient object-store failures as last reported (cumulative).
    pub store_retries: u64,
    /// Task attempts it finished, and those that failed, in this run.
    pub tasks_run: u64,
    pub tasks_failed: u64,
}

impl Member {
    fn new(
        info: ExecutorInfo,
        sender: mpsc::Sender<ToExecutor>,
        connection: quinn::Connection,
    ) -> Self {
        Member {
            info,
            sender,
            connection,
            last_seen: Instant::now(),
            last_seen_ms: super::epoch::now_ms(),
            rss_bytes: 0,
            peak_rss_bytes: 0,
            store_retries: 0,
            tasks_run: 0,
            tasks_failed: 0,
        }
    }

    /// What the UI and `--events` show of it.
    pub fn status(&self, id: ExecutorId) -> super::events::ExecutorStatus {
        super::events::ExecutorStatus {
            id: id.0,
            name: self.info.name.clone(),
            address: self.info.data_addr.to_string(),
            pid: self.info.pid,
            slots: self.info.slots,
            memory_bytes: self.info.memory_bytes,
            last_heartbeat_ms: self.last_seen_ms,
            rss_bytes: self.rss_bytes,
            peak_rss_bytes: self.peak_rss_bytes,
            tasks_run: self.tasks_run,
            tasks_failed: self.tasks_failed,
        }
    }
}

/// The executors and the tasks an epoch runs on them: membership (registration, heartbeats,
/// loss and replacement), scheduling the stage DAG, and where stateful tasks live.
pub(super) struct Tasks<'a> {
    pub config: &'a DriverConfig,
    pub query_id: sluice_checkpoint::QueryId,
    pub events: mpsc::Receiver<ClusterEvent>,
    pub members: BTreeMap<ExecutorId, Member>,
    /// Task attempts launched by this run.
    pub attempts: u64,
    /// Where each stateful task ran last (it holds that task's state).
    pub placement: BTreeMap<crate::protocol::TaskKey, ExecutorId>,
    /// Local and Kubernetes: the executors are this driver's processes or pods; a lost one is
    /// ended through its supervisor's handle and replaced.
    pub killer: Option<super::supervisor::ExecutorKiller>,
    /// Executors lost since the last epoch committed.
    pub lost: Vec<LostExecutor>,
    /// Transient object-store failures reported by executors since the last epoch committed,
    /// and the driver's own count when it last looked.
    pub store_retries: u64,
    pub driver_store_retries: u64,
    pub reporter: Arc<dyn Reporter>,
    /// The epoch being scheduled, for the events of its tasks.
    pub running_epoch: u64,
    /// When the executors were last reported, and which they were.
    pub executors_reported: Option<(Instant, Vec<ExecutorId>)>,
    /// Executors told to stop by dynamic allocation, until their connection closes.
    pub retiring: BTreeMap<ExecutorId, Member>,
    /// Static tables' scan outputs the executors keep across epochs.
    pub static_cache: super::static_cache::StaticCache,
    /// The running epoch's stages adapted to their inputs' sizes (skew, coalescing).
    pub adapted: super::adaptive::Adapted,
}

/// Queues `message` for `member`; a closed queue means the executor is going away.
pub(super) async fn send(member: &Member, message: ToExecutor) {
    if member.sender.send(message).await.is_err() {
        warn!(name = %member.info.name, "executor's queue is closed");
    }
}

impl Tasks<'_> {
    /// Waits until `count` executors have registered.
    pub(super) async fn await_executors(&mut self, count: usize) -> Result<()> {
        let timeout = match &self.config.cluster {
            ClusterMode::Standalone {
                register_timeout, ..
            } => *register_timeout,
            ClusterMode::Local { .. } => Duration::from_secs(60),
            ClusterMode::Kubernetes { options, .. } => options.register_timeout,
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
                    connection,
                } => {
                    self.members
                        .insert(executor, Member::new(info, sender, connection));
                }
                ClusterEvent::ProcessExited { name, status } => {
                    if self.killer.is_none() {
                        return Err(EngineError::Cluster(format!(
                            "{name} {status} before registering (its log is above)"
                        )));
                    }
                    warn!("{name} {status} before registering; it is restarted");
                }
                ClusterEvent::Disconnected { executor, reason } => {
                    self.members.remove(&executor);
                    warn!(%executor, "executor left before the job started: {reason}");
                }
                ClusterEvent::Message {
                    executor,
                    message: ToDriver::Heartbeat(m),
                } => {
                    if let Some(member) = self.members.get_mut(&executor) {
                        member.rss_bytes = m.rss_bytes;
                    }
                    self.heartbeat(executor, m.peak_rss_bytes, m.store_retries)
                }
                ClusterEvent::Message { .. } => {}
            }
        }
        Ok(())
    }

    pub(super) fn heartbeat(
        &mut self,
        executor: ExecutorId,
        peak_rss_bytes: u64,
        store_retries: u64,
    ) {
        if let Some(m) = self.members.get_mut(&executor) {
            m.last_seen = Instant::now();
            m.last_seen_ms = super::epoch::now_ms();
            m.peak_rss_bytes = m.peak_rss_bytes.max(peak_rss_bytes);
            // Reports may arrive out of order (heartbeats and task reports): count increases.
            self.store_retries += store_retries.saturating_sub(m.store_retries);
            m.store_retries = m.store_retries.max(store_retries);
        }
    }

    /// Tells the reporter which executors there are now, and how they are: when they changed,
    /// else at most every 500 ms (their heartbeats come that often; a 0 ms trigger commits
    /// far more often).
    pub(super) fn report_executors(&mut self) {
        let ids: Vec<ExecutorId> = self.members.keys().copied().collect();
        let due = match &self.executors_reported {
            Some((at, known)) => *known != ids || at.elapsed() >= Duration::from_millis(500),
            None => true,
        };
        if !due {
            return;
        }
        self.reporter.report(Event::Executors {
            executors: self.members.iter().map(|(id, m)| m.status(*id)).collect(),
        });
        self.executors_reported = Some((Instant::now(), ids));
    }

    /// Transient object-store failures since the last call, the driver's and its executors'.
    pub(super) fn take_store_retries(&mut self) -> u64 {
        let driver = sluice_checkpoint::location::transient_failures();
        let since = driver.saturating_sub(self.driver_store_retries);
        self.driver_store_retries = driver;
        std::mem::take(&mut self.store_retries) + since
    }

    /// Applies what happened in the cluster while no epoch ran: executors that left are
    /// dropped, new ones are admitted, silent ones are declared lost.
    pub(super) async fn catch_up(&mut self, install: &QueryInstall) {
        let mut idle = EpochScheduler::new(Vec::new(), self.attempts, self.config.limits);
        for (id, m) in &self.members {
            idle.add_executor(*id, m.info.slots);
        }
        while let Ok(event) = self.events.try_recv() {
            let _ = self.handle(&mut idle, install, event).await;
        }
        let _ = self.lose_silent(&mut idle).await;
    }

    /// Runs every task of the epoch; returns the finished scheduler (its reports hold outputs).
    /// `rescaled_from`: the partition count the restored epoch was committed with, when the
    /// keyed state's differs now.
    pub(super) async fn schedule(
        &mut self,
        planned: &PlannedQuery,
        install: &QueryInstall,
        input: &EpochInput,
        rescaled_from: Option<u32>,
        cluster: &mut Cluster,
        mut elastic: Option<&mut super::elastic::BoundedElastic>,
    ) -> Result<EpochScheduler> {
        self.catch_up(install).await;
        let shapes = planned
            .stages
            .iter()
            .map(|s| StageShape {
                id: s.id,
                tasks: s.tasks,
                inputs: s.inputs.clone(),
                pinned: planned.stateful_stages.contains(&s.id),
                // A source scan returns to the executor holding its Kafka consumers.
                sticky: !s.tables.is_empty(),
                // A sink stage's output is in its table (staged); every other stage's, and
                // the rows the driver prints, stay on the executor that ran the task.
                output_on_executor: s.output != StageOutput::Sink,
            })
            .collect();
        let mut scheduler = EpochScheduler::new(shapes, self.attempts, self.config.limits);
        self.adapted = Default::default();
        // Stateful operators start from the last committed epoch's snapshot.
        let restore = if planned.stateful_stages.is_empty() {
            None
        } else {
            input.epoch.0.checked_sub(1).map(Epoch)
        };
        scheduler.set_preferred(self.preferred_homes(planned, restore));
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
        // A scan stage that emits nothing from no input, in an epoch where its tables have no
        // splits, is complete without running (an epoch without new data makes no round trip
        // for it).
        for stage in &planned.stages {
            let StageOutput::Hash { partitions } = stage.output else {
                continue;
            };
            let no_input = stage
                .tables
                .iter()
                .all(|(table, _)| input.sources.get(table).is_none_or(|s| s.splits.is_empty()));
            if no_input
                && !planned.stateful_stages.contains(&stage.id)
                && stage.emits_nothing_without_input()
            {
                for partition in 0..stage.tasks {
                    scheduler.complete_unrun(
                        crate::protocol::TaskKey {
                            stage: stage.id,
                            partition,
                        },
                        crate::protocol::TaskReport {
                            partition_rows: vec![0; partitions],
                            ..Default::default()
                        },
                    );
                }
            }
        }
        // A static table's scan runs again only where its kept outputs are gone or changed.
        let members = &self.members;
        let cached = self
            .static_cache
            .apply(planned, input, &mut scheduler, |e| members.contains_key(&e));
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut without_executors: Option<Instant> = None;
        info!(
            epoch = input.epoch.0,
            stages = planned.stages.len(),
            executors = self.members.len(),
            cached,
            "scheduling epoch"
        );
        self.running_epoch = input.epoch.0;
        self.reporter.report(Event::EpochStarted {
            epoch: input.epoch.0,
            stages: planned.stages.len(),
            executors: self.members.len(),
        });
        self.report_executors();
        // Which stages were last reported finished (a stage whose outputs were lost with an
        // executor runs again, and is reported again when it finishes).
        let mut finished = vec![false; planned.stages.len()];
        loop {
            for (stage, reported) in finished.iter_mut().enumerate() {
                let done = scheduler.stage_done(StageId(stage));
                if done && !*reported {
                    info!(epoch = input.epoch.0, stage, "stage finished");
                    self.reporter.report(Event::StageFinished {
                        epoch: input.epoch.0,
                        stage,
                        tasks: planned.stages[stage].tasks,
                    });
                }
                *reported = done;
            }
            self.adapted
                .adapt(planned, &mut scheduler, &self.config.adaptive);
            for a in scheduler.poll(Instant::now()) {
                let stage = &planned.stages[a.task.stage.0];
                let splits = stage
                    .tables
                    .iter()
                    .map(|(t, parts)| (t.clone(), assignments[&(t.clone(), *parts)].clone()))
                    .collect();
                let inputs = stage
                    .inputs
                    .iter()
                    .map(|s| {
                        let StageOutput::Hash { .. } = planned.stages[s.0].output else {
                            return (*s, self.locations(&scheduler, *s, 0));
                        };
                        // The output partitions this task reads of each upstream map output
                        // (its own, or several when coalesced), and which map outputs (all,
                        // or a range when it is a slice of a skewed partition).
                        let (partitions, maps) = self.adapted.reads(a.task, *s);
                        let locations = partitions
                            .iter()
                            .flat_map(|&r| {
                                let mut l = self.locations(&scheduler, *s, r);
                                if r != a.task.partition {
                                    l.iter_mut().for_each(|l| l.reduce_partition = Some(r));
                                }
                                l
                            })
                            .filter(|l| maps.is_none_or(|m| m.contains(&l.map_partition)))
                            .collect();
                        (*s, locations)
                    })
                    .collect();
                if a.speculative {
                    info!(task = %a.task, executor = %a.executor, "speculative attempt of a straggler");
                }
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
                    // Keyed state: a stateful stage reading a hash shuffle (a stage reading
                    // one gathered input has one partition in every layout).
                    restore_partitions: rescaled_from.filter(|_| {
                        planned.stateful_stages.contains(&a.task.stage)
                            && planned.stages[a.task.stage.0].inputs.iter().any(|s| {
                                matches!(planned.stages[s.0].output, StageOutput::Hash { .. })
                            })
                    }),
                    plan_partition: self.adapted.plan_partition(a.task),
                };
                if let Some(member) = self.members.get(&a.executor) {
                    tracing::trace!(target: "sluice::latency", attempt = a.attempt.0, "task sent");
                    send(member, ToExecutor::RunTask(task)).await;
                }
            }
            self.attempts = scheduler.next_attempt();
            if scheduler.is_complete() {
                self.placement = scheduler.placement();
                return Ok(scheduler);
            }
            // With every executor gone, wait for replacements (local respawns, standalone
            // executors rejoining) for a while.
            if scheduler.executor_count() == 0 {
                let since = *without_executors.get_or_insert_with(Instant::now);
                if since.elapsed() > self.config.executor_wait {
                    return Err(EngineError::Cluster(format!(
                        "no executor left for {}s; epoch {} cannot run",
                        self.config.executor_wait.as_secs(),
                        input.epoch
                    )));
                }
            } else {
                without_executors = None;
            }
            tokio::select! {
                event = self.events.recv() => {
                    let event = event.ok_or_else(|| EngineError::Internal("cluster event channel closed".into()))?;
                    if let Some(failure) = self.handle(&mut scheduler, install, event).await {
                        return Err(self.describe_failure(planned, failure));
                    }
                }
                _ = tick.tick() => {
                    if let Some(failure) = self.lose_silent(&mut scheduler).await {
                        return Err(self.describe_failure(planned, failure));
                    }
                    if let Some(e) = elastic.as_deref_mut() {
                        self.allocate_bounded(e, &mut scheduler, cluster).await?;
                    }
                }
            }
        }
    }

    /// Where each stateful task should run: where it ran last, or else (a restarted driver,
    /// executors that rejoined) on an executor that reported holding its partition at the
    /// epoch it restores from, so that state is reused rather than restored.
    fn preferred_homes(
        &self,
        planned: &PlannedQuery,
        restore: Option<Epoch>,
    ) -> BTreeMap<crate::protocol::TaskKey, ExecutorId> {
        let mut homes = self.placement.clone();
        homes.retain(|_, e| self.members.contains_key(e));
        if restore.is_none() {
            return homes;
        }
        for stage in planned
            .stages
            .iter()
            .filter(|s| planned.stateful_stages.contains(&s.id))
        {
            for partition in 0..stage.tasks {
                let task = crate::protocol::TaskKey {
                    stage: stage.id,
                    partition,
                };
                if homes.contains_key(&task) {
                    continue;
                }
                let holder = self.members.iter().find(|(_, m)| {
                    m.info.state.iter().any(|h| {
                        h.query_id == self.query_id
                            && h.partition as usize == partition
                            && h.epoch == restore
                    })
                });
                if let Some((id, _)) = holder {
                    homes.insert(task, *id);
                }
            }
        }
        homes
    }

    /// Declares executors silent for longer than the heartbeat timeout lost (a hung or
    /// stopped process counts).
    async fn lose_silent(&mut self, scheduler: &mut EpochScheduler) -> Option<EpochFailure> {
        let timeout = self.config.heartbeat_timeout;
        let silent: Vec<ExecutorId> = self
            .members
            .iter()
            .filter(|(_, m)| m.last_seen.elapsed() > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            let reason = format!("sent no heartbeat for {} ms", timeout.as_millis());
            if let Some(f) = self.lose(scheduler, id, &reason).await {
                return Some(f);
            }
        }
        None
    }

    /// Removes a lost executor: it is fenced off (its connection closed, a local process
    /// killed so it is replaced), its peers stop fetching from it, and its work is re-run
    /// elsewhere by lineage.
    async fn lose(
        &mut self,
        scheduler: &mut EpochScheduler,
        executor: ExecutorId,
        reason: &str,
    ) -> Option<EpochFailure> {
        let member = self.members.remove(&executor)?;
        member
            .connection
            .close(quinn::VarInt::from_u32(3), b"declared lost");
        if let Some(killer) = &self.killer {
            // Ours to kill: a stopped or hung process is replaced by a fresh one. Killed through
            // the supervisor's child handle, never by the pid the executor reported: that
            // process may have exited and its pid been reused.
            killer.kill(&member.info);
        }
        for peer in self.members.values() {
            let _ = peer.sender.try_send(ToExecutor::PeerLost {
                executor,
                data_addr: member.info.data_addr,
            });
        }
        let lost_at = Instant::now();
        match scheduler.on_executor_lost(executor, lost_at) {
            Ok(rerun) => {
                if !rerun.is_empty() {
                    let tasks: Vec<String> = rerun.iter().map(|t| t.to_string()).collect();
                    self.reporter.report(Event::notice(format!(
                        "executor {} (pid {}) lost: {reason}; re-running {} task(s) it held: {}",
                        member.info.name,
                        member.info.pid,
                        rerun.len(),
                        tasks.join(" ")
                    )));
                }
                self.lost.push(LostExecutor {
                    id: executor.0,
                    name: member.info.name.clone(),
                    pid: member.info.pid,
                    reason: reason.to_string(),
                    tasks_rerun: rerun.len(),
                });
                None
            }
            Err(f) => Some(f),
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
                // Messages of an executor already declared lost are ignored (fenced): its
                // attempts were superseded.
                let m = self.members.get_mut(&executor)?;
                m.last_seen = Instant::now();
                let now = Instant::now();
                match message {
                    ToDriver::TaskFinished {
                        attempt,
                        outcome: TaskOutcome::Succeeded(report),
                    } => {
                        tracing::trace!(target: "sluice::latency", attempt = attempt.0, "report handled");
                        m.tasks_run += 1;
                        self.heartbeat(executor, report.peak_rss_bytes, report.store_retries);
                        let task = scheduler.task_of(attempt);
                        let rows = report.output_rows;
                        scheduler.on_succeeded(attempt, report, now);
                        if let Some(task) = task {
                            self.reporter.report(Event::TaskFinished {
                                epoch: self.running_epoch,
                                stage: task.stage.0,
                                partition: task.partition,
                                rows,
                            });
                        }
                        None
                    }
                    ToDriver::TaskFinished {
                        attempt,
                        outcome: TaskOutcome::Failed { message, retryable },
                    } => {
                        m.tasks_run += 1;
                        m.tasks_failed += 1;
                        if retryable {
                            warn!(%executor, "task attempt {} failed, retrying: {message}", attempt.0);
                        }
                        scheduler.on_failed(attempt, message, retryable, now)
                    }
                    ToDriver::TaskFinished {
                        attempt,
                        outcome:
                            TaskOutcome::FetchFailed {
                                stage,
                                map_partition,
                                executor: from,
                                message,
                            },
                    } => {
                        info!(%executor, "attempt {} could not fetch stage {stage} task {map_partition} from {from}: {message}", attempt.0);
                        scheduler.on_fetch_failed(attempt, stage, map_partition, from, message)
                    }
                    ToDriver::Heartbeat(metrics) => {
                        m.rss_bytes = metrics.rss_bytes;
                        self.heartbeat(executor, metrics.peak_rss_bytes, metrics.store_retries);
                        None
                    }
                    ToDriver::Register(_) => None,
                }
            }
            ClusterEvent::Registered {
                executor,
                info,
                sender,
                connection,
            } => {
                // A new or returning executor takes part from now on.
                info!(%executor, name = %info.name, "executor joined; it receives work at once");
                let member = Member::new(info, sender, connection);
                send(&member, ToExecutor::InstallQuery(Box::new(install.clone()))).await;
                scheduler.add_executor(executor, member.info.slots);
                self.members.insert(executor, member);
                None
            }
            ClusterEvent::Disconnected { executor, reason } => {
                if let Some(m) = self.retiring.remove(&executor) {
                    info!(%executor, name = %m.info.name, "executor stopped (dynamic allocation)");
                    return None;
                }
                self.lose(scheduler, executor, &reason).await
            }
            ClusterEvent::ProcessExited { name, status } => {
                let id = self
                    .members
                    .iter()
                    .find(|(_, m)| m.info.name == name)
                    .map(|(id, _)| *id)?;
                self.lose(scheduler, id, &status).await
            }
        }
    }

    pub(super) fn describe_failure(
        &self,
        planned: &PlannedQuery,
        failure: EpochFailure,
    ) -> EngineError {
        let operator = |stage: usize| {
            planned
                .stages
                .get(stage)
                .map(|s| crate::plan::describe_stage(s.plan.as_ref()))
                .unwrap_or_default()
        };
        match failure {
            EpochFailure::TaskFailed {
                task,
                executor,
                message,
            } => EngineError::TaskFailed {
                stage: task.stage.0,
                partition: task.partition,
                operator: operator(task.stage.0),
                executor: self.executor_name(executor),
                message,
                retryable: false,
            },
            EpochFailure::RetriesExhausted { task, history } => {
                let attempts = history
                    .iter()
                    .map(|r| {
                        format!(
                            "\n  attempt {} on {}: {}",
                            r.attempt,
                            self.executor_name(ExecutorId(r.executor)),
                            match &r.outcome {
                                AttemptOutcome::Failed(m) => m.clone(),
                                AttemptOutcome::FetchFailed(m) =>
                                    format!("input fetch failed: {m}"),
                                AttemptOutcome::ExecutorLost => "its executor was lost".into(),
                                AttemptOutcome::OutputLost =>
                                    "succeeded, output lost with its executor".into(),
                                AttemptOutcome::Succeeded => "succeeded".into(),
                                AttemptOutcome::Superseded => "superseded".into(),
                                AttemptOutcome::Running => "running".into(),
                            }
                        )
                    })
                    .collect::<String>();
                EngineError::RetriesExhausted {
                    stage: task.stage.0,
                    partition: task.partition,
                    operator: operator(task.stage.0),
                    attempts: history.len(),
                    history: attempts,
                }
            }
        }
    }

    fn executor_name(&self, id: ExecutorId) -> String {
        self.members
            .get(&id)
            .map(|m| format!("{} ({id})", m.info.name))
            .or_else(|| {
                self.lost
                    .iter()
                    .find(|l| l.id == id.0)
                    .map(|l| format!("{} ({id}, lost)", l.name))
            })
            .unwrap_or_else(|| id.to_string())
    }
}
