//! The driver's side of the cluster: accepting executors, talking to them, and (in `local`
//! mode) owning their processes.
//!
//! Every executor connection becomes a stream of [`ClusterEvent`]s on one channel consumed by
//! the driver's event loop; messages to an executor go through its bounded queue and writer task.
//! A connection that sends a malformed frame is closed with a logged error; others are
//! unaffected.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_net::{ClusterEndpoint, FrameReader, FrameWriter, DEFAULT_MAX_FRAME_BYTES};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::run_dir::RunDir;
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

/// The processes and endpoint of a run's cluster.
pub(crate) struct Cluster {
    pub(crate) endpoint: ClusterEndpoint,
    _listener: Listener,
    processes: Option<LocalProcesses>,
    /// Executors the job waits for before it starts.
    pub(crate) expected: usize,
    /// Local: the names of every executor it may run.
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
                let names: Vec<String> = (1..=(*max_executors).max(*executors))
                    .map(crate::protocol::local_executor_name)
                    .collect();
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
                    max_restarts: config.max_executor_restarts,
                };
                tracing::trace!(target: "sluice::latency", "driver starting executors");
                let processes = LocalProcesses::spawn(&spawn, &names[..*executors], events)
                    .map_err(|e| {
                        EngineError::Cluster(format!(
                            "spawning executors from {}: {e}",
                            config.program.display()
                        ))
                    })?;
                Ok(Self {
                    endpoint,
                    _listener: listener,
                    processes: Some(processes),
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
                let ca = ClusterCa::load_from_dir(cluster_dir)?;
                let identity = NodeIdentity::load_or_issue(cluster_dir, &ca, "driver")?;
                let endpoint =
                    ClusterEndpoint::bind(*listen, &ca, &identity, &TransportSettings::default())?;
                info!("driver listening on {}", endpoint.local_addr()?);
                let listener = Listener::start(endpoint.clone(), events);
                Ok(Self {
                    endpoint,
                    _listener: listener,
                    processes: None,
                    expected: *min_executors,
                    names: Vec::new(),
                })
            }
        }
    }

    /// Local: starts one more executor process (the first name not running); returns its
    /// name and pid, or `None` when every executor it may run is running (or standalone).
    pub(crate) fn start_executor(&mut self) -> Result<Option<(String, u32)>> {
        let Some(processes) = self.processes.as_mut() else {
            return Ok(None);
        };
        let Some(name) = self.names.iter().find(|n| !processes.is_alive(n)).cloned() else {
            return Ok(None);
        };
        let pid = processes
            .start(&name)
            .map_err(|e| EngineError::Cluster(format!("starting executor {name}: {e}")))?;
        Ok(Some((name, pid)))
    }

    /// Whether the executors are this driver's processes (`local`).
    pub(crate) fn is_local(&self) -> bool {
        self.processes.is_some()
    }

    /// Local: kills executor processes through their supervisors.
    pub(crate) fn killer(&self) -> Option<LocalKiller> {
        self.processes.as_ref().map(|p| p.killer.clone())
    }

    /// Local: waits for the executor processes to exit (they do on Shutdown; killed after a
    /// grace period). Then closes the endpoint.
    pub(crate) async fn shutdown(self) {
        tracing::trace!(target: "sluice::latency", "driver stopping executors");
        let local = self.is_local();
        if let Some(p) = self.processes {
            p.shutdown(Duration::from_secs(3)).await;
        }
        self.endpoint.close("driver exiting");
        if !local {
            // Let the close frames go out to standalone executors before the process exits.
            // They leave at once; waiting for the connections' draining period (three probe
            // timeouts, ~90 ms here) would only delay the exit.
            let _ = tokio::time::timeout(Duration::from_millis(5), self.endpoint.wait_idle()).await;
        }
    }
}

/// Executor processes spawned by the `local` cluster manager, each watched by a supervisor
/// that reports its exit and starts a replacement (bounded restarts with backoff). Dropping it
/// kills them.
pub struct LocalProcesses {
    watchers: JoinSet<()>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    killer: LocalKiller,
    spec: LocalSpawn,
    events: mpsc::Sender<ClusterEvent>,
    restarts: Arc<AtomicU32>,
    /// The names whose supervisor is running (a process, or a restart pending).
    alive: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// Asks the supervisor of a local executor to kill the process it holds. A request names the
/// pid the driver knows; the supervisor kills only if that is its live child, so a request
/// that arrives after the process exited (and was replaced, or its pid reused by another
/// process) kills nothing.
#[derive(Debug, Clone, Default)]
pub struct LocalKiller {
    requests: Arc<std::sync::Mutex<std::collections::HashMap<String, mpsc::UnboundedSender<u32>>>>,
}

impl LocalKiller {
    /// Kills executor `name` if its current process is `pid`.
    pub fn kill(&self, name: &str, pid: u32) {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = requests.get(name) {
            let _ = tx.send(pid);
        }
    }
}

/// Waits for `child` to exit, killing it when a request names its pid.
async fn wait_or_kill(
    child: &mut tokio::process::Child,
    requests: &mut mpsc::UnboundedReceiver<u32>,
) -> std::io::Result<std::process::ExitStatus> {
    loop {
        tokio::select! {
            status = child.wait() => return status,
            Some(pid) = requests.recv() => {
                if child.id() == Some(pid) {
                    let _ = child.start_kill();
                    return child.wait().await;
                }
            }
        }
    }
}

/// What to start a local executor with.
#[derive(Debug, Clone)]
pub struct LocalSpawn {
    /// The `sluice` binary.
    pub program: PathBuf,
    /// Driver control address.
    pub driver: std::net::SocketAddr,
    /// Directory with the CA and per-executor certificates.
    pub tls_dir: PathBuf,
    /// Work directory root; each executor gets its own subdirectory.
    pub work_dir: PathBuf,
    /// Slots per executor.
    pub slots: u32,
    /// Memory per executor in bytes.
    pub memory_bytes: u64,
    /// Restarts of lost executors, over all of them, before the cluster shrinks for good.
    pub max_restarts: u32,
}

/// First delay before restarting an executor that exited; doubles while it keeps exiting
/// soon after starting.
const RESTART_BACKOFF: Duration = Duration::from_millis(200);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// An executor that ran this long before exiting restarts after the first backoff again.
const RESTART_STABLE: Duration = Duration::from_secs(30);

impl LocalSpawn {
    fn command(&self, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg("executor")
            .arg("--driver")
            .arg(self.driver.to_string())
            .arg("--cluster-dir")
            .arg(&self.tls_dir)
            .arg("--name")
            .arg(name)
            .arg("--slots")
            .arg(self.slots.to_string())
            .arg("--memory-mb")
            .arg((self.memory_bytes / (1024 * 1024)).to_string())
            .arg("--work-dir")
            .arg(self.work_dir.join(name))
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            // Its own process group: a terminal's Ctrl-C reaches the driver only, which
            // stops gracefully and then stops its executors.
            .process_group(0);
        command
    }
}

impl LocalProcesses {
    /// Spawns `names.len()` executor processes; exits are reported as events and lost
    /// executors are restarted under the same name.
    pub fn spawn(
        spec: &LocalSpawn,
        names: &[String],
        events: mpsc::Sender<ClusterEvent>,
    ) -> std::io::Result<Self> {
        let mut processes = LocalProcesses {
            watchers: JoinSet::new(),
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            killer: LocalKiller::default(),
            spec: spec.clone(),
            events,
            restarts: Arc::new(AtomicU32::new(0)),
            alive: Default::default(),
        };
        for name in names {
            processes.start(name)?;
        }
        Ok(processes)
    }

    /// Starts executor `name` under a supervisor (dynamic allocation adds executors this way);
    /// returns its pid.
    pub fn start(&mut self, name: &str) -> std::io::Result<u32> {
        // The first start fails loudly; restarts report through events.
        let child = self.spec.command(name).spawn()?;
        let pid = child.id().unwrap_or(0);
        let (kill_tx, mut kill_rx) = mpsc::unbounded_channel();
        self.killer
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), kill_tx);
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        let spec = self.spec.clone();
        let events = self.events.clone();
        let name = name.to_string();
        let stopping = self.stopping.clone();
        let restarts = self.restarts.clone();
        let alive = self.alive.clone();
        self.watchers.spawn(async move {
            supervise(
                child,
                &spec,
                &name,
                &mut kill_rx,
                &events,
                &stopping,
                &restarts,
            )
            .await;
            alive
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
        });
        Ok(pid)
    }

    /// Whether executor `name` has a running supervisor.
    pub fn is_alive(&self, name: &str) -> bool {
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Waits up to `grace` for the processes to exit on their own, then kills the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.watchers.is_empty() {
            match tokio::time::timeout_at(deadline, self.watchers.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    // Aborting a watcher drops its Child, which kills the process (kill_on_drop).
                    self.watchers.abort_all();
                    while self.watchers.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}

/// Watches local executor `name`: reports each exit and restarts the process (bounded
/// restarts with backoff) unless it exited cleanly or the driver is stopping.
async fn supervise(
    mut child: tokio::process::Child,
    spec: &LocalSpawn,
    name: &str,
    kill_rx: &mut mpsc::UnboundedReceiver<u32>,
    events: &mpsc::Sender<ClusterEvent>,
    stopping: &std::sync::atomic::AtomicBool,
    restarts: &AtomicU32,
) {
    let delays = || {
        backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(RESTART_BACKOFF)
                .with_max_delay(RESTART_BACKOFF_MAX)
                .without_max_times(),
        )
    };
    let mut backoff = delays();
    loop {
        let started = std::time::Instant::now();
        let (status, clean) = match wait_or_kill(&mut child, kill_rx).await {
            Ok(s) => (describe_status(s), s.success()),
            Err(e) => (format!("could not be waited for: {e}"), false),
        };
        let _ = events
            .send(ClusterEvent::ProcessExited {
                name: name.to_string(),
                status: status.clone(),
            })
            .await;
        // A clean exit is the driver's Shutdown; the driver stopping ends it too.
        if clean || stopping.load(Ordering::Relaxed) || events.is_closed() {
            return;
        }
        if restarts.fetch_add(1, Ordering::Relaxed) >= spec.max_restarts {
            warn!(
                "{name} {status}; not restarted (--max-executor-restarts {} used)",
                spec.max_restarts
            );
            return;
        }
        if started.elapsed() > RESTART_STABLE {
            backoff = delays();
        }
        tokio::time::sleep(backoff.next().unwrap_or(RESTART_BACKOFF_MAX)).await;
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        match spec.command(name).spawn() {
            Ok(c) => {
                info!(
                    "{name} {status}; restarted it (pid {})",
                    c.id().unwrap_or(0)
                );
                child = c;
            }
            Err(e) => {
                warn!("{name} {status}; restarting it failed: {e}");
                return;
            }
        }
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

/// Writes the CA and one certificate per local executor into `dir` (keys mode 0600); returns the
/// CA and the driver's identity.
pub fn local_tls(
    dir: &Path,
    names: &[String],
) -> sluice_net::Result<(sluice_net::ClusterCa, sluice_net::NodeIdentity)> {
    let ca = sluice_net::ClusterCa::generate("local")?;
    // Local executors get certificates, not the CA key: only the driver can issue. The run
    // directory does not outlive the run: nothing to fsync.
    ca.without_key().write_to_dir(dir, false)?;
    for name in names {
        ca.issue(name)?.write_to_dir(dir, name, false)?;
    }
    let driver = ca.issue("driver")?;
    Ok((ca, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in executor program: writes its pid into its work directory, then sleeps.
    fn sleeper(dir: &Path) -> PathBuf {
        let program = dir.join("sleeper.sh");
        std::fs::write(
            &program,
            "#!/bin/sh\nprev=\nfor a; do [ \"$prev\" = --work-dir ] && mkdir -p \"$a\" && echo $$ > \"$a/pid\"; prev=$a; done\nexec sleep 30\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        program
    }

    #[tokio::test]
    async fn a_lost_executor_is_killed_through_its_handle_and_only_if_the_pid_is_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let spec = LocalSpawn {
            program: sleeper(dir.path()),
            driver: "127.0.0.1:9".parse().unwrap(),
            tls_dir: dir.path().join("tls"),
            work_dir: dir.path().join("executors"),
            slots: 1,
            memory_bytes: 1 << 20,
            max_restarts: 0,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let processes = LocalProcesses::spawn(&spec, &["executor-1".to_string()], tx).unwrap();
        let pid_file = dir.path().join("executors/executor-1/pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the program did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // A pid that is not the supervisor's live child (a stale report) kills nothing.
        processes.killer.kill("executor-1", pid + 1);
        processes.killer.kill("executor-9", pid);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "a request for another pid ended the process"
        );
        processes.killer.kill("executor-1", pid);
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the process exits")
            .expect("an event");
        match event {
            ClusterEvent::ProcessExited { name, status } => {
                assert_eq!(name, "executor-1");
                assert_eq!(status, "was killed by signal 9");
            }
            _ => panic!("unexpected event"),
        }
        processes.shutdown(Duration::from_secs(1)).await;
    }
}
