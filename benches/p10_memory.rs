//! P10 — a group-by with ~50 M distinct keys under a memory limit: Sluice against DuckDB and
//! PySpark with the same memory.
//!
//! Workload: N generated bids over 10 × N possible auctions (~95 % distinct: ~47.6 M keys at
//! 50 M rows), `SELECT auction, count(*), sum(price), max(channel) FROM bids GROUP BY auction`,
//! written as Parquet. In one run, on the same files:
//! - Sluice: `sluice run` with 2 executors × 1 slot at `--memory-mb M` each (default 256): its
//!   aggregation spills beyond the pool (a quarter of M); wall time, the executors' peak RSS and the
//!   bytes spilled (progress record); then the same job at `--memory-mb 1`, which must fail
//!   naming the operator and the limit and publish nothing;
//! - DuckDB (the readers virtualenv): `SET memory_limit` to the executors' sum (2 × M),
//!   `SET threads = 2`, `COPY (query) TO` Parquet; wall time and the process's peak RSS;
//! - PySpark local[2] (`.venv`, `scripts/bench-peers.sh`) with `spark.driver.memory` 2 × M (in
//!   local mode the driver's heap is the executors') and Spark's default 200 shuffle partitions
//!   (at 2 the final aggregation runs out of heap); wall time in a warm session and the JVM's
//!   peak RSS.
//!
//! Each engine runs `--runs` times (default 2) after nothing else; the median is reported with
//! the throughput ratios.
//!
//! Run: `scripts/bench-p10.sh [--rows 50000000] [--memory-mb 256] [--runs 2] [--no-spark]`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::datagen::{write_bids_parquet, BidsSpec};
use sluice::stats::median;

const QUERY: &str =
    "SELECT auction, count(*) AS n, sum(price) AS s, max(channel) AS c FROM bids GROUP BY auction";

struct Args {
    rows: u64,
    memory_mb: u64,
    runs: usize,
    spark: bool,
}

fn args() -> Args {
    let mut a = Args {
        rows: 50_000_000,
        memory_mb: 256,
        runs: 2,
        spark: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--rows" => a.rows = value(),
            "--memory-mb" => a.memory_mb = value(),
            "--runs" => a.runs = value().max(1) as usize,
            "--no-spark" => a.spark = false,
            _ => {}
        }
    }
    a
}

/// One engine's runs: times, and its peak RSS (MiB) over them.
#[derive(Default)]
struct Outcome {
    times: Vec<Duration>,
    peak_rss_mib: u64,
    spilled_mib: u64,
}

fn main() {
    let a = args();
    let root = sluice::repo_root();
    let data = root.join(format!("bench-data/p10-bids-{}-x10", a.rows));
    if !data.join("bids-0000.parquet").exists() {
        eprintln!("generating {} rows into {} ...", a.rows, data.display());
        write_bids_parquet(
            &data,
            BidsSpec {
                rows: a.rows,
                files: (a.rows / 5_000_000).clamp(1, 16) as usize,
                auctions: a.rows as i64 * 10,
                row_group_rows: 262_144,
                seed: 10,
            },
        )
        .expect("generate data");
    }
    let work = root.join("bench-data/p10-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    println!(
        "P10: group-by over {} rows (~{:.1} M keys) at {} MiB per executor (2 executors; DuckDB and PySpark at {} MiB), {} run(s) each",
        a.rows,
        a.rows as f64 * 0.952 / 1e6,
        a.memory_mb,
        2 * a.memory_mb,
        a.runs
    );

    let mut sluice = Outcome::default();
    for run in 0..a.runs {
        let (took, rss, spilled) = run_sluice(&data, &work, run, a.memory_mb);
        eprintln!("sluice run {run}: {:.1} s", took.as_secs_f64());
        sluice.times.push(took);
        sluice.peak_rss_mib = sluice.peak_rss_mib.max(rss);
        sluice.spilled_mib = sluice.spilled_mib.max(spilled);
    }
    // Sluice's first table against DuckDB's answer over the same files, row by row.
    let check = sluice::table::duckdb_rows(&format!(
        "WITH want AS ({}), got AS (SELECT * FROM read_parquet('{}/**/*.parquet')) \
         SELECT (SELECT count(*) FROM want), (SELECT count(*) FROM got), \
           (SELECT count(*) FROM want FULL OUTER JOIN got ON want.auction = got.auction \
            WHERE want.n IS DISTINCT FROM got.n OR want.s IS DISTINCT FROM got.s \
               OR want.c IS DISTINCT FROM got.c)",
        QUERY.replace(
            "FROM bids",
            &format!("FROM read_parquet('{}/*.parquet')", data.display())
        ),
        work.join("sluice-0").display()
    ));
    println!(
        "  answer check (DuckDB: keys, Sluice rows, rows that differ): {}",
        check.first().map(String::as_str).unwrap_or("?")
    );
    // The same job at a limit too small to proceed: a clear failure, not a kill.
    run_sluice(&data, &work, a.runs, TOO_SMALL_MB);
    let duckdb = run_python_peer(
        &sluice::table::readers_python(),
        "p10_duckdb.py",
        &data,
        &work.join("duckdb"),
        a.runs,
        2 * a.memory_mb,
    );
    let python = root.join(".venv/bin/python");
    let spark = (a.spark && python.exists()).then(|| {
        run_python_peer(
            &python,
            "p10_spark.py",
            &data,
            &work.join("spark"),
            a.runs,
            2 * a.memory_mb,
        )
    });

    let secs = |o: &Outcome| median(&o.times).unwrap_or_default().as_secs_f64();
    let s = secs(&sluice);
    let rows = a.rows as f64;
    println!(
        "  sluice (2 x {} MiB):   {s:>7.1} s  ({:.2} M rows/s)  peak executor RSS {} MiB, spilled {} MiB",
        a.memory_mb,
        rows / s / 1e6,
        sluice.peak_rss_mib,
        sluice.spilled_mib
    );
    for (name, o) in [
        ("duckdb", Some(&duckdb)),
        ("pyspark local[2]", spark.as_ref()),
    ] {
        match o {
            Some(o) if !o.times.is_empty() => {
                let p = secs(o);
                println!(
                    "  {name:<18} {p:>7.1} s  ({:.2} M rows/s)  peak RSS {} MiB;  sluice/{name} throughput {:.2}x",
                    rows / p / 1e6,
                    o.peak_rss_mib,
                    p / s
                );
            }
            Some(_) => println!("  {name}: failed (see above)"),
            None => {
                println!("  {name}: skipped (run scripts/bench-peers.sh to install it into .venv)")
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// A limit at which the group-by cannot proceed (its pool share cannot hold what it must sort
/// before it spills).
const TOO_SMALL_MB: u64 = 1;

/// `sluice run` as a user runs it: wall time, the executors' peak RSS and the bytes spilled.
fn run_sluice(data: &Path, work: &Path, run: usize, memory_mb: u64) -> (Duration, u64, u64) {
    let job = work.join("p10.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE bids WITH (connector = 'parquet', path = '{}/');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = '{}');\n\
             INSERT INTO out {QUERY};",
            data.display(),
            work.join(format!("sluice-{run}")).display()
        ),
    )
    .unwrap();
    let events = work.join(format!("events-{run}.jsonl"));
    let started = Instant::now();
    let out = Command::new(sluice::sluice_binary())
        .arg("run")
        .arg(&job)
        .args(["--executors", "2", "--slots", "1", "--ui", "off"])
        .arg("--memory-mb")
        .arg(memory_mb.to_string())
        .arg("--events")
        .arg(&events)
        .output()
        .expect("sluice runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if memory_mb == TOO_SMALL_MB {
        // Expected to fail: say how, and whether anything was published.
        let published =
            !sluice::table::parquet_files(&work.join(format!("sluice-{run}"))).is_empty();
        let said = stderr
            .lines()
            .find(|l| l.contains("Failed to allocate"))
            .unwrap_or("(no allocation failure in its output)");
        println!(
            "  sluice at --memory-mb {memory_mb}: {} after {:.1} s, output published: {published}\n    {said}",
            if out.status.success() { "SUCCEEDED" } else { "failed" },
            took.as_secs_f64()
        );
        return (took, 0, 0);
    }
    assert!(out.status.success(), "sluice failed:\n{stderr}");
    let rss = sluice::process::summary_peak_rss_mib(&stderr);
    let spilled = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["progress"]["spilled_bytes"].as_u64())
        .sum::<u64>();
    (took, rss, spilled >> 20)
}

/// A peer script under `benches/peers/`: it prints `run_seconds=S` per run and
/// `peak_rss_mib=M`.
fn run_python_peer(
    python: &Path,
    script: &str,
    data: &Path,
    out: &Path,
    runs: usize,
    memory_mb: u64,
) -> Outcome {
    let mut o = Outcome::default();
    let result = Command::new(python)
        .arg(sluice::repo_root().join("benches/peers").join(script))
        .arg(data)
        .arg(out)
        .arg(runs.to_string())
        .arg(memory_mb.to_string())
        .output();
    let Ok(result) = result else {
        eprintln!("{script} did not start");
        return o;
    };
    if !result.status.success() {
        eprintln!(
            "{script} failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        return o;
    }
    for line in String::from_utf8_lossy(&result.stdout).lines() {
        if let Some(v) = line.strip_prefix("run_seconds=") {
            if let Ok(s) = v.trim().parse::<f64>() {
                o.times.push(Duration::from_secs_f64(s));
            }
        } else if let Some(v) = line.strip_prefix("peak_rss_mib=") {
            o.peak_rss_mib = v.trim().parse().unwrap_or(0);
        }
    }
    o
}
