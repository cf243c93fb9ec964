//! The epoch scheduler: which task runs where, and when an epoch is done.
//!
//! A pure state machine with no I/O, driven by the driver's event loop:
//! [`EpochScheduler::poll`] hands out assignments for free slots, the `on_*` methods take
//! events. A stage becomes runnable when all its input stages have finished (a barrier, as in
//! Spark), so shuffle readers always find complete upstream outputs.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::{AttemptId, ExecutorId, StageId, TaskKey, TaskReport};

/// A task handed to an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The attempt's id.
    pub attempt: AttemptId,
    /// The task.
    pub task: TaskKey,
    /// Where it runs.
    pub executor: ExecutorId,
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
    /// Whether its tasks hold keyed state: each goes back to the executor that ran it last.
    pub pinned: bool,
}

#[derive(Debug, Clone)]
enum TaskState {
    Pending,
    Running {
        attempt: AttemptId,
        executor: ExecutorId,
    },
    Done {
        executor: ExecutorId,
        report: TaskReport,
    },
}

#[derive(Debug)]
struct ExecutorLoad {
    slots: u32,
    running: u32,
}

/// Why an epoch cannot finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochFailure {
    /// A task attempt failed.
    TaskFailed {
        task: TaskKey,
        executor: ExecutorId,
        message: String,
        retryable: bool,
    },
    /// An executor holding running tasks or needed outputs was lost.
    ExecutorLost {
        executor: ExecutorId,
        tasks: Vec<TaskKey>,
    },
}

/// Scheduling state of one epoch.
#[derive(Debug)]
pub struct EpochScheduler {
    shapes: Vec<StageShape>,
    tasks: Vec<Vec<TaskState>>,
    executors: BTreeMap<ExecutorId, ExecutorLoad>,
    attempts: HashMap<AttemptId, TaskKey>,
    next_attempt: u64,
    /// Rotates the starting executor so equal-load ties spread tasks across executors.
    rotation: usize,
    /// Where pinned tasks ran before.
    preferred: BTreeMap<TaskKey, ExecutorId>,
}

impl EpochScheduler {
    /// A scheduler for stages `shapes` (in DAG order); attempt ids start at `first_attempt`.
    pub fn new(shapes: Vec<StageShape>, first_attempt: u64) -> Self {
        let tasks = shapes
            .iter()
            .map(|s| vec![TaskState::Pending; s.tasks])
            .collect();
        Self {
            shapes,
            tasks,
            executors: BTreeMap::new(),
            attempts: HashMap::new(),
            next_attempt: first_attempt,
            rotation: 0,
            preferred: BTreeMap::new(),
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
            if !shape.pinned {
                continue;
            }
            for (p, t) in self.tasks[s].iter().enumerate() {
                let executor = match t {
                    TaskState::Done { executor, .. } | TaskState::Running { executor, .. } => {
                        *executor
                    }
                    TaskState::Pending => continue,
                };
                out.insert(
                    TaskKey {
                        stage: StageId(s),
                        partition: p,
                    },
                    executor,
                );
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

    fn stage_done(&self, stage: StageId) -> bool {
        self.tasks[stage.0]
            .iter()
            .all(|t| matches!(t, TaskState::Done { .. }))
    }

    /// Whether every task of every stage has finished.
    pub fn is_complete(&self) -> bool {
        (0..self.shapes.len()).all(|s| self.stage_done(StageId(s)))
    }

    /// Assigns pending tasks of runnable stages to executors with free slots, least-loaded
    /// first.
    pub fn poll(&mut self) -> Vec<Assignment> {
        let mut out = Vec::new();
        for s in 0..self.shapes.len() {
            if !self.shapes[s].inputs.iter().all(|&i| self.stage_done(i)) {
                continue;
            }
            for p in 0..self.tasks[s].len() {
                if !matches!(self.tasks[s][p], TaskState::Pending) {
                    continue;
                }
                let task = TaskKey {
                    stage: StageId(s),
                    partition: p,
                };
                let home = self.shapes[s]
                    .pinned
                    .then(|| self.preferred.get(&task).copied())
                    .flatten()
                    .filter(|e| self.executors.contains_key(e));
                let executor = match home {
                    Some(home) => {
                        let load = &self.executors[&home];
                        if load.running >= load.slots {
                            // Wait for a slot there rather than move the state.
                            continue;
                        }
                        home
                    }
                    None => match self.pick_executor() {
                        Some(e) => e,
                        None => return out,
                    },
                };
                let attempt = AttemptId(self.next_attempt);
                self.next_attempt += 1;
                self.tasks[s][p] = TaskState::Running { attempt, executor };
                self.attempts.insert(attempt, task);
                if let Some(load) = self.executors.get_mut(&executor) {
                    load.running += 1;
                }
                out.push(Assignment {
                    attempt,
                    task,
                    executor,
                });
            }
        }
        out
    }

    fn pick_executor(&mut self) -> Option<ExecutorId> {
        let n = self.executors.len();
        if n == 0 {
            return None;
        }
        let ids: Vec<ExecutorId> = self.executors.keys().copied().collect();
        let mut best: Option<(ExecutorId, u32)> = None;
        for i in 0..n {
            let id = ids[(self.rotation + i) % n];
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

    /// An attempt succeeded. Reports of unknown or superseded attempts are ignored.
    pub fn on_succeeded(&mut self, attempt: AttemptId, report: TaskReport) {
        let Some(task) = self.attempts.remove(&attempt) else {
            return;
        };
        if let TaskState::Running {
            attempt: current,
            executor,
        } = self.tasks[task.stage.0][task.partition]
        {
            if current == attempt {
                self.release(executor);
                self.tasks[task.stage.0][task.partition] = TaskState::Done { executor, report };
            }
        }
    }

    /// An attempt failed: the epoch fails (task retries come with lineage recovery).
    pub fn on_failed(
        &mut self,
        attempt: AttemptId,
        message: String,
        retryable: bool,
    ) -> Option<EpochFailure> {
        let task = self.attempts.remove(&attempt)?;
        let TaskState::Running {
            attempt: current,
            executor,
        } = self.tasks[task.stage.0][task.partition]
        else {
            return None;
        };
        if current != attempt {
            return None;
        }
        self.release(executor);
        self.tasks[task.stage.0][task.partition] = TaskState::Pending;
        Some(EpochFailure::TaskFailed {
            task,
            executor,
            message,
            retryable,
        })
    }

    /// An executor is gone. The epoch fails if it ran tasks or held outputs a later stage still
    /// needs; an idle executor holding nothing is simply removed.
    pub fn on_executor_lost(&mut self, executor: ExecutorId) -> Option<EpochFailure> {
        self.executors.remove(&executor);
        let mut affected = Vec::new();
        for s in 0..self.shapes.len() {
            let needed_later =
                !self.is_complete() && self.shapes.iter().any(|d| d.inputs.contains(&StageId(s)));
            for (p, state) in self.tasks[s].iter().enumerate() {
                let hit = match state {
                    TaskState::Running { executor: e, .. } => *e == executor,
                    TaskState::Done { executor: e, .. } => {
                        *e == executor && (needed_later || s + 1 == self.shapes.len())
                    }
                    TaskState::Pending => false,
                };
                if hit {
                    affected.push(TaskKey {
                        stage: StageId(s),
                        partition: p,
                    });
                }
            }
        }
        (!affected.is_empty()).then_some(EpochFailure::ExecutorLost {
            executor,
            tasks: affected,
        })
    }

    fn release(&mut self, executor: ExecutorId) {
        if let Some(load) = self.executors.get_mut(&executor) {
            load.running = load.running.saturating_sub(1);
        }
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
                TaskState::Done { executor, report } => Some((p, *executor, report)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_stage() -> EpochScheduler {
        let mut s = EpochScheduler::new(
            vec![
                StageShape {
                    id: StageId(0),
                    tasks: 2,
                    inputs: vec![],
                    pinned: false,
                },
                StageShape {
                    id: StageId(1),
                    tasks: 2,
                    inputs: vec![StageId(0)],
                    pinned: false,
                },
            ],
            0,
        );
        s.add_executor(ExecutorId(1), 1);
        s.add_executor(ExecutorId(2), 1);
        s
    }

    #[test]
    fn pinned_tasks_return_to_their_executor_and_move_only_when_it_is_gone() {
        let shapes = vec![StageShape {
            id: StageId(0),
            tasks: 2,
            inputs: vec![],
            pinned: true,
        }];
        let mut first = EpochScheduler::new(shapes.clone(), 0);
        first.add_executor(ExecutorId(1), 2);
        first.add_executor(ExecutorId(2), 2);
        let a = first.poll();
        for x in &a {
            first.on_succeeded(x.attempt, TaskReport::default());
        }
        let placement = first.placement();
        assert_eq!(placement.len(), 2);
        // Next epoch: each task goes back home, even if that means waiting for a slot.
        for _ in 0..3 {
            let mut next = EpochScheduler::new(shapes.clone(), 10);
            next.add_executor(ExecutorId(1), 2);
            next.add_executor(ExecutorId(2), 2);
            next.set_preferred(placement.clone());
            for x in next.poll() {
                assert_eq!(Some(&x.executor), placement.get(&x.task));
            }
        }
        // Its executor is gone: the task runs elsewhere.
        let lost = placement[&TaskKey {
            stage: StageId(0),
            partition: 0,
        }];
        let survivor = if lost == ExecutorId(1) {
            ExecutorId(2)
        } else {
            ExecutorId(1)
        };
        let mut next = EpochScheduler::new(shapes, 20);
        next.add_executor(survivor, 2);
        next.set_preferred(placement);
        let assigned = next.poll();
        assert_eq!(assigned.len(), 2);
        assert!(assigned.iter().all(|x| x.executor == survivor));
    }

    #[test]
    fn downstream_stage_waits_for_its_inputs_and_tasks_spread() {
        let mut s = two_stage();
        let first = s.poll();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|a| a.task.stage == StageId(0)));
        assert_ne!(
            first[0].executor, first[1].executor,
            "one task per executor"
        );
        assert!(s.poll().is_empty(), "no free slots, stage 1 not runnable");
        s.on_succeeded(first[0].attempt, TaskReport::default());
        assert!(s.poll().is_empty(), "stage 0 not done yet");
        s.on_succeeded(first[1].attempt, TaskReport::default());
        let second = s.poll();
        assert_eq!(second.len(), 2);
        assert!(second.iter().all(|a| a.task.stage == StageId(1)));
        for a in second {
            s.on_succeeded(a.attempt, TaskReport::default());
        }
        assert!(s.is_complete());
    }

    #[test]
    fn a_lost_executor_with_running_work_fails_the_epoch_and_late_reports_are_ignored() {
        let mut s = two_stage();
        let first = s.poll();
        let lost = first[0].executor;
        let failure = s.on_executor_lost(lost).expect("it ran a task");
        assert!(matches!(failure, EpochFailure::ExecutorLost { executor, .. } if executor == lost));
        // A late report from the lost executor's attempt does not resurrect anything.
        s.on_succeeded(AttemptId(999), TaskReport::default());
        assert!(!s.is_complete());
    }

    #[test]
    fn an_idle_executor_can_go_away() {
        let mut s = two_stage();
        s.add_executor(ExecutorId(3), 1);
        let first = s.poll();
        assert!(first.iter().all(|a| a.executor != ExecutorId(3)) || first.len() == 2);
        let idle = [ExecutorId(1), ExecutorId(2), ExecutorId(3)]
            .into_iter()
            .find(|e| first.iter().all(|a| a.executor != *e))
            .unwrap();
        assert!(s.on_executor_lost(idle).is_none());
    }

    #[test]
    fn failed_task_is_reported_with_its_cause() {
        let mut s = two_stage();
        let first = s.poll();
        let f = s
            .on_failed(first[0].attempt, "bad row".into(), false)
            .unwrap();
        assert!(
            matches!(f, EpochFailure::TaskFailed { message, retryable: false, .. } if message == "bad row")
        );
    }
}
