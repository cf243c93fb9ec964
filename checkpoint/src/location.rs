//! Where a checkpoint, a table or a dead-letter directory lives: a local path or an object-store
//! URL (`s3://bucket/prefix`).
//!
//! Object stores are reached through the `object_store` crate (the version DataFusion uses), one
//! client per bucket and options, shared by the whole process. Its calls are async; Sluice's
//! checkpoint and sink code is synchronous, so every call runs on a small I/O runtime of its own
//! ([`block_on`]) and the caller waits: this works from a plain thread and from inside any tokio
//! runtime alike, and keeps the HTTP connection pool on one runtime.
//!
//! Credentials, region and endpoint come from the standard variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint) and may be overridden per location with
//! `aws_*` options (`aws_endpoint`, `aws_region`, `aws_access_key_id`, ...).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::ClientOptions;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult};

/// A local directory or an object-store prefix.
#[derive(Debug, Clone)]
pub enum Location {
    /// A path on this host's file system (`/data/x`, `data/x`, `file:///data/x`).
    Local(PathBuf),
    /// A prefix in an object store (`s3://bucket/prefix`).
    Object(ObjectRoot),
}

impl Location {
    /// Parses a path or URL with the standard environment's credentials.
    pub fn parse(text: &str) -> Result<Location, StoreError> {
        Self::parse_with(text, &[])
    }

    /// Parses a path or URL; `options` (`aws_endpoint`, `aws_region`, ...) override what the
    /// environment says for this location.
    pub fn parse_with(text: &str, options: &[(String, String)]) -> Result<Location, StoreError> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let url = url::Url::parse(text).map_err(|e| StoreError::invalid(text, e))?;
                let path = url
                    .to_file_path()
                    .map_err(|()| StoreError::invalid(text, "not an absolute file path"))?;
                Ok(Location::Local(path))
            }
            "s3" | "s3a" => ObjectRoot::s3(text, options).map(Location::Object),
            other => Err(StoreError::invalid(
                text,
                format!("unsupported scheme '{other}://' (supported: a path, file://, s3://)"),
            )),
        }
    }

    /// Whether this is an object-store location.
    pub fn is_object(&self) -> bool {
        matches!(self, Location::Object(_))
    }

    /// The local path, if this is one.
    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::Object(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object(o) => f.write_str(&o.url),
        }
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Self {
        Location::Local(path.to_path_buf())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Self {
        Location::Local(path)
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Self {
        Location::Local(path.clone())
    }
}

/// A prefix in an object store, and the client that reaches it.
#[derive(Clone)]
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`: what DataFusion's object-store registry is keyed by.
    base: String,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    prefix: ObjectPath,
}

impl std::fmt::Debug for ObjectRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRoot")
            .field("url", &self.url)
            .finish()
    }
}

impl ObjectRoot {
    /// A root in `store` (any implementation: unit tests use an in-memory one) under `prefix`,
    /// named `base` + `/` + `prefix` in messages.
    pub fn new(store: Arc<dyn ObjectStore>, base: &str, prefix: &str) -> Self {
        let prefix = ObjectPath::from(prefix.trim_matches('/'));
        let base = base.trim_end_matches('/').to_string();
        let url = if prefix.as_ref().is_empty() {
            base.clone()
        } else {
            format!("{base}/{prefix}")
        };
        Self {
            store,
            base,
            url,
            prefix,
        }
    }

    fn s3(text: &str, options: &[(String, String)]) -> Result<Self, StoreError> {
        let url = url::Url::parse(text).map_err(|e| StoreError::invalid(text, e))?;
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| StoreError::invalid(text, "no bucket name"))?
            .to_string();
        let prefix = percent_decode(url.path());
        let mut key: Vec<(String, String)> = options.to_vec();
        key.sort();
        let cache_key = format!("s3://{bucket}?{key:?}");
        static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
        let mut clients = CLIENTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let store = match clients.get(&cache_key) {
            Some(store) => store.clone(),
            None => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_http_connector(CountingConnector);
                for (k, v) in options {
                    let config: AmazonS3ConfigKey =
                        k.to_ascii_lowercase().parse().map_err(|_| {
                            StoreError::invalid(text, format!("unknown object-store option '{k}'"))
                        })?;
                    builder = builder.with_config(config, v);
                }
                // S3 proper needs a region; a custom endpoint (a local server) does not care.
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                    && !options.iter().any(|(k, _)| k.contains("region"))
                {
                    builder = builder.with_region("us-east-1");
                }
                let store: Arc<dyn ObjectStore> = Arc::new(
                    builder
                        .build()
                        .map_err(|e| StoreError::new("configure a client for", text, e))?,
                );
                clients.insert(cache_key, store.clone());
                store
            }
        };
        Ok(Self::new(store, &format!("s3://{bucket}"), &prefix))
    }

    /// The client.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `s3://bucket`: the key under which DataFusion's object-store registry knows the client.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix inside the bucket.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    /// The root `rel` (slash-separated) below this one.
    pub fn child(&self, rel: &str) -> ObjectRoot {
        let path = self.path(rel);
        Self::new(self.store.clone(), &self.base, path.as_ref())
    }

    /// The object path of `rel` (slash-separated, relative to this root).
    pub fn path(&self, rel: &str) -> ObjectPath {
        let rel = rel.trim_matches('/');
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(rel)
        } else if rel.is_empty() {
            self.prefix.clone()
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The URL of `rel`, for messages.
    pub fn url_of(&self, rel: &str) -> String {
        let rel = rel.trim_matches('/');
        if rel.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{rel}", self.url)
        }
    }

    /// The object `rel` and its version, or `None` if there is none.
    pub fn get(&self, rel: &str) -> Result<Option<(Bytes, PutResult)>, StoreError> {
        let store = self.store.clone();
        let path = self.path(rel);
        let got = block_on(async move {
            let result = store.get(&path).await?;
            let version = PutResult {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            Ok((result.bytes().await?, version))
        });
        match got {
            Ok(found) => Ok(Some(found)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::new("read", &self.url_of(rel), e)),
        }
    }

    /// Writes `rel` with `mode`: `Create` fails with [`object_store::Error::AlreadyExists`] if
    /// it exists, `Update` with [`object_store::Error::Precondition`] if it changed.
    pub fn put(&self, rel: &str, bytes: Vec<u8>, mode: PutMode) -> Result<PutResult, StoreError> {
        let store = self.store.clone();
        let path = self.path(rel);
        block_on(async move {
            let options = PutOptions::from(mode);
            store
                .put_opts(&path, PutPayload::from(bytes), options)
                .await
        })
        .map_err(|e| StoreError::new("write", &self.url_of(rel), e))
    }

    /// The objects below `rel` (every level), as paths relative to this root, with their sizes.
    pub fn list(&self, rel: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let store = self.store.clone();
        let dir = self.path(rel);
        let strip = self.prefix.clone();
        block_on(async move {
            let found: Vec<_> = store.list(Some(&dir)).try_collect().await?;
            Ok(found
                .into_iter()
                .map(|meta| (relative(&strip, &meta.location), meta.size))
                .collect())
        })
        .map_err(|e| StoreError::new("list", &self.url_of(rel), e))
    }

    /// The names directly below `rel` (objects and common prefixes), relative to `rel`.
    pub fn list_names(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let store = self.store.clone();
        let dir = self.path(rel);
        block_on(async move {
            let listed = store.list_with_delimiter(Some(&dir)).await?;
            let mut names: Vec<String> = listed
                .objects
                .iter()
                .map(|m| m.location.filename().unwrap_or_default().to_string())
                .chain(
                    listed
                        .common_prefixes
                        .iter()
                        .map(|p| p.filename().unwrap_or_default().to_string()),
                )
                .collect();
            names.sort();
            Ok(names)
        })
        .map_err(|e| StoreError::new("list", &self.url_of(rel), e))
    }

    /// Deletes `rel`; deleting what is not there is not an error.
    pub fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let store = self.store.clone();
        let path = self.path(rel);
        match block_on(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::new("delete", &self.url_of(rel), e)),
        }
    }

    /// Whether `rel` exists.
    pub fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        let store = self.store.clone();
        let path = self.path(rel);
        match block_on(async move { store.head(&path).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::new("look up", &self.url_of(rel), e)),
        }
    }

    /// Streams the object `rel` into the local file `to` (created or truncated); returns its
    /// size, or `None` if there is no such object. Memory stays bounded by the store's chunks.
    /// The outer error is the store's; the inner one writing `to`.
    pub fn download(
        &self,
        rel: &str,
        to: &Path,
    ) -> Result<Option<std::io::Result<u64>>, StoreError> {
        use tokio::io::AsyncWriteExt;
        let store = self.store.clone();
        let path = self.path(rel);
        let to = to.to_path_buf();
        let got = block_on(async move {
            let mut stream = store.get(&path).await?.into_stream();
            let mut file = match tokio::fs::File::create(&to).await {
                Ok(file) => file,
                Err(e) => return Ok(Err(e)),
            };
            let mut written = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                if let Err(e) = file.write_all(&chunk).await {
                    return Ok(Err(e));
                }
                written += chunk.len() as u64;
            }
            Ok(file.flush().await.map(|()| written))
        });
        match got {
            Ok(written) => Ok(Some(written)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::new("download", &self.url_of(rel), e)),
        }
    }

    /// Deletes every object below `rel` (a "directory"); returns how many.
    pub fn delete_all(&self, rel: &str) -> Result<usize, StoreError> {
        let objects: Vec<String> = self.list(rel)?.into_iter().map(|(name, _)| name).collect();
        self.delete_many(&objects)?;
        Ok(objects.len())
    }

    /// Deletes the objects `rels` in as few requests as the store allows (S3: a
    /// `DeleteObjects` request per 1000); deleting what is not there is not an error.
    pub fn delete_many(&self, rels: &[String]) -> Result<(), StoreError> {
        use futures::StreamExt;
        if rels.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let paths: Vec<object_store::Result<ObjectPath>> =
            rels.iter().map(|rel| Ok(self.path(rel))).collect();
        block_on(async move {
            let mut deleted = store.delete_stream(futures::stream::iter(paths).boxed());
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| StoreError::new("delete", &self.url_of(&rels[0]), e))
    }

    /// Copies `from` to `to` (both relative), replacing `to`: readers see the old object or the
    /// complete new one.
    pub fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let store = self.store.clone();
        let (src, dst) = (self.path(from), self.path(to));
        block_on(async move { store.copy(&src, &dst).await })
            .map_err(|e| StoreError::new("copy", &format!("{} to {}", self.url_of(from), to), e))
    }
}

/// Bytes uploaded per multipart part (S3's minimum part is 5 MiB, except the last).
pub const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once per writer; a writer's memory is bounded by this plus one part.
const PARTS_IN_FLIGHT: usize = 2;

/// A [`std::io::Write`] into one object: a file up to [`PART_BYTES`] goes up with one PUT at
/// [`ObjectWriter::finish`]; a larger one by multipart upload while it is written, at most
/// [`PARTS_IN_FLIGHT`] parts at a time, so memory stays bounded by the part size. Nothing is
/// visible under the name before `finish` returns; a writer dropped unfinished aborts its upload.
pub struct ObjectWriter {
    root: ObjectRoot,
    rel: String,
    buf: Vec<u8>,
    part_bytes: usize,
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    in_flight: std::collections::VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
    written: u64,
}

impl ObjectWriter {
    /// A writer of the object `rel` below `root`.
    pub fn new(root: &ObjectRoot, rel: &str) -> Self {
        Self::with_part_size(root, rel, PART_BYTES)
    }

    /// [`ObjectWriter::new`] with another part size (tests).
    pub fn with_part_size(root: &ObjectRoot, rel: &str, part_bytes: usize) -> Self {
        Self {
            root: root.clone(),
            rel: rel.to_string(),
            buf: Vec::new(),
            part_bytes,
            upload: None,
            in_flight: Default::default(),
            written: 0,
        }
    }

    /// The object's URL.
    pub fn url(&self) -> String {
        self.root.url_of(&self.rel)
    }

    fn send_part(&mut self) -> object_store::Result<()> {
        if self.upload.is_none() {
            let store = self.root.store.clone();
            let path = self.root.path(&self.rel);
            self.upload = Some(block_on(async move { store.put_multipart(&path).await })?);
        }
        let upload = self.upload.as_mut().expect("started above");
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.buf)));
        self.in_flight.push_back(spawn(part));
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("non-empty");
            join(oldest)?;
        }
        Ok(())
    }

    /// Completes the object; returns its size. Only now does it appear under its name.
    pub fn finish(mut self) -> Result<u64, StoreError> {
        let url = self.url();
        let result = (|| {
            if self.upload.is_none() {
                let store = self.root.store.clone();
                let path = self.root.path(&self.rel);
                let bytes = std::mem::take(&mut self.buf);
                return block_on(async move {
                    store.put(&path, PutPayload::from(bytes)).await.map(|_| ())
                });
            }
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            while let Some(part) = self.in_flight.pop_front() {
                join(part)?;
            }
            let mut upload = self.upload.take().expect("multipart upload started");
            block_on(async move { upload.complete().await.map(|_| ()) })
        })();
        result
            .map(|()| self.written)
            .map_err(|e| StoreError::new("upload", &url, e))
    }
}

impl std::io::Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= self.part_bytes {
            self.send_part().map_err(|e| {
                std::io::Error::other(StoreError::new("upload", &self.root.url_of(&self.rel), e))
            })?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Parts have a minimum size: bytes go up when a part is full, or at `finish`.
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            for part in self.in_flight.drain(..) {
                part.abort();
            }
            spawn(async move {
                let _ = upload.abort().await;
            });
        }
    }
}

/// `path` relative to `prefix` ("a/b" below "p" for "p/a/b").
fn relative(prefix: &ObjectPath, path: &ObjectPath) -> String {
    match path.prefix_match(prefix) {
        Some(parts) => parts
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        None => path.to_string(),
    }
}

fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// Object-store requests of this process answered with a network error, a 5xx or a throttling
/// answer (429) so far. object_store retries them with exponential backoff (up to 10 times
/// within 3 minutes); executors report theirs to the driver, which counts them in each epoch's
/// progress record (`store_retries`).
pub fn transient_failures() -> u64 {
    TRANSIENT_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

static TRANSIENT_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// object_store's own HTTP client, counting transient failures on the way.
#[derive(Debug, Clone, Copy)]
struct CountingConnector;

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(CountingService(
            ReqwestConnector::default().connect(options)?,
        )))
    }
}

#[derive(Debug)]
struct CountingService(HttpClient);

#[async_trait::async_trait]
impl HttpService for CountingService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let result = self.0.execute(request).await;
        let transient = match &result {
            Ok(response) => {
                response.status().is_server_error() || response.status().as_u16() == 429
            }
            Err(_) => true,
        };
        if transient {
            TRANSIENT_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

/// Runs `f` on the object-store I/O runtime and waits for it. Callable from any thread,
/// including a tokio worker (which it blocks, as synchronous file I/O does).
pub fn block_on<T, F>(f: F) -> object_store::Result<T>
where
    T: Send + 'static,
    F: Future<Output = object_store::Result<T>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    io_runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(object_store::Error::Generic {
            store: "sluice",
            source: "an object-store call panicked".into(),
        })
    })
}

/// Spawns `f` on the object-store I/O runtime (for uploads that overlap with writing).
pub fn spawn<T, F>(f: F) -> tokio::task::JoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    io_runtime().spawn(f)
}

/// Waits for a task [`spawn`]ed earlier.
pub fn join<T: Send + 'static>(
    handle: tokio::task::JoinHandle<object_store::Result<T>>,
) -> object_store::Result<T> {
    block_on(async move { handle.await? })
}

fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-object-io")
            .enable_all()
            .build()
            .expect("the object-store I/O runtime starts (threads and a timer)")
    })
}

/// An object-store call that failed, with the URL it was about and the store's answer.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} {url}: {}", answer(.source))]
pub struct StoreError {
    /// What was being done.
    pub action: &'static str,
    /// The object or prefix.
    pub url: String,
    /// The store's answer.
    #[source]
    pub source: object_store::Error,
}

impl StoreError {
    /// `action` on `url` failed with `source`.
    pub fn new(action: &'static str, url: &str, source: object_store::Error) -> Self {
        Self {
            action,
            url: url.to_string(),
            source,
        }
    }

    fn invalid(url: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            "parse",
            url,
            object_store::Error::Generic {
                store: "sluice",
                source: message.to_string().into(),
            },
        )
    }

    /// Whether trying again may succeed: network errors and the store's 5xx or throttling
    /// answers (which the client has already retried with backoff), not a missing bucket,
    /// refused credentials or a failed precondition.
    pub fn is_retryable(&self) -> bool {
        matches!(self.source, object_store::Error::Generic { .. })
            && !self.action.starts_with("parse")
            && !self.action.starts_with("configure")
    }

    /// Whether a conditional write was refused (the object exists, or changed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self.source,
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
        )
    }
}

/// The store's answer: for an S3 error response its code and message, the HTTP status and the
/// request (`NoSuchBucket: The specified bucket does not exist (404 Not Found, GET http://...)`);
/// otherwise the error and the causes object_store nests, each once.
fn answer(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    let tag = |t: &str| -> Option<String> {
        let open = format!("<{t}>");
        let rest = &text[text.find(&open)? + open.len()..];
        Some(rest[..rest.find(&format!("</{t}>"))?].to_string())
    };
    let Some(code) = tag("Code") else {
        return text;
    };
    let mut out = code;
    if let Some(message) = tag("Message") {
        out.push_str(": ");
        out.push_str(&message);
    }
    let status = text
        .find("status code: ")
        .map(|i| &text[i + "status code: ".len()..])
        .and_then(|rest| rest.split(':').next())
        .map(str::trim);
    let request = text
        .find("Error performing ")
        .map(|i| &text[i + "Error performing ".len()..])
        .and_then(|rest| rest.split(" in ").next());
    match (status, request) {
        (Some(status), Some(request)) => out.push_str(&format!(" ({status}, {request})")),
        (Some(status), None) => out.push_str(&format!(" ({status})")),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;
