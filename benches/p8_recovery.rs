//! P8 — recovery: how long an epoch takes when an executor is killed during it, and how long
//! a restarted driver takes to commit its next epoch.
//!
//! Workload: `--files` Parquet files of `--rows-per-file` generated bids (see
//! `sluice::datagen`), read as a stream one new file per epoch (`stream = 'true'`,
//! `max_files_per_trigger = '1'`), a 10-second tumbling-window count per auction (keyed state in
//! RocksDB, a shuffle), Parquet sink; 3 executors × 1 slot, `sluice run` as real processes.
//!
//! Measured in one run:
//! 1. a normal epoch: the median `duration_ms.total` of epochs that lost nothing;
//! 2. `--kills` times, `kill -9` of a random executor half a normal epoch after an epoch
//!    committed; the epoch during which it died (its progress record lists the lost executor)
//!    and its duration. Target: at most 2 × normal + 1 s;
//! 3. `kill -9` of the driver mid-run, then the same command again: time from that start to
//!    the next `commits/N` (executor start-up, state restore, the re-run of the recorded
//!    epoch), beside the normal epoch.
//!
//! Run: `scripts/bench-p8.sh [--files 40] [--rows-per-file 200000] [--kills 3]`

use sluice::stats::median;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::datagen::{write_bids_parquet, BidsSpec};

struct Args {
    files: usize,
    rows_per_file: u64,
    kills: usize,
}

fn args() -> Args {
    let mut a = Args {
        files: 40,
        rows_per_file: 200_000,
        kills: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--files" => a.files = value().expect("--files N"),
            "--rows-per-file" => a.rows_per_file = value().expect("--rows-per-file N") as u64,
            "--kills" => a.kills = value().expect("--kills N"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// A driver whose progress records (one JSON line per epoch) arrive on a channel.
struct Driver {
    child: Child,
    epochs: std::sync::mpsc::Receiver<serde_json::Value>,
}

fn start(job: &Path, checkpoint: &Path) -> Driver {
    let mut child = Command::new(sluice::sluice_binary())
        .args(["run", job.to_str().unwrap()])
        .args(["--executors", "3", "--slots", "1", "--progress", "json"])
        .args(["--trigger", "available-now", "--retain-epochs", "100000"])
        .arg("--checkpoint")
        .arg(checkpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, epochs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    Driver { child, epochs }
}

fn total_ms(p: &serde_json::Value) -> f64 {
    p["duration_ms"]["total"].as_f64().unwrap_or(f64::NAN)
}

fn main() {
    let args = args();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("bids");
    write_bids_parquet(
        &input,
        BidsSpec {
            rows: args.files as u64 * args.rows_per_file,
            files: args.files,
            auctions: 10_000,
            row_group_rows: 65_536,
            seed: 8,
        },
    )
    .unwrap();
    let job = work.path().join("p8.sql");
    std::fs::write(
        &job,
        sluice::datagen::tumbling_count_job(&input, &work.path().join("out")),
    )
    .unwrap();
    let checkpoint = work.path().join("ckpt");
    println!(
        "P8: {} files x {} rows, one file per epoch, 3 executors x 1 slot",
        args.files, args.rows_per_file
    );

    let mut driver = start(&job, &checkpoint);
    let mut normal = Vec::new();
    let mut faulty: Vec<(u64, f64, u64)> = Vec::new();
    let mut kills_done = 0;
    let mut restarted: Option<Instant> = None;
    let mut restart_ms: Option<f64> = None;
    let mut seen = 0usize;
    loop {
        let Ok(p) = driver.epochs.recv_timeout(Duration::from_secs(300)) else {
            let status = driver.child.wait().unwrap();
            assert!(status.success(), "sluice failed: {status}");
            break;
        };
        seen += 1;
        let epoch = p["epoch"].as_u64().unwrap_or(0);
        let lost = p["lost_executors"].as_array().map_or(0, |l| l.len());
        if let (Some(started), None) = (restarted, restart_ms) {
            let took = started.elapsed().as_secs_f64() * 1e3;
            restart_ms = Some(took);
            println!("  driver restart -> epoch {epoch} committed in {took:.0} ms");
            continue;
        }
        if lost > 0 {
            let rerun = p["lost_executors"].as_array().map_or(0, |l| {
                l.iter().filter_map(|e| e["tasks_rerun"].as_u64()).sum()
            });
            faulty.push((epoch, total_ms(&p), rerun));
        } else if seen > 2 && p["input_rows"].as_u64().unwrap_or(0) > 0 {
            normal.push(total_ms(&p));
        }
        if seen < 4 {
            continue; // warm up
        }
        let normal_ms = median(&normal).unwrap_or(f64::NAN);
        if kills_done < args.kills && seen.is_multiple_of(3) {
            // Half a normal epoch into the next one.
            std::thread::sleep(Duration::from_secs_f64(normal_ms / 2e3));
            let executors = sluice::process::children_of(driver.child.id());
            if let Some(victim) = executors.get(kills_done % executors.len().max(1)) {
                unsafe { libc::kill(*victim as i32, libc::SIGKILL) };
                kills_done += 1;
            }
        } else if kills_done == args.kills && restarted.is_none() && seen.is_multiple_of(3) {
            std::thread::sleep(Duration::from_secs_f64(normal_ms / 2e3));
            driver.child.kill().unwrap();
            driver.child.wait().unwrap();
            restarted = Some(Instant::now());
            driver = start(&job, &checkpoint);
        }
    }
    let normal_ms = median(&normal).unwrap_or(f64::NAN);
    println!(
        "  normal epoch (median of {}): {normal_ms:.0} ms",
        normal.len()
    );
    let limit = 2.0 * normal_ms + 1000.0;
    for (epoch, ms, rerun) in &faulty {
        println!(
            "  epoch {epoch} with an executor killed ({rerun} task(s) re-run): {ms:.0} ms = {:.2}x normal; limit 2x + 1 s = {limit:.0} ms: {}",
            ms / normal_ms,
            if *ms <= limit { "met" } else { "MISSED" }
        );
    }
    if let Some(took) = restart_ms {
        println!(
            "  driver kill -9 -> restart -> next commit: {took:.0} ms = {:.2}x a normal epoch",
            took / normal_ms
        );
    }
    assert!(!faulty.is_empty(), "no epoch lost an executor");
}
