//! P3 — Kafka → Parquet throughput against a plain consumer.
//!
//! Workload: N records with 100 B and with 1 KB values in a 4-partition topic on a local broker
//! (tansu, SQLite storage), produced as ordinary producers send them (`linger.ms = 5`, batches
//! of up to 10 000 records).
//! - Sluice: `INSERT INTO out SELECT * FROM src` with the `raw` decoder into a Parquet table,
//!   `--trigger once` on 2 executor processes; timed by the epoch's own progress record
//!   (planning, offsets log, execution, sink commit, commit log) and, separately, as the whole
//!   process (including start-up).
//! - Limit, same run, same broker, same topic: a plain rdkafka `BaseConsumer` in this process
//!   draining all partitions (assign from offset 0, poll to the high watermark), decoding nothing.
//!
//! Prints records/s and MB/s of both and the ratio (target ≥ 0.8).
//!
//! Run: `scripts/bench-p3.sh [--records 500000] [--runs 3]`

use sluice::stats::median;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice::broker::{Broker, Producer};

const PARTITIONS: i32 = 4;

fn args() -> (u64, usize) {
    let (mut records, mut runs) = (500_000u64, 3usize);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--records" => records = it.next().and_then(|v| v.parse().ok()).expect("--records N"),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            _ => {}
        }
    }
    (records, runs)
}

/// Drains every partition of `topic` to its high watermark; returns (records, bytes).
fn drain(bootstrap: &str, topic: &str) -> (u64, u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "p3-baseline")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        ends.push(high);
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut next = vec![0i64; PARTITIONS as usize];
    let (mut records, mut bytes) = (0u64, 0u64);
    while next.iter().zip(&ends).any(|(n, e)| n < e) {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg.unwrap();
            let p = msg.partition() as usize;
            if msg.offset() >= next[p] && msg.offset() < ends[p] {
                next[p] = msg.offset() + 1;
                records += 1;
                bytes += msg.payload().map(|v| v.len()).unwrap_or(0) as u64;
            }
        }
    }
    (records, bytes)
}

/// One Sluice run; returns (epoch time from its progress record, whole-process time, rows).
fn sluice_run(dir: &Path, bootstrap: &str, topic: &str, run: usize) -> (Duration, Duration, u64) {
    let job = dir.join(format!("p3-{topic}.sql"));
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE src WITH (connector = 'kafka', bootstrap_servers = '{bootstrap}', topic = '{topic}', format = 'raw');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'out-{topic}-{run}/');\n\
             INSERT INTO out SELECT * FROM src;\n"
        ),
    )
    .unwrap();
    let checkpoint = dir.join(format!("ckpt-{topic}-{run}"));
    let started = Instant::now();
    let out = Command::new(sluice::sluice_binary())
        .current_dir(dir)
        .arg("run")
        .arg(&job)
        .args([
            "--executors",
            "2",
            "--trigger",
            "once",
            "--progress",
            "json",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .output()
        .expect("sluice runs");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "sluice failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a progress record")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let epoch = Duration::from_secs_f64(v["duration_ms"]["total"].as_f64().unwrap() / 1e3);
    (epoch, wall, v["sink_rows"].as_u64().unwrap())
}

fn main() {
    let (records, runs) = args();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    println!("P3: Kafka -> Parquet, raw decoder, {records} records, 4 partitions, 2 executors; tansu SQLite storage, batched producer; median of {runs} runs");
    for size in [100usize, 1000] {
        let topic = format!("p3-{size}");
        broker.create_topic(&topic, PARTITIONS as u32);
        let value = vec![b'x'; size];
        let load = Instant::now();
        let producer = Producer::connect(&broker.bootstrap());
        let record = |i: u64| {
            (
                (i % PARTITIONS as u64) as i32,
                i.to_string().into_bytes(),
                value.clone(),
            )
        };
        producer.send_all(&topic, (0..records).map(record));
        eprintln!(
            "loaded {records} x {size} B in {:.1}s",
            load.elapsed().as_secs_f64()
        );

        let mut consumer_times = Vec::new();
        let mut epoch_times = Vec::new();
        let mut wall_times = Vec::new();
        for run in 0..runs {
            let t = Instant::now();
            let (n, _) = drain(&broker.bootstrap(), &topic);
            consumer_times.push(t.elapsed());
            assert_eq!(n, records, "the consumer read every record");
            let (epoch, wall, rows) = sluice_run(dir.path(), &broker.bootstrap(), &topic, run);
            assert_eq!(rows, records, "sluice wrote every record");
            epoch_times.push(epoch);
            wall_times.push(wall);
        }
        let (c, e, w) = (
            median(&consumer_times).unwrap_or_default(),
            median(&epoch_times).unwrap_or_default(),
            median(&wall_times).unwrap_or_default(),
        );
        let rate = |d: Duration| records as f64 / d.as_secs_f64();
        let mb = |d: Duration| (records as f64 * size as f64) / d.as_secs_f64() / 1e6;
        println!("  {size:>5} B values:");
        println!(
            "    BaseConsumer drain      {:>10.0} rec/s {:>8.1} MB/s ({:.3}s)",
            rate(c),
            mb(c),
            c.as_secs_f64()
        );
        println!(
            "    sluice epoch            {:>10.0} rec/s {:>8.1} MB/s ({:.3}s)",
            rate(e),
            mb(e),
            e.as_secs_f64()
        );
        println!(
            "    sluice whole process    {:>10.0} rec/s {:>8.1} MB/s ({:.3}s)",
            rate(w),
            mb(w),
            w.as_secs_f64()
        );
        println!(
            "    ratio sluice epoch / consumer: {:.2} (target >= 0.8: {}); whole process: {:.2}",
            c.as_secs_f64() / e.as_secs_f64(),
            if c.as_secs_f64() / e.as_secs_f64() >= 0.8 {
                "met"
            } else {
                "MISSED"
            },
            c.as_secs_f64() / w.as_secs_f64()
        );
    }
}
