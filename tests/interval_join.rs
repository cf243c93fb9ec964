//! Interval joins of two streams end to end on the real cluster (Kafka → Parquet): rows joined
//! on their keys and a bounded difference of their event times, across epochs and restarts
//! (each epoch is a separate `sluice run --trigger once`, restoring the join's state from the
//! checkpoint), checked against DataFusion joining all the records in one batch; Nexmark q7's
//! shape (the bids joined with their window's maximum); and the errors for joins that are not
//! interval joins; exactly-once output through `kill -9` of the driver and of an executor.

mod common;

use std::path::Path;

use common::stream::{bids, produce, progress, reference, reference_with, source_ddl, ts_literal};
use common::{fails, kill_driver_then_executor, ok, sluice};
use sluice::broker::Broker;
use sluice::table::read_rows;

/// `sluice run JOB --checkpoint CKPT --trigger once` in `dir`, which must succeed.
fn once(dir: &Path, job: &str, checkpoint: &str) {
    ok(&sluice(
        dir,
        &["run", job, "--checkpoint", checkpoint, "--trigger", "once"],
    ));
}

/// Asks within a second before to two seconds after a bid on the same auction.
const ASKS_NEAR_BIDS: &str = "SELECT b.auction, b.bidder, b.price AS bid, b.date_time AS bid_time, a.price AS ask, a.date_time AS ask_time
     FROM bids b JOIN asks a
     ON b.auction = a.auction
        AND a.date_time BETWEEN b.date_time - INTERVAL '1' SECOND AND b.date_time + INTERVAL '2' SECOND";

/// Nexmark q7's shape over 2-second windows: each bid at its window's highest price.
const HIGHEST_BIDS: &str = "SELECT B.auction, B.price, B.bidder, B.date_time
     FROM bids B
     JOIN (SELECT max(price) AS maxprice, window_end AS date_time
           FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND))
           GROUP BY window_start, window_end) B1
     ON B.price = B1.maxprice
     WHERE B.date_time >= B1.date_time - INTERVAL '2' SECOND AND B.date_time < B1.date_time";

#[test]
fn interval_joins_join_each_pair_once_as_its_rows_arrive_across_epochs_and_restarts() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    broker.create_topic("asks", 2);
    let dir = tempfile::tempdir().unwrap();
    let (bid_log, ask_log) = (dir.path().join("bids.jsonl"), dir.path().join("asks.jsonl"));
    let asks_ddl = source_ddl(&broker, "asks").replacen("TABLE bids", "TABLE asks", 1);
    let bids_ddl = source_ddl(&broker, "bids");
    std::fs::write(
        dir.path().join("near.sql"),
        format!(
            "{bids_ddl}{asks_ddl}CREATE TABLE near WITH (connector = 'parquet', path = 'out/near/');\n\
             INSERT INTO near\n{ASKS_NEAR_BIDS};\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("q7.sql"),
        format!(
            "{bids_ddl}CREATE TABLE highest WITH (connector = 'parquet', path = 'out/highest/');\n\
             INSERT INTO highest\n{HIGHEST_BIDS};\n"
        ),
    )
    .unwrap();
    // Three epochs; pairs whose rows arrive in different epochs, either side first.
    for (k, range) in [0..500, 500..1000, 1000..1500].into_iter().enumerate() {
        let k = k as u64;
        produce(&broker, "bids", &bids(41 + k, range.clone()), &bid_log);
        produce(&broker, "asks", &bids(51 + k, range), &ask_log);
        once(dir.path(), "near.sql", "ckpt-near");
        once(dir.path(), "q7.sql", "ckpt-q7");
    }

    // Every pair, each once: the input has no late rows (jitter 1.5 s, watermark delay 4 s).
    let got = read_rows(&dir.path().join("out/near"));
    let want = reference_with(
        &bid_log,
        &[("asks", &ask_log)],
        &format!("SELECT * FROM ({ASKS_NEAR_BIDS})"),
    );
    assert!(want.len() > 1000, "the reference has {} rows", want.len());
    assert_eq!(got.len(), want.len(), "each pair exactly once");
    assert_eq!(got, want);
    assert_eq!(progress(&dir.path().join("ckpt-near")).len(), 3);

    // q7: the windows the watermark has closed, each with its highest bids.
    let records = progress(&dir.path().join("ckpt-q7"));
    let watermark = records.last().unwrap()["watermark_ms"]
        .as_i64()
        .expect("a watermark");
    let got = read_rows(&dir.path().join("out/highest"));
    let want = reference_with(
        &bid_log,
        &[],
        &format!(
            "SELECT * FROM ({}) WHERE date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '2 seconds' <= {}",
            HIGHEST_BIDS.replace(
                "TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '2' SECOND))",
                "(SELECT *, date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') AS window_start, \
                  date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '2 seconds' AS window_end FROM bids)"
            ),
            ts_literal(watermark)
        ),
    );
    assert!(want.len() >= 3, "the reference has {} rows", want.len());
    assert_eq!(got, want);
}

/// Each bid with the later bids on its auction within 300 ms (a self-join of one stream).
const FOLLOWING_BIDS: &str = "SELECT b.auction, b.bidder, b.price, b.date_time, a.bidder AS next_bidder, a.price AS next_price
     FROM bids b JOIN bids a
     ON b.auction = a.auction
        AND a.date_time BETWEEN b.date_time + INTERVAL '1' MILLISECOND AND b.date_time + INTERVAL '300' MILLISECOND";

#[test]
fn an_interval_join_writes_each_pair_exactly_once_through_kill_9_of_driver_then_executor() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("input.jsonl");
    let ddl = source_ddl(&broker, "bids").replace(
        "start = 'earliest'",
        "start = 'earliest', max_records_per_trigger = '400'",
    );
    std::fs::write(
        dir.path().join("job.sql"),
        format!(
            "{ddl}CREATE TABLE following WITH (connector = 'parquet', path = 'out/following/');\n\
             INSERT INTO following\n{FOLLOWING_BIDS};\n"
        ),
    )
    .unwrap();
    let all = bids(61, 0..12_000);
    produce(&broker, "bids", &all[..6000], &log);
    let seed = common::test_seed();
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
        produce(&broker, "bids", &all[6000..], &log)
    });
    let drain = [
        "run",
        "job.sql",
        "--checkpoint",
        "ckpt",
        "--trigger",
        "available-now",
    ];
    ok(&sluice(dir.path(), &drain));

    let got = read_rows(&dir.path().join("out/following"));
    let want = reference(&log, &format!("SELECT * FROM ({FOLLOWING_BIDS})"));
    assert!(want.len() > 5000, "the reference has {} rows", want.len());
    assert_eq!(
        got.len(),
        want.len(),
        "each pair exactly once (SLUICE_TEST_SEED={seed})"
    );
    assert_eq!(got, want, "SLUICE_TEST_SEED={seed}");
}

#[test]
fn joins_of_two_streams_that_are_not_interval_joins_are_refused_with_what_to_write() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let bids_ddl = source_ddl(&broker, "bids");
    let asks_ddl = source_ddl(&broker, "asks").replacen("TABLE bids", "TABLE asks", 1);
    let refused = |asks: &str, join: &str| {
        std::fs::write(
            dir.path().join("bad.sql"),
            format!("{bids_ddl}{asks}SELECT b.auction, a.price FROM bids b {join};\n"),
        )
        .unwrap();
        fails(&sluice(
            dir.path(),
            &[
                "run",
                "bad.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "once",
            ],
        ))
    };
    // Only one bound: state would grow without end.
    let err = refused(
        &asks_ddl,
        "JOIN asks a ON b.auction = a.auction AND a.date_time >= b.date_time",
    );
    assert!(err.contains("add a lower bound"), "{err}");
    assert!(
        err.contains("left.date_time >= right.date_time - INTERVAL"),
        "{err}"
    );
    // An outer join would have to wait for the watermark to emit a row without matches.
    let err = refused(
        &asks_ddl,
        "LEFT JOIN asks a ON b.auction = a.auction AND a.date_time BETWEEN b.date_time AND b.date_time + INTERVAL '1' SECOND",
    );
    assert!(err.contains("is an inner join"), "{err}");
    // A time column without a watermark is no event time: its rows could arrive any time.
    let plain = asks_ddl.replace(
        ",\nWATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND",
        "",
    );
    assert_ne!(plain, asks_ddl);
    let err = refused(
        &plain,
        "JOIN asks a ON b.auction = a.auction AND a.date_time BETWEEN b.date_time AND b.date_time + INTERVAL '1' SECOND",
    );
    assert!(
        err.contains("date_time (the right side's) is none"),
        "{err}"
    );
    // Neither a window join nor an interval join.
    let err = refused(&asks_ddl, "JOIN asks a ON b.auction = a.auction");
    assert!(err.contains("window join or an interval join"), "{err}");
}
