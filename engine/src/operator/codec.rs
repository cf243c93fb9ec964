//! Encoding Sluice's operators inside DataFusion's protobuf physical plans.
//!
//! DataFusion encodes its own operators and expressions; this codec handles Sluice's operators
//! (the leaves [`SourceScanExec`] and [`ShuffleReaderExec`], and the stateful and filtering
//! operators above them) as postcard messages. Decoding is strict:
//! bytes that do not decode are an error, never a panic.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};
use sluice_connectors::SourceSpec;

use super::interval_join::{IntervalJoinExec, IntervalJoinSpec};
use super::late::LateRowFilterExec;
use super::nodes::{
    schema_from_json, schema_to_json, EventTime, ReadMode, ShuffleReaderExec, SourceScanExec,
};
use super::session::{SessionColumns, SessionMergeExec};
use super::stateful::{StatefulAggregateExec, StatefulSpec};
use super::window_join::{WindowJoinExec, WindowJoinSpec};
use crate::protocol::StageId;

/// The extension codec for Sluice's operators.
#[derive(Debug, Default, Clone, Copy)]
pub struct SluiceCodec;

#[derive(Serialize, Deserialize)]
enum Node {
    Scan {
        table: String,
        spec: Box<SourceSpec>,
        schema_json: String,
        projection: Option<Vec<usize>>,
        partitions: usize,
        event_time: Option<EventTime>,
    },
    ShuffleRead {
        stage: StageId,
        schema_json: String,
        partitions: usize,
        mode: ReadMode,
    },
    /// Its one input (the final aggregate) travels as the node's child.
    StatefulAggregate { spec: StatefulSpec },
    /// Its one input (the final aggregate) travels as the node's child.
    SessionMerge { cols: SessionColumns },
    /// Its one input (the hash join) travels as the node's child.
    WindowJoin { spec: WindowJoinSpec },
    /// Its one input (the hash join) travels as the node's child.
    IntervalJoin { spec: IntervalJoinSpec },
    /// Its one input travels as the node's child.
    LateRowFilter { column: usize },
}

impl PhysicalExtensionCodec for SluiceCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node: Node = postcard::from_bytes(buf)
            .map_err(|e| DataFusionError::Internal(format!("undecodable Sluice plan node: {e}")))?;
        Ok(match node {
            Node::Scan {
                table,
                spec,
                schema_json,
                projection,
                partitions,
                event_time,
            } => Arc::new(
                SourceScanExec::try_new(
                    table,
                    *spec,
                    schema_from_json(&schema_json)?,
                    projection,
                    partitions,
                )?
                .with_event_time(event_time),
            ),
            Node::ShuffleRead {
                stage,
                schema_json,
                partitions,
                mode,
            } => Arc::new(ShuffleReaderExec::new(
                stage,
                schema_from_json(&schema_json)?,
                partitions,
                mode,
            )),
            Node::StatefulAggregate { spec } => {
                let [aggregate] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a stateful aggregate node needs exactly one input".into(),
                    ));
                };
                Arc::new(StatefulAggregateExec::try_new(spec, aggregate.clone())?)
            }
            Node::SessionMerge { cols } => {
                let [aggregate] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a session merge node needs exactly one input".into(),
                    ));
                };
                Arc::new(SessionMergeExec::try_new(cols, aggregate.clone())?)
            }
            Node::WindowJoin { spec } => {
                let [join] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a window join node needs exactly one input".into(),
                    ));
                };
                Arc::new(WindowJoinExec::try_new(spec, join.clone())?)
            }
            Node::IntervalJoin { spec } => {
                let [join] = inputs else {
                    return Err(DataFusionError::Internal(
                        "an interval join node needs exactly one input".into(),
                    ));
                };
                Arc::new(IntervalJoinExec::try_new(spec, join.clone())?)
            }
            Node::LateRowFilter { column } => {
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a late-row filter node needs exactly one input".into(),
                    ));
                };
                Arc::new(LateRowFilterExec::try_new(input.clone(), column)?)
            }
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let encoded = if let Some(scan) = node.downcast_ref::<SourceScanExec>() {
            Node::Scan {
                table: scan.table.clone(),
                spec: Box::new(scan.spec.clone()),
                schema_json: schema_to_json(&scan.schema),
                projection: scan.projection.clone(),
                partitions: scan.partitions,
                event_time: scan.event_time,
            }
        } else if let Some(read) = node.downcast_ref::<ShuffleReaderExec>() {
            Node::ShuffleRead {
                stage: read.stage,
                schema_json: schema_to_json(&read.schema),
                partitions: read.partitions,
                mode: read.mode,
            }
        } else if let Some(stateful) = node.downcast_ref::<StatefulAggregateExec>() {
            Node::StatefulAggregate {
                spec: stateful.spec,
            }
        } else if let Some(join) = node.downcast_ref::<WindowJoinExec>() {
            Node::WindowJoin { spec: join.spec }
        } else if let Some(join) = node.downcast_ref::<IntervalJoinExec>() {
            Node::IntervalJoin { spec: join.spec }
        } else if let Some(merge) = node.downcast_ref::<SessionMergeExec>() {
            Node::SessionMerge { cols: merge.cols }
        } else if let Some(filter) = node.downcast_ref::<LateRowFilterExec>() {
            Node::LateRowFilter {
                column: filter.column,
            }
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "operator {} cannot run distributed yet",
                node.name()
            )));
        };
        buf.extend(
            postcard::to_stdvec(&encoded).map_err(|e| DataFusionError::Internal(e.to_string()))?,
        );
        Ok(())
    }
}
