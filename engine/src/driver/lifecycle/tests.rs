//! The decision core, case by case: each row of the README's recovery table, triggers,
//! retries and stopping. No sockets, no disks: observations in, actions out.

use std::time::{Duration, Instant};

use sluice_checkpoint::{ownership, Epoch, EpochLog, Ownership};

use super::*;

fn bounded() -> Policy {
    Policy {
        bounded: true,
        trigger: None,
        max_epochs: None,
        no_data_epochs: false,
        watermark_epochs: true,
    }
}

fn streaming(trigger: Trigger) -> Policy {
    Policy {
        bounded: false,
        trigger: Some(trigger),
        max_epochs: None,
        no_data_epochs: false,
        watermark_epochs: true,
    }
}

fn seen(planned: Option<u64>, committed: Option<u64>, publish_recorded: bool) -> Observed {
    Observed {
        log: EpochLog {
            last_planned: planned.map(Epoch),
            last_committed: committed.map(Epoch),
        },
        publish_recorded,
    }
}

const WORK: Answer = Answer::Planned { has_work: true };
const NO_WORK: Answer = Answer::Planned { has_work: false };

/// Recovery table, row 1: no checkpoint — plan epoch 0, record it, run it, commit it.
#[test]
fn no_checkpoint_plans_records_runs_and_commits_epoch_0() {
    let t = Instant::now();
    let mut l = Lifecycle::new(bounded());
    assert_eq!(
        l.next(&seen(None, None, false), t),
        Action::AskSources(Epoch(0))
    );
    assert_eq!(
        l.sources_answered(Epoch(0), WORK, t),
        Action::WriteOffsets(Epoch(0))
    );
    assert_eq!(l.offsets_written(Epoch(0), t), Action::Run(Epoch(0)));
    assert!(l.is_last_epoch());
    assert_eq!(l.next_due(), None);
    assert_eq!(l.ran(Epoch(0), Ok(()), t), Action::Commit(Epoch(0)));
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Stop(Stop::Finished)
    );
    assert_eq!(l.committed(), 1);
}

/// A bounded job reads its tables even when they are empty: there is always an epoch 0.
#[test]
fn bounded_job_runs_without_new_data() {
    let t = Instant::now();
    let mut l = Lifecycle::new(bounded());
    l.next(&seen(None, None, false), t);
    assert_eq!(
        l.sources_answered(Epoch(0), NO_WORK, t),
        Action::WriteOffsets(Epoch(0))
    );
}

/// Row 2: `offsets/0`, no commit, no sink record — re-run epoch 0 with its recorded input.
#[test]
fn recorded_uncommitted_epoch_is_replayed() {
    let t = Instant::now();
    let mut l = Lifecycle::new(bounded());
    assert_eq!(
        l.next(&seen(Some(0), None, false), t),
        Action::Replay(Epoch(0))
    );
    assert_eq!(l.ran(Epoch(0), Ok(()), t), Action::Commit(Epoch(0)));
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Stop(Stop::Finished)
    );

    // Streaming: the replay comes before anything new is planned, then planning goes on.
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::ZERO)));
    assert_eq!(
        l.next(&seen(Some(7), Some(6), false), t),
        Action::Replay(Epoch(7))
    );
    assert_eq!(l.ran(Epoch(7), Ok(()), t), Action::Commit(Epoch(7)));
    assert!(matches!(
        l.commit_done(Epoch(7), Ok(()), t),
        Action::Wait { .. }
    ));
    assert_eq!(
        l.next(&seen(Some(7), Some(7), false), t),
        Action::AskSources(Epoch(8))
    );
}

/// Row 3: `offsets/0` and the sink's publish record, no commit (a crash mid-publish) — complete
/// the recorded publish without running anything, then commit.
#[test]
fn recorded_publish_is_finished_without_running() {
    let t = Instant::now();
    let mut l = Lifecycle::new(bounded());
    assert_eq!(
        l.next(&seen(Some(0), None, true), t),
        Action::FinishPublish(Epoch(0))
    );
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Stop(Stop::Finished)
    );

    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    assert_eq!(
        l.next(&seen(Some(3), Some(2), true), t),
        Action::FinishPublish(Epoch(3))
    );
    assert_eq!(
        l.commit_done(Epoch(3), Ok(()), t),
        Action::Wait {
            until: t + Duration::from_secs(1),
            why: Waiting::Trigger
        }
    );
    assert_eq!(l.committed(), 1);
}

/// Row 4: `commits/0` — a bounded job does nothing ("already committed"); a streaming query
/// plans epoch 1.
#[test]
fn committed_epoch_stops_a_bounded_job_and_advances_a_stream() {
    let t = Instant::now();
    let mut l = Lifecycle::new(bounded());
    assert_eq!(
        l.next(&seen(Some(0), Some(0), false), t),
        Action::Stop(Stop::AlreadyCommitted)
    );
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    assert_eq!(
        l.next(&seen(Some(0), Some(0), false), t),
        Action::AskSources(Epoch(1))
    );
}

/// Row 5: a checkpoint written by a different query is refused, unless that query never
/// recorded an epoch — then the corrected query takes it over.
#[test]
fn another_querys_checkpoint_is_refused_unless_it_never_ran() {
    assert_eq!(ownership("abc", "abc", true), Ownership::Resume);
    assert_eq!(ownership("abc", "abc", false), Ownership::Resume);
    assert_eq!(ownership("abc", "xyz", true), Ownership::Refuse);
    assert_eq!(ownership("abc", "xyz", false), Ownership::Adopt);
}

#[test]
fn interval_trigger_waits_for_the_interval_and_follows_an_overrun_at_once() {
    let t = Instant::now();
    let second = Duration::from_secs(1);
    let mut l = Lifecycle::new(streaming(Trigger::Interval(second)));
    assert_eq!(
        l.next(&seen(None, None, false), t),
        Action::AskSources(Epoch(0))
    );
    l.sources_answered(Epoch(0), WORK, t);
    l.offsets_written(Epoch(0), t);
    assert_eq!(l.next_due(), Some(t + second));
    l.ran(Epoch(0), Ok(()), t);
    // Committed 200 ms in: wait for the rest of the interval.
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t + Duration::from_millis(200)),
        Action::Wait {
            until: t + second,
            why: Waiting::Trigger
        }
    );
    // The next epoch overran its interval: the one after starts at once.
    let t1 = t + second;
    l.next(&seen(Some(0), Some(0), false), t1);
    l.sources_answered(Epoch(1), WORK, t1);
    l.offsets_written(Epoch(1), t1);
    l.ran(Epoch(1), Ok(()), t1);
    let late = t1 + Duration::from_secs(3);
    assert_eq!(
        l.commit_done(Epoch(1), Ok(()), late),
        Action::Wait {
            until: late,
            why: Waiting::Trigger
        }
    );
}

#[test]
fn no_new_data_records_nothing_and_asks_again_at_the_next_trigger() {
    let t = Instant::now();
    let second = Duration::from_secs(1);
    let mut l = Lifecycle::new(streaming(Trigger::Interval(second)));
    l.next(&seen(Some(4), Some(4), false), t);
    assert_eq!(
        l.sources_answered(Epoch(5), NO_WORK, t + Duration::from_millis(5)),
        Action::Wait {
            until: t + second,
            why: Waiting::NoNewData
        }
    );
    // Asked when the trigger was long due: poll again after the short delay, not in a busy
    // loop.
    let late = t + Duration::from_secs(5);
    assert_eq!(
        l.sources_answered(Epoch(5), NO_WORK, late),
        Action::Wait {
            until: late + NO_DATA_POLL_DELAY,
            why: Waiting::NoNewData
        }
    );
    // `--no-data-epochs`: the epoch runs anyway.
    let mut policy = streaming(Trigger::Interval(second));
    policy.no_data_epochs = true;
    let mut l = Lifecycle::new(policy);
    l.next(&seen(None, None, false), t);
    assert_eq!(
        l.sources_answered(Epoch(0), NO_WORK, t),
        Action::WriteOffsets(Epoch(0))
    );
}

#[test]
fn once_runs_one_new_epoch_after_any_replay() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::Once));
    // A recorded epoch from an earlier run is replayed first; it is not this run's new epoch.
    assert_eq!(
        l.next(&seen(Some(2), Some(1), false), t),
        Action::Replay(Epoch(2))
    );
    l.ran(Epoch(2), Ok(()), t);
    assert_eq!(
        l.commit_done(Epoch(2), Ok(()), t),
        Action::Wait {
            until: t,
            why: Waiting::Trigger
        }
    );
    assert_eq!(
        l.next(&seen(Some(2), Some(2), false), t),
        Action::AskSources(Epoch(3))
    );
    l.sources_answered(Epoch(3), WORK, t);
    l.offsets_written(Epoch(3), t);
    assert_eq!(l.next_due(), None);
    l.ran(Epoch(3), Ok(()), t);
    l.commit_done(Epoch(3), Ok(()), t);
    assert_eq!(
        l.next(&seen(Some(3), Some(3), false), t),
        Action::Stop(Stop::Drained)
    );
    // Nothing new at all: stop without an epoch.
    let mut l = Lifecycle::new(streaming(Trigger::Once));
    l.next(&seen(None, None, false), t);
    assert_eq!(
        l.sources_answered(Epoch(0), NO_WORK, t),
        Action::Stop(Stop::Drained)
    );
}

#[test]
fn available_now_drains_then_stops() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::AvailableNow));
    l.next(&seen(None, None, false), t);
    l.sources_answered(Epoch(0), WORK, t);
    l.offsets_written(Epoch(0), t);
    // The next epoch is due at once: sources may look ahead while this one commits.
    assert_eq!(l.next_due(), Some(t));
    l.ran(Epoch(0), Ok(()), t);
    assert!(matches!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Wait { .. }
    ));
    l.next(&seen(Some(0), Some(0), false), t);
    assert_eq!(
        l.sources_answered(Epoch(1), NO_WORK, t),
        Action::Stop(Stop::Drained)
    );
}

#[test]
fn max_epochs_stops_after_that_many_commits() {
    let t = Instant::now();
    let mut policy = streaming(Trigger::Interval(Duration::ZERO));
    policy.max_epochs = Some(2);
    let mut l = Lifecycle::new(policy);
    for e in 0..2u64 {
        let committed = e.checked_sub(1);
        let prior = committed;
        assert_eq!(
            l.next(&seen(prior, committed, false), t),
            Action::AskSources(Epoch(e))
        );
        l.sources_answered(Epoch(e), WORK, t);
        l.offsets_written(Epoch(e), t);
        assert_eq!(l.is_last_epoch(), e == 1);
        l.ran(Epoch(e), Ok(()), t);
        let next = l.commit_done(Epoch(e), Ok(()), t);
        if e == 1 {
            assert_eq!(next, Action::Stop(Stop::MaxEpochs));
        } else {
            assert!(matches!(next, Action::Wait { .. }));
        }
    }
}

#[test]
fn transient_failures_rerun_the_recorded_epoch_then_fail() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    l.next(&seen(Some(0), Some(0), false), t);
    l.sources_answered(Epoch(1), WORK, t);
    l.offsets_written(Epoch(1), t);
    for attempt in 1..=EPOCH_RETRIES {
        let now = t + Duration::from_secs(attempt as u64);
        assert_eq!(
            l.ran(Epoch(1), Err(true), now),
            Action::Retry {
                epoch: Epoch(1),
                attempt,
                at: now + RETRY_DELAY
            }
        );
        // Observed again: the recorded epoch runs again, keeping its first start.
        assert_eq!(
            l.next(&seen(Some(1), Some(0), false), now),
            Action::Replay(Epoch(1))
        );
        assert_eq!(l.epoch_started(), Some(t));
    }
    assert_eq!(l.ran(Epoch(1), Err(true), t), Action::Fail);

    // A failed publish is retried the same way; after a crash between its record and
    // `commits/N` the observation finishes the recorded publish.
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    l.next(&seen(Some(1), Some(0), false), t);
    l.ran(Epoch(1), Ok(()), t);
    assert!(matches!(
        l.commit_done(Epoch(1), Err(true), t),
        Action::Retry { attempt: 1, .. }
    ));
    assert_eq!(
        l.next(&seen(Some(1), Some(0), true), t),
        Action::FinishPublish(Epoch(1))
    );
    // Success resets the count.
    assert!(matches!(
        l.commit_done(Epoch(1), Ok(()), t),
        Action::Wait { .. }
    ));
    l.next(&seen(Some(1), Some(1), false), t);
    l.sources_answered(Epoch(2), WORK, t);
    l.offsets_written(Epoch(2), t);
    assert!(matches!(
        l.ran(Epoch(2), Err(true), t),
        Action::Retry { attempt: 1, .. }
    ));
}

#[test]
fn permanent_failures_and_bounded_failures_fail_at_once() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    l.next(&seen(None, None, false), t);
    l.sources_answered(Epoch(0), WORK, t);
    l.offsets_written(Epoch(0), t);
    assert_eq!(l.ran(Epoch(0), Err(false), t), Action::Fail);

    let mut l = Lifecycle::new(bounded());
    l.next(&seen(None, None, false), t);
    l.sources_answered(Epoch(0), WORK, t);
    l.offsets_written(Epoch(0), t);
    assert_eq!(l.ran(Epoch(0), Err(true), t), Action::Fail);
}

#[test]
fn planning_failures_retry_every_second_up_to_the_limit() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    for attempt in 1..=PLANNING_RETRIES {
        assert_eq!(
            l.next(&seen(None, None, false), t),
            Action::AskSources(Epoch(0))
        );
        assert_eq!(
            l.sources_answered(Epoch(0), Answer::Failed { retryable: true }, t),
            Action::Wait {
                until: t + RETRY_DELAY,
                why: Waiting::PlanningRetry { attempt }
            }
        );
    }
    assert_eq!(
        l.sources_answered(Epoch(0), Answer::Failed { retryable: true }, t),
        Action::Fail
    );
    // An answer resets the count; a permanent error or a bounded job fails at once.
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    l.sources_answered(Epoch(0), Answer::Failed { retryable: true }, t);
    l.sources_answered(Epoch(0), WORK, t);
    assert!(matches!(
        l.sources_answered(Epoch(0), Answer::Failed { retryable: true }, t),
        Action::Wait {
            why: Waiting::PlanningRetry { attempt: 1 },
            ..
        }
    ));
    assert_eq!(
        l.sources_answered(Epoch(0), Answer::Failed { retryable: false }, t),
        Action::Fail
    );
    let mut l = Lifecycle::new(bounded());
    assert_eq!(
        l.sources_answered(Epoch(0), Answer::Failed { retryable: true }, t),
        Action::Fail
    );
}

#[test]
fn a_stop_request_ends_a_stream_between_epochs_but_not_a_bounded_job() {
    let t = Instant::now();
    let mut l = Lifecycle::new(streaming(Trigger::Interval(Duration::from_secs(1))));
    l.next(&seen(None, None, false), t);
    l.sources_answered(Epoch(0), WORK, t);
    l.offsets_written(Epoch(0), t);
    l.request_stop();
    // The running epoch commits first.
    assert_eq!(l.ran(Epoch(0), Ok(()), t), Action::Commit(Epoch(0)));
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Stop(Stop::Requested)
    );
    assert_eq!(
        l.next(&seen(Some(0), Some(0), false), t),
        Action::Stop(Stop::Requested)
    );

    let mut l = Lifecycle::new(bounded());
    l.request_stop();
    assert_eq!(
        l.next(&seen(None, None, false), t),
        Action::AskSources(Epoch(0))
    );
}

#[test]
fn the_watermark_trails_the_largest_event_time_and_never_goes_back() {
    assert_eq!(watermark(None, Some(10_000), None), None);
    assert_eq!(watermark(Some(5_000), None, None), None);
    assert_eq!(watermark(Some(5_000), Some(10_000), None), Some(5_000));
    assert_eq!(
        watermark(Some(5_000), Some(10_000), Some(7_000)),
        Some(7_000)
    );
    assert_eq!(watermark(Some(5_000), None, Some(7_000)), Some(7_000));
}

/// Runs a new epoch from asking the sources to its tasks' end; it started at `at`.
fn run_epoch(l: &mut Lifecycle, epoch: u64, at: Instant) {
    let committed = epoch.checked_sub(1);
    assert_eq!(
        l.next(&seen(committed, committed, false), at),
        Action::AskSources(Epoch(epoch))
    );
    l.sources_answered(Epoch(epoch), WORK, at);
    l.offsets_written(Epoch(epoch), at);
    assert_eq!(
        l.ran(Epoch(epoch), Ok(()), at),
        Action::Commit(Epoch(epoch))
    );
}

/// Commits `epoch` at `at`, its data closing windows: the next epoch starts at once.
fn commit_closing_windows(l: &mut Lifecycle, epoch: u64, at: Instant) {
    l.windows_closing();
    assert_eq!(
        l.commit_done(Epoch(epoch), Ok(()), at),
        Action::Wait {
            until: at,
            why: Waiting::WindowsClosing
        }
    );
}

#[test]
fn an_epoch_whose_data_closes_windows_is_followed_at_once_then_the_cadence_resumes() {
    let t = Instant::now();
    let second = Duration::from_secs(1);
    let ms = Duration::from_millis;
    let mut l = Lifecycle::new(streaming(Trigger::Interval(second)));
    run_epoch(&mut l, 0, t);
    commit_closing_windows(&mut l, 0, t + ms(20));
    // The follow-up closes the windows; it also leaves another window closing (new data
    // arrived meanwhile) but runs no second one ahead: the trigger's cadence resumes.
    run_epoch(&mut l, 1, t + ms(20));
    l.windows_closing();
    assert_eq!(
        l.commit_done(Epoch(1), Ok(()), t + ms(30)),
        Action::Wait {
            until: t + second,
            why: Waiting::Trigger
        }
    );
    // The next trigger's epoch may run one ahead again.
    run_epoch(&mut l, 2, t + second);
    assert_eq!(
        l.commit_done(Epoch(2), Ok(()), t + second + ms(10)),
        Action::Wait {
            until: t + 2 * second,
            why: Waiting::Trigger
        }
    );
    run_epoch(&mut l, 3, t + 2 * second);
    commit_closing_windows(&mut l, 3, t + 2 * second + ms(10));
    // The follow-up finds nothing new after all: it waits for the trigger it followed, and
    // the epoch of that trigger is an ordinary one.
    let at = t + 2 * second + ms(10);
    l.next(&seen(Some(3), Some(3), false), at);
    assert_eq!(
        l.sources_answered(Epoch(4), NO_WORK, at),
        Action::Wait {
            until: t + 3 * second,
            why: Waiting::NoNewData
        }
    );
    run_epoch(&mut l, 4, t + 3 * second);
    commit_closing_windows(&mut l, 4, t + 3 * second + ms(5));
}

#[test]
fn closing_windows_changes_nothing_when_turned_off_or_when_the_trigger_is_due_anyway() {
    let t = Instant::now();
    let second = Duration::from_secs(1);
    let mut policy = streaming(Trigger::Interval(second));
    policy.watermark_epochs = false;
    let mut l = Lifecycle::new(policy);
    run_epoch(&mut l, 0, t);
    l.windows_closing();
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Wait {
            until: t + second,
            why: Waiting::Trigger
        }
    );
    // An epoch that overran its interval is followed at once as the trigger's.
    let mut l = Lifecycle::new(streaming(Trigger::Interval(second)));
    run_epoch(&mut l, 0, t);
    l.windows_closing();
    let late = t + 2 * second;
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), late),
        Action::Wait {
            until: late,
            why: Waiting::Trigger
        }
    );
    // A failed commit forgets it: the re-run's commit waits for the trigger.
    let mut l = Lifecycle::new(streaming(Trigger::Interval(second)));
    run_epoch(&mut l, 0, t);
    l.windows_closing();
    assert!(matches!(
        l.commit_done(Epoch(0), Err(true), t),
        Action::Retry { .. }
    ));
    assert_eq!(
        l.next(&seen(Some(0), None, false), t),
        Action::Replay(Epoch(0))
    );
    assert_eq!(l.ran(Epoch(0), Ok(()), t), Action::Commit(Epoch(0)));
    assert_eq!(
        l.commit_done(Epoch(0), Ok(()), t),
        Action::Wait {
            until: t + second,
            why: Waiting::Trigger
        }
    );
}
