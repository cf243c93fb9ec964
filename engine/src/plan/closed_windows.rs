//! Which columns of a streaming plan's output carry the end of a *closed* window: a window
//! whose rows all arrive in one epoch, once.
//!
//! An append-mode windowed aggregation emits each window's rows in the first epoch whose
//! watermark reaches the window's end — every key of that window in that epoch, and never
//! again. The watermark is the query's, one per epoch, so two such aggregations emit windows
//! with the same end in the same epoch. Downstream of them, an aggregation grouped by the
//! window's end (under any alias, e.g. Nexmark's `endtime`) or a join on the window ends of
//! both sides sees all its input for a window in one epoch: it runs per epoch, as in a batch
//! job, without state. This is what Nexmark q5 (the maximum of a windowed count, joined back)
//! and q8 (two windowed aggregations joined per window) need.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

use crate::job::OutputMode;
use crate::operator::stateful::StatefulAggregateExec;

/// The indices of `plan`'s output columns that hold a closed window's end (empty: none, or
/// the plan's rows are not grouped in closed windows).
pub(super) fn window_ends(plan: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
    if let Some(s) = plan.downcast_ref::<StatefulAggregateExec>() {
        let spec = &s.spec;
        return match spec.window_end {
            Some(end)
                if spec.mode == OutputMode::Append
                    && !spec.event_time_key
                    && spec.session.is_none() =>
            {
                vec![end]
            }
            _ => vec![],
        };
    }
    if let Some(p) = plan.downcast_ref::<ProjectionExec>() {
        let ends = window_ends(p.input());
        return p
            .expr()
            .iter()
            .enumerate()
            .filter(|(_, e)| column_in(&e.expr, &ends))
            .map(|(i, _)| i)
            .collect();
    }
    if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
        return grouped_ends(agg);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        return joined_ends(join).unwrap_or_default();
    }
    // Operators that pass their input's columns through unchanged (filters, repartitions,
    // coalescing, sorts): the same columns.
    let children = plan.children();
    match children.as_slice() {
        [child] if child.schema().fields() == plan.schema().fields() => window_ends(child),
        _ => vec![],
    }
}

/// The group columns of `agg` that are a closed window's end of its input.
pub(super) fn grouped_ends(agg: &AggregateExec) -> Vec<usize> {
    if !agg.group_expr().is_single() {
        return vec![];
    }
    let ends = window_ends(agg.input());
    agg.group_expr()
        .expr()
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| column_in(e, &ends))
        .map(|(i, _)| i)
        .collect()
}

/// When `join` joins two inputs of closed windows on their window ends (so it can run per
/// epoch): its output columns holding window ends.
pub(super) fn joined_ends(join: &HashJoinExec) -> Option<Vec<usize>> {
    let (left, right) = (join.left(), join.right());
    let (left_ends, right_ends) = (window_ends(left), window_ends(right));
    join.on()
        .iter()
        .find(|(l, r)| column_in(l, &left_ends) && column_in(r, &right_ends))?;
    let (_, columns) = build_join_schema(&left.schema(), &right.schema(), join.join_type());
    let is_end = |c: &datafusion::physical_plan::joins::utils::ColumnIndex| match c.side {
        datafusion::common::JoinSide::Left => left_ends.contains(&c.index),
        datafusion::common::JoinSide::Right => right_ends.contains(&c.index),
        datafusion::common::JoinSide::None => false,
    };
    // Outer joins fill the other side's columns with nulls: its window end is then not one.
    let nullable = |side| match join.join_type() {
        JoinType::Left => side == datafusion::common::JoinSide::Right,
        JoinType::Right => side == datafusion::common::JoinSide::Left,
        JoinType::Full => true,
        _ => false,
    };
    let ends: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| is_end(c) && !nullable(c.side))
        .map(|(i, _)| i)
        .collect();
    Some(match &join.projection {
        Some(projection) => projection
            .iter()
            .enumerate()
            .filter(|(_, i)| ends.contains(i))
            .map(|(out, _)| out)
            .collect(),
        None => ends,
    })
}

fn column_in(expr: &Arc<dyn PhysicalExpr>, indices: &[usize]) -> bool {
    expr.downcast_ref::<Column>()
        .is_some_and(|c| indices.contains(&c.index()))
}
