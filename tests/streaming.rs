//! Streaming end to end: a real Kafka-protocol broker on loopback (started by the test, installed
//! on first use), `sluice run` as real driver and executor processes, and the Parquet output read
//! back with the `parquet` crate.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{committed, fails, ok, sluice, spawn, wait_for_event, wait_output, Logged};
use rand::{Rng, SeedableRng};
use sluice::broker::Broker;
use sluice::datagen::event_json as event;

/// Produces events `ids` round-robin over `partitions`, batched as ordinary producers do.
fn produce(broker: &Broker, topic: &str, partitions: i32, ids: std::ops::Range<u64>) {
    broker.producer().send_all(
        topic,
        ids.map(|i| {
            (
                (i % partitions as u64) as i32,
                i.to_string().into_bytes(),
                event(i),
            )
        }),
    );
}

fn pipeline(dir: &Path, broker: &Broker, topic: &str, options: &str) {
    let sql = format!(
        "CREATE TABLE events (user_id BIGINT, kind VARCHAR, amount DOUBLE, ts TIMESTAMP)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'json',\n\
               start = 'earliest'{options});\n\
         CREATE TABLE lake WITH (connector = 'parquet', path = 'lake/events/', partition_by = 'dt');\n\
         INSERT INTO lake SELECT *, CAST(ts AS DATE) AS dt FROM events WHERE amount > 0;\n",
        broker.bootstrap(),
    );
    std::fs::write(dir.join("pipeline.sql"), sql).unwrap();
}

/// Every `user_id` in the published table, read with the parquet crate.
fn user_ids(root: &Path) -> Vec<i64> {
    common::int_column(root, "user_id")
}

fn assert_exactly(ids: &[i64], expected: std::ops::Range<u64>) {
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "{} duplicate rows in the output",
        ids.len() - distinct.len()
    );
    let want: BTreeSet<i64> = expected.map(|i| i as i64).collect();
    let missing = want.difference(&distinct).count();
    let extra = distinct.difference(&want).count();
    assert!(
        missing == 0 && extra == 0,
        "{missing} records missing, {extra} unexpected ({} rows read)",
        ids.len()
    );
}

/// Records of the driver kill test: `SLUICE_KILL_TEST_RECORDS` (the scenario is
/// 300 000, the default).
fn kill_test_records() -> u64 {
    std::env::var("SLUICE_KILL_TEST_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000)
}

#[test]
fn kafka_to_parquet_is_exactly_once_across_three_driver_kill_9s() {
    let n = kill_test_records();
    let seed = common::test_seed();
    let broker = Broker::start();
    broker.create_topic("events", 4);
    let dir = tempfile::tempdir().unwrap();
    pipeline(
        dir.path(),
        &broker,
        "events",
        ", max_records_per_trigger = '20000'",
    );
    // Records arrive, batched as ordinary producers send them, while the pipeline runs and is
    // killed three times at random moments; then it runs on until the producer is done.
    let producer_broker = &broker;
    let args = [
        "run",
        "pipeline.sql",
        "--checkpoint",
        "ckpt",
        "--trigger",
        "200ms",
    ];
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || produce(producer_broker, "events", 4, 0..n));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ckpt = dir.path().join("ckpt");
        let committed = || common::committed_epochs(&ckpt);
        for round in 0..3 {
            let before = committed();
            let mut child = spawn(dir.path(), &args, &[]);
            let started = Instant::now();
            // Let it commit something new, then kill it at a random moment.
            common::eventually(Duration::from_secs(120), || committed() > before);
            std::thread::sleep(Duration::from_millis(rng.random_range(200..3_000)));
            child.kill().unwrap(); // SIGKILL
            let out = child.wait_with_output().unwrap();
            assert!(
                !out.status.success(),
                "the driver was killed, not finished: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "round {round}: killed -9 after {:?} ({} epochs committed so far)",
                started.elapsed(),
                committed()
            );
        }
        let before = committed();
        let last = spawn(dir.path(), &args, &[]);
        producer.join().unwrap();
        // Once it runs (committed something), stop it gracefully (SIGTERM: after the current
        // epoch commits).
        common::eventually(Duration::from_secs(120), || committed() > before);
        unsafe { libc::kill(last.id() as i32, libc::SIGTERM) };
        let out = wait_output(last, Duration::from_secs(300));
        ok(&out);
    });
    // The same command resumes; `available-now` drains what is left and exits.
    let out = sluice(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "available-now",
        ],
    );
    ok(&out);
    let ids = user_ids(&dir.path().join("lake/events"));
    assert_exactly(&ids, 0..n);
    // DuckDB, reading the lake as a user would, sees the same.
    let ids = sluice::table::duckdb_int_column(&dir.path().join("lake/events"), "user_id");
    assert_exactly(&ids, 0..n);
    // Readers listing the table see only published Parquet files.
    for f in sluice::table::all_files(&dir.path().join("lake/events")) {
        assert!(
            f.extension().is_some_and(|e| e == "parquet"),
            "stray file in the table: {}",
            f.display()
        );
    }
    let progress = sluice::progress::records(&dir.path().join("ckpt"));
    assert!(
        progress.len() > 3,
        "expected many epochs, got {}",
        progress.len()
    );
}

#[test]
fn trigger_once_reads_everything_in_one_epoch_and_available_now_respects_the_limit() {
    let broker = Broker::start();
    broker.create_topic("t1", 2);
    produce(&broker, "t1", 2, 0..1000);
    let dir = tempfile::tempdir().unwrap();
    pipeline(
        dir.path(),
        &broker,
        "t1",
        ", max_records_per_trigger = '300'",
    );
    ok(&sluice(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
            "--progress",
            "json",
        ],
    ));
    assert_exactly(&user_ids(&dir.path().join("lake/events")), 0..1000);
    let progress = sluice::progress::records(&dir.path().join("ckpt"));
    assert_eq!(progress.len(), 1, "once is one epoch, whatever the limit");
    assert_eq!(progress[0]["input_rows"], 1000);

    // More data: available-now drains it in epochs of at most 300 records, then exits.
    produce(&broker, "t1", 2, 1000..2000);
    let out = sluice(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "available-now",
            "--progress",
            "json",
        ],
    );
    let stdout = ok(&out);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "1000 records at 300 per epoch: {stdout}");
    for p in &lines {
        assert!(p["input_rows"].as_u64().unwrap() <= 300, "{p}");
        assert!(p["duration_ms"]["execution"].as_f64().is_some(), "{p}");
        assert!(p["sources"]["events"]["partitions"].is_array(), "{p}");
    }
    assert_exactly(&user_ids(&dir.path().join("lake/events")), 0..2000);
    // Nothing new: exits at once without an epoch.
    let out = sluice(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "available-now",
        ],
    );
    ok(&out);
    assert_exactly(&user_ids(&dir.path().join("lake/events")), 0..2000);
    // Inspection shows the epochs, offsets and the lag against the live broker.
    let text = ok(&sluice(dir.path(), &["checkpoint", "inspect", "ckpt"]));
    assert!(text.contains("next offsets: 0:1000, 1:1000"), "{text}");
    assert!(text.contains("lag of events now: 0 records"), "{text}");
}

#[test]
fn a_partition_added_mid_run_is_picked_up_and_ctrl_c_stops_after_a_commit() {
    let mut broker = Broker::start();
    broker.create_topic("grow", 1);
    produce(&broker, "grow", 1, 0..100);
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &broker, "grow", "");
    let run = Logged::spawn(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "200ms",
            "--events",
            "events.jsonl",
        ],
        &[],
    );
    let events = dir.path().join("events.jsonl");
    wait_for_event(
        &events,
        "epoch 0 committed",
        Duration::from_secs(60),
        committed(0),
    );
    // The topic grows to 3 partitions while the query runs (the broker restarts for it: the
    // query retries planning meanwhile), and a record lands in a new partition.
    broker.add_partitions("grow", 3);
    let producer = broker.producer();
    producer.send_one("grow", 2, b"k", &event(100));
    producer.flush();
    wait_for_event(
        &events,
        "an epoch reading the new partition's record",
        Duration::from_secs(60),
        |e| e["event"] == "epoch_committed" && e["progress"]["input_rows"] == 1,
    );
    // Ctrl-C: the run stops once the current epoch has committed, and exits 0.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    let (code, log) = run.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("sluice: stopped after"), "{log}");
    assert_exactly(&user_ids(&dir.path().join("lake/events")), 0..101);
}

fn bad_records_pipeline(dir: &Path, broker: &Broker, topic: &str, policy: &str) {
    let extra = match policy {
        "dead_letter" => ", on_bad_record = 'dead_letter', dead_letter_path = 'dead/'".to_string(),
        p => format!(", on_bad_record = '{p}'"),
    };
    pipeline(dir, broker, topic, &extra);
}

#[test]
fn bad_records_fail_skip_or_go_to_the_dead_letter_table() {
    let broker = Broker::start();
    broker.create_topic("bad", 1);
    let producer = broker.producer();
    for i in 0..10u64 {
        let value = match i {
            3 => b"{\"user_id\": 3, \"kind\": \"x\", \"amount\": ".to_vec(), // truncated
            6 => b"{\"user_id\": \"six\", \"kind\": \"x\", \"amount\": 1.0}".to_vec(), // wrong type
            _ => event(i),
        };
        producer.send_one("bad", 0, i.to_string().as_bytes(), &value);
    }
    producer.flush();
    for policy in ["fail", "skip", "dead_letter"] {
        let dir = tempfile::tempdir().unwrap();
        bad_records_pipeline(dir.path(), &broker, "bad", policy);
        let out = sluice(
            dir.path(),
            &[
                "run",
                "pipeline.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "once",
                "--progress",
                "json",
            ],
        );
        let good: Vec<i64> = (0..10).filter(|i| *i != 3 && *i != 6).collect();
        match policy {
            "fail" => {
                let err = fails(&out);
                assert!(
                    err.contains("kafka topic 'bad' partition 0 offset 3"),
                    "the error names topic, partition and offset: {err}"
                );
                assert!(
                    !dir.path().join("ckpt/commits/0").exists(),
                    "nothing committed"
                );
            }
            "skip" => {
                let stdout = ok(&out);
                let p: serde_json::Value =
                    serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
                assert_eq!(p["skipped_records"], 2, "{p}");
                let mut ids = user_ids(&dir.path().join("lake/events"));
                ids.sort();
                assert_eq!(ids, good);
            }
            _ => {
                let stdout = ok(&out);
                let p: serde_json::Value =
                    serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
                assert_eq!(p["dead_lettered_records"], 2, "{p}");
                let rows = sluice::table::read_rows(&dir.path().join("dead"));
                assert_eq!(rows.len(), 2, "{rows:?}");
                // topic, partition, offset, timestamp, key, value, error, epoch
                assert_eq!(rows[0][0..3], ["bad", "0", "3"]);
                assert_eq!(rows[1][0..3], ["bad", "0", "6"]);
                assert!(
                    rows[1][6].contains("six") || rows[1][6].to_lowercase().contains("parse"),
                    "{:?}",
                    rows[1]
                );
                let mut ids = user_ids(&dir.path().join("lake/events"));
                ids.sort();
                assert_eq!(ids, good);
            }
        }
    }
}

#[test]
fn offsets_gone_from_the_broker_fail_or_are_skipped_and_recorded() {
    let broker = Broker::start();
    broker.create_topic("lost", 1);
    produce(&broker, "lost", 1, 0..20);
    let fail_dir = tempfile::tempdir().unwrap();
    let skip_dir = tempfile::tempdir().unwrap();
    pipeline(fail_dir.path(), &broker, "lost", "");
    pipeline(
        skip_dir.path(),
        &broker,
        "lost",
        ", on_offsets_lost = 'skip'",
    );
    for dir in [&fail_dir, &skip_dir] {
        ok(&sluice(
            dir.path(),
            &[
                "run",
                "pipeline.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "once",
            ],
        ));
    }
    // The topic is recreated with fewer records than the queries have read.
    broker.delete_topic("lost");
    broker.create_topic("lost", 1);
    produce(&broker, "lost", 1, 100..105);

    let err = fails(&sluice(
        fail_dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
        ],
    ));
    assert!(
        err.contains("kafka topic 'lost' partition 0")
            && err.contains("next offset is 20")
            && err.contains("on_offsets_lost = 'skip'"),
        "{err}"
    );

    let out = sluice(
        skip_dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
            "--progress",
            "json",
        ],
    );
    let stdout = ok(&out);
    let p: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let gap = &p["sources"]["events"]["gaps"][0];
    assert_eq!(gap["expected"], 20, "{p}");
    assert_eq!(gap["resumed_at"], 0, "{p}");
    let mut ids = user_ids(&skip_dir.path().join("lake/events"));
    ids.sort();
    let want: Vec<i64> = (0..20).chain(100..105).collect();
    assert_eq!(ids, want);
    let text = ok(&sluice(skip_dir.path(), &["checkpoint", "inspect", "ckpt"]));
    assert!(
        text.contains("SKIPPED: partition 0 offsets from 20"),
        "{text}"
    );
}

#[test]
fn a_second_driver_and_a_changed_query_are_refused() {
    let broker = Broker::start();
    broker.create_topic("fence", 1);
    produce(&broker, "fence", 1, 0..10);
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path(), &broker, "fence", "");
    let first = Logged::spawn(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "500ms",
            "--events",
            "events.jsonl",
        ],
        &[],
    );
    wait_for_event(
        &dir.path().join("events.jsonl"),
        "epoch 0 committed",
        Duration::from_secs(60),
        committed(0),
    );
    let err = fails(&sluice(
        dir.path(),
        &[
            "run",
            "pipeline.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
        ],
    ));
    assert!(err.contains("in use by another driver"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    unsafe { libc::kill(first.child.id() as i32, libc::SIGTERM) };
    let (code, log) = first.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");

    // The same checkpoint with a different query: a clear message, nothing touched.
    let sql = std::fs::read_to_string(dir.path().join("pipeline.sql")).unwrap();
    std::fs::write(
        dir.path().join("changed.sql"),
        sql.replace("amount > 0", "amount > 1"),
    )
    .unwrap();
    let before = std::fs::read_dir(dir.path().join("ckpt/offsets"))
        .unwrap()
        .count();
    let err = fails(&sluice(
        dir.path(),
        &[
            "run",
            "changed.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
        ],
    ));
    assert!(err.contains("different query"), "{err}");
    assert_eq!(
        before,
        std::fs::read_dir(dir.path().join("ckpt/offsets"))
            .unwrap()
            .count()
    );
}

/// `scripts/broker.sh`, as the README's quick start uses it: `start` records the broker's own
/// pid, a second `start` says it runs, `status` reports it, `stop` returns once the port is free.
#[test]
fn the_broker_script_starts_reports_and_stops_its_own_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let script = sluice::repo_root().join("scripts/broker.sh");
    let dir_arg = dir.path().to_str().unwrap();
    let run = |command: &str| {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .args([command, "--port", &port, "--dir", dir_arg])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let listening = || std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok();

    let (code, text) = run("start");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("listening on 127.0.0.1:{port}")),
        "{text}"
    );
    let pid = std::fs::read_to_string(dir.path().join("tansu.pid")).unwrap();
    let pid = pid.trim();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "tansu", "tansu.pid holds the broker's own pid");
    assert!(listening());

    let (code, text) = run("start");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("already running in {dir_arg} (pid {pid}")),
        "{text}"
    );
    let (code, text) = run("status");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("pid {pid}, port {port}")), "{text}");

    let (code, text) = run("stop");
    assert_eq!(code, Some(0), "{text}");
    assert!(!listening(), "the port is free once stop returns");
    assert!(!common::alive(pid.parse().unwrap()), "the broker exited");
    assert!(!dir.path().join("tansu.pid").exists());
    let (code, text) = run("status");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no broker running"), "{text}");
}

/// An epoch whose data moves the watermark past a window's end is followed at once by the
/// epoch that closes the window, not a trigger later; `--watermark-epochs=false` waits for the
/// trigger. Either way the window is written once, complete.
#[test]
fn the_epoch_that_closes_a_window_follows_its_data_at_once_not_a_trigger_later() {
    use sluice::datagen::{iso_millis, STREAM_BASE_MS as BASE_MS};
    for follow in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let landing = dir.path().join("landing");
        std::fs::create_dir_all(&landing).unwrap();
        // Ten bids in the window [BASE, BASE + 10 s), and one at BASE + 15 s: with a 1 s delay
        // the watermark after it is BASE + 14 s, past the window's end.
        let mut text = String::new();
        for (i, at) in (0..10).map(|i| i * 900).chain([15_000]).enumerate() {
            text.push_str(&format!(
                "{{\"auction\": {i}, \"price\": {}, \"date_time\": \"{}\"}}\n",
                100 + i,
                iso_millis(BASE_MS + at)
            ));
        }
        std::fs::write(landing.join("bids-000.jsonl"), text).unwrap();
        std::fs::write(
            dir.path().join("job.sql"),
            "CREATE TABLE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP,\n\
               WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)\n\
             WITH (connector = 'json', path = 'landing/', stream = 'true');\n\
             CREATE TABLE totals WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO totals\n\
             SELECT window_start, count(*) AS bids, sum(price) AS total\n\
             FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
             GROUP BY window_start, window_end;\n",
        )
        .unwrap();
        let flag = format!("--watermark-epochs={follow}");
        let args = ["run", "job.sql", "--checkpoint", "ckpt", "--trigger", "6s"];
        ok(&sluice(
            dir.path(),
            &[&args[..], &["--max-epochs", "2", &flag]].concat(),
        ));
        let records = common::stream::progress(&dir.path().join("ckpt"));
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0]["input_rows"], 11, "{records:?}");
        assert_eq!(records[1]["watermark_ms"], BASE_MS + 14_000, "{records:?}");
        let at = |r: &serde_json::Value| r["batch_timestamp_ms"].as_u64().unwrap();
        let gap = at(&records[1]) - at(&records[0]);
        if follow {
            assert!(
                gap < 3_000,
                "the closing epoch started {gap} ms after the data's"
            );
        } else {
            assert!(
                gap >= 5_000,
                "the closing epoch started {gap} ms after the data's"
            );
        }
        let rows = sluice::table::read_rows(&dir.path().join("out"));
        let start = iso_millis(BASE_MS).replace('T', " ");
        let total: u64 = (100..110).sum();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            rows[0][1..],
            ["10".to_string(), total.to_string()],
            "{rows:?}"
        );
        let got = rows[0][0].replace('T', " ");
        assert!(got.starts_with(&start[..19]), "{rows:?} vs {start}");
    }
}
