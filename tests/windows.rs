//! Windows beyond tumbling and hopping, end to end on the real cluster: session windows (streaming
//! and bounded), window joins of two streams, streamed file tables, and exactly-once windowed
//! output through random `kill -9`s — each checked against DataFusion computing the answer in
//! one batch over the same records.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::stream::{
    bids, produce, progress, reference, reference_closed_windows, reference_with, source_ddl,
    trigger_once, ts_literal,
};
use common::{fails, kill_driver_then_executor, ok, sluice};
use sluice::broker::Broker;
use sluice::datagen::{StreamBid, STREAM_BASE_MS as BASE_MS};
use sluice::table::read_rows;

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

/// Two streams of bids, `bids` and `asks`, on a real broker (two partitions each), with the
/// logs the reference reads and the `asks` table's DDL.
struct TwoStreams {
    broker: Broker,
    dir: tempfile::TempDir,
    bid_log: std::path::PathBuf,
    ask_log: std::path::PathBuf,
    asks_ddl: String,
}

fn two_streams() -> TwoStreams {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    broker.create_topic("asks", 2);
    let dir = tempfile::tempdir().unwrap();
    let (bid_log, ask_log) = (dir.path().join("bids.jsonl"), dir.path().join("asks.jsonl"));
    let asks_ddl = source_ddl(&broker, "asks").replacen("TABLE bids", "TABLE asks", 1);
    TwoStreams {
        broker,
        dir,
        bid_log,
        ask_log,
        asks_ddl,
    }
}

/// The error `sluice run --trigger once` stops with on the job `text` (written to `bad.sql`).
fn refused(dir: &Path, text: &str) -> String {
    std::fs::write(dir.join("bad.sql"), text).unwrap();
    fails(&sluice(
        dir,
        &[
            "run",
            "bad.sql",
            "--checkpoint",
            "ckpt-bad",
            "--trigger",
            "once",
        ],
    ))
}

/// DataFusion's 2-second tumbling-window join of the bids and asks in `bid_log` and `ask_log`
/// (same auction, same window), for the windows `watermark` has closed.
fn reference_window_join(bid_log: &Path, ask_log: &Path, watermark: i64) -> Vec<Vec<String>> {
    reference_with(
        bid_log,
        &[("asks", ask_log)],
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
    )
}

#[test]
fn window_join_of_two_streams_joins_each_window_once_when_the_watermark_passes_it() {
    let TwoStreams {
        broker,
        dir,
        bid_log,
        ask_log,
        asks_ddl,
    } = two_streams();
    let join = "SELECT b.window_start, b.window_end, b.auction, b.bidder, b.price AS bid, a.price AS ask\n\
                FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS b\n\
                JOIN TABLE(TUMBLE(TABLE asks, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS a\n\
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
    let want = reference_window_join(&bid_log, &ask_log, watermark);
    assert!(want.len() > 1000, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each match exactly once");
    assert_eq!(got, want);

    // A join of two streams without windows is refused with what to write instead.
    let err = refused(
        dir.path(),
        &format!(
            "{}{asks_ddl}SELECT b.auction, a.price FROM bids b JOIN asks a ON b.auction = a.auction;\n",
            source_ddl(&broker, "bids")
        ),
    );
    assert!(
        err.contains("is a window join or an interval join"),
        "{err}"
    );
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
        .unwrap_or_else(common::test_seed);
    eprintln!("kill moments from SLUICE_KILL_SEED={seed}");
    let args = [
        "run",
        "job.sql",
        "--checkpoint",
        "ckpt",
        "--trigger",
        "100ms",
        "--parallelism",
        "3",
    ];
    kill_driver_then_executor(dir.path(), &args, seed, || {
        produce(&broker, "bids", &all[8000..], &log)
    });
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
    let want = reference_closed_windows(&log, 6000, 2000, (lo, hi), watermark);
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
    let want = reference_closed_windows(&log, 10000, 10000, (lo, hi), watermark);
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

#[test]
fn a_left_window_join_keeps_unmatched_rows_once_their_window_is_complete() {
    let TwoStreams {
        broker,
        dir,
        bid_log,
        ask_log,
        asks_ddl,
    } = two_streams();
    let job = format!(
        "{}{asks_ddl}CREATE TABLE matches WITH (connector = 'parquet', path = 'out/matches/');\n\
         INSERT INTO matches\n\
         SELECT b.window_start, b.auction, b.bidder, b.price AS bid, a.price AS ask\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS b\n\
         LEFT JOIN TABLE(TUMBLE(asks, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS a\n\
         ON b.auction = a.auction AND b.window_start = a.window_start AND b.window_end = a.window_end;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // Asks exist for auctions 0-4 only, and only in some windows: many bids match nothing.
    let asks = |seed, ids| -> Vec<_> {
        bids(seed, ids)
            .into_iter()
            .filter(|b| b.auction < 5)
            .collect()
    };
    produce(&broker, "bids", &bids(71, 0..600), &bid_log);
    produce(&broker, "asks", &asks(72, 0..300), &ask_log);
    trigger_once(dir.path());
    produce(&broker, "bids", &bids(73, 600..1200), &bid_log);
    produce(&broker, "asks", &asks(74, 600..1200), &ask_log);
    trigger_once(dir.path());
    trigger_once(dir.path());

    let records = progress(&dir.path().join("ckpt"));
    let watermark = records
        .last()
        .and_then(|r| r["watermark_ms"].as_i64())
        .expect("a watermark");
    let got = read_rows(&dir.path().join("out/matches"));
    let bin = "date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00')";
    let want = reference_with(
        &bid_log,
        &[("asks", ask_log.as_path())],
        &format!(
            "SELECT window_start, auction, bidder, bid, ask FROM (
               SELECT b.window_start, b.auction, b.bidder, b.price AS bid, a.price AS ask,
                      b.window_start + INTERVAL '2 seconds' AS window_end
               FROM (SELECT *, {bin} AS window_start FROM bids) b
               LEFT JOIN (SELECT *, {bin} AS window_start FROM asks) a
               ON b.auction = a.auction AND b.window_start = a.window_start)
             WHERE window_end <= {}",
            ts_literal(watermark)
        ),
    );
    let unmatched = want.iter().filter(|r| r[4] == "NULL").count();
    assert!(
        unmatched > 100,
        "{unmatched} unmatched bids in the reference"
    );
    assert_eq!(got.len(), want.len(), "each row exactly once");
    assert_eq!(got, want);
}

/// Each stream keeps its own watermark and the query runs with the least: a window join of a
/// stream that is 30 s ahead and one that lags keeps every row of the lagging one (with one
/// watermark for both, from the stream ahead, they would all be late) and joins each window
/// once, as DataFusion does over all the records. A stream that goes quiet holds the watermark
/// back until `--watermark-idle-timeout` declares it idle.
#[test]
fn a_lagging_stream_keeps_its_rows_in_a_window_join_and_an_idle_one_stops_holding_the_watermark() {
    let TwoStreams {
        broker,
        dir,
        bid_log,
        ask_log,
        asks_ddl,
    } = two_streams();
    let job = format!(
        "{}{asks_ddl}CREATE TABLE matches WITH (connector = 'parquet', path = 'out/matches/');\n\
         INSERT INTO matches\n\
         SELECT b.window_start, b.window_end, b.auction, b.bidder, b.price AS bid, a.price AS ask\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS b\n\
         JOIN TABLE(TUMBLE(asks, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) AS a\n\
         ON b.auction = a.auction AND b.window_start = a.window_start AND b.window_end = a.window_end;\n",
        source_ddl(&broker, "bids")
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    let asks = bids(52, 0..6000);
    // Epoch 0: 60 s of bids, only the first 30 s of asks.
    produce(&broker, "bids", &bids(51, 0..6000), &bid_log);
    produce(&broker, "asks", &asks[..3000], &ask_log);
    trigger_once(dir.path());
    // Epoch 1: the asks catch up; their rows are behind the bids' watermark but not the asks'.
    produce(&broker, "asks", &asks[3000..], &ask_log);
    trigger_once(dir.path());
    trigger_once(dir.path());
    let records = progress(&dir.path().join("ckpt"));
    assert_eq!(records.len(), 3, "{records:?}");
    let (bid_wm, ask_wm) = (
        records[1]["sources"]["bids"]["watermark_ms"]
            .as_i64()
            .unwrap(),
        records[1]["sources"]["asks"]["watermark_ms"]
            .as_i64()
            .unwrap(),
    );
    assert!(bid_wm > ask_wm + 20_000, "bids {bid_wm}, asks {ask_wm}");
    assert_eq!(
        records[1]["watermark_ms"].as_i64(),
        Some(ask_wm),
        "the least"
    );
    let late: u64 = records
        .iter()
        .map(|r| r["late_records"].as_u64().unwrap())
        .sum();
    assert_eq!(late, 0, "no row of the lagging stream is late");

    // Then only bids arrive: the quiet asks hold the watermark until they count as idle.
    produce(&broker, "bids", &bids(53, 6000..9000), &bid_log);
    trigger_once(dir.path());
    trigger_once(dir.path());
    let held = progress(&dir.path().join("ckpt")).last().unwrap()["watermark_ms"]
        .as_i64()
        .unwrap();
    assert!(held < BASE_MS + 62_000, "held back by the asks: {held}");
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..2 {
        ok(&sluice(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "once",
                "--watermark-idle-timeout",
                "1s",
            ],
        ));
    }
    let last = progress(&dir.path().join("ckpt")).last().unwrap().clone();
    assert_eq!(last["sources"]["asks"]["idle"], true, "{last}");
    let watermark = last["watermark_ms"].as_i64().unwrap();
    assert!(
        watermark > BASE_MS + 80_000,
        "the bids' watermark: {watermark}"
    );

    let got = read_rows(&dir.path().join("out/matches"));
    let want = reference_window_join(&bid_log, &ask_log, watermark);
    assert!(want.len() > 3000, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each match exactly once");
    assert_eq!(got, want);
}

/// A 2-second tumbling window over `table` in the reference's SQL (DataFusion has no TUMBLE).
fn tumble_2s(table: &str) -> String {
    format!(
        "(SELECT *, date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') AS window_start,
                 date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '2 seconds' AS window_end
          FROM {table})"
    )
}

#[test]
fn aggregations_and_joins_of_closed_windows_run_per_epoch_as_nexmark_q5_and_q8() {
    let TwoStreams {
        broker,
        dir,
        bid_log,
        ask_log,
        asks_ddl,
    } = two_streams();
    // q5's shape: each window's most-bid auctions (a windowed count, its maximum per window,
    // joined back on the window's bounds, under aliases).
    let counts = |t: &str| {
        format!(
            "SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime \
             FROM {t} GROUP BY auction, window_start, window_end"
        )
    };
    let hot = |t: &str| {
        format!(
            "SELECT h.auction, h.num, h.starttime FROM ({}) AS h
             JOIN (SELECT max(c.num) AS maxn, c.starttime, c.endtime FROM ({}) AS c
                   GROUP BY c.starttime, c.endtime) AS m
             ON h.starttime = m.starttime AND h.endtime = m.endtime AND h.num >= m.maxn",
            counts(t),
            counts(t)
        )
    };
    // q8's shape: two windowed aggregations joined per window, one grouped by more than the
    // join's keys (as q8's persons by id and name), so only one side is hashed again for it.
    let both = |b: &str, a: &str| {
        format!(
            "SELECT b.auction, b.bidder, b.num AS bids, a.num AS asks, b.starttime FROM (
               SELECT auction, bidder, count(*) AS num, window_start AS starttime, window_end AS endtime
               FROM {b} GROUP BY auction, bidder, window_start, window_end) AS b
             JOIN ({}) AS a
             ON b.auction = a.auction AND b.starttime = a.starttime AND b.endtime = a.endtime",
            counts(a)
        )
    };
    let tumble =
        |t: &str| format!("TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(date_time), INTERVAL '2' SECOND))");
    // Partitions are not coalesced into one task (`target_task_bytes` 0): the join's two
    // sides must be hashed alike for its partitions to meet.
    let job = format!(
        "SET target_task_bytes = '0';\n{}{asks_ddl}CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
         CREATE TABLE both_sides WITH (connector = 'parquet', path = 'out/both/');\n\
         INSERT INTO hot {};\nINSERT INTO both_sides {};\n",
        source_ddl(&broker, "bids"),
        hot(&tumble("bids")),
        both(&tumble("bids"), &tumble("asks"))
    );
    std::fs::write(dir.path().join("job.sql"), job).unwrap();
    // Three epochs; windows at the boundaries get rows from two epochs.
    for (epoch, ids) in [0..700u64, 700..1400, 1400..2100].into_iter().enumerate() {
        let seed = 40 + 2 * epoch as u64;
        produce(&broker, "bids", &bids(seed, ids.clone()), &bid_log);
        produce(&broker, "asks", &bids(seed + 1, ids), &ask_log);
        trigger_once(dir.path());
    }
    let records = progress(&dir.path().join("ckpt"));
    let watermark = records.last().unwrap()["watermark_ms"]
        .as_i64()
        .expect("a watermark");
    let closed = |sql: String| {
        format!(
            "SELECT * FROM ({sql}) WHERE starttime + INTERVAL '2 seconds' <= {}",
            ts_literal(watermark)
        )
    };
    let want_hot = reference(&bid_log, &closed(hot(&tumble_2s("bids"))));
    let want_both = reference_with(
        &bid_log,
        &[("asks", &ask_log)],
        &closed(both(&tumble_2s("bids"), &tumble_2s("asks"))),
    );
    assert!(
        want_hot.len() >= 5 && want_both.len() > 50,
        "{want_hot:?} {}",
        want_both.len()
    );
    let got_hot = read_rows(&dir.path().join("out/hot"));
    assert_eq!(
        got_hot.len(),
        want_hot.len(),
        "each window's hot auctions once"
    );
    assert_eq!(got_hot, want_hot);
    assert_eq!(read_rows(&dir.path().join("out/both")), want_both);

    // An aggregation of an aggregated stream that does not group by its windows is refused.
    let err = refused(
        dir.path(),
        &format!(
            "{}CREATE TABLE top WITH (connector = 'parquet', path = 'out/top/');\n\
             INSERT INTO top SELECT max(num) AS top FROM ({});\n",
            source_ddl(&broker, "bids"),
            counts(&tumble("bids"))
        ),
    );
    assert!(err.contains("group it by the window's end"), "{err}");
}
