//! The async shell of the epoch lifecycle: [`EpochRunner`] performs the [`Action`]s the
//! decision core ([`super::lifecycle::Lifecycle`]) returns — it reads and writes the
//! checkpoint, asks the sources, runs the tasks ([`Tasks`]), publishes the sink — and tells the
//! core what happened. Every decision (replay, finish a recorded publish, retry, wait, stop)
//! is the core's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_checkpoint::{CheckpointStore, CommitRecord, Epoch, EpochAction};
use sluice_connectors::{PlanRequest, ReadCounters, SourceEpoch, WriterReceipt};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use super::allocation::{Allocation, Decision};
use super::cluster::Cluster;
use super::elastic::BoundedElastic;
use super::events::{Event, Reporter};
use super::lifecycle::{
    Action, Answer, Lifecycle, Observed, Policy, Stop, Waiting, EPOCH_RETRIES, PLANNING_RETRIES,
};
use super::report::{self, EpochInput, EpochOutcome, EpochProgress, EpochResult, JobReport};
use super::scheduler::EpochScheduler;
use super::signals::{interruptible, watch_signals};
use super::sinks::{Delivered, SinkSet};
use super::tasks::{send, Tasks};
use super::{ClusterMode, DriverConfig, Timings, Trigger};
use crate::error::{EngineError, Result};
use crate::job::Job;
use crate::plan::{self, PlannedQuery};
use crate::protocol::{QueryInstall, ToExecutor};

/// State snapshots older than the retained epochs are deleted after every this many epochs.
const STATE_GC_EVERY_EPOCHS: u64 = 10;

/// Runs a query's epochs: the shell around the decision core.
pub(super) struct EpochRunner<'a> {
    pub config: &'a DriverConfig,
    pub store: &'a CheckpointStore,
    pub tasks: Tasks<'a>,
    /// The committers of the query's tables once planned; a failed epoch's staged files are
    /// discarded with them after the executors have stopped (so no task is still writing).
    pub committer: Option<SinkSet>,
    /// The epoch running, if any.
    pub current: Option<Epoch>,
    /// Dynamic allocation: the policy's state, its last decision not yet carried out, and
    /// the local executors started that have not joined yet.
    pub allocation: Allocation,
    pub wanted: Option<Decision>,
    pub starting: Vec<(String, Instant)>,
    /// A bounded job's allocation while its epoch runs (local manager, allocation on).
    pub bounded_elastic: Option<BoundedElastic>,
    pub reporter: Arc<dyn Reporter>,
}

/// A planned query, ready to run epochs.
pub(super) struct Query {
    planned: PlannedQuery,
    install: QueryInstall,
    parallelism: usize,
    /// Key groups of shuffles and state (`None`: a checkpoint from before key groups).
    key_groups: Option<u32>,
    /// The epoch whose tasks rebuild keyed state committed with another partition count,
    /// and that count.
    rescale: Option<(Epoch, u32)>,
    pub(super) policy: Policy,
    /// `available-now`: where each partition ended at start.
    until: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// The epoch in flight, between the core's actions.
#[derive(Default)]
struct InFlight {
    input: Option<EpochInput>,
    replay: bool,
    timings: Timings,
    scheduler: Option<EpochScheduler>,
    /// The error behind the core's last `Err` observation, for `Retry`, `Wait` and `Fail`.
    error: Option<EngineError>,
    /// The new epoch the sources were asked about, when they failed to answer.
    asked: Option<Epoch>,
    /// The committed epoch leaves a window that its data's watermark closes.
    closes_windows: bool,
}

impl EpochRunner<'_> {
    /// Plans `job` and runs its epochs until the core says stop.
    pub(super) async fn run(
        &mut self,
        job: &Job,
        cluster: &mut Cluster,
        started: Instant,
    ) -> Result<JobReport> {
        let bounded_job = job.is_bounded();
        let mut signals = watch_signals(self.reporter.clone(), !bounded_job);
        // The first Ctrl-C lets a streaming epoch commit; a bounded job stops at once.
        let threshold = if bounded_job { 1 } else { 2 };
        let query = self.prepare(job, cluster, &mut signals, started).await?;
        let mut report = JobReport {
            stages: query.planned.stages.len(),
            ..JobReport::empty(self.tasks.query_id.clone())
        };
        report.timings.planning = started.elapsed();
        self.reporter.report(Event::QueryStarted {
            query_id: self.tasks.query_id.to_string(),
            bounded: query.policy.bounded,
            trigger: query.policy.trigger.map(|t| t.to_string()),
            parallelism: query.parallelism,
            started_at_ms: now_ms(),
            stages: super::events::StageInfo::of(&query.planned),
        });
        let mut life = Lifecycle::new(query.policy);
        let mut flight = InFlight::default();
        let mut last_start: Option<Instant> = None;
        let mut action = life.next(&self.observe()?, Instant::now());
        loop {
            action = match action {
                Action::Stop(stop) => {
                    match stop {
                        Stop::Requested => report.stopped_by_user = true,
                        Stop::AlreadyCommitted => report.outcome = EpochOutcome::AlreadyCommitted,
                        Stop::Finished | Stop::Drained | Stop::MaxEpochs => {}
                    }
                    break;
                }
                Action::Fail => {
                    return Err(flight.error.take().unwrap_or_else(|| {
                        EngineError::Internal("the epoch failed without an error".into())
                    }))
                }
                Action::Wait { until, why } => {
                    if let (Waiting::PlanningRetry { attempt }, Some(e), Some(epoch)) =
                        (why, &flight.error, flight.asked)
                    {
                        self.notice(format!(
                            "planning epoch {epoch} failed ({e}); retrying in 1s ({attempt}/{PLANNING_RETRIES})"
                        ));
                    }
                    flight.error = None;
                    // A start that is due is not put on a timer: tokio's rounds up to the next
                    // millisecond, which would add up to 1 ms to every epoch of a `0ms` trigger.
                    if until > Instant::now() {
                        let until = tokio::time::Instant::from_std(until);
                        let _ =
                            interruptible(&mut signals, 1, tokio::time::sleep_until(until)).await;
                    }
                    if *signals.borrow() >= 1 {
                        life.request_stop();
                    }
                    life.next(&self.observe()?, Instant::now())
                }
                Action::Retry { epoch, attempt, at } => {
                    let e = flight
                        .error
                        .take()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    self.notice(format!(
                        "epoch {epoch} failed ({e}); re-running it with its recorded input ({attempt}/{EPOCH_RETRIES})"
                    ));
                    if let Some(committer) = &self.committer {
                        committer.abort(&self.tasks.query_id, epoch);
                    }
                    let at = tokio::time::Instant::from_std(at);
                    interruptible(&mut signals, 1, tokio::time::sleep_until(at)).await?;
                    if *signals.borrow() >= 1 {
                        life.request_stop();
                    }
                    life.next(&self.observe()?, Instant::now())
                }
                Action::FinishPublish(epoch) => {
                    info!(%epoch, "completing a recorded sink commit from an earlier run");
                    let outcome = self.finish_publish(epoch);
                    let outcome = match outcome {
                        Ok(delivered) => {
                            report.epoch = epoch;
                            report.outcome = EpochOutcome::CommitCompleted;
                            report.output_rows += delivered.total.rows;
                            report.files += delivered.total.files;
                            Ok(())
                        }
                        Err(e) => Err(flight.fail(e)),
                    };
                    life.commit_done(epoch, outcome, Instant::now())
                }
                Action::Replay(epoch) => {
                    info!(%epoch, "re-running epoch with its recorded input");
                    let input = self
                        .store
                        .read_offsets::<EpochInput>(epoch)?
                        .ok_or_else(|| {
                            EngineError::Internal(format!("offsets/{epoch} vanished"))
                        })?;
                    flight.input = Some(input);
                    flight.replay = true;
                    flight.timings = Timings::default();
                    let outcome = self
                        .run_tasks(&query, &mut flight, &life, &mut signals, threshold, cluster)
                        .await;
                    life.ran(epoch, outcome, Instant::now())
                }
                Action::AskSources(epoch) => {
                    flight = InFlight::default();
                    let answer = match self.ask_sources(&query, epoch) {
                        Ok((input, timings, has_work)) => {
                            flight.input = Some(input);
                            flight.timings = timings;
                            Answer::Planned { has_work }
                        }
                        Err(e) => {
                            flight.asked = Some(epoch);
                            Answer::Failed {
                                retryable: flight.fail(e),
                            }
                        }
                    };
                    life.sources_answered(epoch, answer, Instant::now())
                }
                Action::WriteOffsets(epoch) => {
                    let input = flight.input.as_ref().ok_or_else(|| {
                        EngineError::Internal(format!("no input planned for epoch {epoch}"))
                    })?;
                    let write_started = Instant::now();
                    self.store.write_offsets(epoch, input)?;
                    flight.timings.offsets_write = write_started.elapsed();
                    life.offsets_written(epoch, Instant::now())
                }
                Action::Run(epoch) => {
                    let outcome = self
                        .run_tasks(&query, &mut flight, &life, &mut signals, threshold, cluster)
                        .instrument(info_span!("epoch", epoch = epoch.0))
                        .await;
                    life.ran(epoch, outcome, Instant::now())
                }
                Action::Commit(epoch) => {
                    let outcome = match self
                        .commit(cluster, &query, &mut flight)
                        .instrument(info_span!("epoch", epoch = epoch.0))
                        .await
                    {
                        Ok(result) => {
                            let epoch_started = life.epoch_started().unwrap_or_else(Instant::now);
                            let since_last = last_start.map(|l| epoch_started.duration_since(l));
                            last_start = Some(epoch_started);
                            flight.timings.total = epoch_started.elapsed();
                            self.committed(
                                &query,
                                &flight,
                                result,
                                since_last,
                                &life,
                                &mut report,
                            )?;
                            self.allocate(cluster).await?;
                            Ok(())
                        }
                        Err(e) => Err(flight.fail(e)),
                    };
                    self.current = None;
                    if flight.closes_windows {
                        life.windows_closing();
                    }
                    life.commit_done(epoch, outcome, Instant::now())
                }
            };
        }
        report.tasks = self.tasks.attempts;
        report.epochs = life.committed();
        Ok(report)
    }

    /// What the checkpoint says now.
    fn observe(&self) -> Result<Observed> {
        self.store.check_lease()?;
        let log = self.store.epoch_log()?;
        let publish_recorded = match (log.next_action(), &self.committer) {
            (EpochAction::Replay { epoch }, Some(committer)) => {
                committer.publish_recorded(self.store, epoch)?
            }
            _ => false,
        };
        Ok(Observed {
            log,
            publish_recorded,
        })
    }

    pub(super) fn notice(&self, text: String) {
        self.reporter.report(Event::notice(text));
    }

    /// Waits for the executors, plans the query, installs it on them.
    async fn prepare(
        &mut self,
        job: &Job,
        cluster: &mut Cluster,
        signals: &mut watch::Receiver<u32>,
        started: Instant,
    ) -> Result<Query> {
        // Standalone parallelism follows the executors that joined, so wait for them first.
        if matches!(self.config.cluster, ClusterMode::Standalone { .. }) {
            interruptible(signals, 1, self.tasks.await_executors(cluster.expected)).await??;
        }
        let slots: usize = match self.config.cluster.managed_slots() {
            // With dynamic allocation, enough partitions for the most executors.
            Some(slots_per_executor) => {
                self.config.cluster.max_executors() * slots_per_executor as usize
            }
            None => self
                .tasks
                .members
                .values()
                .map(|m| m.info.slots as usize)
                .sum(),
        };
        let desired = self.config.parallelism.unwrap_or(slots).max(1);
        let broadcast = self.config.broadcast_bytes;
        let mut planned = plan::plan_with(job, desired, broadcast).await?;
        let layout = self.state_layout(desired, !planned.stateful_stages.is_empty())?;
        if layout.parallelism != desired {
            planned = plan::plan_with(job, layout.parallelism, broadcast).await?;
        }
        let parallelism = layout.parallelism;
        tracing::debug!(elapsed = ?started.elapsed(), "planned");
        let bounded = planned.sources.values().all(|s| s.bounded());
        let trigger = match (bounded, self.config.trigger) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Trigger::Interval(Duration::from_secs(1))),
        };
        self.committer = SinkSet::new(&planned)?;
        if let Some(slots_per_executor) = self.config.cluster.managed_slots() {
            interruptible(signals, 1, self.tasks.await_executors(cluster.expected)).await??;
            if bounded && self.allocation.enabled() {
                self.bounded_elastic = Some(BoundedElastic::new(
                    self.allocation.policy(),
                    slots_per_executor as usize,
                    self.config.allocation.idle_timeout,
                ));
            }
        }
        let install = QueryInstall {
            query_id: self.tasks.query_id.clone(),
            stages: planned.install.clone(),
            state: (!planned.stateful_stages.is_empty()).then(|| crate::protocol::StateInstall {
                location: self.store.state_location().to_string(),
                durable: self.config.fsync,
            }),
            peers: self
                .tasks
                .members
                .values()
                .map(|m| m.info.data_addr)
                .collect(),
            key_groups: layout.key_groups,
        };
        for member in self.tasks.members.values() {
            send(member, ToExecutor::InstallQuery(Box::new(install.clone()))).await;
        }
        // `available-now` drains what exists at start, and no more.
        let mut until = BTreeMap::new();
        if trigger == Some(Trigger::AvailableNow) {
            for (name, source) in &planned.sources {
                if let Some(end) = source.available_end()? {
                    until.insert(name.clone(), end);
                }
            }
        }
        Ok(Query {
            planned,
            install,
            parallelism,
            key_groups: layout.key_groups,
            rescale: layout.rescale,
            policy: Policy {
                bounded,
                trigger,
                max_epochs: self.config.max_epochs,
                no_data_epochs: self.config.no_data_epochs,
                watermark_epochs: self.config.watermark_epochs,
            },
            until,
        })
    }

    /// Asks every source what the new `epoch` reads, and works out its watermark.
    fn ask_sources(&self, query: &Query, epoch: Epoch) -> Result<(EpochInput, Timings, bool)> {
        let planning_started = Instant::now();
        let previous = match epoch.0.checked_sub(1) {
            Some(p) => self.store.read_offsets::<EpochInput>(Epoch(p))?,
            None => None,
        };
        let trigger = query.policy.trigger;
        let mut sources: BTreeMap<String, SourceEpoch> = BTreeMap::new();
        for (name, source) in &query.planned.sources {
            let request = PlanRequest {
                previous: previous.as_ref().and_then(|p| p.sources.get(name)),
                respect_limit: trigger != Some(Trigger::Once),
                until: query.until.get(name),
                rescan: !query.policy.bounded && source.bounded(),
            };
            sources.insert(name.clone(), source.plan_epoch(&request)?);
        }
        let timings = Timings {
            offsets: planning_started.elapsed(),
            ..Default::default()
        };
        let commit = match epoch.0.checked_sub(1) {
            Some(p) => self.store.read_commit(Epoch(p))?,
            None => None,
        };
        let max_event_ms = commit
            .as_ref()
            .and_then(|c| c.max_event_ms)
            .or(previous.as_ref().and_then(|i| i.max_event_ms));
        let previous_watermark = previous.as_ref().and_then(|i| i.watermark_ms);
        let planned = &query.planned;
        let batch_timestamp_ms = now_ms();
        let (source_watermarks, watermark_ms) = super::watermark::of_epoch(
            planned,
            previous.as_ref(),
            commit.as_ref(),
            &reading(&sources),
            batch_timestamp_ms,
            self.config.watermark_idle_timeout,
        );
        // Static tables are read again every epoch, so only new stream data (or offsets it
        // must account for) is work — or a watermark that moved: it closes windows.
        let watermark_moved = !planned.stateful_stages.is_empty()
            && watermark_ms.is_some()
            && watermark_ms != previous_watermark;
        let has_work = watermark_moved
            || sources.iter().any(|(name, s)| {
                !planned.sources[name].bounded() && (!s.splits.is_empty() || !s.gaps.is_empty())
            });
        let input = EpochInput {
            epoch,
            batch_timestamp_ms,
            sources,
            watermark_ms,
            max_event_ms,
            source_watermarks,
            partitions: Some(query.parallelism),
            key_groups: query.key_groups,
        };
        Ok((input, timings, has_work))
    }

    /// Runs the epoch's tasks; `Err(retryable)` when it failed.
    async fn run_tasks(
        &mut self,
        query: &Query,
        flight: &mut InFlight,
        life: &Lifecycle,
        signals: &mut watch::Receiver<u32>,
        threshold: u32,
        cluster: &mut Cluster,
    ) -> std::result::Result<(), bool> {
        let Some(input) = flight.input.as_ref() else {
            return Err(flight.fail(EngineError::Internal("an epoch without input".into())));
        };
        self.current = Some(input.epoch);
        let exec_started = Instant::now();
        let scheduled = interruptible(
            signals,
            threshold,
            self.tasks.schedule(
                &query.planned,
                &query.install,
                input,
                query
                    .rescale
                    .and_then(|(e, was)| (e == input.epoch).then_some(was)),
                cluster,
                self.bounded_elastic.as_mut(),
            ),
        )
        .await;
        flight.timings.execution = exec_started.elapsed();
        match scheduled {
            Ok(Ok(scheduler)) => {
                // The next epoch starts as soon as this one commits: sources may find out
                // what is new while it commits (Kafka: the latest offsets).
                if life.next_due().is_some_and(|due| due <= Instant::now()) {
                    for source in query.planned.sources.values() {
                        source.prepare_next_epoch();
                    }
                }
                flight.scheduler = Some(scheduler);
                Ok(())
            }
            Ok(Err(e)) | Err(e) => Err(flight.fail(e)),
        }
    }

    /// Completes a publish an earlier run recorded, and writes `commits/N`.
    fn finish_publish(&self, epoch: Epoch) -> Result<Delivered> {
        let committer = self.committer.as_ref().ok_or_else(|| {
            EngineError::Internal(format!("epoch {epoch} has a sink record but no sink"))
        })?;
        let delivered = committer.finish_recorded(self.store, epoch)?;
        let recorded = self.store.read_offsets::<EpochInput>(epoch)?;
        self.store.write_commit(&CommitRecord {
            epoch,
            committed_at_ms: now_ms(),
            output_rows: delivered.total.rows,
            max_event_ms: recorded.as_ref().and_then(|i| i.max_event_ms),
            max_event_by_source: recorded
                .map(|i| {
                    i.source_watermarks
                        .into_iter()
                        .filter_map(|(name, w)| Some((name, w.max_event_ms?)))
                        .collect()
                })
                .unwrap_or_default(),
        })?;
        Ok(delivered)
    }

    /// Publishes the sink's output (the console's rows are fetched) and writes `commits/N`.
    async fn commit(
        &mut self,
        cluster: &Cluster,
        query: &Query,
        flight: &mut InFlight,
    ) -> Result<EpochResult> {
        let planned = &query.planned;
        let (Some(input), Some(scheduler)) = (flight.input.as_ref(), flight.scheduler.take())
        else {
            return Err(EngineError::Internal("commit before the epoch ran".into()));
        };
        let epoch = input.epoch;
        let commit_started = Instant::now();
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
        let mut stages = Vec::with_capacity(planned.stages.len());
        let mut task_outcomes: BTreeMap<String, u64> = BTreeMap::new();
        let adapted = &self.tasks.adapted;
        for stage in &planned.stages {
            let mut reports = scheduler.reports(stage.id);
            // Partitions a neighbour's task read are no tasks of their own.
            reports.retain(|(p, _, _)| {
                !adapted.absorbed.contains(&crate::protocol::TaskKey {
                    stage: stage.id,
                    partition: *p,
                })
            });
            *task_outcomes.entry("succeeded".into()).or_default() += reports.len() as u64;
            let adaptive = adapted.stages.get(&stage.id).cloned();
            stages.push(report::StageProgress::of(stage.id, &reports, adaptive));
        }
        let retried = scheduler.retried();
        for (_, attempts) in &retried {
            for a in attempts {
                if a.outcome != super::scheduler::AttemptOutcome::Succeeded {
                    *task_outcomes.entry(a.outcome.label().into()).or_default() += 1;
                }
            }
        }
        let mut result = EpochResult {
            read,
            stages,
            task_outcomes,
            state: state.into_values().collect(),
            attempts: scheduler.attempt_count(),
            retried: retried
                .into_iter()
                .map(|(t, attempts)| report::RetriedTask {
                    stage: t.stage.0,
                    partition: t.partition,
                    attempts,
                })
                .collect(),
            lost: std::mem::take(&mut self.tasks.lost),
            store_retries: self.tasks.take_store_retries(),
            ..Default::default()
        };
        report::record_gaps(self.store, input, &result.read)?;
        match &self.committer {
            Some(committer) => {
                let receipts = |stage| -> Vec<WriterReceipt> {
                    scheduler
                        .reports(stage)
                        .into_iter()
                        .filter_map(|(_, _, r)| r.receipt.clone())
                        .collect()
                };
                let delivered = committer.commit(self.store, epoch, receipts)?;
                result.output_rows = delivered.total.rows;
                result.files = delivered.total.files;
                result.bytes = delivered.total.bytes;
                result.sinks = delivered.by_table;
            }
            None => {
                let printer = self
                    .tasks
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
        flight.timings.commit = commit_started.elapsed();
        let write_started = Instant::now();
        let max_event_ms = match (input.max_event_ms, result.read.max_event_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut max_event_by_source: BTreeMap<String, i64> = input
            .source_watermarks
            .iter()
            .filter_map(|(name, w)| Some((name.clone(), w.max_event_ms?)))
            .collect();
        for (table, max) in &result.read.max_event_by_table {
            let known = max_event_by_source.entry(table.clone()).or_insert(*max);
            *known = (*known).max(*max);
        }
        let record = CommitRecord {
            epoch,
            committed_at_ms: now_ms(),
            output_rows: result.output_rows,
            max_event_ms,
            max_event_by_source,
        };
        self.store.write_commit(&record)?;
        flight.timings.commit_write = write_started.elapsed();
        // Does the watermark this epoch's data sets close a window an operator holds? Then
        // the epoch that closes it need not wait for the trigger.
        let next_close = result.state.iter().filter_map(|m| m.next_close_ms).min();
        flight.closes_windows = next_close.is_some_and(|next_close| {
            let active = reading(&input.sources);
            let idle = self.config.watermark_idle_timeout;
            let (_, next) = super::watermark::of_epoch(
                planned,
                Some(input),
                Some(&record),
                &active,
                now_ms(),
                idle,
            );
            next.is_some_and(|wm| wm >= next_close)
        });
        self.tasks.static_cache.remember(planned, input, &scheduler);
        Ok(result)
    }

    /// After `commits/N`: the progress record, the user's view, source and executor
    /// bookkeeping, retention.
    fn committed(
        &mut self,
        query: &Query,
        flight: &InFlight,
        result: EpochResult,
        since_last: Option<Duration>,
        life: &Lifecycle,
        report: &mut JobReport,
    ) -> Result<()> {
        let planned = &query.planned;
        let bounded = query.policy.bounded;
        let Some(input) = flight.input.as_ref() else {
            return Err(EngineError::Internal(
                "committed an epoch without input".into(),
            ));
        };
        let epoch = input.epoch;
        let timings = &flight.timings;
        let mut progress = EpochProgress::new(
            &self.tasks.query_id,
            input,
            flight.replay,
            &result,
            timings,
            since_last,
        );
        if let Some(elastic) = &self.bounded_elastic {
            progress.allocation = Some(elastic.record(self.tasks.members.len()));
        } else if self.allocation.enabled() && !bounded {
            progress.allocation = Some(self.decide(query, &progress, timings.execution));
        }
        self.store.write_progress(epoch, &progress)?;
        self.reporter.report(Event::EpochCommitted {
            progress: Box::new(progress),
            bounded,
        });
        if let Some(console) = &result.console {
            if bounded {
                report.console = Some(console.clone());
            } else {
                self.reporter.report(Event::ConsoleRows {
                    epoch: epoch.0,
                    table: console.clone(),
                });
            }
        }
        for (name, source) in &planned.sources {
            if let Some(s) = input.sources.get(name) {
                if let Err(e) = source.on_commit(s) {
                    warn!("{e}");
                }
            }
        }
        self.tasks.report_executors();
        let keep = self.tasks.static_cache.keep();
        for member in self.tasks.members.values() {
            let _ = member.sender.try_send(ToExecutor::ForgetEpoch {
                query_id: self.tasks.query_id.clone(),
                epoch,
                keep: keep.clone(),
            });
        }
        self.store.retain(epoch, self.config.retain_epochs)?;
        // Old state snapshots go every few epochs (finding them reads every retained
        // manifest), and always at the end of a bounded run.
        if !planned.stateful_stages.is_empty()
            && (epoch.0 % STATE_GC_EVERY_EPOCHS == 0 || life.is_last_epoch())
        {
            let oldest = Epoch((epoch.0 + 1).saturating_sub(self.config.retain_epochs.max(1)));
            if let Err(e) =
                sluice_checkpoint::state::collect_garbage(&self.store.state_location(), oldest)
            {
                warn!("removing old state snapshots: {e}");
            }
        }
        report.epoch = epoch;
        report.outcome = EpochOutcome::Committed;
        report.output_rows += result.output_rows;
        report.files += result.files;
        report.timings.offsets += timings.offsets + timings.offsets_write;
        report.timings.execution += timings.execution;
        report.timings.commit += timings.commit + timings.commit_write;
        Ok(())
    }
}

impl InFlight {
    /// Keeps `e` for the core's next action; returns whether a retry may help.
    fn fail(&mut self, e: EngineError) -> bool {
        let retryable = e.is_retryable();
        self.error = Some(e);
        retryable
    }
}

/// The tables an epoch reads new records of.
fn reading(sources: &BTreeMap<String, SourceEpoch>) -> BTreeSet<String> {
    sources
        .iter()
        .filter(|(_, s)| !s.splits.is_empty())
        .map(|(name, _)| name.clone())
        .collect()
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
