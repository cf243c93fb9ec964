//! Deduplication by key, in the form Flink's documentation gives it:
//!
//! ```sql
//! SELECT * FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY date_time) AS rn FROM events)
//! WHERE rn = 1
//! ```
//!
//! Over a stream, a window function over all rows of a key cannot run: the rows never end. The
//! pattern means "the first row of each key", so the filter and the window are replaced by an
//! aggregation grouped by the key that keeps each other column's `first_value` in the
//! `ORDER BY` order, and the row number by the constant 1. The stateful operator then treats
//! it as a deduplication ([`crate::operator::stateful::StatefulSpec::keep_first`]): a key
//! already in state is a duplicate, neither written nor emitted, so each key's row is emitted
//! once — the first to arrive, or within one epoch the least in `ORDER BY` order.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::functions_aggregate::expr_fn::first_value;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, Projection, SubqueryAlias,
};

use crate::error::{EngineError, Result};

/// Rewrites every `ROW_NUMBER() ... WHERE rn = 1` over `plan` as described above; whether any
/// was found. A `DESC` order (keep the last row) is refused: the last row of a stream is never
/// known.
pub(super) fn keep_first_by_key(plan: LogicalPlan, origin: &str) -> Result<(LogicalPlan, bool)> {
    let mut found = false;
    let mut refused: Option<String> = None;
    let rewritten = plan.transform_up(|node| {
        let LogicalPlan::Filter(filter) = &node else {
            return Ok(Transformed::no(node));
        };
        let (alias, projection) = match filter.input.as_ref() {
            LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
                LogicalPlan::Projection(p) => (Some(a.alias.clone()), p),
                _ => return Ok(Transformed::no(node)),
            },
            LogicalPlan::Projection(p) => (None, p),
            _ => return Ok(Transformed::no(node)),
        };
        let LogicalPlan::Window(window) = projection.input.as_ref() else {
            return Ok(Transformed::no(node));
        };
        let [Expr::WindowFunction(function)] = window.window_expr.as_slice() else {
            return Ok(Transformed::no(node));
        };
        let WindowFunction { fun, params } = function.as_ref();
        if !fun.name().eq_ignore_ascii_case("row_number") || params.partition_by.is_empty() {
            return Ok(Transformed::no(node));
        }
        let number = window.window_expr[0].schema_name().to_string();
        // The projection's name for the row number (`rn`).
        let Some(rn) = projection.expr.iter().find_map(|e| match e {
            Expr::Alias(a) if matches!(a.expr.as_ref(), Expr::Column(c) if c.name == number) => {
                Some(a.name.clone())
            }
            _ => None,
        }) else {
            return Ok(Transformed::no(node));
        };
        if !is_first_row(&filter.predicate, &rn) {
            return Ok(Transformed::no(node));
        }
        if params.order_by.iter().any(|s| !s.asc) {
            refused.get_or_insert_with(|| {
                "ROW_NUMBER() OVER (... ORDER BY ... DESC) keeps the last row of each key, which a \
                 stream never knows; order ascending to keep each key's first row"
                    .to_string()
            });
            return Ok(Transformed::no(node));
        }
        let input = window.input.clone();
        let keys = params.partition_by.clone();
        let firsts: Vec<Expr> = input
            .schema()
            .iter()
            .map(|(qualifier, field)| Column::new(qualifier.cloned(), field.name()))
            .filter(|c| {
                !keys
                    .iter()
                    .any(|k| matches!(k, Expr::Column(kc) if kc == c))
            })
            .map(|c| {
                first_value(Expr::Column(c.clone()), params.order_by.clone())
                    .alias_qualified(c.relation.clone(), c.name.clone())
            })
            .collect();
        let aggregate = LogicalPlanBuilder::from(input.as_ref().clone())
            .aggregate(keys, firsts)?
            .build()?;
        let one = Expr::Literal(ScalarValue::UInt64(Some(1)), None);
        let exprs = projection
            .expr
            .iter()
            .map(|e| {
                e.clone()
                    .transform(|e| match &e {
                        Expr::Column(c) if c.name == number => Ok(Transformed::yes(one.clone())),
                        _ => Ok(Transformed::no(e)),
                    })
                    .map(|t| t.data)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut plan = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(aggregate))?);
        if let Some(alias) = alias {
            plan = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(plan), alias)?);
        }
        found = true;
        Ok(Transformed::yes(plan))
    })?;
    if let Some(message) = refused {
        return Err(EngineError::Sql {
            location: format!("{origin}: "),
            message,
        });
    }
    Ok((rewritten.data, found))
}

/// Whether `predicate` is `rn = 1`, `rn <= 1` or `rn < 2` (either way round).
fn is_first_row(predicate: &Expr, rn: &str) -> bool {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return false;
    };
    let is_rn = |e: &Expr| matches!(e, Expr::Column(c) if c.name == rn);
    let number = |e: &Expr| match e {
        Expr::Literal(v, _) => v.to_string().parse::<i64>().ok(),
        _ => None,
    };
    match (is_rn(left), is_rn(right)) {
        (true, false) => matches!(
            (op, number(right)),
            (Operator::Eq | Operator::LtEq, Some(1)) | (Operator::Lt, Some(2))
        ),
        (false, true) => matches!(
            (op, number(left)),
            (Operator::Eq | Operator::GtEq, Some(1)) | (Operator::Gt, Some(2))
        ),
        _ => false,
    }
}
