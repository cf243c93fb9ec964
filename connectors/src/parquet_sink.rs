//! The exactly-once Parquet sink.
//!
//! Writers stage files under `TABLE/.sluice-staging/QUERY/eEPOCH-ATTEMPT/` with a `.staged`
//! suffix — a hidden directory and a non-`.parquet` name, so nothing that lists the table
//! (`read_parquet('TABLE/**/*.parquet')`, pyarrow datasets, Spark) sees them. At commit the
//! driver records the epoch's files in the checkpoint, then renames each into place under a
//! name derived only from (query, epoch, task, sequence):
//!
//! ```text
//! TABLE/channel=web/part-QUERY8-e000000-t00003-000.parquet
//! ```
//!
//! A replayed epoch therefore rewrites the same names rather than adding files, and a commit
//! interrupted half-way is completed from its record. With `partition_by`, each task writes at
//! most one file per partition value per epoch (plus rolls at `target_file_size_mb`), and the
//! partition columns live in the directory names, not in the files (hive convention).
//!
//! On an object store (`path = 's3://bucket/table'`) the layout is the same: a writer uploads
//! each staged object while it writes it (multipart, bounded memory), and publishing copies the
//! staged object to its final name (a server-side copy: readers see it complete or not at all)
//! and deletes the staged one. A publish interrupted at any point is completed from the record
//! exactly as on a file system: a final object whose staged one is gone was already published.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sluice_checkpoint::location::ObjectWriter;
use sluice_checkpoint::{CheckpointStore, Epoch, Location, ObjectRoot, QueryId};

use crate::error::{ConnectorError, Result};
use crate::options::ParquetSinkSpec;
use crate::{
    CommitSummary, Committer, Recorded, Sink, SinkWriter, StagedFile, WriterContext, WriterReceipt,
};

/// Directory under the table root holding staged (unpublished) files.
pub const STAGING_DIR: &str = ".sluice-staging";
/// Value written for a null partition value (the hive convention).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// A Parquet table being written.
#[derive(Debug, Clone)]
pub struct ParquetSink {
    spec: ParquetSinkSpec,
    /// Schema of the rows the sink receives (partition columns included).
    input_schema: SchemaRef,
    /// Indices of the partition columns in `input_schema`.
    partition_indices: Vec<usize>,
    /// Indices of the columns written into files.
    data_indices: Vec<usize>,
    /// Schema of the files.
    file_schema: SchemaRef,
    /// Where the table is.
    location: Location,
}

impl ParquetSink {
    /// A sink for rows of `input_schema`; every `partition_by` column must be in it.
    pub fn new(spec: ParquetSinkSpec, input_schema: SchemaRef) -> Result<Self> {
        let mut partition_indices = Vec::new();
        for col in &spec.partition_by {
            let idx = input_schema
                .index_of(col)
                .map_err(|_| ConnectorError::InvalidOptions {
                    table: spec.table.clone(),
                    message: format!(
                        "partition_by column '{col}' is not in the inserted columns ({})",
                        input_schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            partition_indices.push(idx);
        }
        let data_indices: Vec<usize> = (0..input_schema.fields().len())
            .filter(|i| !partition_indices.contains(i))
            .collect();
        if data_indices.is_empty() {
            return Err(ConnectorError::InvalidOptions {
                table: spec.table.clone(),
                message: "every column is a partition column; nothing would be written into files"
                    .into(),
            });
        }
        let file_schema = Arc::new(input_schema.project(&data_indices)?);
        let location = Location::parse_with(&spec.path, &spec.storage)?;
        Ok(Self {
            location,
            spec,
            input_schema,
            partition_indices,
            data_indices,
            file_schema,
        })
    }

    /// The driver-side committer for this table.
    pub fn committer(&self) -> ParquetCommitter {
        ParquetCommitter {
            spec: self.spec.clone(),
            location: self.location.clone(),
        }
    }

    /// The staging directory of a task attempt, relative to the table root.
    fn staging_dir(&self, ctx: &WriterContext) -> String {
        format!(
            "{}/e{}-{}",
            staging_root(&ctx.query_id),
            ctx.epoch.0,
            ctx.attempt
        )
    }
}

/// A query's staging directory, relative to the table root.
fn staging_root(query_id: &QueryId) -> String {
    format!("{STAGING_DIR}/{}", query_id.as_str())
}

/// Where a file is written: a local file, or an object uploaded as it is written.
enum Target {
    Local(File),
    Object(ObjectWriter),
}

impl std::io::Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Local(f) => f.write(buf),
            Target::Object(o) => o.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::Local(f) => f.flush(),
            Target::Object(o) => o.flush(),
        }
    }
}

impl Sink for ParquetSink {
    fn open_writer(&self, ctx: &WriterContext) -> Result<Box<dyn SinkWriter>> {
        // The staging directory is made with the first file: a task with no rows touches nothing.
        Ok(Box::new(ParquetSinkWriter {
            sink: self.clone(),
            ctx: ctx.clone(),
            dir: self.staging_dir(ctx),
            open: HashMap::new(),
            next_seq: HashMap::new(),
            done: Vec::new(),
            staged_count: 0,
        }))
    }
}

struct OpenFile {
    writer: ArrowWriter<Target>,
    /// The local path, or the object's path relative to the table root.
    staged_path: PathBuf,
    final_path: String,
    rows: u64,
}

/// Stages one task's output, one open file per partition directory.
struct ParquetSinkWriter {
    sink: ParquetSink,
    ctx: WriterContext,
    /// The staging directory, relative to the table root.
    dir: String,
    /// Open file per partition directory ("" when unpartitioned).
    open: HashMap<String, OpenFile>,
    /// Next file sequence number per partition directory.
    next_seq: HashMap<String, u32>,
    done: Vec<StagedFile>,
    staged_count: u64,
}

impl ParquetSinkWriter {
    fn write_part(&mut self, part_dir: &str, batch: RecordBatch) -> Result<()> {
        if !self.open.contains_key(part_dir) {
            let seq = self.next_seq.entry(part_dir.to_string()).or_insert(0);
            let name = format!(
                "part-{}-e{:06}-t{:05}-{:03}.parquet",
                self.ctx.query_id.short(),
                self.ctx.epoch.0,
                self.ctx.task,
                *seq
            );
            *seq += 1;
            let final_path = if part_dir.is_empty() {
                name
            } else {
                format!("{part_dir}/{name}")
            };
            let staged_rel = format!("{}/{}.staged", self.dir, self.staged_count);
            let (file, staged_path) = match &self.sink.location {
                Location::Local(root) => {
                    let dir = root.join(&self.dir);
                    if self.staged_count == 0 {
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| ConnectorError::io("create", &dir, e))?;
                    }
                    let staged_path = root.join(&staged_rel);
                    let file = File::create(&staged_path)
                        .map_err(|e| ConnectorError::io("create", &staged_path, e))?;
                    (Target::Local(file), staged_path)
                }
                Location::Object(root) => (
                    Target::Object(ObjectWriter::new(root, &staged_rel)),
                    PathBuf::from(&staged_rel),
                ),
            };
            self.staged_count += 1;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
                ))
                .build();
            let writer = ArrowWriter::try_new(file, self.sink.file_schema.clone(), Some(props))
                .map_err(|source| ConnectorError::Parquet {
                    path: staged_path.clone(),
                    source,
                })?;
            self.open.insert(
                part_dir.to_string(),
                OpenFile {
                    writer,
                    staged_path,
                    final_path,
                    rows: 0,
                },
            );
        }
        let file = self.open.get_mut(part_dir).expect("inserted above");
        file.rows += batch.num_rows() as u64;
        file.writer
            .write(&batch)
            .map_err(|source| ConnectorError::Parquet {
                path: file.staged_path.clone(),
                source,
            })?;
        if file.writer.bytes_written() as u64 + file.writer.in_progress_size() as u64
            >= self.sink.spec.target_file_bytes
        {
            let file = self.open.remove(part_dir).expect("present");
            self.close(file)?;
        }
        Ok(())
    }

    fn close(&mut self, file: OpenFile) -> Result<()> {
        let OpenFile {
            writer,
            staged_path,
            final_path,
            rows,
        } = file;
        let started = std::time::Instant::now();
        let target = writer
            .into_inner()
            .map_err(|source| ConnectorError::Parquet {
                path: staged_path.clone(),
                source,
            })?;
        let written = started.elapsed();
        let bytes = match target {
            Target::Local(f) => {
                f.sync_all()
                    .map_err(|e| ConnectorError::io("sync", &staged_path, e))?;
                f.metadata().map(|m| m.len()).unwrap_or(0)
            }
            Target::Object(o) => o.finish()?,
        };
        tracing::trace!(target: "sluice::latency", rows, footer_us = written.as_micros() as u64, synced_us = started.elapsed().as_micros() as u64, "sink file closed");
        self.done.push(StagedFile {
            staged_path: staged_path.to_string_lossy().into_owned(),
            final_path,
            rows,
            bytes,
        });
        Ok(())
    }
}

impl SinkWriter for ParquetSinkWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let data = batch.project(&self.sink.data_indices)?;
        let data = RecordBatch::try_new(self.sink.file_schema.clone(), data.columns().to_vec())?;
        if self.sink.partition_indices.is_empty() {
            return self.write_part("", data);
        }
        // Group row indices by partition directory, in first-seen order.
        let options = FormatOptions::default().with_null(NULL_PARTITION);
        let formatters = self
            .sink
            .partition_indices
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let names: Vec<&str> = self
            .sink
            .partition_indices
            .iter()
            .map(|&i| self.sink.input_schema.field(i).name().as_str())
            .collect();
        let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut key = String::new();
        for row in 0..batch.num_rows() {
            key.clear();
            for (n, (name, f)) in names.iter().zip(&formatters).enumerate() {
                if n > 0 {
                    key.push('/');
                }
                key.push_str(name);
                key.push('=');
                escape_partition_value(&f.value(row).to_string(), &mut key);
            }
            let slot = match index.get(&key) {
                Some(&s) => s,
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[slot].1.push(row as u32);
        }
        for (dir, rows) in groups {
            let indices = UInt32Array::from(rows);
            let part = arrow::compute::take_record_batch(&data, &indices)?;
            self.write_part(&dir, part)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<WriterReceipt> {
        let mut open: Vec<(String, OpenFile)> = self.open.drain().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, file) in open {
            self.close(file)?;
        }
        Ok(WriterReceipt {
            files: std::mem::take(&mut self.done),
            ..Default::default()
        })
    }
}

/// Escapes characters that cannot appear in a path segment, hive-style (`%XX`).
fn escape_partition_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if c.is_control()
            || matches!(
                c,
                '/' | '\\' | '%' | '=' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | '#' | '\''
            )
        {
            for b in c.to_string().bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if value.is_empty() {
        out.push_str(NULL_PARTITION);
    }
}

/// What the checkpoint records for a Parquet sink commit: every file and where it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkCommitRecord {
    /// The staged files and their final paths.
    pub files: Vec<StagedFile>,
}

/// Publishes a Parquet table's epochs.
#[derive(Debug, Clone)]
pub struct ParquetCommitter {
    spec: ParquetSinkSpec,
    location: Location,
}

impl ParquetCommitter {
    /// A committer for the table `spec` describes.
    pub fn new(spec: ParquetSinkSpec) -> Result<Self> {
        let location = Location::parse_with(&spec.path, &spec.storage)?;
        Ok(Self { spec, location })
    }

    fn publish(&self, record: &SinkCommitRecord) -> Result<CommitSummary> {
        let root = match &self.location {
            Location::Local(root) => root,
            Location::Object(root) => return publish_objects(root, record),
        };
        let mut summary = CommitSummary::default();
        let mut dirs = std::collections::BTreeSet::new();
        for file in &record.files {
            let target = root.join(&file.final_path);
            let staged = Path::new(&file.staged_path);
            if staged.exists() {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| ConnectorError::io("create", parent, e))?;
                    dirs.insert(parent.to_path_buf());
                }
                std::fs::rename(staged, &target)
                    .map_err(|e| ConnectorError::io("publish", &target, e))?;
            } else if !target.exists() {
                return Err(ConnectorError::io(
                    "publish",
                    &target,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "neither the staged file {} nor the published file exists",
                            file.staged_path
                        ),
                    ),
                ));
            }
            summary.files += 1;
            summary.rows += file.rows;
            summary.bytes += file.bytes;
        }
        for dir in dirs {
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
        }
        Ok(summary)
    }
}

impl Committer for ParquetCommitter {
    fn commit(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<CommitSummary> {
        if let Some(summary) = self.recover(store, epoch)? {
            return Ok(summary);
        }
        let Some(record) = self.write_record(store, epoch, receipts)? else {
            return Ok(CommitSummary::default());
        };
        let summary = self.publish(&record)?;
        self.abort(&store.metadata().query_id, epoch);
        Ok(summary)
    }

    fn record(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<Recorded> {
        Ok(match self.write_record(store, epoch, receipts)? {
            Some(_) => Recorded::Publish,
            None => Recorded::Done(CommitSummary::default()),
        })
    }

    fn publish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<bool> {
        Ok(store
            .read_sink_record::<SinkCommitRecord>(&self.spec.table, epoch)?
            .is_some())
    }

    fn finish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<CommitSummary> {
        self.recover(store, epoch)?.ok_or_else(|| {
            ConnectorError::Internal(format!(
                "no publication of epoch {epoch} to table '{}' is recorded",
                self.spec.table
            ))
        })
    }

    fn abort(&self, query_id: &QueryId, epoch: Epoch) {
        let table = match &self.location {
            Location::Local(root) => root,
            Location::Object(root) => {
                // Best effort, as locally: what stays is under a hidden, non-.parquet name.
                let dir = staging_root(query_id);
                let prefix = format!("{dir}/e{}-", epoch.0);
                if let Ok(staged) = root.list(&dir) {
                    for (rel, _) in staged.iter().filter(|(rel, _)| rel.starts_with(&prefix)) {
                        let _ = root.delete(rel);
                    }
                }
                return;
            }
        };
        let root = table.join(staging_root(query_id));
        if let Ok(entries) = std::fs::read_dir(&root) {
            let prefix = format!("e{}-", epoch.0);
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        // Remove the staging directories once empty, so the table holds only published data.
        let _ = std::fs::remove_dir(&root);
        let _ = std::fs::remove_dir(table.join(STAGING_DIR));
    }
}

impl ParquetCommitter {
    /// Writes `sinks/TABLE/N` listing the staged files of `receipts`; `None` when there are
    /// none (an epoch without output rows needs no record: a re-run would publish nothing too).
    fn write_record(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: Vec<WriterReceipt>,
    ) -> Result<Option<SinkCommitRecord>> {
        let mut files: Vec<StagedFile> = receipts.into_iter().flat_map(|r| r.files).collect();
        if files.is_empty() {
            self.abort(&store.metadata().query_id, epoch);
            return Ok(None);
        }
        files.sort_by(|a, b| a.final_path.cmp(&b.final_path));
        let record = SinkCommitRecord { files };
        store.write_sink_record(&self.spec.table, epoch, &record)?;
        Ok(Some(record))
    }

    /// Completes a publication that was recorded but maybe not finished. `Ok(None)` when
    /// nothing was recorded for `epoch` (the epoch must run again).
    fn recover(&self, store: &CheckpointStore, epoch: Epoch) -> Result<Option<CommitSummary>> {
        let Some(record) = store.read_sink_record::<SinkCommitRecord>(&self.spec.table, epoch)?
        else {
            return Ok(None);
        };
        let summary = self.publish(&record)?;
        self.abort(&store.metadata().query_id, epoch);
        Ok(Some(summary))
    }
}

/// Publishes recorded files on an object store: a server-side copy of each staged object to its
/// final name, then the staged object's deletion. Idempotent: a file whose staged object is gone
/// and whose final object exists was published by an earlier (interrupted) attempt.
fn publish_objects(root: &ObjectRoot, record: &SinkCommitRecord) -> Result<CommitSummary> {
    let mut summary = CommitSummary::default();
    for file in &record.files {
        if root.exists(&file.staged_path)? {
            root.copy(&file.staged_path, &file.final_path)?;
            root.delete(&file.staged_path)?;
        } else if !root.exists(&file.final_path)? {
            return Err(ConnectorError::Internal(format!(
                "cannot publish {}: neither the staged object {} nor the published one exists",
                root.url_of(&file.final_path),
                root.url_of(&file.staged_path)
            )));
        }
        summary.files += 1;
        summary.rows += file.rows;
        summary.bytes += file.bytes;
    }
    Ok(summary)
}

/// The schema of a Parquet sink's files for a given input (partition columns removed).
pub fn file_schema(input: &Schema, partition_by: &[String]) -> Schema {
    Schema::new(
        input
            .fields()
            .iter()
            .filter(|f| !partition_by.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn stage_then_publish_is_idempotent_and_partitioned() {
        let dir = tempfile::tempdir().unwrap();
        let table = dir.path().join("out");
        let ckpt = CheckpointStore::open_or_create(
            dir.path().join("ckpt"),
            "fp",
            &sluice_checkpoint::QueryId::new("query-123456789").unwrap(),
        )
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("c", DataType::Utf8, true),
        ]));
        let spec = ParquetSinkSpec {
            table: "out".into(),
            path: table.to_string_lossy().into_owned(),
            partition_by: vec!["c".into()],
            target_file_bytes: 1 << 30,
            storage: Vec::new(),
        };
        let sink = ParquetSink::new(spec, schema.clone()).unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a/b"), None, Some("a/b")])),
            ],
        )
        .unwrap();
        let ctx = WriterContext {
            query_id: QueryId::new("query-123456789").unwrap(),
            epoch: Epoch(0),
            task: 0,
            attempt: "x".into(),
        };
        let mut w = sink.open_writer(&ctx).unwrap();
        w.write(&batch).unwrap();
        let receipt = w.finish().unwrap();
        assert_eq!(receipt.files.len(), 2);
        let summary = sink
            .committer()
            .commit(&ckpt, Epoch(0), vec![receipt.clone()])
            .unwrap();
        assert_eq!(summary.rows, 3);
        assert!(table
            .join("c=a%2Fb/part-query-12-e000000-t00000-000.parquet")
            .exists());
        assert!(table.join(format!("c={NULL_PARTITION}")).is_dir());
        assert!(
            !table.join(STAGING_DIR).exists(),
            "staging removed after commit"
        );
        // A replayed commit of the same epoch publishes nothing new.
        let again = sink
            .committer()
            .commit(&ckpt, Epoch(0), vec![receipt])
            .unwrap();
        assert_eq!(again, summary);
    }
}
