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
}

/// Resolves a relative path against the current (driver's) working directory, so that every
/// process — executors run elsewhere, the committer — names the same file.
pub fn absolute(path: &str) -> String {
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
pub const CONNECTORS: &[&str] = &["parquet", "csv", "json", "console"];

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
            "parquet" => &["connector", "path", "partition_by", "target_file_size_mb"],
            "csv" => &["connector", "path", "header", "delimiter"],
            "json" => &["connector", "path"],
            "console" => &["connector"],
            other => {
                return Err(invalid(format!(
                    "unknown connector '{other}' (known connectors: {})",
                    CONNECTORS.join(", ")
                )))
            }
        };
        if let Some(unknown) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown option '{unknown}' for connector '{connector}' (accepted: {})",
                allowed.join(", ")
            )));
        }
        if connector == "console" {
            return Ok(ConnectorSpec::Console);
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
        let source = FileSourceSpec {
            table: table.to_string(),
            format,
            path: path.clone(),
            csv_header,
            csv_delimiter,
            partition_columns: Vec::new(),
        };
        let sink = (format == FileFormat::Parquet).then(|| ParquetSinkSpec {
            table: table.to_string(),
            path,
            partition_by,
            target_file_bytes,
        });
        Ok(ConnectorSpec::Files { source, sink })
    }

    /// The source spec, or an error naming why this table cannot be read from.
    pub fn as_source(&self, table: &str) -> Result<&FileSourceSpec> {
        match self {
            ConnectorSpec::Files { source, .. } => Ok(source),
            ConnectorSpec::Console => Err(ConnectorError::InvalidOptions {
                table: table.to_string(),
                message: "connector 'console' can only be written to".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parquet_sink_options() {
        let spec = ConnectorSpec::parse(
            "t",
            &opts(&[
                ("connector", "parquet"),
                ("path", "out/"),
                ("partition_by", "a, b"),
            ]),
        )
        .unwrap();
        let ConnectorSpec::Files {
            sink: Some(sink), ..
        } = spec
        else {
            panic!("{spec:?}")
        };
        assert_eq!(sink.partition_by, vec!["a", "b"]);
    }

    #[test]
    fn unknown_connector_and_option_are_named() {
        let err = ConnectorSpec::parse("t", &opts(&[("connector", "kafkaa")])).unwrap_err();
        assert!(
            err.to_string().contains("unknown connector 'kafkaa'"),
            "{err}"
        );
        let err = ConnectorSpec::parse(
            "t",
            &opts(&[("connector", "csv"), ("path", "x"), ("pth", "y")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown option 'pth'"), "{err}");
        let err = ConnectorSpec::parse("t", &opts(&[("connector", "csv")])).unwrap_err();
        assert!(err.to_string().contains("needs option 'path'"), "{err}");
    }
}
