//! Streaming-aware dynamic allocation: how many executors a query wants, decided once per epoch
//! from what the driver measured — a pure function of recent epochs, unit-tested on recorded
//! traces (issue 20; the cluster managers act on its decisions between epochs).
//!
//! Spark's dynamic allocation follows the queue of pending tasks, which suits batch jobs and
//! churns executors between the micro-batches of a streaming query. Here a streaming query
//! grows when it cannot keep up — its epochs take longer than the trigger interval, or its
//! source backlog grows, or the time to work the backlog off at the current rate exceeds a
//! bound — and shrinks only when it has been comfortably fast for a whole stabilisation window.
//! Every change is followed by a cooldown, so a decision's effect is measured before the next.
//! A bounded job follows its pending tasks instead: grow while tasks wait, release executors
//! idle past a timeout.

use std::collections::VecDeque;

/// Thresholds of the policy; every one is documented in the README.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocationPolicy {
    /// Fewest executors (`--min-executors`).
    pub min: usize,
    /// Most executors (`--max-executors`); equal to `min` turns allocation off.
    pub max: usize,
    /// Epochs observed before any decision, and the window a shrink must hold over.
    pub window: usize,
    /// Epochs after a change during which no other change is made. (They count towards the
    /// next window: they were measured at the new size.)
    pub cooldown: usize,
    /// Busy: an epoch's execution time above this fraction of the trigger interval.
    pub busy_fraction: f64,
    /// Idle: an epoch below this fraction of the trigger interval, with no backlog.
    pub idle_fraction: f64,
    /// Idle epochs in a row before one executor is released: longer than the window, so a
    /// load that comes back within it keeps its executors (scale down slowly, up at once).
    pub shrink_after: usize,
    /// Catch-up bound: grow when the backlog would take longer than this many trigger
    /// intervals to work off at the rate the query processes.
    pub catch_up_triggers: f64,
}

impl Default for AllocationPolicy {
    fn default() -> Self {
        AllocationPolicy {
            min: 1,
            max: 1,
            window: 5,
            cooldown: 3,
            busy_fraction: 0.8,
            idle_fraction: 0.3,
            shrink_after: 15,
            catch_up_triggers: 10.0,
        }
    }
}

/// The policy's settings a user may change (`--allocation-window`, `--allocation-cooldown`,
/// `--allocation-idle-epochs`, `--allocation-idle-load`, `--allocation-idle-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationTuning {
    /// [`AllocationPolicy::window`].
    pub window: usize,
    /// [`AllocationPolicy::cooldown`].
    pub cooldown: usize,
    /// [`AllocationPolicy::shrink_after`].
    pub shrink_after: usize,
    /// [`AllocationPolicy::idle_fraction`], in percent.
    pub idle_percent: u32,
    /// A bounded job: how long an executor is idle before it is released.
    pub idle_timeout: std::time::Duration,
}

impl Default for AllocationTuning {
    fn default() -> Self {
        let p = AllocationPolicy::default();
        AllocationTuning {
            window: p.window,
            cooldown: p.cooldown,
            shrink_after: p.shrink_after,
            idle_percent: (p.idle_fraction * 100.0).round() as u32,
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What the driver measured in one committed epoch of a streaming query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochSample {
    /// Executors that took part.
    pub executors: usize,
    /// The epoch's execution time, ms.
    pub execution_ms: f64,
    /// The trigger interval, ms (0: as fast as possible).
    pub trigger_ms: f64,
    /// Records waiting in the sources after the epoch (Kafka lag, pending file bytes).
    pub backlog: u64,
    /// Records the epoch processed.
    pub processed: u64,
}

/// What to do, and why (the progress record and UI show both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The executors the query wants.
    pub target: usize,
    /// Why, in a sentence.
    pub reason: String,
}

/// The per-query state of the policy: the recent epochs and the cooldown.
#[derive(Debug, Clone)]
pub struct Allocation {
    policy: AllocationPolicy,
    recent: VecDeque<EpochSample>,
    cooldown: usize,
    /// Idle epochs in a row (at the current size).
    idle_streak: usize,
}

impl Allocation {
    /// A policy with no history.
    pub fn new(policy: AllocationPolicy) -> Self {
        Allocation {
            policy,
            recent: VecDeque::new(),
            cooldown: 0,
            idle_streak: 0,
        }
    }

    /// Its thresholds.
    pub fn policy(&self) -> AllocationPolicy {
        self.policy
    }

    /// Whether allocation is on (`min < max`).
    pub fn enabled(&self) -> bool {
        self.policy.min < self.policy.max
    }

    /// Takes one committed epoch; returns the executor count wanted from now on.
    pub fn observe(&mut self, sample: EpochSample) -> Decision {
        let p = self.policy;
        let current = sample.executors.clamp(p.min, p.max);
        self.recent.push_back(sample);
        while self.recent.len() > p.window {
            self.recent.pop_front();
        }
        let idle_now = sample.execution_ms / sample.trigger_ms.max(1.0) < p.idle_fraction
            && sample.backlog == 0;
        self.idle_streak = if idle_now { self.idle_streak + 1 } else { 0 };
        let keep = |reason: String| Decision {
            target: current,
            reason,
        };
        if !self.enabled() {
            return keep("dynamic allocation is off (--min-executors = --max-executors)".into());
        }
        if sample.executors < p.min {
            return self.change(p.min, format!("below --min-executors ({})", p.min));
        }
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return keep(format!(
                "cooling down after the last change ({} epoch(s) left)",
                self.cooldown + 1
            ));
        }
        if self.recent.len() < p.window {
            return keep(format!(
                "observing ({} of {} epochs)",
                self.recent.len(),
                p.window
            ));
        }
        let interval = |s: &EpochSample| s.trigger_ms.max(1.0);
        let load: Vec<f64> = self
            .recent
            .iter()
            .map(|s| s.execution_ms / interval(s))
            .collect();
        let busy = load.iter().filter(|l| **l > p.busy_fraction).count();
        let first = self.recent.front().map_or(0, |s| s.backlog);
        let growing = sample.backlog > first
            && self
                .recent
                .iter()
                .zip(self.recent.iter().skip(1))
                .all(|(a, b)| b.backlog >= a.backlog);
        // Time to work off the backlog at the window's processing rate, in trigger intervals.
        let processed: u64 = self.recent.iter().map(|s| s.processed).sum();
        let per_epoch = processed as f64 / self.recent.len() as f64;
        let catch_up = if sample.backlog == 0 {
            0.0
        } else if per_epoch > 0.0 {
            sample.backlog as f64 / per_epoch
        } else {
            f64::INFINITY
        };
        // Most epochs over the busy line, a backlog growing through the whole window, or one
        // that would take too long to drain: one more executor (or, for a clear overload, as
        // many as the load says), up to the maximum.
        let overloaded = busy * 2 > load.len();
        if (overloaded || growing || catch_up > p.catch_up_triggers) && current < p.max {
            // Sized by the busy epochs (the load the query has now, not before a step up).
            let busy_loads: Vec<f64> = load
                .iter()
                .copied()
                .filter(|l| *l > p.busy_fraction)
                .collect();
            let mean_load = if busy_loads.is_empty() {
                load.iter().sum::<f64>() / load.len() as f64
            } else {
                busy_loads.iter().sum::<f64>() / busy_loads.len() as f64
            };
            let by_load = (current as f64 * mean_load / p.busy_fraction).ceil() as usize;
            let target = by_load.clamp(current + 1, p.max);
            let why = if overloaded {
                format!(
                    "{busy} of the last {} epochs ran longer than {:.0} % of the trigger interval (those at {:.0} % on average)",
                    load.len(),
                    p.busy_fraction * 100.0,
                    mean_load * 100.0
                )
            } else if growing {
                format!(
                    "the source backlog grew through the last {} epochs ({first} → {})",
                    load.len(),
                    sample.backlog
                )
            } else {
                format!(
                    "the backlog ({}) would take {catch_up:.0} trigger intervals to work off (more than {:.0})",
                    sample.backlog, p.catch_up_triggers
                )
            };
            return self.change(target, why);
        }
        // Comfortably fast with no backlog for longer than the window: one executor fewer, if
        // the load would still fit under the busy line on the rest.
        let max_load = load.iter().cloned().fold(0.0, f64::max);
        let fits =
            current > 1 && max_load * current as f64 / (current - 1) as f64 <= p.busy_fraction;
        if self.idle_streak >= p.shrink_after && current > p.min && fits {
            let streak = self.idle_streak;
            return self.change(
                current - 1,
                format!(
                    "the last {streak} epochs ran under {:.0} % of the trigger interval with no backlog",
                    p.idle_fraction * 100.0
                ),
            );
        }
        keep(format!(
            "keeping up (load {:.0} %, backlog {})",
            load.last().copied().unwrap_or(0.0) * 100.0,
            sample.backlog
        ))
    }

    fn change(&mut self, target: usize, reason: String) -> Decision {
        self.cooldown = self.policy.cooldown;
        // After a change the window and the idle streak start again: what was measured before
        // says nothing about the new size.
        self.recent.clear();
        self.idle_streak = 0;
        Decision { target, reason }
    }
}

/// A bounded job's decision: grow while tasks wait (one executor per `slots` waiting tasks),
/// release executors idle for longer than `idle_ms`.
pub fn bounded_target(
    policy: &AllocationPolicy,
    executors: usize,
    slots: usize,
    pending_tasks: usize,
    idle_executors: &[u64],
    idle_ms: u64,
) -> Decision {
    if policy.min >= policy.max {
        return Decision {
            target: executors,
            reason: "dynamic allocation is off".into(),
        };
    }
    if pending_tasks > 0 {
        let wanted = executors + pending_tasks.div_ceil(slots.max(1));
        let target = wanted.clamp(policy.min, policy.max);
        return Decision {
            target,
            reason: format!("{pending_tasks} task(s) waiting for a slot"),
        };
    }
    let idle = idle_executors.iter().filter(|ms| **ms > idle_ms).count();
    let target = executors.saturating_sub(idle).clamp(policy.min, policy.max);
    Decision {
        target,
        reason: if target < executors {
            format!("{idle} executor(s) idle for over {idle_ms} ms")
        } else {
            "every executor is busy or recently was".into()
        },
    }
}

#[cfg(test)]
mod tests;
