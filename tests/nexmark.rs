//! The Nexmark source: deterministic events whatever the split of the work, bounded and
//! unbounded, checked against DataFusion reading the same rows back from Parquet.

mod common;

use std::time::Duration;

use common::{ok, sluice, spawn, wait_output};
use sluice::reference::{Input, Reference};
use sluice::table::read_rows;

fn job(dir: &std::path::Path, bid_options: &str, out: &str, query: &str) {
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE TABLE bid WITH (connector = 'nexmark', kind = 'bid', {bid_options});\n\
             CREATE TABLE out WITH (connector = 'parquet', path = '{out}');\n\
             INSERT INTO out {query};\n"
        ),
    )
    .unwrap();
}

/// Bids among events `0..n`: 46 of every 50.
fn bids_below(n: u64) -> u64 {
    (n / 50) * 46 + (n % 50).saturating_sub(4)
}

fn datafusion(path: &std::path::Path, sql: &str) -> Vec<Vec<String>> {
    Reference::new()
        .table("out", Input::Parquet(path))
        .rows(sql)
}

#[test]
fn bounded_nexmark_is_the_same_stream_at_any_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let q0 = "SELECT auction, bidder, price, channel, date_time FROM bid";
    for (out, parallelism) in [("one/", "1"), ("three/", "3")] {
        job(dir.path(), "events = '200000'", out, q0);
        ok(&sluice(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--parallelism",
                parallelism,
                "--checkpoint",
                out.trim_end_matches('/'),
            ],
        ));
    }
    let one = read_rows(&dir.path().join("one"));
    assert_eq!(one.len() as u64, bids_below(200_000));
    assert_eq!(one, read_rows(&dir.path().join("three")));

    // An aggregate over the generator equals DataFusion's over the rows it generated.
    let agg = "SELECT channel, count(*) AS n, max(price) AS top, min(date_time) AS first FROM bid GROUP BY channel";
    job(dir.path(), "events = '200000'", "agg/", agg);
    ok(&sluice(
        dir.path(),
        &["run", "job.sql", "--checkpoint", "agg"],
    ));
    let got = read_rows(&dir.path().join("agg"));
    let want = datafusion(
        &dir.path().join("one"),
        &agg.replace("FROM bid", "FROM out"),
    );
    assert_eq!(got, want);
    // The benchmark's hot channels carry most bids.
    let hot: i64 = got
        .iter()
        .take(4)
        .map(|r| r[1].parse::<i64>().unwrap())
        .sum();
    assert!(hot as f64 > 0.95 * one.len() as f64, "{got:?}");
}

#[test]
fn unbounded_nexmark_is_paced_by_its_rate_and_resumes_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "rate = '20000'",
        "out/",
        "SELECT auction, bidder, price, date_time FROM bid",
    );
    for _ in 0..2 {
        let child = spawn(
            dir.path(),
            &[
                "run",
                "job.sql",
                "--checkpoint",
                "ckpt",
                "--trigger",
                "200ms",
            ],
            &[],
        );
        std::thread::sleep(Duration::from_secs(3));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = wait_output(child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The last committed epoch's position is the next event id.
    let offsets = dir.path().join("ckpt/offsets");
    let last = std::fs::read_dir(&offsets)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let input: serde_json::Value =
        serde_json::from_slice(&std::fs::read(offsets.join(last.to_string())).unwrap()).unwrap();
    let next = input["sources"]["bid"]["position"]["0"].as_i64().unwrap() as u64;
    // About 20 000 events per second of the ~6 s the query ran (the second run resumes at
    // the first one's event time, so it catches up on the pause between them).
    assert!(next > 40_000, "only {next} events");
    let rows = read_rows(&dir.path().join("out"));
    assert_eq!(
        rows.len() as u64,
        bids_below(next),
        "every bid of events 0..{next} once"
    );
}
