//! Cutting a DataFusion physical plan into a stage DAG.
//!
//! A stage is the largest part of the plan that runs without moving data between tasks. The
//! plan is cut
//! - at every hash `RepartitionExec` (GROUP BY and JOIN keys): the upstream stage's root stays
//!   that `RepartitionExec` (its expressions decide each row's partition), and downstream it is
//!   replaced by a [`ShuffleReaderExec`] in [`ReadMode::Hash`];
//! - below every operator that merges all partitions into one (`CoalescePartitionsExec`,
//!   `SortPreservingMergeExec`): the upstream stage keeps each task's output whole and the
//!   merging operator reads them through a [`ShuffleReaderExec`] in [`ReadMode::Gather`].
//!
//! Stages are numbered in post-order, so every stage's inputs come before it. A job with one
//! query has one final stage, the last; a statement set (several `INSERT`s) has one final stage
//! per query, and reads a table that several queries scan once per epoch: in a scan stage of
//! its own, whose task `p` keeps its rows whole for task `p` of each reading stage
//! ([`ReadMode::Gather`]), see [`split_all`].

use std::sync::Arc;

use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::error::{EngineError, Result};
use crate::operator::late::LateRowFilterExec;
use crate::operator::nodes::{EventTime, ReadMode, ShuffleReaderExec, SourceScanExec};
use crate::protocol::{StageId, StageOutput};

/// One stage of a query.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its id.
    pub id: StageId,
    /// Its plan (leaves: scans and shuffle readers).
    pub plan: Arc<dyn ExecutionPlan>,
    /// Tasks per epoch (the plan's output partitions; for hash stages, the partitions of the
    /// `RepartitionExec`'s input).
    pub tasks: usize,
    /// What its tasks do with their output.
    pub output: StageOutput,
    /// Stages whose outputs it reads.
    pub inputs: Vec<StageId>,
    /// Tables it scans, with their scan partition counts.
    pub tables: Vec<(String, usize)>,
}

impl Stage {
    /// Whether the stage's tasks produce nothing when its scans read nothing: it reads no
    /// other stage, shuffles its output by hash, every leaf is a source scan and nothing in it
    /// emits a row from an empty input (an aggregate without GROUP BY emits one). The driver
    /// completes such a stage without running it in an epoch where its tables have no splits.
    /// (Stateful stages are never skipped: the caller checks.)
    pub fn emits_nothing_without_input(&self) -> bool {
        fn scans_only(plan: &Arc<dyn ExecutionPlan>) -> bool {
            if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
                if agg.group_expr().expr().is_empty() {
                    return false;
                }
            }
            let children = plan.children();
            if children.is_empty() {
                return plan.downcast_ref::<SourceScanExec>().is_some();
            }
            children.into_iter().all(scans_only)
        }
        self.inputs.is_empty()
            && !self.tables.is_empty()
            && matches!(self.output, StageOutput::Hash { .. })
            && scans_only(&self.plan)
    }
}

/// Splits `plan` into stages; the final stage's output is `final_output`.
pub fn split(plan: Arc<dyn ExecutionPlan>, final_output: StageOutput) -> Result<Vec<Stage>> {
    Ok(split_all(vec![(plan, final_output)])?.0)
}

/// Splits the plans of a job's queries into one stage DAG, each plan's final stage with its
/// output; returns the stages and each plan's final stage. With several plans, a table that
/// more than one scan reads is read by one scan stage (see the module's documentation).
pub fn split_all(
    plans: Vec<(Arc<dyn ExecutionPlan>, StageOutput)>,
) -> Result<(Vec<Stage>, Vec<StageId>)> {
    let mut stages = Vec::new();
    let plans = if plans.len() > 1 {
        share_scans(plans, &mut stages)?
    } else {
        plans
    };
    let mut finals = Vec::with_capacity(plans.len());
    for (plan, output) in plans {
        let root = cut(plan, &mut stages)?;
        let tasks = root.output_partitioning().partition_count();
        finals.push(push_stage(&mut stages, root, tasks, output));
    }
    Ok((stages, finals))
}

/// One scan stage shared by the scans of a table.
struct SharedScan {
    stage: StageId,
    /// The columns it reads (indices into the table's schema), ascending.
    columns: Vec<usize>,
    schema: arrow::datatypes::SchemaRef,
    partitions: usize,
}

/// Gives every table that the plans scan more than once a scan stage of its own, reading the
/// union of the columns the scans read, and replaces each scan by a read of that stage's
/// outputs, projected back to the scan's columns. The shared scan keeps late rows (a query
/// without state keeps them); a scan that dropped rows behind the watermark gets a
/// [`LateRowFilterExec`] instead.
fn share_scans(
    plans: Vec<(Arc<dyn ExecutionPlan>, StageOutput)>,
    stages: &mut Vec<Stage>,
) -> Result<Vec<(Arc<dyn ExecutionPlan>, StageOutput)>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use std::collections::BTreeMap;
    fn scans(plan: &Arc<dyn ExecutionPlan>, found: &mut BTreeMap<String, Vec<SourceScanExec>>) {
        if let Some(scan) = plan.downcast_ref::<SourceScanExec>() {
            found
                .entry(scan.table.clone())
                .or_default()
                .push(scan.clone());
        }
        for child in plan.children() {
            scans(child, found);
        }
    }
    let mut found = BTreeMap::new();
    for (plan, _) in &plans {
        scans(plan, &mut found);
    }
    let all_columns = |scan: &SourceScanExec| -> Vec<usize> {
        scan.projection
            .clone()
            .unwrap_or_else(|| (0..scan.schema.fields().len()).collect())
    };
    let mut shared = BTreeMap::new();
    for (table, list) in found {
        let first = &list[0];
        if list.len() < 2 || list.iter().any(|s| s.partitions != first.partitions) {
            continue;
        }
        let event_time = list.iter().find_map(|s| s.event_time);
        let mut columns: Vec<usize> = list.iter().flat_map(all_columns).collect();
        columns.extend(event_time.map(|e| e.column));
        columns.sort_unstable();
        columns.dedup();
        let scan = SourceScanExec::try_new(
            table.clone(),
            first.spec.clone(),
            first.schema.clone(),
            Some(columns.clone()),
            first.partitions,
        )?
        .with_event_time(event_time.map(|e| EventTime {
            drop_late: false,
            ..e
        }));
        let schema = scan.schema();
        let stage = push_stage(
            stages,
            Arc::new(scan),
            first.partitions,
            StageOutput::Gather,
        );
        shared.insert(
            table,
            SharedScan {
                stage,
                columns,
                schema,
                partitions: first.partitions,
            },
        );
    }
    let position = |s: &SharedScan, column: usize| {
        s.columns.iter().position(|&c| c == column).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!(
                "column {column} missing from a shared scan"
            ))
        })
    };
    plans
        .into_iter()
        .map(|(plan, output)| {
            let plan = plan.transform_up(|node| {
                let Some(scan) = node.downcast_ref::<SourceScanExec>() else {
                    return Ok(Transformed::no(node));
                };
                let Some(s) = shared.get(&scan.table) else {
                    return Ok(Transformed::no(node));
                };
                let mut read: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
                    s.stage,
                    s.schema.clone(),
                    s.partitions,
                    ReadMode::Gather,
                ));
                if let Some(et) = scan.event_time.filter(|e| e.drop_late) {
                    read = Arc::new(LateRowFilterExec::try_new(read, position(s, et.column)?)?);
                }
                let wanted = all_columns(scan);
                if wanted != s.columns {
                    let exprs = wanted
                        .iter()
                        .map(|&c| {
                            let name = scan.schema.field(c).name().clone();
                            let expr: Arc<dyn PhysicalExpr> =
                                Arc::new(Column::new(&name, position(s, c)?));
                            Ok((expr, name))
                        })
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    read = Arc::new(ProjectionExec::try_new(exprs, read)?);
                }
                Ok(Transformed::yes(read))
            })?;
            Ok((plan.data, output))
        })
        .collect()
}

fn cut(plan: Arc<dyn ExecutionPlan>, stages: &mut Vec<Stage>) -> Result<Arc<dyn ExecutionPlan>> {
    let merges_partitions = plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
    let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(plan);
    }
    let mut new_children = Vec::with_capacity(children.len());
    for child in children {
        if let Some(repartition) = child.downcast_ref::<RepartitionExec>() {
            let Partitioning::Hash(_, partitions) = repartition.partitioning() else {
                return Err(EngineError::Unsupported(format!(
                    "repartitioning {} between stages",
                    repartition.partitioning()
                )));
            };
            let partitions = *partitions;
            let input = cut(repartition.input().clone(), stages)?;
            let tasks = input.output_partitioning().partition_count();
            let schema = child.schema();
            let stage_root = replace_children(child.clone(), vec![input])?;
            let id = push_stage(stages, stage_root, tasks, StageOutput::Hash { partitions });
            new_children.push(Arc::new(ShuffleReaderExec::new(
                id,
                schema,
                partitions,
                ReadMode::Hash,
            )) as _);
        } else if merges_partitions && child.output_partitioning().partition_count() > 1 {
            let schema = child.schema();
            let body = cut(child, stages)?;
            let tasks = body.output_partitioning().partition_count();
            let id = push_stage(stages, body, tasks, StageOutput::Gather);
            new_children
                .push(Arc::new(ShuffleReaderExec::new(id, schema, tasks, ReadMode::Gather)) as _);
        } else {
            new_children.push(cut(child, stages)?);
        }
    }
    replace_children(plan, new_children)
}

fn replace_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )?)
}

fn push_stage(
    stages: &mut Vec<Stage>,
    plan: Arc<dyn ExecutionPlan>,
    tasks: usize,
    output: StageOutput,
) -> StageId {
    let id = StageId(stages.len());
    let mut inputs = Vec::new();
    let mut tables = Vec::new();
    collect_leaves(&plan, &mut inputs, &mut tables);
    inputs.sort();
    inputs.dedup();
    tables.sort();
    tables.dedup();
    stages.push(Stage {
        id,
        plan,
        tasks,
        output,
        inputs,
        tables,
    });
    id
}

fn collect_leaves(
    plan: &Arc<dyn ExecutionPlan>,
    inputs: &mut Vec<StageId>,
    tables: &mut Vec<(String, usize)>,
) {
    if let Some(read) = plan.downcast_ref::<ShuffleReaderExec>() {
        inputs.push(read.stage);
    } else if let Some(scan) = plan.downcast_ref::<SourceScanExec>() {
        tables.push((scan.table.clone(), scan.partitions));
    }
    for child in plan.children() {
        collect_leaves(child, inputs, tables);
    }
}
