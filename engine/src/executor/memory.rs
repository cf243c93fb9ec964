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
//! executor's peak RSS was about 90 MiB plus 2.4 times what its spilling aggregation held.
//! Hence the division: RocksDB's block cache a quarter (memtables are charged to it); the pool
//! half, of which the operators that spill (aggregations, sorts) may together hold a quarter of
//! the executor's memory, so that what they hold unaccounted stays within it, while an
//! operator that cannot spill (a hash join's build side, whose memory is mostly its accounted
//! batches) may use the whole pool.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};

use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, PeakRecordingPool,
    TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};
use datafusion::error::Result as DfResult;

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
    /// DataFusion's pool: what aggregations, joins and sorts may hold.
    pub pool: u64,
    /// The part of the pool the operators that spill (aggregations, sorts) may hold together
    /// before they spill.
    pub spill: u64,
}

impl MemoryBudget {
    /// The division of `total` bytes: a quarter for RocksDB, half for the pool (a quarter of
    /// `total` for spilling operators), the rest in reserve.
    pub fn of(total: u64) -> Self {
        MemoryBudget {
            total,
            block_cache: (total / 4).max(8 << 20),
            write_buffers: (total / 16).max(4 << 20),
            pool: (total / 2).max(MIN_POOL_BYTES),
            spill: (total / 4).max(MIN_POOL_BYTES),
        }
    }
}

/// DataFusion's fair spill pool, in which the spilling consumers together hold at most
/// `spill` bytes, each an equal share of it (as the fair pool shares its whole size).
#[derive(Debug)]
struct SpillCappedPool {
    inner: FairSpillPool,
    spill: usize,
    spilling_consumers: Mutex<usize>,
}

impl fmt::Display for SpillCappedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, spilling operators within {}",
            self.inner,
            bytesize::ByteSize::b(self.spill as u64).display().iec()
        )
    }
}

impl MemoryPool for SpillCappedPool {
    fn name(&self) -> &str {
        "fair_spill_capped"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer);
        if consumer.can_spill() {
            *self
                .spilling_consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner()) += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer);
        if consumer.can_spill() {
            let mut n = self
                .spilling_consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *n = n.saturating_sub(1);
        }
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if reservation.consumer().can_spill() {
            let n = (*self
                .spilling_consumers
                .lock()
                .unwrap_or_else(|p| p.into_inner()))
            .max(1);
            let share = self.spill / n;
            if reservation.size() + additional > share {
                let size = |b: usize| bytesize::ByteSize::b(b as u64).display().iec().to_string();
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "Failed to allocate additional {} for {} with {} already allocated for this \
                     reservation - {} is this operator's share of the {} spilling operators may \
                     hold ({n} of them)",
                    size(additional),
                    reservation.consumer().name(),
                    size(reservation.size()),
                    size(share),
                    size(self.spill),
                )));
            }
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
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
        let fair = SpillCappedPool {
            inner: FairSpillPool::new(budget.pool as usize),
            spill: budget.spill as usize,
            spilling_consumers: Mutex::new(0),
        };
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
            "out of executor memory: {inner} (the executor's memory pool is {}, half of \
             --memory-mb {}, of which operators that spill may hold {}; shared by the tasks \
             running at once; raise --memory-mb or lower --slots)",
            bytesize::ByteSize::b(self.budget.pool).display().iec(),
            self.budget.total >> 20,
            bytesize::ByteSize::b(self.budget.spill).display().iec(),
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
    fn spilling_operators_share_a_quarter_and_a_join_may_use_half() {
        let budget = MemoryBudget::of(128 << 20);
        assert_eq!(budget.pool, 64 << 20);
        assert_eq!(budget.spill, 32 << 20);
        assert_eq!(budget.block_cache, 32 << 20);
        assert_eq!(MemoryBudget::of(1 << 20).spill, MIN_POOL_BYTES);
        let dir = tempfile::tempdir().unwrap();
        let memory = ExecutorMemory::new(budget, &dir.path().join("spill")).unwrap();
        let pool = memory.runtime.memory_pool.clone();

        // Two aggregations: 16 MiB each at most (half of the spilling quarter).
        let hog = MemoryConsumer::new("GroupedHashAggregateStream[3]")
            .with_can_spill(true)
            .register(&pool);
        let other = MemoryConsumer::new("GroupedHashAggregateStream[4]")
            .with_can_spill(true)
            .register(&pool);
        hog.try_grow(16 << 20).unwrap();
        let e = hog.try_grow(1 << 20).unwrap_err();
        let text = memory.describe_exhausted(&e).unwrap();
        assert!(
            text.contains("GroupedHashAggregateStream[3]")
                && text.contains("16.0 MiB is this operator's share of the 32.0 MiB")
                && text.contains(
                    "pool is 64.0 MiB, half of --memory-mb 128, of which operators that spill \
                     may hold 32.0 MiB"
                ),
            "{text}"
        );
        other.try_grow(16 << 20).unwrap();
        drop(other);
        // Alone, an aggregation may hold the whole quarter.
        hog.try_grow(16 << 20).unwrap();
        drop(hog);

        // A hash join's build side cannot spill: it may use the whole pool.
        let join = MemoryConsumer::new("HashJoinInput[0]").register(&pool);
        join.try_grow(60 << 20).unwrap();
        let e = join.try_grow(8 << 20).unwrap_err();
        assert!(memory
            .describe_exhausted(&e)
            .unwrap()
            .contains("HashJoinInput[0]"));
        drop(join);
        assert_eq!(memory.peak_pool_bytes(), 60 << 20);
        assert!(memory
            .describe_exhausted(&DataFusionError::Plan("x".into()))
            .is_none());
    }
}
