//! The executor process: registers with a driver, runs the tasks it is sent, serves its shuffle
//! outputs to peers, and exits when the driver goes away.
//!
//! Two runtimes: a small one for network I/O (control stream, heartbeats, shuffle serving and
//! fetching) and a compute runtime with one worker per slot where operators run, so a busy
//! operator never delays a heartbeat.

pub mod memory;
mod plan_check;
pub mod task;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec;
use sluice_net::{
    ClusterCa, ClusterEndpoint, FrameReader, FrameWriter, NodeIdentity, TransportSettings,
    DEFAULT_MAX_FRAME_BYTES,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, trace, warn};

use crate::error::{EngineError, Result};
use crate::operator::codec::SluiceCodec;
use crate::operator::nodes::schema_from_json;
use crate::operator::session_config;
use crate::protocol::{ExecutorInfo, ExecutorMetrics, QueryInstall, ToDriver, ToExecutor};
use crate::shuffle::{serve_connection, Fetcher, ShuffleClient, ShuffleStore};
use task::{InstalledQuery, TaskEnv};

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The driver's control address.
    pub driver: SocketAddr,
    /// Directory with `ca.crt` and either `ca.key` or this executor's own `NAME.crt`/`NAME.key`.
    pub cluster_dir: PathBuf,
    /// Name for logs and certificates.
    pub name: String,
    /// Tasks run at once (compute threads).
    pub slots: u32,
    /// Memory this executor may use, in bytes (reported to the driver).
    pub memory_bytes: u64,
    /// Where shuffle outputs are kept.
    pub work_dir: PathBuf,
    /// Address to bind the data endpoint on (port 0 picks one).
    pub bind: SocketAddr,
    /// Address peers should use to reach the data endpoint; defaults to the address this
    /// executor uses to reach the driver.
    pub advertise: Option<IpAddr>,
    /// Interval between heartbeats.
    pub heartbeat_interval: Duration,
    /// Local mode: the driver's pid; the executor exits as soon as that process is gone.
    pub parent_pid: Option<u32>,
    /// How long to keep trying to reach the driver at start-up.
    pub connect_timeout: Duration,
    /// How long a standalone executor waits for a lost driver to return (zero: exit at once).
    pub rejoin_timeout: Duration,
    /// Test hook: delay before every task (from `SLUICE_TEST_TASK_DELAY_MS`).
    pub task_delay: Option<Duration>,
}

/// Runs an executor until the driver shuts it down or is lost. Blocks the calling thread.
pub fn run(config: ExecutorConfig) -> Result<()> {
    trace!(target: "sluice::latency", "executor starting");
    let network = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-net")
        .enable_all()
        .build()
        .map_err(|e| EngineError::Cluster(format!("starting the network runtime: {e}")))?;
    let compute = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.slots.max(1) as usize)
        .thread_name("sluice-compute")
        .enable_all()
        .build()
        .map_err(|e| EngineError::Cluster(format!("starting the compute runtime: {e}")))?;
    let result = network.block_on(serve(
        config,
        compute.handle().clone(),
        network.handle().clone(),
    ));
    // Nothing runs on them any more that must finish (state is closed when `serve` returns);
    // the process exits next.
    compute.shutdown_background();
    network.shutdown_background();
    result
}

async fn serve(
    config: ExecutorConfig,
    compute: tokio::runtime::Handle,
    network: tokio::runtime::Handle,
) -> Result<()> {
    trace!(target: "sluice::latency", "executor runtimes built");
    let ca = ClusterCa::load_from_dir(&config.cluster_dir)?;
    let identity = NodeIdentity::load_or_issue(&config.cluster_dir, &ca, &config.name)?;
    let endpoint =
        ClusterEndpoint::bind(config.bind, &ca, &identity, &TransportSettings::default())?;
    trace!(target: "sluice::latency", "executor endpoint bound");
    // The executor's memory: a quarter for RocksDB's block cache (memtables are charged to
    // it), a quarter for DataFusion's pool, half in reserve (executor/memory.rs).
    let budget = memory::MemoryBudget::of(config.memory_bytes);
    let memory = Arc::new(memory::ExecutorMemory::new(
        budget,
        &config.work_dir.join("spill"),
    )?);
    // A map task's output files buffer a sixteenth of the executor's memory over its slots.
    let store = Arc::new(
        ShuffleStore::new(
            &config.work_dir,
            (budget.total / 16 / config.slots.max(1) as u64) as usize,
        )
        .map_err(|e| {
            EngineError::Cluster(format!("creating {}: {e}", config.work_dir.display()))
        })?,
    );

    let state_dir = config.work_dir.join("state");
    let state = sluice_checkpoint::state::StateBackend::new(
        &state_dir,
        sluice_checkpoint::state::StateConfig {
            block_cache_bytes: budget.block_cache as usize,
            write_buffer_bytes: budget.write_buffers as usize,
            ..Default::default()
        },
    )
    // A checkpoint error keeps its kind (and retryability); it names the path.
    .map_err(EngineError::Checkpoint)?;
    // Kept across driver sessions: a restarted driver's tasks reuse state open at the epoch
    // they restore from; anything newer is discarded when a task asks for an older epoch.
    let state = Arc::new(state);
    // Data plane: serve shuffle outputs to whoever in the cluster asks.
    let accept_endpoint = endpoint.clone();
    let accept_store = store.clone();
    let data_server = tokio::spawn(async move {
        while let Some(incoming) = accept_endpoint.accept().await {
            let store = accept_store.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => serve_connection(conn, store).await,
                    Err(e) => warn!("refused a data connection: {e}"),
                }
            });
        }
    });
    let _data_server = AbortOnDrop(data_server);

    let mut timeout = config.connect_timeout;
    let outcome = loop {
        trace!(target: "sluice::latency", "executor connecting");
        let conn = connect_with_retry(&endpoint, config.driver, timeout).await?;
        trace!(target: "sluice::latency", "executor connected");
        let held = Held {
            store: &store,
            state: &state,
            memory: &memory,
        };
        let outcome = session(
            &conn,
            &config,
            &endpoint,
            held,
            compute.clone(),
            network.clone(),
        )
        .await;
        // A driver that finished and closed its endpoint is a normal end, not an error.
        let outcome = match (outcome, conn.close_reason()) {
            (Err(_), Some(quinn::ConnectionError::ApplicationClosed(close)))
                if close.error_code == quinn::VarInt::from_u32(0) =>
            {
                info!("driver closed the connection");
                Ok(())
            }
            (other, _) => other,
        };
        match outcome {
            // A standalone executor outlives a lost driver and joins it again when it returns
            // (a restarted driver resumes its query from the checkpoint).
            Err(e) if config.parent_pid.is_none() && !config.rejoin_timeout.is_zero() => {
                warn!(
                    "{e}; waiting up to {}s for the driver to return",
                    config.rejoin_timeout.as_secs()
                );
                timeout = config.rejoin_timeout;
            }
            other => break other,
        }
    };
    endpoint.close("executor exiting");
    // A standalone executor lets its close frames leave before the process exits: the driver
    // waits for them (up to two seconds) before it tears its own endpoint down. They go out at
    // once; the connections' draining period need not pass. A local driver watches the
    // process itself.
    if config.parent_pid.is_none() {
        let _ = tokio::time::timeout(Duration::from_millis(20), endpoint.wait_idle()).await;
    }
    outcome
}

/// What an executor keeps across driver sessions: shuffle outputs, operator state, memory.
#[derive(Clone, Copy)]
struct Held<'a> {
    store: &'a Arc<ShuffleStore>,
    state: &'a Arc<sluice_checkpoint::state::StateBackend>,
    memory: &'a Arc<memory::ExecutorMemory>,
}

/// One registration with the driver: control loop until shutdown or loss.
async fn session(
    conn: &quinn::Connection,
    config: &ExecutorConfig,
    endpoint: &ClusterEndpoint,
    held: Held<'_>,
    compute: tokio::runtime::Handle,
    network: tokio::runtime::Handle,
) -> Result<()> {
    let Held {
        store,
        state,
        memory,
    } = held;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| EngineError::Net(e.into()))?;
    let mut writer = FrameWriter::<_, ToDriver>::new(send, DEFAULT_MAX_FRAME_BYTES);
    let mut reader = FrameReader::<_, ToExecutor>::new(recv, DEFAULT_MAX_FRAME_BYTES);
    let ip = advertised_ip(config, conn);
    let data_addr = SocketAddr::new(ip, endpoint.local_addr()?.port());
    writer
        .send(&ToDriver::Register(ExecutorInfo {
            name: config.name.clone(),
            slots: config.slots,
            memory_bytes: config.memory_bytes,
            data_addr,
            pid: std::process::id(),
            // The pod it runs in, on Kubernetes (set by the pod spec the driver makes).
            instance: std::env::var(crate::protocol::POD_NAME_ENV).unwrap_or_default(),
            state: state
                .held()
                .into_iter()
                .map(|(id, epoch)| crate::protocol::HeldState {
                    query_id: id.query_id,
                    operator: id.operator,
                    partition: id.partition,
                    epoch,
                })
                .collect(),
        }))
        .await?;
    let executor = match reader.expect().await? {
        ToExecutor::Registered { executor } => executor,
        other => {
            return Err(EngineError::Cluster(format!(
                "driver answered registration with {other:?}"
            )))
        }
    };
    info!(%executor, name = %config.name, %data_addr, "registered with driver {}", config.driver);

    // Everything sent to the driver goes through one bounded queue and one writer task.
    let (out_tx, mut out_rx) = mpsc::channel::<ToDriver>(1024);
    let writer_task = AbortOnDrop(tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if let Err(e) = writer.send(&msg).await {
                debug!("stopped sending to the driver: {e}");
                break;
            }
            if let ToDriver::TaskFinished { attempt, .. } = &msg {
                trace!(target: "sluice::latency", attempt = attempt.0, "report sent");
            }
        }
    }));
    let hb_tx = out_tx.clone();
    let interval = config.heartbeat_interval;
    let running = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hb_running = running.clone();
    let _heartbeats = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let (rss_bytes, peak_rss_bytes) = memory_usage();
            let metrics = ExecutorMetrics {
                rss_bytes,
                peak_rss_bytes,
                running_tasks: hb_running.load(std::sync::atomic::Ordering::Relaxed),
                store_retries: sluice_checkpoint::location::transient_failures(),
            };
            if hb_tx.send(ToDriver::Heartbeat(metrics)).await.is_err() {
                break;
            }
        }
    }));
    let parent_gone = async {
        match config.parent_pid {
            Some(pid) => loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                // SAFETY: kill with signal 0 only checks that the process exists.
                if unsafe { libc::kill(pid as i32, 0) } != 0 {
                    break;
                }
            },
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(parent_gone);

    let session = Arc::new(
        SessionStateBuilder::new_from_existing(stage_session())
            .with_runtime_env(memory.runtime.clone())
            .build(),
    );
    let client = Arc::new(ShuffleClient::new(
        endpoint.clone(),
        Some((executor, store.clone())),
        network,
    ));
    let env = TaskEnv {
        state: state.clone(),
        session: session.clone(),
        store: store.clone(),
        fetcher: Arc::new(Fetcher(client.clone())),
        delay: config.task_delay,
        executor: config.name.as_str().into(),
        memory: memory.clone(),
    };
    let mut queries: HashMap<sluice_checkpoint::QueryId, Arc<InstalledQuery>> = HashMap::new();
    // Why a query could not be installed, so its tasks fail with the cause.
    let mut install_errors: HashMap<sluice_checkpoint::QueryId, String> = HashMap::new();

    let outcome = loop {
        let msg = tokio::select! {
            msg = reader.recv() => msg,
            _ = &mut parent_gone => break Err(EngineError::Cluster("the driver process is gone; exiting".into())),
        };
        match msg {
            Ok(Some(ToExecutor::InstallQuery(install))) => {
                let id = install.query_id.clone();
                // Only a query with a shuffle reads from peers.
                if install.stages.len() > 1 {
                    let peers = install.peers.iter().copied().filter(|a| *a != data_addr);
                    client.connect_ahead(peers.collect());
                }
                match decode_query(&session, *install) {
                    Ok(q) => {
                        queries.insert(id, Arc::new(q));
                    }
                    Err(e) => {
                        error!("cannot install query {id}: {e}");
                        install_errors.insert(id, e.to_string());
                    }
                }
            }
            Ok(Some(ToExecutor::RunTask(task))) => {
                let attempt = task.attempt;
                trace!(target: "sluice::latency", attempt = attempt.0, "task received");
                let Some(query) = queries.get(&task.query_id).cloned() else {
                    let _ = out_tx
                        .send(ToDriver::TaskFinished {
                            attempt,
                            outcome: crate::protocol::TaskOutcome::Failed {
                                message: match install_errors.get(&task.query_id) {
                                    Some(e) => format!("the query could not be installed: {e}"),
                                    None => format!(
                                        "query {} is not installed on this executor",
                                        task.query_id
                                    ),
                                },
                                retryable: false,
                            },
                        })
                        .await;
                    continue;
                };
                let env = env.clone();
                let tx = out_tx.clone();
                let running = running.clone();
                running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                compute.spawn(async move {
                    trace!(target: "sluice::latency", attempt = attempt.0, "task started");
                    let outcome = task::run(env, query, task).await;
                    running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    trace!(target: "sluice::latency", attempt = attempt.0, "task done");
                    let _ = tx.send(ToDriver::TaskFinished { attempt, outcome }).await;
                });
            }
            Ok(Some(ToExecutor::ForgetQuery { query_id })) => {
                queries.remove(&query_id);
                install_errors.remove(&query_id);
                store.forget_query(&query_id);
            }
            Ok(Some(ToExecutor::ForgetEpoch {
                query_id,
                epoch,
                keep,
            })) => {
                store.forget_epochs(&query_id, epoch, &keep);
            }
            Ok(Some(ToExecutor::PeerLost {
                executor: peer,
                data_addr,
            })) => {
                info!(%peer, "the driver declared a peer lost");
                client.mark_lost(peer, Some(data_addr)).await;
            }
            Ok(Some(ToExecutor::Shutdown { reason })) => {
                info!("driver asked to shut down: {reason}");
                break Ok(());
            }
            Ok(Some(ToExecutor::Registered { .. })) => {
                warn!("ignoring a second registration reply")
            }
            // The driver finished the control stream: a deliberate end (a crashed driver cannot
            // finish it; its loss surfaces as an error or the idle timeout instead).
            Ok(None) => {
                info!("driver finished the control stream");
                break Ok(());
            }
            Err(e) => break Err(EngineError::Cluster(format!("lost the driver: {e}"))),
        }
    };
    drop(writer_task);
    for id in queries.keys() {
        store.forget_query(id);
    }
    outcome
}

/// The DataFusion session executors decode and run stage plans in.
pub fn stage_session() -> datafusion::execution::session_state::SessionState {
    SessionStateBuilder::new()
        .with_config(session_config(1))
        .with_default_features()
        .build()
}

/// Decodes one stage plan as an executor receives it (datafusion-proto with Sluice's codec for
/// its own operators). Bytes that are not a plan are an error, never a panic.
pub fn decode_stage_plan(
    session: &datafusion::execution::session_state::SessionState,
    bytes: &[u8],
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    let ctx = datafusion::execution::TaskContext::from(session);
    // datafusion-proto panics instead of failing on some nodes (an Avro scan without the `avro`
    // feature, found by the `stage_plan` fuzz target): bytes from a peer must be an error.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan_check::check(bytes).map_err(|why| {
            datafusion::error::DataFusionError::Plan(format!("malformed stage plan: {why}"))
        })?;
        physical_plan_from_bytes_with_extension_codec(bytes, &ctx, &SluiceCodec)
    }))
    .map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "decoder panicked".into());
        EngineError::Cluster(format!("malformed stage plan: {why}"))
    })?;
    Ok(decoded?)
}

fn decode_query(
    session: &datafusion::execution::session_state::SessionState,
    install: QueryInstall,
) -> Result<InstalledQuery> {
    let mut stages = HashMap::new();
    let mut sinks = HashMap::new();
    for stage in install.stages {
        let plan = decode_stage_plan(session, &stage.plan)?;
        stages.insert(stage.stage, (plan, stage.output));
        if let Some(sink) = &stage.sink {
            if let Some(writer) = sink.spec.writer(schema_from_json(&sink.schema_json)?)? {
                sinks.insert(stage.stage, writer);
            }
        }
    }
    let state = match install.state {
        Some(state) => Some((
            sluice_checkpoint::Location::parse(&state.location)
                .map_err(sluice_checkpoint::CheckpointError::from)?,
            state.durable,
        )),
        None => None,
    };
    Ok(InstalledQuery {
        stages,
        sinks,
        state,
        key_groups: install.key_groups,
    })
}

async fn connect_with_retry(
    endpoint: &ClusterEndpoint,
    driver: SocketAddr,
    timeout: Duration,
) -> Result<quinn::Connection> {
    use backon::Retryable;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .with_total_delay(Some(timeout));
    let connect = || endpoint.connect(driver);
    Ok(connect
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .notify(|e, _| warn!("cannot reach driver {driver} yet: {e}"))
        .await?)
}

/// The address peers should use for this executor's data endpoint: `--advertise`, else the
/// bound address when it is specific, else the source address the OS routes toward the driver
/// (a connected UDP socket reveals it without sending anything).
fn advertised_ip(config: &ExecutorConfig, conn: &quinn::Connection) -> IpAddr {
    if let Some(ip) = config.advertise {
        return ip;
    }
    if !config.bind.ip().is_unspecified() {
        return config.bind.ip();
    }
    if let Some(ip) = conn.local_ip().filter(|ip| !ip.is_unspecified()) {
        return ip;
    }
    let unspecified: SocketAddr = if config.driver.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid literal");
    std::net::UdpSocket::bind(unspecified)
        .and_then(|s| s.connect(config.driver).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(config.driver.ip())
}

/// Peak resident set size of this process, in bytes (one `getrusage` call: cheap enough to
/// report with every task).
pub fn peak_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given and touches nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: initialised by the successful call above (and zeroed before it).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024
}

/// Current and peak resident set size of this process, in bytes (Linux `/proc`).
pub fn memory_usage() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Aborts a spawned task when dropped, so no task outlives its owner.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
