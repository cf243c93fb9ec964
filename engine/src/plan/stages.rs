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

/// Adds a stage, or returns an earlier stage that does the same work (see [`same_work`]):
/// a query that computes one sub-plan twice — Nexmark q5 counts bids per auction and window
/// for its rows and again for the per-window maximum — runs it once per epoch, its output read
/// by both consumers. Stages are pushed inputs first, so an identical sub-plan's upper stages
/// find their inputs already merged and merge in turn.
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
    let shareable = matches!(output, StageOutput::Hash { .. } | StageOutput::Gather);
    if let Some(same) = stages.iter().find(|s| {
        shareable
            && s.tasks == tasks
            && s.output == output
            && s.inputs == inputs
            && s.tables == tables
            && same_work(&s.plan, &plan)
    }) {
        return same.id;
    }
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

/// Whether two stage plans compute the same rows: neither writes a sink or keeps state (a
/// stateful operator's state is its own, under its own id), both produce one schema, and
/// their encodings — what executors receive — are equal up to the names DataFusion gives the
/// common sub-expressions it factors out (`__common_expr_N`, numbered per query; columns are
/// resolved by index, so the name changes nothing).
fn same_work(a: &Arc<dyn ExecutionPlan>, b: &Arc<dyn ExecutionPlan>) -> bool {
    use crate::operator::codec::SluiceCodec;
    use crate::operator::holds_state;
    use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
    if holds_state(a) || holds_state(b) || a.schema() != b.schema() {
        return false;
    }
    let encode = |plan: &Arc<dyn ExecutionPlan>| {
        physical_plan_to_bytes_with_extension_codec(plan.clone(), &SluiceCodec)
            .ok()
            .map(|bytes| canonical_names(&bytes))
    };
    match (encode(a), encode(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `bytes` with the digits of every `__common_expr_N` replaced by `#` (the length, and so
/// every length prefix around it, unchanged).
fn canonical_names(bytes: &[u8]) -> Vec<u8> {
    const NAME: &[u8] = b"__common_expr_";
    let mut out = bytes.to_vec();
    let mut i = 0;
    while let Some(at) = out[i..].windows(NAME.len()).position(|w| w == NAME) {
        i += at + NAME.len();
        while i < out.len() && out[i].is_ascii_digit() {
            out[i] = b'#';
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::job::{Job, JobText};
    use crate::protocol::StageOutput;

    /// Nexmark q5: bids per auction and hopping window, joined with each window's maximum.
    const Q5: &str = "SELECT a.auction, a.num FROM (
          SELECT auction, count(*) AS num, window_start AS s, window_end AS e
          FROM TABLE(HOP(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
          GROUP BY auction, window_start, window_end) a
        JOIN (
          SELECT max(c.num) AS maxn, c.s, c.e FROM (
            SELECT count(*) AS num, window_start AS s, window_end AS e
            FROM TABLE(HOP(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
            GROUP BY auction, window_start, window_end) c
          GROUP BY c.s, c.e) m
        ON a.s = m.s AND a.e = m.e AND a.num >= m.maxn";

    fn stages(tables: &str, inserts: &str) -> Vec<super::Stage> {
        let job = Job::parse(JobText {
            origin: "test".into(),
            text: format!(
                "{tables}CREATE TABLE out WITH (connector = 'parquet', path = '/tmp/o/');\n\
                 CREATE TABLE out2 WITH (connector = 'parquet', path = '/tmp/o2/');\n{inserts}"
            ),
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(crate::plan::plan(&job, 2)).unwrap().stages
    }

    fn readers_of(stages: &[super::Stage], id: crate::protocol::StageId) -> usize {
        stages.iter().filter(|s| s.inputs.contains(&id)).count()
    }

    #[test]
    fn a_sub_plan_computed_twice_runs_as_one_stage_read_by_both() {
        // Bounded: the scan, the hopping windows and the partial counts are one stage, and so
        // are the final counts: one stage feeds both the join and the maximum.
        let bounded = stages(
            "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '1000');\n",
            &format!("INSERT INTO out {Q5};"),
        );
        let scans = bounded.iter().filter(|s| !s.tables.is_empty()).count();
        assert_eq!(scans, 1, "{bounded:#?}");
        assert!(
            bounded.iter().any(|s| readers_of(&bounded, s.id) == 2),
            "{bounded:#?}"
        );

        // Streaming: the windowed counts keep state per operator, so each branch keeps its
        // own stateful stage; the stateless scan and partial counts below them are shared.
        let streaming = stages(
            "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
             WITH (connector = 'nexmark', kind = 'bid', events = '1000');\n",
            &format!("INSERT INTO out {Q5};"),
        );
        let scans: Vec<_> = streaming.iter().filter(|s| !s.tables.is_empty()).collect();
        assert_eq!(scans.len(), 1, "{streaming:#?}");
        assert_eq!(readers_of(&streaming, scans[0].id), 2, "{streaming:#?}");

        // Two queries writing the same rows to two tables keep a final stage each.
        let set = stages(
            "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', events = '1000');\n",
            "INSERT INTO out SELECT auction, count(*) AS n FROM bid GROUP BY auction;\n\
             INSERT INTO out2 SELECT auction, count(*) AS n FROM bid GROUP BY auction;",
        );
        let sinks = set.iter().filter(|s| s.output == StageOutput::Sink).count();
        assert_eq!(sinks, 2, "{set:#?}");
    }

    #[test]
    fn only_common_expression_names_are_canonical() {
        assert_eq!(
            super::canonical_names(b"x__common_expr_12y__common_expr_3"),
            b"x__common_expr_##y__common_expr_#".to_vec()
        );
        assert_ne!(
            super::canonical_names(b"__common_expr_1"),
            super::canonical_names(b"__common_expr_10")
        );
    }
}
