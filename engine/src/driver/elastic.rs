//! Dynamic allocation in the epoch loop: the policy's decision after each committed epoch
//! (from what the epoch measured), and carrying it out between epochs — the local manager
//! starts executor processes or stops the newest, a standalone driver says what it wants.
//! A bounded job (one epoch) follows its pending tasks while it runs instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::allocation::{bounded_target, AllocationPolicy, Decision, EpochSample};
use super::cluster::Cluster;
use super::epoch::{EpochRunner, Query};
use super::events::Event;
use super::report::{AllocationRecord, EpochProgress};
use super::scheduler::EpochScheduler;
use super::tasks::Tasks;
use super::Trigger;
use crate::error::Result;
use crate::protocol::{ExecutorId, ToExecutor};

/// Tasks count as waiting once they have waited this long for a slot (Spark's
/// `schedulerBacklogTimeout`): a stage's tasks that start a moment later do not grow the job.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(1);
/// A started executor that has not joined after this long is given up on.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl EpochRunner<'_> {
    /// Dynamic allocation's decision after a committed streaming epoch (carried out by
    /// [`EpochRunner::allocate`] once the epoch's bookkeeping is done).
    pub(super) fn decide(
        &mut self,
        query: &Query,
        progress: &EpochProgress,
        execution: Duration,
    ) -> AllocationRecord {
        // A started executor counts from its start (so it is not started twice) until it joins
        // or, after a minute without joining, is given up on.
        let members = &self.tasks.members;
        self.starting.retain(|(name, at)| {
            !members.values().any(|m| &m.info.name == name)
                && at.elapsed() < Duration::from_secs(60)
        });
        let executors = members.len() + self.starting.len();
        let backlog = progress.backlog();
        let decision = self.allocation.observe(EpochSample {
            executors,
            execution_ms: execution.as_secs_f64() * 1000.0,
            trigger_ms: match query.policy.trigger {
                Some(Trigger::Interval(d)) => d.as_secs_f64() * 1000.0,
                _ => 0.0,
            },
            backlog,
            processed: progress.input_rows,
        });
        let record = AllocationRecord {
            executors,
            target: decision.target,
            reason: decision.reason.clone(),
            backlog,
        };
        self.wanted = (decision.target != executors).then_some(decision);
        record
    }

    /// Carries out the last decision between epochs: the local manager starts executor
    /// processes or stops the newest ones; a standalone driver says how many it wants.
    pub(super) async fn allocate(&mut self, cluster: &mut Cluster) -> Result<()> {
        let Some(decision) = self.wanted.take() else {
            return Ok(());
        };
        let current = self.tasks.members.len() + self.starting.len();
        if !cluster.is_local() {
            self.notice(format!(
                "dynamic allocation: this query wants {} executor(s), {current} have joined ({})",
                decision.target, decision.reason
            ));
            return Ok(());
        }
        for _ in current..decision.target {
            let Some((name, how)) = cluster.start_executor().await? else {
                break;
            };
            self.notice(format!(
                "dynamic allocation: started {name} ({how}): {}",
                decision.reason
            ));
            self.starting.push((name, Instant::now()));
        }
        if decision.target < current {
            let newest: Vec<ExecutorId> = self
                .tasks
                .members
                .keys()
                .rev()
                .take(current - decision.target)
                .copied()
                .collect();
            for id in newest {
                if let Some(m) = self.tasks.members.get(&id) {
                    self.notice(format!(
                        "dynamic allocation: stopping {} (pid {}): {}",
                        m.info.name, m.info.pid, decision.reason
                    ));
                }
                self.tasks.retire(id, &decision.reason);
            }
        }
        Ok(())
    }
}

impl Tasks<'_> {
    /// Stops executor `id` between epochs (dynamic allocation): it leaves the cluster at once,
    /// so no task is scheduled on it; its shuffle outputs are no longer needed (the epoch
    /// committed) and its state partitions are restored elsewhere from the committed snapshot.
    pub(super) fn retire(&mut self, id: ExecutorId, reason: &str) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        self.placement.retain(|_, e| *e != id);
        for peer in self.members.values() {
            let _ = peer.sender.try_send(ToExecutor::PeerLost {
                executor: id,
                data_addr: member.info.data_addr,
            });
        }
        let _ = member.sender.try_send(ToExecutor::Shutdown {
            reason: format!("dynamic allocation: {reason}"),
        });
        self.retiring.insert(id, member);
    }
}

/// Dynamic allocation of a bounded job while its one epoch runs (local manager): grow while
/// tasks wait for a slot, release executors idle past `--allocation-idle-timeout`.
pub(super) struct BoundedElastic {
    policy: AllocationPolicy,
    slots: usize,
    idle_timeout: Duration,
    /// Since when tasks have been waiting for a slot.
    waiting_since: Option<Instant>,
    /// Since when each releasable executor has been idle.
    idle_since: BTreeMap<ExecutorId, Instant>,
    /// Executors started that have not joined yet.
    starting: Vec<(String, Instant)>,
    /// The last change and how many executors it left (for the progress record).
    last: Option<(Decision, usize)>,
}

impl BoundedElastic {
    pub(super) fn new(policy: AllocationPolicy, slots: usize, idle_timeout: Duration) -> Self {
        BoundedElastic {
            policy,
            slots,
            idle_timeout,
            waiting_since: None,
            idle_since: BTreeMap::new(),
            starting: Vec::new(),
            last: None,
        }
    }

    /// The progress record's `allocation`: the last change made while the job ran.
    pub(super) fn record(&self, executors: usize) -> AllocationRecord {
        let (target, reason) = match &self.last {
            Some((d, _)) => (d.target, d.reason.clone()),
            None => (executors, "no task waited for a slot".into()),
        };
        AllocationRecord {
            executors: self.last.as_ref().map_or(executors, |(_, from)| *from),
            target,
            reason,
            backlog: 0,
        }
    }
}

impl Tasks<'_> {
    /// One look at a running bounded job (every scheduler tick): starts executors while tasks
    /// wait, stops those idle past the timeout that hold nothing still needed.
    pub(super) async fn allocate_bounded(
        &mut self,
        elastic: &mut BoundedElastic,
        scheduler: &mut EpochScheduler,
        cluster: &mut Cluster,
    ) -> Result<()> {
        let now = Instant::now();
        let members = &self.members;
        elastic.starting.retain(|(name, at)| {
            !members.values().any(|m| &m.info.name == name) && at.elapsed() < JOIN_TIMEOUT
        });
        let waiting = scheduler.waiting_tasks();
        elastic.waiting_since = (waiting > 0).then(|| elastic.waiting_since.unwrap_or(now));
        // What the executors being started will take is not waiting any more.
        let pending = if elastic
            .waiting_since
            .is_some_and(|t| now.duration_since(t) >= BACKLOG_TIMEOUT)
        {
            waiting.saturating_sub(elastic.starting.len() * elastic.slots)
        } else {
            0
        };
        let releasable = scheduler.releasable_executors();
        elastic.idle_since.retain(|e, _| releasable.contains(e));
        for e in &releasable {
            elastic.idle_since.entry(*e).or_insert(now);
        }
        let idle_ms: Vec<u64> = self
            .members
            .keys()
            .map(|e| {
                elastic
                    .idle_since
                    .get(e)
                    .map_or(0, |t| now.duration_since(*t).as_millis() as u64)
            })
            .collect();
        let executors = self.members.len() + elastic.starting.len();
        let decision = bounded_target(
            &elastic.policy,
            executors,
            elastic.slots,
            pending,
            &idle_ms,
            elastic.idle_timeout.as_millis() as u64,
        );
        if decision.target > executors {
            for _ in executors..decision.target {
                let Some((name, how)) = cluster.start_executor().await? else {
                    break;
                };
                self.reporter.report(Event::notice(format!(
                    "dynamic allocation: started {name} ({how}): {}",
                    decision.reason
                )));
                elastic.starting.push((name, now));
            }
            elastic.last = Some((decision, executors));
        } else if decision.target < executors {
            // The longest idle first.
            let mut idle: Vec<(Instant, ExecutorId)> = elastic
                .idle_since
                .iter()
                .filter(|(_, t)| now.duration_since(**t) > elastic.idle_timeout)
                .map(|(e, t)| (*t, *e))
                .collect();
            idle.sort();
            for (_, id) in idle.into_iter().take(executors - decision.target) {
                if let Some(m) = self.members.get(&id) {
                    self.reporter.report(Event::notice(format!(
                        "dynamic allocation: stopping {} (pid {}): {}",
                        m.info.name, m.info.pid, decision.reason
                    )));
                }
                scheduler.release_executor(id);
                elastic.idle_since.remove(&id);
                self.retire(id, &decision.reason);
            }
            elastic.last = Some((decision, executors));
        }
        Ok(())
    }
}
