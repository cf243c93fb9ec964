//! The driver's side of the cluster: accepting executors, talking to them, and (with the
//! `local` and `kubernetes` managers) owning their processes or pods.
//!
//! Every executor connection becomes a stream of [`ClusterEvent`]s on one channel consumed by
//! the driver's event loop; messages to an executor go through its bounded queue and writer task.
//! A connection that sends a malformed frame is closed with a logged error; others are
//! unaffected.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_net::{ClusterEndpoint, FrameReader, FrameWriter, DEFAULT_MAX_FRAME_BYTES};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::kubernetes::PodLaunch;
use super::local::{local_tls, LocalSpawn};
use super::run_dir::RunDir;
use super::supervisor::{ExecutorKiller, Supervised};
use super::{ClusterMode, DriverConfig};
use crate::error::{EngineError, Result};
use crate::protocol::{ExecutorId, ExecutorInfo, ToDriver, ToExecutor};
use sluice_net::{ClusterCa, NodeIdentity, TransportSettings};

/// How long a new connection may take to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that happened in the cluster.
#[derive(Debug)]
pub enum ClusterEvent {
    /// An executor registered.
    Registered {
        executor: ExecutorId,
        info: ExecutorInfo,
        sender: mpsc::Sender<ToExecutor>,
        /// Closed by the driver when it declares the executor lost, so a hung executor that
        /// wakes up finds itself fenced off.
        connection: quinn::Connection,
    },
    /// An executor sent a message.
    Message {
        executor: ExecutorId,
        message: ToDriver,
    },
    /// An executor's connection ended.
    Disconnected {
        executor: ExecutorId,
        reason: String,
    },
    /// A local executor process exited.
    ProcessExited { name: String, status: String },
}

/// Accepts executor connections on `endpoint` until dropped.
pub struct Listener {
    /// The accept loop; dropping the set aborts it.
    _accept: JoinSet<()>,
}

impl Listener {
    /// Starts accepting; events go to `events`.
    pub fn start(endpoint: ClusterEndpoint, events: mpsc::Sender<ClusterEvent>) -> Self {
        let next_id = Arc::new(AtomicU32::new(1));
        let mut accept = JoinSet::new();
        accept.spawn(async move {
            let mut connections = JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                let events = events.clone();
                let next_id = next_id.clone();
                connections.spawn(async move {
                    let remote = incoming.remote_address();
                    match incoming.await {
                        Ok(conn) => handle_connection(conn, events, next_id).await,
                        Err(e) => warn!("refused connection from {remote}: {e}"),
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { _accept: accept }
    }
}

async fn handle_connection(
    conn: quinn::Connection,
    events: mpsc::Sender<ClusterEvent>,
    next_id: Arc<AtomicU32>,
) {
    let remote = conn.remote_address();
    let (send, recv) = match tokio::time::timeout(REGISTER_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return warn!("connection from {remote} closed before registering: {e}"),
        Err(_) => {
            conn.close(quinn::VarInt::from_u32(1), b"no registration");
            return warn!("connection from {remote} did not register in time");
        }
    };
    let mut reader = FrameReader::<_, ToDriver>::new(recv, DEFAULT_MAX_FRAME_BYTES);
    let mut writer = FrameWriter::<_, ToExecutor>::new(send, DEFAULT_MAX_FRAME_BYTES);
    let info = match tokio::time::timeout(REGISTER_TIMEOUT, reader.recv()).await {
        Ok(Ok(Some(ToDriver::Register(info)))) => info,
        Ok(Ok(Some(other))) => {
            conn.close(quinn::VarInt::from_u32(1), b"expected Register");
            return warn!(
                "closing connection from {remote}: first message was {other:?}, not Register"
            );
        }
        Ok(Ok(None)) => return warn!("connection from {remote} closed before registering"),
        Ok(Err(e)) => {
            conn.close(quinn::VarInt::from_u32(2), b"malformed frame");
            return warn!("closing connection from {remote}: {e}");
        }
        Err(_) => {
            conn.close(quinn::VarInt::from_u32(1), b"no registration");
            return warn!("connection from {remote} did not register in time");
        }
    };
    let executor = ExecutorId(next_id.fetch_add(1, Ordering::Relaxed));
    if let Err(e) = writer.send(&ToExecutor::Registered { executor }).await {
        return warn!(
            "executor {} at {remote} vanished while registering: {e}",
            info.name
        );
    }
    info!(%executor, name = %info.name, slots = info.slots, data = %info.data_addr, "executor registered");
    let (tx, mut rx) = mpsc::channel::<ToExecutor>(1024);
    let writer_conn = conn.clone();
    // Owned by a JoinSet: dropping it aborts the writer.
    let mut writer_task = JoinSet::new();
    writer_task.spawn(async move {
        while let Some(msg) = rx.recv().await {
            let shutdown = matches!(msg, ToExecutor::Shutdown { .. });
            if writer.send(&msg).await.is_err() {
                break;
            }
            if let ToExecutor::RunTask(task) = &msg {
                tracing::trace!(target: "sluice::latency", attempt = task.attempt.0, "task written");
            }
            if shutdown {
                let _ = writer.get_mut().finish();
                let _ = tokio::time::timeout(Duration::from_secs(1), writer_conn.closed()).await;
                break;
            }
        }
    });
    if events
        .send(ClusterEvent::Registered {
            executor,
            info,
            sender: tx,
            connection: conn.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let reason = loop {
        match reader.recv().await {
            Ok(Some(message)) => {
                if let ToDriver::TaskFinished { attempt, .. } = &message {
                    tracing::trace!(target: "sluice::latency", attempt = attempt.0, "report received");
                }
                if events
                    .send(ClusterEvent::Message { executor, message })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => break "closed its control stream".to_string(),
            Err(sluice_net::NetError::MalformedFrame(m)) => {
                warn!(%executor, "closing executor connection: malformed frame: {m}");
                conn.close(quinn::VarInt::from_u32(2), b"malformed frame");
                break format!("sent a malformed frame ({m})");
            }
            Err(e) => break format!("connection lost ({e})"),
        }
    };
    drop(writer_task);
    let _ = events
        .send(ClusterEvent::Disconnected { executor, reason })
        .await;
}

/// The executors a driver owns, by cluster manager.
enum Owned {
    Local(Supervised<LocalSpawn>),
    Pods(Supervised<PodLaunch>),
}

/// The processes and endpoint of a run's cluster.
pub(crate) struct Cluster {
    pub(crate) endpoint: ClusterEndpoint,
    _listener: Listener,
    /// Local processes or pods; `None` for standalone executors (they join on their own).
    owned: Option<Owned>,
    /// Executors the job waits for before it starts.
    pub(crate) expected: usize,
    /// Local and Kubernetes: the names of every executor it may run.
    names: Vec<String>,
}

impl Cluster {
    pub(crate) async fn start(
        config: &DriverConfig,
        run_dir: &RunDir,
        events: mpsc::Sender<ClusterEvent>,
    ) -> Result<Self> {
        match &config.cluster {
            ClusterMode::Local {
                executors,
                max_executors,
                slots_per_executor,
                memory_bytes,
            } => {
                // Certificates for every executor dynamic allocation may start.
                let names = executor_names((*max_executors).max(*executors));
                let tls_dir = run_dir.path.join("tls");
                let (ca, identity) = local_tls(&tls_dir, &names)?;
                let endpoint = ClusterEndpoint::bind(
                    "127.0.0.1:0".parse().expect("valid"),
                    &ca,
                    &identity,
                    &TransportSettings::default(),
                )?;
                let listener = Listener::start(endpoint.clone(), events.clone());
                let spawn = LocalSpawn {
                    program: config.program.clone(),
                    driver: endpoint.local_addr()?,
                    tls_dir,
                    work_dir: run_dir.path.join("executors"),
                    slots: *slots_per_executor,
                    memory_bytes: *memory_bytes,
                };
                tracing::trace!(target: "sluice::latency", "driver starting executors");
                let mut processes = Supervised::new(spawn, config.max_executor_restarts, events);
                for name in &names[..*executors] {
                    processes.start(name).await.map_err(EngineError::Cluster)?;
                }
                Ok(Self {
                    endpoint,
                    _listener: listener,
                    owned: Some(Owned::Local(processes)),
                    expected: *executors,
                    names,
                })
            }
            ClusterMode::Kubernetes {
                executors,
                max_executors,
                slots_per_executor,
                memory_bytes,
                listen,
                cluster_dir,
                options,
            } => {
                let names = executor_names((*max_executors).max(*executors));
                // Certificates: from the user's secret (its CA directory mounted here), or new
                // ones the driver puts in a secret of its own.
                let tls_dir = run_dir.path.join("tls");
                let (ca, identity, own_tls) = match (&options.secret, cluster_dir) {
                    (Some(_), Some(dir)) => {
                        let (ca, identity) = driver_tls(dir)?;
                        (ca, identity, None)
                    }
                    (Some(secret), None) => {
                        return Err(EngineError::Config(format!(
                            "--k8s-secret {secret} needs --cluster-dir: the same `sluice \
                             cluster init` directory, mounted in the driver's pod"
                        )))
                    }
                    (None, _) => {
                        let (ca, identity) = local_tls(&tls_dir, &names)?;
                        (ca, identity, Some(tls_dir.as_path()))
                    }
                };
                let endpoint =
                    ClusterEndpoint::bind(*listen, &ca, &identity, &TransportSettings::default())?;
                let pods = PodLaunch::connect(
                    options,
                    endpoint.local_addr()?.port(),
                    *slots_per_executor,
                    memory_bytes / (1024 * 1024),
                    own_tls,
                )
                .await?;
                info!("driver listening on {}", endpoint.local_addr()?);
                let listener = Listener::start(endpoint.clone(), events.clone());
                let mut supervised = Supervised::new(pods, config.max_executor_restarts, events);
                for name in &names[..*executors] {
                    supervised.start(name).await.map_err(EngineError::Cluster)?;
                }
                Ok(Self {
                    endpoint,
                    _listener: listener,
                    owned: Some(Owned::Pods(supervised)),
                    expected: *executors,
                    names,
                })
            }
            ClusterMode::Standalone {
                listen,
                cluster_dir,
                min_executors,
                ..
            } => {
                let (ca, identity) = driver_tls(cluster_dir)?;
                let endpoint =
                    ClusterEndpoint::bind(*listen, &ca, &identity, &TransportSettings::default())?;
                info!("driver listening on {}", endpoint.local_addr()?);
                let listener = Listener::start(endpoint.clone(), events);
                Ok(Self {
                    endpoint,
                    _listener: listener,
                    owned: None,
                    expected: *min_executors,
                    names: Vec::new(),
                })
            }
        }
    }

    /// Local and Kubernetes: starts one more executor (the first name not running); returns
    /// its name and how it runs (`pid 1234`, `pod …`), or `None` when every executor it may
    /// run is running (or standalone).
    pub(crate) async fn start_executor(&mut self) -> Result<Option<(String, String)>> {
        let alive = |name: &String| match &self.owned {
            Some(Owned::Local(p)) => p.is_alive(name),
            Some(Owned::Pods(p)) => p.is_alive(name),
            None => true,
        };
        let Some(name) = self.names.iter().find(|n| !alive(n)).cloned() else {
            return Ok(None);
        };
        let started = match &mut self.owned {
            Some(Owned::Local(p)) => p.start(&name).await,
            Some(Owned::Pods(p)) => p.start(&name).await,
            None => return Ok(None),
        };
        let described =
            started.map_err(|e| EngineError::Cluster(format!("starting executor {name}: {e}")))?;
        Ok(Some((name, described)))
    }

    /// Whether the executors are this driver's own (local processes or pods), which it starts,
    /// stops and replaces.
    pub(crate) fn is_local(&self) -> bool {
        self.owned.is_some()
    }

    /// Local and Kubernetes: ends lost executors through their supervisors.
    pub(crate) fn killer(&self) -> Option<ExecutorKiller> {
        match &self.owned {
            Some(Owned::Local(p)) => Some(p.killer.clone()),
            Some(Owned::Pods(p)) => Some(p.killer.clone()),
            None => None,
        }
    }

    /// Waits for owned executors to exit (they do on Shutdown; ended after a grace period,
    /// pods deleted). Then closes the endpoint.
    pub(crate) async fn shutdown(self) {
        tracing::trace!(target: "sluice::latency", "driver stopping executors");
        let owned = self.owned.is_some();
        match self.owned {
            Some(Owned::Local(p)) => p.shutdown(Duration::from_secs(3)).await,
            Some(Owned::Pods(p)) => p.shutdown(Duration::from_secs(10)).await,
            None => {}
        }
        self.endpoint.close("driver exiting");
        if !owned {
            // Let the close frames go out to standalone executors before the process exits.
            // They leave at once; waiting for the connections' draining period (three probe
            // timeouts, ~90 ms here) would only delay the exit.
            let _ = tokio::time::timeout(Duration::from_millis(5), self.endpoint.wait_idle()).await;
        }
    }
}

/// The CA of a `sluice cluster init` directory and the driver's identity from it.
fn driver_tls(dir: &std::path::Path) -> Result<(ClusterCa, NodeIdentity)> {
    let ca = ClusterCa::load_from_dir(dir)?;
    let identity = NodeIdentity::load_or_issue(dir, &ca, "driver")?;
    Ok((ca, identity))
}

/// `executor-1` … `executor-N`.
fn executor_names(n: usize) -> Vec<String> {
    (1..=n).map(crate::protocol::local_executor_name).collect()
}
