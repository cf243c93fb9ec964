//! P4 — Nexmark q0, q1, q2, q5, q7 and q8 as SQL over the in-process Nexmark generator.
//!
//! Each query runs as a bounded job (`events = N`, one epoch) through the real `sluice run` CLI
//! on 2 executor processes (1 slot each), writing Parquet. Reported per query: events per
//! CPU-second — N over the CPU time the driver and executors actually used (user + system,
//! from `getrusage(RUSAGE_CHILDREN)` around the run, start-up included) — and events per
//! wall-second. Beside them, in the same run: the generator alone (this process reading every
//! event of the stream into bid rows, single-threaded), the ceiling for q0–q2.
//!
//! Targets (issue 4): q0–q2 ≥ 700 K, q5 ≥ 300 K, q7 ≥ 150 K events per CPU-second, q8 ≥ 0.8× q0.
//! Published anchors: Flink 120–195 K events per core-second on q0–q2, 22–41 K on q5.
//!
//! The cost of the web UI and metrics (on by default): with `--ui-compare R`, q5 runs R more
//! times with the UI on and R times with `--ui off`, alternating, and the medians' ratio is
//! printed (target: within 2 %).
//!
//! Run: `scripts/bench-p4.sh [--events 10000000] [--queries q0,q1,q2,q5,q7,q8] [--ui-compare 3]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_connectors::nexmark::{NexmarkKind, NexmarkSource, NexmarkSpec};
use sluice_connectors::{PlanRequest, ReadContext, Source};

use sluice::nexmark::QUERIES;

fn args() -> (u64, Vec<String>, usize) {
    let mut events = 10_000_000u64;
    let mut ui_compare = 0;
    let mut queries: Vec<String> = QUERIES.iter().map(|(q, _)| q.to_string()).collect();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => events = it.next().and_then(|v| v.parse().ok()).expect("--events N"),
            "--queries" => {
                queries = it
                    .next()
                    .expect("--queries q0,q1")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--ui-compare" => {
                ui_compare = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--ui-compare R")
            }
            _ => {}
        }
    }
    (events, queries, ui_compare)
}

/// Runs `query` over `events` events: (wall, CPU of driver + executors).
fn run_query(work: &Path, name: &str, query: &str, events: u64, ui: bool) -> (Duration, Duration) {
    let out = work.join(format!("out-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(work.join(format!("ckpt-{name}")));
    let tables: String = ["bid", "auction", "person"]
        .iter()
        .map(|k| {
            format!("CREATE TABLE {k} WITH (connector = 'nexmark', kind = '{k}', events = '{events}');\n")
        })
        .collect();
    let job = work.join(format!("{name}.sql"));
    std::fs::write(
        &job,
        format!(
            "{tables}CREATE TABLE out WITH (connector = 'parquet', path = '{}/');\nINSERT INTO out {query};\n",
            out.display()
        ),
    )
    .unwrap();
    let cpu_before = sluice::process::children_cpu();
    let started = Instant::now();
    let result = Command::new(sluice::sluice_binary())
        .args([
            "run",
            job.to_str().unwrap(),
            "--executors",
            "2",
            "--slots",
            "1",
        ])
        .args([
            "--checkpoint",
            work.join(format!("ckpt-{name}")).to_str().unwrap(),
        ])
        .args(if ui { &[][..] } else { &["--ui", "off"][..] })
        .output()
        .expect("sluice runs");
    let wall = started.elapsed();
    let cpu = sluice::process::children_cpu() - cpu_before;
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{name} failed:\n{stderr}");
    eprintln!("{name}: {}", stderr.lines().last().unwrap_or_default());
    (wall, cpu)
}

/// The generator alone: every event of the stream read into bid rows, in this thread.
fn generator_only(events: u64) -> f64 {
    let source = NexmarkSource::new(NexmarkSpec {
        table: "bid".into(),
        kind: NexmarkKind::Bid,
        events: Some(events),
        rate: 10_000,
        max_events_per_trigger: None,
    });
    let started = Instant::now();
    let plan = source.plan_epoch(&PlanRequest::default()).unwrap();
    let ctx = ReadContext {
        query_id: sluice_checkpoint::QueryId::new("p4").expect("a valid id"),
        epoch: sluice_checkpoint::Epoch(0),
    };
    let mut rows = 0;
    for split in &plan.splits {
        let mut reader = source.open(split, None, &ctx).unwrap();
        while let Some(batch) = reader.next_batch().unwrap() {
            rows += batch.num_rows();
        }
    }
    assert!(rows > 0);
    events as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let (events, queries, ui_compare) = args();
    let root = sluice::repo_root();
    let work = root.join("bench-data/p4-work");
    std::fs::create_dir_all(&work).unwrap();
    let generator = generator_only(events);
    println!("P4 Nexmark, {events} events, 2 executors x 1 slot, Parquet output");
    println!(
        "generator alone: {:.0} K events/s on one core",
        generator / 1e3
    );
    println!(
        "{:<4} {:>9} {:>9} {:>16} {:>16} {:>10}",
        "q", "wall s", "CPU s", "events/CPU-s", "events/wall-s", "target"
    );
    let mut per_cpu = std::collections::BTreeMap::new();
    for name in &queries {
        let Some((_, sql)) = QUERIES.iter().find(|(q, _)| q == name) else {
            eprintln!("unknown query {name}");
            continue;
        };
        let (wall, cpu) = run_query(&work, name, sql, events, true);
        let rate = events as f64 / cpu.as_secs_f64();
        per_cpu.insert(name.clone(), rate);
        let target = match name.as_str() {
            "q0" | "q1" | "q2" => "700 K".to_string(),
            "q5" => "300 K".to_string(),
            "q7" => "150 K".to_string(),
            _ => "0.8x q0".to_string(),
        };
        println!(
            "{:<4} {:>9.2} {:>9.2} {:>14.0} K {:>14.0} K {:>10}",
            name,
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            rate / 1e3,
            events as f64 / wall.as_secs_f64() / 1e3,
            target
        );
    }
    if let (Some(q8), Some(q0)) = (per_cpu.get("q8"), per_cpu.get("q0")) {
        println!("q8 / q0 = {:.2} (target >= 0.8)", q8 / q0);
    }
    if let Some(q0) = per_cpu.get("q0") {
        println!("q0 / generator alone = {:.2}", q0 / generator);
    }
    if ui_compare > 0 {
        let sql = QUERIES.iter().find(|(q, _)| *q == "q5").map(|(_, s)| *s);
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..ui_compare {
            for ui in [true, false] {
                let (_, cpu) = run_query(&work, "q5", sql.unwrap_or_default(), events, ui);
                let rate = events as f64 / cpu.as_secs_f64();
                if ui {
                    on.push(rate)
                } else {
                    off.push(rate)
                }
            }
        }
        let (on, off) = (
            sluice::stats::median(&on).unwrap_or(f64::NAN),
            sluice::stats::median(&off).unwrap_or(f64::NAN),
        );
        println!(
            "UI cost, q5 ({ui_compare} runs each, alternating): {:.0} K events/CPU-s with the UI, {:.0} K without: {:+.1} % (target within 2 %)",
            on / 1e3,
            off / 1e3,
            (on / off - 1.0) * 100.0
        );
    }
}
