//! The driver: turns a job into epochs, runs each on the executors, and commits it.
//!
//! For every epoch the driver
//! 1. decides what it reads (file splits) and records that in `offsets/N` *before* any work,
//!    or — on restart — reads back exactly what was recorded;
//! 2. schedules the query's cached stage DAG as tasks on executors ([`scheduler`]);
//! 3. commits: the sink publishes the epoch's staged files (recorded first, so a crash
//!    mid-publish is completed on restart), then `commits/N` is written.
//!
//! A bounded job is epoch 0 of its query through exactly this path. Running it again on the
//! same checkpoint finds epoch 0 committed and does nothing.

pub mod cluster;
mod report;
mod run_dir;
pub mod scheduler;
mod signals;
mod splits;
mod tasks;

pub use report::{
    EpochInput, EpochOutcome, EpochProgress, EpochResult, ExecutorSummary, JobReport, Timings,
    Trigger,
};
use run_dir::RunDir;
use signals::{interruptible, watch_signals};
pub use splits::assign_splits;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_checkpoint::{CheckpointStore, CommitRecord, Epoch, EpochAction};
use sluice_connectors::kafka::sink::KafkaCommitter;
use sluice_connectors::parquet_sink::ParquetCommitter;
use sluice_connectors::{Committer, PlanRequest, ReadCounters, WriterReceipt};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::error::{EngineError, Result};
use crate::job::Job;
use crate::plan::{self, PlannedQuery, PlannedSink};
use crate::protocol::{ExecutorId, ExecutorInfo, QueryInstall, ToExecutor};
use cluster::{Cluster, ClusterEvent};

/// How executors come to exist.
#[derive(Debug, Clone)]
pub enum ClusterMode {
    /// The driver spawns executor processes on this machine.
    Local {
        /// Executor processes.
        executors: usize,
        /// Task slots per executor.
        slots_per_executor: u32,
        /// Memory per executor in bytes.
        memory_bytes: u64,
    },
    /// Executors started elsewhere join the driver's address.
    Standalone {
        /// Address to listen on.
        listen: SocketAddr,
        /// Directory with `ca.crt` and `ca.key` (from `sluice cluster init`).
        cluster_dir: PathBuf,
        /// Executors that must register before the job starts.
        min_executors: usize,
        /// How long to wait for them.
        register_timeout: Duration,
    },
}

/// How the driver runs a job.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The cluster manager.
    pub cluster: ClusterMode,
    /// Partitions per scan and shuffle; defaults to the cluster's total slots.
    pub parallelism: Option<usize>,
    /// Checkpoint directory; without one, a temporary checkpoint is used (the run is not
    /// resumable and a rerun writes its output again).
    pub checkpoint: Option<PathBuf>,
    /// Most rows the console sink prints.
    pub max_result_rows: usize,
    /// An executor silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Task retry and speculation policy.
    pub limits: scheduler::SchedulerLimits,
    /// How long an epoch waits for executors when none is left.
    pub executor_wait: Duration,
    /// Local mode: restarts of lost executors before the cluster shrinks for good.
    pub max_executor_restarts: u32,
    /// Where local runs keep certificates and executor work directories (a temporary
    /// directory by default; removed at exit).
    pub work_dir: Option<PathBuf>,
    /// The `sluice` binary to spawn local executors from.
    pub program: PathBuf,
    /// When streaming epochs run (default: every second). Ignored by bounded jobs.
    pub trigger: Option<Trigger>,
    /// Print each epoch's progress record as one JSON line on stdout.
    pub progress_json: bool,
    /// Epochs kept in the checkpoint's logs.
    pub retain_epochs: u64,
    /// fsync the offsets and commit logs (default); off trades power-loss safety for latency.
    pub fsync: bool,
    /// Run epochs on the trigger even when no source has new data.
    pub no_data_epochs: bool,
    /// Stop after this many epochs committed by this run.
    pub max_epochs: Option<u64>,
}

/// A registered executor as the driver tracks it.
struct Member {
    info: ExecutorInfo,
    sender: mpsc::Sender<ToExecutor>,
    connection: quinn::Connection,
    last_seen: Instant,
    peak_rss_bytes: u64,
}

/// Runs `job`: one epoch for a bounded job, epochs on the trigger for a streaming one.
/// Executors are torn down on every exit path.
pub async fn run(job: Job, config: DriverConfig) -> Result<JobReport> {
    let started = Instant::now();
    let run_dir = RunDir::create(config.work_dir.as_deref())?;
    // Executors first: their processes start up while the driver opens the checkpoint and
    // plans. (On an early return below they are killed with the cluster.)
    let (events_tx, events) = mpsc::channel::<ClusterEvent>(4096);
    let mut cluster = Cluster::start(&config, &run_dir, events_tx).await?;
    let checkpoint_dir = config
        .checkpoint
        .clone()
        .unwrap_or_else(|| run_dir.path.join("checkpoint"));
    let mut store = CheckpointStore::open_or_create(
        &checkpoint_dir,
        &job.fingerprint,
        &uuid::Uuid::new_v4().simple().to_string(),
    )?;
    // A temporary checkpoint is deleted when the run ends: fsyncing it would protect nothing.
    // (The sink's published files are fsynced either way.)
    let config = DriverConfig {
        fsync: config.fsync && config.checkpoint.is_some(),
        ..config
    };
    store.set_durable(config.fsync);
    let _lock = store.lock()?;
    let query_id = store.metadata().query_id.clone();
    if job.is_bounded() {
        if let EpochAction::PlanNew { epoch: next } = store.epoch_log()?.next_action() {
            if next > Epoch(0) {
                let committed = store.read_commit(Epoch(0))?;
                return Ok(JobReport {
                    query_id,
                    epoch: Epoch(0),
                    outcome: EpochOutcome::AlreadyCommitted,
                    output_rows: committed.map(|c| c.output_rows).unwrap_or(0),
                    timings: Timings {
                        total: started.elapsed(),
                        ..Default::default()
                    },
                    ..JobReport::empty()
                });
            }
        }
    }

    let mut runner = EpochRunner {
        config: &config,
        store: &store,
        query_id: query_id.clone(),
        events,
        members: BTreeMap::new(),
        attempts: 0,
        committer: None,
        current: None,
        placement: BTreeMap::new(),
        killer: cluster.killer(),
        lost: Vec::new(),
        next_due: None,
    };
    let result = runner.run(&job, &mut cluster, started).await;
    // Teardown, whatever happened.
    for member in runner.members.values() {
        let _ = member.sender.try_send(ToExecutor::ForgetQuery {
            query_id: query_id.clone(),
        });
        let _ = member.sender.try_send(ToExecutor::Shutdown {
            reason: "job finished".into(),
        });
    }
    let executors = runner
        .members
        .values()
        .map(|m| ExecutorSummary {
            name: m.info.name.clone(),
            pid: m.info.pid,
            peak_rss_bytes: m.peak_rss_bytes,
        })
        .collect();
    let committer = runner.committer.take();
    let current = runner.current.take();
    let connections: Vec<quinn::Connection> = runner
        .members
        .values()
        .map(|m| m.connection.clone())
        .collect();
    drop(runner);
    // Standalone executors close their connection once they have the Shutdown; closing the
    // endpoint before that could drop the message, and such an executor would wait for a
    // driver that is not coming back. Local executors are waited for as processes instead.
    if !cluster.is_local() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for c in connections {
                c.closed().await;
            }
        })
        .await;
    }
    cluster.shutdown().await;
    if let (Err(_), Some(committer), Some(epoch)) = (&result, committer, current) {
        committer.abort(&query_id, epoch);
    }
    let mut report = result?;
    report.executors = executors;
    report.timings.total = started.elapsed();
    Ok(report)
}

struct EpochRunner<'a> {
    config: &'a DriverConfig,
    store: &'a CheckpointStore,
    query_id: String,
    events: mpsc::Receiver<ClusterEvent>,
    members: BTreeMap<ExecutorId, Member>,
    attempts: u64,
    /// The sink's committer once planned; a failed epoch's staged files are discarded with it
    /// after the executors have stopped (so no task is still writing).
    committer: Option<Arc<dyn Committer>>,
    /// The epoch running, if any.
    current: Option<Epoch>,
    /// Where each stateful task ran last (it holds that task's state).
    placement: BTreeMap<crate::protocol::TaskKey, ExecutorId>,
    /// Local mode: the executors are this driver's processes; a lost one is killed through
    /// its process handle and replaced.
    killer: Option<cluster::LocalKiller>,
    /// Executors lost since the last epoch committed.
    lost: Vec<report::LostExecutor>,
    /// When the epoch after the running one is due to start (`None`: not right after it).
    next_due: Option<Instant>,
}

/// Consecutive failed attempts to plan an epoch (broker unreachable) before the query fails.
const PLANNING_RETRIES: u32 = 60;

/// Times a streaming epoch that failed transiently is re-run before the query fails.
const EPOCH_RETRIES: u32 = 3;

/// State snapshots older than the retained epochs are deleted after every this many epochs.
const STATE_GC_EVERY_EPOCHS: u64 = 10;

/// With a trigger that is due and no new data, how long the driver waits before asking the
/// sources again (Spark's `pollingDelay` is 10 ms; a `0ms` trigger asks for low latency).
const NO_DATA_POLL_DELAY: Duration = Duration::from_millis(1);

/// What the loop does after an epoch.
enum Next {
    Continue,
    Stop,
}

impl EpochRunner<'_> {
    async fn run(
        &mut self,
        job: &Job,
        cluster: &mut Cluster,
        started: Instant,
    ) -> Result<JobReport> {
        let mut signals = watch_signals();
        let bounded_job = job.is_bounded();
        let threshold = if bounded_job { 1 } else { 2 };

        // Standalone parallelism follows the executors that joined, so wait for them first.
        if matches!(self.config.cluster, ClusterMode::Standalone { .. }) {
            interruptible(&mut signals, 1, self.await_executors(cluster.expected)).await??;
        }
        let slots: usize = match &self.config.cluster {
            ClusterMode::Local {
                executors,
                slots_per_executor,
                ..
            } => executors * *slots_per_executor as usize,
            ClusterMode::Standalone { .. } => {
                self.members.values().map(|m| m.info.slots as usize).sum()
            }
        };
        let mut parallelism = self.config.parallelism.unwrap_or(slots).max(1);
        let mut planned = plan::plan(job, parallelism).await?;
        // State is partitioned by key hash over the query's partitions: a stateful query keeps
        // the partition count its checkpoint started with, whatever the cluster is now.
        let recorded = match self.store.planned_epochs()?.last() {
            Some(&last) => self
                .store
                .read_offsets::<EpochInput>(last)?
                .and_then(|i| i.partitions),
            None => None,
        };
        if let Some(recorded) = recorded {
            if recorded != parallelism && !planned.stateful_stages.is_empty() {
                eprintln!(
                    "sluice: keeping the {recorded} state partitions this query's checkpoint started with (not {parallelism})"
                );
                parallelism = recorded;
                planned = plan::plan(job, parallelism).await?;
            }
        }
        let planning = started.elapsed();
        let bounded = planned.sources.values().all(|s| s.bounded());
        let trigger = match (bounded, self.config.trigger) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Trigger::Interval(Duration::from_secs(1))),
        };
        let committer = match &planned.sink {
            PlannedSink::Parquet(spec) => {
                Some(Arc::new(ParquetCommitter::new(spec.clone())) as Arc<dyn Committer>)
            }
            PlannedSink::Kafka(_) => Some(Arc::new(KafkaCommitter) as _),
            PlannedSink::Console => None,
        };
        self.committer = committer.clone();
        if matches!(self.config.cluster, ClusterMode::Local { .. }) {
            interruptible(&mut signals, 1, self.await_executors(cluster.expected)).await??;
        }
        let install = QueryInstall {
            query_id: self.query_id.clone(),
            stages: planned.install.clone(),
            sink: planned.sink_install.clone(),
            state: (!planned.stateful_stages.is_empty()).then(|| crate::protocol::StateInstall {
                dir: self.store.root().join("state"),
                durable: self.config.fsync,
            }),
            peers: self.members.values().map(|m| m.info.data_addr).collect(),
        };
        for member in self.members.values() {
            send(member, ToExecutor::InstallQuery(Box::new(install.clone()))).await;
        }
        // `available-now` drains what exists at start, and no more.
        let until: BTreeMap<String, BTreeMap<i32, i64>> = match trigger {
            Some(Trigger::AvailableNow) => {
                let mut until = BTreeMap::new();
                for (name, source) in &planned.sources {
                    if let Some(end) = source.available_end()? {
                        until.insert(name.clone(), end);
                    }
                }
                until
            }
            _ => BTreeMap::new(),
        };

        let mut report = JobReport {
            query_id: self.query_id.clone(),
            stages: planned.stages.len(),
            ..JobReport::empty()
        };
        report.timings.planning = planning;
        let mut next_start = tokio::time::Instant::now();
        let mut last_start: Option<Instant> = None;
        let mut new_epochs = 0u64;
        let mut planning_failures = 0u32;
        loop {
            if !bounded && *signals.borrow() >= 1 {
                report.stopped_by_user = true;
                break;
            }
            let epoch_started = Instant::now();
            let action = self.store.epoch_log()?.next_action();
            let mut timings = Timings::default();
            let (epoch, input, replay) = match action {
                EpochAction::Replay { epoch } => {
                    if let Some(committer) = &committer {
                        if let Some(summary) = committer.recover(self.store, epoch)? {
                            info!(%epoch, "completing a recorded sink commit from an earlier run");
                            let recorded = self.store.read_offsets::<EpochInput>(epoch)?;
                            self.store.write_commit(&CommitRecord {
                                epoch,
                                committed_at_ms: now_ms(),
                                output_rows: summary.rows,
                                max_event_ms: recorded.and_then(|i| i.max_event_ms),
                            })?;
                            report.epoch = epoch;
                            report.outcome = EpochOutcome::CommitCompleted;
                            report.output_rows += summary.rows;
                            report.files += summary.files;
                            report.epochs += 1;
                            if bounded {
                                break;
                            }
                            continue;
                        }
                    }
                    info!(%epoch, "re-running epoch with its recorded input");
                    let input = self
                        .store
                        .read_offsets::<EpochInput>(epoch)?
                        .ok_or_else(|| {
                            EngineError::Internal(format!("offsets/{epoch} vanished"))
                        })?;
                    (epoch, input, true)
                }
                EpochAction::PlanNew { epoch } => {
                    if bounded && epoch > Epoch(0) {
                        report.outcome = EpochOutcome::AlreadyCommitted;
                        break;
                    }
                    if matches!(trigger, Some(Trigger::Once)) && new_epochs >= 1 {
                        break;
                    }
                    let planning_started = Instant::now();
                    let previous = match epoch.0.checked_sub(1) {
                        Some(p) => self.store.read_offsets::<EpochInput>(Epoch(p))?,
                        None => None,
                    };
                    let mut sources = BTreeMap::new();
                    let mut failed = None;
                    for (name, source) in &planned.sources {
                        let request = PlanRequest {
                            previous: previous.as_ref().and_then(|p| p.sources.get(name)),
                            respect_limit: !matches!(trigger, Some(Trigger::Once)),
                            until: until.get(name),
                            rescan: !bounded && source.bounded(),
                        };
                        match source.plan_epoch(&request) {
                            Ok(s) => {
                                sources.insert(name.clone(), s);
                            }
                            Err(e) => {
                                failed = Some(EngineError::from(e));
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        // A broker that is briefly unreachable must not end a streaming query:
                        // nothing was recorded, so the epoch is simply planned again later.
                        planning_failures += 1;
                        if bounded || !e.is_retryable() || planning_failures > PLANNING_RETRIES {
                            return Err(e);
                        }
                        eprintln!(
                            "sluice: planning epoch {epoch} failed ({e}); retrying in 1s ({planning_failures}/{PLANNING_RETRIES})"
                        );
                        interruptible(&mut signals, 1, tokio::time::sleep(Duration::from_secs(1)))
                            .await
                            .ok();
                        continue;
                    }
                    planning_failures = 0;
                    timings.offsets = planning_started.elapsed();
                    // The watermark: the largest event time committed epochs read, minus the
                    // declared delay. It never goes back.
                    let max_event_ms = match epoch.0.checked_sub(1) {
                        Some(p) => self
                            .store
                            .read_commit(Epoch(p))?
                            .and_then(|c| c.max_event_ms)
                            .or(previous.as_ref().and_then(|i| i.max_event_ms)),
                        None => None,
                    };
                    let watermark_ms = planned.watermark_delay_ms.and_then(|delay| {
                        let wm = max_event_ms.map(|m| m.saturating_sub(delay));
                        match (wm, previous.as_ref().and_then(|i| i.watermark_ms)) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            (a, b) => a.or(b),
                        }
                    });
                    // A watermark that moved closes windows even without new data.
                    let watermark_moved = !planned.stateful_stages.is_empty()
                        && watermark_ms.is_some()
                        && watermark_ms != previous.as_ref().and_then(|i| i.watermark_ms);
                    // Static tables are read again every epoch; only new stream data is work.
                    let has_work = bounded
                        || watermark_moved
                        || sources.iter().any(|(name, s)| {
                            !planned.sources[name].bounded()
                                && (!s.splits.is_empty() || !s.gaps.is_empty())
                        });
                    if !has_work {
                        match trigger {
                            Some(Trigger::Once) | Some(Trigger::AvailableNow) => break,
                            _ if self.config.no_data_epochs => {}
                            _ => {
                                // Nothing new: no epoch; look again at the next trigger, and
                                // with a trigger that is already due, after a short poll delay
                                // rather than in a busy loop against the broker.
                                let wait = self
                                    .wait_for_trigger(trigger, &mut next_start, epoch_started)
                                    .unwrap_or_else(|| tokio::time::sleep(NO_DATA_POLL_DELAY));
                                interruptible(&mut signals, 1, wait).await.ok();
                                continue;
                            }
                        }
                    }
                    let input = EpochInput {
                        epoch,
                        batch_timestamp_ms: now_ms(),
                        sources,
                        watermark_ms,
                        max_event_ms,
                        partitions: Some(parallelism),
                    };
                    let write_started = Instant::now();
                    self.store.write_offsets(epoch, &input)?;
                    timings.offsets_write = write_started.elapsed();
                    new_epochs += 1;
                    (epoch, input, false)
                }
            };
            self.current = Some(epoch);
            let last_epoch = bounded
                || self
                    .config
                    .max_epochs
                    .is_some_and(|m| report.epochs + 1 >= m);
            self.next_due = match trigger {
                _ if last_epoch => None,
                Some(Trigger::Interval(d)) => Some(epoch_started + d),
                Some(Trigger::AvailableNow) => Some(epoch_started),
                _ => None,
            };
            let mut failures = 0u32;
            let result = loop {
                let outcome = self
                    .run_epoch(
                        cluster,
                        &planned,
                        &install,
                        &input,
                        &mut signals,
                        threshold,
                        &mut timings,
                    )
                    .await;
                match outcome {
                    Ok(result) => break result,
                    // A transient failure (a broker hiccup, an I/O error) re-runs the epoch
                    // with exactly its recorded input, as a restarted driver would.
                    Err(e) if e.is_retryable() && !bounded && failures < EPOCH_RETRIES => {
                        failures += 1;
                        eprintln!(
                            "sluice: epoch {epoch} failed ({e}); re-running it with its recorded input ({failures}/{EPOCH_RETRIES})"
                        );
                        if let Some(committer) = &self.committer {
                            committer.abort(&self.query_id, epoch);
                        }
                        interruptible(&mut signals, 1, tokio::time::sleep(Duration::from_secs(1)))
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.current = None;
            timings.total = epoch_started.elapsed();
            let since_last = last_start.map(|l| epoch_started.duration_since(l));
            last_start = Some(epoch_started);
            let progress = EpochProgress::new(
                &self.query_id,
                &input,
                replay,
                &result,
                &timings,
                since_last,
            );
            self.store.write_progress(epoch, &progress)?;
            if self.config.progress_json {
                println!("{}", serde_json::to_string(&progress).unwrap_or_default());
            } else if !bounded {
                eprintln!("{}", progress.summary_line());
            }
            if let Some(console) = &result.console {
                if bounded {
                    report.console = Some(console.clone());
                } else {
                    println!("-- epoch {epoch} --\n{console}");
                }
            }
            for (name, source) in &planned.sources {
                if let Some(s) = input.sources.get(name) {
                    if let Err(e) = source.on_commit(s) {
                        warn!("{e}");
                    }
                }
            }
            for member in self.members.values() {
                let _ = member.sender.try_send(ToExecutor::ForgetEpoch {
                    query_id: self.query_id.clone(),
                    epoch,
                });
            }
            self.store.retain(epoch, self.config.retain_epochs)?;
            // Old state snapshots go every few epochs (finding them reads every retained
            // manifest), and always at the end of a bounded run.
            if !planned.stateful_stages.is_empty()
                && (epoch.0 % STATE_GC_EVERY_EPOCHS == 0 || last_epoch)
            {
                let oldest = Epoch((epoch.0 + 1).saturating_sub(self.config.retain_epochs.max(1)));
                if let Err(e) = sluice_checkpoint::state::collect_garbage(
                    &self.store.root().join("state"),
                    oldest,
                ) {
                    warn!("removing old state snapshots: {e}");
                }
            }
            report.epoch = epoch;
            report.outcome = EpochOutcome::Committed;
            report.output_rows += result.output_rows;
            report.files += result.files;
            report.epochs += 1;
            report.tasks = self.attempts;
            report.timings.offsets += timings.offsets + timings.offsets_write;
            report.timings.execution += timings.execution;
            report.timings.commit += timings.commit + timings.commit_write;
            if bounded || self.config.max_epochs.is_some_and(|m| report.epochs >= m) {
                break;
            }
            if let Next::Stop = self
                .after_epoch(trigger, &mut next_start, epoch_started, &mut signals)
                .await
            {
                if *signals.borrow() >= 1 {
                    report.stopped_by_user = true;
                }
                break;
            }
        }
        Ok(report)
    }

    /// Waits for the next trigger (interval triggers only); `None` when it is due already. (A
    /// timer is not armed for a start that is due: tokio's timer rounds up to the next
    /// millisecond, which would add up to 1 ms to every epoch of a `0ms` trigger.)
    fn wait_for_trigger(
        &self,
        trigger: Option<Trigger>,
        next_start: &mut tokio::time::Instant,
        epoch_started: Instant,
    ) -> Option<tokio::time::Sleep> {
        let now = tokio::time::Instant::now();
        match trigger {
            Some(Trigger::Interval(d)) => {
                // Epochs start on the interval; one that overran is followed at once.
                let planned = tokio::time::Instant::from_std(epoch_started) + d;
                *next_start = if planned > now { planned } else { now };
            }
            _ => *next_start = now,
        }
        (*next_start > now).then(|| tokio::time::sleep_until(*next_start))
    }

    async fn after_epoch(
        &mut self,
        trigger: Option<Trigger>,
        next_start: &mut tokio::time::Instant,
        epoch_started: Instant,
        signals: &mut watch::Receiver<u32>,
    ) -> Next {
        if *signals.borrow() >= 1 {
            return Next::Stop;
        }
        match trigger {
            None => Next::Stop,
            Some(Trigger::Once) | Some(Trigger::AvailableNow) => Next::Continue,
            Some(Trigger::Interval(_)) => {
                let Some(wait) = self.wait_for_trigger(trigger, next_start, epoch_started) else {
                    return Next::Continue;
                };
                match interruptible(signals, 1, wait).await {
                    Ok(()) => Next::Continue,
                    Err(_) => Next::Stop,
                }
            }
        }
    }

    /// Runs one epoch whose input is recorded: schedules its tasks, commits the sink, writes
    /// `commits/N`.
    #[allow(clippy::too_many_arguments)]
    async fn run_epoch(
        &mut self,
        cluster: &Cluster,
        planned: &PlannedQuery,
        install: &QueryInstall,
        input: &EpochInput,
        signals: &mut watch::Receiver<u32>,
        threshold: u32,
        timings: &mut Timings,
    ) -> Result<EpochResult> {
        let epoch = input.epoch;
        let exec_started = Instant::now();
        let scheduler =
            interruptible(signals, threshold, self.schedule(planned, install, input)).await??;
        timings.execution = exec_started.elapsed();
        // The next epoch starts as soon as this one commits: sources may find out what is new
        // while it commits (Kafka: the latest offsets).
        if self.next_due.is_some_and(|due| due <= Instant::now()) {
            for source in planned.sources.values() {
                source.prepare_next_epoch();
            }
        }

        let commit_started = Instant::now();
        let final_stage = planned.stages.last().expect("a plan has a final stage").id;
        let mut read = ReadCounters::default();
        let mut state: BTreeMap<u32, crate::protocol::OperatorStateMetrics> = BTreeMap::new();
        for stage in &planned.stages {
            for (_, _, r) in scheduler.reports(stage.id) {
                read.add(r.read.clone());
                for m in &r.state {
                    let entry = state.entry(m.operator).or_insert_with(|| {
                        crate::protocol::OperatorStateMetrics {
                            operator: m.operator,
                            ..Default::default()
                        }
                    });
                    entry.add(m);
                }
            }
        }
        let mut result = EpochResult {
            read,
            state: state.into_values().collect(),
            attempts: scheduler.attempt_count(),
            retried: scheduler
                .retried()
                .into_iter()
                .map(|(t, attempts)| report::RetriedTask {
                    stage: t.stage.0,
                    partition: t.partition,
                    attempts,
                })
                .collect(),
            lost: std::mem::take(&mut self.lost),
            ..Default::default()
        };
        report::record_gaps(self.store, input, &result.read)?;
        match &self.committer {
            Some(committer) => {
                let receipts: Vec<WriterReceipt> = scheduler
                    .reports(final_stage)
                    .into_iter()
                    .filter_map(|(_, _, r)| r.receipt.clone())
                    .collect();
                let summary = committer.commit(self.store, epoch, receipts)?;
                result.output_rows = summary.rows;
                result.files = summary.files;
                result.bytes = summary.bytes;
            }
            None => {
                let printer = self
                    .fetch_results(cluster, planned, &scheduler, epoch)
                    .await?;
                result.output_rows = printer.total();
                result.console = Some(
                    printer
                        .render()
                        .map_err(|e| EngineError::Internal(e.to_string()))?,
                );
            }
        }
        timings.commit = commit_started.elapsed();
        let write_started = Instant::now();
        let max_event_ms = match (input.max_event_ms, result.read.max_event_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.store.write_commit(&CommitRecord {
            epoch,
            committed_at_ms: now_ms(),
            output_rows: result.output_rows,
            max_event_ms,
        })?;
        timings.commit_write = write_started.elapsed();
        Ok(result)
    }
}

async fn send(member: &Member, message: ToExecutor) {
    if member.sender.send(message).await.is_err() {
        warn!(name = %member.info.name, "executor's queue is closed");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
