//! P12 — Nexmark over files, Sluice against Flink 2.3 on the same machine (issue 22).
//!
//! Input: the Nexmark stream of `--events` events (10 000 per second of event time) written as
//! JSON-lines files by `sluice::datagen::write_nexmark_json` (the events a `connector =
//! 'nexmark'` table generates), one file per table, kept under `bench-data/`. One file, because
//! Flink's filesystem source hands a table's files to its readers in no particular order and
//! its watermark advances within a file, so rows of a file read after a later one are dropped as
//! late (a documented limitation, FLINK-25672); both engines then read each table in event-time
//! order. Each query runs, in one run:
//! - Sluice: `sluice run` over the files as streamed JSON tables (`stream = 'true'`, a
//!   1-second watermark), `--trigger available-now`, 2 executors × 1 slot (RocksDB state),
//!   Parquet output; CPU time of the driver and executors from `getrusage(RUSAGE_CHILDREN)`
//!   around the run (process start-up included), their peak RSS from the job summary;
//! - Flink: `benches/peers/flink_nexmark.py` in `.venv-flink` (PyFlink 2.3.0 on Java 17): the
//!   filesystem source over the same files in streaming mode, the same watermark, parallelism
//!   2, RocksDB state with incremental checkpoints every second, CSV output; CPU time of the
//!   Python process and the JVM from /proc (JVM start-up included), the JVM's peak RSS.
//!
//! Queries: q0–q2, q5, q7 and q8 as Nexmark writes them (q5 and q8 also output their window's
//! start, so outputs can be compared window by window; q7 is an interval join of the bids with
//! their 10 s window's maximum in both engines, its bound the window's exact span). On
//! request: q7w, q7's shape as a window join, and q8w, q8's as a window join of the raw
//! streams.
//!
//! Reported per query: events per CPU-second for both and their ratio, wall time, peak RSS and
//! whether the outputs agree (read back with DuckDB: the same rows as multisets; for windowed
//! queries, over the windows both have closed — Flink closes the last ones at the end of its
//! bounded input, Sluice leaves them open for later files).
//!
//! Run: `scripts/bench-flink.sh [--events 10000000] [--queries q0,q1,q2,q5,q7,q8] [--no-flink]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::nexmark::QUERIES;

/// Queries P12 runs besides the shared Nexmark list, on request: q7's shape as a window join of
/// the bids with their 10 s window's maximum price (q7 proper is an interval join), and q8's as
/// a window join of persons and auctions on the seller per 10 s window.
const WINDOW_JOIN_Q7: (&str, &str) = (
    "q7w",
    "SELECT B.auction, B.price, B.bidder, B.date_time
     FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) B
     JOIN (SELECT max(price) AS maxprice, window_start, window_end
           FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
           GROUP BY window_start, window_end) M
     ON B.window_start = M.window_start AND B.window_end = M.window_end
        AND B.price = M.maxprice",
);
const WINDOW_JOIN_Q8: (&str, &str) = (
    "q8w",
    "SELECT P.id, P.name, P.window_start AS starttime
     FROM TABLE(TUMBLE(person, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) P
     JOIN TABLE(TUMBLE(auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) A
     ON P.id = A.seller AND P.window_start = A.window_start AND P.window_end = A.window_end",
);

/// The tables' columns, as the generator writes them.
const TABLES: &[(&str, &str)] = &[
    ("person", "id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR"),
    ("auction", "id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR"),
    ("bid", "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR"),
];

struct Args {
    events: u64,
    queries: Vec<String>,
    flink: bool,
}

fn args() -> Args {
    let mut a = Args {
        events: 10_000_000,
        queries: ["q0", "q1", "q2", "q5", "q7", "q8"]
            .map(String::from)
            .to_vec(),
        flink: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => a.events = it.next().and_then(|v| v.parse().ok()).expect("--events N"),
            "--queries" => {
                a.queries = it
                    .next()
                    .expect("--queries q0,q5")
                    .split(',')
                    .map(str::to_string)
                    .collect()
            }
            "--no-flink" => a.flink = false,
            _ => {}
        }
    }
    a
}

/// One engine's run of a query.
#[derive(Default)]
struct Run {
    wall: Duration,
    cpu: Duration,
    peak_rss_mib: u64,
}

/// `query`, for q5, with its window's start in the output (as the Flink peer writes it), so
/// the outputs can be compared over the windows both engines have closed.
fn with_window_start(name: &str, query: &str) -> String {
    const SELECT: &str = "SELECT AuctionBids.auction, AuctionBids.num FROM";
    match name {
        "q5" => query.replacen(
            SELECT,
            "SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime FROM",
            1,
        ),
        _ => query.to_string(),
    }
}

/// Sluice's run of a query, or the error it stopped with.
fn run_sluice(data: &Path, work: &Path, name: &str, query: &str) -> Result<Run, String> {
    let out = work.join(format!("sluice-{name}"));
    let ckpt = work.join(format!("ckpt-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&ckpt);
    let tables: String = TABLES
        .iter()
        .map(|(t, cols)| {
            format!(
                "CREATE TABLE {t} ({cols}, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
                 WITH (connector = 'json', path = '{}/{t}/', stream = 'true');\n",
                data.display()
            )
        })
        .collect();
    let job = work.join(format!("{name}.sql"));
    std::fs::write(
        &job,
        format!(
            "{tables}CREATE TABLE out WITH (connector = 'parquet', path = '{}/');\nINSERT INTO out {query};\n",
            out.display()
        ),
    )
    .unwrap();
    let cpu_before = sluice::process::children_cpu();
    let started = Instant::now();
    let result = Command::new(sluice::sluice_binary())
        .arg("run")
        .arg(&job)
        .args(["--executors", "2", "--slots", "1", "--ui", "off"])
        .args(["--trigger", "available-now"])
        .arg("--checkpoint")
        .arg(&ckpt)
        .output()
        .expect("sluice runs");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&result.stderr);
    if !result.status.success() {
        return Err(stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or(&stderr)
            .to_string());
    }
    Ok(Run {
        wall,
        cpu: sluice::process::children_cpu() - cpu_before,
        peak_rss_mib: sluice::process::summary_peak_rss_mib(&stderr),
    })
}

fn flink_python() -> PathBuf {
    sluice::repo_root().join(".venv-flink/bin/python")
}

fn run_flink(data: &Path, work: &Path, name: &str) -> Option<Run> {
    let out = work.join(format!("flink-{name}"));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(work.join(format!("flink-{name}.work")));
    let cpu_before = sluice::process::children_cpu();
    let started = Instant::now();
    let result = Command::new(flink_python())
        .arg(sluice::repo_root().join("benches/peers/flink_nexmark.py"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .args(["--query", name, "--parallelism", "2"])
        .output()
        .expect("python runs");
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&result.stdout);
    if !result.status.success() {
        eprintln!(
            "flink {name} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        return None;
    }
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    // The JVM is not a waited-for child: the script reports the process tree's CPU itself.
    let cpu = value("cpu_seconds=")
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| sluice::process::children_cpu() - cpu_before);
    Some(Run {
        wall,
        cpu,
        peak_rss_mib: value("peak_rss_mib=").unwrap_or(0.0) as u64,
    })
}

/// Whether both outputs hold the same rows (DuckDB, multisets; `columns` are each output
/// column's name and the expression it is compared by: Flink's CSV writes an empty string as
/// an empty field, which reads back as NULL): "sluice rows, flink rows, rows in only
/// one of them". With `window`, the column holding a window's start: rows are compared over
/// the windows Sluice has closed (Flink closes every window at the end of its bounded input;
/// Sluice leaves the last ones open for later files).
fn compare(work: &Path, name: &str, columns: &[(&str, &str)], window: Option<&str>) -> String {
    let select = columns
        .iter()
        .map(|(name, expr)| format!("{expr} AS {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = columns
        .iter()
        .map(|(n, _)| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sluice_rows = format!(
        "SELECT {select} FROM read_parquet('{}/**/*.parquet')",
        work.join(format!("sluice-{name}")).display()
    );
    let flink_rows = format!(
        "SELECT {select} FROM read_csv('{}/**/part-*', header = false, names = [{names}], auto_detect = true)",
        work.join(format!("flink-{name}")).display(),
    );
    let (sluice, flink) = match window {
        Some(w) => {
            let closed = format!("(SELECT max({w}) FROM ({sluice_rows}))");
            (
                format!("SELECT * FROM ({sluice_rows}) WHERE {w} <= {closed}"),
                format!("SELECT * FROM ({flink_rows}) WHERE {w} <= {closed}"),
            )
        }
        None => (sluice_rows, flink_rows),
    };
    sluice::table::duckdb_rows(&format!(
        "SELECT (SELECT count(*) FROM ({sluice})), (SELECT count(*) FROM ({flink})), \
         (SELECT count(*) FROM (({sluice}) EXCEPT ALL ({flink}))) + \
         (SELECT count(*) FROM (({flink}) EXCEPT ALL ({sluice})))"
    ))
    .into_iter()
    .next()
    .unwrap_or_default()
    .replace('\t', ", ")
}

fn main() {
    let a = args();
    let root = sluice::repo_root();
    let data = root.join(format!("bench-data/nexmark-json-{}-one-file", a.events));
    if !data.join("bid/part-00000.json").exists() {
        eprintln!(
            "writing {} Nexmark events as JSON lines into {} ...",
            a.events,
            data.display()
        );
        sluice::datagen::write_nexmark_json(&data, a.events, 10_000, a.events)
            .expect("write the events");
    }
    let work = root.join("bench-data/p12-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let flink = a.flink && flink_python().exists();
    println!(
        "P12: Nexmark over {} events in JSON files, Sluice (2 executors x 1 slot) vs Flink 2.3 (parallelism 2){}",
        a.events,
        if flink { "" } else { " — Flink skipped (scripts/bench-flink.sh installs it into .venv-flink)" }
    );
    println!(
        "{:<5} {:>14} {:>14} {:>7} {:>9} {:>9} {:>10} {:>10}  output",
        "query",
        "sluice ev/CPU-s",
        "flink ev/CPU-s",
        "ratio",
        "sluice s",
        "flink s",
        "sluice RSS",
        "flink RSS"
    );
    let events = a.events as f64;
    for (name, query) in QUERIES
        .iter()
        .chain([&WINDOW_JOIN_Q7, &WINDOW_JOIN_Q8])
        .filter(|(q, _)| a.queries.iter().any(|w| w == q))
    {
        let query = with_window_start(name, query);
        let s = match run_sluice(&data, &work, name, &query) {
            Ok(s) => s,
            Err(e) => {
                println!("{name:<5} sluice cannot run it as a streaming query: {e}");
                continue;
            }
        };
        let f = flink.then(|| run_flink(&data, &work, name)).flatten();
        let ts = "CAST(date_time AS TIMESTAMP)";
        let columns: Vec<(&str, &str)> = match *name {
            "q0" => vec![
                ("auction", "auction"),
                ("bidder", "bidder"),
                ("price", "price"),
                ("date_time", ts),
                ("extra", "coalesce(extra, '')"),
            ],
            "q1" => vec![
                ("auction", "auction"),
                ("bidder", "bidder"),
                ("price", "CAST(price AS DECIMAL(23, 3))"),
                ("date_time", ts),
                ("extra", "coalesce(extra, '')"),
            ],
            "q2" => vec![("auction", "auction"), ("price", "price")],
            "q7" => vec![
                ("auction", "auction"),
                ("price", "price"),
                ("bidder", "bidder"),
                ("date_time", ts),
                ("extra", "coalesce(extra, '')"),
            ],
            "q7w" => vec![
                ("auction", "auction"),
                ("price", "price"),
                ("bidder", "bidder"),
                ("date_time", ts),
            ],
            "q8" | "q8w" => vec![
                ("id", "id"),
                ("name", "coalesce(name, '')"),
                ("starttime", "CAST(starttime AS TIMESTAMP)"),
            ],
            _ => vec![
                ("auction", "auction"),
                ("num", "num"),
                ("starttime", "CAST(starttime AS TIMESTAMP)"),
            ],
        };
        let window = match *name {
            "q7" | "q7w" => Some("time_bucket(INTERVAL '10 seconds', date_time)"),
            "q5" | "q8" | "q8w" => Some("starttime"),
            _ => None,
        };
        let agreement = if f.is_some() {
            compare(&work, name, &columns, window)
        } else {
            String::new()
        };
        let rate = |r: &Run| events / r.cpu.as_secs_f64();
        match &f {
            Some(f) => println!(
                "{name:<5} {:>13.0}K {:>13.0}K {:>6.2}x {:>9.2} {:>9.2} {:>7} MiB {:>6} MiB  sluice rows, flink rows, differing: {agreement}",
                rate(&s) / 1e3,
                rate(f) / 1e3,
                rate(&s) / rate(f),
                s.wall.as_secs_f64(),
                f.wall.as_secs_f64(),
                s.peak_rss_mib,
                f.peak_rss_mib,
            ),
            None => println!(
                "{name:<5} {:>13.0}K {:>14} {:>7} {:>9.2} {:>9} {:>7} MiB",
                rate(&s) / 1e3,
                "-",
                "-",
                s.wall.as_secs_f64(),
                "-",
                s.peak_rss_mib
            ),
        }
    }
}
