//! Deterministic generated data: the same seed gives the same rows on every machine.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sales channels of generated bids (the first is the most common).
pub const CHANNELS: [&str; 4] = ["web", "app", "api", "partner"];

/// Schema of the `bids` table: `auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
/// date_time TIMESTAMP`. Timestamps are microseconds, as Spark and most Parquet writers use.
pub fn bids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]))
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct BidsSpec {
    /// Total rows.
    pub rows: u64,
    /// Files to spread them over.
    pub files: usize,
    /// Distinct auctions (the group-by key cardinality).
    pub auctions: i64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Random seed.
    pub seed: u64,
}

/// One batch of bids with ids starting at `first`.
pub fn bids_batch(rng: &mut StdRng, first: u64, rows: usize, auctions: i64) -> RecordBatch {
    let base_us: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    let auction = Int64Array::from_iter_values((0..rows).map(|_| rng.random_range(1..=auctions)));
    let bidder = Int64Array::from_iter_values((0..rows).map(|_| rng.random_range(1..=100_000)));
    let price = Int64Array::from_iter_values((0..rows).map(|_| {
        let r: f64 = rng.random();
        (10.0 + 10_000.0 * r * r) as i64
    }));
    let channel = StringArray::from_iter_values((0..rows).map(|_| {
        let r: u32 = rng.random_range(0..10);
        CHANNELS[match r {
            0..=4 => 0,
            5..=7 => 1,
            8 => 2,
            _ => 3,
        }]
    }));
    let date_time = TimestampMicrosecondArray::from_iter_values(
        (0..rows as u64).map(|i| base_us + ((first + i) as i64) * 1_000),
    );
    RecordBatch::try_new(
        bids_schema(),
        vec![
            Arc::new(auction),
            Arc::new(bidder),
            Arc::new(price),
            Arc::new(channel),
            Arc::new(date_time),
        ],
    )
    .expect("columns match the schema")
}

/// P1's input (shared by the benchmarks that reuse it): `rows` bids over 10 000 auctions in
/// `root/bench-data/bids-ROWS/`, one file per million rows (1 to 16), row groups of 262 144
/// rows; generated on first use. Returns the directory.
pub fn p1_bids(root: &Path, rows: u64) -> std::path::PathBuf {
    let data = root.join(format!("bench-data/bids-{rows}"));
    if !data.join("bids-0000.parquet").exists() {
        eprintln!("generating {rows} rows into {} ...", data.display());
        write_bids_parquet(
            &data,
            BidsSpec {
                rows,
                files: (rows / 1_000_000).clamp(1, 16) as usize,
                auctions: 10_000,
                row_group_rows: 262_144,
                seed: 42,
            },
        )
        .expect("generate data");
    }
    data
}

/// Writes `spec.files` Parquet files `bids-NNNN.parquet` into `dir`.
pub fn write_bids_parquet(dir: &Path, spec: BidsSpec) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let per_file = spec.rows.div_ceil(spec.files as u64);
    let mut written = 0u64;
    for f in 0..spec.files {
        let rows = per_file.min(spec.rows - written);
        let file = File::create(dir.join(format!("bids-{f:04}.parquet")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(spec.row_group_rows))
            .build();
        let mut writer = ArrowWriter::try_new(file, bids_schema(), Some(props))
            .map_err(std::io::Error::other)?;
        let mut done = 0u64;
        while done < rows {
            let n = (rows - done).min(65_536) as usize;
            let batch = bids_batch(&mut rng, written + done, n, spec.auctions);
            writer.write(&batch).map_err(std::io::Error::other)?;
            done += n as u64;
        }
        writer.close().map_err(std::io::Error::other)?;
        written += rows;
    }
    Ok(())
}

/// Writes a `bidders` dimension table as CSV: `bidder,region,tier` for bidders 1..=n.
pub fn write_bidders_csv(path: &Path, bidders: i64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(File::create(path)?);
    writeln!(out, "bidder,region,tier")?;
    let regions = ["emea", "amer", "apac"];
    for b in 1..=bidders {
        writeln!(out, "{b},{},{}", regions[(b % 3) as usize], b % 5)?;
    }
    out.flush()
}

/// Writes JSON lines `{"bidder": .., "action": .., "amount": ..}` into `path`.
pub fn write_events_json(path: &Path, rows: u64, seed: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = std::io::BufWriter::new(File::create(path)?);
    let actions = ["view", "bid", "watch"];
    for _ in 0..rows {
        writeln!(
            out,
            "{{\"bidder\": {}, \"action\": \"{}\", \"amount\": {:.2}}}",
            rng.random_range(1..=1000),
            actions[rng.random_range(0..3)],
            rng.random_range(0.0..500.0)
        )?;
    }
    out.flush()
}

/// Streaming event `i` as JSON (the README's `events` table): `user_id` is `i`, unique per
/// record; `ts` falls on one of three days.
pub fn event_json(i: u64) -> Vec<u8> {
    format!(
        r#"{{"user_id": {i}, "kind": "k{}", "amount": {}.5, "ts": "2026-11-0{}T10:00:00Z"}}"#,
        i % 7,
        i % 100 + 1,
        i % 3 + 1
    )
    .into_bytes()
}

/// 2026-11-22T10:00:00Z in milliseconds: event time of the first streaming bid.
pub const STREAM_BASE_MS: i64 = 1_795_341_600_000;

/// A bid of the stateful streaming examples and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBid {
    /// Auction, 0..20.
    pub auction: i64,
    /// Bidder, 0..50.
    pub bidder: i64,
    /// Price, 1..10 000.
    pub price: i64,
    /// Event time, ms since the Unix epoch.
    pub time_ms: i64,
}

impl StreamBid {
    /// The JSON record (`date_time` as `YYYY-MM-DDTHH:MM:SS.mmm`, UTC).
    pub fn json(&self) -> Vec<u8> {
        format!(
            "{{\"auction\":{},\"bidder\":{},\"price\":{},\"date_time\":\"{}\"}}",
            self.auction,
            self.bidder,
            self.price,
            iso_millis(self.time_ms)
        )
        .into_bytes()
    }
}

/// Bid `i` of stream `seed`: bids are 10 ms apart in event time, each moved by up to ±1.5 s, so
/// they arrive out of order, but never by more than 3 s. Deterministic per (seed, i).
pub fn stream_bid(seed: u64, i: u64) -> StreamBid {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i);
    StreamBid {
        auction: rng.random_range(0..20),
        bidder: rng.random_range(0..50),
        price: rng.random_range(1..10_000),
        time_ms: STREAM_BASE_MS + i as i64 * 10 + rng.random_range(-1500..=1500),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` (UTC) for milliseconds since the Unix epoch.
pub fn iso_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from a day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// The job of the file-stream benchmarks (P5, P8): the Parquet bids under `input` read as a
/// stream, one new file per epoch, counted per auction in 10-second tumbling windows (5-second
/// watermark, append mode) into Parquet at `output`.
pub fn tumbling_count_job(input: &Path, output: &Path) -> String {
    format!(
        "CREATE TABLE bids (WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND)\n\
           WITH (connector = 'parquet', path = '{}', stream = 'true', max_files_per_trigger = '1');\n\
         CREATE TABLE counts WITH (connector = 'parquet', path = '{}');\n\
         INSERT INTO counts\n\
         SELECT window_start, window_end, auction, count(*) AS n\n\
         FROM TABLE(TUMBLE(bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
         GROUP BY window_start, window_end, auction;\n",
        input.display(),
        output.display()
    )
}

/// Writes the Nexmark stream of `events` events at `rate` events per second of event time —
/// the events a `connector = 'nexmark'` table with the same `events` and `rate` generates — as
/// JSON-lines files under `out` (emptied first), one directory per kind (`person/`,
/// `auction/`, `bid/`): file `part-K.json` holds that kind's events among events
/// `K × file_events …` of the stream, in event-time order (the generator's splits are 250 000
/// events; a split goes whole to the file its first event falls in). Timestamps are ISO-8601
/// with milliseconds. Returns the rows written per kind.
pub fn write_nexmark_json(
    out: &Path,
    events: u64,
    rate: u64,
    file_events: u64,
) -> Result<Vec<(&'static str, usize)>, Box<dyn std::error::Error>> {
    use sluice_connectors::nexmark::{NexmarkKind, NexmarkSource, NexmarkSpec};
    use sluice_connectors::{PlanRequest, ReadContext, Source, Split};
    use std::io::BufWriter;
    if file_events == 0 {
        return Err("file_events must be above 0".into());
    }
    let _ = std::fs::remove_dir_all(out);
    let ctx = ReadContext {
        query_id: sluice_checkpoint::QueryId::new("nexmark-files")?,
        epoch: sluice_checkpoint::Epoch(0),
    };
    let mut written = Vec::new();
    for (kind, name) in [
        (NexmarkKind::Person, "person"),
        (NexmarkKind::Auction, "auction"),
        (NexmarkKind::Bid, "bid"),
    ] {
        let source = NexmarkSource::new(NexmarkSpec {
            table: name.into(),
            kind,
            events: Some(events),
            rate,
            max_events_per_trigger: None,
        });
        let dir = out.join(name);
        std::fs::create_dir_all(&dir)?;
        let plan = source.plan_epoch(&PlanRequest::default())?;
        let mut rows = 0usize;
        let mut current: Option<(u64, arrow::json::LineDelimitedWriter<BufWriter<File>>)> = None;
        for split in &plan.splits {
            let Split::Generated(range) = split else {
                return Err(
                    format!("the generator planned a split of another kind: {split:?}").into(),
                );
            };
            let file = range.from / file_events;
            if current.as_ref().map(|(k, _)| *k) != Some(file) {
                if let Some((_, mut writer)) = current.take() {
                    writer.finish()?;
                }
                let path = dir.join(format!("part-{file:05}.json"));
                let writer = arrow::json::WriterBuilder::new()
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.3f".into())
                    .build::<_, arrow::json::writer::LineDelimited>(BufWriter::new(File::create(
                        &path,
                    )?));
                current = Some((file, writer));
            }
            let (_, writer) = current.as_mut().ok_or("no file open")?;
            let mut reader = source.open(split, None, &ctx)?;
            while let Some(batch) = reader.next_batch()? {
                rows += batch.num_rows();
                writer.write(&batch)?;
            }
        }
        if let Some((_, mut writer)) = current.take() {
            writer.finish()?;
        }
        written.push((name, rows));
    }
    Ok(written)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn iso_millis_formats_utc() {
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000");
        assert_eq!(
            iso_millis(STREAM_BASE_MS + 5_123),
            "2026-11-22T10:00:05.123"
        );
        assert_eq!(iso_millis(951_782_400_000), "2000-02-29T00:00:00.000");
    }

    #[test]
    fn nexmark_json_files_hold_every_event_once_in_event_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_nexmark_json(dir.path(), 600_000, 10_000, 250_000).unwrap();
        let total: usize = written.iter().map(|(_, rows)| rows).sum();
        assert_eq!(total, 600_000, "{written:?}");
        for (kind, rows) in written {
            let mut files: Vec<_> = std::fs::read_dir(dir.path().join(kind))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert_eq!(files.len(), 3, "{kind}: one file per 250 000 events");
            let mut last = String::new();
            let mut lines = 0;
            for file in files {
                for line in std::fs::read_to_string(file).unwrap().lines() {
                    let row: serde_json::Value = serde_json::from_str(line).unwrap();
                    let t = row["date_time"].as_str().unwrap().to_string();
                    assert_eq!(t.len(), "2015-07-15T00:00:00.000".len(), "{t}");
                    assert!(t >= last, "{kind}: {t} after {last}");
                    last = t;
                    lines += 1;
                }
            }
            assert_eq!(lines, rows, "{kind}");
        }
    }
}
