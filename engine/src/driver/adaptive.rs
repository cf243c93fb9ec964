//! Adaptive reduce tasks: before a stage that reads hash shuffles runs, the driver looks at
//! what its inputs' map tasks wrote (bytes per output partition) and
//! - splits a partition much larger than the median across several tasks, each reading a
//!   contiguous range of the large input's map outputs and the other inputs' partition whole
//!   (Spark's skew-join handling), where the stage's plan allows it;
//! - coalesces runs of adjacent small partitions into one task (Spark's partition coalescing).
//!
//! [`eligible`] decides from the stage's plan what may be done; [`plan`] decides from the
//! sizes. Both are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::ExecutionPlan;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::scheduler::EpochScheduler;
use crate::operator::nodes::{ReadMode, ShuffleReaderExec};
use crate::plan::stages::Stage;
use crate::plan::PlannedQuery;
use crate::protocol::{StageId, StageOutput, TaskKey, TaskReport};

/// The options (`--skew-factor`, `--skew-min-bytes`, `--target-task-bytes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveOptions {
    /// A partition is skewed when its bytes of one input exceed this many times that input's
    /// median partition; 0 turns splitting off.
    pub skew_factor: f64,
    /// ... and exceed this many bytes.
    pub skew_min_bytes: u64,
    /// Adjacent partitions run as one task while together under this many bytes; a skewed
    /// partition is split into slices of about this size (at least its input's median). 0 turns
    /// coalescing off (slices are then median-sized).
    pub target_task_bytes: u64,
}

impl Default for AdaptiveOptions {
    fn default() -> Self {
        Self {
            skew_factor: 5.0,
            skew_min_bytes: 32 << 20,
            target_task_bytes: 16 << 20,
        }
    }
}

/// What may be done to a stage's tasks: `None` when nothing (it holds state, scans a table,
/// reads a gathered input or gathers or prints its output); otherwise, per hash-shuffled
/// input, whether its partitions may be divided among tasks.
pub fn eligible(stage: &Stage, stateful: bool) -> Option<BTreeMap<StageId, bool>> {
    if stateful
        || !stage.tables.is_empty()
        || stage.inputs.is_empty()
        || !matches!(stage.output, StageOutput::Hash { .. } | StageOutput::Sink)
    {
        return None;
    }
    let mut inputs = BTreeMap::new();
    if !walk(&stage.plan, true, stage.tasks, &mut inputs) {
        return None;
    }
    Some(inputs)
}

/// Records for each reader below `plan` whether every path to it allows dividing its
/// partition (only row-by-row operators, partial aggregates and the dividable side of a
/// partitioned join above it); false when some reader is not a hash read of the stage's own
/// partition count (task `p` reading partition `p` of every input).
fn walk(
    plan: &Arc<dyn ExecutionPlan>,
    ok: bool,
    tasks: usize,
    inputs: &mut BTreeMap<StageId, bool>,
) -> bool {
    if let Some(read) = plan.downcast_ref::<ShuffleReaderExec>() {
        if read.mode != ReadMode::Hash || read.partitions != tasks {
            return false;
        }
        *inputs.entry(read.stage).or_insert(true) &= ok;
        return true;
    }
    let sides = |join_type: &JoinType| -> (bool, bool) {
        use JoinType::*;
        match join_type {
            Inner => (true, true),
            Left | LeftSemi | LeftAnti | LeftMark => (true, false),
            Right | RightSemi | RightAnti | RightMark => (false, true),
            Full => (false, false),
        }
    };
    let children = plan.children();
    let per_child: Vec<bool> = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let (l, r) = if *join.partition_mode() == PartitionMode::Partitioned {
            sides(join.join_type())
        } else {
            (false, false)
        };
        vec![ok && l, ok && r]
    } else if let Some(join) = plan.downcast_ref::<SortMergeJoinExec>() {
        let (l, r) = sides(&join.join_type());
        vec![ok && l, ok && r]
    } else {
        let row_local = plan.downcast_ref::<ProjectionExec>().is_some()
            || plan.downcast_ref::<FilterExec>().is_some()
            || plan.downcast_ref::<RepartitionExec>().is_some()
            || plan
                .downcast_ref::<AggregateExec>()
                .is_some_and(|a| *a.mode() == AggregateMode::Partial);
        vec![ok && row_local; children.len()]
    };
    children
        .into_iter()
        .zip(per_child)
        .all(|(child, ok)| walk(child, ok, tasks, inputs))
}

/// One input's map outputs: each map task's partition index and its bytes per output
/// partition.
#[derive(Debug, Clone)]
pub struct InputSizes {
    /// The input stage.
    pub stage: StageId,
    /// Whether its partitions may be divided (from [`eligible`]).
    pub dividable: bool,
    /// `(map partition, bytes per reduce partition)` of each finished map task, by map
    /// partition.
    pub maps: Vec<(usize, Vec<u64>)>,
}

/// One task of the adapted stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceTask {
    /// The reduce partitions it reads, ascending and adjacent; it runs the first's plan.
    pub partitions: Vec<usize>,
    /// For a slice of a skewed partition: the input it reads part of, and the map partitions
    /// of that input it reads (the other inputs are read whole).
    pub slice: Option<(StageId, Vec<usize>)>,
}

/// A skewed partition and what became of it (reported in the progress record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPartition {
    /// The partition.
    pub partition: usize,
    /// Its bytes across inputs.
    pub bytes: u64,
    /// The input stage whose share was divided.
    pub input: usize,
    /// Tasks it ran as.
    pub tasks: usize,
}

/// The tasks of a stage after adaptation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReducePlan {
    /// Every task, in partition order.
    pub tasks: Vec<ReduceTask>,
    /// Partitions that were split.
    pub split: Vec<SplitPartition>,
    /// Partitions that ran inside another partition's task.
    pub coalesced: usize,
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Decides the tasks of a stage of `partitions` reduce partitions from its inputs' sizes.
/// Without anything to split or coalesce, one task per partition.
pub fn plan(partitions: usize, inputs: &[InputSizes], options: &AdaptiveOptions) -> ReducePlan {
    let per_input: Vec<Vec<u64>> = inputs
        .iter()
        .map(|input| {
            (0..partitions)
                .map(|r| {
                    input
                        .maps
                        .iter()
                        .map(|(_, b)| b.get(r).copied().unwrap_or(0))
                        .sum()
                })
                .collect()
        })
        .collect();
    let total: Vec<u64> = (0..partitions)
        .map(|r| per_input.iter().map(|sizes| sizes[r]).sum())
        .collect();
    // The input to divide for each skewed partition, and into how many slices.
    let mut skewed: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    if options.skew_factor > 0.0 {
        for (i, input) in inputs.iter().enumerate() {
            if !input.dividable {
                continue;
            }
            let median = median(per_input[i].clone());
            let slice_bytes = options.target_task_bytes.max(median).max(1);
            for (r, &bytes) in per_input[i].iter().enumerate() {
                let over = bytes as f64 > options.skew_factor * median as f64
                    && bytes > options.skew_min_bytes;
                let with_data = input.maps.iter().filter(|(_, b)| b.get(r) > Some(&0));
                let slices = (bytes.div_ceil(slice_bytes) as usize).min(with_data.count());
                let bigger = skewed.get(&r).is_none_or(|&(j, _)| per_input[j][r] < bytes);
                if over && slices >= 2 && bigger {
                    skewed.insert(r, (i, slices));
                }
            }
        }
    }
    let mut out = ReducePlan::default();
    let mut group: Vec<usize> = Vec::new();
    let mut group_bytes = 0u64;
    for (r, &bytes) in total.iter().enumerate() {
        if let Some(&(i, slices)) = skewed.get(&r) {
            out.coalesced += group.len().saturating_sub(1);
            if !group.is_empty() {
                out.tasks.push(ReduceTask {
                    partitions: std::mem::take(&mut group),
                    slice: None,
                });
            }
            group_bytes = 0;
            let slices = divide(&inputs[i].maps, r, slices);
            out.split.push(SplitPartition {
                partition: r,
                bytes,
                input: inputs[i].stage.0,
                tasks: slices.len(),
            });
            for maps in slices {
                out.tasks.push(ReduceTask {
                    partitions: vec![r],
                    slice: Some((inputs[i].stage, maps)),
                });
            }
            continue;
        }
        let fits = options.target_task_bytes > 0
            && !group.is_empty()
            && group_bytes + bytes <= options.target_task_bytes;
        if !fits && !group.is_empty() {
            out.coalesced += group.len() - 1;
            out.tasks.push(ReduceTask {
                partitions: std::mem::take(&mut group),
                slice: None,
            });
            group_bytes = 0;
        }
        group.push(r);
        group_bytes += bytes;
    }
    if !group.is_empty() {
        out.coalesced += group.len() - 1;
        out.tasks.push(ReduceTask {
            partitions: group,
            slice: None,
        });
    }
    out
}

/// Divides the map outputs holding partition `r` into `slices` contiguous runs of about equal
/// bytes (map outputs without rows for `r` are left out: nothing is fetched from them).
fn divide(maps: &[(usize, Vec<u64>)], r: usize, slices: usize) -> Vec<Vec<usize>> {
    let with_data: Vec<(usize, u64)> = maps
        .iter()
        .filter_map(|(m, b)| b.get(r).filter(|&&b| b > 0).map(|&b| (*m, b)))
        .collect();
    let total: u64 = with_data.iter().map(|(_, b)| b).sum();
    let mut out: Vec<Vec<usize>> = Vec::with_capacity(slices);
    let mut current = Vec::new();
    let mut seen = 0u64;
    for (n, (m, b)) in with_data.iter().enumerate() {
        current.push(*m);
        seen += b;
        let left = with_data.len() - n - 1;
        let slices_left = slices - out.len() - 1;
        // Close the slice at its share of the bytes, or when each later slice needs one map.
        let share = total * (out.len() as u64 + 1) / slices as u64;
        if slices_left > 0 && (seen >= share || left == slices_left) {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What adaptation did to one stage in an epoch (its progress record's `adaptive`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageAdaptation {
    /// Partitions split across tasks.
    pub split: Vec<SplitPartition>,
    /// Partitions that ran inside a neighbour's task.
    pub coalesced_partitions: usize,
}

/// An epoch's adapted stages: how each adapted task reads its inputs.
#[derive(Debug, Default)]
pub struct Adapted {
    /// Stages already looked at.
    seen: BTreeSet<StageId>,
    /// Tasks that read other than one partition of every input.
    tasks: BTreeMap<TaskKey, ReduceTask>,
    /// Tasks absorbed by a neighbour's (not run).
    pub absorbed: BTreeSet<TaskKey>,
    /// What was done, per stage.
    pub stages: BTreeMap<StageId, StageAdaptation>,
}

impl Adapted {
    /// Adapts every stage whose inputs have just finished and which has not started.
    pub fn adapt(
        &mut self,
        planned: &PlannedQuery,
        scheduler: &mut EpochScheduler,
        options: &AdaptiveOptions,
    ) {
        for stage in &planned.stages {
            if self.seen.contains(&stage.id) || !scheduler.ready_untouched(stage.id) {
                continue;
            }
            self.seen.insert(stage.id);
            let stateful = planned.stateful_stages.contains(&stage.id);
            let Some(dividable) = eligible(stage, stateful) else {
                continue;
            };
            let inputs: Vec<InputSizes> = dividable
                .iter()
                .map(|(&input, &dividable)| InputSizes {
                    stage: input,
                    dividable,
                    maps: scheduler
                        .reports(input)
                        .into_iter()
                        .map(|(m, _, r)| {
                            let bytes = if r.partition_bytes.is_empty() {
                                r.partition_rows.clone()
                            } else {
                                r.partition_bytes.clone()
                            };
                            (m, bytes)
                        })
                        .collect(),
                })
                .collect();
            let plan = plan(stage.tasks, &inputs, options);
            if plan.split.is_empty() && plan.coalesced == 0 {
                continue;
            }
            self.apply(stage, plan, scheduler);
        }
    }

    fn apply(&mut self, stage: &Stage, plan: ReducePlan, scheduler: &mut EpochScheduler) {
        let extra = plan.tasks.len() + plan.coalesced - stage.tasks;
        let mut next_extra = scheduler.add_tasks(stage.id, extra);
        let mut started: BTreeSet<usize> = BTreeSet::new();
        for task in plan.tasks {
            let first = task.partitions[0];
            let partition = if started.insert(first) {
                first
            } else {
                next_extra += 1;
                next_extra - 1
            };
            for &absorbed in &task.partitions[1..] {
                let key = TaskKey {
                    stage: stage.id,
                    partition: absorbed,
                };
                let partition_rows = match stage.output {
                    StageOutput::Hash { partitions } => vec![0; partitions],
                    _ => Vec::new(),
                };
                scheduler.complete_unrun(
                    key,
                    TaskReport {
                        partition_rows,
                        ..Default::default()
                    },
                );
                self.absorbed.insert(key);
            }
            let key = TaskKey {
                stage: stage.id,
                partition,
            };
            self.tasks.insert(key, task);
        }
        info!(
            stage = stage.id.0,
            split = ?plan.split,
            coalesced = plan.coalesced,
            "adapted a stage to its inputs' sizes"
        );
        self.stages.insert(
            stage.id,
            StageAdaptation {
                split: plan.split,
                coalesced_partitions: plan.coalesced,
            },
        );
    }

    /// The plan partition `task` runs when not its own (a slice of a skewed partition).
    pub fn plan_partition(&self, task: TaskKey) -> Option<usize> {
        let first = self.tasks.get(&task)?.partitions[0];
        (first != task.partition).then_some(first)
    }

    /// The output partitions `task` reads of each hash-shuffled input, and the map outputs of
    /// `input` it reads (all, unless it is a slice of that input).
    pub fn reads(&self, task: TaskKey, input: StageId) -> (Vec<usize>, Option<&[usize]>) {
        match self.tasks.get(&task) {
            None => (vec![task.partition], None),
            Some(t) => {
                let maps = t
                    .slice
                    .as_ref()
                    .filter(|(s, _)| *s == input)
                    .map(|(_, maps)| maps.as_slice());
                (t.partitions.clone(), maps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(stage: usize, dividable: bool, maps: Vec<Vec<u64>>) -> InputSizes {
        InputSizes {
            stage: StageId(stage),
            dividable,
            maps: maps.into_iter().enumerate().collect(),
        }
    }

    fn options(factor: f64, min: u64, target: u64) -> AdaptiveOptions {
        AdaptiveOptions {
            skew_factor: factor,
            skew_min_bytes: min,
            target_task_bytes: target,
        }
    }

    #[test]
    fn a_partition_far_over_the_median_is_split_by_map_ranges() {
        // Partition 1 of the large side holds 400 bytes in each of 4 maps; the others 10.
        let large = input(0, true, vec![vec![10, 400, 10, 10]; 4]);
        let small = input(1, true, vec![vec![5, 5, 5, 5]; 2]);
        let p = plan(4, &[large, small], &options(5.0, 100, 0));
        assert_eq!(p.split.len(), 1);
        assert_eq!(p.split[0].partition, 1);
        assert_eq!(p.split[0].input, 0);
        // 1600 bytes at a median of 40 a slice: one slice per map with data, at most.
        assert_eq!(p.split[0].tasks, 4);
        let slices: Vec<_> = p.tasks.iter().filter(|t| t.slice.is_some()).collect();
        assert_eq!(slices.len(), 4);
        let mut maps: Vec<usize> = slices
            .iter()
            .flat_map(|t| t.slice.as_ref().unwrap().1.clone())
            .collect();
        maps.sort();
        assert_eq!(maps, vec![0, 1, 2, 3], "every map output read by one slice");
        assert!(slices.iter().all(|t| t.partitions == vec![1]));
        assert_eq!(p.tasks.len(), 7);
    }

    #[test]
    fn nothing_is_split_below_the_factor_the_minimum_or_when_turned_off() {
        let sizes = || vec![input(0, true, vec![vec![10, 40, 10, 10]; 4])];
        assert!(plan(4, &sizes(), &options(5.0, 0, 0)).split.is_empty());
        let big = || vec![input(0, true, vec![vec![10, 400, 10, 10]; 4])];
        assert!(plan(4, &big(), &options(5.0, 10_000, 0)).split.is_empty());
        assert!(plan(4, &big(), &options(0.0, 0, 0)).split.is_empty());
        let fixed = input(0, false, vec![vec![10, 400, 10, 10]; 4]);
        assert!(plan(4, &[fixed], &options(5.0, 0, 0)).split.is_empty());
        assert_eq!(plan(4, &big(), &options(0.0, 0, 0)).tasks.len(), 4);
    }

    #[test]
    fn small_adjacent_partitions_run_as_one_task_and_never_with_a_skewed_one() {
        let sizes = vec![input(0, true, vec![vec![1, 1, 1, 1, 500, 1, 1, 4]; 4])];
        let p = plan(8, &sizes, &options(5.0, 100, 20));
        let shapes: Vec<(Vec<usize>, bool)> = p
            .tasks
            .iter()
            .map(|t| (t.partitions.clone(), t.slice.is_some()))
            .collect();
        assert_eq!(
            shapes,
            vec![
                (vec![0, 1, 2, 3], false),
                (vec![4], true),
                (vec![4], true),
                (vec![4], true),
                (vec![4], true),
                (vec![5, 6], false),
                (vec![7], false),
            ]
        );
        assert_eq!(p.coalesced, 4);
    }

    #[test]
    fn slices_cover_the_maps_with_data_in_order() {
        let maps: Vec<(usize, Vec<u64>)> = vec![
            (0, vec![5]),
            (1, vec![0]),
            (2, vec![5]),
            (3, vec![5]),
            (4, vec![85]),
        ];
        let out = divide(&maps, 0, 3);
        assert_eq!(out, vec![vec![0, 2], vec![3], vec![4]]);
        assert_eq!(divide(&maps, 0, 2), vec![vec![0, 2, 3], vec![4]]);
    }
}
