//! Statement sets end to end: one job with several `INSERT`s reads its Kafka topic once per
//! epoch and commits every table of the epoch together, through `kill -9` of the driver and of
//! an executor, on real executor processes with a real broker.

mod common;

use std::time::Duration;

use common::stream::{bids, produce, progress, reference, reference_closed_windows, source_ddl};
use common::{children_of, ok, sluice, spawn, wait_output};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::broker::Broker;
use sluice::datagen::{StreamBid, STREAM_BASE_MS as BASE_MS};
use sluice::table::read_rows;

/// A raw archive of the stream and its windowed counts, in Flink's `EXECUTE STATEMENT SET`:
/// after a driver kill, an executor kill and a second driver kill at random (seeded) moments,
/// the archive holds every record exactly once (a late one included), the counts are exactly
/// DataFusion's closed windows (the late record dropped), and the progress records show each
/// record read once in all — the topic read once per epoch, not once per `INSERT`.
#[test]
fn a_raw_archive_and_windowed_counts_commit_together_through_driver_and_executor_kills() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE archive WITH (connector = 'parquet', path = 'out/archive/');\n\
         CREATE TABLE counts WITH (connector = 'parquet', path = 'out/counts/');\n\
         EXECUTE STATEMENT SET\n\
         BEGIN\n\
           INSERT INTO archive SELECT auction, bidder, price, date_time FROM bids;\n\
           INSERT INTO counts\n\
           SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
           FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
           GROUP BY window_start, window_end, auction;\n\
         END;\n",
        source_ddl(&broker, "bids").replace(
            "start = 'earliest'",
            "start = 'earliest', max_records_per_trigger = '500'"
        )
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();

    // The plan scans the topic once, in a stage both queries read.
    let plan = ok(&sluice(dir.path(), &["explain", "job.sql"]));
    assert_eq!(plan.matches("SourceScanExec").count(), 1, "{plan}");
    assert_eq!(plan.matches("output Sink").count(), 2, "{plan}");
    assert!(plan.contains("LateRowFilterExec"), "{plan}");

    let all = bids(5, 0..12_000);
    produce(&broker, "bids", &all[..6000], &log);
    let seed = common::test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let run = |trigger: &str| {
        spawn(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                trigger,
                "--parallelism",
                "4",
            ],
            &[],
        )
    };
    // Round 0: the driver is killed (its executors notice and exit). Round 1: an executor is
    // killed (the driver re-runs what it held), then the driver.
    for round in 0..2 {
        let child = run("200ms");
        std::thread::sleep(Duration::from_millis(rng.random_range(1500..4000)));
        let victim = match round {
            0 => child.id() as i32,
            _ => *children_of(child.id())
                .first()
                .expect("an executor process") as i32,
        };
        unsafe { libc::kill(victim, libc::SIGKILL) };
        if round == 1 {
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..3000)));
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        }
        let _ = wait_output(child, Duration::from_secs(60));
        if round == 0 {
            produce(&broker, "bids", &all[6000..], &log);
        }
    }
    // A record far behind the watermark: archived, but not counted.
    let late = StreamBid {
        auction: 999,
        bidder: 1,
        price: 1,
        time_ms: BASE_MS + 1_000,
    };
    let late_log = dir.path().join("late.jsonl");
    produce(&broker, "bids", std::slice::from_ref(&late), &late_log);
    let out = wait_output(run("available-now"), Duration::from_secs(120));
    ok(&out);

    let records = progress(&dir.path().join("ckpt"));
    let read: u64 = records
        .iter()
        .map(|r| r["input_rows"].as_u64().unwrap())
        .sum();
    assert_eq!(read, 12_001, "every record read once in all (seed {seed})");
    let late_total: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    assert_eq!(late_total, 1, "the late record is dropped by the counts");
    for r in &records {
        let sinks = r["sinks"].as_object().expect("per-table progress");
        let rows: u64 = sinks.values().map(|s| s["rows"].as_u64().unwrap()).sum();
        assert_eq!(rows, r["sink_rows"].as_u64().unwrap(), "{r}");
    }
    let archived: u64 = records
        .iter()
        .filter_map(|r| r["sinks"]["archive"]["rows"].as_u64())
        .sum();
    assert_eq!(archived, 12_001);

    // The archive: every record exactly once, the late one too.
    let mut everything = std::fs::read_to_string(&log).unwrap();
    everything.push_str(&std::fs::read_to_string(&late_log).unwrap());
    let all_log = dir.path().join("all.jsonl");
    std::fs::write(&all_log, everything).unwrap();
    let got = read_rows(&dir.path().join("out/archive"));
    let want = reference(
        &all_log,
        "SELECT auction, bidder, price, date_time FROM bids",
    );
    assert_eq!(got.len(), 12_001, "seed {seed}");
    assert_eq!(got, want, "seed {seed}");

    // The counts: each window the last watermark closed, exactly once.
    let watermark = records
        .last()
        .and_then(|r| r["watermark_ms"].as_i64())
        .expect("a watermark");
    let got = read_rows(&dir.path().join("out/counts"));
    let want = reference_closed_windows(
        &log,
        10_000,
        10_000,
        (BASE_MS - 20_000, BASE_MS + 140_000),
        watermark,
    );
    assert!(want.len() > 200, "the reference has {} rows", want.len());
    assert_eq!(
        got.len(),
        want.len(),
        "each closed window once (seed {seed})"
    );
    assert_eq!(got, want, "seed {seed}");
    assert!(!got.iter().any(|r| r[2] == "999"));
}
