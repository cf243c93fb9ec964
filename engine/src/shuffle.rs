//! Shuffle outputs: written by tasks to local files, served to peers over QUIC, fetched by
//! downstream tasks (and by the driver for query results).
//!
//! Layout under an executor's work directory:
//!
//! ```text
//! shuffle/QUERY/EPOCH/sSTAGE/mMAP-rREDUCE.arrow   Arrow IPC stream of one output partition
//! ```
//!
//! Files are written under a temporary name and renamed when the task finishes, so a fetch never
//! sees a partial output. Empty partitions have no file, and a map task with no rows at all
//! touches no file or directory: which map tasks finished, with their rows per partition, is
//! kept in memory (an empty epoch costs no inode). Data moves executor-to-executor; the driver
//! never relays it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use sluice_checkpoint::{Epoch, QueryId};
use sluice_net::ipc::IpcStreamReader;
use sluice_net::{ClusterEndpoint, FrameReader, FrameWriter};
use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use crate::operator::nodes::ShuffleFetch;
use crate::protocol::{ExecutorId, FetchRequest, FetchResponse, MapOutputLocation, StageId};

/// Largest fetch request or response header accepted; anything bigger is malformed.
pub const MAX_FETCH_FRAME_BYTES: usize = 64 * 1024;

/// One finished map task: (query, epoch, stage, map partition).
type MapKey = (QueryId, u64, usize, usize);

/// An executor's shuffle files.
#[derive(Debug)]
pub struct ShuffleStore {
    root: PathBuf,
    /// What one map task's open output files may buffer in all (split over its partitions).
    task_buffer_bytes: usize,
    /// Finished map tasks with their rows per output partition.
    finished: std::sync::Mutex<HashMap<MapKey, Vec<u64>>>,
}

impl ShuffleStore {
    /// A store rooted at `WORK_DIR/shuffle`; a map task's output files buffer
    /// `task_buffer_bytes` in all (each partition's between 64 KiB and 1 MiB).
    pub fn new(work_dir: &Path, task_buffer_bytes: usize) -> std::io::Result<Self> {
        let root = work_dir.join("shuffle");
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            task_buffer_bytes,
            finished: Default::default(),
        })
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, HashMap<MapKey, Vec<u64>>> {
        self.finished.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stage_dir(&self, query: &QueryId, epoch: Epoch, stage: StageId) -> PathBuf {
        self.root
            .join(query.as_str())
            .join(epoch.0.to_string())
            .join(format!("s{}", stage.0))
    }

    fn data_path(&self, r: &FetchRequest) -> PathBuf {
        self.stage_dir(&r.query_id, r.epoch, r.stage).join(format!(
            "m{}-r{}.arrow",
            r.map_partition, r.reduce_partition
        ))
    }

    /// A writer for the outputs of one map task.
    pub fn writer(
        &self,
        query: &QueryId,
        epoch: Epoch,
        stage: StageId,
        map: usize,
        partitions: usize,
        schema: SchemaRef,
    ) -> std::io::Result<MapOutputWriter> {
        Ok(MapOutputWriter {
            dir: self.stage_dir(query, epoch, stage),
            created_dir: false,
            key: (query.clone(), epoch.0, stage.0, map),
            map,
            buffer: (self.task_buffer_bytes / partitions.max(1)).clamp(64 << 10, 1 << 20),
            schema,
            writers: (0..partitions).map(|_| None).collect(),
            rows: vec![0; partitions],
        })
    }

    /// What a fetch of `r` finds here.
    fn lookup(&self, r: &FetchRequest) -> Lookup {
        let key = (r.query_id.clone(), r.epoch.0, r.stage.0, r.map_partition);
        match self.finished().get(&key) {
            None => Lookup::Missing,
            Some(rows) if rows.get(r.reduce_partition).copied().unwrap_or(0) == 0 => Lookup::Empty,
            Some(_) => Lookup::Data(self.data_path(r)),
        }
    }

    /// Records a finished map task (its files, if any, are in place).
    fn finish(&self, key: MapKey, rows: Vec<u64>) {
        self.finished().insert(key, rows);
    }

    /// Deletes all outputs of a query.
    pub fn forget_query(&self, query: &QueryId) {
        self.finished().retain(|k, _| &k.0 != query);
        let _ = std::fs::remove_dir_all(self.root.join(query.as_str()));
    }

    /// Drops the shuffle outputs of `query`'s epochs up to and including `epoch`.
    pub fn forget_epochs(&self, query: &QueryId, epoch: Epoch, keep: &[(Epoch, StageId)]) {
        let kept = |e: u64, s: usize| keep.iter().any(|(ke, ks)| ke.0 == e && ks.0 == s);
        self.finished()
            .retain(|k, _| &k.0 != query || k.1 > epoch.0 || kept(k.1, k.2));
        let dir = self.root.join(query.as_str());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if n > epoch.0 {
                continue;
            }
            if !keep.iter().any(|(e, _)| e.0 == n) {
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            // An epoch with kept stages: only the others go.
            for stage in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let s = stage
                    .file_name()
                    .to_str()
                    .and_then(|s| s.strip_prefix('s')?.parse().ok());
                if !s.is_some_and(|s| kept(n, s)) {
                    let _ = std::fs::remove_dir_all(stage.path());
                }
            }
        }
    }

    /// Reads a local output as a stream (no network).
    fn read_local(
        &self,
        me: ExecutorId,
        request: FetchRequest,
        schema: SchemaRef,
    ) -> SendableRecordBatchStream {
        let lookup = self.lookup(&request);
        let mut builder =
            datafusion::physical_plan::stream::RecordBatchReceiverStream::builder(schema, 2);
        let tx = builder.tx();
        builder.spawn_blocking(move || {
            match lookup {
                Lookup::Empty => {}
                Lookup::Missing => {
                    let e = missing(&request, "not on this executor");
                    return Err(FetchFailed::error(&request, me, e.strip_backtrace()));
                }
                Lookup::Data(path) => {
                    let file = File::open(&path).map_err(DataFusionError::IoError)?;
                    let reader = StreamReader::try_new(std::io::BufReader::new(file), None)?;
                    for batch in reader {
                        if tx.blocking_send(Ok(batch?)).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        builder.build()
    }
}

enum Lookup {
    Data(PathBuf),
    Empty,
    Missing,
}

fn missing(r: &FetchRequest, why: &str) -> DataFusionError {
    DataFusionError::Execution(format!(
        "shuffle output of stage {} task {} partition {} (epoch {}) is missing: {why}",
        r.stage, r.map_partition, r.reduce_partition, r.epoch
    ))
}

/// Writes one map task's output partitions.
pub struct MapOutputWriter {
    dir: PathBuf,
    /// Whether `dir` exists yet (it is made for the first non-empty partition).
    created_dir: bool,
    key: MapKey,
    map: usize,
    /// Each output file's write buffer.
    buffer: usize,
    schema: SchemaRef,
    writers: Vec<Option<StreamWriter<BufWriter<File>>>>,
    rows: Vec<u64>,
}

impl MapOutputWriter {
    fn tmp_path(&self, reduce: usize) -> PathBuf {
        self.dir.join(format!(".m{}-r{reduce}.arrow.tmp", self.map))
    }

    /// Appends `batch` to output partition `reduce`.
    pub fn write(&mut self, reduce: usize, batch: &RecordBatch) -> datafusion::error::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writers[reduce].is_none() {
            if !self.created_dir {
                std::fs::create_dir_all(&self.dir)?;
                self.created_dir = true;
            }
            let file = File::create(self.tmp_path(reduce))?;
            self.writers[reduce] = Some(StreamWriter::try_new(
                BufWriter::with_capacity(self.buffer, file),
                &self.schema,
            )?);
        }
        self.writers[reduce]
            .as_mut()
            .expect("created above")
            .write(batch)?;
        self.rows[reduce] += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes every partition, publishes the files in `store` and returns rows per partition.
    pub fn finish(mut self, store: &ShuffleStore) -> datafusion::error::Result<MapOutputSizes> {
        let mut bytes = vec![0; self.writers.len()];
        for (reduce, size) in bytes.iter_mut().enumerate() {
            if let Some(mut w) = self.writers[reduce].take() {
                w.finish()?;
                let inner = w.into_inner()?;
                inner
                    .into_inner()
                    .map_err(|e| DataFusionError::IoError(e.into_error()))?;
                let path = self.dir.join(format!("m{}-r{reduce}.arrow", self.map));
                std::fs::rename(self.tmp_path(reduce), &path)?;
                *size = std::fs::metadata(&path)?.len();
            }
        }
        store.finish(self.key.clone(), self.rows.clone());
        Ok(MapOutputSizes {
            rows: std::mem::take(&mut self.rows),
            bytes,
        })
    }
}

/// What a map task wrote per output partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOutputSizes {
    /// Rows.
    pub rows: Vec<u64>,
    /// Bytes as stored (Arrow IPC files).
    pub bytes: Vec<u64>,
}

/// Serves fetch requests arriving on one connection until it closes. A malformed request
/// closes this connection (with a logged error); other connections are unaffected.
pub async fn serve_connection(conn: quinn::Connection, store: Arc<ShuffleStore>) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %conn.remote_address(), "data connection closed: {e}");
                return;
            }
        };
        let store = store.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut reader = FrameReader::<_, FetchRequest>::new(recv, MAX_FETCH_FRAME_BYTES);
            let request = match reader.expect().await {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer = %conn.remote_address(), "closing data connection: {e}");
                    conn.close(quinn::VarInt::from_u32(2), b"malformed frame");
                    return;
                }
            };
            if let Err(e) = respond(send, &store, &request).await {
                debug!(peer = %conn.remote_address(), "fetch of {request:?} aborted: {e}");
            }
        });
    }
}

async fn respond(
    send: quinn::SendStream,
    store: &ShuffleStore,
    request: &FetchRequest,
) -> std::io::Result<()> {
    let mut writer = FrameWriter::<_, FetchResponse>::new(send, MAX_FETCH_FRAME_BYTES);
    let lookup = store.lookup(request);
    let header = match &lookup {
        Lookup::Data(_) => FetchResponse::Data,
        Lookup::Empty => FetchResponse::Empty,
        Lookup::Missing => FetchResponse::Missing {
            message: "no such output on this executor".into(),
        },
    };
    writer.send(&header).await.map_err(std::io::Error::other)?;
    let mut send = writer.into_inner();
    if let Lookup::Data(path) = lookup {
        let mut file = tokio::fs::File::open(&path).await?;
        tokio::io::copy(&mut file, &mut send).await?;
    }
    send.shutdown().await?;
    Ok(())
}

/// Fetches shuffle outputs from peers (or locally when this process holds them).
#[derive(Debug)]
pub struct ShuffleClient {
    endpoint: ClusterEndpoint,
    /// This executor and its store: outputs it holds are read from disk, not over the network.
    local: Option<(ExecutorId, Arc<ShuffleStore>)>,
    /// Runtime running network I/O (fetches are spawned there, off the compute threads).
    network: tokio::runtime::Handle,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, quinn::Connection>>,
    /// Executors the driver declared lost: fetches from them fail at once.
    lost: std::sync::Mutex<std::collections::HashSet<ExecutorId>>,
    /// Wakes in-flight fetches when an executor is declared lost.
    lost_changed: tokio::sync::Notify,
}

/// An input of a task could not be fetched: the producing task's output is gone or its
/// executor unreachable. The driver answers by regenerating that output (lineage recovery).
#[derive(Debug, Clone, thiserror::Error)]
#[error("fetching the output of stage {stage} task {map_partition} from executor {executor} failed: {message}")]
pub struct FetchFailed {
    /// The producing stage.
    pub stage: StageId,
    /// The producing task's partition.
    pub map_partition: usize,
    /// Where the output was.
    pub executor: ExecutorId,
    /// What went wrong.
    pub message: String,
}

impl FetchFailed {
    fn error(request: &FetchRequest, executor: ExecutorId, message: String) -> DataFusionError {
        DataFusionError::External(Box::new(FetchFailed {
            stage: request.stage,
            map_partition: request.map_partition,
            executor,
            message,
        }))
    }

    /// The fetch failure inside `e`, however DataFusion wrapped it.
    pub fn find(e: &DataFusionError) -> Option<&FetchFailed> {
        match e {
            DataFusionError::External(inner) => inner
                .downcast_ref::<FetchFailed>()
                .or_else(|| inner.downcast_ref::<DataFusionError>().and_then(Self::find)),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Self::find(inner)
            }
            DataFusionError::Shared(inner) => Self::find(inner),
            DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
                arrow::error::ArrowError::ExternalError(x) => x
                    .downcast_ref::<FetchFailed>()
                    .or_else(|| x.downcast_ref::<DataFusionError>().and_then(Self::find)),
                _ => None,
            },
            _ => None,
        }
    }
}

impl ShuffleClient {
    /// A client using `endpoint`, spawning network I/O on `network`.
    pub fn new(
        endpoint: ClusterEndpoint,
        local: Option<(ExecutorId, Arc<ShuffleStore>)>,
        network: tokio::runtime::Handle,
    ) -> Self {
        Self {
            endpoint,
            local,
            network,
            connections: tokio::sync::Mutex::new(HashMap::new()),
            lost: Default::default(),
            lost_changed: tokio::sync::Notify::new(),
        }
    }

    /// The driver declared `executor` lost: its connection is closed and fetches from it,
    /// current and future, fail at once with [`FetchFailed`].
    pub async fn mark_lost(&self, executor: ExecutorId, addr: Option<SocketAddr>) {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(executor);
        self.lost_changed.notify_waiters();
        if let Some(addr) = addr {
            if let Some(c) = self.connections.lock().await.remove(&addr) {
                c.close(quinn::VarInt::from_u32(3), b"peer declared lost");
            }
        }
    }

    fn is_lost(&self, executor: ExecutorId) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&executor)
    }

    /// Connects to `peers` in the background, so that the first shuffle read from each finds
    /// its connection (and TLS handshake) done. Failures are left to the reads themselves.
    pub fn connect_ahead(self: &Arc<Self>, peers: Vec<SocketAddr>) {
        for addr in peers {
            let client = self.clone();
            self.network.spawn(async move {
                if client.connections.lock().await.contains_key(&addr) {
                    return;
                }
                // Not under the lock: an unreachable peer must not hold up reads from others.
                match client.endpoint.connect(addr).await {
                    Ok(c) => {
                        client.connections.lock().await.entry(addr).or_insert(c);
                    }
                    Err(e) => debug!(peer = %addr, "connecting ahead failed: {e}"),
                }
            });
        }
    }

    async fn connection(
        &self,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, sluice_net::NetError> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(&addr) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let c = self.endpoint.connect(addr).await?;
        conns.insert(addr, c.clone());
        Ok(c)
    }

    /// Streams one remote output, sending batches into `tx`.
    async fn fetch_remote(
        self: Arc<Self>,
        location: MapOutputLocation,
        request: FetchRequest,
        tx: tokio::sync::mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    ) {
        let executor = location.executor;
        let fetch = async {
            let ext = |e: sluice_net::NetError| DataFusionError::External(Box::new(e));
            let started = std::time::Instant::now();
            let conn = self.connection(location.addr).await.map_err(ext)?;
            tracing::trace!(target: "sluice::latency", stage = request.stage.0, map = request.map_partition, us = started.elapsed().as_micros() as u64, "data connection ready");
            let (send, recv) = conn.open_bi().await.map_err(|e| ext(e.into()))?;
            let mut writer = FrameWriter::<_, FetchRequest>::new(send, MAX_FETCH_FRAME_BYTES);
            writer.send(&request).await.map_err(ext)?;
            let mut send = writer.into_inner();
            let _ = send.finish();
            let mut reader = FrameReader::<_, FetchResponse>::new(recv, MAX_FETCH_FRAME_BYTES);
            match reader.expect().await.map_err(ext)? {
                FetchResponse::Empty => Ok(()),
                FetchResponse::Missing { message } => Err(missing(
                    &request,
                    &format!("executor {} says: {message}", location.executor),
                )),
                FetchResponse::Data => {
                    let (recv, buffered) = reader.into_parts();
                    let mut ipc = IpcStreamReader::new(recv, buffered);
                    tracing::trace!(target: "sluice::latency", stage = request.stage.0, map = request.map_partition, us = started.elapsed().as_micros() as u64, "fetch answered");
                    while let Some(batch) = ipc.next_batch().await.map_err(ext)? {
                        if tx.send(Ok(batch)).await.is_err() {
                            break; // consumer gone
                        }
                    }
                    Ok(())
                }
            }
        };
        let lost = async {
            loop {
                let changed = self.lost_changed.notified();
                if self.is_lost(executor) {
                    return;
                }
                changed.await;
            }
        };
        let result = tokio::select! {
            r = fetch => r,
            _ = lost => Err(DataFusionError::Execution("the driver declared it lost".into())),
        };
        if let Err(e) = result {
            let message = match FetchFailed::find(&e) {
                Some(f) => f.message.clone(),
                None => crate::error::describe_datafusion(&e),
            };
            let _ = tx
                .send(Err(FetchFailed::error(&request, executor, message)))
                .await;
        }
    }
}

/// The fetcher handed to tasks: an `Arc<ShuffleClient>` so fetches can outlive the call.
#[derive(Debug, Clone)]
pub struct Fetcher(pub Arc<ShuffleClient>);

impl ShuffleFetch for Fetcher {
    fn fetch(
        &self,
        location: &MapOutputLocation,
        request: FetchRequest,
        schema: SchemaRef,
    ) -> SendableRecordBatchStream {
        if let Some((me, store)) = &self.0.local {
            if *me == location.executor {
                return store.read_local(*me, request, schema);
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        self.0
            .network
            .spawn(self.0.clone().fetch_remote(location.clone(), request, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn forgetting_epochs_keeps_the_stages_still_read_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(dir.path(), 1 << 20).unwrap();
        let query = QueryId::new("q").unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
                .unwrap();
        for epoch in [1, 2, 3] {
            for stage in [0, 1] {
                let mut w = store
                    .writer(&query, Epoch(epoch), StageId(stage), 0, 1, schema.clone())
                    .unwrap();
                w.write(0, &batch).unwrap();
                w.finish(&store).unwrap();
            }
        }
        let request = |epoch, stage| FetchRequest {
            query_id: query.clone(),
            epoch: Epoch(epoch),
            stage: StageId(stage),
            map_partition: 0,
            reduce_partition: 0,
        };
        // Epoch 2 committed; stage 1 of epoch 1 is a static table's scan read by later epochs.
        store.forget_epochs(&query, Epoch(2), &[(Epoch(1), StageId(1))]);
        let found = |epoch, stage| matches!(store.lookup(&request(epoch, stage)), Lookup::Data(p) if p.exists());
        assert!(found(1, 1), "kept");
        assert!(!found(1, 0) && !found(2, 0) && !found(2, 1), "forgotten");
        assert!(found(3, 0) && found(3, 1), "newer than the committed epoch");
        // Once nothing keeps it, it goes too.
        store.forget_epochs(&query, Epoch(3), &[]);
        assert!(!found(1, 1) && !found(3, 1));
    }
}
