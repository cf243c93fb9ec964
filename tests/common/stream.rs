//! Streaming test helpers: out-of-order bids produced to the real broker with a log of what
//! was produced, the reference answer computed by DataFusion over that log, and progress
//! records read back from a checkpoint.

use std::path::Path;

use datafusion::prelude::{JsonReadOptions, SessionContext};
use sluice::broker::Broker;
use sluice::datagen::{iso_millis, stream_bid, StreamBid};
use sluice::table::batch_rows;

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

pub fn progress(checkpoint: &Path) -> Vec<serde_json::Value> {
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

/// Processes whose parent is `pid` (the executors of a local driver), as `kill` takes them.
pub fn children_of(pid: i32) -> Vec<i32> {
    sluice::process::children_of(pid as u32)
        .into_iter()
        .map(|p| p as i32)
        .collect()
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
