//! Aggregating before an `UNNEST` that repeats rows: a hopping window (`HOP`, size = k ×
//! slide) is planned as every row repeated into the k windows holding it (`unnest(range(..))`
//! over the row's slide pane), then aggregated per window. Rows that agree on the grouping
//! columns and on the pane repeat into the same windows, so [`PreAggregateBeforeUnnest`]
//! aggregates them first — one partial state per key and pane — repeats each state k times,
//! and merges the states per window (DataFusion's `PartialReduce`). The stage's output is the
//! same partial states, by the same columns: every operator above it is unchanged, and the
//! row-repeating work falls from k per input row to k per key and pane (Nexmark q5 repeats
//! 9.2 M bids into 46 M window rows; per auction and 2 s pane there are far fewer).
//!
//! Generally: a partial aggregation over a projection over an unnest over a projection,
//! whose aggregate arguments do not read the unnested column, is the same as grouping the
//! rows below the unnest by the columns the aggregation's keys and the unnested list read,
//! then unnesting the states. Only plain aggregates are moved (no DISTINCT, FILTER or ORDER
//! BY within the aggregate), as are only unnests of one list column.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::{update_expr, ProjectionExpr};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::unnest::{ListUnnest, UnnestExec};
use datafusion::physical_plan::ExecutionPlan;

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct PreAggregateBeforeUnnest;

impl PhysicalOptimizerRule for PreAggregateBeforeUnnest {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match rewrite(&node)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sluice_pre_aggregate_before_unnest"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Columns `expr` reads.
fn columns(expr: &Arc<dyn PhysicalExpr>) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    let _ = expr.apply(|e| {
        if let Some(c) = e.downcast_ref::<Column>() {
            found.insert(c.index());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `expr` with each column `i` replaced by column `map(i)` (named as in `schema`).
fn remap(
    expr: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
    map: impl Fn(usize) -> Option<usize>,
) -> Option<Arc<dyn PhysicalExpr>> {
    let mut ok = true;
    let out = Arc::clone(expr)
        .transform_up(|e| {
            let Some(c) = e.downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            match map(c.index()) {
                Some(i) => Ok(Transformed::yes(
                    Arc::new(Column::new(schema.field(i).name(), i)) as _,
                )),
                None => {
                    ok = false;
                    Ok(Transformed::no(e))
                }
            }
        })
        .ok()?
        .data;
    ok.then_some(out)
}

/// The pre-aggregated plan for `node`, if it is a partial aggregation this rule moves.
fn rewrite(node: &Arc<dyn ExecutionPlan>) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(agg) = node.downcast_ref::<AggregateExec>() else {
        return Ok(None);
    };
    if *agg.mode() != AggregateMode::Partial
        || agg.group_expr().has_grouping_set()
        || agg.group_expr().expr().is_empty()
        || agg.filter_expr().iter().any(Option::is_some)
        || agg
            .aggr_expr()
            .iter()
            .any(|a| a.is_distinct() || !a.order_bys().is_empty())
    {
        return Ok(None);
    }
    // agg <- above (projection) <- unnest <- below (projection) <- source
    let Some(above) = agg.input().downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    let Some(unnest) = above.input().downcast_ref::<UnnestExec>() else {
        return Ok(None);
    };
    let Some(below) = unnest.input().downcast_ref::<ProjectionExec>() else {
        return Ok(None);
    };
    if unnest.list_column_indices().len() != 1
        || !unnest.struct_column_indices().is_empty()
        || unnest.list_column_indices()[0].depth != 1
    {
        return Ok(None);
    }
    let list = unnest.list_column_indices()[0].index_in_input_schema;
    let source = below.input();
    let source_schema = source.schema();

    // The aggregation's keys and arguments as read below `above`, in the unnest's columns.
    let through_above = |e: &Arc<dyn PhysicalExpr>| update_expr(e, above.expr(), true);
    let mut keys = Vec::new();
    for (expr, _) in agg.group_expr().expr() {
        match through_above(expr)? {
            Some(e) => keys.push(e),
            None => return Ok(None),
        }
    }
    // Arguments must not read the unnested column; their expressions below the unnest.
    let mut args = Vec::new();
    for a in agg.aggr_expr() {
        let mut mapped = Vec::new();
        for e in a.expressions() {
            let Some(e) = through_above(&e)? else {
                return Ok(None);
            };
            if columns(&e).contains(&list) {
                return Ok(None);
            }
            let Some(e) = update_expr(&e, below.expr(), true)? else {
                return Ok(None);
            };
            mapped.push(e);
        }
        args.push(mapped);
    }

    // Group the rows below the unnest by the unnest's columns the keys read (other than the
    // unnested one) and by the list's own inputs.
    let kept: Vec<usize> = keys
        .iter()
        .flat_map(columns)
        .filter(|&c| c != list)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Only lists computed from scalars (`range`, as windows are): grouping by a column that
    // is itself a list would rarely bring rows together.
    let list_expr = &below.expr()[list].expr;
    if list_expr
        .downcast_ref::<ScalarFunctionExpr>()
        .is_none_or(|f| f.name() != "range")
    {
        return Ok(None);
    }
    let list_inputs: Vec<usize> = columns(list_expr).into_iter().collect();
    if list_inputs
        .iter()
        .any(|&c| source_schema.field(c).data_type().is_nested())
    {
        return Ok(None);
    }
    let mut lower_keys: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for &c in &kept {
        let p = &below.expr()[c];
        lower_keys.push((p.expr.clone(), p.alias.clone()));
    }
    for &c in &list_inputs {
        lower_keys.push((
            Arc::new(Column::new(source_schema.field(c).name(), c)) as _,
            format!("__sluice_pane_{}", source_schema.field(c).name()),
        ));
    }
    let mut lower_aggr = Vec::new();
    for (a, mapped) in agg.aggr_expr().iter().zip(args) {
        let Some(new) = a.with_new_expressions(mapped, vec![]) else {
            return Ok(None);
        };
        lower_aggr.push(Arc::new(new));
    }
    let filters = vec![None; lower_aggr.len()];
    let lower = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        PhysicalGroupBy::new_single(lower_keys.clone()),
        lower_aggr,
        filters,
        source.clone(),
        source_schema.clone(),
    )?);
    let lower_schema = lower.schema();
    let n_keys = lower_keys.len();
    let n_states = lower_schema.fields().len() - n_keys;

    // Above it: the kept columns, the list (from its inputs' group columns), the states.
    let mut proj = Vec::new();
    for (i, &c) in kept.iter().enumerate() {
        proj.push(ProjectionExpr {
            expr: Arc::new(Column::new(lower_schema.field(i).name(), i)) as _,
            alias: below.expr()[c].alias.clone(),
        });
    }
    let Some(list_over_lower) = remap(list_expr, &lower_schema, |c| {
        list_inputs
            .iter()
            .position(|&x| x == c)
            .map(|p| kept.len() + p)
    }) else {
        return Ok(None);
    };
    let list_position = proj.len();
    proj.push(ProjectionExpr {
        expr: list_over_lower,
        alias: below.expr()[list].alias.clone(),
    });
    for s in 0..n_states {
        let i = n_keys + s;
        proj.push(ProjectionExpr {
            expr: Arc::new(Column::new(lower_schema.field(i).name(), i)) as _,
            alias: lower_schema.field(i).name().clone(),
        });
    }
    let projected = Arc::new(ProjectionExec::try_new(proj, lower.clone())?);
    let projected_schema = projected.schema();
    let fields: Vec<Arc<Field>> = projected_schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == list_position {
                Arc::new(unnest.schema().field(list).clone())
            } else {
                f.clone()
            }
        })
        .collect();
    let new_unnest = Arc::new(UnnestExec::new(
        projected,
        vec![ListUnnest {
            index_in_input_schema: list_position,
            depth: 1,
        }],
        vec![],
        Arc::new(Schema::new(fields)),
        unnest.options().clone(),
    )?);
    let unnest_schema = new_unnest.schema();

    // The partial aggregation's layout again: its keys (over the new unnest), then the states.
    let map_unnest = |c: usize| {
        if c == list {
            Some(list_position)
        } else {
            kept.iter().position(|&k| k == c)
        }
    };
    let mut out = Vec::new();
    for (key, (_, name)) in keys.iter().zip(agg.group_expr().expr()) {
        let Some(e) = remap(key, &unnest_schema, map_unnest) else {
            return Ok(None);
        };
        out.push(ProjectionExpr {
            expr: e,
            alias: name.clone(),
        });
    }
    let agg_schema = agg.schema();
    for s in 0..n_states {
        let i = kept.len() + 1 + s;
        out.push(ProjectionExpr {
            expr: Arc::new(Column::new(unnest_schema.field(i).name(), i)) as _,
            alias: agg_schema
                .field(agg.group_expr().expr().len() + s)
                .name()
                .clone(),
        });
    }
    let states = Arc::new(ProjectionExec::try_new(out, new_unnest)?);
    let reduce = AggregateExec::try_new(
        AggregateMode::PartialReduce,
        agg.group_expr().as_final(),
        agg.aggr_expr().to_vec(),
        agg.filter_expr().to_vec(),
        states,
        agg.input_schema(),
    )?;
    if reduce.schema().fields() != agg.schema().fields() {
        return Ok(None);
    }
    Ok(Some(Arc::new(reduce)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// A session over 20 000 rows of (k, v, ts): 7 keys, one row every 37 ms; with the rule
    /// appended to DataFusion's physical optimizers or not.
    async fn session(with_rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]));
        let n = 20_000i64;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 31 % 7))),
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 11 != 0).then_some(i % 1000 - 300)),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    (0..n).map(|i| i * 37),
                )),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch.clone()], vec![batch]]).unwrap();
        let config = SessionConfig::new().with_target_partitions(2);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let state = if with_rule {
            let mut rules = state.physical_optimizers().to_vec();
            rules.push(Arc::new(super::PreAggregateBeforeUnnest) as _);
            SessionStateBuilder::new_from_existing(state)
                .with_physical_optimizer_rules(rules)
                .build()
        } else {
            state
        };
        let ctx = SessionContext::new_with_state(state);
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The rows of `sql` (sorted) and whether its plan merges pre-aggregated states.
    async fn run(with_rule: bool, sql: &str) -> (Vec<String>, bool) {
        let ctx = session(with_rule).await;
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        let batches = df.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
        rows.sort();
        (rows, shown.contains("mode=PartialReduce"))
    }

    /// Hopping windows (size 10 s, slide 2 s) as Sluice's SQL rewriting spells them.
    const HOP: &str = "(SELECT *, window_start + INTERVAL '10' SECOND AS window_end FROM \
        (SELECT *, unnest(range(date_bin(INTERVAL '2' SECOND, ts) - INTERVAL '10' SECOND \
        + INTERVAL '2' SECOND, date_bin(INTERVAL '2' SECOND, ts) + INTERVAL '2' SECOND, \
        INTERVAL '2' SECOND)) AS window_start FROM t))";

    #[tokio::test]
    async fn hopping_window_aggregates_are_pre_aggregated_per_pane_with_the_same_rows() {
        let sql = format!(
            "SELECT k, window_start, window_end, count(*) AS n, count(v) AS nv, sum(v) AS s, \
             min(v) AS lo, max(v) AS hi, avg(v) AS mean FROM {HOP} \
             GROUP BY k, window_start, window_end"
        );
        let (want, moved) = run(false, &sql).await;
        assert!(!moved);
        let (got, moved) = run(true, &sql).await;
        assert!(moved, "the rule applies to a hopping-window aggregation");
        assert!(want.len() > 1000, "{}", want.len());
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn aggregations_it_cannot_move_are_left_alone() {
        // DataFusion plans a single DISTINCT aggregate as a group-by on (keys, v) under a
        // plain count; that inner group-by is moved, the answer the same.
        let sql = format!(
            "SELECT k, window_start, count(DISTINCT v) AS d FROM {HOP} GROUP BY k, window_start"
        );
        assert_eq!(run(true, &sql).await.0, run(false, &sql).await.0);
        // An argument reading the unnested column, and an unnest of a list column.
        for sql in [
            format!("SELECT k, max(window_start) AS w FROM {HOP} GROUP BY k"),
            "SELECT x, count(*) AS n FROM (SELECT unnest(l) AS x FROM \
             (SELECT make_array(k, k + 1) AS l FROM t)) GROUP BY x"
                .to_string(),
        ] {
            let (want, _) = run(false, &sql).await;
            let (got, moved) = run(true, &sql).await;
            assert!(!moved, "{sql}");
            assert_eq!(got, want, "{sql}");
        }
    }
}
