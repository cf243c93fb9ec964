//! Bad input never panics and never publishes anything: each case exits non-zero with a message
//! naming what was wrong and where.

mod common;

use common::*;
use sluice::table::all_files;

fn job(dir: &std::path::Path, sql: &str) -> String {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    fails(&sluice(dir, &["run", "job.sql"]))
}

#[test]
fn malformed_csv_row_names_file_and_line_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/a.csv"), "id,amount\n1,10\n2,20\n").unwrap();
    std::fs::write(d.join("in/b.csv"), "id,amount\n3,30\n4,forty\n5,50\n").unwrap();
    let err = job(
        d,
        "CREATE TABLE t (id BIGINT, amount BIGINT) WITH (connector = 'csv', path = 'in/');
         CREATE TABLE out WITH (connector = 'parquet', path = 'out/');
         INSERT INTO out SELECT id, amount FROM t;",
    );
    assert!(err.contains("in/b.csv:3:"), "{err}");
    assert!(err.contains("forty"), "{err}");
    assert!(
        all_files(&d.join("out")).is_empty(),
        "nothing published: {:?}",
        all_files(&d.join("out"))
    );
}

#[test]
fn malformed_json_line_names_file_and_line_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(
        d.join("in/e.json"),
        "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3\n{\"id\": 4}\n",
    )
    .unwrap();
    let err = job(
        d,
        "CREATE TABLE t (id BIGINT) WITH (connector = 'json', path = 'in/');
         CREATE TABLE out WITH (connector = 'parquet', path = 'out/');
         INSERT INTO out SELECT id FROM t;",
    );
    assert!(err.contains("in/e.json:3:"), "{err}");
    assert!(all_files(&d.join("out")).is_empty());
}

#[test]
fn missing_input_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = job(
        dir.path(),
        "CREATE TABLE t WITH (connector = 'parquet', path = 'no/such/dir/');
         SELECT count(*) FROM t;",
    );
    assert!(err.contains("no/such/dir/' does not exist"), "{err}");
    let err = fails(&sluice(dir.path(), &["run", "missing-job.sql"]));
    assert!(err.contains("reading job file missing-job.sql"), "{err}");
}

#[test]
fn sql_errors_point_at_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("x.csv"), "a,b\n1,2\n").unwrap();
    // Syntax error on line 2.
    let err = job(
        d,
        "CREATE TABLE t WITH (connector = 'csv', path = 'x.csv');\nSELEC a FROM t;",
    );
    assert!(err.contains("job.sql:2:1:"), "{err}");
    // Unknown column on line 3, column 3.
    let err = job(
        d,
        "CREATE TABLE t WITH (connector = 'csv', path = 'x.csv');\nSELECT a,\n  c FROM t;",
    );
    assert!(
        err.contains("job.sql:3:3:") && err.contains("No field named c"),
        "{err}"
    );
    // Unknown table.
    let err = job(d, "SELECT * FROM nowhere;");
    assert!(err.contains("unknown table 'nowhere'"), "{err}");
    // Inline queries are located too.
    let err = fails(&sluice(d, &["run", "-e", "SELECT a + FROM 'x.csv'"]));
    assert!(err.contains("query:1:"), "{err}");
}

#[test]
fn unknown_connector_or_option_is_refused_with_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let err = job(
        dir.path(),
        "CREATE TABLE t WITH (connector = 'kafkaa', path = 'x');\nSELECT 1;",
    );
    assert!(
        err.contains("job.sql:1:")
            && err.contains("unknown connector 'kafkaa'")
            && err.contains("parquet, csv, json"),
        "{err}"
    );
    let err = job(
        dir.path(),
        "CREATE TABLE t WITH (connector = 'csv', path = 'x', delimeter = ';');\nSELECT 1;",
    );
    assert!(
        err.contains("unknown option 'delimeter'") && err.contains("delimiter"),
        "{err}"
    );
    let err = job(
        dir.path(),
        "CREATE TABLE t WITH (connector = 'csv', path = 'x');\nCREATE TABLE o WITH (connector = 'parquet', path = 'o', partition_by = 'nope');\nINSERT INTO o SELECT 1 AS a;",
    );
    assert!(err.contains("partition_by column 'nope'"), "{err}");
}
