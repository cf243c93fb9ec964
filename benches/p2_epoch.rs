//! P2 — the cost of an epoch with no new data.
//!
//! Workload: a 2-stage streaming query (`SELECT kind, count(*) ... GROUP BY kind` from an empty
//! Kafka topic with 2 partitions into a Parquet table) on 2 executor processes, run with
//! `--trigger 0ms --no-data-epochs --max-epochs N --progress json` and the default retention:
//! every epoch plans offsets (asking the broker for the latest offsets), records `offsets/N`,
//! runs the stateful stage's tasks on the executors (the scan stage, with no input, completes
//! without running), commits the sink and writes `commits/N`. Two numbers per epoch, from the
//! progress records: its `duration_ms.total` (planning to commit record) and its cycle time,
//! `since_previous_epoch_ms` of the next epoch (everything up to the next epoch's start: the
//! progress record, retention, the trigger). p50 and p99 are printed with and without fsync;
//! the target is judged on the cycle time.
//!
//! Peer, same machine, same run: PySpark's `durationMs.triggerExecution` for a trivial
//! `rate -> noop` streaming query (when `.venv/bin/python` has pyspark; see
//! `scripts/bench-peers.sh`). Targets: p50 ≤ 1 ms without fsync; ≥ 50× below PySpark.
//!
//! The cost of the web UI and metrics (on by default): three more runs without fsync with the
//! UI and three with `--ui off`, alternating; the medians of their cycle p50s are compared
//! (target: within 2 %).
//!
//! Run: `scripts/bench-p2.sh [--epochs 300] [--spark-seconds 30] [--no-spark]`

use std::path::Path;
use std::process::Command;

use sluice::broker::Broker;

struct Args {
    epochs: u64,
    spark_seconds: u64,
    spark: bool,
}

fn args() -> Args {
    let mut a = Args {
        epochs: 300,
        spark_seconds: 30,
        spark: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--epochs" => a.epochs = it.next().and_then(|v| v.parse().ok()).expect("--epochs N"),
            "--spark-seconds" => {
                a.spark_seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--spark-seconds N")
            }
            "--no-spark" => a.spark = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn percentile(values: &[f64], p: f64) -> f64 {
    sluice::stats::percentile(values, p).unwrap_or(f64::NAN)
}

/// Per-epoch durations in ms, each sorted.
struct Epochs {
    /// `duration_ms.total`: planning through the commit record.
    total: Vec<f64>,
    /// From the epoch's start to the next epoch's start.
    cycle: Vec<f64>,
}

/// Runs the query for `epochs` epochs.
fn sluice_epochs(dir: &Path, broker: &Broker, epochs: u64, fsync: bool, ui: bool) -> Epochs {
    let job = dir.join("p2.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE events (user_id BIGINT, kind VARCHAR, amount DOUBLE, ts TIMESTAMP)\n\
             WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'p2', format = 'json');\n\
             CREATE TABLE counts WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO counts SELECT kind, count(*) AS n FROM events GROUP BY kind;\n",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let checkpoint = dir.join(if fsync { "ckpt-fsync" } else { "ckpt-nofsync" });
    let _ = std::fs::remove_dir_all(&checkpoint);
    let mut cmd = Command::new(sluice::sluice_binary());
    cmd.current_dir(dir)
        .args([
            "run",
            "p2.sql",
            "--executors",
            "2",
            "--slots",
            "1",
            "--trigger",
            "0ms",
        ])
        // Default retention (100 epochs); each epoch's progress record comes on stdout.
        .args(["--no-data-epochs", "--progress", "json"])
        .args(["--max-epochs", &epochs.to_string()])
        .arg("--checkpoint")
        .arg(&checkpoint);
    if !fsync {
        cmd.arg("--no-fsync");
    }
    if !ui {
        cmd.args(["--ui", "off"]);
    }
    let out = cmd.output().expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut totals = Vec::new();
    let mut cycles = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // The first epochs warm up (first task of each stage on each executor).
        let epoch = v["epoch"].as_u64().unwrap_or(0);
        if epoch >= 5 {
            totals.push(
                v["duration_ms"]["total"]
                    .as_f64()
                    .expect("duration_ms.total"),
            );
        }
        if epoch >= 6 {
            cycles.push(
                v["since_previous_epoch_ms"]
                    .as_f64()
                    .expect("since_previous_epoch_ms"),
            );
        }
    }
    assert_eq!(
        totals.len() as u64,
        epochs - 5,
        "one progress record per epoch"
    );
    totals.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cycles.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Epochs {
        total: totals,
        cycle: cycles,
    }
}

fn spark(root: &Path, seconds: u64) -> Option<Vec<f64>> {
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        eprintln!("PySpark: .venv/bin/python missing (run scripts/bench-peers.sh); skipped");
        return None;
    }
    let out = Command::new(python)
        .arg(root.join("benches/peers/p2_spark.py"))
        .arg(seconds.to_string())
        .output()
        .expect("python runs");
    if !out.status.success() {
        eprintln!("PySpark failed:\n{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("trigger_execution_ms="))?;
    let mut v: Vec<f64> = serde_json::from_str(json).ok()?;
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Some(v)
}

fn main() {
    let args = args();
    let root = sluice::repo_root();
    let broker = Broker::start();
    broker.create_topic("p2", 2);
    let dir = tempfile::tempdir().unwrap();
    let with_fsync = sluice_epochs(dir.path(), &broker, args.epochs, true, true);
    let without = sluice_epochs(dir.path(), &broker, args.epochs, false, true);
    // The UI's cost: runs with and without it, alternating (after the runs above warmed the
    // machine up), compared by their cycle p50s.
    let mut ui_on = Vec::new();
    let mut ui_off = Vec::new();
    for _ in 0..3 {
        for ui in [false, true] {
            let e = sluice_epochs(dir.path(), &broker, args.epochs, false, ui);
            if ui { &mut ui_on } else { &mut ui_off }.push(percentile(&e.cycle, 0.5));
        }
    }
    println!(
        "P2: epoch with no new data, 2-stage query, 2 executors ({} epochs measured each)",
        with_fsync.total.len()
    );
    println!("  (total: planning to commit record; cycle: epoch start to next epoch start)");
    for (name, e) in [("fsync:   ", &with_fsync), ("no fsync:", &without)] {
        println!(
            "  sluice, {name} total p50 {:7.3} ms  p99 {:7.3} ms | cycle p50 {:7.3} ms  p99 {:7.3} ms",
            percentile(&e.total, 0.5),
            percentile(&e.total, 0.99),
            percentile(&e.cycle, 0.5),
            percentile(&e.cycle, 0.99)
        );
    }
    let (on, off) = (
        sluice::stats::median(&ui_on).unwrap_or(f64::NAN),
        sluice::stats::median(&ui_off).unwrap_or(f64::NAN),
    );
    println!(
        "  UI cost (no fsync, 3 runs each, alternating; median of their cycle p50s): {on:.3} ms with the UI, {off:.3} ms with --ui off: {:+.1} % (target within 2 %)",
        (on / off - 1.0) * 100.0
    );
    let sluice_p50 = percentile(&without.cycle, 0.5);
    println!(
        "  target: cycle p50 <= 1 ms without fsync: {}",
        if sluice_p50 <= 1.0 { "met" } else { "MISSED" }
    );
    if args.spark {
        if let Some(s) = spark(&root, args.spark_seconds) {
            let ratio = percentile(&s, 0.5) / sluice_p50;
            println!(
                "  PySpark rate->noop triggerExecution: p50 {:8.3} ms   p99 {:8.3} ms ({} batches)",
                percentile(&s, 0.5),
                percentile(&s, 0.99),
                s.len()
            );
            println!(
                "  ratio PySpark p50 / Sluice cycle p50 (no fsync): {ratio:.1}x (target >= 50x: {}); with fsync {:.1}x",
                if ratio >= 50.0 { "met" } else { "MISSED" },
                percentile(&s, 0.5) / percentile(&with_fsync.cycle, 0.5)
            );
        }
    }
}
