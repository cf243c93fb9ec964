//! P11 — dynamic allocation under a load step, against fixed executor counts.
//!
//! Workload: JSON bids produced into a 4-partition topic (tansu, SQLite storage) at a base rate,
//! then at a step rate, then at the base rate again, while a streaming query aggregates them in
//! 10-second tumbling windows per auction with a CPU-heavy aggregate (a chain of SHA-256 over
//! each bidder id and each price, so a record costs tens of microseconds) into Parquet,
//! `--trigger 2s` (`--trigger-ms`), `--parallelism 2`, `--slots 1` (one core per executor). Each
//! epoch's scan tasks open Kafka consumers (~350 ms each against tansu), so the base load fits
//! one executor and the step needs two.
//!
//! The same load runs three times in one run, each on its own topic and checkpoint:
//! - fixed minimum: `--executors MIN`;
//! - fixed maximum: `--executors MAX`;
//! - elastic: `--min-executors MIN --max-executors MAX` (the default policy).
//!
//! Reported per run, from the query's progress records: the time from the step until the lag
//! at commit is back under two trigger intervals for good — one of waiting for its epoch, at
//! most one of lag — (`never` if the last epoch was still over it), the largest lag, the largest
//! Kafka backlog, and executor-seconds (executors × wall time between the first and last epoch;
//! for the elastic run the sum over epochs of the executors it ran with). Ratios: elastic
//! against the fixed runs. The lag at commit is the data age (from the previous epoch's
//! planning to this epoch's commit: how long a record produced just after one epoch started
//! waits to be committed) plus the time the producer took to write what the epoch left in Kafka
//! (`sources.bids.partitions[].lag` at planning, at the rate of the moment). Without a
//! per-trigger limit a slow query makes bigger epochs and the data age grows; with
//! `--max-records-per-trigger N` (the source's `max_records_per_trigger`) it leaves a backlog.
//!
//! Phases: `--phase-secs` at the base rate, `--phase-secs` at the step rate, then
//! `--tail-secs` at the base rate (long enough for the elastic run to shrink back); epochs
//! planned after the load ends (the shutdown's) are not counted.
//!
//! The elastic run also prints each change dynamic allocation made, with its time from the step
//! and its reason.
//!
//! Run: `scripts/bench-p11.sh [--base 1000] [--step 12000] [--phase-secs 30] [--tail-secs 90]
//! [--trigger-ms 2000] [--parallelism 2] [--min 1] [--max 2] [--depth 40] [--chains 2]
//! [--max-records-per-trigger N]` (it builds the release binaries first). `--chains` (1–4) sets
//! how many SHA-256 chains each record pays for (over bidder, price, auction, bidder + price).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::broker::{Broker, Producer};
use sluice::datagen::stream_bid;

struct Args {
    base: u64,
    step: u64,
    phase: u64,
    tail: u64,
    trigger_ms: u64,
    parallelism: u64,
    min: usize,
    max: usize,
    depth: usize,
    chains: usize,
    max_records: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        base: 1000,
        step: 12000,
        phase: 30,
        tail: 90,
        trigger_ms: 2000,
        parallelism: 2,
        min: 1,
        max: 2,
        depth: 40,
        chains: 2,
        max_records: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--base" => a.base = value(),
            "--step" => a.step = value(),
            "--phase-secs" => a.phase = value(),
            "--tail-secs" => a.tail = value(),
            "--trigger-ms" => a.trigger_ms = value().max(100),
            "--parallelism" => a.parallelism = value().max(1),
            "--min" => a.min = value() as usize,
            "--max" => a.max = value() as usize,
            "--depth" => a.depth = (value() as usize).min(45),
            "--chains" => a.chains = (value() as usize).clamp(1, CHAIN_COLUMNS.len()),
            "--max-records-per-trigger" => a.max_records = Some(value().max(1)),
            _ => {}
        }
    }
    a
}

/// The columns a SHA-256 chain runs over, one chain each (`--chains`).
const CHAIN_COLUMNS: [&str; 4] = ["bidder", "price", "auction", "bidder + price"];

/// Produces `rate` records per second for `secs` seconds (in 100 ms slices) from id `*next`.
fn produce(producer: &Producer, topic: &str, rate: u64, secs: u64, next: &mut u64) {
    let slice = (rate / 10).max(1);
    let start = Instant::now();
    for n in 0..secs * 10 {
        let records = (*next..*next + slice).map(|i| {
            let b = stream_bid(11, i);
            ((i % 4) as i32, b.auction.to_string().into_bytes(), b.json())
        });
        producer.send_all(topic, records);
        *next += slice;
        let due = start + Duration::from_millis(100 * (n + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

struct Outcome {
    recovery: Option<f64>,
    peak_age: u64,
    peak_backlog: u64,
    executor_seconds: f64,
    epochs: usize,
    peak_executors: u64,
    changes: Vec<String>,
}

fn run(dir: &Path, broker: &Broker, a: &Args, name: &str, cluster: &[String]) -> Outcome {
    let topic = format!("p11-{name}");
    broker.create_topic(&topic, 4);
    // Nested calls: the SQL parser allows 50 levels, so one chain per column.
    let chains: Vec<String> = CHAIN_COLUMNS[..a.chains]
        .iter()
        .enumerate()
        .map(|(i, column)| {
            format!(
                "max({}repeat(CAST({column} AS VARCHAR), 64){}) AS h{i}",
                "sha256(".repeat(a.depth),
                ")".repeat(a.depth)
            )
        })
        .collect();
    let limit = a
        .max_records
        .map(|n| format!(", max_records_per_trigger = '{n}'"))
        .unwrap_or_default();
    std::fs::write(
        dir.join(format!("{name}.sql")),
        format!(
            "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,\n\
               WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)\n\
             WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'json', start = 'earliest'{limit});\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'out-{name}/');\n\
             INSERT INTO out SELECT window_start, window_end, auction, count(*) AS bids, {}\n\
             FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
             GROUP BY window_start, window_end, auction;\n",
            broker.bootstrap(),
            chains.join(", ")
        ),
    )
    .unwrap();
    let checkpoint = dir.join(format!("ckpt-{name}"));
    let child: Child = Command::new(sluice::sluice_binary())
        .current_dir(dir)
        .arg("run")
        .arg(format!("{name}.sql"))
        .args([
            "--trigger",
            &format!("{}ms", a.trigger_ms),
            "--slots",
            "1",
            "--parallelism",
            &a.parallelism.to_string(),
            "--retain-epochs",
            "10000",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .args(cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice runs");
    let producer = Producer::connect(&broker.bootstrap());
    let mut next = 0;
    produce(&producer, &topic, a.base, a.phase, &mut next);
    let step_at_ms = now_ms();
    produce(&producer, &topic, a.step, a.phase, &mut next);
    produce(&producer, &topic, a.base, a.tail, &mut next);
    // Epochs planned after this are the shutdown's, not the load's.
    let stop_at_ms = now_ms();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("sluice exits");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut records = sluice::progress::records(&checkpoint);
    records.retain(|r| {
        r["batch_timestamp_ms"]
            .as_u64()
            .is_some_and(|t| t < stop_at_ms)
    });
    let at = |r: &serde_json::Value| r["batch_timestamp_ms"].as_u64().unwrap_or(0);
    // Lag at commit: a record produced just after the previous epoch was planned waits until
    // this epoch commits (its data age); records the epoch left in Kafka (the per-trigger
    // limit's backlog, counted at planning) wait at least as long again as the producer took
    // to write them at the rate of the moment.
    let total = |r: &serde_json::Value| r["duration_ms"]["total"].as_f64().unwrap_or(0.0) as u64;
    let backlog = |r: &serde_json::Value| -> u64 {
        r["sources"]["bids"]["partitions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["lag"].as_u64()).sum())
            .unwrap_or(0)
    };
    let rate_at = |t: u64| {
        if t >= step_at_ms && t < step_at_ms + a.phase * 1000 {
            a.step
        } else {
            a.base
        }
    };
    let ages: Vec<(u64, u64)> = records
        .windows(2)
        .map(|p| {
            let t = at(&p[1]);
            let age = t + total(&p[1]) - at(&p[0]);
            (t, age + backlog(&p[1]) * 1000 / rate_at(t).max(1))
        })
        .collect();
    let peak_backlog = records.iter().map(backlog).max().unwrap_or(0);
    let fixed = cluster
        .iter()
        .position(|c| c == "--executors")
        .and_then(|i| cluster.get(i + 1))
        .and_then(|n| n.parse::<f64>().ok());
    let mut executor_seconds = 0.0;
    let mut peak_executors = 0;
    for pair in records.windows(2) {
        let secs = at(&pair[1]).saturating_sub(at(&pair[0])) as f64 / 1e3;
        let n = match fixed {
            Some(n) => n,
            None => pair[0]["allocation"]["executors"].as_u64().unwrap_or(1) as f64,
        };
        peak_executors = peak_executors.max(n as u64);
        executor_seconds += n * secs;
    }
    // Caught up: from the step until the lag is back under two trigger intervals (one
    // of waiting for the epoch, at most one of processing) for good — the first epoch after
    // the last one over it; never, if the last epoch was still over it.
    let after: Vec<(u64, u64)> = ages.into_iter().filter(|(t, _)| *t > step_at_ms).collect();
    let peak_age = after.iter().map(|(_, age)| *age).max().unwrap_or(0);
    let recovery = match after.iter().rposition(|(_, age)| *age > 2 * a.trigger_ms) {
        None => Some(0.0),
        Some(i) => after.get(i + 1).map(|(t, _)| (t - step_at_ms) as f64 / 1e3),
    };
    let changes = records
        .iter()
        .filter(|r| r["allocation"]["target"] != r["allocation"]["executors"])
        .map(|r| {
            format!(
                "{:+.1} s: {} -> {} executors ({})",
                (at(r) as f64 - step_at_ms as f64) / 1e3,
                r["allocation"]["executors"],
                r["allocation"]["target"],
                r["allocation"]["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    Outcome {
        changes,
        recovery,
        peak_age,
        peak_backlog,
        executor_seconds,
        epochs: records.len(),
        peak_executors,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() {
    let a = args();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "P11: load step {} -> {} -> {} records/s for {} s, {} s, {} s; windowed aggregate with {} {}-deep SHA-256 chains per record; max_records_per_trigger {}; --trigger {}ms --slots 1 --parallelism {}; executors {}..{}",
        a.base, a.step, a.base, a.phase, a.phase, a.tail, a.chains, a.depth,
        a.max_records.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
        a.trigger_ms, a.parallelism, a.min, a.max
    );
    let configs: Vec<(String, Vec<String>)> = vec![
        (
            format!("fixed-{}", a.min),
            vec!["--executors".into(), a.min.to_string()],
        ),
        (
            format!("fixed-{}", a.max),
            vec!["--executors".into(), a.max.to_string()],
        ),
        (
            "elastic".into(),
            vec![
                "--min-executors".into(),
                a.min.to_string(),
                "--max-executors".into(),
                a.max.to_string(),
            ],
        ),
    ];
    let mut results = Vec::new();
    for (name, cluster) in &configs {
        let o = run(dir.path(), &broker, &a, name, cluster);
        println!(
            "  {name:<10} caught up {:>8} after the step; peak lag {:>6.1} s (Kafka backlog at most {}); executor-seconds {:>6.1} over {} epochs (at most {} executors)",
            o.recovery.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "never".into()),
            o.peak_age as f64 / 1e3,
            o.peak_backlog,
            o.executor_seconds,
            o.epochs,
            o.peak_executors
        );
        for change in &o.changes {
            println!("             {change}");
        }
        results.push((name.clone(), o));
    }
    let elastic = &results[2].1;
    for (name, o) in &results[..2] {
        let recovery = match (elastic.recovery, o.recovery) {
            (Some(e), Some(f)) if f > 0.0 => format!("{:.2}", e / f),
            _ => "n/a".into(),
        };
        println!(
            "  elastic / {name}: catch-up time {recovery}, executor-seconds {:.2}",
            elastic.executor_seconds / o.executor_seconds.max(1e-9)
        );
    }
}
