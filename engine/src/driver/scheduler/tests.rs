use super::*;

fn shape(id: usize, tasks: usize, inputs: &[usize]) -> StageShape {
    StageShape {
        id: StageId(id),
        tasks,
        inputs: inputs.iter().map(|i| StageId(*i)).collect(),
        pinned: false,
        sticky: false,
        output_on_executor: true,
    }
}

fn scheduler(shapes: Vec<StageShape>, executors: &[(u32, u32)]) -> EpochScheduler {
    let mut s = EpochScheduler::new(shapes, 0, SchedulerLimits::default());
    for (id, slots) in executors {
        s.add_executor(ExecutorId(*id), *slots);
    }
    s
}

fn two_stage() -> EpochScheduler {
    scheduler(vec![shape(0, 2, &[]), shape(1, 2, &[0])], &[(1, 1), (2, 1)])
}

fn succeed_all(s: &mut EpochScheduler, assigned: &[Assignment], now: Instant) {
    for a in assigned {
        s.on_succeeded(a.attempt, Box::default(), now);
    }
}

/// Runs every runnable task to success until nothing is left; returns the attempts made.
fn drain(s: &mut EpochScheduler, now: Instant) -> Vec<Assignment> {
    let mut all = Vec::new();
    loop {
        let next = s.poll(now);
        if next.is_empty() {
            return all;
        }
        succeed_all(s, &next, now);
        all.extend(next);
    }
}

#[test]
fn downstream_stage_waits_for_its_inputs_and_tasks_spread() {
    let now = Instant::now();
    let mut s = two_stage();
    let first = s.poll(now);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|a| a.task.stage == StageId(0)));
    assert_ne!(
        first[0].executor, first[1].executor,
        "one task per executor"
    );
    assert!(
        s.poll(now).is_empty(),
        "no free slots, stage 1 not runnable"
    );
    s.on_succeeded(first[0].attempt, Box::default(), now);
    assert!(s.poll(now).is_empty(), "stage 0 not done yet");
    s.on_succeeded(first[1].attempt, Box::default(), now);
    let second = s.poll(now);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|a| a.task.stage == StageId(1)));
    succeed_all(&mut s, &second, now);
    assert!(s.is_complete());
    assert!(s.retried().is_empty());
}

#[test]
fn pinned_tasks_return_to_their_executor_and_move_only_when_it_is_gone() {
    let now = Instant::now();
    let mut pinned = shape(0, 2, &[]);
    pinned.pinned = true;
    let shapes = vec![pinned];
    let mut first = scheduler(shapes.clone(), &[(1, 2), (2, 2)]);
    drain(&mut first, now);
    let placement = first.placement();
    assert_eq!(placement.len(), 2);
    for _ in 0..3 {
        let mut next = scheduler(shapes.clone(), &[(1, 2), (2, 2)]);
        next.set_preferred(placement.clone());
        for x in next.poll(now) {
            assert_eq!(Some(&x.executor), placement.get(&x.task));
        }
    }
    let lost = placement[&key(0, 0)];
    let survivor = if lost == ExecutorId(1) {
        ExecutorId(2)
    } else {
        ExecutorId(1)
    };
    let mut next = scheduler(shapes, &[(survivor.0, 2)]);
    next.set_preferred(placement);
    let assigned = next.poll(now);
    assert_eq!(assigned.len(), 2);
    assert!(assigned.iter().all(|x| x.executor == survivor));
}

#[test]
fn sticky_tasks_return_to_their_executor_when_it_has_a_slot_and_go_elsewhere_rather_than_wait() {
    let now = Instant::now();
    let mut scan = shape(0, 2, &[]);
    scan.sticky = true;
    let shapes = vec![scan];
    // Both tasks ran on executor 2 last time.
    let preferred: BTreeMap<TaskKey, ExecutorId> =
        [(key(0, 0), ExecutorId(2)), (key(0, 1), ExecutorId(2))].into();
    let mut next = scheduler(shapes.clone(), &[(1, 2), (2, 2), (3, 2)]);
    next.set_preferred(preferred.clone());
    let assigned = next.poll(now);
    assert_eq!(assigned.len(), 2);
    assert!(assigned.iter().all(|x| x.executor == ExecutorId(2)));
    assert_eq!(
        next.placement(),
        preferred,
        "the next epoch prefers the same"
    );
    // One slot there: the other task runs elsewhere at once.
    let mut next = scheduler(shapes, &[(1, 2), (2, 1)]);
    next.set_preferred(preferred);
    let assigned = next.poll(now);
    assert_eq!(assigned.len(), 2);
    assert_eq!(
        assigned
            .iter()
            .filter(|x| x.executor == ExecutorId(2))
            .count(),
        1
    );
}

#[test]
fn a_lost_executor_reruns_only_its_own_work_and_its_late_reports_are_ignored() {
    let now = Instant::now();
    // Three executors; stage 0 (3 map tasks) finishes, stage 1 (3 tasks) is running.
    let mut s = scheduler(
        vec![shape(0, 3, &[]), shape(1, 3, &[0])],
        &[(1, 1), (2, 1), (3, 1)],
    );
    let maps = s.poll(now);
    succeed_all(&mut s, &maps, now);
    let reducers = s.poll(now);
    assert_eq!(reducers.len(), 3);
    // Executor 2's reducer finished before it died; executor 3's is still running.
    let on = |e: u32, list: &[Assignment]| {
        list.iter()
            .find(|a| a.executor == ExecutorId(e))
            .cloned()
            .unwrap()
    };
    s.on_succeeded(on(2, &reducers).attempt, Box::default(), now);
    s.on_succeeded(on(1, &reducers).attempt, Box::default(), now);
    let rerun = s.on_executor_lost(ExecutorId(3), now).expect("retryable");
    // Its running reducer and its map output (stage 1 still needs it) run again.
    let lost_map = on(3, &maps).task;
    let lost_reducer = on(3, &reducers).task;
    assert_eq!(rerun.len(), 2, "{rerun:?}");
    assert!(rerun.contains(&lost_map) && rerun.contains(&lost_reducer));
    // A late report from the lost executor changes nothing.
    s.on_succeeded(on(3, &reducers).attempt, Box::default(), now);
    assert!(!s.is_complete());
    let again = drain(&mut s, now);
    assert_eq!(
        again.iter().map(|a| a.task).collect::<Vec<_>>(),
        vec![lost_map, lost_reducer]
    );
    assert!(again.iter().all(|a| a.executor != ExecutorId(3)));
    assert!(s.is_complete());
    // Exactly those two tasks have more than one attempt.
    let retried: Vec<TaskKey> = s.retried().into_iter().map(|(t, _)| t).collect();
    assert_eq!(retried, vec![lost_map, lost_reducer]);
    let history = &s.retried()[0].1;
    assert_eq!(history[0].outcome, AttemptOutcome::OutputLost);
    assert_eq!(history[1].outcome, AttemptOutcome::Succeeded);
}

#[test]
fn outputs_nobody_needs_any_more_are_not_regenerated() {
    let now = Instant::now();
    let mut sink = shape(1, 2, &[0]);
    sink.output_on_executor = false;
    let mut s = scheduler(vec![shape(0, 2, &[]), sink], &[(1, 1), (2, 1)]);
    drain(&mut s, now);
    assert!(s.is_complete());
    // Sink outputs are on shared storage; map outputs were all consumed.
    assert_eq!(s.on_executor_lost(ExecutorId(1), now), Ok(vec![]));
    assert!(s.is_complete());
}

#[test]
fn losing_an_intermediate_output_regenerates_its_own_inputs_too() {
    let now = Instant::now();
    // 0 -> 1 -> 2, one executor ran everything of stages 0 and 1 on partition 0.
    let mut s = scheduler(
        vec![shape(0, 1, &[]), shape(1, 1, &[0]), shape(2, 1, &[1])],
        &[(1, 1)],
    );
    let a = s.poll(now);
    succeed_all(&mut s, &a, now);
    let b = s.poll(now);
    succeed_all(&mut s, &b, now);
    s.add_executor(ExecutorId(2), 1);
    let c = s.poll(now);
    let rerun = s.on_executor_lost(a[0].executor, now).unwrap();
    let mut expected = vec![key(1, 0), key(0, 0)];
    if c[0].executor == a[0].executor {
        expected.insert(0, key(2, 0));
    }
    assert_eq!(rerun, expected);
    if c[0].executor != a[0].executor {
        // The survivor's stage-2 attempt finds its input gone.
        s.on_fetch_failed(c[0].attempt, StageId(1), 0, a[0].executor, "gone".into());
    }
    let again = drain(&mut s, now);
    assert!(again.len() >= 2);
    assert!(s.is_complete());
}

#[test]
fn a_fetch_failure_regenerates_the_input_without_counting_against_the_task() {
    let now = Instant::now();
    let mut s = two_stage();
    let maps = s.poll(now);
    succeed_all(&mut s, &maps, now);
    let reducers = s.poll(now);
    let victim = reducers[0].clone();
    let holder = maps[1].executor;
    assert!(s
        .on_fetch_failed(
            victim.attempt,
            StageId(0),
            1,
            holder,
            "connection lost".into()
        )
        .is_none());
    let next = s.poll(now);
    assert_eq!(next.len(), 1, "the lost map output first");
    assert_eq!(next[0].task, key(0, 1));
    succeed_all(&mut s, &next, now);
    // The other reducer is still running; the failed one runs again now.
    let retry = s.poll(now);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].task, victim.task);
    succeed_all(&mut s, &retry, now);
    s.on_succeeded(reducers[1].attempt, Box::default(), now);
    assert!(s.is_complete());
    assert_eq!(s.logs[1][victim.task.partition].failures, 0);
}

#[test]
fn retryable_failures_back_off_and_end_with_the_history_of_attempts() {
    let start = Instant::now();
    let mut s = scheduler(vec![shape(0, 1, &[])], &[(1, 1)]);
    let mut now = start;
    for round in 1..=4u32 {
        let a = s.poll(now);
        assert_eq!(a.len(), 1, "round {round}");
        let failure = s.on_failed(a[0].attempt, format!("broker timeout {round}"), true, now);
        if round < 4 {
            assert!(failure.is_none());
            assert!(s.poll(now).is_empty(), "backing off");
            now += Duration::from_secs(10);
        } else {
            let Some(EpochFailure::RetriesExhausted { task, history }) = failure else {
                panic!("{failure:?}");
            };
            assert_eq!(task, key(0, 0));
            assert_eq!(history.len(), 4);
            assert_eq!(
                history[3].outcome,
                AttemptOutcome::Failed("broker timeout 4".into())
            );
        }
    }
}

#[test]
fn a_non_retryable_failure_ends_the_epoch_at_once() {
    let now = Instant::now();
    let mut s = two_stage();
    let first = s.poll(now);
    let f = s.on_failed(first[0].attempt, "bad row".into(), false, now);
    assert!(matches!(f, Some(EpochFailure::TaskFailed { message, .. }) if message == "bad row"));
}

#[test]
fn a_straggler_gets_a_speculative_copy_and_the_first_to_finish_wins() {
    let start = Instant::now();
    let mut s = EpochScheduler::new(
        vec![shape(0, 4, &[])],
        0,
        SchedulerLimits {
            speculation: Some(1.5),
            speculation_min: Duration::from_millis(100),
            ..Default::default()
        },
    );
    s.add_executor(ExecutorId(1), 2);
    s.add_executor(ExecutorId(2), 2);
    let first = s.poll(start);
    assert_eq!(first.len(), 4);
    let later = start + Duration::from_millis(200);
    for a in &first[..3] {
        s.on_succeeded(a.attempt, Box::default(), later);
    }
    // Three quarters done in 200 ms; the fourth has run 2 s.
    let slow = start + Duration::from_secs(2);
    let copies = s.poll(slow);
    assert_eq!(copies.len(), 1);
    assert!(copies[0].speculative);
    assert_eq!(copies[0].task, first[3].task);
    assert_ne!(copies[0].executor, first[3].executor);
    assert!(s.poll(slow).is_empty(), "one copy at most");
    s.on_succeeded(copies[0].attempt, Box::default(), slow);
    assert!(s.is_complete());
    // The original finishing later is discarded.
    s.on_succeeded(first[3].attempt, Box::default(), slow);
    let (_, history) = &s.retried()[0];
    assert_eq!(history[0].outcome, AttemptOutcome::Superseded);
    assert_eq!(history[1].outcome, AttemptOutcome::Succeeded);
    assert_eq!(
        s.outputs(StageId(0))[first[3].task.partition].1,
        copies[0].executor
    );
}

#[test]
fn an_idle_executor_can_go_away() {
    let now = Instant::now();
    let mut s = two_stage();
    s.add_executor(ExecutorId(3), 1);
    let first = s.poll(now);
    let idle = [ExecutorId(1), ExecutorId(2), ExecutorId(3)]
        .into_iter()
        .find(|e| first.iter().all(|a| a.executor != *e))
        .unwrap();
    assert_eq!(s.on_executor_lost(idle, now), Ok(vec![]));
}

#[test]
fn a_stage_completed_unrun_releases_its_readers_and_is_never_rerun() {
    let now = Instant::now();
    let mut s = two_stage();
    for partition in 0..2 {
        s.complete_unrun(
            TaskKey {
                stage: StageId(0),
                partition,
            },
            TaskReport::default(),
        );
    }
    assert!(s.stage_done(StageId(0)));
    // The readers run at once; nothing of stage 0 was sent anywhere.
    let first = s.poll(now);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|a| a.task.stage == StageId(1)));
    assert_eq!(s.attempt_count(), 2);
    // Losing an executor re-runs its running reader only, never the unrun tasks.
    let rerun = s
        .on_executor_lost(first[0].executor, now)
        .expect("retryable");
    assert_eq!(rerun, vec![first[0].task]);
    succeed_all(&mut s, &first[1..], now);
    let again = drain(&mut s, now);
    assert_eq!(
        again.iter().map(|a| a.task).collect::<Vec<_>>(),
        vec![first[0].task]
    );
    assert!(s.is_complete());
    assert!(s.outputs(StageId(0)).iter().all(|(_, e)| *e == UNRUN));
}

#[test]
fn waiting_tasks_and_releasable_executors_follow_what_later_stages_need() {
    let now = Instant::now();
    // Map stage of 5 tasks, a one-task sink stage (staged files: nothing on executors).
    let mut sink = shape(1, 1, &[0]);
    sink.output_on_executor = false;
    let mut s = scheduler(vec![shape(0, 5, &[]), sink], &[(1, 1), (2, 1)]);
    let first = s.poll(now);
    assert_eq!(first.len(), 2);
    assert_eq!(s.waiting_tasks(), 3, "3 map tasks wait for a slot");
    assert!(s.releasable_executors().is_empty(), "both are running");
    // A third executor joins and takes one; the rest finish the map stage.
    s.add_executor(ExecutorId(3), 1);
    let more = s.poll(now);
    assert_eq!(more.len(), 1);
    assert_eq!(s.waiting_tasks(), 2);
    let mut assigned: Vec<Assignment> = first.into_iter().chain(more).collect();
    let mut sink_task = Vec::new();
    while !assigned.is_empty() {
        succeed_all(&mut s, &assigned, now);
        let (map, sink): (Vec<_>, Vec<_>) =
            s.poll(now).into_iter().partition(|a| a.task.stage.0 == 0);
        sink_task.extend(sink);
        assigned = map;
    }
    // Stage 0 done: its outputs are needed until the sink finishes, so no executor holding
    // one is releasable, whatever it runs.
    assert_eq!(sink_task.len(), 1);
    assert_eq!(s.waiting_tasks(), 0);
    assert!(
        s.releasable_executors().is_empty(),
        "every executor holds a map output"
    );
    succeed_all(&mut s, &sink_task, now);
    assert!(s.is_complete());
    assert_eq!(
        s.releasable_executors().len(),
        3,
        "nothing is needed any more"
    );
    s.release_executor(ExecutorId(2));
    assert_eq!(s.executor_count(), 2);
    assert!(
        s.is_complete(),
        "released executors' finished tasks stay finished"
    );
}
