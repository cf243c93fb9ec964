//! The epoch scheduler: which task runs where, and how an epoch survives lost work.
//!
//! A pure state machine with no I/O, driven by the driver's event loop:
//! [`EpochScheduler::poll`] hands out assignments for free slots, the `on_*` methods take
//! events. A stage becomes runnable when all its input stages have finished (a barrier, as in
//! Spark), so shuffle readers always find complete upstream outputs.
//!
//! Recovery is by lineage, within the epoch:
//! - a lost executor's running attempts run again elsewhere; its finished tasks run again only
//!   when a stage that is not finished still needs the outputs they left on it (walking the DAG
//!   backwards, so a re-run's own inputs are regenerated too);
//! - a task that could not fetch an input ([`EpochScheduler::on_fetch_failed`]) goes back to
//!   pending and the producing task runs again — it is not counted against the task;
//! - a retryable failure runs the task again after a backoff, up to
//!   [`SchedulerLimits::max_task_failures`]; a non-retryable one ends the epoch at once.
//!
//! Tasks finished on surviving executors are never re-run. Every attempt is kept in the task's
//! history, for progress records and for the error that ends a query.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::{AttemptId, ExecutorId, StageId, TaskKey, TaskReport};

mod outcome;
pub use outcome::{AttemptOutcome, AttemptRecord};

/// A task handed to an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The attempt's id.
    pub attempt: AttemptId,
    /// The task.
    pub task: TaskKey,
    /// Where it runs.
    pub executor: ExecutorId,
    /// A speculative copy of a straggling attempt.
    pub speculative: bool,
}

/// The shape of one stage, as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct StageShape {
    /// The stage.
    pub id: StageId,
    /// Its tasks per epoch.
    pub tasks: usize,
    /// Stages it reads.
    pub inputs: Vec<StageId>,
    /// Whether its tasks hold keyed state: each goes back to the executor that ran it last,
    /// and is never speculated (two attempts would write one state instance).
    pub pinned: bool,
    /// Whether its tasks prefer the executor that ran them last when it has a free slot (a
    /// source scan: the executor keeps the partition's Kafka consumer open), going anywhere
    /// else rather than wait.
    pub sticky: bool,
    /// Whether its outputs live on the executor that ran the task (shuffle files, results),
    /// as opposed to shared storage (a sink's staged files).
    pub output_on_executor: bool,
}

/// Retry and speculation policy.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLimits {
    /// Failed attempts (errors and lost executors) a task may have before the epoch fails.
    pub max_task_failures: u32,
    /// Fetch failures a task may have (each regenerates the missing input) before the epoch
    /// fails.
    pub max_fetch_failures: u32,
    /// Delay before the first retry of a failed task; doubles per failure.
    pub retry_backoff: Duration,
    /// Launch a second attempt of a task running this many times longer than its stage's
    /// median (`None`: no speculation).
    pub speculation: Option<f64>,
    /// Never speculate before a task has run this long.
    pub speculation_min: Duration,
}

impl Default for SchedulerLimits {
    fn default() -> Self {
        Self {
            max_task_failures: 4,
            max_fetch_failures: 8,
            retry_backoff: Duration::from_millis(250),
            speculation: None,
            speculation_min: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone)]
enum TaskState {
    /// Waiting; not before the instant (a retry's backoff).
    Pending { not_before: Option<Instant> },
    /// Attempts in flight (two with speculation), the first one's start.
    Running {
        attempts: Vec<(AttemptId, ExecutorId)>,
        started: Instant,
    },
    Done {
        executor: ExecutorId,
        report: Box<TaskReport>,
        /// How long it ran (`None`: completed without running).
        took: Option<Duration>,
    },
}

#[derive(Debug, Default, Clone)]
struct TaskLog {
    history: Vec<AttemptRecord>,
    failures: u32,
    fetch_failures: u32,
}

#[derive(Debug)]
struct ExecutorLoad {
    slots: u32,
    running: u32,
}

/// Why an epoch cannot finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochFailure {
    /// A task failed in a way another attempt cannot fix (bad data, bad SQL, schema mismatch).
    TaskFailed {
        task: TaskKey,
        executor: ExecutorId,
        message: String,
    },
    /// A task used up its attempts.
    RetriesExhausted {
        task: TaskKey,
        history: Vec<AttemptRecord>,
    },
}

/// Scheduling state of one epoch.
#[derive(Debug)]
pub struct EpochScheduler {
    shapes: Vec<StageShape>,
    tasks: Vec<Vec<TaskState>>,
    logs: Vec<Vec<TaskLog>>,
    executors: BTreeMap<ExecutorId, ExecutorLoad>,
    attempts: HashMap<AttemptId, TaskKey>,
    next_attempt: u64,
    /// Rotates the starting executor so equal-load ties spread tasks across executors.
    rotation: usize,
    /// Where pinned tasks ran before.
    preferred: BTreeMap<TaskKey, ExecutorId>,
    limits: SchedulerLimits,
}

impl EpochScheduler {
    /// A scheduler for stages `shapes` (in DAG order); attempt ids start at `first_attempt`.
    pub fn new(shapes: Vec<StageShape>, first_attempt: u64, limits: SchedulerLimits) -> Self {
        let tasks = shapes
            .iter()
            .map(|s| vec![TaskState::Pending { not_before: None }; s.tasks])
            .collect();
        let logs = shapes
            .iter()
            .map(|s| vec![TaskLog::default(); s.tasks])
            .collect();
        Self {
            shapes,
            tasks,
            logs,
            executors: BTreeMap::new(),
            attempts: HashMap::new(),
            next_attempt: first_attempt,
            rotation: 0,
            preferred: BTreeMap::new(),
            limits,
        }
    }

    /// Where pinned tasks ran before: they return there while that executor is alive (it
    /// holds their state), and go anywhere otherwise (their state is restored there).
    pub fn set_preferred(&mut self, preferred: BTreeMap<TaskKey, ExecutorId>) {
        self.preferred = preferred;
    }

    /// Where the pinned tasks of this epoch ran (to prefer in the next one).
    pub fn placement(&self) -> BTreeMap<TaskKey, ExecutorId> {
        let mut out = BTreeMap::new();
        for (s, shape) in self.shapes.iter().enumerate() {
            if !shape.pinned && !shape.sticky {
                continue;
            }
            for (p, t) in self.tasks[s].iter().enumerate() {
                let executor = match t {
                    TaskState::Done { executor, .. } => *executor,
                    TaskState::Running { attempts, .. } => attempts[0].1,
                    TaskState::Pending { .. } => continue,
                };
                out.insert(key(s, p), executor);
            }
        }
        out
    }

    /// The next attempt id this scheduler would hand out (to continue numbering across epochs).
    pub fn next_attempt(&self) -> u64 {
        self.next_attempt
    }

    /// Makes an executor available for tasks.
    pub fn add_executor(&mut self, executor: ExecutorId, slots: u32) {
        self.executors.insert(
            executor,
            ExecutorLoad {
                slots: slots.max(1),
                running: 0,
            },
        );
    }

    /// Executors that can take tasks.
    pub fn executor_count(&self) -> usize {
        self.executors.len()
    }

    /// Whether every task of `stage` has finished.
    pub fn stage_done(&self, stage: StageId) -> bool {
        self.tasks[stage.0]
            .iter()
            .all(|t| matches!(t, TaskState::Done { .. }))
    }

    /// Whether `stage` may run (its inputs have finished) and none of its tasks has started or
    /// finished: the moment to adapt its tasks to its inputs' sizes.
    pub fn ready_untouched(&self, stage: StageId) -> bool {
        self.shapes[stage.0]
            .inputs
            .iter()
            .all(|&i| self.stage_done(i))
            && self.tasks[stage.0]
                .iter()
                .all(|t| matches!(t, TaskState::Pending { not_before: None }))
    }

    /// Adds `n` pending tasks to `stage` (slices of a skewed partition); returns the first's
    /// partition number (they follow the stage's own tasks).
    pub fn add_tasks(&mut self, stage: StageId, n: usize) -> usize {
        let first = self.tasks[stage.0].len();
        let s = stage.0;
        self.tasks[s].extend((0..n).map(|_| TaskState::Pending { not_before: None }));
        self.logs[s].extend((0..n).map(|_| TaskLog::default()));
        first
    }

    /// Whether every task of every stage has finished.
    pub fn is_complete(&self) -> bool {
        (0..self.shapes.len()).all(|s| self.stage_done(StageId(s)))
    }

    /// Assigns pending tasks of runnable stages to executors with free slots, least-loaded
    /// first, then speculative copies of stragglers if enabled.
    pub fn poll(&mut self, now: Instant) -> Vec<Assignment> {
        let mut out = Vec::new();
        for s in 0..self.shapes.len() {
            if !self.shapes[s].inputs.iter().all(|&i| self.stage_done(i)) {
                continue;
            }
            for p in 0..self.tasks[s].len() {
                let TaskState::Pending { not_before } = self.tasks[s][p] else {
                    continue;
                };
                if not_before.is_some_and(|t| t > now) {
                    continue;
                }
                let task = key(s, p);
                let shape = &self.shapes[s];
                let home = (shape.pinned || shape.sticky)
                    .then(|| self.preferred.get(&task).copied())
                    .flatten()
                    .filter(|e| self.executors.contains_key(e))
                    .filter(|e| {
                        // A sticky task goes elsewhere rather than wait for a slot there.
                        shape.pinned || self.executors[e].running < self.executors[e].slots
                    });
                let executor = match home {
                    Some(home) => {
                        let load = &self.executors[&home];
                        if load.running >= load.slots {
                            // Wait for a slot there rather than move the state.
                            continue;
                        }
                        home
                    }
                    None => match self.pick_executor(None) {
                        Some(e) => e,
                        None => return out,
                    },
                };
                let attempt = self.start(task, executor, false);
                self.tasks[s][p] = TaskState::Running {
                    attempts: vec![(attempt, executor)],
                    started: now,
                };
                out.push(Assignment {
                    attempt,
                    task,
                    executor,
                    speculative: false,
                });
            }
        }
        if let Some(multiplier) = self.limits.speculation {
            self.speculate(now, multiplier, &mut out);
        }
        out
    }

    fn start(&mut self, task: TaskKey, executor: ExecutorId, speculative: bool) -> AttemptId {
        let attempt = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        self.attempts.insert(attempt, task);
        if let Some(load) = self.executors.get_mut(&executor) {
            load.running += 1;
        }
        self.logs[task.stage.0][task.partition]
            .history
            .push(AttemptRecord {
                attempt: attempt.0,
                executor: executor.0,
                speculative,
                outcome: AttemptOutcome::Running,
            });
        attempt
    }

    /// Speculative copies: in a stage with at least three quarters of its tasks finished, a
    /// task running longer than `multiplier` times their median gets a second attempt on
    /// another executor (Spark's rule). Stateful stages are never speculated.
    fn speculate(&mut self, now: Instant, multiplier: f64, out: &mut Vec<Assignment>) {
        for s in 0..self.shapes.len() {
            if self.shapes[s].pinned {
                continue;
            }
            let mut took: Vec<Duration> = self.tasks[s]
                .iter()
                .filter_map(|t| match t {
                    TaskState::Done { took, .. } => *took,
                    _ => None,
                })
                .collect();
            if took.is_empty() || took.len() * 4 < self.tasks[s].len() * 3 {
                continue;
            }
            took.sort();
            let threshold = took[took.len() / 2]
                .mul_f64(multiplier)
                .max(self.limits.speculation_min);
            for p in 0..self.tasks[s].len() {
                let TaskState::Running { attempts, started } = &self.tasks[s][p] else {
                    continue;
                };
                if attempts.len() > 1 || now.duration_since(*started) <= threshold {
                    continue;
                }
                let busy = attempts[0].1;
                let Some(executor) = self.pick_executor(Some(busy)) else {
                    return;
                };
                let task = key(s, p);
                let attempt = self.start(task, executor, true);
                if let TaskState::Running { attempts, .. } = &mut self.tasks[s][p] {
                    attempts.push((attempt, executor));
                }
                out.push(Assignment {
                    attempt,
                    task,
                    executor,
                    speculative: true,
                });
            }
        }
    }

    fn pick_executor(&mut self, except: Option<ExecutorId>) -> Option<ExecutorId> {
        let n = self.executors.len();
        if n == 0 {
            return None;
        }
        let ids: Vec<ExecutorId> = self.executors.keys().copied().collect();
        let mut best: Option<(ExecutorId, u32)> = None;
        for i in 0..n {
            let id = ids[(self.rotation + i) % n];
            if Some(id) == except {
                continue;
            }
            let load = &self.executors[&id];
            if load.running >= load.slots {
                continue;
            }
            let free = load.slots - load.running;
            if best.is_none_or(|(_, f)| free > f) {
                best = Some((id, free));
            }
        }
        self.rotation = (self.rotation + 1) % n;
        best.map(|(id, _)| id)
    }

    /// Ends `attempt`'s record with `outcome`; returns its task and executor if the attempt
    /// is one the task is still waiting for. Unknown and superseded attempts (a late message
    /// from an executor already declared lost) give `None`.
    fn finish(
        &mut self,
        attempt: AttemptId,
        outcome: AttemptOutcome,
    ) -> Option<(TaskKey, ExecutorId)> {
        let task = self.attempts.remove(&attempt)?;
        let (s, p) = (task.stage.0, task.partition);
        let TaskState::Running { attempts, .. } = &mut self.tasks[s][p] else {
            return None;
        };
        let i = attempts.iter().position(|(a, _)| *a == attempt)?;
        let (_, executor) = attempts.remove(i);
        if let Some(load) = self.executors.get_mut(&executor) {
            load.running = load.running.saturating_sub(1);
        }
        if let Some(r) = self.logs[s][p]
            .history
            .iter_mut()
            .rev()
            .find(|r| r.attempt == attempt.0)
        {
            r.outcome = outcome;
        }
        Some((task, executor))
    }

    /// The other attempts of a task that just finished are abandoned: their slots are freed
    /// and whatever they report later is ignored.
    fn abandon_others(&mut self, task: TaskKey, outcome: AttemptOutcome) {
        let (s, p) = (task.stage.0, task.partition);
        let TaskState::Running { attempts, .. } = &mut self.tasks[s][p] else {
            return;
        };
        let others = std::mem::take(attempts);
        for (attempt, executor) in others {
            self.attempts.remove(&attempt);
            if let Some(load) = self.executors.get_mut(&executor) {
                load.running = load.running.saturating_sub(1);
            }
            if let Some(r) = self.logs[s][p]
                .history
                .iter_mut()
                .find(|r| r.attempt == attempt.0)
            {
                r.outcome = outcome.clone();
            }
        }
    }

    /// An attempt succeeded: the first to finish wins. Reports of unknown or superseded
    /// attempts are ignored.
    pub fn on_succeeded(&mut self, attempt: AttemptId, report: Box<TaskReport>, now: Instant) {
        let Some((task, executor)) = self.finish(attempt, AttemptOutcome::Succeeded) else {
            return;
        };
        let (s, p) = (task.stage.0, task.partition);
        let started = match &self.tasks[s][p] {
            TaskState::Running { started, .. } => *started,
            _ => now,
        };
        self.abandon_others(task, AttemptOutcome::Superseded);
        self.tasks[s][p] = TaskState::Done {
            executor,
            report,
            took: Some(now.duration_since(started)),
        };
    }

    /// Completes a pending task without running it: it is known to produce nothing (a scan
    /// stage whose tables have no input this epoch). Its `report` says so; it belongs to no
    /// executor, so no fetch is made for it and losing an executor never re-runs it.
    pub fn complete_unrun(&mut self, task: TaskKey, report: TaskReport) {
        self.complete_cached(task, UNRUN, report);
    }

    /// Completes a pending task with an earlier epoch's output still on `executor` (a static
    /// table's scan whose files did not change); losing `executor` runs it like any task.
    pub fn complete_cached(&mut self, task: TaskKey, executor: ExecutorId, report: TaskReport) {
        let (s, p) = (task.stage.0, task.partition);
        if matches!(self.tasks[s][p], TaskState::Pending { .. }) {
            self.tasks[s][p] = TaskState::Done {
                executor,
                report: Box::new(report),
                took: None,
            };
        }
    }

    /// An attempt failed. A non-retryable error ends the epoch; a retryable one runs the task
    /// again after a backoff until its attempts are used up.
    pub fn on_failed(
        &mut self,
        attempt: AttemptId,
        message: String,
        retryable: bool,
        now: Instant,
    ) -> Option<EpochFailure> {
        let (task, executor) = self.finish(attempt, AttemptOutcome::Failed(message.clone()))?;
        if !retryable {
            return Some(EpochFailure::TaskFailed {
                task,
                executor,
                message,
            });
        }
        self.retry_later(task, now)
    }

    /// Counts a failure against `task` and, unless it has used up its attempts, makes it
    /// pending again after a backoff (if no other attempt of it is still running).
    fn retry_later(&mut self, task: TaskKey, now: Instant) -> Option<EpochFailure> {
        let (s, p) = (task.stage.0, task.partition);
        let log = &mut self.logs[s][p];
        log.failures += 1;
        if log.failures >= self.limits.max_task_failures {
            return Some(EpochFailure::RetriesExhausted {
                task,
                history: log.history.clone(),
            });
        }
        let backoff = self
            .limits
            .retry_backoff
            .saturating_mul(1 << (log.failures - 1).min(5));
        if matches!(&self.tasks[s][p], TaskState::Running { attempts, .. } if attempts.is_empty()) {
            self.tasks[s][p] = TaskState::Pending {
                not_before: Some(now + backoff),
            };
        }
        None
    }

    /// An attempt could not fetch the output of `stage`/`map_partition` from `from`. The task
    /// runs again once that output is regenerated; the producing task runs again if its output
    /// was still recorded there.
    pub fn on_fetch_failed(
        &mut self,
        attempt: AttemptId,
        stage: StageId,
        map_partition: usize,
        from: ExecutorId,
        message: String,
    ) -> Option<EpochFailure> {
        let (task, _) = self.finish(attempt, AttemptOutcome::FetchFailed(message))?;
        let (s, p) = (task.stage.0, task.partition);
        let log = &mut self.logs[s][p];
        log.fetch_failures += 1;
        if log.fetch_failures > self.limits.max_fetch_failures {
            return Some(EpochFailure::RetriesExhausted {
                task,
                history: log.history.clone(),
            });
        }
        if matches!(&self.tasks[s][p], TaskState::Running { attempts, .. } if attempts.is_empty()) {
            self.tasks[s][p] = TaskState::Pending { not_before: None };
        }
        if stage.0 < self.shapes.len() && map_partition < self.tasks[stage.0].len() {
            if let TaskState::Done { executor, .. } = self.tasks[stage.0][map_partition] {
                if executor == from {
                    self.mark_output_lost(stage.0, map_partition);
                }
            }
        }
        None
    }

    fn mark_output_lost(&mut self, s: usize, p: usize) {
        self.tasks[s][p] = TaskState::Pending { not_before: None };
        if let Some(r) = self.logs[s][p]
            .history
            .iter_mut()
            .rev()
            .find(|r| r.outcome == AttemptOutcome::Succeeded)
        {
            r.outcome = AttemptOutcome::OutputLost;
        }
    }

    /// An executor is gone (connection lost, process exited, heartbeats missed). Its running
    /// attempts are failed and retried elsewhere; its finished tasks run again only if a stage
    /// that is not finished still needs their outputs. Returns the tasks that will run again.
    pub fn on_executor_lost(
        &mut self,
        executor: ExecutorId,
        now: Instant,
    ) -> Result<Vec<TaskKey>, EpochFailure> {
        if self.executors.remove(&executor).is_none() {
            return Ok(Vec::new());
        }
        self.preferred.retain(|_, e| *e != executor);
        let mut rerun = Vec::new();
        // Running attempts on it.
        let mut running = Vec::new();
        for (s, tasks) in self.tasks.iter().enumerate() {
            for (p, t) in tasks.iter().enumerate() {
                if let TaskState::Running { attempts, .. } = t {
                    for (attempt, e) in attempts {
                        if *e == executor {
                            running.push((*attempt, key(s, p)));
                        }
                    }
                }
            }
        }
        let mut failure = None;
        for (attempt, task) in running {
            if self.finish(attempt, AttemptOutcome::ExecutorLost).is_some() {
                rerun.push(task);
                if let Some(f) = self.retry_later_now(task, now) {
                    failure.get_or_insert(f);
                }
            }
        }
        // Finished tasks whose outputs it held and that an unfinished stage still needs;
        // consumers come after producers, so one backward pass also covers outputs a re-run
        // needs.
        for s in (0..self.shapes.len()).rev() {
            if !self.output_needed(s) {
                continue;
            }
            for p in 0..self.tasks[s].len() {
                if matches!(self.tasks[s][p], TaskState::Done { executor: e, .. } if e == executor)
                {
                    self.mark_output_lost(s, p);
                    rerun.push(key(s, p));
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(rerun),
        }
    }

    /// Whether stage `s`'s outputs on executors are still needed: an unfinished stage reads
    /// them, or they are the final stage's results (fetched from the executor at commit).
    fn output_needed(&self, s: usize) -> bool {
        if !self.shapes[s].output_on_executor {
            return false;
        }
        let mut consumers = (0..self.shapes.len())
            .filter(|d| self.shapes[*d].inputs.contains(&StageId(s)))
            .peekable();
        consumers.peek().is_none() || consumers.any(|d| !self.stage_done(StageId(d)))
    }

    /// Tasks of runnable stages waiting for a free slot (after [`EpochScheduler::poll`]):
    /// a bounded job's dynamic allocation grows on them.
    pub fn waiting_tasks(&self) -> usize {
        (0..self.shapes.len())
            .filter(|s| self.shapes[*s].inputs.iter().all(|&i| self.stage_done(i)))
            .map(|s| {
                self.tasks[s]
                    .iter()
                    .filter(|t| matches!(t, TaskState::Pending { .. }))
                    .count()
            })
            .sum()
    }

    /// Executors running nothing and holding no output a stage or the commit still needs:
    /// removing one costs no task a re-run.
    pub fn releasable_executors(&self) -> Vec<ExecutorId> {
        let needed: Vec<bool> = (0..self.shapes.len())
            .map(|s| self.output_needed(s))
            .collect();
        self.executors
            .iter()
            .filter(|(e, load)| {
                load.running == 0
                    && !self.tasks.iter().enumerate().any(|(s, tasks)| {
                        needed[s]
                            && tasks.iter().any(
                                |t| matches!(t, TaskState::Done { executor, .. } if executor == *e),
                            )
                    })
            })
            .map(|(e, _)| *e)
            .collect()
    }

    /// Takes a releasable executor out of scheduling (dynamic allocation stops it); its
    /// finished tasks stay finished.
    pub fn release_executor(&mut self, executor: ExecutorId) {
        self.executors.remove(&executor);
        self.preferred.retain(|_, e| *e != executor);
    }

    /// A lost executor's attempt: counted like a failure, but retried without backoff (the
    /// cause is gone with the executor).
    fn retry_later_now(&mut self, task: TaskKey, now: Instant) -> Option<EpochFailure> {
        let failure = self.retry_later(task, now);
        let (s, p) = (task.stage.0, task.partition);
        if let TaskState::Pending { not_before } = &mut self.tasks[s][p] {
            *not_before = None;
        }
        failure
    }

    /// Where each task of a finished stage left its output, by partition.
    pub fn outputs(&self, stage: StageId) -> Vec<(usize, ExecutorId)> {
        self.tasks[stage.0]
            .iter()
            .enumerate()
            .filter_map(|(p, t)| match t {
                TaskState::Done { executor, .. } => Some((p, *executor)),
                _ => None,
            })
            .collect()
    }

    /// Reports of a stage's finished tasks, by partition.
    pub fn reports(&self, stage: StageId) -> Vec<(usize, ExecutorId, &TaskReport)> {
        self.tasks[stage.0]
            .iter()
            .enumerate()
            .filter_map(|(p, t)| match t {
                TaskState::Done {
                    executor, report, ..
                } => Some((p, *executor, report.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Every task that needed more than one attempt, with its attempts.
    pub fn retried(&self) -> Vec<(TaskKey, Vec<AttemptRecord>)> {
        let mut out = Vec::new();
        for (s, logs) in self.logs.iter().enumerate() {
            for (p, log) in logs.iter().enumerate() {
                if log.history.len() > 1 {
                    out.push((key(s, p), log.history.clone()));
                }
            }
        }
        out
    }

    /// The task an attempt in flight belongs to.
    pub fn task_of(&self, attempt: AttemptId) -> Option<TaskKey> {
        self.attempts.get(&attempt).copied()
    }

    /// Attempts started this epoch.
    pub fn attempt_count(&self) -> usize {
        self.logs.iter().flatten().map(|l| l.history.len()).sum()
    }
}

/// The executor of a task completed without running (see [`EpochScheduler::complete_unrun`]).
pub const UNRUN: ExecutorId = ExecutorId(u32::MAX);

fn key(stage: usize, partition: usize) -> TaskKey {
    TaskKey {
        stage: StageId(stage),
        partition,
    }
}

#[cfg(test)]
mod tests;
