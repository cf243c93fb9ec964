//! The epoch lifecycle as a decision core.
//!
//! [`Lifecycle`] decides what the driver does next from what the driver observed — the
//! checkpoint's logs, whether an uncommitted epoch's sink publish was recorded, the sources'
//! answer, how the last step went, the clock — and returns one [`Action`]. It does no I/O: the
//! async shell ([`super::epoch::EpochRunner`]) performs the action and reports what happened,
//! so every case (the README's recovery table, triggers, retries, stopping) is unit-tested here
//! without sockets or disks.

use std::time::{Duration, Instant};

use sluice_checkpoint::{Epoch, EpochAction, EpochLog};

use super::report::Trigger;

/// Consecutive failed attempts to plan an epoch (broker unreachable) before the query fails.
pub(super) const PLANNING_RETRIES: u32 = 60;

/// Times a streaming epoch that failed transiently is re-run before the query fails.
pub(super) const EPOCH_RETRIES: u32 = 3;

/// Pause before planning again or re-running a failed epoch.
pub(super) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// With a trigger that is due and no new data, how long the driver waits before asking the
/// sources again (Spark's `pollingDelay` is 10 ms; a `0ms` trigger asks for low latency).
pub(super) const NO_DATA_POLL_DELAY: Duration = Duration::from_millis(1);

/// How a query runs: fixed for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    /// Every source is bounded: one epoch (epoch 0), then stop.
    pub bounded: bool,
    /// When streaming epochs run (`None` for a bounded query).
    pub trigger: Option<Trigger>,
    /// Stop after this many epochs committed by this run.
    pub max_epochs: Option<u64>,
    /// Run epochs on the trigger even when no source has new data.
    pub no_data_epochs: bool,
    /// After an epoch that leaves a window its data's watermark closes, start the next epoch
    /// at once (at most one such epoch per trigger interval) rather than at the next trigger.
    pub watermark_epochs: bool,
}

/// What the checkpoint says at the top of every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Observed {
    /// The offsets and commits logs.
    pub log: EpochLog,
    /// The sink recorded its publish of the planned, uncommitted epoch (a crash came between
    /// the publish record and `commits/N`). Always false when every planned epoch committed.
    pub publish_recorded: bool,
}

/// What the sources answered when asked what a new epoch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// They answered; `has_work`: a stream has new data, or the watermark moved.
    Planned { has_work: bool },
    /// Planning failed (a broker unreachable, say); nothing was recorded.
    Failed { retryable: bool },
}

/// The next thing the driver does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Complete `epoch`'s recorded sink publish and write `commits/N`, running nothing.
    FinishPublish(Epoch),
    /// Run `epoch` again with exactly the input recorded in `offsets/N`.
    Replay(Epoch),
    /// Ask every source what the new `epoch` reads.
    AskSources(Epoch),
    /// Record the sources' answer in `offsets/N`, before any work.
    WriteOffsets(Epoch),
    /// Run the epoch's tasks.
    Run(Epoch),
    /// Publish the sink's output and write `commits/N`.
    Commit(Epoch),
    /// `epoch` failed transiently: discard what it staged, wait until `at`, and observe again
    /// (it then runs again with its recorded input, as after a driver restart).
    Retry {
        /// The epoch.
        epoch: Epoch,
        /// Its re-run, counted from 1.
        attempt: u32,
        /// When to observe again.
        at: Instant,
    },
    /// Nothing to do before `until` (already passed: go on at once); then observe again.
    Wait {
        /// When to observe again.
        until: Instant,
        /// Why.
        why: Waiting,
    },
    /// The run ends normally.
    Stop(Stop),
    /// The run fails with the error the last step returned.
    Fail,
}

/// Why the driver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// For the next trigger after an epoch.
    Trigger,
    /// No source had new data: ask again at the next trigger.
    NoNewData,
    /// None: the committed epoch's data moved the watermark past a window's end, and the
    /// epoch that closes it starts at once.
    WindowsClosing,
    /// Planning failed; this is retry `attempt` of [`PLANNING_RETRIES`].
    PlanningRetry {
        /// Counted from 1.
        attempt: u32,
    },
}

/// Why the run ends normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// A bounded job whose epoch 0 an earlier run committed: nothing runs.
    AlreadyCommitted,
    /// A bounded job committed its epoch.
    Finished,
    /// `once` ran its epoch, or `available-now` read everything there was at start.
    Drained,
    /// `--max-epochs` epochs committed.
    MaxEpochs,
    /// The user asked (Ctrl-C, SIGTERM), between epochs.
    Requested,
}

/// The decision core. One per run.
#[derive(Debug)]
pub(super) struct Lifecycle {
    policy: Policy,
    /// Epochs committed (or completed) by this run.
    committed: u64,
    /// New epochs recorded by this run.
    recorded: u64,
    planning_failures: u32,
    epoch_failures: u32,
    stop_requested: bool,
    /// The epoch being worked on and when its first attempt started.
    current: Option<(Epoch, Instant)>,
    /// When the last step that asked the sources (or started an epoch) began.
    started: Option<Instant>,
    /// The epoch being committed leaves a window the next watermark closes.
    closing: bool,
    /// While an epoch that closes windows runs ahead of the trigger: the start of the epoch it
    /// follows, which keeps the trigger's cadence.
    follows: Option<Instant>,
}

impl Lifecycle {
    pub(super) fn new(policy: Policy) -> Self {
        Self {
            policy,
            committed: 0,
            recorded: 0,
            planning_failures: 0,
            epoch_failures: 0,
            stop_requested: false,
            current: None,
            started: None,
            closing: false,
            follows: None,
        }
    }

    /// The epoch being committed leaves a window that the watermark its data sets closes
    /// (operators reported the next window end they wait for, and the watermark reaches it).
    pub(super) fn windows_closing(&mut self) {
        self.closing = true;
    }

    /// The user asked to stop: a streaming run stops before its next epoch (a running one
    /// commits first). A bounded run is interrupted by the shell instead.
    pub(super) fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    /// Epochs committed by this run.
    pub(super) fn committed(&self) -> u64 {
        self.committed
    }

    /// When the epoch being worked on started (its first attempt).
    pub(super) fn epoch_started(&self) -> Option<Instant> {
        self.current.map(|(_, at)| at)
    }

    /// The epoch being worked on is the run's last (a bounded job, or `--max-epochs`).
    pub(super) fn is_last_epoch(&self) -> bool {
        self.policy.bounded
            || self
                .policy
                .max_epochs
                .is_some_and(|m| self.committed + 1 >= m)
    }

    /// When the epoch after the current one is due (`None`: not right after it), so sources
    /// can find out what is new while the current one commits.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let (_, started) = self.current?;
        match self.policy.trigger {
            _ if self.is_last_epoch() => None,
            Some(Trigger::Interval(d)) => Some(started + d),
            Some(Trigger::AvailableNow) => Some(started),
            _ => None,
        }
    }

    /// The top of every step: what the logs say comes next.
    pub(super) fn next(&mut self, observed: &Observed, now: Instant) -> Action {
        if self.stop_requested && !self.policy.bounded {
            return Action::Stop(Stop::Requested);
        }
        match observed.log.next_action() {
            EpochAction::Replay { epoch } => {
                self.start(epoch, now);
                if observed.publish_recorded {
                    Action::FinishPublish(epoch)
                } else {
                    Action::Replay(epoch)
                }
            }
            EpochAction::PlanNew { epoch } => {
                if self.policy.bounded && epoch > Epoch(0) {
                    return Action::Stop(Stop::AlreadyCommitted);
                }
                if self.policy.trigger == Some(Trigger::Once) && self.recorded >= 1 {
                    return Action::Stop(Stop::Drained);
                }
                self.started = Some(now);
                Action::AskSources(epoch)
            }
        }
    }

    /// The sources answered what the new `epoch` reads.
    pub(super) fn sources_answered(
        &mut self,
        epoch: Epoch,
        answer: Answer,
        now: Instant,
    ) -> Action {
        match answer {
            Answer::Failed { retryable } => {
                // A broker that is briefly unreachable must not end a streaming query: nothing
                // was recorded, so the epoch is simply planned again later.
                self.planning_failures += 1;
                if self.policy.bounded || !retryable || self.planning_failures > PLANNING_RETRIES {
                    return Action::Fail;
                }
                Action::Wait {
                    until: now + RETRY_DELAY,
                    why: Waiting::PlanningRetry {
                        attempt: self.planning_failures,
                    },
                }
            }
            Answer::Planned { has_work } => {
                self.planning_failures = 0;
                if has_work || self.policy.bounded {
                    return Action::WriteOffsets(epoch);
                }
                match self.policy.trigger {
                    Some(Trigger::Once) | Some(Trigger::AvailableNow) => {
                        Action::Stop(Stop::Drained)
                    }
                    _ if self.policy.no_data_epochs => Action::WriteOffsets(epoch),
                    // Nothing new: no epoch; look again at the next trigger, and with a trigger
                    // that is already due, after a short poll delay rather than in a busy loop
                    // against the broker.
                    _ => {
                        let due = self.trigger_due(now);
                        // An epoch that was to close windows found nothing to do after all:
                        // the next one is an ordinary trigger's.
                        self.follows = None;
                        Action::Wait {
                            until: if due > now {
                                due
                            } else {
                                now + NO_DATA_POLL_DELAY
                            },
                            why: Waiting::NoNewData,
                        }
                    }
                }
            }
        }
    }

    /// `offsets/N` is written: the epoch is recorded and runs.
    pub(super) fn offsets_written(&mut self, epoch: Epoch, now: Instant) -> Action {
        self.recorded += 1;
        let started = self.started.unwrap_or(now);
        self.current = Some((epoch, started));
        Action::Run(epoch)
    }

    /// The epoch's tasks finished (`Ok`) or it failed (`Err(retryable)`).
    pub(super) fn ran(&mut self, epoch: Epoch, outcome: Result<(), bool>, now: Instant) -> Action {
        match outcome {
            Ok(()) => Action::Commit(epoch),
            Err(retryable) => self.failed(epoch, retryable, now),
        }
    }

    /// `commits/N` is written (`Ok`), or publishing / writing it failed (`Err(retryable)`).
    pub(super) fn commit_done(
        &mut self,
        epoch: Epoch,
        outcome: Result<(), bool>,
        now: Instant,
    ) -> Action {
        let closing = std::mem::take(&mut self.closing);
        if let Err(retryable) = outcome {
            return self.failed(epoch, retryable, now);
        }
        let started = self.epoch_started().unwrap_or(now);
        self.committed += 1;
        self.epoch_failures = 0;
        self.current = None;
        if self.policy.bounded {
            return Action::Stop(Stop::Finished);
        }
        if self.policy.max_epochs.is_some_and(|m| self.committed >= m) {
            return Action::Stop(Stop::MaxEpochs);
        }
        if self.stop_requested {
            return Action::Stop(Stop::Requested);
        }
        let Some(Trigger::Interval(d)) = self.policy.trigger else {
            return Action::Wait {
                until: now,
                why: Waiting::Trigger,
            };
        };
        // Epochs start on the interval; one that overran is followed at once. An epoch that
        // ran ahead of the trigger to close windows keeps the cadence of the one it followed.
        let followed = self.follows.take();
        let cadence = followed.unwrap_or(started);
        if closing && self.policy.watermark_epochs && followed.is_none() && cadence + d > now {
            self.follows = Some(cadence);
            return Action::Wait {
                until: now,
                why: Waiting::WindowsClosing,
            };
        }
        Action::Wait {
            until: (cadence + d).max(now),
            why: Waiting::Trigger,
        }
    }

    fn failed(&mut self, epoch: Epoch, retryable: bool, now: Instant) -> Action {
        // A transient failure (a broker hiccup, an I/O error) re-runs the epoch with exactly
        // its recorded input, as a restarted driver would. A bounded job fails at once: it is
        // simply run again.
        if retryable && !self.policy.bounded && self.epoch_failures < EPOCH_RETRIES {
            self.epoch_failures += 1;
            return Action::Retry {
                epoch,
                attempt: self.epoch_failures,
                at: now + RETRY_DELAY,
            };
        }
        Action::Fail
    }

    /// Starts work on a recorded epoch (a retry keeps its first start).
    fn start(&mut self, epoch: Epoch, now: Instant) {
        match self.current {
            Some((current, _)) if current == epoch => {}
            _ => {
                self.current = Some((epoch, now));
                self.started = Some(now);
            }
        }
    }

    /// When the trigger is next due, counted from the last step that asked the sources.
    fn trigger_due(&self, now: Instant) -> Instant {
        match (self.policy.trigger, self.follows.or(self.started)) {
            (Some(Trigger::Interval(d)), Some(started)) => started + d,
            _ => now,
        }
    }
}

/// The watermark an epoch runs with: the largest event time committed epochs read minus the
/// declared delay; it never goes back. `None` without a declared watermark.
pub(super) fn watermark(
    delay_ms: Option<i64>,
    max_event_ms: Option<i64>,
    previous: Option<i64>,
) -> Option<i64> {
    let delay = delay_ms?;
    let candidate = max_event_ms.map(|m| m.saturating_sub(delay));
    match (candidate, previous) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
