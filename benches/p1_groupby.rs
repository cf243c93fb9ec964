//! P1 — bounded group-by, Parquet to Parquet: Sluice against DataFusion and PySpark.
//!
//! Workload: N generated bid rows (auction, bidder, price, channel, date_time) in Parquet,
//! `SELECT auction, count(*), max(price), sum(price) FROM bids GROUP BY auction` (~10 K keys),
//! written as Parquet. Compared in the same run on the same files:
//! - Sluice: the real `sluice run` CLI with 2 executor processes (1 slot each);
//! - DataFusion: the same query in this process (target_partitions = CPU cores);
//! - PySpark local[2] (when `.venv/bin/python` has pyspark; see `scripts/bench-peers.sh`),
//!   timed inside a warm SparkSession (JVM start-up excluded, in Spark's favour).
//!
//! Runs alternate between Sluice and DataFusion after a warm-up run of each. Prints the median
//! of each and the ratios (targets: ≥ 0.7× DataFusion, ≥ 5× PySpark), plus
//! the peak RSS of Sluice's executors (target ≤ 400 MiB each at 10 M rows).
//!
//! Run: `cargo bench --bench p1_groupby -- [--rows 10000000] [--runs 5] [--no-spark]`

use sluice::stats::median;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

const QUERY: &str = "SELECT auction, count(*) AS n, max(price) AS top, sum(price) AS total FROM bids GROUP BY auction";

struct Args {
    rows: u64,
    runs: usize,
    spark: bool,
}

fn args() -> Args {
    let mut a = Args {
        rows: 10_000_000,
        runs: 5,
        spark: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => a.rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--no-spark" => a.spark = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let args = args();
    let root = sluice::repo_root();
    let data = sluice::datagen::p1_bids(&root, args.rows);
    let work = root.join("bench-data/p1-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // Freshly generated files must not be written back during the measurements (Sluice fsyncs
    // its output and checkpoint; waiting behind unrelated writeback is not its cost).
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };

    // Runs alternate between the engines after one unrecorded warm-up each, so both see the same
    // page cache and machine state.
    let sluice = sluice::sluice_binary();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sluice_times = Vec::new();
    let mut df_times = Vec::new();
    let mut peak_rss_mib = 0u64;
    for run in 0..=args.runs {
        let (took, rss) = run_sluice(&sluice, &data, &work, run);
        let df = run_datafusion(&rt, &data, &work, run);
        peak_rss_mib = peak_rss_mib.max(rss);
        eprintln!(
            "run {run}{}: sluice {:.3}s, datafusion {:.3}s",
            if run == 0 { " (warm-up)" } else { "" },
            took.as_secs_f64(),
            df.as_secs_f64()
        );
        if run > 0 {
            sluice_times.push(took);
            df_times.push(df);
        }
    }

    let spark = if args.spark {
        spark_median(&root, &data, &work, args.runs)
    } else {
        None
    };

    let s = median(&sluice_times).unwrap_or_default().as_secs_f64();
    let d = median(&df_times).unwrap_or_default().as_secs_f64();
    let rows = args.rows as f64;
    println!(
        "P1 group-by over {} rows, median of {} runs",
        args.rows, args.runs
    );
    println!(
        "  sluice (2 executors x 1 slot): {s:.3}s  ({:.1} M rows/s)",
        rows / s / 1e6
    );
    println!(
        "  datafusion (1 process):        {d:.3}s  ({:.1} M rows/s)",
        rows / d / 1e6
    );
    println!(
        "  ratio sluice/datafusion throughput: {:.2}x  (target >= 0.7)",
        d / s
    );
    match spark {
        Some(p) => {
            println!(
                "  pyspark local[2] (warm):       {p:.3}s  ({:.1} M rows/s)",
                rows / p / 1e6
            );
            println!(
                "  ratio sluice/pyspark throughput:    {:.2}x  (target >= 5)",
                p / s
            );
        }
        None => {
            println!("  pyspark: skipped (run scripts/bench-peers.sh to install it into .venv)")
        }
    }
    println!("  peak executor RSS: {peak_rss_mib} MiB  (limit 400 MiB)");
    let _ = std::fs::remove_dir_all(&work);
}

/// Sluice through its CLI, as a user runs it: wall time and the executors' peak RSS (MiB).
fn run_sluice(sluice: &Path, data: &Path, work: &Path, run: usize) -> (Duration, u64) {
    let out_dir = work.join(format!("sluice-{run}"));
    let job = work.join("p1.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE bids WITH (connector = 'parquet', path = '{}/');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = '{}');\n\
             INSERT INTO out {QUERY};",
            data.display(),
            out_dir.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(sluice)
        .args([
            "run",
            job.to_str().unwrap(),
            "--executors",
            "2",
            "--slots",
            "1",
        ])
        .output()
        .expect("sluice runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sluice failed:\n{stderr}");
    let rss = sluice::process::summary_peak_rss_mib(&stderr);
    (took, rss)
}

/// The same query with DataFusion in this process.
fn run_datafusion(rt: &tokio::runtime::Runtime, data: &Path, work: &Path, run: usize) -> Duration {
    let out_dir = work.join(format!("datafusion-{run}"));
    rt.block_on(async {
        let started = Instant::now();
        let ctx = SessionContext::new();
        ctx.register_parquet(
            "bids",
            format!("{}/", data.display()),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        ctx.sql(QUERY)
            .await
            .unwrap()
            .write_parquet(
                out_dir.to_str().unwrap(),
                DataFrameWriteOptions::new(),
                None,
            )
            .await
            .unwrap();
        started.elapsed()
    })
}

fn spark_median(root: &Path, data: &Path, work: &Path, runs: usize) -> Option<f64> {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .arg(root.join("benches/peers/p1_spark.py"))
        .arg(data)
        .arg(work.join("spark"))
        .arg(runs.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("pyspark failed:\n{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("median_seconds="))
        .and_then(|v| v.trim().parse().ok())
}
