//! Every Kafka offset of an epoch's range is accounted for: read, explained (a compacted topic)
//! or lost — and loss is loud. Real broker (tansu) on loopback, data produced in ordinary
//! batches, `sluice run` as real processes, the lake read back with DuckDB.
//!
//! The broker known to lose records is tansu's in-memory storage: it drops the first record of
//! a fetch that starts inside a multi-record batch, which every epoch boundary that falls inside
//! a batch produces.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{fails, ok, sluice};
use sluice::broker::Broker;
use sluice::datagen::event_json as event;

/// Records produced to the dropping broker.
const N: u64 = 20_000;

/// Produces events `0..n` to partition 0 of `topic` (offset == `user_id`), batched as ordinary
/// producers do; with `alone_last`, one record more in a batch of its own, because tansu's
/// memory storage reports as high watermark the base offset of the last batch + 1 (so the
/// whole of the bulk lies below it).
fn produce(broker: &Broker, topic: &str, n: u64, alone_last: bool) {
    let producer = broker.producer();
    producer.send_all(
        topic,
        (0..n).map(|i| (0, i.to_string().into_bytes(), event(i))),
    );
    if alone_last {
        producer.send_all(topic, [(0, n.to_string().into_bytes(), event(n))]);
    }
}

fn pipeline(dir: &Path, broker: &Broker, topic: &str, options: &str) {
    let sql = format!(
        "CREATE TABLE events (user_id BIGINT, kind VARCHAR, amount DOUBLE, ts TIMESTAMP)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'json',\n\
               start = 'earliest'{options});\n\
         CREATE TABLE lake WITH (connector = 'parquet', path = 'lake/', partition_by = 'dt');\n\
         INSERT INTO lake SELECT *, CAST(ts AS DATE) AS dt FROM events;\n",
        broker.bootstrap(),
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
}

fn run(dir: &Path, trigger: &str) -> std::process::Output {
    sluice(
        dir,
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            trigger,
            "--progress",
            "json",
        ],
    )
}

/// The `user_id`s in the lake as DuckDB reads them, checked free of duplicates.
fn lake_ids(dir: &Path) -> BTreeSet<i64> {
    let ids = sluice::table::duckdb_int_column(&dir.join("lake"), "user_id");
    let set: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(set.len(), ids.len(), "duplicate rows in the lake");
    set
}

/// Every offset recorded in the checkpoint's `gaps/N`, with the reasons given.
fn recorded_gaps(ckpt: &Path) -> (BTreeSet<i64>, Vec<String>) {
    let mut offsets = BTreeSet::new();
    let mut reasons = Vec::new();
    let Ok(dir) = std::fs::read_dir(ckpt.join("gaps")) else {
        return (offsets, reasons);
    };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().parse::<u64>().is_err() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for gap in record["events"].as_array().into_iter().flatten() {
            let (from, to) = (
                gap["expected"].as_i64().unwrap(),
                gap["resumed_at"].as_i64().unwrap(),
            );
            for o in from..to {
                assert!(offsets.insert(o), "offset {o} recorded twice");
            }
            reasons.push(gap["reason"].as_str().unwrap().to_string());
        }
    }
    (offsets, reasons)
}

fn progress_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn lost_offsets_fail_the_epoch_naming_topic_partition_and_offsets() {
    let broker = Broker::start_dropping();
    broker.create_topic("drops", 1);
    produce(&broker, "drops", N, true);
    let dir = tempfile::tempdir().unwrap();
    pipeline(
        dir.path(),
        &broker,
        "drops",
        ", max_records_per_trigger = '1500'",
    );
    let err = fails(&run(dir.path(), "available-now"));
    assert!(
        err.contains("kafka topic 'drops' partition 0")
            && err.contains("were never delivered by the broker: offsets ")
            && err.contains("data loss"),
        "{err}"
    );
    // Nothing of the failed epoch reached the lake: it holds exactly the committed epochs'
    // ranges, which start at 0 and are contiguous.
    let ckpt = dir.path().join("ckpt");
    let committed = common::committed_epochs(&ckpt);
    assert!(
        !ckpt.join("commits").join(committed.to_string()).exists(),
        "the failing epoch committed"
    );
    let ids = lake_ids(dir.path());
    let offsets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ckpt.join("offsets").join(committed.to_string())).unwrap(),
    )
    .unwrap();
    let failed_from = offsets["sources"]["events"]["splits"][0]["kafka"]["start"]
        .as_i64()
        .unwrap();
    let want: BTreeSet<i64> = (0..failed_from).collect();
    assert_eq!(
        ids, want,
        "the lake holds other rows than the committed epochs'"
    );
    // The error names offsets inside the failed epoch's range.
    let named = err
        .split("delivered by the broker: offsets ")
        .nth(1)
        .and_then(|s| s.split([',', '.', ' ']).next())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no offset named in: {err}"));
    assert!(named >= failed_from, "{named} < {failed_from}: {err}");
}

#[test]
fn lost_offsets_are_recorded_under_skip_and_make_up_the_lake_to_every_offset() {
    let broker = Broker::start_dropping();
    broker.create_topic("drops", 1);
    produce(&broker, "drops", N, true);
    let dir = tempfile::tempdir().unwrap();
    pipeline(
        dir.path(),
        &broker,
        "drops",
        ", max_records_per_trigger = '1500', on_offsets_lost = 'skip'",
    );
    let stdout = ok(&run(dir.path(), "available-now"));
    let ids = lake_ids(dir.path());
    let (gaps, reasons) = recorded_gaps(&dir.path().join("ckpt"));
    assert!(!gaps.is_empty(), "the dropping broker lost nothing?");
    assert!(
        reasons.iter().all(|r| r.contains("data loss")),
        "{reasons:?}"
    );
    assert!(
        ids.is_disjoint(&gaps),
        "an offset both in the lake and in gaps/"
    );
    let all: BTreeSet<i64> = ids.union(&gaps).copied().collect();
    let want: BTreeSet<i64> = (0..=N as i64).collect();
    assert_eq!(
        all.len(),
        want.len(),
        "lake ({}) + gaps ({}) do not make up every offset produced",
        ids.len(),
        gaps.len()
    );
    assert_eq!(all, want);
    // The progress records count and list the same offsets.
    let progress = progress_lines(&stdout);
    let counted: u64 = progress
        .iter()
        .map(|p| p["lost_offsets"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, gaps.len() as u64);
    let listed: usize = progress
        .iter()
        .flat_map(|p| p["sources"]["events"]["gaps"].as_array().cloned())
        .flatten()
        .map(|g| (g["resumed_at"].as_i64().unwrap() - g["expected"].as_i64().unwrap()) as usize)
        .sum();
    assert_eq!(listed, gaps.len());
    // `sluice checkpoint inspect` lists them too.
    let text = ok(&sluice(dir.path(), &["checkpoint", "inspect", "ckpt"]));
    assert!(
        text.contains("offsets that never reached the output (gaps/N):"),
        "{text}"
    );
}

#[test]
fn a_compacted_topic_reads_without_loss_and_its_compacted_offsets_are_counted() {
    let mut broker = Broker::start();
    broker.create_topic_with("compacted", 1, &[("cleanup.policy", "compact")]);
    broker.create_topic("plain", 1);
    // Even offsets carry keys written once; odd offsets rewrite ten hot keys over and over, so
    // the log cleaner removes superseded records from the middle of the partition.
    let n = 1000i64;
    let key = |i: i64| {
        if i % 2 == 0 {
            format!("once-{i}")
        } else {
            format!("hot-{}", i % 10)
        }
    };
    let mut newest = std::collections::BTreeMap::new();
    for i in 0..n {
        newest.insert(key(i), i);
    }
    let kept: BTreeSet<i64> = newest.values().copied().collect();
    let removed: Vec<i64> = (0..n).filter(|o| !kept.contains(o)).collect();
    for topic in ["compacted", "plain"] {
        broker.producer().send_all(
            topic,
            (0..n as u64).map(|i| (0, key(i as i64).into_bytes(), event(i))),
        );
    }
    // tansu's own log cleaner runs when the broker starts (and every 10 minutes).
    broker.restart();
    broker.wait_for_record_count("compacted", 0, kept.len());
    // The same holes in a topic that is not compacted: records lost.
    broker.delete_records("plain", 0, &removed);

    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &broker, "compacted", "");
    let stdout = ok(&run(dir.path(), "once"));
    let progress = progress_lines(&stdout);
    assert_eq!(progress.len(), 1);
    assert_eq!(
        progress[0]["compacted_offsets"].as_u64(),
        Some(removed.len() as u64),
        "{}",
        progress[0]
    );
    assert_eq!(progress[0]["lost_offsets"].as_u64(), Some(0));
    assert_eq!(lake_ids(dir.path()), kept);

    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &broker, "plain", "");
    let err = fails(&run(dir.path(), "once"));
    assert!(
        err.contains("kafka topic 'plain' partition 0")
            && err.contains(&format!("{} offset(s)", removed.len())),
        "{err}"
    );
    assert!(lake_ids(dir.path()).is_empty());
}
