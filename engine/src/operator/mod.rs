//! Operators: every physical operator Sluice adds to DataFusion, with the state helpers they
//! share. Each follows DataFusion's shape (`ExecutionPlan::execute(partition)` → a stream of
//! Arrow record batches) and is serialized to executors by [`codec`].
//!
//! - [`nodes`]: the epoch's inputs — the scan of a source's splits and the shuffle read of an
//!   upstream stage's outputs — and what a task hands them ([`nodes::TaskInputs`]).
//! - [`stateful`]: keyed and windowed aggregation over RocksDB state, with watermarks, TTL and
//!   snapshots.
//! - [`session`]: session windows merged across epochs.
//! - [`window_join`]: joins of two streams within windows.
//! - [`interval_join`]: joins of two streams on a bounded difference of their event times.
//! - [`key_groups`]: the hash shuffle by key group, and the key group of stored state.
//! - [`late`]: drops rows behind the watermark where a stateful operator reads a scan shared
//!   with queries that keep them (statement sets).
//! - [`codec`]: the DataFusion extension codec that carries these operators in stage plans.
//!
//! Operators import nothing from the planner (`plan`), the driver or the executor; the planner
//! builds them, the executor runs them.

pub mod codec;
pub mod interval_join;
pub mod key_groups;
pub mod late;
pub mod nodes;
pub mod session;
pub mod stateful;
pub mod window_join;

use datafusion::prelude::SessionConfig;

/// Whether `plan` is or holds a stateful operator (an aggregation, a window join or an
/// interval join): its stage's tasks keep state between epochs.
pub fn holds_state(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> bool {
    plan.downcast_ref::<stateful::StatefulAggregateExec>()
        .is_some()
        || plan.downcast_ref::<window_join::WindowJoinExec>().is_some()
        || plan
            .downcast_ref::<interval_join::IntervalJoinExec>()
            .is_some()
        || plan.children().into_iter().any(holds_state)
}

/// How a streaming aggregation emits its results (the sink table's `output_mode` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputMode {
    /// Each window's final row, once, when the watermark passes the window's end.
    Append,
    /// The rows of the keys that changed in the epoch.
    Update,
    /// Every key's current row, every epoch.
    Complete,
}

impl std::str::FromStr for OutputMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "append" => Ok(OutputMode::Append),
            "update" => Ok(OutputMode::Update),
            "complete" => Ok(OutputMode::Complete),
            other => Err(format!(
                "output_mode '{other}' is not one of append, update, complete"
            )),
        }
    }
}

/// The DataFusion session configuration shared by driver and executors, so a plan means the
/// same in every process.
pub fn session_config(parallelism: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(parallelism.max(1))
        .with_batch_size(8192)
        .with_information_schema(false);
    let options = config.options_mut();
    // Stage boundaries are hash repartitions; round-robin repartitions would be pointless ones.
    options.optimizer.enable_round_robin_repartition = false;
    // Joins shuffle both sides by key rather than broadcasting a "small" side we cannot size.
    options.optimizer.hash_join_single_partition_threshold = 0;
    options.optimizer.hash_join_single_partition_threshold_rows = 0;
    // Dynamic filters are in-process shared state and cannot cross stage boundaries.
    options.optimizer.enable_dynamic_filter_pushdown = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_topk_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // Scalar subqueries as joins: DataFusion's physical ScalarSubqueryExec shares state between
    // operators that stage boundaries would separate (DataFusion keeps this rewrite for
    // distributed engines).
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    // Spans let semantic errors point at the offending SQL.
    options.sql_parser.collect_spans = true;
    config
}
