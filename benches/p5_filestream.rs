//! P5/P6 — a file-stream windowed count against PySpark Structured Streaming with its RocksDB
//! state store, on the same Parquet files, in the same run.
//!
//! Workload: `--files` Parquet files of `--rows-per-file` generated bids each (1 000 events per
//! second of event time, 10 000 auctions; see `sluice::datagen`), read as a stream one new file
//! per epoch (`stream = 'true'`, `max_files_per_trigger = '1'` / Spark's `maxFilesPerTrigger`),
//! a 10-second tumbling-window count per auction with a 5-second watermark, append mode,
//! Parquet sink, trigger available-now, 2 executors × 1 slot / `local[2]` with 2 shuffle
//! partitions.
//!
//! Reported:
//! - P5: events per CPU-second — events over the CPU time (user + system) the engine used:
//!   Sluice's driver and executors from `getrusage(RUSAGE_CHILDREN)` around the whole run
//!   (start-up included), Spark's JVM from `/proc` around the query (JVM start excluded).
//!   Target: Sluice ≥ 10× Spark.
//! - P6: per-epoch state commit time, median over epochs that read a file — Sluice's
//!   `snapshot_us` (RocksDB flush, checkpoint, upload of new SSTs, manifest; the slowest
//!   partition) against Spark's `stateOperators[0].commitTimeMs`. Target: ≤ 1/10 of Spark's.
//! - Both outputs read back with the Parquet reader: windows and the total count must agree.
//!
//! Run: `scripts/bench-p5.sh [--files 20] [--rows-per-file 200000] [--no-spark]`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use sluice::datagen::{write_bids_parquet, BidsSpec};
use sluice::table::read_rows;

struct Args {
    files: usize,
    rows_per_file: u64,
    spark: bool,
}

fn args() -> Args {
    let mut a = Args {
        files: 20,
        rows_per_file: 200_000,
        spark: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--files" => a.files = it.next().and_then(|v| v.parse().ok()).expect("--files N"),
            "--rows-per-file" => {
                a.rows_per_file = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rows-per-file N")
            }
            "--no-spark" => a.spark = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn percentile(v: &[f64], p: f64) -> f64 {
    sluice::stats::percentile(v, p).unwrap_or(f64::NAN)
}

/// `p50 / p90 / max` of per-epoch commit times.
fn commits(v: &[f64]) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        percentile(v, 0.5),
        percentile(v, 0.9),
        percentile(v, 1.0)
    )
}

struct Run {
    events: u64,
    cpu_s: f64,
    wall_s: f64,
    commit_ms: Vec<f64>,
    epochs: usize,
}

/// The windows written to `out`: (rows, sum of counts).
fn output_summary(out: &Path) -> (usize, u64) {
    let rows = read_rows(out);
    let total = rows
        .iter()
        .map(|r| {
            r.last()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a count")
        })
        .sum();
    (rows.len(), total)
}

fn sluice_run(work: &Path, input: &Path) -> Run {
    let out = work.join("out-sluice");
    let checkpoint = work.join("ckpt-sluice");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&checkpoint);
    let job = work.join("p5.sql");
    std::fs::write(&job, sluice::datagen::tumbling_count_job(input, &out)).unwrap();
    let cpu_before = sluice::process::children_cpu();
    let started = Instant::now();
    let result = Command::new(sluice::sluice_binary())
        .args(["run", job.to_str().unwrap()])
        .args(["--executors", "2", "--slots", "1"])
        .args(["--trigger", "available-now", "--retain-epochs", "100000"])
        .arg("--checkpoint")
        .arg(&checkpoint)
        .output()
        .expect("sluice runs");
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = (sluice::process::children_cpu() - cpu_before).as_secs_f64();
    assert!(
        result.status.success(),
        "sluice failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let mut events = 0;
    let mut commit_ms = Vec::new();
    let mut epochs = 0;
    for entry in std::fs::read_dir(checkpoint.join("progress"))
        .unwrap()
        .flatten()
    {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        epochs += 1;
        let rows = v["input_rows"].as_u64().unwrap_or(0);
        events += rows;
        if rows > 0 {
            if let Some(us) = v["state"][0]["snapshot_us"].as_f64() {
                commit_ms.push(us / 1000.0);
            }
        }
    }
    Run {
        events,
        cpu_s,
        wall_s,
        commit_ms,
        epochs,
    }
}

fn spark_run(root: &Path, work: &Path, input: &Path) -> Option<Run> {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        eprintln!("PySpark: .venv/bin/python missing (run scripts/bench-peers.sh); skipped");
        return None;
    }
    let out = work.join("out-spark");
    let checkpoint = work.join("ckpt-spark");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&checkpoint);
    let result = Command::new(python)
        .arg(root.join("benches/peers/p5_spark.py"))
        .args([input, &out, &checkpoint])
        .output()
        .expect("python runs");
    if !result.status.success() {
        eprintln!(
            "PySpark failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&result.stdout);
    let json = text.lines().find_map(|l| l.strip_prefix("result="))?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(Run {
        events: v["events"].as_u64()?,
        cpu_s: v["cpu_s"].as_f64()?,
        wall_s: v["wall_s"].as_f64()?,
        commit_ms: v["commit_ms"]
            .as_array()?
            .iter()
            .filter_map(|c| c.as_f64())
            .collect(),
        epochs: v["batches"].as_u64()? as usize,
    })
}

fn main() {
    let args = args();
    let root = sluice::repo_root();
    let work = root.join("bench-data/p5-work");
    let input = work.join(format!("input-{}x{}", args.files, args.rows_per_file));
    if !input.exists() {
        write_bids_parquet(
            &input,
            BidsSpec {
                rows: args.files as u64 * args.rows_per_file,
                files: args.files,
                auctions: 10_000,
                row_group_rows: 65_536,
                seed: 5,
            },
        )
        .unwrap();
    }
    let s = sluice_run(&work, &input);
    let (sluice_rows, sluice_total) = output_summary(&work.join("out-sluice"));
    println!(
        "P5/P6: file-stream 10 s tumbling count per auction, watermark 5 s, append; {} files x {} events, one file per epoch",
        args.files, args.rows_per_file
    );
    let per_cpu = |r: &Run| r.events as f64 / r.cpu_s;
    println!(
        "  sluice:  {:>9} events  {:6} epochs  wall {:7.2} s  CPU {:7.2} s  {:>10.0} events/CPU-s  state commit p50/p90/max {}",
        s.events,
        s.epochs,
        s.wall_s,
        s.cpu_s,
        per_cpu(&s),
        commits(&s.commit_ms)
    );
    println!("  sluice output: {sluice_rows} windows, {sluice_total} events counted");
    if !args.spark {
        return;
    }
    let Some(k) = spark_run(&root, &work, &input) else {
        return;
    };
    let (spark_rows, spark_total) = output_summary(&work.join("out-spark"));
    println!(
        "  PySpark: {:>9} events  {:6} batches wall {:7.2} s  CPU {:7.2} s  {:>10.0} events/CPU-s  state commit p50/p90/max {}",
        k.events,
        k.epochs,
        k.wall_s,
        k.cpu_s,
        per_cpu(&k),
        commits(&k.commit_ms)
    );
    println!("  PySpark output: {spark_rows} windows, {spark_total} events counted");
    let throughput = per_cpu(&s) / per_cpu(&k);
    let commit = percentile(&s.commit_ms, 0.5) / percentile(&k.commit_ms, 0.5);
    println!(
        "  P5 events/CPU-s, Sluice / Spark: {throughput:.1}x (target >= 10x: {})",
        if throughput >= 10.0 { "met" } else { "MISSED" }
    );
    println!(
        "  P6 state commit p50, Sluice / Spark: {commit:.3} (target <= 0.1: {})",
        if commit <= 0.1 { "met" } else { "MISSED" }
    );
    println!(
        "  outputs agree: {}",
        if (sluice_rows, sluice_total) == (spark_rows, spark_total) {
            "yes"
        } else {
            "NO"
        }
    );
}
