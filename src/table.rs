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
    let visible = |e: &walkdir::DirEntry| {
        let name = e.file_name().to_string_lossy();
        e.depth() == 0 || !(name.starts_with('.') || name.starts_with('_'))
    };
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(visible)
        .flatten()
        .filter(|e| {
            !e.file_type().is_dir() && e.file_name().to_string_lossy().ends_with(".parquet")
        })
        .map(walkdir::DirEntry::into_path)
        .collect();
    out.sort();
    out
}

/// Every file anywhere under `root`, hidden or not (to check nothing stray is left behind).
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(walkdir::DirEntry::into_path)
        .collect();
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
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The python interpreter of the reader virtualenv (`$SLUICE_READERS_PYTHON`, or installed into
/// the tool cache on first use by `scripts/install-readers.sh`, so tests never skip).
pub fn readers_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("SLUICE_READERS_PYTHON") {
                return PathBuf::from(p);
            }
            let root = crate::repo_root();
            let out = std::process::Command::new("bash")
                .arg(root.join("scripts/install-readers.sh"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("running scripts/install-readers.sh");
            assert!(out.status.success(), "installing DuckDB failed");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// Every value of the integer column `column` of the Parquet table under `root`, as DuckDB
/// reads it (`read_parquet('root/**/*.parquet', hive_partitioning = true)`): what a user's
/// query engine sees, independent of Sluice and of the Rust `parquet` crate. Empty when the
/// table has no files.
pub fn duckdb_int_column(root: &Path, column: &str) -> Vec<i64> {
    if parquet_files(root).is_empty() {
        return Vec::new();
    }
    let script = r#"
import sys, duckdb
root, column = sys.argv[1], sys.argv[2]
rows = duckdb.sql(f"select \"{column}\" from read_parquet('{root}/**/*.parquet', hive_partitioning = true)").fetchall()
sys.stdout.write("\n".join(str(r[0]) for r in rows))
"#;
    let out = std::process::Command::new(readers_python())
        .args(["-c", script])
        .arg(root)
        .arg(column)
        .output()
        .expect("running DuckDB");
    assert!(
        out.status.success(),
        "DuckDB could not read {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().expect("an integer from DuckDB"))
        .collect()
}

/// The rows DuckDB returns for `sql` (each row's values joined by tabs), for checks that must
/// not depend on Sluice's or DataFusion's code: `read_parquet` over a Sluice table included.
pub fn duckdb_rows(sql: &str) -> Vec<String> {
    let script = r#"
import sys, duckdb
duckdb.sql("SET enable_progress_bar = false")  # it would print to stdout on slow queries
for row in duckdb.sql(sys.argv[1]).fetchall():
    print("\t".join(str(v) for v in row))
"#;
    let out = std::process::Command::new(readers_python())
        .args(["-c", script, sql])
        .output()
        .expect("running DuckDB");
    assert!(
        out.status.success(),
        "DuckDB failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
