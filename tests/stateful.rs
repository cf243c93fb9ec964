//! Stateful streaming end to end: windowed and keyed aggregation over out-of-order Kafka data,
//! with state in RocksDB on real executor processes, checked against DataFusion computing the
//! same answer in one batch over the same records.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::stream::{
    bids, produce, progress, reference, reference_closed_cumulative_windows,
    reference_closed_windows, reference_with, source_ddl, trigger_once,
};
use common::{children_of, fails, ok, sluice, spawn, wait_output};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::broker::Broker;
use sluice::datagen::{StreamBid, STREAM_BASE_MS as BASE_MS};
use sluice::table::read_rows;

#[test]
fn tumbling_windows_in_append_mode_emit_each_window_once_and_drop_late_records() {
    windows_in_append_mode(
        "TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)",
        |log, range, watermark| reference_closed_windows(log, 10_000, 10_000, range, watermark),
    );
}

#[test]
fn hopping_windows_in_append_mode_emit_each_window_once_and_drop_late_records() {
    windows_in_append_mode(
        "HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        |log, range, watermark| reference_closed_windows(log, 10_000, 2_000, range, watermark),
    );
}

/// Flink's named-argument form is the same query as the positional one: the same windows as
/// DataFusion's reference.
#[test]
fn hopping_windows_in_flinks_named_argument_form_give_the_same_windows() {
    windows_in_append_mode(
        "HOP(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), SLIDE => INTERVAL '2' SECOND, SIZE => INTERVAL '10' SECOND)",
        |log, range, watermark| reference_closed_windows(log, 10_000, 2_000, range, watermark),
    );
}

#[test]
fn cumulative_windows_in_append_mode_emit_each_window_once_and_drop_late_records() {
    windows_in_append_mode(
        "CUMULATE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        |log, range, watermark| {
            reference_closed_cumulative_windows(log, 2_000, 10_000, range, watermark)
        },
    );
}

/// Runs `window` in append mode over two phases of out-of-order data with a late record, and
/// compares with `reference`: DataFusion computing the windows independently (a range join
/// with the list of windows starting in a range) over the same records (`log`), keeping those
/// a watermark has closed.
fn windows_in_append_mode(
    window: &str,
    reference: impl Fn(&std::path::Path, (i64, i64), i64) -> Vec<Vec<String>>,
) {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE({window})\n\
         GROUP BY window_start, window_end, auction;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let run_once = || trigger_once(dir.path());

    // Phase 1: 30 s of event time. Epoch 0 reads it (no watermark yet: nothing is final);
    // epoch 1 has no new data but a watermark that moved, and emits the closed windows.
    produce(&broker, "bids", &bids(1, 0..3000), &log);
    run_once();
    assert!(
        read_rows(&dir.path().join("out/hot")).is_empty(),
        "nothing is final before a watermark"
    );
    run_once();
    let after_phase1 = read_rows(&dir.path().join("out/hot"));
    assert!(!after_phase1.is_empty(), "closed windows were not emitted");

    // Phase 2: a record far behind the watermark (dropped, counted), then 30 s more.
    let late = StreamBid {
        auction: 999,
        bidder: 1,
        price: 1,
        time_ms: BASE_MS + 1_000,
    };
    produce(
        &broker,
        "bids",
        std::slice::from_ref(&late),
        &dir.path().join("late.jsonl"),
    );
    produce(&broker, "bids", &bids(2, 3000..6000), &log);
    run_once();
    run_once();

    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 4, "{records:?}");
    let late_total: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    assert_eq!(late_total, 1, "exactly the late record is dropped");
    let state = &records[2]["state"][0];
    assert!(state["rows_updated"].as_u64().unwrap() > 0, "{state}");
    assert!(records[3]["state"][0]["rows_evicted"].as_u64().unwrap() > 0);
    let watermark = records[3]["watermark_ms"].as_i64().expect("a watermark");

    let got = read_rows(&dir.path().join("out/hot"));
    // Every window that can hold a bid (bids span about 60 s of event time from BASE_MS).
    let (lo, hi) = (BASE_MS - 20_000, BASE_MS + 80_000);
    let want = reference(&log, (lo, hi), watermark);
    assert!(want.len() > 100, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each closed window exactly once");
    assert_eq!(got, want);
    assert!(!got.iter().any(|r| r[2] == "999"));
}

#[test]
fn keyed_aggregates_in_update_mode_survive_kill_9_of_driver_and_executors() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals/', output_mode = 'update');\n\
         INSERT INTO totals\n\
         SELECT auction, count(*) AS n, sum(price) AS total, min(price) AS low, max(price) AS high,\n\
                avg(price) AS mean, count(DISTINCT bidder) AS bidders\n\
         FROM bids GROUP BY auction;\n",
        source_ddl(&broker, "bids").replace("start = 'earliest'", "start = 'earliest', max_records_per_trigger = '500'")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let all = bids(3, 0..12_000);
    produce(&broker, "bids", &all[..6000], &log);

    // A 200 ms trigger works through the backlog in limited epochs. At an arbitrary moment the
    // driver is killed (its executors notice and exit); in the second run one executor is
    // killed, then the driver; each time the query is started again.
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..2 {
        let child = spawn(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "200ms",
                "--parallelism",
                "4",
            ],
            &[],
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(1500..4000)));
        let victim = match round {
            0 => child.id() as i32,
            _ => *children_of(child.id())
                .first()
                .expect("an executor process") as i32,
        };
        unsafe { libc::kill(victim, libc::SIGKILL) };
        if round == 1 {
            // The driver re-runs the epoch on a new executor and goes on; a moment later it
            // is killed too.
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..3000)));
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        }
        let _ = wait_output(child, Duration::from_secs(60));
        if round == 0 {
            produce(&broker, "bids", &all[6000..], &log);
        }
    }
    // Finish: drain everything, then stop.
    let out = sluice(
        dir.path(),
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "available-now",
            "--executors",
            "3",
            "--parallelism",
            "3",
        ],
    );
    ok(&out);
    // Asked for 3 partitions, the query redistributes the state of its 4 — or, when the
    // killed driver left an epoch to re-run, re-runs it with the 4 it was planned with.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redistributing keyed state from 4 to 3 partitions")
            || stderr.contains("partitions it was planned with (not 3)"),
        "{stderr}"
    );

    // Update mode writes a key's row each epoch it changes; its count only grows, so the row
    // with the largest count is the key's final value.
    let rows = read_rows(&dir.path().join("out/totals"));
    let mut latest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let n: i64 = row[1].parse().unwrap();
        let keep = latest
            .get(&row[0])
            .is_none_or(|r| r[1].parse::<i64>().unwrap() < n);
        if keep {
            latest.insert(row[0].clone(), row);
        }
    }
    let got: Vec<Vec<String>> = latest.into_values().collect();
    let mut got = got;
    got.sort();
    let want = reference(
        &log,
        "SELECT auction, count(*) AS n, sum(price) AS total, min(price) AS low, max(price) AS high, \
                avg(price) AS mean, count(DISTINCT bidder) AS bidders FROM bids GROUP BY auction",
    );
    assert_eq!(got, want);
}

#[test]
fn streaming_aggregation_errors_name_the_problem() {
    let broker = Broker::start();
    broker.create_topic("bids", 1);
    let dir = tempfile::tempdir().unwrap();
    let ddl = source_ddl(&broker, "bids");
    let cases = [
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/', output_mode = 'append');\n\
             INSERT INTO t SELECT auction, count(*) FROM bids GROUP BY auction;",
            "needs a windowed aggregation",
        ),
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/', output_mode = 'sometimes');\n\
             INSERT INTO t SELECT auction, count(*) FROM bids GROUP BY auction;",
            "output_mode 'sometimes'",
        ),
        (
            "SELECT window_start, count(*) FROM TABLE(TUMBLE(bids, date_time, INTERVAL '10' SECOND)) GROUP BY window_start, window_end;",
            "DESCRIPTOR",
        ),
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/', state_ttl = '1 hour');\n\
             INSERT INTO t SELECT window_end, count(*) FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY window_start, window_end;",
            "state_ttl is for aggregations without windows",
        ),
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/', state_ttl = 'soon');\n\
             INSERT INTO t SELECT auction, count(*) FROM bids GROUP BY auction;",
            "table 't': state_ttl: 'soon' is not a duration",
        ),
        (
            "SELECT window_start, count(*) FROM TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start;",
            "GROUP BY window_start, window_end and the session key",
        ),
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/', output_mode = 'update');\n\
             INSERT INTO t SELECT window_start, window_end, bidder, count(*) FROM TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start, window_end, bidder;",
            "session windows are emitted with output_mode 'append'",
        ),
        (
            "CREATE TABLE t WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO t SELECT window_start, window_end, count(*) FROM TABLE(SESSION(TABLE bids PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;",
            "keeps sessions per bidder: group by it too",
        ),
        (
            "SELECT window_start, count(*) FROM TABLE(TUMBLE(DATA => TABLE bids, TIMECOL => DESCRIPTOR(date_time), OFFSET => INTERVAL '1' SECOND)) GROUP BY window_start, window_end;",
            "TUMBLE has no parameter OFFSET",
        ),
    ];
    for (i, (query, needle)) in cases.into_iter().enumerate() {
        let checkpoint = format!("ckpt-err-{i}");
        std::fs::write(dir.path().join("job.sql"), format!("{ddl}{query}")).unwrap();
        let err = fails(&sluice(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                &checkpoint,
                "--trigger",
                "once",
            ],
        ));
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let bad = "CREATE TABLE bids (a BIGINT, t TIMESTAMP,\n  WATERMARK FOR t AS t * 2)\n  WITH (connector = 'kafka', bootstrap_servers = 'x:1', topic = 'x', format = 'json');\nSELECT a FROM bids;";
    std::fs::write(dir.path().join("job.sql"), bad).unwrap();
    let err = fails(&sluice(dir.path(), &["run", "job.sql"]));
    assert!(
        err.contains("job.sql:2:") && err.contains("watermark"),
        "{err}"
    );
}

#[test]
fn stream_static_join_enriches_every_epoch_from_the_file_table() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    // Auctions 0..15 of the 20 the bids name: bids of 15..19 find no match (inner join).
    std::fs::create_dir_all(dir.path().join("auctions")).unwrap();
    let csv = dir.path().join("auctions/auctions.csv");
    let mut text = String::from("id,category\n");
    for id in 0..15 {
        text.push_str(&format!("{id},cat-{}\n", id % 4));
    }
    std::fs::write(&csv, text).unwrap();
    let job = format!(
        "{}CREATE TABLE auctions (id BIGINT, category VARCHAR) WITH (connector = 'csv', path = 'auctions/');\n\
         CREATE TABLE enriched WITH (connector = 'parquet', path = 'out/enriched/');\n\
         INSERT INTO enriched\n\
         SELECT b.auction, a.category, b.bidder, b.price FROM bids b JOIN auctions a ON b.auction = a.id;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let run_once = || trigger_once(dir.path());
    produce(&broker, "bids", &bids(5, 0..800), &log);
    run_once();
    let first = read_rows(&dir.path().join("out/enriched")).len();
    assert!(first > 0);
    // The second epoch reads only the new bids, and the whole static table again.
    produce(&broker, "bids", &bids(6, 800..1600), &log);
    run_once();
    // Nothing new: no epoch, no output.
    run_once();
    assert_eq!(progress(&dir.path().join("ckpt")).len(), 2);

    let mut got = read_rows(&dir.path().join("out/enriched"));
    got.sort();
    assert!(got.len() > first, "the second epoch joined nothing");
    let want = reference_with(
        &log,
        &[("auctions", csv.as_path())],
        "SELECT b.auction, a.category, b.bidder, b.price FROM bids b JOIN auctions a ON b.auction = a.id",
    );
    assert_eq!(got, want);
}

#[test]
fn kafka_sink_carries_an_update_stream_keyed_by_the_group_columns() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    broker.create_topic("totals", 3);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE totals WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'totals');\n\
         INSERT INTO totals SELECT auction, count(*) AS n, max(price) AS top FROM bids GROUP BY auction;\n",
        source_ddl(&broker, "bids"),
        broker.bootstrap()
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let run_once = || trigger_once(dir.path());
    produce(&broker, "bids", &bids(7, 0..1000), &log);
    run_once();
    produce(&broker, "bids", &bids(8, 1000..1500), &log);
    run_once();

    // Each epoch sends the keys it changed; a key always goes to the same partition, in order,
    // so the last record per key is its current value — what an upsert consumer keeps.
    let records = broker.read_topic("totals", 3, Duration::from_secs(3));
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut latest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (partition, key, value) in &records {
        let key: serde_json::Value = serde_json::from_slice(key.as_ref().expect("a key")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(value).unwrap();
        assert_eq!(key["auction"], value["auction"], "{key} {value}");
        let auction = value["auction"].to_string();
        assert_eq!(
            *partition_of.entry(auction.clone()).or_insert(*partition),
            *partition
        );
        latest.insert(
            auction.clone(),
            vec![auction, value["n"].to_string(), value["top"].to_string()],
        );
    }
    let got: Vec<Vec<String>> = latest.into_values().collect();
    let want = reference(
        &log,
        "SELECT auction, count(*) AS n, max(price) AS top FROM bids GROUP BY auction",
    );
    let mut got = got;
    got.sort();
    assert_eq!(got, want);
    // The second epoch sent only keys it changed, but some: more records than keys in total.
    assert!(records.len() > want.len(), "{} records", records.len());
    let last = progress(&dir.path().join("ckpt"));
    assert_eq!(last.len(), 2);
}

#[test]
fn distinct_drops_duplicates_within_the_watermark_and_forgets_keys_behind_it() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let dups = dir.path().join("duplicates.jsonl");
    let job = format!(
        "{}CREATE TABLE uniq WITH (connector = 'parquet', path = 'out/uniq/');\n\
         INSERT INTO uniq SELECT DISTINCT auction, bidder, price, date_time FROM bids;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let run_once = || trigger_once(dir.path());
    // Epoch 0: 20 s of bids, some twice within the epoch.
    let first = bids(9, 0..2000);
    produce(&broker, "bids", &first, &log);
    produce(&broker, "bids", &first[500..600], &dups);
    run_once();
    // Epoch 1: the last 10 s again (duplicates: on time ones are caught by the state, the
    // rest are behind the watermark) and the first 2 s again (late), with 10 s of new bids.
    produce(&broker, "bids", &first[1000..], &dups);
    produce(&broker, "bids", &first[..200], &dups);
    produce(&broker, "bids", &bids(10, 2000..3000), &log);
    run_once();
    // Epoch 2: the watermark moved; keys behind it are forgotten.
    run_once();

    let got = read_rows(&dir.path().join("out/uniq"));
    let want = reference(
        &log,
        "SELECT DISTINCT auction, bidder, price, date_time FROM bids",
    );
    assert_eq!(got.len(), want.len(), "each distinct row exactly once");
    assert_eq!(got, want);
    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records[1]["late_records"].as_u64().unwrap() >= 200,
        "{}",
        records[1]
    );
    assert!(records[2]["state"][0]["rows_evicted"].as_u64().unwrap() > 0);
}

#[test]
fn state_ttl_forgets_keys_not_updated_within_it() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let (log1, log2) = (
        dir.path().join("first.jsonl"),
        dir.path().join("second.jsonl"),
    );
    let job = format!(
        "{}CREATE TABLE totals WITH (connector = 'parquet', path = 'out/totals/', state_ttl = '3 seconds');\n\
         INSERT INTO totals SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let run_once = || trigger_once(dir.path());
    produce(&broker, "bids", &bids(12, 0..1000), &log1);
    run_once();
    // More than the TTL later, bids for half of the auctions: every key has expired, so
    // those auctions start again from these bids alone.
    std::thread::sleep(Duration::from_secs(4));
    let second: Vec<StreamBid> = bids(13, 1000..1500)
        .into_iter()
        .filter(|b| b.auction < 10)
        .collect();
    produce(&broker, "bids", &second, &log2);
    run_once();

    // Update mode: epoch 0 wrote every auction's totals over the first bids, epoch 1 the
    // totals of auctions 0..9 over the second bids only.
    let sql = "SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction";
    let mut want = reference(&log1, sql);
    want.extend(reference(&log2, sql));
    want.sort();
    let got = read_rows(&dir.path().join("out/totals"));
    assert_eq!(got, want);
    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["state"][0]["rows_evicted"], 20, "{}", records[1]);
}

/// Bids keyed by (auction, bidder), each key's bids on one partition (as a keyed producer
/// sends them), appended to `log` when given.
fn produce_by_key(broker: &Broker, bids: &[StreamBid], log: Option<&std::path::Path>) {
    let records: Vec<(i32, Vec<u8>, Vec<u8>)> = bids
        .iter()
        .map(|b| {
            let key = format!("{}-{}", b.auction, b.bidder);
            (
                ((b.auction + b.bidder) % 2) as i32,
                key.into_bytes(),
                b.json(),
            )
        })
        .collect();
    broker.producer().send_all("bids", records);
    if let Some(log) = log {
        let mut text = std::fs::read_to_string(log).unwrap_or_default();
        for b in bids {
            text.push_str(std::str::from_utf8(&b.json()).unwrap());
            text.push('\n');
        }
        std::fs::write(log, text).unwrap();
    }
}

/// Flink's deduplication, `ROW_NUMBER() OVER (PARTITION BY key ORDER BY time) ... rn = 1`,
/// keeps each key's first row: over a stream with duplicates (re-sent records and later bids of
/// the same key) and a driver `kill -9` at a random moment, every key is written once, with
/// the row DataFusion's window function picks over all the records.
#[test]
fn dedup_by_key_writes_each_keys_first_row_once_through_a_driver_kill() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE firsts WITH (connector = 'parquet', path = 'out/firsts/');\n\
         INSERT INTO firsts\n\
         SELECT auction, bidder, price, date_time FROM (\n\
           SELECT *, ROW_NUMBER() OVER (PARTITION BY auction, bidder ORDER BY date_time) AS rn\n\
           FROM bids)\n\
         WHERE rn = 1;\n",
        source_ddl(&broker, "bids").replace(
            "start = 'earliest'",
            "start = 'earliest', max_records_per_trigger = '300'"
        )
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // Event time grows with the send order, so a key's first arrival is also its earliest
    // bid; 20 auctions × 50 bidders = 1000 keys, about three bids each.
    let bid = |i: i64| {
        let b = sluice::datagen::stream_bid(31, i as u64);
        StreamBid {
            time_ms: BASE_MS + i * 10,
            ..b
        }
    };
    let first: Vec<StreamBid> = (0..2000).map(bid).collect();
    produce_by_key(&broker, &first, Some(&log));
    // Re-sent records: exact duplicates of bids already sent.
    produce_by_key(&broker, &first[300..700], None);
    let seed = common::test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let child = spawn(
        dir.path(),
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "100ms",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(rng.random_range(800..3000)));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = wait_output(child, Duration::from_secs(60));
    let second: Vec<StreamBid> = (2000..3000).map(bid).collect();
    produce_by_key(&broker, &second, Some(&log));
    produce_by_key(&broker, &first[1500..], None);
    ok(&sluice(
        dir.path(),
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "available-now",
        ],
    ));

    let got = read_rows(&dir.path().join("out/firsts"));
    let keys: std::collections::BTreeSet<_> =
        got.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(keys.len(), got.len(), "a key written twice (seed {seed})");
    let want = reference(
        &log,
        "SELECT auction, bidder, price, date_time FROM (\
           SELECT *, row_number() OVER (PARTITION BY auction, bidder ORDER BY date_time) AS rn \
           FROM bids) WHERE rn = 1",
    );
    assert!(want.len() > 900, "{} keys", want.len());
    assert_eq!(got, want, "seed {seed}");
    // Keeping the last row is refused with the reason.
    std::fs::write(
        dir.path().join("last.sql"),
        std::fs::read_to_string(dir.path().join("job.sql"))
            .unwrap()
            .replace("ORDER BY date_time)", "ORDER BY date_time DESC)"),
    )
    .unwrap();
    let err = fails(&sluice(
        dir.path(),
        &[
            "run",
            "last.sql",
            "--checkpoint",
            "ckpt-last",
            "--trigger",
            "once",
        ],
    ));
    assert!(err.contains("keeps the last row of each key"), "{err}");
}

/// Key groups: a stateful windowed query restarted on one checkpoint with 2, then 4, then 3
/// partitions redistributes its open windows each time, and its output equals DataFusion's
/// windows over the same events (those the last committed watermark closed).
#[test]
fn a_windowed_query_restarted_with_2_then_4_then_3_partitions_keeps_every_open_window() {
    let dir = tempfile::tempdir().unwrap();
    let query = "SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS high \
                 FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) \
                 GROUP BY window_start, window_end, auction";
    std::fs::write(
        dir.path().join("job.sql"),
        format!(
            "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
             WITH (connector = 'nexmark', kind = 'bid', rate = '10000');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO out {query};\n"
        ),
    )
    .unwrap();
    let mut notices = Vec::new();
    for parallelism in ["2", "4", "3"] {
        let child = spawn(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "200ms",
                "--parallelism",
                parallelism,
            ],
            &[],
        );
        std::thread::sleep(Duration::from_secs(4));
        // Ctrl-C: the epoch in flight commits, then the query stops (nothing to replay).
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = wait_output(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        notices.push(stderr);
    }
    assert!(
        notices[1].contains("redistributing keyed state from 2 to 4 partitions (128 key groups)"),
        "{}",
        notices[1]
    );
    assert!(
        notices[2].contains("redistributing keyed state from 4 to 3 partitions"),
        "{}",
        notices[2]
    );
    // The state of the last layout: three partitions holding key groups 0..43, 43..86, 86..128.
    let op = std::fs::read_dir(dir.path().join("ckpt/state"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("op-"))
        .unwrap()
        .path();
    for range in ["kg-0-43", "kg-43-86", "kg-86-128", "kg-0-64", "kg-96-128"] {
        assert!(op.join(range).is_dir(), "no {range} in {op:?}");
    }

    // The events the committed epochs read, and the last committed watermark.
    let offsets = dir.path().join("ckpt/offsets");
    let last = std::fs::read_dir(&offsets)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let input: serde_json::Value =
        serde_json::from_slice(&std::fs::read(offsets.join(last.to_string())).unwrap()).unwrap();
    let events = input["sources"]["bid"]["position"]["0"].as_i64().unwrap();
    // The unbounded stream starts at the query's first epoch, a bounded one at the
    // benchmark's base time (2015-07-15): the same events, shifted.
    let shift = input["sources"]["bid"]["position"]["1"].as_i64().unwrap() - 1_436_918_400_000;
    let watermark = input["watermark_ms"].as_i64().unwrap();
    assert!(events > 40_000, "only {events} events");
    std::fs::write(
        dir.path().join("raw.sql"),
        format!(
            "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', rate = '10000', events = '{events}');\n\
             CREATE TABLE raw WITH (connector = 'parquet', path = 'raw/');\n\
             INSERT INTO raw SELECT * FROM bid;\n"
        ),
    )
    .unwrap();
    ok(&sluice(
        dir.path(),
        &["run", "raw.sql", "--checkpoint", "raw-ckpt"],
    ));
    let reference = sluice::reference::Reference::new()
        .table(
            "raw",
            sluice::reference::Input::Parquet(&dir.path().join("raw")),
        )
        .table(
            "out",
            sluice::reference::Input::Parquet(&dir.path().join("out")),
        );
    let want = reference.rows(&format!(
        "SELECT rtrim(CAST(window_start AS VARCHAR), 'Z'), auction, bids, high FROM ( \
           SELECT date_bin(INTERVAL '2' SECOND, to_timestamp_millis(CAST(date_time AS BIGINT) + {shift})) AS window_start, auction, \
                  count(*) AS bids, max(price) AS high FROM raw GROUP BY 1, 2) \
         WHERE window_start + INTERVAL '2' SECOND <= to_timestamp_millis({watermark}) \
         ORDER BY 1, 2"
    ));
    let got = reference
        .rows("SELECT CAST(window_start AS VARCHAR), auction, bids, high FROM out ORDER BY 1, 2");
    assert!(want.len() > 100, "only {} closed windows", want.len());
    assert_eq!(got.len(), want.len(), "each closed window once");
    if let Some((g, w)) = got.iter().zip(&want).find(|(g, w)| g != w) {
        panic!("first difference: got {g:?}, want {w:?}");
    }
}
