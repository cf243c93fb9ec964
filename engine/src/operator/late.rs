//! [`LateRowFilterExec`]: drops rows behind the epoch's watermark, as a source scan does for a
//! stateful operator, where the rows come from a scan shared with queries that keep them.
//!
//! A statement set reads each source once, in a stage of its own; a raw archive of the stream
//! must keep a late row while a windowed aggregation of the same stream drops it. The shared
//! scan keeps every row, and the aggregation's side of the shuffle filters here, counting what
//! it drops as late (in the task's read counters, as the scan would).

use std::sync::Arc;

use arrow::array::BooleanArray;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use super::nodes::{event_millis, task_inputs};

/// Passes on the rows of its input whose event time (column `column`) is at or after the
/// task's watermark; rows without an event time pass.
#[derive(Debug, Clone)]
pub struct LateRowFilterExec {
    /// The event-time column's index in the input.
    pub column: usize,
    input: Arc<dyn ExecutionPlan>,
}

impl LateRowFilterExec {
    /// Filters `input` by its column `column`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, column: usize) -> DfResult<Self> {
        if column >= input.schema().fields().len() {
            return Err(DataFusionError::Plan(format!(
                "late-row filter on column {column} of a {}-column input",
                input.schema().fields().len()
            )));
        }
        Ok(Self { column, input })
    }
}

impl DisplayAs for LateRowFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "LateRowFilterExec: event_time={}",
            self.input.schema().field(self.column).name()
        )
    }
}

impl ExecutionPlan for LateRowFilterExec {
    fn name(&self) -> &str {
        "LateRowFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let child = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("LateRowFilterExec has one child".into()))?;
        Ok(Arc::new(LateRowFilterExec::try_new(child, self.column)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let inputs = task_inputs(&context)?;
        let column = self.column;
        let schema = self.schema();
        let stream = self.input.execute(partition, context)?;
        let Some(watermark) = inputs.watermark_ms else {
            return Ok(stream);
        };
        let filtered = stream.map(move |batch| {
            let batch = batch?;
            let on_time: BooleanArray = event_millis(batch.column(column))?
                .iter()
                .map(|v| Some(v.is_none_or(|v| v >= watermark)))
                .collect();
            let late = batch.num_rows() - on_time.true_count();
            if late == 0 {
                return Ok(batch);
            }
            inputs
                .read_counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .late += late as u64;
            Ok(arrow::compute::filter_record_batch(&batch, &on_time)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, filtered)))
    }
}
