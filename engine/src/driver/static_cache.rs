//! Static tables of a streaming query, kept on the executors (issue 19).
//!
//! The dimension side of a stream–static join is a bounded table that every epoch's rows must
//! meet in full, so every epoch used to list it, read it and shuffle it again. Now the scan
//! stage of such a table (a stage that reads only bounded tables and no other stage) runs once:
//! its shuffle outputs stay on the executors that wrote them (on their local disk, outside the
//! memory pool), later epochs' tasks read them from there, and the stage runs again only when
//! the table's files change — their names, sizes or modification times, which the source
//! reports as a fingerprint every epoch — or for the tasks whose executor is gone.

use std::collections::BTreeMap;

use sluice_checkpoint::Epoch;

use super::report::EpochInput;
use super::scheduler::EpochScheduler;
use crate::plan::PlannedQuery;
use crate::protocol::{ExecutorId, StageId, TaskKey, TaskReport};

/// One static scan stage's kept outputs.
#[derive(Debug, Clone)]
struct Kept {
    /// Its tables' fingerprints when the outputs were written.
    fingerprint: Vec<String>,
    /// Per task: where its output is, the epoch that wrote it, and its report.
    outputs: BTreeMap<usize, (ExecutorId, Epoch, TaskReport)>,
}

/// The static scan stages' outputs the executors keep, by stage.
#[derive(Debug, Default)]
pub(super) struct StaticCache {
    stages: BTreeMap<StageId, Kept>,
}

/// The scan stages of a streaming query that read only bounded tables (none in a bounded job).
fn static_stages(planned: &PlannedQuery) -> impl Iterator<Item = StageId> + '_ {
    let streaming = planned.sources.values().any(|s| !s.bounded());
    planned
        .stages
        .iter()
        .filter(move |s| {
            streaming
                && s.inputs.is_empty()
                && !s.tables.is_empty()
                && s.tables
                    .iter()
                    .all(|(t, _)| planned.sources.get(t).is_some_and(|s| s.bounded()))
        })
        .map(|s| s.id)
}

/// The fingerprints of a stage's tables in this epoch's input (`None`: a table without one).
fn fingerprint(planned: &PlannedQuery, stage: StageId, input: &EpochInput) -> Option<Vec<String>> {
    planned.stages[stage.0]
        .tables
        .iter()
        .map(|(t, _)| input.sources.get(t)?.fingerprint.clone())
        .collect()
}

impl StaticCache {
    /// Before an epoch's tasks are scheduled: completes each static scan task whose kept
    /// output is on an executor still taking part (`alive`), if its tables' files are as they
    /// were. Returns how many it completed.
    pub(super) fn apply(
        &self,
        planned: &PlannedQuery,
        input: &EpochInput,
        scheduler: &mut EpochScheduler,
        alive: impl Fn(ExecutorId) -> bool,
    ) -> usize {
        let mut completed = 0;
        for stage in static_stages(planned) {
            let Some(kept) = self.stages.get(&stage) else {
                continue;
            };
            if fingerprint(planned, stage, input).as_ref() != Some(&kept.fingerprint) {
                continue;
            }
            for (partition, (executor, epoch, report)) in &kept.outputs {
                if !alive(*executor) {
                    continue;
                }
                let report = TaskReport {
                    cached_from: Some(*epoch),
                    ..report.clone()
                };
                let task = TaskKey {
                    stage,
                    partition: *partition,
                };
                scheduler.complete_cached(task, *executor, report);
                completed += 1;
            }
        }
        completed
    }

    /// After an epoch committed: remembers where each static scan task's output is now (the
    /// epoch that wrote it: an earlier one for a kept output, this one for a task that ran).
    pub(super) fn remember(
        &mut self,
        planned: &PlannedQuery,
        input: &EpochInput,
        scheduler: &EpochScheduler,
    ) {
        for stage in static_stages(planned).collect::<Vec<_>>() {
            let Some(fingerprint) = fingerprint(planned, stage, input) else {
                self.stages.remove(&stage);
                continue;
            };
            let outputs = scheduler
                .reports(stage)
                .into_iter()
                .map(|(p, executor, report)| {
                    let epoch = report.cached_from.unwrap_or(input.epoch);
                    let report = TaskReport {
                        cached_from: None,
                        ..report.clone()
                    };
                    (p, (executor, epoch, report))
                })
                .collect();
            self.stages.insert(
                stage,
                Kept {
                    fingerprint,
                    outputs,
                },
            );
        }
    }

    /// The outputs executors must keep when they forget older epochs.
    pub(super) fn keep(&self) -> Vec<(Epoch, StageId)> {
        let mut keep: Vec<(Epoch, StageId)> = self
            .stages
            .iter()
            .flat_map(|(stage, kept)| kept.outputs.values().map(|(_, e, _)| (*e, *stage)))
            .collect();
        keep.sort();
        keep.dedup();
        keep
    }
}
