//! **A fake of the Kubernetes API server, for tests. It is not Kubernetes.** No API server,
//! kind, k3s or kwok can be installed on the machines these tests run on, so the Kubernetes
//! cluster manager is tested against this stand-in, which speaks the real HTTP API for the
//! two resources the driver uses — pods and secrets in a namespace: create, get, list (label
//! and field selectors), watch (newline-delimited watch events from a resource version) and
//! delete — and answers errors as `Status` objects as the real server does.
//!
//! What it fakes beyond the API: it "runs" a created pod by starting its executor container's
//! command as a local process (the image is recorded, not pulled; command names map to local
//! binaries with [`FakeKube::program`]) with the container's environment (plain values and the
//! downward-API fields `metadata.name`, `metadata.namespace`, `metadata.uid`, `status.podIP`,
//! which is `127.0.0.1`). Volumes become directories: a secret volume holds the secret's keys
//! as files, an `emptyDir` is empty, a `hostPath` is that path; the container's arguments and
//! environment values that start with a mount path are rewritten to the directory. A pod's
//! phase follows its process: Running once started, Succeeded or Failed when it exits.
//! Deleting an object deletes every object whose owner references name it (the garbage
//! collector's foreground behaviour, at once), and deleting a pod kills its process.
//!
//! Every request is recorded (method, path and query, body), and every object as created, for
//! the test to check and to validate against the Kubernetes OpenAPI schema.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// One recorded API request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Option<Value>,
}

/// A watch event as the log keeps it.
#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: String,
    namespace: String,
    kind_of_change: &'static str,
    object: Value,
}

#[derive(Default)]
struct Objects {
    rv: u64,
    /// (resource, namespace, name) → object.
    items: BTreeMap<(String, String, String), Value>,
    log: Vec<Event>,
    requests: Vec<Request>,
    created: Vec<Value>,
    /// Pod key → pid of its process.
    pids: HashMap<(String, String), u32>,
}

struct Shared {
    objects: Mutex<Objects>,
    events: broadcast::Sender<Event>,
    programs: Mutex<HashMap<String, PathBuf>>,
    root: PathBuf,
}

/// The fake API server, on a loopback port, with its own runtime thread.
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    _root: tempfile::TempDir,
}

/// An API error, answered as a `Status` object as the real server does.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.code,
            Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": self.message, "reason": self.reason,
                "code": self.code.as_u16(),
            })),
        )
            .into_response()
    }
}

type Reply = Result<Response, ApiError>;

fn status(code: StatusCode, reason: &'static str, message: String) -> ApiError {
    ApiError {
        code,
        reason,
        message,
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn kind_of(resource: &str) -> Option<&'static str> {
    match resource {
        "pods" => Some("Pod"),
        "secrets" => Some("Secret"),
        _ => None,
    }
}

/// Whether `object` matches `labelSelector` (`k=v,…`) and `fieldSelector` (`metadata.name=…`).
fn matches(object: &Value, query: &HashMap<String, String>) -> bool {
    let meta = &object["metadata"];
    let labels_ok = query.get("labelSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            let v = v.trim_start_matches('=');
            meta["labels"][k].as_str() == Some(v)
        })
    });
    let fields_ok = query.get("fieldSelector").is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            let v = v.trim_start_matches('=');
            match k {
                "metadata.name" => meta["name"].as_str() == Some(v),
                "metadata.namespace" => meta["namespace"].as_str() == Some(v),
                _ => false,
            }
        })
    });
    labels_ok && fields_ok
}

impl Shared {
    fn record(&self, method: &Method, uri: &Uri, body: Option<Value>) {
        self.objects.lock().unwrap().requests.push(Request {
            method: method.to_string(),
            uri: uri.to_string(),
            body,
        });
    }

    /// Stores a change and tells the watchers (under the lock, so the log and the channel agree).
    fn change(
        &self,
        objects: &mut Objects,
        resource: &str,
        ns: &str,
        kind_of_change: &'static str,
        mut object: Value,
    ) -> Value {
        objects.rv += 1;
        let rv = objects.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let key = (resource.to_string(), ns.to_string(), name);
        if kind_of_change == "DELETED" {
            objects.items.remove(&key);
        } else {
            objects.items.insert(key, object.clone());
        }
        let event = Event {
            rv,
            kind: resource.to_string(),
            namespace: ns.to_string(),
            kind_of_change,
            object: object.clone(),
        };
        objects.log.push(event.clone());
        let _ = self.events.send(event);
        object
    }

    fn create(
        self: &Arc<Self>,
        resource: &str,
        ns: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let kind = kind_of(resource)
            .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", resource.to_string()))?;
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
            return Err(status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{kind} \"\" is invalid: metadata.name: Required value"),
            ));
        };
        if kind == "Pod" {
            let containers = object["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if containers.is_empty() || containers.iter().any(|c| c["image"].as_str().is_none()) {
                return Err(status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("Pod \"{name}\" is invalid: spec.containers[0].image: Required value"),
                ));
            }
        }
        let mut objects = self.objects.lock().unwrap();
        let key = (resource.to_string(), ns.to_string(), name.clone());
        if objects.items.contains_key(&key) {
            return Err(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            ));
        }
        objects.created.push(object.clone());
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(kind);
        object["metadata"]["namespace"] = json!(ns);
        object["metadata"]["uid"] = json!(format!("uid-{}-{}", resource, objects.rv + 1));
        object["metadata"]["creationTimestamp"] = json!(now());
        if kind == "Pod" {
            object["status"] = json!({"phase": "Pending"});
        }
        let stored = self.change(&mut objects, resource, ns, "ADDED", object);
        drop(objects);
        if kind == "Pod" {
            let shared = self.clone();
            let (ns, pod) = (ns.to_string(), stored.clone());
            tokio::spawn(async move { shared.run_pod(&ns, pod).await });
        }
        Ok(stored)
    }

    fn delete(&self, resource: &str, ns: &str, name: &str) -> Reply {
        let mut objects = self.objects.lock().unwrap();
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let Some(object) = objects.items.get(&key).cloned() else {
            return Err(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            ));
        };
        let deleted = self.remove(&mut objects, resource, ns, object);
        Ok(Json(deleted).into_response())
    }

    /// Removes an object, kills a pod's process, and deletes what it owns (recursively).
    fn remove(&self, objects: &mut Objects, resource: &str, ns: &str, object: Value) -> Value {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if let Some(pid) = objects.pids.remove(&(ns.to_string(), name.clone())) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let deleted = self.change(objects, resource, ns, "DELETED", object.clone());
        let uid = object["metadata"]["uid"].clone();
        let owned: Vec<(String, Value)> = objects
            .items
            .iter()
            .filter(|((_, n, _), o)| {
                n == ns
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|((r, _, _), o)| (r.clone(), o.clone()))
            .collect();
        for (r, o) in owned {
            self.remove(objects, &r, ns, o);
        }
        deleted
    }

    /// Sets a pod's status, if the pod still exists.
    fn set_pod_status(&self, ns: &str, name: &str, status: Value) {
        let mut objects = self.objects.lock().unwrap();
        let key = ("pods".to_string(), ns.to_string(), name.to_string());
        if let Some(mut pod) = objects.items.get(&key).cloned() {
            pod["status"] = status;
            self.change(&mut objects, "pods", ns, "MODIFIED", pod);
        }
    }

    /// Starts the pod's executor container (named `executor`, else the first) as a process and
    /// follows it.
    async fn run_pod(self: Arc<Self>, ns: &str, pod: Value) {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let spec = &pod["spec"];
        let containers = spec["containers"].as_array().cloned().unwrap_or_default();
        let container = containers
            .iter()
            .find(|c| c["name"] == "executor")
            .or(containers.first())
            .cloned()
            .unwrap_or_default();
        let dir = self.root.join(ns).join(&name);
        let _ = std::fs::create_dir_all(&dir);
        let waiting = |reason: &str, message: String| {
            json!({"phase": "Pending", "containerStatuses": [{
                "name": container["name"], "ready": false, "restartCount": 0,
                "image": container["image"], "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}}}]})
        };
        // Volumes → directories.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for volume in spec["volumes"].as_array().cloned().unwrap_or_default() {
            let vname = volume["name"].as_str().unwrap_or("").to_string();
            let path = if let Some(host) = volume["hostPath"]["path"].as_str() {
                PathBuf::from(host)
            } else {
                let path = dir.join("volumes").join(&vname);
                let _ = std::fs::create_dir_all(&path);
                if let Some(secret) = volume["secret"]["secretName"].as_str() {
                    let key = ("secrets".to_string(), ns.to_string(), secret.to_string());
                    let data = self.objects.lock().unwrap().items.get(&key).cloned();
                    let Some(data) = data else {
                        let message = format!("secret \"{secret}\" not found");
                        return self.set_pod_status(
                            ns,
                            &name,
                            waiting("CreateContainerConfigError", message),
                        );
                    };
                    for (file, value) in data["data"].as_object().cloned().unwrap_or_default() {
                        use base64::Engine;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(value.as_str().unwrap_or(""))
                            .unwrap_or_default();
                        let _ = std::fs::write(path.join(file), bytes);
                    }
                }
                path
            };
            for m in container["volumeMounts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                if m["name"] == vname.as_str() {
                    mounts.push((
                        m["mountPath"].as_str().unwrap_or("").to_string(),
                        path.clone(),
                    ));
                }
            }
        }
        let rewrite = |s: &str| -> String {
            for (mount, path) in &mounts {
                if let Some(rest) = s.strip_prefix(mount.as_str()) {
                    if rest.is_empty() || rest.starts_with('/') {
                        return format!("{}{rest}", path.display());
                    }
                }
            }
            s.to_string()
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str()).map(rewrite).collect())
                .unwrap_or_default()
        };
        let mut argv = strings(&container["command"]);
        argv.extend(strings(&container["args"]));
        let Some(program) = argv.first().cloned() else {
            return self.set_pod_status(
                ns,
                &name,
                waiting(
                    "CreateContainerError",
                    "no command (the fake runs no image entrypoints)".into(),
                ),
            );
        };
        let program = self
            .programs
            .lock()
            .unwrap()
            .get(&program)
            .cloned()
            .unwrap_or(PathBuf::from(program));
        let mut command = tokio::process::Command::new(program);
        command.args(&argv[1..]).env_clear().current_dir(&dir);
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(v) = std::env::var(var) {
                command.env(var, v);
            }
        }
        for env in container["env"].as_array().cloned().unwrap_or_default() {
            let key = env["name"].as_str().unwrap_or("").to_string();
            let value = if let Some(v) = env["value"].as_str() {
                rewrite(v)
            } else {
                match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => name.clone(),
                    Some("metadata.namespace") => ns.to_string(),
                    Some("metadata.uid") => pod["metadata"]["uid"].as_str().unwrap_or("").into(),
                    Some("status.podIP") => "127.0.0.1".into(),
                    _ => String::new(),
                }
            };
            command.env(key, value);
        }
        let log = std::fs::File::create(dir.join("container.log")).ok();
        if let Some(log) = log {
            if let Ok(err) = log.try_clone() {
                command.stdout(log).stderr(err);
            }
        }
        command.process_group(0).kill_on_drop(false);
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                return self.set_pod_status(
                    ns,
                    &name,
                    waiting("CreateContainerError", e.to_string()),
                )
            }
        };
        let pid = child.id().unwrap_or(0);
        {
            let mut objects = self.objects.lock().unwrap();
            let key = ("pods".to_string(), ns.to_string(), name.clone());
            if !objects.items.contains_key(&key) {
                // Deleted while starting.
                let _ = child.start_kill();
                return;
            }
            objects.pids.insert((ns.to_string(), name.clone()), pid);
        }
        let started = now();
        self.set_pod_status(
            ns,
            &name,
            json!({"phase": "Running", "podIP": "127.0.0.1", "startTime": started,
                   "containerStatuses": [{"name": container["name"], "ready": true,
                     "restartCount": 0, "image": container["image"], "imageID": "",
                     "state": {"running": {"startedAt": started}}}]}),
        );
        let status = child.wait().await;
        self.objects
            .lock()
            .unwrap()
            .pids
            .remove(&(ns.to_string(), name.clone()));
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match &status {
            Ok(s) => (
                s.code().unwrap_or(128 + s.signal().unwrap_or(0)),
                s.signal(),
            ),
            Err(_) => (255, None),
        };
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        let reason = if code == 0 { "Completed" } else { "Error" };
        let _ = signal;
        self.set_pod_status(
            ns,
            &name,
            json!({"phase": phase, "podIP": "127.0.0.1", "startTime": started,
                   "containerStatuses": [{"name": container["name"], "ready": false,
                     "restartCount": 0, "image": container["image"], "imageID": "",
                     "state": {"terminated": {"exitCode": code, "reason": reason,
                                              "startedAt": started, "finishedAt": now()}}}]}),
        );
    }
}

async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, resource)): UrlPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
) -> Reply {
    shared.record(&method, &uri, None);
    let kind = kind_of(&resource)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, "NotFound", resource.clone()))?;
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        let objects = shared.objects.lock().unwrap();
        let items: Vec<Value> = objects
            .items
            .iter()
            .filter(|((r, n, _), o)| r == &resource && n == &ns && matches(o, &query))
            .map(|(_, o)| o.clone())
            .collect();
        return Ok(Json(json!({
            "apiVersion": "v1", "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": objects.rv.to_string()}, "items": items,
        }))
        .into_response());
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1024);
    let wanted =
        move |e: &Event| e.kind == resource && e.namespace == ns && matches(&e.object, &query);
    {
        let objects = shared.objects.lock().unwrap();
        let mut live = shared.events.subscribe();
        let backlog: Vec<Event> = objects
            .log
            .iter()
            .filter(|e| e.rv > from && wanted(e))
            .cloned()
            .collect();
        let last = objects.log.last().map_or(0, |e| e.rv);
        drop(objects);
        tokio::spawn(async move {
            let line = |e: &Event| {
                format!(
                    "{}\n",
                    json!({"type": e.kind_of_change, "object": e.object})
                )
            };
            for e in &backlog {
                if tx.send(Ok(line(e))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                match tokio::time::timeout_at(deadline, live.recv()).await {
                    Ok(Ok(e)) if e.rv > last.max(from) && wanted(&e) => {
                        if tx.send(Ok(line(&e))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        });
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("a response"))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, resource)): UrlPath<(String, String)>,
    method: Method,
    uri: Uri,
    Json(body): Json<Value>,
) -> Reply {
    shared.record(&method, &uri, Some(body.clone()));
    let stored = shared.create(&resource, &ns, body)?;
    Ok((StatusCode::CREATED, Json(stored)).into_response())
}

async fn get_one(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, resource, name)): UrlPath<(String, String, String)>,
    method: Method,
    uri: Uri,
) -> Reply {
    shared.record(&method, &uri, None);
    let objects = shared.objects.lock().unwrap();
    objects
        .items
        .get(&(resource.clone(), ns, name.clone()))
        .map(|o| Json(o.clone()).into_response())
        .ok_or_else(|| {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            )
        })
}

async fn delete_one(
    State(shared): State<Arc<Shared>>,
    UrlPath((ns, resource, name)): UrlPath<(String, String, String)>,
    method: Method,
    uri: Uri,
) -> Reply {
    shared.record(&method, &uri, None);
    shared.delete(&resource, &ns, &name)
}

impl FakeKube {
    /// Starts the fake on a loopback port.
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("a directory for the fake's pods");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            objects: Mutex::new(Objects::default()),
            events,
            programs: Mutex::new(HashMap::new()),
            root: root.path().to_path_buf(),
        });
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/{resource}",
                get(list_or_watch).post(create),
            )
            .route(
                "/api/v1/namespaces/{ns}/{resource}/{name}",
                get(get_one).delete(delete_one),
            )
            .with_state(shared.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a port for the fake API server");
        let addr = listener.local_addr().expect("an address");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            runtime: Some(runtime),
            _root: root,
        }
    }

    /// Runs containers whose command is `name` with the local binary `path`.
    pub fn program(&self, name: &str, path: &Path) {
        self.shared
            .programs
            .lock()
            .unwrap()
            .insert(name.into(), path.into());
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for the fake (namespace `namespace`) to `path`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             users:\n- name: fake\n  user: {{}}\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(path, text).expect("writing the kubeconfig");
    }

    /// Creates an object as `kubectl create` would (the same path as an API request).
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> Value {
        let shared = self.shared.clone();
        let ns = namespace.to_string();
        let resource = resource.to_string();
        let _guard = self.runtime.as_ref().expect("running").enter();
        match shared.create(&resource, &ns, object) {
            Ok(stored) => stored,
            Err(e) => panic!("creating a {resource} failed: {} {}", e.code, e.message),
        }
    }

    /// Deletes an object as `kubectl delete` would (owned objects go with it).
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> bool {
        self.shared.delete(resource, namespace, name).is_ok()
    }

    /// One object, if it exists.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let objects = self.shared.objects.lock().unwrap();
        objects
            .items
            .get(&(
                resource.to_string(),
                namespace.to_string(),
                name.to_string(),
            ))
            .cloned()
    }

    /// Every object of `resource` in `namespace` matching a label selector (`k=v,…`, or "").
    pub fn list(&self, resource: &str, namespace: &str, labels: &str) -> Vec<Value> {
        let mut query = HashMap::new();
        query.insert("labelSelector".to_string(), labels.to_string());
        let objects = self.shared.objects.lock().unwrap();
        objects
            .items
            .iter()
            .filter(|((r, n, _), o)| r == resource && n == namespace && matches(o, &query))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The process running a pod, while it runs.
    pub fn pid(&self, namespace: &str, pod: &str) -> Option<u32> {
        self.shared
            .objects
            .lock()
            .unwrap()
            .pids
            .get(&(namespace.to_string(), pod.to_string()))
            .copied()
    }

    /// Every pid of a running pod.
    pub fn pids(&self) -> Vec<u32> {
        self.shared
            .objects
            .lock()
            .unwrap()
            .pids
            .values()
            .copied()
            .collect()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.objects.lock().unwrap().requests.clone()
    }

    /// Every object as its creator sent it (before the server filled in uid, status, …).
    pub fn created(&self) -> Vec<Value> {
        self.shared.objects.lock().unwrap().created.clone()
    }

    /// What a pod's container wrote (its `kubectl logs`).
    pub fn logs(&self, namespace: &str, pod: &str) -> String {
        std::fs::read_to_string(
            self.shared
                .root
                .join(namespace)
                .join(pod)
                .join("container.log"),
        )
        .unwrap_or_default()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for pid in self.pids() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
