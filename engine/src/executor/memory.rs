//! An executor's memory (`--memory-mb`): RocksDB's share for operator state, the DataFusion
//! memory pool its tasks share, and a reserve for what neither accounts for; the spill
//! directory in its scratch space; and what tasks report of both (issue 19).
//!
//! DataFusion accounts only the allocations that grow with the input — hash tables of
//! aggregations and joins, sort buffers — against its pool, and charges a growing table after
//! it has grown: while a vector doubles, the old and the new one are both resident, and a
//! spilling aggregation holds its emitted state and the sorted slices it writes. Batches flowing
//! between operators, I/O buffers (shuffle writers, Parquet readers and writers, QUIC) and the
//! runtime are not accounted at all. Measured on P10 (a spilling 47.6 M-key group-by), an
//! executor's peak RSS was about 90 MiB plus 2.4 times its pool. Hence the division: a quarter
//! for the pool, a quarter for RocksDB's block cache (memtables are charged to it), and half
//! as the reserve for the rest.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryPool, PeakRecordingPool, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};

/// The smallest pool an executor runs with, whatever `--memory-mb` says.
const MIN_POOL_BYTES: u64 = 256 << 10;

/// How an executor's memory is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// `--memory-mb`, in bytes.
    pub total: u64,
    /// RocksDB's block cache (state reads), which memtables are charged to.
    pub block_cache: u64,
    /// RocksDB's memtables (state writes), within the block cache.
    pub write_buffers: u64,
    /// DataFusion's pool: what aggregations, joins and sorts may hold before they spill.
    pub pool: u64,
}

impl MemoryBudget {
    /// The division of `total` bytes: a quarter for RocksDB, a quarter for the pool, half in
    /// reserve.
    pub fn of(total: u64) -> Self {
        MemoryBudget {
            total,
            block_cache: (total / 4).max(8 << 20),
            write_buffers: (total / 16).max(4 << 20),
            pool: (total / 4).max(MIN_POOL_BYTES),
        }
    }
}

/// The runtime an executor's tasks run in: its memory pool and spill directory.
pub struct ExecutorMemory {
    pub budget: MemoryBudget,
    pub runtime: Arc<RuntimeEnv>,
    peak: Arc<PeakRecordingPool>,
}

impl ExecutorMemory {
    /// A pool of `budget.pool` bytes shared fairly by the tasks running at once (each spilling
    /// operator may hold its share of what unspillable ones leave), naming its largest
    /// consumers when a request fails; spill files under `spill_dir` (emptied first: a
    /// restarted executor's old spill files are garbage).
    pub fn new(budget: MemoryBudget, spill_dir: &Path) -> Result<Self> {
        if spill_dir.exists() {
            std::fs::remove_dir_all(spill_dir).map_err(|e| {
                EngineError::Cluster(format!("emptying {}: {e}", spill_dir.display()))
            })?;
        }
        std::fs::create_dir_all(spill_dir)
            .map_err(|e| EngineError::Cluster(format!("creating {}: {e}", spill_dir.display())))?;
        let fair = FairSpillPool::new(budget.pool as usize);
        let tracked: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            fair,
            NonZeroUsize::new(3).expect("non-zero"),
        ));
        let peak = Arc::new(PeakRecordingPool::new(tracked));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(peak.clone())
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![spill_dir.to_path_buf()])),
            )
            .build_arc()
            .map_err(|e| EngineError::Cluster(format!("building the task runtime: {e}")))?;
        Ok(ExecutorMemory {
            budget,
            runtime,
            peak,
        })
    }

    /// The most the pool has held at once since the executor started.
    pub fn peak_pool_bytes(&self) -> u64 {
        self.peak.peak_reserved() as u64
    }

    /// A task's failure to get memory, said the way a user can act on: the operator and the
    /// amount it asked for (DataFusion's text), the pool and `--memory-mb`.
    pub fn describe_exhausted(&self, e: &DataFusionError) -> Option<String> {
        let inner = exhausted(e)?;
        Some(format!(
            "out of executor memory: {inner} (the executor's memory pool is {}, a quarter of \
             --memory-mb {}, shared by the tasks running at once; raise --memory-mb or lower \
             --slots)",
            bytesize::ByteSize::b(self.budget.pool).display().iec(),
            self.budget.total >> 20
        ))
    }
}

/// DataFusion's "resources exhausted" text, wherever it is wrapped.
fn exhausted(e: &DataFusionError) -> Option<String> {
    match e {
        DataFusionError::ResourcesExhausted(text) => Some(text.clone()),
        DataFusionError::External(inner) => {
            inner.downcast_ref::<DataFusionError>().and_then(exhausted)
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            exhausted(inner)
        }
        DataFusionError::Shared(inner) => exhausted(inner),
        _ => None,
    }
}

/// Bytes and files the operators of `plan` (and its inputs) spilled for `partition` (each task
/// runs its own copy of its stage's plan).
pub fn spilled(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut files = 0u64;
    if let Some(metrics) = plan.metrics() {
        for m in metrics.iter() {
            if m.partition() != Some(partition) {
                continue;
            }
            match m.value() {
                MetricValue::SpilledBytes(c) => bytes += c.value() as u64,
                MetricValue::SpillCount(c) => files += c.value() as u64,
                _ => {}
            }
        }
    }
    for child in plan.children() {
        let (b, f) = spilled(child, partition);
        bytes += b;
        files += f;
    }
    (bytes, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn the_pool_is_a_quarter_of_the_executor_and_says_who_asked_for_too_much() {
        let budget = MemoryBudget::of(128 << 20);
        assert_eq!(budget.pool, 32 << 20);
        assert_eq!(budget.block_cache, 32 << 20);
        assert_eq!(MemoryBudget::of(1 << 20).pool, MIN_POOL_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let memory = ExecutorMemory::new(budget, &dir.path().join("spill")).unwrap();
        let pool = memory.runtime.memory_pool.clone();
        let hog = MemoryConsumer::new("GroupedHashAggregateStream[3]")
            .with_can_spill(true)
            .register(&pool);
        hog.try_grow(20 << 20).unwrap();
        let e = hog.try_grow(20 << 20).unwrap_err();
        let text = memory.describe_exhausted(&e).unwrap();
        assert!(
            text.contains("GroupedHashAggregateStream[3]")
                && text.contains("pool is 32.0 MiB, a quarter of --memory-mb 128"),
            "{text}"
        );
        drop(hog);
        assert_eq!(memory.peak_pool_bytes(), 20 << 20);
        assert!(memory
            .describe_exhausted(&DataFusionError::Plan("x".into()))
            .is_none());
    }
}
