//! The Kubernetes objects the driver creates — executor pods and the certificate secret — built
//! from the options and an optional pod template, without talking to any API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    ResourceRequirements, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;

use super::KubernetesOptions;

/// The label every object of one driver carries (its value: the driver's application id).
pub const APP_LABEL: &str = "sluice.dev/app";
/// The label naming the executor a pod runs (`executor-2`).
pub const EXECUTOR_LABEL: &str = "sluice.dev/executor";
/// Where executors find the cluster certificates.
pub const TLS_MOUNT: &str = "/etc/sluice/tls";
/// Where executors keep shuffle outputs and spills (an `emptyDir`).
pub const WORK_MOUNT: &str = "/var/lib/sluice";
/// The container that runs the executor (a template's container of this name, or its first,
/// is the base).
pub const CONTAINER: &str = "executor";
pub use crate::protocol::POD_NAME_ENV;

/// What every executor pod of one driver shares.
#[derive(Debug, Clone)]
pub struct PodPlan {
    /// The driver's application id: its pod's name, or a generated `sluice-…` outside a cluster.
    pub app: String,
    /// A token of this driver process, in pod names: a driver restarted in the same pod
    /// names its pods anew while the earlier ones are still being deleted.
    pub run: String,
    pub namespace: String,
    /// The driver pod, when the driver runs in one: every object it creates is owned by it.
    pub owner: Option<OwnerReference>,
    /// The driver's control address as executors reach it (`HOST:PORT`).
    pub driver: String,
    /// The secret holding the certificates.
    pub secret: String,
    pub slots: u32,
    pub memory_mb: u64,
    /// The options and the pod template (parsed) they refine.
    pub options: KubernetesOptions,
    pub template: Option<Pod>,
}

/// The container memory limit for `memory_mb` of executor memory: Sluice's own accounting
/// covers the memory pool and RocksDB; the rest of the process (code, buffers, the allocator)
/// needs headroom, as Spark's `memoryOverhead` gives it: `overhead_mb`, or 10 % with 384 MiB at
/// least.
pub fn memory_limit_mb(memory_mb: u64, overhead_mb: Option<u64>) -> u64 {
    memory_mb + overhead_mb.unwrap_or_else(|| (memory_mb / 10).max(384))
}

/// The name of the `attempt`-th pod of `executor` (`APP-RUN-exec-2-0`): a DNS-1123 label of at
/// most 63 characters (the application id is cut first).
pub fn pod_name(app: &str, run: &str, executor: &str, attempt: u32) -> String {
    let suffix = format!("-{run}-{}-{attempt}", executor.replace("executor", "exec"));
    let room = 63usize.saturating_sub(suffix.len());
    let app: String = app.chars().take(room).collect();
    format!("{}{suffix}", app.trim_end_matches('-'))
}

impl PodPlan {
    /// The labels every object of this driver carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self.options.labels.iter().cloned().collect();
        labels.insert("app.kubernetes.io/name".into(), "sluice".into());
        labels.insert("app.kubernetes.io/component".into(), "executor".into());
        labels.insert(APP_LABEL.into(), self.app.clone());
        labels
    }

    /// The label selector matching this driver's pods.
    pub fn selector(&self) -> String {
        format!("{APP_LABEL}={}", self.app)
    }

    fn metadata(&self, name: String, mut labels: BTreeMap<String, String>) -> ObjectMeta {
        labels.extend(self.labels());
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..Default::default()
        }
    }

    /// The pod for the `attempt`-th start of executor `executor` (`executor-2`).
    pub fn executor_pod(&self, executor: &str, attempt: u32) -> Pod {
        let template = self.template.clone().unwrap_or_default();
        let template_meta = template.metadata;
        let mut spec = template.spec.unwrap_or_default();
        // The executor container: the template's `executor` container, or its first.
        let index = spec
            .containers
            .iter()
            .position(|c| c.name == CONTAINER)
            .unwrap_or(0);
        let mut container = if spec.containers.is_empty() {
            Container::default()
        } else {
            spec.containers.remove(index)
        };
        container.name = CONTAINER.into();
        if let Some(image) = &self.options.image {
            container.image = Some(image.clone());
        }
        container.command = Some(vec![self.options.program.clone()]);
        container.args = Some(vec![
            "executor".into(),
            "--driver".into(),
            self.driver.clone(),
            "--cluster-dir".into(),
            TLS_MOUNT.into(),
            "--name".into(),
            executor.into(),
            "--slots".into(),
            self.slots.to_string(),
            "--memory-mb".into(),
            self.memory_mb.to_string(),
            "--work-dir".into(),
            WORK_MOUNT.into(),
        ]);
        let mut env = container.env.take().unwrap_or_default();
        env.retain(|e| e.name != POD_NAME_ENV);
        env.push(EnvVar {
            name: POD_NAME_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        for (name, value) in &self.options.executor_env {
            env.retain(|e| &e.name != name);
            env.push(EnvVar {
                name: name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            });
        }
        container.env = Some(env);
        // Requests: a core per slot and the memory; limit: the memory and its overhead.
        let memory = Quantity(format!(
            "{}Mi",
            memory_limit_mb(self.memory_mb, self.options.memory_overhead_mb)
        ));
        let mut resources = container.resources.take().unwrap_or_default();
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        requests.insert("cpu".into(), Quantity(self.slots.to_string()));
        requests.insert("memory".into(), memory.clone());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert("memory".into(), memory);
        container.resources = Some(ResourceRequirements { ..resources });
        let mut mounts = container.volume_mounts.take().unwrap_or_default();
        mounts.retain(|m| m.mount_path != TLS_MOUNT && m.mount_path != WORK_MOUNT);
        mounts.push(VolumeMount {
            name: "sluice-tls".into(),
            mount_path: TLS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "sluice-work".into(),
            mount_path: WORK_MOUNT.into(),
            ..Default::default()
        });
        container.volume_mounts = Some(mounts);
        spec.containers.insert(0, container);

        let mut volumes = spec.volumes.take().unwrap_or_default();
        volumes.retain(|v| v.name != "sluice-tls" && v.name != "sluice-work");
        volumes.push(Volume {
            name: "sluice-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.secret.clone()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "sluice-work".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        spec.volumes = Some(volumes);
        // The supervisor replaces a lost executor; the kubelet must not restart it in place
        // (its state and shuffle outputs would be gone under the same name).
        spec.restart_policy = Some("Never".into());
        if let Some(account) = &self.options.service_account {
            spec.service_account_name = Some(account.clone());
        }
        if !self.options.node_selector.is_empty() {
            spec.node_selector
                .get_or_insert_with(BTreeMap::new)
                .extend(self.options.node_selector.iter().cloned());
        }

        let mut labels = template_meta.labels.unwrap_or_default();
        labels.insert(EXECUTOR_LABEL.into(), executor.into());
        let mut metadata = self.metadata(pod_name(&self.app, &self.run, executor, attempt), labels);
        metadata.annotations = template_meta.annotations;
        Pod {
            metadata,
            spec: Some(spec),
            status: None,
        }
    }

    /// The secret with the cluster CA certificate and each executor's certificate and key (not
    /// the CA key: only the driver issues).
    pub fn tls_secret(&self, files: BTreeMap<String, Vec<u8>>) -> Secret {
        let mut metadata = self.metadata(self.secret.clone(), BTreeMap::new());
        if let Some(l) = metadata.labels.as_mut() {
            l.insert("app.kubernetes.io/component".into(), "certificates".into());
        }
        Secret {
            metadata,
            data: Some(files.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(template: Option<&str>) -> PodPlan {
        PodPlan {
            app: "orders-driver".into(),
            run: "c0de".into(),
            namespace: "streams".into(),
            owner: Some(OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "orders-driver".into(),
                uid: "1234".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }),
            driver: "10.0.0.7:7077".into(),
            secret: "orders-driver-tls".into(),
            slots: 2,
            memory_mb: 2048,
            options: KubernetesOptions {
                image: Some("sluice:test".into()),
                labels: vec![("team".into(), "data".into())],
                node_selector: vec![("pool".into(), "streaming".into())],
                executor_env: vec![("AWS_REGION".into(), "eu-west-1".into())],
                service_account: Some("sluice-executor".into()),
                ..KubernetesOptions::default()
            },
            template: template.map(|t| serde_saphyr::from_str(t).unwrap()),
        }
    }

    #[test]
    fn an_executor_pod_has_its_command_resources_owner_labels_and_mounts() {
        let pod = plan(None).executor_pod("executor-2", 1);
        let json = serde_json::to_value(&pod).unwrap();
        assert_eq!(json["metadata"]["name"], "orders-driver-c0de-exec-2-1");
        assert_eq!(json["metadata"]["namespace"], "streams");
        assert_eq!(json["metadata"]["labels"][APP_LABEL], "orders-driver");
        assert_eq!(json["metadata"]["labels"][EXECUTOR_LABEL], "executor-2");
        assert_eq!(json["metadata"]["labels"]["team"], "data");
        assert_eq!(json["metadata"]["ownerReferences"][0]["uid"], "1234");
        let spec = &json["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["serviceAccountName"], "sluice-executor");
        assert_eq!(spec["nodeSelector"]["pool"], "streaming");
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "sluice:test");
        assert_eq!(c["command"][0], "sluice");
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args[..7],
            [
                "executor",
                "--driver",
                "10.0.0.7:7077",
                "--cluster-dir",
                TLS_MOUNT,
                "--name",
                "executor-2"
            ]
        );
        assert_eq!(c["resources"]["requests"]["cpu"], "2");
        // 2048 MiB and 10 % overhead, at least 384 MiB.
        assert_eq!(c["resources"]["limits"]["memory"], "2432Mi");
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(c["env"][1]["name"], "AWS_REGION");
        assert_eq!(
            spec["volumes"][0]["secret"]["secretName"],
            "orders-driver-tls"
        );
        assert_eq!(c["volumeMounts"][0]["mountPath"], TLS_MOUNT);
    }

    #[test]
    fn a_pod_template_is_refined_not_replaced() {
        let template = "
metadata:
  labels: {tier: gold}
  annotations: {prometheus.io/scrape: 'true'}
spec:
  tolerations:
  - {key: dedicated, operator: Equal, value: streaming, effect: NoSchedule}
  containers:
  - name: sidecar
    image: busybox
  - name: executor
    image: registry/sluice:1
    env: [{name: RUST_BACKTRACE, value: '1'}]
    resources: {limits: {cpu: '4'}}
";
        let mut plan = plan(Some(template));
        plan.options.image = None;
        let json = serde_json::to_value(plan.executor_pod("executor-1", 0)).unwrap();
        let spec = &json["spec"];
        assert_eq!(spec["tolerations"][0]["key"], "dedicated");
        assert_eq!(spec["containers"][0]["name"], CONTAINER);
        assert_eq!(spec["containers"][0]["image"], "registry/sluice:1");
        assert_eq!(spec["containers"][0]["env"][0]["name"], "RUST_BACKTRACE");
        assert_eq!(spec["containers"][0]["resources"]["limits"]["cpu"], "4");
        assert_eq!(spec["containers"][1]["name"], "sidecar");
        assert_eq!(json["metadata"]["labels"]["tier"], "gold");
        assert_eq!(
            json["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
    }

    #[test]
    fn pod_names_are_dns_labels() {
        let long = "a".repeat(80);
        let name = pod_name(&long, "ab12", "executor-12", 3);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-ab12-exec-12-3"));
        assert_eq!(pod_name("q", "ab12", "executor-1", 0), "q-ab12-exec-1-0");
    }

    #[test]
    fn the_secret_holds_certificates_and_is_owned_by_the_driver() {
        let plan = plan(None);
        let mut files = BTreeMap::new();
        files.insert("ca.crt".to_string(), b"CA".to_vec());
        let json = serde_json::to_value(plan.tls_secret(files)).unwrap();
        assert_eq!(json["metadata"]["name"], "orders-driver-tls");
        assert_eq!(json["data"]["ca.crt"], "Q0E=");
        assert_eq!(json["metadata"]["ownerReferences"][0]["kind"], "Pod");
    }
}
