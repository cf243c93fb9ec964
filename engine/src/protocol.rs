//! Messages between driver and executors, and between executors (shuffle fetches).
//!
//! Control messages are serde types sent as postcard frames (`sluice_net::frame`); data (shuffle
//! partitions, query results) travels as Arrow IPC streams, never inside frames. Task
//! descriptors carry instructions — which splits to read, where upstream outputs live — never
//! the data itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::Epoch;
use sluice_connectors::{Split, WriterReceipt};

/// An executor's id, assigned by the driver at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExecutorId(pub u32);

impl std::fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A stage of a query's stage DAG (post-order: inputs have smaller ids; the last is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StageId(pub usize);

impl std::fmt::Display for StageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One attempt at running a task; unique within a driver's lifetime, so a late report from an
/// abandoned attempt is recognisable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId(pub u64);

/// A task: one partition of one stage in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    /// The stage.
    pub stage: StageId,
    /// The partition within the stage.
    pub partition: usize,
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.stage.0, self.partition)
    }
}

/// What an executor sends the driver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToDriver {
    /// First message on the control stream.
    Register(ExecutorInfo),
    /// Sent every heartbeat interval; its absence for too long marks the executor lost.
    Heartbeat(ExecutorMetrics),
    /// A task attempt finished.
    TaskFinished {
        attempt: AttemptId,
        outcome: TaskOutcome,
    },
}

/// The environment variable an executor reads its instance from: on Kubernetes, its pod's name
/// (set by the pod spec the driver makes), so a request to replace a lost executor never
/// deletes its replacement.
pub const POD_NAME_ENV: &str = "SLUICE_POD_NAME";

/// What an executor says about itself when it registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutorInfo {
    /// A name for logs and for matching local processes (`executor-1`).
    pub name: String,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Memory it may use, in bytes.
    pub memory_bytes: u64,
    /// Where other processes fetch its shuffle outputs.
    pub data_addr: SocketAddr,
    /// Its OS process id.
    pub pid: u32,
    /// The instance it runs as where the cluster manager names one: its pod on Kubernetes
    /// (empty otherwise). With the pid, it tells a replaced executor from its replacement.
    #[serde(default)]
    pub instance: String,
    /// Operator state partitions it holds in memory (for a restarted driver to send their
    /// tasks back to it).
    #[serde(default)]
    pub state: Vec<HeldState>,
}

/// A state partition an executor holds, and the epoch it is at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldState {
    /// The query.
    pub query_id: sluice_checkpoint::QueryId,
    /// The stateful operator.
    pub operator: u32,
    /// The partition.
    pub partition: u32,
    /// The epoch whose snapshot it holds.
    pub epoch: Option<Epoch>,
}

/// Resource use reported with each heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecutorMetrics {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: u64,
    /// Tasks running now.
    pub running_tasks: u32,
    /// Object-store requests of the executor process that failed transiently so far (network
    /// error, 5xx, 429; retried by the client), cumulative.
    #[serde(default)]
    pub store_retries: u64,
}

/// What the driver sends an executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToExecutor {
    /// Reply to `Register`.
    Registered { executor: ExecutorId },
    /// A query's stage plans, sent once per query and cached by the executor.
    InstallQuery(Box<QueryInstall>),
    /// Run one task attempt.
    RunTask(TaskDescriptor),
    /// Drop a query's cached plans and shuffle outputs.
    ForgetQuery {
        query_id: sluice_checkpoint::QueryId,
    },
    /// An epoch committed: drop its shuffle outputs (and any older epoch's), but those of the
    /// `keep` stages of the epochs named (a static table's scan, reused by later epochs).
    ForgetEpoch {
        query_id: sluice_checkpoint::QueryId,
        epoch: Epoch,
        #[serde(default)]
        keep: Vec<(Epoch, StageId)>,
    },
    /// Exit.
    Shutdown { reason: String },
    /// The driver declared this executor lost: fail fetches from it at once instead of waiting
    /// for a connection timeout.
    PeerLost {
        executor: ExecutorId,
        data_addr: std::net::SocketAddr,
    },
}

/// A query's stages as executors need them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryInstall {
    /// The query's id.
    pub query_id: sluice_checkpoint::QueryId,
    /// Every stage, in DAG order, each sink stage with its sink.
    pub stages: Vec<StageInstall>,
    /// Where stateful operators snapshot their state, when the query has any.
    pub state: Option<StateInstall>,
    /// The data addresses of the executors in the cluster when the query was installed: an
    /// executor connects to its peers ahead of the first shuffle read of a query with stages
    /// after the first.
    pub peers: Vec<std::net::SocketAddr>,
    /// The number of key groups hash shuffles and keyed state are divided into (a key's group
    /// is its hash modulo this; partition `p` of `P` holds a range of them, see
    /// [`sluice_checkpoint::state::KeyGroups`]). `None` for a checkpoint written before key
    /// groups: shuffles then send a key to its hash modulo the partition count.
    pub key_groups: Option<u32>,
}

/// Where a query's operator state is checkpointed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateInstall {
    /// `CHECKPOINT/state`: a directory every executor can reach, or an object-store URL
    /// (`s3://bucket/prefix/state`, reached with the executor's own `AWS_*` variables).
    pub location: String,
    /// Whether snapshots are fsynced.
    pub durable: bool,
}

/// One stage's plan and output kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInstall {
    /// The stage.
    pub stage: StageId,
    /// The stage's DataFusion physical plan, protobuf-encoded with Sluice's extension codec.
    pub plan: Vec<u8>,
    /// What the stage's tasks do with their output.
    pub output: StageOutput,
    /// Where its rows go, when it is a query's final stage writing a table (a statement set has
    /// one per `INSERT`).
    pub sink: Option<SinkInstall>,
}

/// What a stage does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageOutput {
    /// Hash-partition into `partitions` shuffle outputs (the plan's root is the
    /// `RepartitionExec` whose expressions decide the partition).
    Hash { partitions: usize },
    /// Keep the whole output as one shuffle output (read by a single downstream task).
    Gather,
    /// A query's final stage, writing to its sink.
    Sink,
    /// Final stage whose rows the driver fetches and prints.
    Result,
}

/// The sink of a query, as executors build it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkInstall {
    /// The sink.
    pub spec: sluice_connectors::SinkSpec,
    /// The sink stage's output schema (JSON-encoded).
    pub schema_json: String,
}

/// One task attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskDescriptor {
    /// This attempt's id.
    pub attempt: AttemptId,
    /// The query.
    pub query_id: sluice_checkpoint::QueryId,
    /// The epoch.
    pub epoch: Epoch,
    /// The task.
    pub task: TaskKey,
    /// For each table scanned in the stage: the splits of each scan partition.
    pub splits: BTreeMap<String, Vec<Vec<Split>>>,
    /// For each input stage: where each of its map outputs lives.
    pub inputs: BTreeMap<StageId, Vec<MapOutputLocation>>,
    /// The epoch's event-time watermark, in milliseconds.
    pub watermark_ms: Option<i64>,
    /// The epoch's batch time (ms since the Unix epoch, recorded in `offsets/N`).
    #[serde(default)]
    pub batch_timestamp_ms: i64,
    /// The last committed epoch, whose snapshot stateful operators start from.
    pub restore: Option<Epoch>,
    /// The partition count `restore` was committed with, when this task's keyed state had
    /// another one then: the task rebuilds its partition from the old partitions holding its
    /// key groups.
    pub restore_partitions: Option<u32>,
    /// The plan partition the task runs when not its own: a slice of a skewed partition (an
    /// extra task of its stage) runs that partition's plan over part of its input.
    #[serde(default)]
    pub plan_partition: Option<usize>,
}

/// Where one upstream task's output lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutputLocation {
    /// The upstream task's partition.
    pub map_partition: usize,
    /// The executor holding it.
    pub executor: ExecutorId,
    /// That executor's data address.
    pub addr: SocketAddr,
    /// The epoch that wrote it when an earlier one (a static table's scan kept by the
    /// executor); `None`: the reading task's own epoch.
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// The output partition to read of it when not the reading task's own (a task that
    /// coalesces several small partitions reads each).
    #[serde(default)]
    pub reduce_partition: Option<usize>,
}

/// How a task attempt ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// Done; outputs are in place.
    Succeeded(Box<TaskReport>),
    /// Failed; `retryable` says whether another attempt may succeed.
    Failed { message: String, retryable: bool },
    /// An input could not be fetched: the output of `stage`/`map_partition` held by `executor`
    /// is gone or unreachable. The driver regenerates that output (lineage) and runs the task
    /// again; this does not count as the task's own failure.
    FetchFailed {
        stage: StageId,
        map_partition: usize,
        executor: ExecutorId,
        message: String,
    },
}

/// Metrics and outputs of a successful task.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskReport {
    /// Rows the task produced.
    pub output_rows: u64,
    /// Rows per shuffle output partition (shuffle stages).
    pub partition_rows: Vec<u64>,
    /// Bytes (Arrow IPC, as stored) per shuffle output partition (shuffle stages).
    #[serde(default)]
    pub partition_bytes: Vec<u64>,
    /// What the sink writer staged (sink stages).
    pub receipt: Option<WriterReceipt>,
    /// Wall time of the task in microseconds.
    pub elapsed_us: u64,
    /// The executor's peak resident set size when the task finished (bytes); heartbeats alone
    /// would miss the peak of a short job.
    pub peak_rss_bytes: u64,
    /// What the task's scans read and set aside.
    pub read: sluice_connectors::ReadCounters,
    /// What the task's stateful operators did.
    pub state: Vec<OperatorStateMetrics>,
    /// The executor's transient object-store failures so far, cumulative (as in heartbeats).
    #[serde(default)]
    pub store_retries: u64,
    /// Bytes and files the task's operators spilled to the executor's disk.
    #[serde(default)]
    pub spilled_bytes: u64,
    #[serde(default)]
    pub spill_files: u64,
    /// The most the executor's memory pool has held at once so far (bytes).
    #[serde(default)]
    pub peak_pool_bytes: u64,
    /// Set by the driver for a task it did not run because an earlier epoch's output of it is
    /// still on its executor (a static table's scan): that epoch.
    #[serde(default)]
    pub cached_from: Option<Epoch>,
}

/// First frame on a data stream: which shuffle output to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The query.
    pub query_id: sluice_checkpoint::QueryId,
    /// The epoch.
    pub epoch: Epoch,
    /// The producing stage.
    pub stage: StageId,
    /// The producing task's partition.
    pub map_partition: usize,
    /// The shuffle output partition.
    pub reduce_partition: usize,
}

/// Reply frame to a [`FetchRequest`]; `Data` is followed by an Arrow IPC stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchResponse {
    /// The output follows as an Arrow IPC stream.
    Data,
    /// The task produced no rows for that partition.
    Empty,
    /// The output is not here (lost, or never produced).
    Missing { message: String },
}

/// One stateful operator partition's work in one epoch (summed per operator in progress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStateMetrics {
    /// The operator.
    pub operator: u32,
    /// Keys held after the epoch (RocksDB's estimate).
    pub rows_total: u64,
    /// Keys written this epoch.
    pub rows_updated: u64,
    /// Keys removed (closed windows).
    pub rows_evicted: u64,
    /// Bytes of SST files the snapshot references.
    pub state_bytes: u64,
    /// Bytes uploaded by the snapshot.
    pub snapshot_uploaded_bytes: u64,
    /// Snapshot time (flush, checkpoint, upload), microseconds.
    pub snapshot_us: u64,
    /// Time to read, merge and write state, microseconds.
    pub update_us: u64,
    /// Partitions restored from the checkpoint this epoch (their instance was not in memory
    /// on the executor that ran them: moved, recovered, or a fresh executor).
    #[serde(default)]
    pub restored_partitions: u64,
    /// The least watermark (ms since the Unix epoch) at which the operator would close a window
    /// it holds after the epoch: the next window end it waits for. `None`: nothing waits for
    /// the watermark (no windows held, or not a windowed operator).
    #[serde(default)]
    pub next_close_ms: Option<i64>,
}

impl OperatorStateMetrics {
    /// Adds another partition's numbers.
    pub fn add(&mut self, o: &OperatorStateMetrics) {
        self.rows_total += o.rows_total;
        self.rows_updated += o.rows_updated;
        self.rows_evicted += o.rows_evicted;
        self.state_bytes += o.state_bytes;
        self.snapshot_uploaded_bytes += o.snapshot_uploaded_bytes;
        self.snapshot_us = self.snapshot_us.max(o.snapshot_us);
        self.update_us = self.update_us.max(o.update_us);
        self.restored_partitions += o.restored_partitions;
        self.next_close_ms = match (self.next_close_ms, o.next_close_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The name of the `index`th executor the `local` cluster manager starts (1-based).
pub fn local_executor_name(index: usize) -> String {
    format!("executor-{index}")
}
