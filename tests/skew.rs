//! Skew and small partitions: a join (both sides shuffled: `--broadcast-threshold 0`) where one
//! key holds ~30 % of the large side's rows has its
//! hot shuffle partition split across tasks (the progress record says how), gives DuckDB's
//! answer, and is timed against the same job with skew handling off, in one run; a query over
//! little data runs its many tiny shuffle partitions as few tasks.

mod common;

use common::{events, ok, sluice};
use sluice::table::duckdb_rows;

/// Rows of the large side; 30 % of them have key 0.
const FACTS: u64 = 6_000_000;
/// Keys of the small side (one row each).
const KEYS: u64 = 20_000;

fn data(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("data/facts")).unwrap();
    std::fs::create_dir_all(dir.join("data/dims")).unwrap();
    let written = duckdb_rows(&format!(
        "COPY (SELECT i, CASE WHEN i % 10 < 3 THEN 0 ELSE 1 + (i * 7919) % {KEYS} END AS k, \
                 repeat('x', 40) AS pad FROM range({FACTS}) t(i)) \
           TO '{facts}' (FORMAT parquet, ROW_GROUP_SIZE 100000); \
         COPY (SELECT k, 'name-' || k AS name FROM range({}) t(k)) TO '{dims}' (FORMAT parquet); \
         SELECT (SELECT count(*) FROM '{facts}'), (SELECT count(*) FROM '{dims}')",
        KEYS + 1,
        facts = dir.join("data/facts/part-0.parquet").display(),
        dims = dir.join("data/dims/part-0.parquet").display(),
    ));
    assert_eq!(written, vec![format!("{FACTS}\t{}", KEYS + 1)]);
}

const JOIN: &str = "SELECT f.i, f.k, d.name FROM facts f JOIN dims d ON f.k = d.k";

/// Runs the join into `out-NAME/`; returns its wall time and its progress record.
fn run(
    dir: &std::path::Path,
    name: &str,
    select: &str,
    flags: &[&str],
) -> (f64, serde_json::Value) {
    std::fs::write(
        dir.join(format!("{name}.sql")),
        format!(
            "CREATE TABLE facts WITH (connector = 'parquet', path = 'data/facts/');\n\
             CREATE TABLE dims WITH (connector = 'parquet', path = 'data/dims/');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'out-{name}/');\n\
             INSERT INTO out {select};\n"
        ),
    )
    .unwrap();
    let events_file = format!("events-{name}.jsonl");
    let mut args = vec![
        "run",
        &format!("{name}.sql") as &str,
        "--executors",
        "2",
        "--slots",
        "1",
        "--parallelism",
        "8",
        "--events",
        &events_file,
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    ok(&sluice(dir, &args));
    let secs = started.elapsed().as_secs_f64();
    let progress = events(&dir.join(&events_file))
        .into_iter()
        .find(|e| e["event"] == "epoch_committed")
        .expect("the epoch committed")["progress"]
        .clone();
    (secs, progress)
}

/// DuckDB's check of `out-NAME/` against the join over the same files: (rows expected, rows
/// written, rows that differ).
fn check(dir: &std::path::Path, name: &str) -> (u64, u64, u64) {
    let rows = duckdb_rows(&format!(
        "WITH want AS (SELECT f.i, f.k, d.name FROM read_parquet('{d}/data/facts/*.parquet') f \
                       JOIN read_parquet('{d}/data/dims/*.parquet') d ON f.k = d.k), \
              got AS (SELECT i, k, name FROM read_parquet('{d}/out-{name}/**/*.parquet')) \
         SELECT (SELECT count(*) FROM want), (SELECT count(*) FROM got), \
           (SELECT count(*) FROM ((SELECT * FROM want EXCEPT ALL SELECT * FROM got) \
            UNION ALL (SELECT * FROM got EXCEPT ALL SELECT * FROM want)))",
        d = dir.display()
    ));
    let v: Vec<u64> = rows[0].split('\t').map(|v| v.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

/// The stages the driver adapted, with what it did.
fn adapted(progress: &serde_json::Value) -> Vec<serde_json::Value> {
    progress["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["adaptive"].is_null())
        .cloned()
        .collect()
}

/// Stage `id`'s record.
fn stage(progress: &serde_json::Value, id: &serde_json::Value) -> serde_json::Value {
    progress["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| &s["stage"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no stage {id}: {progress}"))
}

#[test]
fn a_hot_join_key_is_split_across_tasks_and_the_answer_equals_duckdbs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    data(d);
    // Both sides shuffled by key (the small side would be broadcast otherwise).
    let on_flags = [
        "--broadcast-threshold",
        "0",
        "--skew-factor",
        "3",
        "--skew-min-bytes",
        "1MiB",
        "--target-task-bytes",
        "0",
    ];
    let off_flags = [
        "--broadcast-threshold",
        "0",
        "--skew-factor",
        "0",
        "--target-task-bytes",
        "0",
    ];
    // Each way twice, alternating, timing the second round (the first warms the page cache).
    let mut timed = Vec::new();
    for round in 0..2 {
        let on = run(d, &format!("on{round}"), JOIN, &on_flags);
        let off = run(d, &format!("off{round}"), JOIN, &off_flags);
        timed = vec![on, off];
    }
    let [(on_secs, on), (off_secs, off)] = <[_; 2]>::try_from(timed).unwrap();
    eprintln!(
        "skew handling on: {on_secs:.2} s, off: {off_secs:.2} s (on / off {:.2}x)",
        on_secs / off_secs
    );

    // One partition of the join stage was split, by the large side's map outputs.
    let stages = adapted(&on);
    assert_eq!(stages.len(), 1, "{on}");
    let join = &stages[0];
    let split = join["adaptive"]["split"].as_array().unwrap();
    assert_eq!(split.len(), 1, "{join}");
    let slices = split[0]["tasks"].as_u64().unwrap();
    assert!(slices >= 2, "{join}");
    assert!(split[0]["bytes"].as_u64().unwrap() > 1 << 20, "{join}");
    assert_eq!(join["tasks"].as_u64().unwrap(), 8 + slices - 1, "{join}");
    eprintln!(
        "join stage: hot partition {} ({} bytes) in {slices} tasks; skew rows {} / ms {} (off: {})",
        split[0]["partition"],
        split[0]["bytes"],
        join["skew"]["rows"],
        join["skew"]["ms"],
        stage(&off, &join["stage"])["skew"]
    );
    // Off: nothing adapted, and the hot task produced far more rows than the median.
    assert!(adapted(&off).is_empty(), "{off}");
    let off_join = stage(&off, &join["stage"]);
    assert!(
        off_join["skew"]["rows"].as_f64().unwrap() > join["skew"]["rows"].as_f64().unwrap(),
        "splitting lowers the largest task's share: off {off_join}, on {join}"
    );

    // Both give DuckDB's answer, every row once.
    for name in ["on1", "off1"] {
        let (want, got, differ) = check(d, name);
        assert_eq!(want, FACTS, "{name}");
        assert_eq!(got, want, "{name}");
        assert_eq!(differ, 0, "{name}: rows that differ from DuckDB's");
    }
}

#[test]
fn tiny_shuffle_partitions_run_as_few_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    data(d);
    // An aggregate over the join: its shuffle partitions hold a few kilobytes each.
    let select = "SELECT d.name, count(*) AS n FROM facts f JOIN dims d ON f.k = d.k \
                  WHERE f.k BETWEEN 1 AND 50 GROUP BY d.name";
    let (_, progress) = run(d, "small", select, &["--broadcast-threshold", "0"]);
    let stages = adapted(&progress);
    assert!(!stages.is_empty(), "{progress}");
    for s in &stages {
        let coalesced = s["adaptive"]["coalesced_partitions"].as_u64().unwrap();
        assert!(coalesced > 0, "{s}");
        assert_eq!(s["tasks"].as_u64().unwrap() + coalesced, 8, "{s}");
    }
    let rows = duckdb_rows(&format!(
        "SELECT count(*), sum(n) FROM read_parquet('{}/out-small/**/*.parquet')",
        d.display()
    ));
    let want = duckdb_rows(&format!(
        "SELECT count(DISTINCT k), count(*) FROM read_parquet('{}/data/facts/*.parquet') \
         WHERE k BETWEEN 1 AND 50",
        d.display()
    ));
    assert_eq!(rows, want);
}
