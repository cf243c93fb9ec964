//! Streaming test helpers: out-of-order bids produced to the real broker with a log of what
//! was produced, the reference answer computed by DataFusion over that log, and progress
//! records read back from a checkpoint.

use std::path::Path;

use sluice::broker::Broker;
use sluice::datagen::{iso_millis, stream_bid, StreamBid};
use sluice::reference::{Input, Reference};

use super::{ok, sluice};

/// Bids `ids` of stream `seed` (out of order by at most 3 s; see `sluice::datagen`).
pub fn bids(seed: u64, ids: std::ops::Range<u64>) -> Vec<StreamBid> {
    ids.map(|i| stream_bid(seed, i)).collect()
}

/// Produces `bids` round-robin over two partitions (batched as ordinary producers do) and
/// appends them to `log` (the reference's copy of the input).
pub fn produce(broker: &Broker, topic: &str, bids: &[StreamBid], log: &Path) {
    let producer = broker.producer();
    let records: Vec<(i32, Vec<u8>, Vec<u8>)> = bids
        .iter()
        .enumerate()
        .map(|(i, b)| ((i % 2) as i32, b.auction.to_string().into_bytes(), b.json()))
        .collect();
    producer.send_all(topic, records);
    let mut text = std::fs::read_to_string(log).unwrap_or_default();
    for b in bids {
        text.push_str(std::str::from_utf8(&b.json()).unwrap());
        text.push('\n');
    }
    std::fs::write(log, text).unwrap();
}

pub fn source_ddl(broker: &Broker, topic: &str) -> String {
    format!(
        "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,\n\
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)\n\
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'json', start = 'earliest');\n",
        broker.bootstrap()
    )
}

/// DataFusion over the logged input, in one process.
pub fn reference(log: &Path, sql: &str) -> Vec<Vec<String>> {
    reference_with(log, &[], sql)
}

/// [`reference`], with CSV tables (or `.jsonl` logs of other streams of bids) registered
/// under their names.
pub fn reference_with(log: &Path, csv: &[(&str, &Path)], sql: &str) -> Vec<Vec<String>> {
    const BIDS: &str =
        "SELECT auction, bidder, price, CAST(date_time AS TIMESTAMP) AS date_time FROM";
    let mut reference = Reference::new().table("raw", Input::JsonLines(log));
    for (name, path) in csv {
        reference = if path.extension().is_some_and(|e| e == "jsonl") {
            // Another stream's log, with the same columns as `bids`.
            let raw = format!("raw_{name}");
            reference
                .table(&raw, Input::JsonLines(path))
                .view(name, &format!("{BIDS} {raw}"))
        } else {
            reference.table(name, Input::Csv(path))
        };
    }
    reference.view("bids", &format!("{BIDS} raw")).rows(sql)
}

pub fn progress(checkpoint: &Path) -> Vec<serde_json::Value> {
    sluice::progress::records(checkpoint)
}

/// `sluice run job.sql --checkpoint ckpt --trigger once` in `dir`, which must succeed.
pub fn trigger_once(dir: &Path) {
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

pub fn ts_literal(ms: i64) -> String {
    format!("TIMESTAMP '{}'", iso_millis(ms))
}

/// DataFusion's hot-item cumulative windows over `log` (count and max price per auction in
/// windows starting every `size_ms` between `lo` and `hi` and ending at each `step_ms` up to
/// the size), computed independently as a range join with the list of windows, keeping those
/// the watermark has closed.
pub fn reference_closed_cumulative_windows(
    log: &Path,
    step_ms: i64,
    size_ms: i64,
    (lo, hi): (i64, i64),
    watermark_ms: i64,
) -> Vec<Vec<String>> {
    let steps = size_ms / step_ms;
    reference(
        log,
        &format!(
            "SELECT * FROM (
               SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
               FROM (SELECT CAST(to_timestamp_millis(s.value) AS TIMESTAMP) AS window_start,
                            CAST(to_timestamp_millis(s.value + k.value * {step_ms}) AS TIMESTAMP) AS window_end
                     FROM generate_series({lo}, {hi}, {size_ms}) s, generate_series(1, {steps}) k) w
               JOIN bids ON bids.date_time >= w.window_start AND bids.date_time < w.window_end
               GROUP BY window_start, window_end, auction)
             WHERE window_end <= {}",
            ts_literal(watermark_ms)
        ),
    )
}

/// DataFusion's hot-item windows over `log` (count and max price per auction in windows of
/// `size_ms` every `slide_ms`, starting between `lo` and `hi`), computed independently as a
/// range join with the list of windows, keeping those the watermark has closed.
pub fn reference_closed_windows(
    log: &Path,
    size_ms: i64,
    slide_ms: i64,
    (lo, hi): (i64, i64),
    watermark_ms: i64,
) -> Vec<Vec<String>> {
    reference(
        log,
        &format!(
            "SELECT * FROM (
               SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top
               FROM (SELECT CAST(to_timestamp_millis(value) AS TIMESTAMP) AS window_start,
                            CAST(to_timestamp_millis(value + {size_ms}) AS TIMESTAMP) AS window_end
                     FROM generate_series({lo}, {hi}, {slide_ms})) w
               JOIN bids ON bids.date_time >= w.window_start AND bids.date_time < w.window_end
               GROUP BY window_start, window_end, auction)
             WHERE window_end <= {}",
            ts_literal(watermark_ms)
        ),
    )
}
