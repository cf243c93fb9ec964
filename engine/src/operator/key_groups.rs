//! Key groups on the data path: the hash shuffle sends each row to the partition holding its
//! key group, and a stateful operator whose partition count changed finds the group of each
//! stored entry with the same hash (see [`sluice_checkpoint::state::KeyGroups`] for the ranges).
//!
//! The hash is DataFusion's repartition hash over the shuffle's key expressions, so a key's
//! group depends on its values only: it is the same on every executor and in every run.

use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion::common::hash_utils::create_hashes;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::repartition::REPARTITION_RANDOM_STATE;
use sluice_checkpoint::state::{KeyGroups, Redistribution, StatePartition, StatePartitionId};
use sluice_checkpoint::QueryId;

use super::stateful::TaskState;

/// The key group (of `max`) of each of `rows` rows whose key columns are `columns`; no
/// columns: every row is in one group.
pub fn key_groups_of(columns: &[ArrayRef], rows: usize, max: u32) -> DfResult<Vec<u32>> {
    let mut hashes = vec![0u64; rows];
    if !columns.is_empty() {
        create_hashes(
            columns,
            REPARTITION_RANDOM_STATE.random_state(),
            &mut hashes,
        )?;
    }
    let max = u64::from(max.max(1));
    Ok(hashes.iter().map(|h| (h % max) as u32).collect())
}

/// Splits batches by the key group of `exprs` into the partitions holding the groups.
pub struct KeyGroupPartitioner {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    partitions: u32,
    max: u32,
    indices: Vec<Vec<u32>>,
}

impl KeyGroupPartitioner {
    /// A partitioner into `partitions` partitions of `max` key groups.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, partitions: usize, max: u32) -> Self {
        Self {
            exprs,
            partitions: partitions as u32,
            max,
            indices: vec![Vec::new(); partitions],
        }
    }

    /// Calls `out` with each partition's rows of `batch` (partitions without rows skipped).
    pub fn partition(
        &mut self,
        batch: RecordBatch,
        mut out: impl FnMut(usize, RecordBatch) -> DfResult<()>,
    ) -> DfResult<()> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        self.indices.iter_mut().for_each(Vec::clear);
        for (row, group) in key_groups_of(&columns, rows, self.max)?
            .into_iter()
            .enumerate()
        {
            let p = KeyGroups::partition_of(group, self.partitions, self.max);
            self.indices[p as usize].push(row as u32);
        }
        for (p, indices) in self.indices.iter_mut().enumerate() {
            if indices.is_empty() {
                continue;
            }
            if indices.len() == rows {
                out(p, batch.clone())?;
            } else {
                let taken = UInt32Array::from(std::mem::take(indices));
                out(p, take_record_batch(&batch, &taken)?)?;
            }
        }
        Ok(())
    }
}

/// The state partition of task `partition` (of `partitions`) of stateful `operator`, at the
/// last committed epoch. When that epoch was committed with another partition count, the
/// partition holding this task's key groups is rebuilt from the old partitions holding them,
/// with `how` placing each stored entry.
pub fn open_state(
    state: &TaskState,
    query_id: &QueryId,
    operator: u32,
    partition: usize,
    partitions: usize,
    how: &dyn Redistribution,
) -> DfResult<Arc<Mutex<StatePartition>>> {
    let id = |p: u32, n: u32| StatePartitionId {
        query_id: query_id.clone(),
        operator,
        partition: p,
        key_groups: state
            .key_groups
            .map(|max| KeyGroups::of_partition(p, n, max)),
    };
    let me = id(partition as u32, partitions as u32);
    let opened = match (state.restore, me.key_groups, state.restore_partitions) {
        (Some(epoch), Some(mine), Some(old)) if old as usize != partitions => {
            let sources: Vec<StatePartitionId> = (0..old)
                .map(|p| id(p, old))
                .filter(|s| s.key_groups.is_some_and(|g| g.overlaps(&mine)))
                .collect();
            state
                .backend
                .open_rescaled(&me, &state.store, epoch, &sources, how)
        }
        _ => state.backend.open(&me, &state.store, state.restore),
    };
    opened.map_err(|e| DataFusionError::External(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    #[test]
    fn rows_go_to_the_partition_holding_their_key_group_whatever_the_batch() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let keys: Vec<Option<String>> = (0..500)
            .map(|i| (i % 7 != 0).then(|| format!("key-{}", i % 97)))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys.clone())),
                Arc::new(Int64Array::from_iter_values(0..500)),
            ],
        )
        .unwrap();
        let exprs = vec![col("k", &schema).unwrap()];
        for partitions in [1usize, 2, 3, 4] {
            let mut owner = std::collections::HashMap::new();
            let mut seen = 0;
            let mut p = KeyGroupPartitioner::new(exprs.clone(), partitions, 128);
            // The same rows, split in two batches: each key lands where it did before.
            for part in [batch.slice(0, 123), batch.slice(123, 377)] {
                p.partition(part, |n, b| {
                    let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                    for i in 0..b.num_rows() {
                        let key = k.is_valid(i).then(|| k.value(i).to_string());
                        assert_eq!(*owner.entry(key).or_insert(n), n, "{partitions} partitions");
                        let group = key_groups_of(&[b.column(0).slice(i, 1)], 1, 128).unwrap()[0];
                        assert!(KeyGroups::of_partition(n as u32, partitions as u32, 128)
                            .contains(group));
                    }
                    seen += b.num_rows();
                    Ok(())
                })
                .unwrap();
            }
            assert_eq!(seen, 500);
            if partitions > 1 {
                let used: std::collections::BTreeSet<_> = owner.values().collect();
                assert_eq!(
                    used.len(),
                    partitions,
                    "97 keys spread over every partition"
                );
            }
        }
    }
}
