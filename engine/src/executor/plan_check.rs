//! Checks an executor makes on a stage plan's bytes before datafusion-proto turns them into
//! operators.
//!
//! datafusion-proto trusts what it decodes. A memory scan (what DataFusion plans for `VALUES`)
//! carries its rows as Arrow IPC streams, which it reads with a reader that allocates whatever
//! length a message header claims: 60 bytes could ask for 2 GB (found by the `stage_plan` fuzz
//! target). So the plan is first decoded as protobuf only (allocations bounded by its size), and
//! every memory-scan partition must be a complete IPC stream, read with Arrow's incremental
//! decoder (which grows its buffers with the bytes actually there).

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
use datafusion_proto::protobuf::PhysicalPlanNode;
use prost::Message;

/// `Err(why)` when `bytes` is not a stage plan an executor can decode safely.
pub(super) fn check(bytes: &[u8]) -> Result<(), String> {
    let plan = PhysicalPlanNode::decode(bytes).map_err(|e| e.to_string())?;
    let mut pending = vec![&plan];
    while let Some(node) = pending.pop() {
        let Some(kind) = &node.physical_plan_type else {
            continue;
        };
        if let PhysicalPlanType::MemoryScan(scan) = kind {
            for (i, partition) in scan.partitions.iter().enumerate() {
                complete_ipc_stream(partition)
                    .map_err(|e| format!("memory scan partition {i}: {e}"))?;
            }
        }
        pending.extend(children(kind));
    }
    Ok(())
}

fn one(input: &Option<Box<PhysicalPlanNode>>) -> Vec<&PhysicalPlanNode> {
    input.as_deref().into_iter().collect()
}

fn two<'a>(
    left: &'a Option<Box<PhysicalPlanNode>>,
    right: &'a Option<Box<PhysicalPlanNode>>,
) -> Vec<&'a PhysicalPlanNode> {
    [left.as_deref(), right.as_deref()]
        .into_iter()
        .flatten()
        .collect()
}

/// The plans directly below a node.
fn children(kind: &PhysicalPlanType) -> Vec<&PhysicalPlanNode> {
    use PhysicalPlanType as T;
    match kind {
        T::Projection(n) => one(&n.input),
        T::GlobalLimit(n) => one(&n.input),
        T::LocalLimit(n) => one(&n.input),
        T::Aggregate(n) => one(&n.input),
        T::Sort(n) => one(&n.input),
        T::CoalesceBatches(n) => one(&n.input),
        T::Filter(n) => one(&n.input),
        T::Merge(n) => one(&n.input),
        T::Repartition(n) => one(&n.input),
        T::Window(n) => one(&n.input),
        T::SortPreservingMerge(n) => one(&n.input),
        T::Analyze(n) => one(&n.input),
        T::JsonSink(n) => one(&n.input),
        T::CsvSink(n) => one(&n.input),
        T::ParquetSink(n) => one(&n.input),
        T::Unnest(n) => one(&n.input),
        T::Cooperative(n) => one(&n.input),
        T::AsyncFunc(n) => one(&n.input),
        T::Buffer(n) => one(&n.input),
        T::HashJoin(n) => two(&n.left, &n.right),
        T::CrossJoin(n) => two(&n.left, &n.right),
        T::NestedLoopJoin(n) => two(&n.left, &n.right),
        T::SymmetricHashJoin(n) => two(&n.left, &n.right),
        T::SortMergeJoin(n) => two(&n.left, &n.right),
        T::Extension(n) => n.inputs.iter().collect(),
        T::Union(n) => n.inputs.iter().collect(),
        T::Interleave(n) => n.inputs.iter().collect(),
        T::ScalarSubquery(n) => {
            let mut all: Vec<&PhysicalPlanNode> = one(&n.input);
            all.extend(n.subqueries.iter());
            all
        }
        // Leaves.
        T::ParquetScan(_)
        | T::CsvScan(_)
        | T::Empty(_)
        | T::AvroScan(_)
        | T::Explain(_)
        | T::PlaceholderRow(_)
        | T::JsonScan(_)
        | T::GenerateSeries(_)
        | T::MemoryScan(_)
        | T::ArrowScan(_) => Vec::new(),
    }
}

/// Whether `bytes` is a complete Arrow IPC stream (every message whole, batches decodable).
fn complete_ipc_stream(bytes: &[u8]) -> Result<(), String> {
    let mut decoder = StreamDecoder::new();
    let mut buffer = Buffer::from(bytes.to_vec());
    while !buffer.is_empty() {
        decoder.decode(&mut buffer).map_err(|e| e.to_string())?;
    }
    decoder.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_scan_claiming_more_than_it_holds_is_refused_without_allocating_it() {
        // An IPC stream whose first message claims 2 GB of metadata, in 12 bytes.
        let mut ipc = vec![0xff, 0xff, 0xff, 0xff];
        ipc.extend_from_slice(&0x7700_0000u32.to_le_bytes());
        ipc.extend_from_slice(&[1, 2, 3, 4]);
        let plan = PhysicalPlanNode {
            physical_plan_type: Some(PhysicalPlanType::MemoryScan(
                datafusion_proto::protobuf::MemoryScanExecNode {
                    partitions: vec![ipc],
                    ..Default::default()
                },
            )),
        };
        let err = check(&plan.encode_to_vec()).unwrap_err();
        assert!(err.contains("memory scan partition 0"), "{err}");
        // Below another node too.
        let filtered = PhysicalPlanNode {
            physical_plan_type: Some(PhysicalPlanType::Filter(Box::new(
                datafusion_proto::protobuf::FilterExecNode {
                    input: Some(Box::new(plan)),
                    ..Default::default()
                },
            ))),
        };
        assert!(check(&filtered.encode_to_vec()).is_err());
        assert!(check(b"\x9a\x02\x39garbage").is_err());
    }
}
