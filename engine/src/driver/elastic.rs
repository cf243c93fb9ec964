//! Dynamic allocation in the epoch loop: the policy's decision after each committed epoch
//! (from what the epoch measured), and carrying it out between epochs — the local manager
//! starts executor processes or stops the newest, a standalone driver says what it wants.

use std::time::{Duration, Instant};

use super::allocation::EpochSample;
use super::cluster::Cluster;
use super::epoch::{EpochRunner, Query};
use super::report::{AllocationRecord, EpochProgress};
use super::tasks::Tasks;
use super::Trigger;
use crate::error::Result;
use crate::protocol::{ExecutorId, ToExecutor};

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
    pub(super) fn allocate(&mut self, cluster: &mut Cluster) -> Result<()> {
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
            let Some((name, pid)) = cluster.start_executor()? else {
                break;
            };
            self.notice(format!(
                "dynamic allocation: started {name} (pid {pid}): {}",
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
