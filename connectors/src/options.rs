//! A table's `WITH (connector = '...', ...)` options, parsed into typed specs.
//!
//! Unknown connectors and unknown options are errors that list what is accepted: a typo must
//! never be silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};

/// File formats the file connectors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    /// Apache Parquet; schema inferred from the first file's footer when not declared.
    Parquet,
    /// Comma (or `delimiter`) separated values.
    Csv,
    /// Newline-delimited JSON objects.
    Json,
}

impl FileFormat {
    /// The file extension matched when the path is a directory.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }

    /// The format of a path: from its extension, or for a directory from the first file below
    /// it with a known extension.
    pub fn detect(path: &str) -> Option<Self> {
        if let Some(f) = Self::from_path(path.trim_end_matches('/')) {
            return Some(f);
        }
        fn scan(dir: &std::path::Path) -> Option<FileFormat> {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in &entries {
                let name = p.file_name()?.to_string_lossy().into_owned();
                if name.starts_with('.') || name.starts_with('_') {
                    continue;
                }
                if p.is_file() {
                    if let Some(f) = FileFormat::from_path(&name) {
                        return Some(f);
                    }
                }
            }
            entries.iter().filter(|p| p.is_dir()).find_map(|p| scan(p))
        }
        if path.starts_with("s3://") || path.starts_with("s3a://") {
            return crate::file::detect_object_format(path).ok().flatten();
        }
        let p = std::path::Path::new(path);
        if p.is_dir() {
            scan(p)
        } else {
            None
        }
    }

    /// The format implied by a path's extension (`.parquet`, `.csv`, `.json`, `.jsonl`,
    /// `.ndjson`), for tables named by path in `sluice run -e`.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let ext = lower.rsplit('.').next()?;
        match ext {
            "parquet" => Some(FileFormat::Parquet),
            "csv" => Some(FileFormat::Csv),
            "json" | "jsonl" | "ndjson" => Some(FileFormat::Json),
            _ => None,
        }
    }
}

/// A file source: what to read and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSourceSpec {
    /// The table's name (for error messages).
    pub table: String,
    /// The format of every file.
    pub format: FileFormat,
    /// A file, a directory (all files with the format's extension below it) or a glob.
    pub path: String,
    /// CSV: whether the first line of each file is a header.
    pub csv_header: bool,
    /// CSV: the field delimiter.
    pub csv_delimiter: u8,
    /// Hive-style partition columns (`col=value` directories under the table's root), found by
    /// the driver when it first lists the files; their values come from each file's path.
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// Streamed: every epoch reads the files that appeared since the last one, in name order.
    #[serde(default)]
    pub stream: bool,
    /// Streamed: at most this many new files per epoch (not under `--trigger once`).
    #[serde(default)]
    pub max_files_per_trigger: Option<u64>,
    /// Object-store options (`aws_endpoint`, `aws_region`, ...) overriding the environment
    /// for this table's `s3://` path.
    #[serde(default)]
    pub storage: Vec<(String, String)>,
}

/// The Parquet sink: where and how to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParquetSinkSpec {
    /// The table's name; also names its commit records in the checkpoint.
    pub table: String,
    /// The table's root directory.
    pub path: String,
    /// Columns whose values name hive-style subdirectories (`col=value/`), in order.
    pub partition_by: Vec<String>,
    /// A writer starts a new file once the current one reaches this size.
    pub target_file_bytes: u64,
    /// Object-store options for an `s3://` path (see [`FileSourceSpec::storage`]).
    #[serde(default)]
    pub storage: Vec<(String, String)>,
}

/// How a Kafka record's value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KafkaFormat {
    /// Columns `key`, `value` (binary), `topic`, `partition`, `offset`, `timestamp`.
    Raw,
    /// A JSON object per record, decoded into the table's declared columns.
    Json,
}

/// What a source does with a record it cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadRecordPolicy {
    /// The epoch fails with an error naming topic, partition, offset and reason.
    Fail,
    /// The record is dropped and counted in the progress record.
    Skip,
    /// The raw record, its coordinates and the error go to the dead-letter Parquet table.
    DeadLetter,
}

/// Where a Kafka source starts when the checkpoint has no position for a partition yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartPosition {
    /// The oldest retained record.
    Earliest,
    /// Only records produced after the query's first epoch is planned.
    Latest,
    /// Explicit offsets per partition; partitions not listed start at the earliest.
    Offsets(BTreeMap<i32, i64>),
    /// The first record with a timestamp at or after this (ms since the Unix epoch).
    Timestamp(i64),
}

/// A Kafka source: where and how to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSourceSpec {
    /// The table's name (for error messages).
    pub table: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic.
    pub topic: String,
    /// How values are decoded.
    pub format: KafkaFormat,
    /// Where a partition without a recorded position starts.
    pub start: StartPosition,
    /// Most records one epoch reads across all partitions (`None`: no limit).
    pub max_records_per_trigger: Option<u64>,
    /// What happens to a record that does not decode.
    pub on_bad_record: BadRecordPolicy,
    /// The dead-letter table's directory (with `on_bad_record = 'dead_letter'`).
    pub dead_letter_path: Option<String>,
    /// Object-store options for an `s3://` dead-letter path (see [`FileSourceSpec::storage`]).
    #[serde(default)]
    pub storage: Vec<(String, String)>,
    /// What happens when offsets the query has not read yet are gone from the broker
    /// (`Fail` or `Skip`; skipped ranges are recorded in the checkpoint).
    pub on_offsets_lost: BadRecordPolicy,
    /// A consumer group to which committed offsets are also reported, for monitoring tools
    /// (the checkpoint's offsets log stays the truth).
    pub group_id: Option<String>,
    /// Extra librdkafka settings (`properties.KEY = 'VALUE'` options).
    pub properties: BTreeMap<String, String>,
    /// How long a reader waits for a record it knows exists before failing the task.
    pub read_timeout_ms: u64,
    /// Transactional producers write the topic: offsets of a read range that hold no record
    /// for a `read_committed` consumer (transaction markers, aborted records) are expected and
    /// counted, not data loss. librdkafka hides those records, so a reader cannot tell them
    /// from lost ones; the user says which topics have them.
    #[serde(default)]
    pub transactional: bool,
}

/// A Kafka sink: where and how to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSinkSpec {
    /// The table's name (for error messages).
    pub table: String,
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The topic.
    pub topic: String,
    /// Extra librdkafka settings (`properties.KEY = 'VALUE'` options).
    pub properties: BTreeMap<String, String>,
    /// The columns whose JSON forms each record's key (`key = 'a,b'`). `None` until planning
    /// decides: a keyed aggregation's output is keyed by its group columns, other records have
    /// no key.
    pub key: Option<Vec<String>>,
}

/// What a table's connector is, once its options have been validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectorSpec {
    /// `parquet`, `csv` or `json` files.
    Files {
        /// How to read the files.
        source: FileSourceSpec,
        /// How to write them (Parquet only).
        sink: Option<ParquetSinkSpec>,
    },
    /// `console`: rows printed by the driver (sink only).
    Console,
    /// `kafka`: a topic.
    Kafka {
        /// How to read it.
        source: KafkaSourceSpec,
        /// How to write it.
        sink: KafkaSinkSpec,
    },
    /// `nexmark`: the Nexmark benchmark's event generator (source only).
    Nexmark(crate::nexmark::NexmarkSpec),
}

/// Resolves a relative path against the current (driver's) working directory, so that every
/// process — executors run elsewhere, the committer — names the same file.
pub fn absolute(path: &str) -> String {
    if path.contains("://") {
        // A URL (s3://, file://) is absolute already.
        return path.to_string();
    }
    match std::path::absolute(path) {
        Ok(p) => {
            let mut s = p.to_string_lossy().into_owned();
            if path.ends_with('/') && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
        Err(_) => path.to_string(),
    }
}

/// Connector names accepted in `WITH (connector = ...)`.
pub const CONNECTORS: &[&str] = &["parquet", "csv", "json", "kafka", "nexmark", "console"];

/// Options of the `kafka` connector (besides `properties.*`).
const KAFKA_OPTIONS: &[&str] = &[
    "connector",
    "bootstrap_servers",
    "topic",
    "format",
    "start",
    "start_offsets",
    "start_timestamp_ms",
    "max_records_per_trigger",
    "on_bad_record",
    "dead_letter_path",
    "on_offsets_lost",
    "group_id",
    "read_timeout_ms",
    "transactional",
    "key",
];

impl ConnectorSpec {
    /// Validates `options` (keys lower-cased) for table `table`.
    pub fn parse(table: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let invalid = |message: String| ConnectorError::InvalidOptions {
            table: table.to_string(),
            message,
        };
        let connector = options.get("connector").ok_or_else(|| {
            invalid(format!(
                "missing option 'connector' (one of: {})",
                CONNECTORS.join(", ")
            ))
        })?;
        let allowed: &[&str] = match connector.as_str() {
            "parquet" => &[
                "connector",
                "path",
                "partition_by",
                "target_file_size_mb",
                "stream",
                "max_files_per_trigger",
            ],
            "csv" => &[
                "connector",
                "path",
                "header",
                "delimiter",
                "stream",
                "max_files_per_trigger",
            ],
            "json" => &["connector", "path", "stream", "max_files_per_trigger"],
            "console" => &["connector"],
            "nexmark" => &[
                "connector",
                "kind",
                "events",
                "rate",
                "max_events_per_trigger",
            ],
            "kafka" => KAFKA_OPTIONS,
            other => {
                return Err(invalid(format!(
                    "unknown connector '{other}' (known connectors: {})",
                    CONNECTORS.join(", ")
                )))
            }
        };
        let passthrough = |k: &str| {
            (connector == "kafka" && k.starts_with("properties."))
                || (k.starts_with("aws_")
                    && matches!(connector.as_str(), "parquet" | "csv" | "json" | "kafka"))
        };
        if let Some(unknown) = options
            .keys()
            .find(|k| !allowed.contains(&k.as_str()) && !passthrough(k))
        {
            return Err(invalid(format!(
                "unknown option '{unknown}' for connector '{connector}' (accepted: {})",
                allowed.join(", ")
            )));
        }
        if connector == "console" {
            return Ok(ConnectorSpec::Console);
        }
        if connector == "kafka" {
            let source = parse_kafka(table, options)?;
            let sink = KafkaSinkSpec {
                table: source.table.clone(),
                bootstrap_servers: source.bootstrap_servers.clone(),
                topic: source.topic.clone(),
                properties: source.properties.clone(),
                key: options.get("key").map(|k| {
                    k.split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect()
                }),
            };
            return Ok(ConnectorSpec::Kafka { source, sink });
        }
        if connector == "nexmark" {
            return parse_nexmark(table, options).map(ConnectorSpec::Nexmark);
        }
        let format = match connector.as_str() {
            "parquet" => FileFormat::Parquet,
            "csv" => FileFormat::Csv,
            _ => FileFormat::Json,
        };
        let path = options
            .get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid(format!("connector '{connector}' needs option 'path'")))?;
        let path = absolute(path);
        let csv_header = match options.get("header").map(|s| s.to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(invalid(format!(
                    "option 'header' must be 'true' or 'false', not '{v}'"
                )))
            }
        };
        let csv_delimiter = match options.get("delimiter") {
            None => b',',
            Some(d) if d.len() == 1 => d.as_bytes()[0],
            Some(d) if d == "\\t" => b'\t',
            Some(d) => {
                return Err(invalid(format!(
                    "option 'delimiter' must be one character, not '{d}'"
                )))
            }
        };
        let partition_by = options
            .get("partition_by")
            .map(|p| {
                p.split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let target_file_bytes = match options.get("target_file_size_mb") {
            None => 128 * 1024 * 1024,
            Some(v) => match v.parse::<u64>() {
                Ok(mb) if mb > 0 => mb * 1024 * 1024,
                _ => {
                    return Err(invalid(format!(
                        "option 'target_file_size_mb' must be a positive integer, not '{v}'"
                    )))
                }
            },
        };
        let stream = match options.get("stream").map(|s| s.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => {
                return Err(invalid(format!(
                    "option 'stream' must be 'true' or 'false', not '{v}'"
                )))
            }
        };
        let max_files_per_trigger = match options.get("max_files_per_trigger") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 && stream => Some(n),
                Ok(n) if n > 0 => return Err(invalid(
                    "option 'max_files_per_trigger' applies to streamed tables (stream = 'true')"
                        .into(),
                )),
                _ => {
                    return Err(invalid(format!(
                        "option 'max_files_per_trigger' must be a positive integer, not '{v}'"
                    )))
                }
            },
        };
        let storage = storage_options(table, options, Some(&path))?;
        let source = FileSourceSpec {
            table: table.to_string(),
            format,
            path: path.clone(),
            csv_header,
            csv_delimiter,
            partition_columns: Vec::new(),
            stream,
            max_files_per_trigger,
            storage: storage.clone(),
        };
        let sink = (format == FileFormat::Parquet).then(|| ParquetSinkSpec {
            table: table.to_string(),
            path,
            partition_by,
            target_file_bytes,
            storage,
        });
        Ok(ConnectorSpec::Files { source, sink })
    }

    /// The sink spec, or `None` when this connector cannot be written to.
    pub fn as_sink(&self) -> Option<crate::SinkSpec> {
        match self {
            ConnectorSpec::Files { sink, .. } => sink.clone().map(crate::SinkSpec::Parquet),
            ConnectorSpec::Kafka { sink, .. } => Some(crate::SinkSpec::Kafka(sink.clone())),
            ConnectorSpec::Console => Some(crate::SinkSpec::Console),
            ConnectorSpec::Nexmark(_) => None,
        }
    }

    /// The source spec, or an error naming why this table cannot be read from.
    pub fn as_source(&self, table: &str) -> Result<crate::SourceSpec> {
        match self {
            ConnectorSpec::Files { source, .. } => Ok(crate::SourceSpec::File(source.clone())),
            ConnectorSpec::Kafka { source, .. } => Ok(crate::SourceSpec::Kafka(source.clone())),
            ConnectorSpec::Nexmark(spec) => Ok(crate::SourceSpec::Nexmark(spec.clone())),
            ConnectorSpec::Console => Err(ConnectorError::InvalidOptions {
                table: table.to_string(),
                message: "connector 'console' can only be written to".into(),
            }),
        }
    }
}

fn parse_nexmark(
    table: &str,
    options: &BTreeMap<String, String>,
) -> Result<crate::nexmark::NexmarkSpec> {
    use crate::nexmark::{NexmarkKind, NexmarkSpec};
    let invalid = |message: String| ConnectorError::InvalidOptions {
        table: table.to_string(),
        message,
    };
    let kind = match options
        .get("kind")
        .map(|k| k.to_ascii_lowercase())
        .as_deref()
    {
        Some("bid") => NexmarkKind::Bid,
        Some("auction") => NexmarkKind::Auction,
        Some("person") => NexmarkKind::Person,
        Some(other) => {
            return Err(invalid(format!(
                "option 'kind' must be 'bid', 'auction' or 'person', not '{other}'"
            )))
        }
        None => {
            return Err(invalid(
                "connector 'nexmark' needs option 'kind' ('bid', 'auction' or 'person')".into(),
            ))
        }
    };
    let positive = |key: &str| -> Result<Option<u64>> {
        options
            .get(key)
            .map(|v| match v.trim().replace('_', "").parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(invalid(format!(
                    "option '{key}' must be a positive integer, not '{v}'"
                ))),
            })
            .transpose()
    };
    let events = positive("events")?;
    let rate = positive("rate")?;
    if events.is_none() && rate.is_none() {
        return Err(invalid(
            "connector 'nexmark' needs option 'events' (a bounded stream) or 'rate' (events per second, unbounded)".into(),
        ));
    }
    Ok(NexmarkSpec {
        table: table.to_string(),
        kind,
        events,
        rate: rate.unwrap_or(10_000),
        max_events_per_trigger: positive("max_events_per_trigger")?,
    })
}

fn parse_kafka(table: &str, options: &BTreeMap<String, String>) -> Result<KafkaSourceSpec> {
    let invalid = |message: String| ConnectorError::InvalidOptions {
        table: table.to_string(),
        message,
    };
    let required = |key: &str| {
        options
            .get(key)
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .ok_or_else(|| invalid(format!("connector 'kafka' needs option '{key}'")))
    };
    let bootstrap_servers = required("bootstrap_servers")?;
    let topic = required("topic")?;
    let format = match options
        .get("format")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("json") => KafkaFormat::Json,
        Some("raw") => KafkaFormat::Raw,
        Some(other) => {
            return Err(invalid(format!(
                "option 'format' must be 'json' or 'raw', not '{other}'"
            )))
        }
    };
    let number = |key: &str| -> Result<Option<i64>> {
        options
            .get(key)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| invalid(format!("option '{key}' must be an integer, not '{v}'")))
            })
            .transpose()
    };
    let start = match options
        .get("start")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("earliest") => StartPosition::Earliest,
        Some("latest") => StartPosition::Latest,
        Some("offsets") => {
            let spec = required("start_offsets")?;
            let mut offsets = BTreeMap::new();
            for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let parsed = pair.split_once(':').and_then(|(p, o)| {
                    Some((p.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
                });
                match parsed {
                    Some((p, o)) if p >= 0 && o >= 0 => {
                        offsets.insert(p, o);
                    }
                    _ => {
                        return Err(invalid(format!(
                            "option 'start_offsets' takes PARTITION:OFFSET pairs separated by commas (e.g. '0:100,1:250'), not '{pair}'"
                        )))
                    }
                }
            }
            StartPosition::Offsets(offsets)
        }
        Some("timestamp") => {
            StartPosition::Timestamp(number("start_timestamp_ms")?.ok_or_else(|| {
                invalid("start = 'timestamp' needs option 'start_timestamp_ms'".into())
            })?)
        }
        Some(other) => {
            return Err(invalid(format!(
            "option 'start' must be 'earliest', 'latest', 'offsets' or 'timestamp', not '{other}'"
        )))
        }
    };
    if !matches!(start, StartPosition::Offsets(_)) && options.contains_key("start_offsets") {
        return Err(invalid(
            "option 'start_offsets' needs start = 'offsets'".into(),
        ));
    }
    if !matches!(start, StartPosition::Timestamp(_)) && options.contains_key("start_timestamp_ms") {
        return Err(invalid(
            "option 'start_timestamp_ms' needs start = 'timestamp'".into(),
        ));
    }
    let max_records_per_trigger = match number("max_records_per_trigger")? {
        None => None,
        Some(n) if n > 0 => Some(n as u64),
        Some(n) => {
            return Err(invalid(format!(
                "option 'max_records_per_trigger' must be positive, not {n}"
            )))
        }
    };
    let policy = |key: &str, allow_dead_letter: bool| -> Result<BadRecordPolicy> {
        match options.get(key).map(|s| s.to_ascii_lowercase()).as_deref() {
            None | Some("fail") => Ok(BadRecordPolicy::Fail),
            Some("skip") => Ok(BadRecordPolicy::Skip),
            Some("dead_letter") if allow_dead_letter => Ok(BadRecordPolicy::DeadLetter),
            Some(other) => Err(invalid(format!(
                "option '{key}' must be {}, not '{other}'",
                if allow_dead_letter {
                    "'fail', 'skip' or 'dead_letter'"
                } else {
                    "'fail' or 'skip'"
                }
            ))),
        }
    };
    let on_bad_record = policy("on_bad_record", true)?;
    let on_offsets_lost = policy("on_offsets_lost", false)?;
    let dead_letter_path = options.get("dead_letter_path").map(|p| absolute(p));
    if on_bad_record == BadRecordPolicy::DeadLetter && dead_letter_path.is_none() {
        return Err(invalid(
            "on_bad_record = 'dead_letter' needs option 'dead_letter_path' (a directory for the dead-letter Parquet table)".into(),
        ));
    }
    if on_bad_record != BadRecordPolicy::DeadLetter && dead_letter_path.is_some() {
        return Err(invalid(
            "option 'dead_letter_path' needs on_bad_record = 'dead_letter'".into(),
        ));
    }
    let read_timeout_ms = match number("read_timeout_ms")? {
        None => 30_000,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(invalid(format!(
                "option 'read_timeout_ms' must be positive, not {n}"
            )))
        }
    };
    let transactional = match options
        .get("transactional")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(format!(
                "option 'transactional' must be 'true' or 'false', not '{other}'"
            )))
        }
    };
    let properties = options
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("properties.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    let storage = storage_options(table, options, dead_letter_path.as_deref())?;
    Ok(KafkaSourceSpec {
        storage,
        table: table.to_string(),
        bootstrap_servers,
        topic,
        format,
        start,
        max_records_per_trigger,
        on_bad_record,
        dead_letter_path,
        on_offsets_lost,
        group_id: options.get("group_id").cloned(),
        properties,
        read_timeout_ms,
        transactional,
    })
}

/// The table's `aws_*` options, checked against the `s3://` location they apply to.
fn storage_options(
    table: &str,
    options: &BTreeMap<String, String>,
    path: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let storage: Vec<(String, String)> = options
        .iter()
        .filter(|(k, _)| k.starts_with("aws_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if storage.is_empty() {
        return Ok(storage);
    }
    let invalid = |message: String| ConnectorError::InvalidOptions {
        table: table.to_string(),
        message,
    };
    match path {
        Some(path) if path.starts_with("s3://") || path.starts_with("s3a://") => {
            sluice_checkpoint::Location::parse_with(path, &storage)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(storage)
        }
        _ => Err(invalid(format!(
            "option '{}' applies to an s3:// path only",
            storage[0].0
        ))),
    }
}

#[cfg(test)]
mod tests;
