//! File sources: Parquet, CSV and JSON lines.
//!
//! A path names one file, a directory (every file with the format's extension below it, hidden
//! `.`/`_` entries skipped) or a glob. The driver lists files and, for Parquet, row groups
//! ([`FileSource::plan_splits`]); executors read one split at a time in batches, so memory stays
//! bounded however large the input is.
//!
//! A path may also be an object-store URL (`s3://bucket/prefix/`), read by range requests
//! ([`object`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaDataReader;

use crate::error::{ConnectorError, Result};
use crate::options::{FileFormat, FileSourceSpec};
use crate::{
    FileProgress, FileSplit, PlanRequest, ReadContext, Source, SourceEpoch, Split, SplitReader,
};

mod object;
mod parquet_split;
use parquet_split::ParquetSplitReader;

/// The format of the first object with a known extension below an object-store URL (`None`:
/// there is none); an error names the URL and the store's answer.
pub fn detect_object_format(url: &str) -> Result<Option<FileFormat>> {
    object::detect(url)
}

/// Rows per batch produced by file readers.
pub const BATCH_ROWS: usize = 8192;
/// Rows sampled to infer a CSV or JSON schema.
const INFER_ROWS: usize = 1000;

/// A Parquet, CSV or JSON-lines file source.
#[derive(Debug, Clone)]
pub struct FileSource {
    spec: FileSourceSpec,
    schema: SchemaRef,
}

impl FileSource {
    /// A source with a known schema (declared in DDL, or inferred earlier by the driver).
    pub fn new(spec: FileSourceSpec, schema: SchemaRef) -> Self {
        Self { spec, schema }
    }

    /// Infers the schema from the first file: Parquet from its footer, CSV and JSON from its
    /// first rows.
    pub fn infer(mut spec: FileSourceSpec) -> Result<Self> {
        let files = list_files(&spec)?;
        let first = &files[0];
        spec.partition_columns = partition_values(&spec.path, first)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let file = Input::open(first, &spec.storage)?;
        let schema = match spec.format {
            FileFormat::Parquet => {
                let parquet_err = |source| ConnectorError::Parquet {
                    path: first.clone(),
                    source,
                };
                let fields = match file {
                    Input::Local(f) => ParquetRecordBatchReaderBuilder::try_new(f)
                        .map_err(parquet_err)?
                        .schema()
                        .fields()
                        .clone(),
                    Input::Object(o) => ParquetRecordBatchReaderBuilder::try_new(o)
                        .map_err(parquet_err)?
                        .schema()
                        .fields()
                        .clone(),
                };
                Schema::new(fields)
            }
            FileFormat::Csv => {
                let format = arrow::csv::reader::Format::default()
                    .with_header(spec.csv_header)
                    .with_delimiter(spec.csv_delimiter);
                format
                    .infer_schema(file.reader(), Some(INFER_ROWS))
                    .map_err(|e| bad_record(first, &e.to_string()))?
                    .0
            }
            FileFormat::Json => {
                arrow::json::reader::infer_json_schema(
                    BufReader::new(file.reader()),
                    Some(INFER_ROWS),
                )
                .map_err(|e| bad_record(first, &e.to_string()))?
                .0
            }
        };
        // Hive-style partition columns come after the file's columns, as strings.
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        spec.partition_columns
            .retain(|c| schema.index_of(c).is_err());
        for c in &spec.partition_columns {
            fields.push(Field::new(c, DataType::Utf8, true));
        }
        Ok(Self::new(spec, Arc::new(Schema::new(fields))))
    }

    /// A source with declared columns; declared columns named like the table's `col=value`
    /// directories are read from the paths (cast to their declared type).
    pub fn declared(mut spec: FileSourceSpec, schema: SchemaRef) -> Result<Self> {
        let files = match list_files(&spec) {
            // A streamed table may start empty.
            Err(ConnectorError::MissingPath { .. })
                if spec.stream && may_start_empty(&spec.path) =>
            {
                return Ok(Self::new(spec, schema))
            }
            other => other?,
        };
        spec.partition_columns = partition_values(&spec.path, &files[0])
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| schema.index_of(k).is_ok())
            .collect();
        Ok(Self::new(spec, schema))
    }

    /// The source's spec.
    pub fn spec(&self) -> &FileSourceSpec {
        &self.spec
    }
}

impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn bounded(&self) -> bool {
        !self.spec.stream
    }

    fn size_bytes(&self) -> Option<u64> {
        if self.spec.stream {
            return None;
        }
        let mut total = 0;
        for path in list_files(&self.spec).ok()? {
            total += match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(_) => Input::open(&path, &self.spec.storage).ok()?.size(),
            };
        }
        Some(total)
    }

    fn plan_epoch(&self, request: &PlanRequest<'_>) -> Result<SourceEpoch> {
        if self.spec.stream {
            return self.plan_stream_epoch(request);
        }
        // Files are bounded: the first epoch reads them all, later ones nothing — unless the
        // files are the static side of a streaming query, which every epoch reads in full.
        if request.previous.is_some() && !request.rescan {
            return Ok(SourceEpoch::default());
        }
        let files = list_files(&self.spec)?;
        Ok(SourceEpoch {
            splits: self.splits_of(&files)?,
            fingerprint: request
                .rescan
                .then(|| self.fingerprint(&files))
                .transpose()?,
            ..Default::default()
        })
    }

    fn open(
        &self,
        split: &Split,
        projection: Option<&[usize]>,
        _ctx: &ReadContext,
    ) -> Result<Box<dyn SplitReader>> {
        let Split::File(split) = split else {
            return Err(ConnectorError::InvalidOptions {
                table: self.spec.table.clone(),
                message: format!("a file source was handed a non-file split: {split:?}"),
            });
        };
        self.open_split(split, projection)
    }
}

impl FileSource {
    /// Every file (Parquet: every row group) of the source, as splits.
    pub fn plan_splits(&self) -> Result<Vec<Split>> {
        self.splits_of(&list_files(&self.spec)?)
    }

    /// A streamed table's next epoch: the files after the last one read, in name order (at
    /// most `max_files_per_trigger`). A file that appears sorting before one already read
    /// would be silently skipped by name order, so it is an error that names it.
    fn plan_stream_epoch(&self, request: &PlanRequest<'_>) -> Result<SourceEpoch> {
        let files = match list_files(&self.spec) {
            Ok(files) => files,
            Err(ConnectorError::MissingPath { .. }) if may_start_empty(&self.spec.path) => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let progress = request
            .previous
            .and_then(|p| p.files.clone())
            .unwrap_or_default();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let read = names
            .iter()
            .filter(|n| progress.count > 0 && **n <= progress.last)
            .count() as u64;
        if read > progress.count {
            let newest = files
                .iter()
                .zip(&names)
                .filter(|(_, n)| **n <= progress.last)
                .max_by_key(|(p, _)| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            return Err(ConnectorError::InvalidOptions {
                table: self.spec.table.clone(),
                message: format!(
                    "{} file(s) appeared that sort before '{}', which was already read (most recently modified: '{newest}'); a streamed table reads files in name order, so new files must sort after every file already read (use timestamped or numbered names)",
                    read - progress.count,
                    progress.last
                ),
            });
        }
        let mut new: Vec<PathBuf> = files
            .into_iter()
            .zip(&names)
            .filter(|(_, n)| progress.count == 0 || **n > progress.last)
            .map(|(p, _)| p)
            .collect();
        if let (Some(max), true) = (self.spec.max_files_per_trigger, request.respect_limit) {
            new.truncate(max as usize);
        }
        let next = match new.last() {
            Some(last) => FileProgress {
                last: last.to_string_lossy().into_owned(),
                count: progress.count + new.len() as u64,
            },
            None => progress,
        };
        Ok(SourceEpoch {
            splits: self.splits_of(&new)?,
            files: Some(next),
            ..Default::default()
        })
    }

    /// What `files` are now: their names, sizes and (local files) modification times, hashed.
    /// A replaced or rewritten file changes it.
    fn fingerprint(&self, files: &[PathBuf]) -> Result<String> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for path in files {
            path.hash(&mut hasher);
            match std::fs::metadata(path) {
                Ok(meta) => {
                    meta.len().hash(&mut hasher);
                    meta.modified().ok().hash(&mut hasher);
                }
                // An object: its size (a HEAD request).
                Err(_) => Input::open(path, &self.spec.storage)?
                    .size()
                    .hash(&mut hasher),
            }
        }
        Ok(format!("{:016x}", hasher.finish()))
    }

    fn splits_of(&self, files: &[PathBuf]) -> Result<Vec<Split>> {
        let mut splits = Vec::new();
        for path in files {
            let name = path.to_string_lossy().into_owned();
            match self.spec.format {
                FileFormat::Parquet => {
                    let parquet_err = |source| ConnectorError::Parquet {
                        path: path.clone(),
                        source,
                    };
                    let metadata = match Input::open(path, &self.spec.storage)? {
                        Input::Local(f) => ParquetMetaDataReader::new().parse_and_finish(&f),
                        Input::Object(o) => ParquetMetaDataReader::new().parse_and_finish(&o),
                    }
                    .map_err(parquet_err)?;
                    for (i, rg) in metadata.row_groups().iter().enumerate() {
                        splits.push(Split::File(FileSplit {
                            path: name.clone(),
                            row_groups: Some(vec![i]),
                            bytes: rg.compressed_size().max(0) as u64,
                        }));
                    }
                }
                FileFormat::Csv | FileFormat::Json => {
                    let bytes = Input::open(path, &self.spec.storage)?.size();
                    splits.push(Split::File(FileSplit {
                        path: name,
                        row_groups: None,
                        bytes,
                    }));
                }
            }
        }
        Ok(splits)
    }

    fn open_split(
        &self,
        split: &FileSplit,
        projection: Option<&[usize]>,
    ) -> Result<Box<dyn SplitReader>> {
        if self.spec.partition_columns.is_empty() {
            return self.open_file(&self.schema, split, projection);
        }
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.unwrap_or(&all);
        let file_schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .filter(|f| !self.spec.partition_columns.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let values: std::collections::HashMap<String, Option<String>> =
            partition_values(&self.spec.path, Path::new(&split.path))
                .into_iter()
                .collect();
        let mut file_projection = Vec::new();
        let mut columns = Vec::new();
        for &i in projection {
            let field = self.schema.field(i);
            if self.spec.partition_columns.contains(field.name()) {
                columns.push(OutputColumn::Partition(
                    values.get(field.name()).cloned().flatten(),
                ));
            } else {
                file_projection.push(file_schema.index_of(field.name())?);
                columns.push(OutputColumn::File(file_projection.len() - 1));
            }
        }
        // Only partition columns wanted: read one file column for the row counts.
        if file_projection.is_empty() && !file_schema.fields().is_empty() {
            file_projection.push(0);
        }
        let inner = self.open_file(&file_schema, split, Some(&file_projection))?;
        Ok(Box::new(PartitionedReader {
            inner,
            columns,
            target: Arc::new(self.schema.project(projection)?),
        }))
    }
}

/// Where an output column of a partitioned table comes from.
enum OutputColumn {
    /// The n-th column read from the file.
    File(usize),
    /// A constant from the file's path (`None`: the hive null partition).
    Partition(Option<String>),
}

/// Adds a file's partition values to the batches read from it.
struct PartitionedReader {
    inner: Box<dyn SplitReader>,
    columns: Vec<OutputColumn>,
    target: SchemaRef,
}

impl SplitReader for PartitionedReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(batch) = self.inner.next_batch()? else {
            return Ok(None);
        };
        let rows = batch.num_rows();
        let mut out: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (column, field) in self.columns.iter().zip(self.target.fields()) {
            out.push(match column {
                OutputColumn::File(n) => batch.column(*n).clone(),
                OutputColumn::Partition(value) => {
                    let strings: ArrayRef =
                        Arc::new(StringArray::from(vec![value.as_deref(); rows]));
                    arrow::compute::cast(&strings, field.data_type())?
                }
            });
        }
        Ok(Some(RecordBatch::try_new_with_options(
            self.target.clone(),
            out,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?))
    }
}

/// The `col=value` directories of `file` below the table root named by `table_path`, in order,
/// percent-decoded; the hive null marker becomes `None`.
pub fn partition_values(table_path: &str, file: &Path) -> Vec<(String, Option<String>)> {
    let root = if let Some(i) = table_path.find(['*', '?', '[']) {
        Path::new(&table_path[..i])
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    } else {
        PathBuf::from(table_path)
    };
    let Some(dir) = file.parent() else {
        return Vec::new();
    };
    let Ok(relative) = dir.strip_prefix(&root) else {
        return Vec::new();
    };
    relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .filter_map(|c| c.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| {
            let value = (v != crate::parquet_sink::NULL_PARTITION).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            });
            (k.to_string(), value)
        })
        .collect()
}

impl FileSource {
    /// Opens a split's file with `schema` (the file's own columns) and `projection` into it.
    fn open_file(
        &self,
        schema: &SchemaRef,
        split: &FileSplit,
        projection: Option<&[usize]>,
    ) -> Result<Box<dyn SplitReader>> {
        let target = match projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        let path = PathBuf::from(&split.path);
        let file = Input::open(&path, &self.spec.storage)?;
        Ok(match self.spec.format {
            FileFormat::Parquet => Box::new(match file {
                Input::Local(f) => ParquetSplitReader::open(path, f, split, target)?,
                Input::Object(o) => ParquetSplitReader::open(path, o, split, target)?,
            }),
            FileFormat::Csv => {
                let reader = arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(self.spec.csv_header)
                    .with_delimiter(self.spec.csv_delimiter)
                    .with_batch_size(BATCH_ROWS);
                let reader = match projection {
                    Some(p) => reader.with_projection(p.to_vec()),
                    None => reader,
                };
                let reader = reader.build(file.reader())?;
                Box::new(CsvSplitReader { path, reader })
            }
            FileFormat::Json => Box::new(JsonSplitReader::new(path, file.reader(), target)?),
        })
    }
}

/// Whether a streamed table's path may hold no files yet: an existing directory or a glob (a
/// missing directory is a mistake worth an error, not an empty stream).
fn may_start_empty(path: &str) -> bool {
    path.starts_with("s3://") || path.contains(['*', '?', '[']) || Path::new(path).is_dir()
}

/// Lists the files a spec's path names, sorted; an error when there are none.
pub fn list_files(spec: &FileSourceSpec) -> Result<Vec<PathBuf>> {
    let local;
    let path = match sluice_checkpoint::Location::parse_with(&spec.path, &spec.storage)? {
        sluice_checkpoint::Location::Object(root) => {
            if root.url().contains(['*', '?', '[']) {
                return Err(ConnectorError::InvalidOptions {
                    table: spec.table.clone(),
                    message: format!(
                        "'{}': globs are not supported on an object store; name a prefix (a \
                         \"directory\") and every .{} object below it is read",
                        spec.path,
                        spec.format.extension()
                    ),
                });
            }
            let files = object::list(&root, spec.format)?;
            if files.is_empty() {
                return Err(ConnectorError::MissingPath {
                    table: spec.table.clone(),
                    path: spec.path.clone(),
                });
            }
            return Ok(files.into_iter().map(PathBuf::from).collect());
        }
        sluice_checkpoint::Location::Local(path) => {
            local = path.to_string_lossy().into_owned();
            local.as_str()
        }
    };
    let mut files = Vec::new();
    if path.contains(['*', '?', '[']) {
        let entries = glob::glob(path).map_err(|e| ConnectorError::InvalidOptions {
            table: spec.table.clone(),
            message: format!("invalid glob '{path}': {e}"),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                let p = e.path().to_path_buf();
                ConnectorError::io("list", p, e.into())
            })?;
            if entry.is_file() {
                files.push(entry);
            }
        }
    } else {
        let root = Path::new(path);
        if root.is_file() {
            files.push(root.to_path_buf());
        } else if root.is_dir() {
            walk(root, spec.format, &mut files)?;
        }
    }
    if files.is_empty() {
        return Err(ConnectorError::MissingPath {
            table: spec.table.clone(),
            path: path.to_string(),
        });
    }
    files.sort();
    Ok(files)
}

/// Every file of `format` below `dir`, skipping hidden and `_`-prefixed entries (staging
/// directories, `_SUCCESS` markers) as Spark and Hive do. Symbolic links are followed.
fn walk(dir: &Path, format: FileFormat, out: &mut Vec<PathBuf>) -> Result<()> {
    let visible = |e: &walkdir::DirEntry| {
        e.depth() == 0 || {
            let name = e.file_name().to_string_lossy();
            !name.starts_with('.') && !name.starts_with('_')
        }
    };
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .filter_entry(visible)
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            ConnectorError::io("list", path, e.into())
        })?;
        let name = entry.file_name().to_string_lossy();
        if !entry.file_type().is_dir() && FileFormat::from_path(&name) == Some(format) {
            out.push(entry.into_path());
        }
    }
    Ok(())
}

/// An input file: local, or an object read by ranges.
enum Input {
    Local(File),
    Object(object::ObjectFile),
}

impl Input {
    /// Opens `path`: a local path or an object's URL (as listed), with the table's
    /// object-store options.
    fn open(path: &Path, storage: &[(String, String)]) -> Result<Input> {
        let text = path.to_string_lossy();
        if text.starts_with("s3://") || text.starts_with("s3a://") {
            return Ok(Input::Object(object::ObjectFile::open(&text, storage)?));
        }
        File::open(path)
            .map(Input::Local)
            .map_err(|e| ConnectorError::io("open", path, e))
    }

    fn size(&self) -> u64 {
        match self {
            Input::Local(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            Input::Object(o) => o.size(),
        }
    }

    /// The whole file, front to back.
    fn reader(self) -> Box<dyn Read + Send> {
        match self {
            Input::Local(f) => Box::new(f),
            Input::Object(o) => Box::new(o.reader()),
        }
    }
}

pub(super) fn bad_record(path: &Path, message: &str) -> ConnectorError {
    ConnectorError::BadRecord {
        path: path.to_path_buf(),
        line: None,
        message: message.to_string(),
    }
}

/// Reorders and casts `batch`'s columns to `target` by name.
pub(super) fn align(path: &Path, batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(RecordBatch::try_new_with_options(
            target.clone(),
            batch.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let col =
            batch
                .column_by_name(field.name())
                .ok_or_else(|| ConnectorError::SchemaMismatch {
                    path: path.to_path_buf(),
                    message: format!("file has no column '{}'", field.name()),
                })?;
        let col = if col.data_type() == field.data_type() {
            col.clone()
        } else {
            arrow::compute::cast(col, field.data_type()).map_err(|e| {
                ConnectorError::SchemaMismatch {
                    path: path.to_path_buf(),
                    message: format!(
                        "column '{}' has type {} which cannot be read as {}: {e}",
                        field.name(),
                        col.data_type(),
                        field.data_type()
                    ),
                }
            })?
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

struct CsvSplitReader {
    path: PathBuf,
    reader: arrow::csv::reader::BufReader<BufReader<Box<dyn Read + Send>>>,
}

impl SplitReader for CsvSplitReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self.reader.next() {
            None => Ok(None),
            Some(Ok(batch)) => Ok(Some(batch)),
            Some(Err(e)) => {
                let mut message = e.to_string();
                // arrow-csv counts records from 0 (header included); files count lines from 1.
                let line = line_in_message(&message).map(|n| {
                    message = message.replace(&format!(" at line {n}"), "");
                    n + 1
                });
                Err(ConnectorError::BadRecord {
                    path: self.path.clone(),
                    line,
                    message,
                })
            }
        }
    }
}

/// arrow-csv reports `... at line N ...`; lift N into the error's location.
fn line_in_message(message: &str) -> Option<u64> {
    let rest = &message[message.find("at line ")? + "at line ".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Reads newline-delimited JSON, keeping the raw lines of the current batch so that a failure
/// can be traced to its exact line.
struct JsonSplitReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
    schema: SchemaRef,
    decoder: arrow::json::reader::Decoder,
    next_line: u64,
}

impl JsonSplitReader {
    fn new(path: PathBuf, file: Box<dyn Read + Send>, schema: SchemaRef) -> Result<Self> {
        let decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(BATCH_ROWS)
            .build_decoder()?;
        Ok(Self {
            path,
            lines: BufReader::with_capacity(1 << 20, file).lines(),
            schema,
            decoder,
            next_line: 1,
        })
    }

    /// Finds which of `lines` (starting at line `first`) fails to decode on its own.
    fn locate(&self, lines: &[(u64, String)], fallback: String) -> ConnectorError {
        for (n, line) in lines {
            let decoded = arrow::json::ReaderBuilder::new(self.schema.clone())
                .build_decoder()
                .and_then(|mut d| d.decode(line.as_bytes()).and_then(|_| d.flush()));
            if let Err(e) = decoded {
                return ConnectorError::BadRecord {
                    path: self.path.clone(),
                    line: Some(*n),
                    message: e.to_string(),
                };
            }
        }
        ConnectorError::BadRecord {
            path: self.path.clone(),
            line: None,
            message: fallback,
        }
    }
}

impl SplitReader for JsonSplitReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let mut batch_lines: Vec<(u64, String)> = Vec::new();
        while batch_lines.len() < BATCH_ROWS {
            let Some(line) = self.lines.next() else { break };
            let n = self.next_line;
            self.next_line += 1;
            let line = line.map_err(|e| ConnectorError::BadRecord {
                path: self.path.clone(),
                line: Some(n),
                message: e.to_string(),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            if let Err(e) = self.decoder.decode(line.as_bytes()) {
                batch_lines.push((n, line));
                return Err(self.locate(&batch_lines, e.to_string()));
            }
            // A complete object may leave the tape decoder waiting for a separator.
            if let Err(e) = self.decoder.decode(b"\n") {
                batch_lines.push((n, line));
                return Err(self.locate(&batch_lines, e.to_string()));
            }
            batch_lines.push((n, line));
        }
        if batch_lines.is_empty() {
            return Ok(None);
        }
        match self.decoder.flush() {
            Ok(batch) => Ok(batch),
            Err(e) => Err(self.locate(&batch_lines, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
