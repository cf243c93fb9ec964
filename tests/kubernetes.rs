//! The Kubernetes cluster manager, tested against a FAKE API server (`sluice::kube_fake`): no
//! Kubernetes API server, kind, k3s or kwok can be installed on the machines these tests run
//! on. The fake speaks the real HTTP API for pods and secrets, "runs" a pod by starting its
//! container's command as a local process, and garbage-collects owned objects; the driver runs
//! in such a pod, reaches the API through a kubeconfig and creates its executor pods through
//! kube-rs exactly as it would against a cluster. Every object the driver creates, and every
//! manifest under `deploy/kubernetes/`, is validated against the OpenAPI schema of Kubernetes
//! 1.37 (`scripts/validate-kubernetes.py`, the schemas of PyPI's `kubernetes-validate`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::test_seed;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sluice::broker::Broker;
use sluice::kube_fake::FakeKube;
use sluice::s3::S3Server;

const NS: &str = "streams";
const DRIVER: &str = "orders-driver";

fn record(i: u64) -> Vec<u8> {
    format!(
        "{{\"id\":{i},\"auction\":{},\"price\":{}}}",
        i % 97,
        i * 3 % 1000
    )
    .into_bytes()
}

fn job_sql(broker: &Broker) -> String {
    format!(
        "CREATE TABLE bids (id BIGINT, auction BIGINT, price BIGINT)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'bids', format = 'json',\n\
               start = 'earliest', max_records_per_trigger = '4000');\n\
         CREATE TABLE archive WITH (connector = 'parquet', path = 's3://lake/archive/');\n\
         INSERT INTO archive SELECT id, auction, price FROM bids;\n",
        broker.bootstrap()
    )
}

/// The arguments every driver pod here starts with: the job, the kubernetes manager, an image.
const DRIVER_ARGS: &[&str] = &[
    "driver",
    "/etc/sluice/job/job.sql",
    "--cluster-manager",
    "kubernetes",
    "--listen",
    "0.0.0.0:0",
    "--k8s-image",
    "registry.example/sluice:test",
    "--ui",
    "off",
];

/// A driver pod named `name`, as a user would apply one (see deploy/kubernetes/): `DRIVER_ARGS`
/// then `args`, the downward-API variables the manifests set, and `env`; the job file and a
/// kubeconfig for the fake come from `dir` through a hostPath volume at /etc/sluice/job (a
/// ConfigMap and the pod's service account in a real cluster).
fn driver_pod(name: &str, dir: &Path, args: &[String], env: &[Value]) -> Value {
    let args: Vec<String> = DRIVER_ARGS
        .iter()
        .map(|s| s.to_string())
        .chain(args.iter().cloned())
        .collect();
    let mut all_env = vec![
        json!({"name": "KUBECONFIG", "value": "/etc/sluice/job/kubeconfig"}),
        json!({"name": "SLUICE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "SLUICE_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "SLUICE_LOG", "value": "info"}),
    ];
    all_env.extend_from_slice(env);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "driver"}},
        "spec": {
            "serviceAccountName": "sluice-driver",
            "restartPolicy": "Never",
            "containers": [{
                "name": "driver",
                "image": "registry.example/sluice:test",
                "command": ["sluice"],
                "args": args,
                "env": all_env,
                "volumeMounts": [{"name": "job", "mountPath": "/etc/sluice/job"}],
            }],
            "volumes": [{"name": "job", "hostPath": {"path": dir.to_str().unwrap()}}],
        },
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn executor_pods(fake: &FakeKube) -> Vec<Value> {
    fake.list("pods", NS, "app.kubernetes.io/component=executor")
}

fn running(pods: &[Value]) -> Vec<String> {
    pods.iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits for `what` (checked every 200 ms), failing with the driver pod's log after `limit` or
/// once the driver pod has failed.
fn wait_for(
    fake: &FakeKube,
    driver: &str,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        let driver_pod = fake.get("pods", NS, driver);
        let phase = driver_pod.as_ref().map(|d| d["status"]["phase"].clone());
        assert!(
            Instant::now() < deadline && phase != Some(json!("Failed")),
            "{what}: not within {limit:?} (driver pod {phase:?}); driver log:\n{}",
            fake.logs(NS, driver)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the schema validator on `paths`: whether every object is valid, and its report.
fn validate(paths: &[&Path]) -> (bool, String) {
    let out = Command::new(sluice::table::readers_python())
        .arg(sluice::repo_root().join("scripts/validate-kubernetes.py"))
        .args(paths)
        .output()
        .expect("running the validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kafka_to_parquet_on_s3_with_three_executor_pods_survives_a_deleted_pod_and_a_killed_process() {
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let records: u64 = 40_000;
    let broker = Broker::start();
    broker.create_topic("bids", 3);
    let s3 = S3Server::start();
    s3.create_bucket("lake");
    let fake = FakeKube::start();
    fake.program("sluice", &sluice::sluice_binary());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), job_sql(&broker)).unwrap();
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), NS);

    let bootstrap = broker.bootstrap();
    let producer = std::thread::spawn(move || {
        let producer = sluice::broker::Producer::connect(&bootstrap);
        let mut batch = Vec::new();
        for i in 0..records {
            batch.push(((i % 3) as i32, i.to_string().into_bytes(), record(i)));
            if batch.len() == 2_000 || i + 1 == records {
                producer.send_all("bids", std::mem::take(&mut batch));
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    });

    let mut args = strings(&[
        "--min-executors",
        "3",
        "--slots",
        "1",
        "--memory-mb",
        "256",
        "--k8s-service-account",
        "sluice-executor",
        "--k8s-label",
        "team=data",
        "--checkpoint",
        "s3://lake/ckpt",
        "--trigger",
        "300ms",
        "--heartbeat-timeout",
        "2s",
        "--k8s-executor-env",
        "SLUICE_LOG=info",
    ]);
    let mut env = Vec::new();
    for (k, v) in s3.env() {
        env.push(json!({"name": k, "value": v}));
        args.extend(strings(&["--k8s-executor-env", k]));
    }
    let driver = fake.create("pods", NS, driver_pod(DRIVER, dir.path(), &args, &env));
    let driver_uid = driver["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for(
        &fake,
        DRIVER,
        Duration::from_secs(60),
        "3 executor pods running",
        || running(&executor_pods(&fake)).len() == 3,
    );
    wait_for(
        &fake,
        DRIVER,
        Duration::from_secs(120),
        "a first commit",
        || !s3.read("lake", "ckpt/commits", "none").objects.is_empty(),
    );

    // A user deletes one executor pod (kubectl delete pod); later another pod's process dies.
    let before = running(&executor_pods(&fake));
    let deleted = before[rng.random_range(0..before.len())].clone();
    eprintln!("seed {seed}: deleting pod {deleted}");
    assert!(fake.delete("pods", NS, &deleted));
    wait_for(
        &fake,
        DRIVER,
        Duration::from_secs(60),
        "a replacement for the deleted pod",
        || {
            let now = running(&executor_pods(&fake));
            now.len() == 3 && !now.contains(&deleted)
        },
    );
    std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
    let pods = running(&executor_pods(&fake));
    let victim = pods[rng.random_range(0..pods.len())].clone();
    let pid = fake.pid(NS, &victim).expect("a running pod has a process");
    eprintln!("seed {seed}: killing pod {victim}'s process {pid}");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_for(
        &fake,
        DRIVER,
        Duration::from_secs(60),
        "a replacement for the failed pod",
        || {
            let now = running(&executor_pods(&fake));
            now.len() == 3 && !now.contains(&victim)
        },
    );
    producer.join().unwrap();

    // Every record reaches the archive through the running driver and its pods.
    let expected: Vec<i64> = (0..records as i64).collect();
    wait_for(
        &fake,
        DRIVER,
        Duration::from_secs(180),
        "every record in the archive",
        || s3.read("lake", "archive", "id").values.len() >= expected.len(),
    );
    let archive = s3.read("lake", "archive", "id");
    let mut ids = archive.values.clone();
    ids.sort_unstable();
    assert_eq!(
        ids.windows(2).filter(|w| w[0] == w[1]).count(),
        0,
        "records twice (seed {seed})"
    );
    assert_eq!(ids, expected, "records lost (seed {seed})");

    // What the driver asked for: pods owned by its pod, with resources and the secret mounted;
    // a secret of certificates (no CA key), owned by its pod.
    let created = fake.created();
    let pods: Vec<&Value> = created
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["name"] != DRIVER)
        .collect();
    assert!(pods.len() >= 5, "3 pods and 2 replacements: {}", pods.len());
    for pod in &pods {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], driver_uid.as_str());
        assert_eq!(owner["kind"], "Pod");
        assert_eq!(owner["name"], DRIVER);
        assert_eq!(pod["metadata"]["labels"]["team"], "data");
        assert_eq!(pod["spec"]["serviceAccountName"], "sluice-executor");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example/sluice:test");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(c["resources"]["limits"]["memory"], "640Mi");
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/sluice/tls");
        assert_eq!(
            pod["spec"]["volumes"][0]["secret"]["secretName"],
            format!("{DRIVER}-tls")
        );
    }
    let secret = created
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a secret");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        driver_uid.as_str()
    );
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert!(
        keys.iter().any(|k| *k == "ca.crt") && keys.iter().any(|k| *k == "executor-3.key"),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| *k == "ca.key"),
        "the CA key left the driver: {keys:?}"
    );
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.uri.contains("watch=true")),
        "the driver watches its pods"
    );

    // Deleting the driver's pod deletes everything it owns; every process is gone.
    let pids = fake.pids();
    assert!(fake.delete("pods", NS, DRIVER));
    assert!(
        executor_pods(&fake).is_empty(),
        "executor pods outlived the driver"
    );
    assert!(
        fake.list("secrets", NS, "").is_empty(),
        "the secret outlived the driver"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| common::alive(p)) {
        assert!(
            Instant::now() < deadline,
            "a pod's process outlived its pod"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every object the driver created and every manifest we ship, against the 1.37 schema —
    // and the validator is strict: a pod with a misspelt field is refused.
    let objects = dir.path().join("created.json");
    std::fs::write(&objects, serde_json::to_string(&created).unwrap()).unwrap();
    let (valid, report) = validate(&[&objects, &sluice::repo_root().join("deploy/kubernetes")]);
    assert!(
        valid,
        "objects invalid against the Kubernetes 1.37 schema:\n{report}"
    );
    eprintln!("{report}");
    let mut bad = pods[0].clone();
    bad["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
    let bad_file = dir.path().join("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let (valid, report) = validate(&[&bad_file]);
    assert!(!valid && report.contains("imagePullPolcy"), "{report}");
}

/// A bounded job as a Kubernetes Job runs it (deploy/kubernetes/job.yaml), with the user's own
/// certificates secret (`--k8s-secret`: a `sluice cluster init` directory; executors issue
/// themselves certificates from it): the driver pod grows from one executor pod while tasks wait
/// for a slot (dynamic allocation creates pods), writes DataFusion's answer, stops its pods and
/// deletes them (not the user's secret), and succeeds.
#[test]
fn a_bounded_job_in_a_driver_pod_grows_its_executor_pods_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::generate(d);
    let select = "SELECT auction % 20 AS a, count(*) AS n, max(price) AS top \
                  FROM bids GROUP BY auction % 20";
    // Absolute paths: the pods' working directories are their own.
    let root = format!("'{}/", d.display());
    std::fs::write(
        d.join("job.sql"),
        format!(
            "{}\nCREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO out {select};\n",
            common::SOURCES.replace("'data/", &format!("{root}data/"))
        )
        .replace("path = 'out/'", &format!("path = {root}out/'")),
    )
    .unwrap();
    let fake = FakeKube::start();
    fake.program("sluice", &sluice::sluice_binary());
    fake.write_kubeconfig(&d.join("kubeconfig"), NS);
    common::ok(&common::sluice(d, &["cluster", "init", "cluster"]));
    let mut data = serde_json::Map::new();
    for entry in std::fs::read_dir(d.join("cluster")).unwrap() {
        let entry = entry.unwrap();
        use base64::Engine;
        let bytes = std::fs::read(entry.path()).unwrap();
        data.insert(
            entry.file_name().to_string_lossy().into_owned(),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        );
    }
    fake.create(
        "secrets",
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sluice-ca"}, "data": data}),
    );
    let args = strings(&[
        "--min-executors",
        "1",
        "--max-executors",
        "3",
        "--slots",
        "1",
        "--memory-mb",
        "256",
        "--checkpoint",
        "/etc/sluice/job/ckpt",
        "--k8s-secret",
        "sluice-ca",
        "--cluster-dir",
        "/etc/sluice/ca",
        // Every task takes 2 s (the executors' test hook): tasks wait for a slot.
        "--k8s-executor-env",
        "SLUICE_TEST_TASK_DELAY_MS=2000",
    ]);
    let mut pod = driver_pod("daily-driver", d, &args, &[]);
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ca", "mountPath": "/etc/sluice/ca", "readOnly": true}));
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ca", "secret": {"secretName": "sluice-ca"}}));
    fake.create("pods", NS, pod);
    wait_for(
        &fake,
        "daily-driver",
        Duration::from_secs(180),
        "the driver pod to succeed",
        || {
            fake.get("pods", NS, "daily-driver")
                .is_some_and(|p| p["status"]["phase"] == "Succeeded")
        },
    );
    let log = fake.logs(NS, "daily-driver");
    let executors: Vec<String> = fake
        .created()
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["name"] != "daily-driver")
        .filter_map(|o| {
            o["metadata"]["labels"]["sluice.dev/executor"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        executors.len() >= 2,
        "dynamic allocation created no pod: {executors:?}\n{log}"
    );
    assert!(
        log.contains("dynamic allocation: started executor-"),
        "{log}"
    );
    assert_eq!(
        sluice::table::read_rows(&d.join("out")),
        common::reference(d, select)
    );
    // The executor pods mounted the user's secret; the driver made none of its own.
    let created = fake.created();
    assert!(created
        .iter()
        .filter(|o| o["kind"] == "Pod" && o["metadata"]["name"] != "daily-driver")
        .all(|p| p["spec"]["volumes"][0]["secret"]["secretName"] == "sluice-ca"));
    assert_eq!(created.iter().filter(|o| o["kind"] == "Secret").count(), 1);
    // Its pods are gone (deleted by the driver, not by garbage collection: the driver pod
    // still exists) and so are their processes; the user's secret stays.
    assert!(executor_pods(&fake).is_empty(), "executor pods left behind");
    assert!(
        fake.get("secrets", NS, "sluice-ca").is_some(),
        "the user's secret was deleted"
    );
    assert!(
        fake.pids().is_empty(),
        "processes left behind: {:?}",
        fake.pids()
    );
    let deletes = fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert!(
        deletes >= executors.len(),
        "the driver deleted its pods: {deletes}"
    );
}

/// A driver outside the cluster (a kubeconfig, `--k8s-driver-host`): its pods have no owner, so
/// it says so, and it deletes them and its secret itself when the job ends.
#[test]
fn a_driver_outside_the_cluster_owns_nothing_and_deletes_its_pods_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::generate(d);
    let select =
        "SELECT bidder % 7 AS b, count(*) AS n, sum(price) AS total FROM bids GROUP BY bidder % 7";
    std::fs::write(
        d.join("job.sql"),
        format!(
            "{}\nCREATE TABLE out WITH (connector = 'parquet', path = 'out/');\nINSERT INTO out {select};\n",
            common::SOURCES
        ),
    )
    .unwrap();
    let fake = FakeKube::start();
    fake.program("sluice", &sluice::sluice_binary());
    let kubeconfig = d.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, NS);
    let out = common::sluice_env(
        d,
        &[
            "driver",
            "job.sql",
            "--cluster-manager",
            "kubernetes",
            "--listen",
            "127.0.0.1:0",
            "--k8s-driver-host",
            "127.0.0.1",
            "--k8s-image",
            "registry.example/sluice:test",
            "--min-executors",
            "2",
            "--ui",
            "off",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    common::ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not run in a pod"), "{stderr}");
    assert_eq!(
        sluice::table::read_rows(&d.join("out")),
        common::reference(d, select)
    );
    let created = fake.created();
    let pods: Vec<&Value> = created.iter().filter(|o| o["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 2, "two executor pods");
    assert!(pods
        .iter()
        .all(|p| p["metadata"]["ownerReferences"].is_null()));
    assert!(executor_pods(&fake).is_empty(), "executor pods left behind");
    assert!(
        fake.list("secrets", NS, "").is_empty(),
        "the secret was left behind"
    );
    assert!(fake.pids().is_empty(), "processes left behind");
}

#[test]
fn a_driver_without_an_image_or_api_access_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.sql"), "SELECT 1;\n").unwrap();
    let fake = FakeKube::start();
    fake.write_kubeconfig(&dir.path().join("kubeconfig"), NS);
    let kubeconfig = dir.path().join("kubeconfig");
    let kubeconfig = kubeconfig.to_str().unwrap();
    let base = [
        "driver",
        "job.sql",
        "--cluster-manager",
        "kubernetes",
        "--listen",
        "127.0.0.1:0",
        "--ui",
        "off",
    ];
    // No image.
    let out = common::sluice_env(
        dir.path(),
        &[&base[..], &["--k8s-driver-host", "127.0.0.1"]].concat(),
        &[("KUBECONFIG", kubeconfig)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--k8s-image"), "{err}");
    // A driver pod that does not exist.
    let out = common::sluice_env(
        dir.path(),
        &[&base[..], &["--k8s-image", "x", "--k8s-driver-pod", "nope"]].concat(),
        &[("KUBECONFIG", kubeconfig)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("driver's pod streams/nope") && err.contains("not found"),
        "{err}"
    );
    // No API server at all.
    let missing = dir.path().join("missing-kubeconfig");
    let out = common::sluice_env(
        dir.path(),
        &[
            &base[..],
            &["--k8s-image", "x", "--k8s-driver-host", "127.0.0.1"],
        ]
        .concat(),
        &[
            ("KUBECONFIG", missing.to_str().unwrap()),
            ("HOME", dir.path().to_str().unwrap()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to the Kubernetes API"), "{err}");
    // Standalone still needs its cluster directory.
    let out = common::sluice(dir.path(), &["driver", "job.sql", "--ui", "off"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --cluster-dir"), "{err}");
}
