//! Broadcast joins: a join side whose table is small (`--broadcast-threshold`, from the files'
//! sizes when planned) is collected whole by every task of the other side — DataFusion's
//! `CollectLeft` hash join — instead of both sides being shuffled by key. Across stages this
//! is a gathered read: the small side's scan stage keeps each task's output whole and every
//! task of the joining stage reads all of them (for a static table, from the outputs the
//! executors keep; see the driver's static cache).
//!
//! Only where that gives the same rows: each task joins its share of the other side against
//! the whole small side, so a join that must emit the small side's unmatched (or matched-once)
//! rows — a left, full, left-semi or left-anti join with the small side on the left — would
//! emit them once per task. [`BroadcastOnlyWhereSafe`] turns those back into partitioned joins.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::JoinType;
use datafusion::config::ConfigOptions;
use datafusion::error::Result as DfResult;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::ExecutionPlan;

/// Runs after DataFusion's join selection: a `CollectLeft` join whose collected side must
/// emit rows by itself is planned partitioned instead.
#[derive(Debug, Default)]
pub struct BroadcastOnlyWhereSafe;

/// Whether a collected (build) side of a join of this type emits rows of its own.
fn build_side_emits(join_type: &JoinType) -> bool {
    use JoinType::*;
    matches!(join_type, Left | Full | LeftSemi | LeftAnti | LeftMark)
}

impl PhysicalOptimizerRule for BroadcastOnlyWhereSafe {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if *join.partition_mode() != PartitionMode::CollectLeft
                || join.null_aware
                || !build_side_emits(join.join_type())
            {
                return Ok(Transformed::no(node));
            }
            let partitioned = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .build()?;
            Ok(Transformed::yes(Arc::new(partitioned) as _))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "sluice_broadcast_only_where_safe"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
