//! The `kubernetes` cluster manager: the driver creates its executors as pods through the
//! Kubernetes API (kube-rs), owns them (owner references to the driver's pod, so deleting the
//! driver removes them), watches each one and replaces a pod that fails, is evicted or is
//! deleted — the supervision policy of [`super::supervisor`], as for local processes.
//!
//! Certificates reach the pods through a Secret: one the driver creates (the cluster CA
//! certificate and one certificate and key per executor name, never the CA key; owned by the
//! driver pod) or one the user names (a `sluice cluster init` directory, with its CA key, from
//! which executors issue their own).

pub mod objects;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tracing::{info, warn};

use super::supervisor::{KillRequest, Launch, Running};
use crate::error::{EngineError, Result};
pub use objects::POD_NAME_ENV;
use objects::{PodPlan, APP_LABEL};

/// The environment variable with the driver pod's IP (set from `status.podIP` in the driver's
/// pod spec): executors connect to it.
pub const POD_IP_ENV: &str = "SLUICE_POD_IP";

/// Options of the `kubernetes` cluster manager (`--k8s-*`).
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// Namespace for the executor pods (default: the client's: the driver pod's own, or the
    /// kubeconfig context's).
    pub namespace: Option<String>,
    /// The executor image (required unless the pod template's container names one).
    pub image: Option<String>,
    /// A pod template file (YAML or JSON) the executor pods refine.
    pub pod_template: Option<PathBuf>,
    pub service_account: Option<String>,
    pub node_selector: Vec<(String, String)>,
    /// Labels added to every pod and the secret.
    pub labels: Vec<(String, String)>,
    /// Environment variables set in executor containers.
    pub executor_env: Vec<(String, String)>,
    /// The driver's own pod (default: `$SLUICE_POD_NAME`): it owns what the driver creates.
    pub driver_pod: Option<String>,
    /// A secret holding a `sluice cluster init` directory; without one the driver creates one.
    pub secret: Option<String>,
    /// The host executors reach the driver at (default: `$SLUICE_POD_IP`, or the driver
    /// pod's IP).
    pub driver_host: Option<String>,
    /// The `sluice` binary in the image.
    pub program: String,
    /// Container memory above `--memory-mb` (default: 10 %, at least 384 MiB).
    pub memory_overhead_mb: Option<u64>,
    /// How long the job waits for its first executors (pods may need their image pulled).
    pub register_timeout: Duration,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            image: None,
            pod_template: None,
            service_account: None,
            node_selector: Vec::new(),
            labels: Vec::new(),
            executor_env: Vec::new(),
            driver_pod: None,
            secret: None,
            driver_host: None,
            program: "sluice".into(),
            memory_overhead_mb: None,
            register_timeout: Duration::from_secs(300),
        }
    }
}

fn k8s_err(what: &str, e: kube::Error) -> EngineError {
    EngineError::Cluster(format!("Kubernetes API: {what}: {e}"))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The executor pods of one driver: a connected client and what every pod shares.
pub(crate) struct PodLaunch {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    plan: PodPlan,
    /// The secret is the driver's own (deleted at the end, and with the driver's pod).
    own_secret: bool,
}

impl PodLaunch {
    /// Connects to the API server (kubeconfig, or the pod's service account), finds the
    /// driver's pod, and creates the certificate secret from the files in `own_tls` (without
    /// it, the user named a secret). `listen_port` is the port the driver accepts executors on.
    pub(crate) async fn connect(
        options: &KubernetesOptions,
        listen_port: u16,
        slots: u32,
        memory_mb: u64,
        own_tls: Option<&Path>,
    ) -> Result<Self> {
        let client = Client::try_default().await.map_err(|e| {
            EngineError::Cluster(format!(
                "connecting to the Kubernetes API: {e} (the driver uses $KUBECONFIG or \
                 ~/.kube/config, or the service account of the pod it runs in)"
            ))
        })?;
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(client, &namespace);
        let driver_pod = options
            .driver_pod
            .clone()
            .or_else(|| std::env::var(POD_NAME_ENV).ok().filter(|s| !s.is_empty()));
        let (app, owner, pod_ip) = match &driver_pod {
            Some(name) => {
                let pod = pods.get(name).await.map_err(|e| {
                    k8s_err(
                        &format!("reading the driver's pod {namespace}/{name} (--k8s-driver-pod)"),
                        e,
                    )
                })?;
                let uid = pod.metadata.uid.clone().ok_or_else(|| {
                    EngineError::Cluster(format!("the driver's pod {name} has no uid"))
                })?;
                let owner = OwnerReference {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: name.clone(),
                    uid,
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                };
                let ip = pod.status.and_then(|s| s.pod_ip);
                (name.clone(), Some(owner), ip)
            }
            None => {
                warn!(
                    "the driver does not run in a pod (no --k8s-driver-pod or ${POD_NAME_ENV}): \
                     its executor pods have no owner and are deleted when it stops, not if it \
                     is killed (`kubectl delete pod -l {APP_LABEL}=...`)"
                );
                (format!("sluice-{}", &random_hex()[..8]), None, None)
            }
        };
        let host = options
            .driver_host
            .clone()
            .or_else(|| std::env::var(POD_IP_ENV).ok().filter(|s| !s.is_empty()))
            .or(pod_ip)
            .ok_or_else(|| {
                EngineError::Cluster(
                    "no address for executors to reach the driver: give --k8s-driver-host \
                     (outside a cluster) or run the driver in a pod"
                        .into(),
                )
            })?;
        let template = match &options.pod_template {
            Some(path) => Some(read_template(path)?),
            None => None,
        };
        if options.image.is_none()
            && !template.as_ref().is_some_and(|t| {
                t.spec
                    .as_ref()
                    .is_some_and(|s| s.containers.iter().any(|c| c.image.is_some()))
            })
        {
            return Err(EngineError::Config(
                "the kubernetes cluster manager needs --k8s-image (or a pod template whose \
                 container names an image)"
                    .into(),
            ));
        }
        let secret = options
            .secret
            .clone()
            .unwrap_or_else(|| format!("{app}-tls"));
        let plan = PodPlan {
            app,
            run: random_hex()[..4].to_string(),
            namespace,
            owner,
            driver: format!("{host}:{listen_port}"),
            secret,
            slots,
            memory_mb,
            options: options.clone(),
            template,
        };
        if let Some(dir) = own_tls {
            let files = read_files(dir).map_err(|e| {
                EngineError::Cluster(format!("reading certificates in {}: {e}", dir.display()))
            })?;
            let object = plan.tls_secret(files);
            // A driver restarted in the same pod finds its earlier secret: the certificates
            // are new, so replace it.
            if let Err(e) = secrets.create(&PostParams::default(), &object).await {
                if !is_status(&e, 409) {
                    return Err(k8s_err(&format!("creating secret {}", plan.secret), e));
                }
                delete(&secrets, &plan.secret).await?;
                secrets
                    .create(&PostParams::default(), &object)
                    .await
                    .map_err(|e| k8s_err(&format!("creating secret {}", plan.secret), e))?;
            }
        }
        // Executors of an earlier driver container in this pod cannot join this one (their
        // certificates are from another CA): remove them.
        let stale = pods
            .list(&ListParams::default().labels(&plan.selector()))
            .await
            .map_err(|e| k8s_err("listing earlier executor pods", e))?;
        for pod in stale.items {
            if let Some(name) = pod.metadata.name {
                info!("deleting executor pod {name} of an earlier driver in this pod");
                delete(&pods, &name).await?;
            }
        }
        info!(
            namespace = %plan.namespace,
            app = %plan.app,
            secret = %plan.secret,
            "kubernetes cluster manager ready"
        );
        Ok(Self {
            pods,
            secrets,
            plan,
            own_secret: own_tls.is_some(),
        })
    }
}

/// Every file in `dir`, by name.
fn read_files(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let bytes = std::fs::read(entry.path())?;
        files.insert(entry.file_name().to_string_lossy().into_owned(), bytes);
    }
    Ok(files)
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Reads a pod template (YAML or JSON), naming the file on error.
fn read_template(path: &Path) -> Result<Pod> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EngineError::Config(format!("reading pod template {}: {e}", path.display()))
    })?;
    serde_saphyr::from_str(&text).map_err(|e| {
        EngineError::Config(format!("pod template {} is not a Pod: {e}", path.display()))
    })
}

/// Deletes `name` at once; one already gone is fine.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(k8s_err(&format!("deleting {name}"), e)),
    }
}

impl Launch for PodLaunch {
    type Running = RunningPod;

    async fn launch(&self, name: &str, attempt: u32) -> std::result::Result<RunningPod, String> {
        let pod = self.plan.executor_pod(name, attempt);
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| format!("creating pod {pod_name}: {e}"))?;
        // Watched from after its creation: an initial list without it means it is gone.
        let config = watcher::Config::default().fields(&format!("metadata.name={pod_name}"));
        let events = watcher(self.pods.clone(), config).default_backoff().boxed();
        Ok(RunningPod {
            pods: self.pods.clone(),
            name: pod_name,
            events,
            listed: false,
            waiting: None,
        })
    }

    async fn cleanup(&self) {
        let selector = self.plan.selector();
        match self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => {
                for pod in list.items {
                    if let Some(name) = pod.metadata.name {
                        if let Err(e) = delete(&self.pods, &name).await {
                            warn!("{e}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing executor pods to delete them: {e}"),
        }
        if self.own_secret {
            if let Err(e) = delete(&self.secrets, &self.plan.secret).await {
                warn!("{e}");
            }
        }
    }
}

/// One executor pod, followed through a watch of that pod alone.
pub(crate) struct RunningPod {
    pods: Api<Pod>,
    name: String,
    events: BoxStream<'static, watcher::Result<watcher::Event<Pod>>>,
    /// Whether the current (re)list has shown the pod.
    listed: bool,
    /// The last reason its container was waiting for (reported once each).
    waiting: Option<String>,
}

impl RunningPod {
    /// Whether `pod` has ended: how, and whether cleanly. Reports a new reason its container
    /// is waiting for.
    fn ended(&mut self, pod: &Pod) -> Option<(String, bool)> {
        let (ended, waiting) = pod_state(&self.name, pod);
        if waiting.is_some() && waiting != self.waiting {
            warn!(pod = %self.name, "executor pod is waiting: {}", waiting.as_deref().unwrap_or(""));
            self.waiting = waiting;
        }
        ended
    }
}

/// What a pod's status says: whether it has ended (how, and whether cleanly), and why its
/// container cannot start, if it cannot (`ErrImagePull: …`).
fn pod_state(name: &str, pod: &Pod) -> (Option<(String, bool)>, Option<String>) {
    let Some(status) = pod.status.as_ref() else {
        return (None, None);
    };
    let reason = status
        .reason
        .clone()
        .or_else(|| status.message.clone())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find_map(|w| {
            let reason = w.reason.clone()?;
            (reason != "ContainerCreating" && reason != "PodInitializing").then(|| {
                let message = w.message.as_ref().map(|m| format!(": {m}"));
                format!("{reason}{}", message.unwrap_or_default())
            })
        });
    let ended = match status.phase.as_deref() {
        Some("Succeeded") => Some((format!("pod {name} succeeded"), true)),
        Some("Failed") => Some((format!("pod {name} failed{reason}"), false)),
        _ => None,
    };
    (ended, waiting)
}

impl Running for RunningPod {
    fn describe(&self) -> String {
        format!("pod {}", self.name)
    }

    fn is(&self, request: &KillRequest) -> bool {
        request.instance == self.name
    }

    async fn wait(&mut self) -> (String, bool) {
        let ended = loop {
            let Some(event) = self.events.next().await else {
                break (format!("pod {}: its watch ended", self.name), false);
            };
            match event {
                Ok(watcher::Event::Init) => self.listed = false,
                Ok(watcher::Event::InitApply(pod)) | Ok(watcher::Event::Apply(pod)) => {
                    self.listed = true;
                    if let Some(ended) = self.ended(&pod) {
                        break ended;
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if !self.listed {
                        break (format!("pod {} is gone", self.name), false);
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    break (format!("pod {} was deleted", self.name), false)
                }
                // The watcher retries with backoff; say what failed.
                Err(e) => warn!(pod = %self.name, "watching executor pod: {e}"),
            }
        };
        // An ended pod is removed (its logs go with it: `kubectl logs` them before, or ship
        // them with the cluster's log collector).
        if let Err(e) = delete(&self.pods, &self.name).await {
            warn!("{e}");
        }
        ended
    }

    async fn kill(&mut self) -> (String, bool) {
        if let Err(e) = delete(&self.pods, &self.name).await {
            warn!("{e}");
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
            .unwrap()
    }

    #[test]
    fn an_evicted_pod_is_a_lost_executor_and_a_succeeded_one_a_clean_exit() {
        let evicted = pod(serde_json::json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        assert_eq!(
            pod_state("p", &evicted).0,
            Some(("pod p failed (Evicted)".to_string(), false))
        );
        let done = pod(serde_json::json!({"phase": "Succeeded"}));
        assert_eq!(
            pod_state("p", &done).0,
            Some(("pod p succeeded".to_string(), true))
        );
        let running = pod(serde_json::json!({"phase": "Running"}));
        assert_eq!(pod_state("p", &running), (None, None));
    }

    #[test]
    fn a_container_that_cannot_start_says_why() {
        let pulling = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "executor", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "x: not found"}}}]}),
        );
        assert_eq!(
            pod_state("p", &pulling),
            (None, Some("ErrImagePull: x: not found".to_string()))
        );
        let creating = pod(
            serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "executor", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_state("p", &creating), (None, None));
    }
}
