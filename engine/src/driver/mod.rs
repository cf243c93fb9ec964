//! The driver: turns a job into epochs, runs each on the executors, and commits it.
//!
//! For every epoch the driver
//! 1. decides what it reads (file splits, Kafka ranges) and records that in `offsets/N`
//!    *before* any work, or — on restart — reads back exactly what was recorded;
//! 2. schedules the query's cached stage DAG as tasks on executors ([`scheduler`]);
//! 3. commits: the sink publishes the epoch's staged files (recorded first, so a crash
//!    mid-publish is completed on restart), then `commits/N` is written.
//!
//! What happens next is decided by the epoch lifecycle's decision core (`lifecycle`: pure,
//! unit-tested case by case) and performed by its async shell (`epoch::EpochRunner`); the
//! executors and the tasks they run are `tasks::Tasks`; what the user sees is reported as
//! [`Event`]s to a [`Reporter`].
//!
//! A bounded job is epoch 0 of its query through exactly this path. Running it again on the
//! same checkpoint finds epoch 0 committed and does nothing.

pub mod adaptive;
pub mod allocation;
pub mod cluster;
mod elastic;
mod epoch;
pub mod events;
pub mod inspect;
pub mod kubernetes;
mod layout;
mod lifecycle;
mod local;
mod outputs;
mod report;
mod run_dir;
pub mod scheduler;
mod signals;
mod sinks;
mod splits;
mod static_cache;
mod supervisor;
mod tasks;
mod watermark;

use epoch::EpochRunner;
pub use events::{Event, Reporter};
pub use report::{
    EpochInput, EpochOutcome, EpochProgress, EpochResult, ExecutorSummary, JobReport, Spread,
    StageProgress, Timings, Trigger,
};
use run_dir::RunDir;
pub use splits::assign_splits;
use tasks::Tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_checkpoint::{CheckpointStore, Epoch, QueryId};
use tokio::sync::mpsc;

use crate::error::{EngineError, Result};
use crate::job::Job;
use crate::protocol::ToExecutor;
use cluster::{Cluster, ClusterEvent};

/// How executors come to exist.
#[derive(Debug, Clone)]
pub enum ClusterMode {
    /// The driver spawns executor processes on this machine.
    Local {
        /// Executor processes to start with (the fewest, with dynamic allocation).
        executors: usize,
        /// The most executor processes (`--max-executors`); above `executors`, dynamic
        /// allocation starts and stops processes between epochs (see [`allocation`]).
        max_executors: usize,
        /// Task slots per executor.
        slots_per_executor: u32,
        /// Memory per executor in bytes.
        memory_bytes: u64,
    },
    /// Executors started elsewhere join the driver's address.
    Standalone {
        /// Address to listen on.
        listen: SocketAddr,
        /// Directory with `ca.crt` and `ca.key` (from `sluice cluster init`).
        cluster_dir: PathBuf,
        /// Executors that must register before the job starts.
        min_executors: usize,
        /// The most executors the query asks for (`--max-executors`); above `min_executors`,
        /// the driver reports how many it wants in its progress records and uses those that
        /// join.
        max_executors: usize,
        /// How long to wait for them.
        register_timeout: Duration,
    },
    /// The driver creates executor pods through the Kubernetes API.
    Kubernetes {
        /// Executor pods to start with (the fewest, with dynamic allocation).
        executors: usize,
        /// The most executor pods; dynamic allocation creates and deletes pods up to it.
        max_executors: usize,
        /// Task slots per executor (a CPU request each).
        slots_per_executor: u32,
        /// Memory per executor in bytes.
        memory_bytes: u64,
        /// Address to accept executors on.
        listen: SocketAddr,
        /// With `--k8s-secret`: the CA directory (the same secret, mounted).
        cluster_dir: Option<PathBuf>,
        options: Box<kubernetes::KubernetesOptions>,
    },
}

impl ClusterMode {
    /// Slots per executor when the driver starts its executors itself (local processes,
    /// Kubernetes pods); `None` when executors join on their own (standalone).
    pub fn managed_slots(&self) -> Option<u32> {
        match self {
            ClusterMode::Local {
                slots_per_executor, ..
            }
            | ClusterMode::Kubernetes {
                slots_per_executor, ..
            } => Some(*slots_per_executor),
            ClusterMode::Standalone { .. } => None,
        }
    }

    /// The fewest executors (those started, or waited for).
    pub fn min_executors(&self) -> usize {
        match self {
            ClusterMode::Local { executors, .. } | ClusterMode::Kubernetes { executors, .. } => {
                *executors
            }
            ClusterMode::Standalone { min_executors, .. } => *min_executors,
        }
    }

    /// The most executors dynamic allocation may use.
    pub fn max_executors(&self) -> usize {
        match self {
            ClusterMode::Local {
                executors,
                max_executors,
                ..
            }
            | ClusterMode::Kubernetes {
                executors,
                max_executors,
                ..
            } => (*max_executors).max(*executors),
            ClusterMode::Standalone {
                min_executors,
                max_executors,
                ..
            } => (*max_executors).max(*min_executors),
        }
    }
}

/// How the driver runs a job.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The cluster manager.
    pub cluster: ClusterMode,
    /// Partitions per scan and shuffle; defaults to the cluster's total slots.
    pub parallelism: Option<usize>,
    /// Checkpoint directory; without one, a temporary checkpoint is used (the run is not
    /// resumable and a rerun writes its output again).
    pub checkpoint: Option<PathBuf>,
    /// Most rows the console sink prints.
    pub max_result_rows: usize,
    /// An executor silent for this long is lost.
    pub heartbeat_timeout: Duration,
    /// Task retry and speculation policy.
    pub limits: scheduler::SchedulerLimits,
    /// How long an epoch waits for executors when none is left.
    pub executor_wait: Duration,
    /// Local mode: restarts of lost executors before the cluster shrinks for good.
    pub max_executor_restarts: u32,
    /// Dynamic allocation's epoch counts (its executor bounds are the cluster's).
    pub allocation: allocation::AllocationTuning,
    /// Where local runs keep certificates and executor work directories (a temporary
    /// directory by default; removed at exit).
    pub work_dir: Option<PathBuf>,
    /// The `sluice` binary to spawn local executors from.
    pub program: PathBuf,
    /// When streaming epochs run (default: every second). Ignored by bounded jobs.
    pub trigger: Option<Trigger>,
    /// Epochs kept in the checkpoint's logs.
    pub retain_epochs: u64,
    /// fsync the offsets and commit logs (default); off trades power-loss safety for latency.
    pub fsync: bool,
    /// Run epochs on the trigger even when no source has new data.
    pub no_data_epochs: bool,
    /// After an epoch whose data moves the watermark past a held window's end, run the
    /// epoch that closes it at once (at most one per trigger interval), not at the next trigger.
    pub watermark_epochs: bool,
    /// Stop after this many epochs committed by this run.
    pub max_epochs: Option<u64>,
    /// A watermarked stream without new records for this long stops holding the query's
    /// watermark back (`None`: never idle).
    pub watermark_idle_timeout: Option<Duration>,
    /// Join sides reading a bounded table smaller than this are broadcast (0: never).
    pub broadcast_bytes: u64,
    /// Splitting skewed shuffle partitions and coalescing small ones.
    pub adaptive: adaptive::AdaptiveOptions,
}

/// Runs `job`: one epoch for a bounded job, epochs on the trigger for a streaming one.
/// What happens along the way is reported to `reporter`. Executors are torn down on every
/// exit path.
pub async fn run(job: Job, config: DriverConfig, reporter: Arc<dyn Reporter>) -> Result<JobReport> {
    let started = Instant::now();
    let run_dir = RunDir::create(config.work_dir.as_deref())?;
    // Executors first: their processes start up while the driver opens the checkpoint and
    // plans. (On an early return below they are killed with the cluster.)
    let (events_tx, events) = mpsc::channel::<ClusterEvent>(4096);
    let mut cluster = Cluster::start(&config, &run_dir, events_tx).await?;
    let checkpoint = match &config.checkpoint {
        Some(given) => sluice_checkpoint::Location::parse(&given.to_string_lossy())
            .map_err(sluice_checkpoint::CheckpointError::from)?,
        None => run_dir.path.join("checkpoint").into(),
    };
    let mut store = CheckpointStore::open_or_create(
        checkpoint,
        &job.fingerprint,
        &QueryId::new(uuid::Uuid::new_v4().simple().to_string()).map_err(EngineError::Internal)?,
    )?;
    // A temporary checkpoint is deleted when the run ends: fsyncing it would protect nothing.
    // (The sink's published files are fsynced either way.)
    let config = DriverConfig {
        fsync: config.fsync && config.checkpoint.is_some(),
        ..config
    };
    store.set_durable(config.fsync);
    let _lock = store.lock()?;
    let query_id = store.metadata().query_id.clone();
    store.write_job(&crate::job::check::JobRecord::of(&job))?;
    // A bounded job whose epoch 0 committed has nothing to do: decided before planning.
    if job.is_bounded() {
        let observed = lifecycle::Observed {
            log: store.epoch_log()?,
            publish_recorded: false,
        };
        let mut life = lifecycle::Lifecycle::new(lifecycle::Policy {
            bounded: true,
            trigger: None,
            max_epochs: None,
            no_data_epochs: false,
            watermark_epochs: false,
        });
        if let lifecycle::Action::Stop(lifecycle::Stop::AlreadyCommitted) =
            life.next(&observed, Instant::now())
        {
            let committed = store.read_commit(Epoch(0))?;
            return Ok(JobReport {
                epoch: Epoch(0),
                outcome: EpochOutcome::AlreadyCommitted,
                output_rows: committed.map(|c| c.output_rows).unwrap_or(0),
                timings: Timings {
                    total: started.elapsed(),
                    ..Default::default()
                },
                ..JobReport::empty(query_id)
            });
        }
    }

    let mut runner = EpochRunner {
        config: &config,
        store: &store,
        tasks: Tasks {
            config: &config,
            query_id: query_id.clone(),
            events,
            members: BTreeMap::new(),
            attempts: 0,
            placement: BTreeMap::new(),
            killer: cluster.killer(),
            lost: Vec::new(),
            running_epoch: 0,
            executors_reported: None,
            retiring: BTreeMap::new(),
            static_cache: Default::default(),
            adapted: Default::default(),
            store_retries: 0,
            driver_store_retries: 0,
            reporter: reporter.clone(),
        },
        committer: None,
        current: None,
        allocation: allocation::Allocation::new(allocation::AllocationPolicy {
            min: config.cluster.min_executors(),
            max: config.cluster.max_executors(),
            window: config.allocation.window,
            cooldown: config.allocation.cooldown,
            shrink_after: config.allocation.shrink_after,
            idle_fraction: f64::from(config.allocation.idle_percent) / 100.0,
            ..Default::default()
        }),
        wanted: None,
        starting: Vec::new(),
        bounded_elastic: None,
        reporter,
    };
    let result = runner.run(&job, &mut cluster, started).await;
    // Teardown, whatever happened.
    let members = &runner.tasks.members;
    for member in members.values() {
        let _ = member.sender.try_send(ToExecutor::ForgetQuery {
            query_id: query_id.clone(),
        });
        let _ = member.sender.try_send(ToExecutor::Shutdown {
            reason: "job finished".into(),
        });
    }
    let executors = members
        .values()
        .map(|m| ExecutorSummary {
            name: m.info.name.clone(),
            pid: m.info.pid,
            peak_rss_bytes: m.peak_rss_bytes,
        })
        .collect();
    let connections: Vec<quinn::Connection> =
        members.values().map(|m| m.connection.clone()).collect();
    let committer = runner.committer.take();
    let current = runner.current.take();
    drop(runner);
    // Standalone executors close their connection once they have the Shutdown; closing the
    // endpoint before that could drop the message, and such an executor would wait for a
    // driver that is not coming back. Local executors are waited for as processes instead.
    if !cluster.is_local() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for c in connections {
                c.closed().await;
            }
        })
        .await;
    }
    cluster.shutdown().await;
    if let (Err(_), Some(committer), Some(epoch)) = (&result, committer, current) {
        committer.abort(&query_id, epoch);
    }
    let mut report = result?;
    report.executors = executors;
    report.timings.total = started.elapsed();
    Ok(report)
}
