//! Stateful streaming end to end: windowed and keyed aggregation over out-of-order Kafka data,
//! with state in RocksDB on real executor processes, checked against DataFusion computing the
//! same answer in one batch over the same records.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{fails, ok, sluice, spawn, wait_output};
use datafusion::prelude::{JsonReadOptions, SessionContext};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::broker::Broker;
use sluice::datagen::{iso_millis, stream_bid, StreamBid, STREAM_BASE_MS as BASE_MS};
use sluice::table::{batch_rows, read_rows};

/// Bids `ids` of stream `seed` (out of order by at most 3 s; see `sluice::datagen`).
fn bids(seed: u64, ids: std::ops::Range<u64>) -> Vec<StreamBid> {
    ids.map(|i| stream_bid(seed, i)).collect()
}

/// Produces `bids` round-robin over two partitions, one record per batch at the end (see
/// `sluice::broker`), and appends them to `log` (the reference's copy of the input).
fn produce(broker: &Broker, topic: &str, bids: &[StreamBid], log: &Path) {
    let producer = broker.producer();
    let records: Vec<(i32, Vec<u8>, Vec<u8>)> = bids
        .iter()
        .enumerate()
        .map(|(i, b)| ((i % 2) as i32, b.auction.to_string().into_bytes(), b.json()))
        .collect();
    let split = records.len().saturating_sub(2);
    let (body, tail) = records.split_at(split);
    producer.send_all(topic, body.to_vec(), tail.to_vec());
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    for b in bids {
        text.push_str(std::str::from_utf8(&b.json()).unwrap());
        text.push('\n');
    }
    std::fs::write(log, text).unwrap();
}

fn source_ddl(broker: &Broker, topic: &str) -> String {
    format!(
        "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,\n\
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'json', start = 'earliest');\n",
        broker.bootstrap()
    )
}

/// DataFusion over the logged input, in one process.
fn reference(log: &Path, sql: &str) -> Vec<Vec<String>> {
    reference_with(log, &[], sql)
}

/// [`reference`], with CSV tables (or `.jsonl` logs of other streams of bids) registered
/// under their names.
fn reference_with(log: &Path, csv: &[(&str, &Path)], sql: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = SessionContext::new();
        ctx.sql(
            "SET datafusion.execution.time_zone = '+00:00'",
        )
        .await
        .ok();
        ctx.register_json(
            "raw",
            log.to_str().unwrap(),
            JsonReadOptions::default().file_extension(".jsonl"),
        )
        .await
        .unwrap();
        for (name, path) in csv {
            if path.extension().is_some_and(|e| e == "jsonl") {
                // Another stream's log, with the same columns as `bids`.
                let raw = format!("raw_{name}");
                ctx.register_json(
                    &raw,
                    path.to_str().unwrap(),
                    JsonReadOptions::default().file_extension(".jsonl"),
                )
                .await
                .unwrap();
                ctx.sql(&format!("CREATE VIEW {name} AS SELECT auction, bidder, price, CAST(date_time AS TIMESTAMP) AS date_time FROM {raw}"))
                    .await
                    .unwrap();
                continue;
            }
            ctx.register_csv(*name, path.to_str().unwrap(), Default::default())
                .await
                .unwrap();
        }
        ctx.sql("CREATE VIEW bids AS SELECT auction, bidder, price, CAST(date_time AS TIMESTAMP) AS date_time FROM raw")
            .await
            .unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut rows: Vec<Vec<String>> = batches.iter().flat_map(batch_rows).collect();
        rows.sort();
        rows
    })
}

fn progress(checkpoint: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<(u64, serde_json::Value)> = std::fs::read_dir(checkpoint.join("progress"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse::<u64>().ok()?;
            Some((
                n,
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?,
            ))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out.into_iter().map(|(_, v)| v).collect()
}

/// Processes whose parent is `pid` (the executors of a local driver).
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so parse after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out.sort();
    out
}

/// `sluice run job.sql --checkpoint ckpt --trigger once` in `dir`, which must succeed.
fn trigger_once(dir: &Path) {
    ok(&sluice(
        dir,
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "once",
        ],
    ));
}

fn ts_literal(ms: i64) -> String {
    format!("TIMESTAMP '{}'", iso_millis(ms))
}

#[test]
fn tumbling_windows_in_append_mode_emit_each_window_once_and_drop_late_records() {
    windows_in_append_mode(
        "TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)",
        10_000,
        10_000,
    );
}

#[test]
fn hopping_windows_in_append_mode_emit_each_window_once_and_drop_late_records() {
    windows_in_append_mode(
        "HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
        10_000,
        2_000,
    );
}

/// Runs `window` (of `size_ms`, sliding by `slide_ms`) in append mode over two phases of
/// out-of-order data with a late record, and compares with DataFusion computing the windows
/// independently (a range join with the list of windows) over the same records.
fn windows_in_append_mode(window: &str, size_ms: i64, slide_ms: i64) {
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
    let want = reference(
        &log,
        &format!(
            "SELECT * FROM (
               SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
               FROM (SELECT CAST(to_timestamp_millis(value) AS TIMESTAMP) AS window_start,
                            CAST(to_timestamp_millis(value + {size_ms}) AS TIMESTAMP) AS window_end
                     FROM generate_series({lo}, {hi}, {slide_ms})) w
               JOIN bids ON bids.date_time >= w.window_start AND bids.date_time < w.window_end
               GROUP BY window_start, window_end, auction)
             WHERE window_end <= {}",
            ts_literal(watermark)
        ),
    );
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
            _ => *children_of(child.id() as i32)
                .first()
                .expect("an executor process"),
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
    // Asked for 3 partitions, the query keeps the 4 its state was partitioned into.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("keeping the 4 state partitions"),
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
            "table 't': state_ttl: interval 'soon' is not a number",
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

/// Sessions per bidder in DataFusion: a bid opens a new session when the bidder's previous
/// bid is at least `gap_ms` earlier.
fn reference_sessions(log: &Path, gap_ms: i64, filter: &str) -> Vec<Vec<String>> {
    reference(
        log,
        &format!(
            "WITH o AS (
               SELECT bidder, price, date_time,
                      lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) AS prev
               FROM bids),
             s AS (
               SELECT *, sum(CASE WHEN prev IS NULL
                                    OR date_time >= prev + INTERVAL '{gap_ms} milliseconds'
                                  THEN 1 ELSE 0 END)
                         OVER (PARTITION BY bidder ORDER BY date_time
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid
               FROM o)
             SELECT * FROM (
               SELECT min(date_time) AS window_start,
                      max(date_time) + INTERVAL '{gap_ms} milliseconds' AS window_end,
                      bidder, count(*) AS bids, max(price) AS top
               FROM s GROUP BY bidder, sid) {filter}"
        ),
    )
}

#[test]
fn session_windows_merge_across_epochs_and_close_behind_the_watermark() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let query = "SELECT window_start, window_end, bidder, count(*) AS bids, max(price) AS top\n\
                 FROM TABLE(SESSION(bids, DESCRIPTOR(date_time), INTERVAL '1' SECOND))\n\
                 GROUP BY window_start, window_end, bidder";
    let job = format!(
        "{}CREATE TABLE sessions WITH (connector = 'parquet', path = 'out/sessions/');\n\
         INSERT INTO sessions\n{query};\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // 50 bidders bid every 0.5 s on average, 1.5 s out of order: sessions of a second's gap
    // open, grow, merge (a bid arriving between two sessions joins them) and close, many of
    // them across epochs.
    produce(&broker, "bids", &bids(21, 0..2500), &log);
    trigger_once(dir.path());
    produce(&broker, "bids", &bids(22, 2500..5000), &log);
    trigger_once(dir.path());
    produce(&broker, "bids", &bids(23, 5000..6000), &log);
    trigger_once(dir.path());
    trigger_once(dir.path());

    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 4, "{records:?}");
    let late: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    assert_eq!(late, 0);
    let watermark = records[3]["watermark_ms"].as_i64().expect("a watermark");
    let got = read_rows(&dir.path().join("out/sessions"));
    let want = reference_sessions(
        &log,
        1_000,
        &format!("WHERE window_end <= {}", ts_literal(watermark)),
    );
    assert!(
        want.len() > 500,
        "the reference has {} sessions",
        want.len()
    );
    assert_eq!(got.len(), want.len(), "each closed session exactly once");
    assert_eq!(got, want);
    // Sessions still open stay in state.
    assert!(records[3]["state"][0]["rows_total"].as_u64().unwrap() > 0);

    // The same query as a bounded job over the same records: every session, closed or not.
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::copy(&log, dir.path().join("in/bids.jsonl")).unwrap();
    std::fs::write(
        dir.path().join("batch.sql"),
        format!(
            "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP)\n\
               WITH (connector = 'json', path = 'in/');\n\
             CREATE TABLE all_sessions WITH (connector = 'parquet', path = 'out/all/');\n\
             INSERT INTO all_sessions\n{query};\n"
        ),
    )
    .unwrap();
    ok(&sluice(
        dir.path(),
        &["run", "batch.sql", "--executors", "2"],
    ));
    let got = read_rows(&dir.path().join("out/all"));
    let want = reference_sessions(&log, 1_000, "");
    assert_eq!(got, want);
}

#[test]
fn window_join_of_two_streams_joins_each_window_once_when_the_watermark_passes_it() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    broker.create_topic("asks", 2);
    let dir = tempfile::tempdir().unwrap();
    let (bid_log, ask_log) = (dir.path().join("bids.jsonl"), dir.path().join("asks.jsonl"));
    let asks_ddl = source_ddl(&broker, "asks").replacen("TABLE bids", "TABLE asks", 1);
    let join = "SELECT b.window_start, b.window_end, b.auction, b.bidder, b.price AS bid, a.price AS ask\n\
                FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS b\n\
                JOIN TABLE(TUMBLE(asks, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS a\n\
                ON b.auction = a.auction AND b.window_start = a.window_start AND b.window_end = a.window_end";
    let job = format!(
        "{}{asks_ddl}CREATE TABLE matches WITH (connector = 'parquet', path = 'out/matches/');\n\
         INSERT INTO matches\n{join};\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // Two epochs of both streams; windows at the boundary get rows from both epochs.
    produce(&broker, "bids", &bids(31, 0..600), &bid_log);
    produce(&broker, "asks", &bids(32, 0..600), &ask_log);
    trigger_once(dir.path());
    produce(&broker, "bids", &bids(33, 600..1200), &bid_log);
    produce(&broker, "asks", &bids(34, 600..1200), &ask_log);
    trigger_once(dir.path());
    trigger_once(dir.path());

    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 3, "{records:?}");
    let watermark = records[2]["watermark_ms"].as_i64().expect("a watermark");
    assert!(records[2]["state"][0]["rows_evicted"].as_u64().unwrap() > 0);
    let got = read_rows(&dir.path().join("out/matches"));
    let want = reference_with(
        &bid_log,
        &[("asks", ask_log.as_path())],
        &format!(
            "SELECT * FROM (
               SELECT b.window_start, b.window_end, b.auction, b.bidder, b.price AS bid, a.price AS ask
               FROM (SELECT *, date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') AS window_start,
                            date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '2 seconds' AS window_end
                     FROM bids) b
               JOIN (SELECT *, date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') AS window_start
                     FROM asks) a
               ON b.auction = a.auction AND b.window_start = a.window_start)
             WHERE window_end <= {}",
            ts_literal(watermark)
        ),
    );
    assert!(want.len() > 1000, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each match exactly once");
    assert_eq!(got, want);

    // A join of two streams without windows is refused with what to write instead.
    std::fs::write(
        dir.path().join("bad.sql"),
        format!(
            "{}{asks_ddl}SELECT b.auction, a.price FROM bids b JOIN asks a ON b.auction = a.auction;\n",
            source_ddl(&broker, "bids")
        ),
    )
    .unwrap();
    let err = fails(&sluice(
        dir.path(),
        &[
            "run",
            "bad.sql",
            "--checkpoint",
            "ckpt-bad",
            "--trigger",
            "once",
        ],
    ));
    assert!(err.contains("must be a window join"), "{err}");
}

#[test]
fn windowed_append_output_is_exactly_once_through_random_kill_9_of_driver_then_executor() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE(HOP(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '6' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
        source_ddl(&broker, "bids").replace(
            "start = 'earliest'",
            "start = 'earliest', max_records_per_trigger = '400'"
        )
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let all = bids(41, 0..16_000);
    produce(&broker, "bids", &all[..8000], &log);
    // Random moments, reproducible from the printed seed (SLUICE_KILL_SEED=... to replay).
    let seed = std::env::var("SLUICE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill moments from SLUICE_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let run = || {
        spawn(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "100ms",
                "--parallelism",
                "3",
            ],
            &[],
        )
    };
    // Round 1: the driver is killed at a random moment (its executors notice and exit).
    let child = run();
    std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = wait_output(child, Duration::from_secs(60));
    produce(&broker, "bids", &all[8000..], &log);
    // Round 2: restarted, then one executor is killed at a random moment (the driver re-runs
    // its tasks elsewhere, restoring their state from the checkpoint).
    let child = run();
    std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
    let mut executors = children_of(child.id() as i32);
    for _ in 0..100 {
        if !executors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        executors = children_of(child.id() as i32);
    }
    let victim = executors[rng.random_range(0..executors.len())];
    unsafe { libc::kill(victim, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(rng.random_range(500..2500)));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = wait_output(child, Duration::from_secs(60));
    // Drain what is left.
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

    let records = progress(&dir.path().join("ckpt"));
    let watermark = records
        .last()
        .and_then(|r| r["watermark_ms"].as_i64())
        .expect("a watermark");
    let got = read_rows(&dir.path().join("out/hot"));
    let (lo, hi) = (BASE_MS - 10_000, BASE_MS + 170_000);
    let want = reference(
        &log,
        &format!(
            "SELECT * FROM (
               SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
               FROM (SELECT CAST(to_timestamp_millis(value) AS TIMESTAMP) AS window_start,
                            CAST(to_timestamp_millis(value + 6000) AS TIMESTAMP) AS window_end
                     FROM generate_series({lo}, {hi}, 2000)) w
               JOIN bids ON bids.date_time >= w.window_start AND bids.date_time < w.window_end
               GROUP BY window_start, window_end, auction)
             WHERE window_end <= {}",
            ts_literal(watermark)
        ),
    );
    assert!(want.len() > 1000, "the reference has {} rows", want.len());
    assert_eq!(
        got.len(),
        want.len(),
        "each closed window exactly once (SLUICE_KILL_SEED={seed})"
    );
    assert_eq!(got, want, "SLUICE_KILL_SEED={seed}");
}

#[test]
fn a_streamed_file_table_reads_each_new_file_once_across_runs_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let log = dir.path().join("input.jsonl");
    // Files are written under a hidden name and renamed in complete, as the README says.
    let land = |k: u64| {
        let rows = bids(50 + k, k * 1000..(k + 1) * 1000);
        let mut text = String::new();
        for b in &rows {
            text.push_str(std::str::from_utf8(&b.json()).unwrap());
            text.push('\n');
        }
        let hidden = landing.join(format!(".bids-{k:03}.jsonl"));
        std::fs::write(&hidden, &text).unwrap();
        std::fs::rename(&hidden, landing.join(format!("bids-{k:03}.jsonl"))).unwrap();
        let mut all = std::fs::read_to_string(&log).unwrap_or_default();
        all.push_str(&text);
        std::fs::write(&log, all).unwrap();
    };
    std::fs::write(
        dir.path().join("job.sql"),
        "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,\n\
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)\n\
         WITH (connector = 'json', path = 'landing/', stream = 'true', max_files_per_trigger = '2');\n\
         CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
    )
    .unwrap();
    let drain = || {
        sluice(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "available-now",
            ],
        )
    };
    for k in 0..5 {
        land(k);
    }
    ok(&drain());
    // Two files per epoch, then the watermark-only epoch that closes windows.
    let rows_read = |records: &[serde_json::Value]| -> Vec<u64> {
        records
            .iter()
            .map(|r| r["input_rows"].as_u64().unwrap())
            .collect()
    };
    let first = progress(&dir.path().join("ckpt"));
    assert_eq!(rows_read(&first)[..3], [2000, 2000, 1000], "{first:?}");
    // A second run reads only the files that arrived since.
    for k in 5..8 {
        land(k);
    }
    ok(&drain());
    let records = progress(&dir.path().join("ckpt"));
    let total: u64 = rows_read(&records).iter().sum();
    assert_eq!(total, 8000, "every file read exactly once");
    assert_eq!(
        records
            .iter()
            .map(|r| r["late_records"].as_u64().unwrap())
            .sum::<u64>(),
        0
    );
    let watermark = records
        .last()
        .and_then(|r| r["watermark_ms"].as_i64())
        .expect("a watermark");
    let got = read_rows(&dir.path().join("out/hot"));
    let (lo, hi) = (BASE_MS - 20_000, BASE_MS + 100_000);
    let want = reference(
        &log,
        &format!(
            "SELECT * FROM (
               SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
               FROM (SELECT CAST(to_timestamp_millis(value) AS TIMESTAMP) AS window_start,
                            CAST(to_timestamp_millis(value + 10000) AS TIMESTAMP) AS window_end
                     FROM generate_series({lo}, {hi}, 10000)) w
               JOIN bids ON bids.date_time >= w.window_start AND bids.date_time < w.window_end
               GROUP BY window_start, window_end, auction)
             WHERE window_end <= {}",
            ts_literal(watermark)
        ),
    );
    assert!(want.len() > 100, "the reference has {} rows", want.len());
    assert_eq!(got, want);

    // A file that sorts before one already read stops the query, naming it; nothing is lost.
    std::fs::write(landing.join("bids-0035.jsonl"), "").unwrap();
    let err = fails(&drain());
    assert!(
        err.contains("bids-0035.jsonl") && err.contains("name order"),
        "{err}"
    );
}

#[test]
fn windows_in_update_mode_emit_each_change_and_end_at_the_batch_result() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let job = format!(
        "{}CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/', output_mode = 'update');\n\
         INSERT INTO hot\n\
         SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // Three epochs of out-of-order bids; windows at the epoch boundaries change in two epochs
    // and are emitted in both. A late record is dropped.
    produce(&broker, "bids", &bids(61, 0..1500), &log);
    trigger_once(dir.path());
    let first = read_rows(&dir.path().join("out/hot"));
    assert!(!first.is_empty(), "update mode emits before windows close");
    let late = StreamBid {
        auction: 999,
        bidder: 1,
        price: 1,
        time_ms: BASE_MS,
    };
    produce(
        &broker,
        "bids",
        std::slice::from_ref(&late),
        &dir.path().join("late.jsonl"),
    );
    produce(&broker, "bids", &bids(62, 1500..3000), &log);
    trigger_once(dir.path());
    produce(&broker, "bids", &bids(63, 3000..4500), &log);
    trigger_once(dir.path());

    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 3, "{records:?}");
    let late_total: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    assert_eq!(late_total, 1);
    // A window's count only grows: its row with the largest count is its latest.
    let rows = read_rows(&dir.path().join("out/hot"));
    let mut latest: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    let mut emitted_twice = 0;
    for row in rows {
        let key = (row[0].clone(), row[1].clone(), row[2].clone());
        let n: i64 = row[3].parse().unwrap();
        match latest.get(&key) {
            Some(r) => {
                emitted_twice += 1;
                if r[3].parse::<i64>().unwrap() < n {
                    latest.insert(key, row);
                }
            }
            None => {
                latest.insert(key, row);
            }
        }
    }
    assert!(emitted_twice > 0, "no window changed in two epochs");
    let got: Vec<Vec<String>> = latest.into_values().collect();
    let want = reference(
        &log,
        "SELECT date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') AS window_start,
                date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '10 seconds' AS window_end,
                auction, count(*) AS bids, max(price) AS top
         FROM bids GROUP BY 1, 2, auction",
    );
    assert!(want.len() > 100);
    assert_eq!(got, want);
}
