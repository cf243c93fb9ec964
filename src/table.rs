//! Reading a Parquet table back the way any reader would: list `*.parquet` files under the
//! table directory (skipping hidden `.`/`_` entries), read them with the `parquet` crate, and
//! take hive-style `col=value` directory names as extra columns. Nothing here uses Sluice's
//! sink code.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Every data file of a table, sorted.
pub fn parquet_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
}

/// Every file anywhere under `root`, hidden or not (to check nothing stray is left behind).
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    fn all(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                all(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut out = Vec::new();
    all(root, &mut out);
    out.sort();
    out
}

/// The table's rows as strings: file columns in file order, then partition columns in
/// directory order (`col=value`, percent-decoded). Sorted, so order does not matter.
pub fn read_rows(root: &Path) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for file in parquet_files(root) {
        let partition_values: Vec<String> = file
            .strip_prefix(root)
            .expect("under root")
            .parent()
            .map(|p| {
                p.components()
                    .filter_map(|c| c.as_os_str().to_str())
                    .filter_map(|c| c.split_once('=').map(|(_, v)| percent_decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).expect("open"))
                .expect("a valid parquet file")
                .build()
                .expect("reader");
        for batch in reader {
            let batch = batch.expect("readable batch");
            for mut row in batch_rows(&batch) {
                row.extend(partition_values.iter().cloned());
                rows.push(row);
            }
        }
    }
    rows.sort();
    rows
}

/// Renders each row of `batch` as strings.
pub fn batch_rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("displayable"))
        .collect();
    (0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect()
}

fn percent_decode(s: &str) -> String {
    if s == "__HIVE_DEFAULT_PARTITION__" {
        return "NULL".into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
