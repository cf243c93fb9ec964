//! Supervision of the executors a cluster manager owns — local processes (`sluice run`) or
//! Kubernetes pods (`sluice driver --cluster-manager kubernetes`): each executor name has a
//! supervisor that starts it, reports every end as a [`ClusterEvent::ProcessExited`], ends it
//! when the driver declares it lost, and starts it again (restarts bounded over all executors,
//! with backoff) unless it exited cleanly or the driver is stopping.
//!
//! What differs between managers is behind [`Launch`] (start one executor) and [`Running`]
//! (wait for it, end it); the policy is here once.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::cluster::ClusterEvent;
use crate::protocol::ExecutorInfo;

/// First delay before restarting an executor that ended; doubles while it keeps ending soon
/// after starting.
const RESTART_BACKOFF: Duration = Duration::from_millis(200);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// An executor that ran this long before ending restarts after the first backoff again.
const RESTART_STABLE: Duration = Duration::from_secs(30);

/// How a cluster manager starts one executor.
pub(crate) trait Launch: Send + Sync + 'static {
    /// One started executor.
    type Running: Running;
    /// Starts executor `name` for the `attempt`-th time (0 first). The error says what failed.
    fn launch(
        &self,
        name: &str,
        attempt: u32,
    ) -> impl Future<Output = Result<Self::Running, String>> + Send;
    /// Removes what the executors leave behind once supervision has ended (pods, a secret).
    fn cleanup(&self) -> impl Future<Output = ()> + Send;
}

/// A started executor: a process or a pod.
pub(crate) trait Running: Send + 'static {
    /// How logs name this incarnation: `pid 1234`, `pod q-exec-2-1`.
    fn describe(&self) -> String;
    /// Whether the executor that registered with `info` is this incarnation (a request to end
    /// an executor that has already been replaced must not end its replacement).
    fn is(&self, info: &KillRequest) -> bool;
    /// Waits until it ends: how, and whether that was a clean exit (the driver's Shutdown).
    /// Cancel-safe: dropped and called again, it goes on waiting.
    fn wait(&mut self) -> impl Future<Output = (String, bool)> + Send;
    /// Ends it now and waits until it has ended.
    fn kill(&mut self) -> impl Future<Output = (String, bool)> + Send;
}

/// A request to end the executor that registered as `name` with this pid and instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRequest {
    /// The process id it reported.
    pub pid: u32,
    /// The instance it reported (its pod's name on Kubernetes; empty otherwise).
    pub instance: String,
}

/// Asks an executor's supervisor to end the incarnation that registered with the given info.
/// A request for an incarnation that has already ended (and was replaced, or whose pid was
/// reused by another process) ends nothing: supervisors compare it with the handle they hold.
#[derive(Debug, Clone, Default)]
pub struct ExecutorKiller {
    requests: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<KillRequest>>>>,
}

impl ExecutorKiller {
    /// Ends executor `info.name` if its current incarnation is the one that reported `info`.
    pub fn kill(&self, info: &ExecutorInfo) {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = requests.get(&info.name) {
            let _ = tx.send(KillRequest {
                pid: info.pid,
                instance: info.instance.clone(),
            });
        }
    }
}

/// The supervised executors of one cluster manager. Dropping it aborts the supervisors
/// (local processes are killed with their handles); [`Supervised::shutdown`] ends them in order.
pub(crate) struct Supervised<L: Launch> {
    launch: Arc<L>,
    supervisors: JoinSet<()>,
    stopping: Arc<AtomicBool>,
    pub(crate) killer: ExecutorKiller,
    events: mpsc::Sender<ClusterEvent>,
    restarts: Arc<AtomicU32>,
    max_restarts: u32,
    /// The names whose supervisor is running (an executor, or a restart pending).
    alive: Arc<Mutex<BTreeSet<String>>>,
}

impl<L: Launch> Supervised<L> {
    pub(crate) fn new(launch: L, max_restarts: u32, events: mpsc::Sender<ClusterEvent>) -> Self {
        Self {
            launch: Arc::new(launch),
            supervisors: JoinSet::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            killer: ExecutorKiller::default(),
            events,
            restarts: Arc::new(AtomicU32::new(0)),
            max_restarts,
            alive: Default::default(),
        }
    }

    /// Starts executor `name` under a supervisor (at start-up, and when dynamic allocation adds
    /// one); returns how its first incarnation is named (`pid 1234`, `pod q-exec-3-0`). The
    /// first start fails loudly; restarts report through events.
    pub(crate) async fn start(&mut self, name: &str) -> Result<String, String> {
        let running = self.launch.launch(name, 0).await?;
        let described = running.describe();
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
        let supervisor = Supervisor {
            launch: self.launch.clone(),
            name: name.to_string(),
            events: self.events.clone(),
            stopping: self.stopping.clone(),
            restarts: self.restarts.clone(),
            max_restarts: self.max_restarts,
        };
        let alive = self.alive.clone();
        let name = name.to_string();
        self.supervisors.spawn(async move {
            supervisor.run(running, &mut kill_rx).await;
            alive
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
        });
        Ok(described)
    }

    /// Whether executor `name` has a running supervisor.
    pub(crate) fn is_alive(&self, name: &str) -> bool {
        self.alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    /// Waits up to `grace` for the executors to exit on their own (they do on Shutdown), then
    /// ends the rest and removes what they left.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.supervisors.is_empty() {
            match tokio::time::timeout_at(deadline, self.supervisors.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    // Aborting a supervisor drops its handle: a local process is killed
                    // (kill_on_drop); pods are deleted by the cleanup below.
                    self.supervisors.abort_all();
                    while self.supervisors.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.launch.cleanup().await;
    }
}

/// The supervisor of one executor name.
struct Supervisor<L: Launch> {
    launch: Arc<L>,
    name: String,
    events: mpsc::Sender<ClusterEvent>,
    stopping: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    max_restarts: u32,
}

impl<L: Launch> Supervisor<L> {
    async fn run(&self, mut running: L::Running, kills: &mut mpsc::UnboundedReceiver<KillRequest>) {
        let delays = || {
            backon::BackoffBuilder::build(
                backon::ExponentialBuilder::default()
                    .with_min_delay(RESTART_BACKOFF)
                    .with_max_delay(RESTART_BACKOFF_MAX)
                    .without_max_times(),
            )
        };
        let mut backoff = delays();
        let mut attempt = 0;
        let name = &self.name;
        loop {
            let started = Instant::now();
            let (status, clean) = wait_or_kill(&mut running, kills).await;
            let _ = self
                .events
                .send(ClusterEvent::ProcessExited {
                    name: name.clone(),
                    status: status.clone(),
                })
                .await;
            // A clean exit is the driver's Shutdown; the driver stopping ends it too.
            if clean || self.stopping.load(Ordering::Relaxed) || self.events.is_closed() {
                return;
            }
            if started.elapsed() > RESTART_STABLE {
                backoff = delays();
            }
            // A replacement, retried (within the restart budget) while starting one fails:
            // an API server can refuse a pod for a moment.
            loop {
                if self.restarts.fetch_add(1, Ordering::Relaxed) >= self.max_restarts {
                    warn!(
                        "{name} {status}; not restarted (--max-executor-restarts {} used)",
                        self.max_restarts
                    );
                    return;
                }
                tokio::time::sleep(backoff.next().unwrap_or(RESTART_BACKOFF_MAX)).await;
                if self.stopping.load(Ordering::Relaxed) {
                    return;
                }
                attempt += 1;
                match self.launch.launch(name, attempt).await {
                    Ok(next) => {
                        info!("{name} {status}; restarted it ({})", next.describe());
                        running = next;
                        break;
                    }
                    Err(e) => warn!("{name} {status}; starting a replacement failed: {e}"),
                }
            }
        }
    }
}

/// Waits for `running` to end, ending it when a request names this incarnation.
async fn wait_or_kill<R: Running>(
    running: &mut R,
    kills: &mut mpsc::UnboundedReceiver<KillRequest>,
) -> (String, bool) {
    loop {
        let request = tokio::select! {
            ended = running.wait() => return ended,
            Some(request) = kills.recv() => request,
        };
        if running.is(&request) {
            return running.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts 0 and 2 succeed (0 ends at once, as a crashing executor), start 1 is refused.
    struct Flaky {
        calls: Arc<AtomicU32>,
    }

    struct Incarnation {
        attempt: u32,
    }

    impl Launch for Flaky {
        type Running = Incarnation;
        async fn launch(&self, _name: &str, attempt: u32) -> Result<Incarnation, String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if attempt == 1 {
                return Err("the API server refused the pod (503)".into());
            }
            Ok(Incarnation { attempt })
        }
        async fn cleanup(&self) {}
    }

    impl Running for Incarnation {
        fn describe(&self) -> String {
            format!("attempt {}", self.attempt)
        }
        fn is(&self, _: &KillRequest) -> bool {
            false
        }
        async fn wait(&mut self) -> (String, bool) {
            if self.attempt == 0 {
                return ("crashed".into(), false);
            }
            std::future::pending().await
        }
        async fn kill(&mut self) -> (String, bool) {
            ("killed".into(), false)
        }
    }

    #[tokio::test]
    async fn a_replacement_that_cannot_be_started_is_retried_within_the_budget() {
        let calls = Arc::new(AtomicU32::new(0));
        let (tx, mut rx) = mpsc::channel(8);
        let mut supervised = Supervised::new(
            Flaky {
                calls: calls.clone(),
            },
            5,
            tx,
        );
        assert_eq!(supervised.start("executor-1").await.unwrap(), "attempt 0");
        match rx.recv().await {
            Some(ClusterEvent::ProcessExited { name, status }) => {
                assert_eq!((name.as_str(), status.as_str()), ("executor-1", "crashed"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::Relaxed) < 3 {
            assert!(
                Instant::now() < deadline,
                "the refused start was not retried"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(supervised.is_alive("executor-1"));
        assert_eq!(supervised.restarts.load(Ordering::Relaxed), 2);
        supervised.shutdown(Duration::from_millis(50)).await;
    }
}
