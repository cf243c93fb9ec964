//! Streaming-specific planning: the stateful operators that replace DataFusion's final
//! aggregates and stream–stream joins, and session windows in bounded jobs.

use std::sync::Arc;

use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::ExecutionPlan;

use super::{closed_windows, session, stateful, window_join};
use crate::error::{EngineError, Result};
use crate::job::{Job, JobQuery, Target};
use crate::operator::nodes::SourceScanExec;
use crate::operator::{holds_state, interval_join};

/// One streaming query of a job, as [`make_stateful`] needs it.
pub(super) struct StatefulQuery<'a> {
    pub job: &'a Job,
    pub query: &'a JobQuery,
    /// The sink table's `output_mode`.
    pub mode: Option<crate::job::OutputMode>,
    /// Whether the query deduplicates by key (keeps each key's first row).
    pub keep_first: bool,
    /// The id of the query's first stateful operator: ids are unique across a statement set's
    /// queries (they name the operators' state).
    pub first_operator: u32,
}

/// Turns a streaming query's final aggregate into a [`stateful::StatefulAggregateExec`] and
/// makes its scans drop rows behind the watermark. Returns the plan and the next free
/// operator id.
pub(super) fn make_stateful(
    plan: Arc<dyn ExecutionPlan>,
    q: StatefulQuery<'_>,
    sources: &std::collections::BTreeMap<String, Arc<dyn sluice_connectors::Source>>,
) -> Result<(Arc<dyn ExecutionPlan>, u32)> {
    use crate::job::OutputMode;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    let StatefulQuery {
        job,
        query,
        mode,
        keep_first,
        first_operator,
    } = q;
    let streams: std::collections::BTreeSet<String> = sources
        .iter()
        .filter(|(_, s)| !s.bounded())
        .map(|(name, _)| name.clone())
        .collect();
    let streams = &streams;
    let has_watermark = !job.watermarks.is_empty();
    let origin = format!("{}: ", job.text.origin);
    let ttl_ms = match &query.target {
        Target::Table(name) => job.table(name).and_then(|t| t.state_ttl_ms),
        Target::Console => None,
    };
    let has_session = query.windows.iter().any(|w| w.kind == "session");
    let mut operators = 0u32;
    let mut all_append = true;
    let mut joins = 0u32;
    let mut next_id = first_operator;
    let mut problem: Option<String> = None;
    let plan = plan
        .transform_up(|node| {
            if node.name().contains("Join")
                && node.children().len() == 2
                && node.children().iter().all(|c| reads_stream(c, streams))
            {
                // A join of two streams: a join of closed windows on their ends (per epoch, no
                // state), a window join, or refused.
                if node
                    .downcast_ref::<HashJoinExec>()
                    .and_then(closed_windows::joined_ends)
                    .is_some()
                {
                    return Ok(Transformed::no(node));
                }
                let windows = node
                    .downcast_ref::<HashJoinExec>()
                    .and_then(window_join::WindowJoinSpec::of);
                let Some((left_end, right_end)) = windows else {
                    let Some(hash) = node.downcast_ref::<HashJoinExec>() else {
                        problem.get_or_insert_with(|| STREAM_JOIN.into());
                        return Ok(Transformed::no(node));
                    };
                    let spec = match interval_join_of(hash, next_id) {
                        Ok(spec) => spec,
                        Err(message) => {
                            problem.get_or_insert(message);
                            return Ok(Transformed::no(node));
                        }
                    };
                    if !has_watermark {
                        problem.get_or_insert_with(|| "an interval join needs a watermark: declare WATERMARK FOR column AS column - INTERVAL '5' SECOND on the joined tables".into());
                    }
                    next_id += 1;
                    joins += 1;
                    return Ok(Transformed::yes(Arc::new(
                        interval_join::IntervalJoinExec::try_new(spec, node)?,
                    ) as _));
                };
                if !has_watermark {
                    problem.get_or_insert_with(|| "a window join needs a watermark: declare WATERMARK FOR column AS column - INTERVAL '5' SECOND on the joined tables".into());
                }
                let spec = window_join::WindowJoinSpec {
                    operator: next_id,
                    left_end,
                    right_end,
                };
                next_id += 1;
                joins += 1;
                return Ok(Transformed::yes(
                    Arc::new(window_join::WindowJoinExec::try_new(spec, node)?) as _,
                ));
            }
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if holds_state(agg.input()) {
                // An aggregation of an aggregated (or window-joined) stream: per epoch when it
                // groups by the end of windows that arrive closed, else refused.
                if closed_windows::grouped_ends(agg).is_empty() {
                    problem.get_or_insert_with(|| CHAINED_AGGREGATION.into());
                }
                return Ok(Transformed::no(node));
            }
            match agg.mode() {
                AggregateMode::Final | AggregateMode::FinalPartitioned => {}
                AggregateMode::Partial | AggregateMode::PartialReduce => {
                    return Ok(Transformed::no(node))
                }
                AggregateMode::Single | AggregateMode::SinglePartitioned => {
                    problem.get_or_insert_with(|| "this aggregation cannot run incrementally (DataFusion planned it in one phase)".into());
                    return Ok(Transformed::no(node));
                }
            }
            // The group column that says when a key is final: the window end, else the
            // watermarked event-time column itself (e.g. deduplication by id and event time).
            let groups = agg.group_expr().expr();
            let named = |want: &str| {
                groups
                    .iter()
                    .position(|(_, name)| name.rsplit('.').next() == Some(want))
            };
            let windowed = named("window_end").is_some();
            let window_end = named("window_end").or_else(|| {
                job.watermarks
                    .iter()
                    .find_map(|w| named(&w.column))
            });
            let mode = match mode {
                Some(m) => m,
                None if windowed && has_watermark => OutputMode::Append,
                None => OutputMode::Update,
            };
            if mode == OutputMode::Append && window_end.is_none() {
                problem.get_or_insert_with(|| "output_mode 'append' needs a windowed aggregation (GROUP BY window_start, window_end, ... over TUMBLE or HOP) or one grouped by the watermarked event-time column, whose rows are final once the watermark passes; use output_mode 'update' or 'complete'".into());
            } else if ttl_ms.is_some() && window_end.is_some() {
                problem.get_or_insert_with(|| "state_ttl is for aggregations without windows: windows (and keys grouped by the event-time column) are dropped once the watermark passes them".into());
            } else if mode == OutputMode::Append && !has_watermark {
                problem.get_or_insert_with(|| "a windowed aggregation in append mode needs a watermark: declare WATERMARK FOR column AS column - INTERVAL '5' SECOND on the source table (or use output_mode 'update')".into());
            }
            let session = if has_session {
                let cols = session::SessionColumns::of(agg);
                if cols.is_none() {
                    problem.get_or_insert_with(|| SESSION_GROUPING.into());
                } else if let Some(message) = ungrouped_session_key(query, agg) {
                    problem.get_or_insert(message);
                } else if mode == OutputMode::Update {
                    problem.get_or_insert_with(|| "session windows are emitted with output_mode 'append' (each session once the watermark passes its end) or 'complete': in 'update' mode a session that merges with another would leave its earlier row behind".into());
                }
                cols
            } else {
                None
            };
            let node = match session {
                Some(_) => {
                    let input = session::hash_on_key(agg.input().clone())?;
                    node.clone().replace_children(
                        vec![input],
                        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
                    )?
                }
                None => node,
            };
            let spec = stateful::StatefulSpec {
                operator: next_id,
                mode,
                window_end,
                event_time_key: window_end.is_some() && !windowed,
                ttl_ms,
                session,
                keep_first,
            };
            operators += 1;
            next_id += 1;
            all_append &= mode == OutputMode::Append;
            Ok(Transformed::yes(Arc::new(stateful::StatefulAggregateExec::try_new(spec, node)?) as _))
        })?
        .data;
    if let Some(message) = problem {
        return Err(EngineError::Sql {
            location: origin,
            message,
        });
    }
    if operators > 1 && !all_append {
        return Err(EngineError::Sql {
            location: origin,
            message: "a streaming query with more than one aggregation emits each window once (output_mode 'append'); in 'update' or 'complete' mode it holds one aggregation: aggregate the aggregated result in a second query reading its output".into(),
        });
    }
    if operators == 0 {
        if has_session {
            return Err(EngineError::Sql {
                location: origin,
                message: SESSION_GROUPING.into(),
            });
        }
        if ttl_ms.is_some() {
            return Err(EngineError::Sql {
                location: origin,
                message: "state_ttl applies to a streaming aggregation, and this query has none"
                    .into(),
            });
        }
        if joins == 0 {
            return Ok((plan, next_id));
        }
    }
    let plan = stateful_stages_under_joins(plan)?;
    let plan = plan
        .transform_up(|node| {
            let Some(scan) = node.downcast_ref::<SourceScanExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(mut et) = scan.event_time else {
                return Ok(Transformed::no(node));
            };
            et.drop_late = true;
            Ok(Transformed::yes(
                Arc::new(scan.clone().with_event_time(Some(et))) as _,
            ))
        })?
        .data;
    Ok((plan, next_id))
}

/// A `SESSION(TABLE t PARTITION BY key, ...)` key that `agg` does not group by: Sluice keeps
/// sessions per the grouped columns, so a key left out would merge the sessions of its values.
fn ungrouped_session_key(
    query: &JobQuery,
    agg: &datafusion::physical_plan::aggregates::AggregateExec,
) -> Option<String> {
    let grouped: Vec<String> = agg
        .group_expr()
        .expr()
        .iter()
        .map(|(_, name)| name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase())
        .collect();
    let key = query
        .windows
        .iter()
        .filter(|w| w.kind == "session")
        .flat_map(|w| &w.keys)
        .find(|k| !grouped.contains(k))?;
    Some(format!(
        "SESSION(... PARTITION BY {key} ...) keeps sessions per {key}: group by it too \
         (GROUP BY window_start, window_end, {key}, ...)"
    ))
}

const STREAM_JOIN: &str = "a join of two streams is a window join or an interval join: window both sides (TUMBLE, HOP or SESSION) and join ON their keys and l.window_end = r.window_end (rows of a window are joined once the watermark passes its end), or join ON their keys and bound the difference of their event times, e.g. l.ts BETWEEN r.ts - INTERVAL '1' HOUR AND r.ts (rows are joined as they arrive and kept while the watermark allows a match)";

/// The interval join `join` is, or why it is none (see [`interval_join`]): an inner join
/// whose condition bounds the difference of an event time of each side — a watermarked
/// source column or the end of a closed window, whose later rows are never behind the
/// watermark.
fn interval_join_of(
    join: &HashJoinExec,
    operator: u32,
) -> std::result::Result<interval_join::IntervalJoinSpec, String> {
    let bounds = interval_join::TimeBounds::of(join)?.ok_or_else(|| STREAM_JOIN.to_string())?;
    if *join.join_type() != datafusion::common::JoinType::Inner {
        return Err(format!(
            "an interval join of two streams is an inner join (this is a {} join): a row's lack of a match is only known once the watermark passes; use a window join for outer joins",
            join.join_type()
        ));
    }
    for (side, input, column) in [
        ("left", join.left(), bounds.left_time),
        ("right", join.right(), bounds.right_time),
    ] {
        if !event_times(input).contains(&column) {
            let name = input.schema().field(column).name().clone();
            return Err(format!(
                "an interval join compares event times, and {name} (the {side} side's) is none: use a column with a WATERMARK, or the window_end of a windowed aggregation"
            ));
        }
    }
    Ok(interval_join::IntervalJoinSpec {
        operator,
        left_time: bounds.left_time,
        right_time: bounds.right_time,
        lower_ms: bounds.lower_ms,
        upper_ms: bounds.upper_ms,
    })
}

/// The output columns of `plan` that hold an event time whose later rows are at or after
/// the watermark: a source's watermarked column (later rows behind it are dropped as late)
/// and the end of a closed window (later windows end after it).
fn event_times(plan: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_plan::projection::ProjectionExec;
    let mut found = closed_windows::window_ends(plan);
    if let Some(scan) = plan.downcast_ref::<SourceScanExec>() {
        if let Some(et) = scan.event_time {
            match &scan.projection {
                Some(p) => found.extend(p.iter().position(|&c| c == et.column)),
                None => found.push(et.column),
            }
        }
    } else if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let times = event_times(p.input());
        found.extend(p.expr().iter().enumerate().filter_map(|(i, e)| {
            e.expr
                .downcast_ref::<Column>()
                .filter(|c| times.contains(&c.index()))
                .map(|_| i)
        }));
    } else if let [child] = plan.children().as_slice() {
        if child.schema().fields() == plan.schema().fields() {
            found.extend(event_times(child));
        }
    }
    found
}

const CHAINED_AGGREGATION: &str = "an aggregation of an aggregated stream runs per window: group it by the window's end (window_end, or its alias) of an append-mode windowed aggregation, whose windows arrive once and complete; otherwise aggregate the aggregated result in a second query reading its output";

const SESSION_GROUPING: &str = "a SESSION window is aggregated: GROUP BY window_start, window_end and the session key columns (sessions are kept per key)";

/// Runs a bounded job's session-window aggregates through [`session::SessionMergeExec`],
/// shuffled by session key.
pub(super) fn plan_bounded_sessions(
    plan: Arc<dyn ExecutionPlan>,
    job: &Job,
    query: &JobQuery,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    if !query.windows.iter().any(|w| w.kind == "session") {
        return Ok(plan);
    }
    let mut merged = 0;
    let mut problem = None;
    let plan = plan
        .transform_up(|node| {
            let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(cols) = session::SessionColumns::of(agg) else {
                return Ok(Transformed::no(node));
            };
            if let Some(message) = ungrouped_session_key(query, agg) {
                problem.get_or_insert(message);
                return Ok(Transformed::no(node));
            }
            match agg.mode() {
                AggregateMode::Final | AggregateMode::FinalPartitioned => {}
                AggregateMode::Partial | AggregateMode::PartialReduce => {
                    return Ok(Transformed::no(node))
                }
                AggregateMode::Single | AggregateMode::SinglePartitioned => {
                    problem.get_or_insert("a session-window aggregation needs two phases; DataFusion planned it in one (raise --parallelism above 1)".into());
                    return Ok(Transformed::no(node));
                }
            }
            let input = session::hash_on_key(agg.input().clone())?;
            let node = node.clone().replace_children(
                vec![input],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
            merged += 1;
            Ok(Transformed::yes(
                Arc::new(session::SessionMergeExec::try_new(cols, node)?) as _,
            ))
        })?
        .data;
    let message = match (problem, merged) {
        (Some(p), _) => p,
        (None, 0) => SESSION_GROUPING.to_string(),
        (None, _) => return Ok(plan),
    };
    Err(EngineError::Sql {
        location: format!("{}: ", job.text.origin),
        message,
    })
}

/// Whether `plan` reads one of the unbounded tables `streams`.
fn reads_stream(
    plan: &Arc<dyn ExecutionPlan>,
    streams: &std::collections::BTreeSet<String>,
) -> bool {
    if let Some(scan) = plan.downcast_ref::<SourceScanExec>() {
        return streams.contains(&scan.table);
    }
    plan.children()
        .into_iter()
        .any(|c| reads_stream(c, streams))
}

/// Gives every stateful aggregation below a DataFusion join a stage of its own (a hash
/// repartition on its own partitioning above it). A hash join does not read its probe side
/// when its build side is empty, so a stateful operator in the probe side's stage would not
/// run that epoch: no snapshot of its state, its closed windows not emitted.
fn stateful_stages_under_joins(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::Partitioning;
    fn own_stage(
        plan: Arc<dyn ExecutionPlan>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_down(|node| {
                if let Some(r) = node.downcast_ref::<RepartitionExec>() {
                    if matches!(r.partitioning(), Partitioning::Hash(..)) {
                        // Already a stage boundary.
                        return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
                    }
                }
                let Some(stateful) = node.downcast_ref::<stateful::StatefulAggregateExec>() else {
                    return Ok(Transformed::no(node));
                };
                // The partitioning the plan above was planned with: the wrapped aggregate's (a
                // join's other side is hashed to match it). Without one, any hash will do.
                let partitioning = match stateful.aggregate.properties().output_partitioning() {
                    Partitioning::Hash(exprs, n) => Partitioning::Hash(exprs.clone(), *n),
                    other => Partitioning::Hash(
                        vec![Arc::new(
                            datafusion::physical_expr::expressions::Column::new(
                                node.schema().field(0).name(),
                                0,
                            ),
                        )],
                        other.partition_count(),
                    ),
                };
                let cut = Arc::new(RepartitionExec::try_new(node, partitioning)?);
                Ok(Transformed::new(cut as _, true, TreeNodeRecursion::Jump))
            })?
            .data)
    }
    Ok(plan
        .transform_up(|node| {
            let plain_join = node.name().contains("Join")
                && node.downcast_ref::<window_join::WindowJoinExec>().is_none()
                && node
                    .downcast_ref::<interval_join::IntervalJoinExec>()
                    .is_none();
            if !plain_join || !node.children().into_iter().any(holds_state) {
                return Ok(Transformed::no(node));
            }
            let children = node
                .children()
                .into_iter()
                .map(|c| own_stage(c.clone()))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            Ok(Transformed::yes(node.replace_children(
                children,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?))
        })?
        .data)
}

/// The group columns of the plan's stateful aggregation, if it has one.
pub(super) fn stateful_group_columns(plan: &Arc<dyn ExecutionPlan>) -> Option<Vec<String>> {
    if let Some(s) = plan.downcast_ref::<stateful::StatefulAggregateExec>() {
        return Some(s.group_columns());
    }
    plan.children().into_iter().find_map(stateful_group_columns)
}
