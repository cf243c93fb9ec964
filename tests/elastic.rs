//! Dynamic allocation on the local manager: a windowed aggregation over Kafka whose input rate
//! steps up then down grows its executors while it has a backlog and shrinks them back once
//! the load has dropped, without replaying an epoch, and writes DataFusion's windows. A bounded
//! job grows while its tasks wait for a slot.

mod common;

use std::time::{Duration, Instant};

use common::stream::{bids, produce, progress, reference_closed_windows, source_ddl};
use common::{events, generate, ok, reference, sluice_env, spawn, wait_output, SOURCES};
use sluice::broker::Broker;
use sluice::datagen::STREAM_BASE_MS as BASE_MS;
use sluice::table::read_rows;

#[test]
fn a_streaming_query_grows_under_a_load_step_and_shrinks_back_after_it() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
        source_ddl(&broker, "bids").replace(
            "start = 'earliest'",
            "start = 'earliest', max_records_per_trigger = '2000'"
        )
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    produce(&broker, "bids", &bids(5, 0..200), &log);
    let child = spawn(
        dir.path(),
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            // Each epoch opens fresh Kafka consumers (~350 ms here): a trigger well above that
            // leaves a trickle idle.
            "--trigger",
            "1500ms",
            "--allocation-window",
            "3",
            "--allocation-cooldown",
            "1",
            "--allocation-idle-epochs",
            "4",
            // A trickle's epoch is mostly that fixed cost (~30 % of the trigger on a slow VM):
            // idle below 45 %.
            "--allocation-idle-load",
            "45",
            "--min-executors",
            "1",
            "--max-executors",
            "3",
            "--slots",
            "1",
        ],
        &[],
    );
    // A trickle, a step of 16 000 records (8 epochs' worth at the per-trigger limit), then a
    // trickle again until the query has shrunk back to one executor.
    let mut next = 200u64;
    let trickle = |until: Instant, next: &mut u64| {
        while Instant::now() < until {
            produce(&broker, "bids", &bids(5, *next..*next + 20), &log);
            *next += 20;
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    trickle(Instant::now() + Duration::from_secs(6), &mut next);
    produce(&broker, "bids", &bids(5, next..next + 16_000), &log);
    next += 16_000;
    let deadline = Instant::now() + Duration::from_secs(120);
    let shrunk = loop {
        trickle(Instant::now() + Duration::from_secs(1), &mut next);
        let records = progress(&dir.path().join("ckpt"));
        let targets: Vec<u64> = records
            .iter()
            .filter_map(|r| r["allocation"]["target"].as_u64())
            .collect();
        let peak = targets.iter().copied().max().unwrap_or(0);
        let grown_then_back =
            peak >= 2 && targets.iter().skip_while(|t| **t < peak).any(|t| *t == 1);
        if grown_then_back || Instant::now() > deadline {
            break grown_then_back;
        }
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_output(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");

    let records = progress(&dir.path().join("ckpt"));
    let trace: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "epoch {} rows {} stages {} lag {} executors {} → {}: {}",
                r["epoch"],
                r["input_rows"],
                r["stages"],
                r["allocation"]["backlog"],
                r["allocation"]["executors"],
                r["allocation"]["target"],
                r["allocation"]["reason"]
            )
        })
        .collect();
    assert!(shrunk, "no grow-then-shrink:\n{}", trace.join("\n"));
    assert!(
        stderr.contains("dynamic allocation: started executor-2")
            && stderr.contains("dynamic allocation: stopping executor-"),
        "{stderr}"
    );
    // Grown while the backlog was there, and it was worked off before the query shrank.
    let grew_at = records
        .iter()
        .position(|r| r["allocation"]["target"].as_u64() > r["allocation"]["executors"].as_u64())
        .unwrap();
    assert!(
        records[grew_at]["allocation"]["backlog"].as_u64().unwrap() > 2000,
        "{}",
        trace.join("\n")
    );
    // More executors took part in the epochs after it.
    assert!(
        records[grew_at + 1..]
            .iter()
            .any(|r| r["allocation"]["executors"].as_u64() >= Some(2)),
        "{}",
        trace.join("\n")
    );
    // No epoch was replayed because of a scale change.
    assert!(
        records.iter().all(|r| r["replay"] == false),
        "{}",
        trace.join("\n")
    );

    // Every window the last watermark closed, once, as DataFusion computes it.
    let watermark = records.last().unwrap()["watermark_ms"].as_i64().unwrap();
    let got = read_rows(&dir.path().join("out/hot"));
    let span = next as i64 * 10 + 20_000;
    let want = reference_closed_windows(
        &log,
        10_000,
        10_000,
        (BASE_MS - 20_000, BASE_MS + span),
        watermark,
    );
    assert!(want.len() > 100, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each closed window exactly once");
    assert_eq!(got, want);
}

#[test]
fn a_bounded_job_grows_while_its_tasks_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generate(d);
    let select = "SELECT auction % 20 AS a, count(*) AS n, max(price) AS top \
                  FROM bids GROUP BY auction % 20";
    std::fs::write(
        d.join("job.sql"),
        format!(
            "{SOURCES}\nCREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO out {select};\n"
        ),
    )
    .unwrap();
    // Every task takes at least 2 s (the executors' test hook), so with one executor of one
    // slot the scan's other 2 tasks (--max-executors 3 x 1 slot) wait past the 1 s threshold.
    let out = sluice_env(
        d,
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--events",
            "events.jsonl",
            "--min-executors",
            "1",
            "--max-executors",
            "3",
            "--slots",
            "1",
        ],
        &[("SLUICE_TEST_TASK_DELAY_MS", "2000")],
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let started: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("dynamic allocation: started executor-"))
        .collect();
    assert!(!started.is_empty(), "{stderr}");
    assert!(
        started
            .iter()
            .all(|l| l.contains("task(s) waiting for a slot")),
        "{started:?}"
    );
    // The decision in the progress record.
    let records = progress(&d.join("ckpt"));
    let allocation = &records.last().unwrap()["allocation"];
    assert_eq!(allocation["executors"], 1, "{allocation}");
    assert!(allocation["target"].as_u64() >= Some(2), "{allocation}");
    assert!(
        allocation["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for a slot")),
        "{allocation}"
    );
    // The executors started took tasks of the running job.
    let last = events(&d.join("events.jsonl"))
        .into_iter()
        .rfind(|e| e["event"] == "executors")
        .unwrap();
    let busy = last["executors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tasks_run"].as_u64() > Some(0))
        .count();
    assert!(busy >= 2, "{last}");
    assert_eq!(read_rows(&d.join("out")), reference(d, select));
}
