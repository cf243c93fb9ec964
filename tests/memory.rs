//! Executors within their memory (`--memory-mb`): a group-by with far more distinct keys than
//! its share of the memory pool holds spills to disk, reports it, gives DuckDB's answer and
//! keeps each executor's peak RSS near its limit, and at a limit too small to proceed fails
//! with a message naming the operator and the limit, not a kill; so does a join whose build
//! side cannot fit (hash joins do not spill).

mod common;

use common::{events, fails, ok, sluice};
use sluice::datagen::{write_bids_parquet, BidsSpec};
use sluice::table::duckdb_rows;

/// Rows, and (about as many) distinct auctions.
const ROWS: u64 = 3_000_000;

/// The group-by: one row per auction.
const GROUP_BY: &str = "SELECT auction, count(*) AS n, sum(price) AS s, max(channel) AS c \
                        FROM bids GROUP BY auction";

fn job(dir: &std::path::Path, select: &str) {
    write_bids_parquet(
        &dir.join("data/bids"),
        BidsSpec {
            rows: ROWS,
            files: 4,
            auctions: ROWS as i64,
            row_group_rows: 262_144,
            seed: 19,
        },
    )
    .unwrap();
    std::fs::write(
        dir.join("job.sql"),
        format!(
            "CREATE TABLE bids WITH (connector = 'parquet', path = 'data/bids/');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
             INSERT INTO out {select};\n"
        ),
    )
    .unwrap();
}

fn run(dir: &std::path::Path, memory_mb: &str) -> std::process::Output {
    sluice(
        dir,
        &[
            "run",
            "job.sql",
            "--executors",
            "2",
            "--slots",
            "1",
            "--memory-mb",
            memory_mb,
            "--checkpoint",
            "ckpt",
            "--events",
            "events.jsonl",
        ],
    )
}

#[test]
fn a_group_by_larger_than_the_pool_spills_and_stays_near_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    job(d, GROUP_BY);
    let memory_mb = 128u64;
    ok(&run(d, &memory_mb.to_string()));

    // DuckDB's answer over the same files, compared row by row with Sluice's table.
    let check = duckdb_rows(&format!(
        "WITH want AS (SELECT auction, count(*) AS n, sum(price) AS s, max(channel) AS c \
           FROM read_parquet('{bids}/*.parquet') GROUP BY auction), \
         got AS (SELECT auction, n, s, c FROM read_parquet('{out}/**/*.parquet')) \
         SELECT (SELECT count(*) FROM want), (SELECT count(*) FROM got), \
           (SELECT count(*) FROM want FULL OUTER JOIN got ON want.auction = got.auction \
            WHERE want.n IS DISTINCT FROM got.n OR want.s IS DISTINCT FROM got.s \
               OR want.c IS DISTINCT FROM got.c)",
        bids = d.join("data/bids").display(),
        out = d.join("out").display()
    ));
    let counts: Vec<u64> = check[0].split('\t').map(|v| v.parse().unwrap()).collect();
    assert!(counts[0] > ROWS / 2, "{counts:?}");
    assert_eq!(counts[1], counts[0], "one row per auction: {counts:?}");
    assert_eq!(counts[2], 0, "rows that differ from DuckDB's: {counts:?}");

    // It spilled, and said so; the pool stayed within the quarter of --memory-mb that
    // spilling operators may hold.
    let progress = events(&d.join("events.jsonl"))
        .into_iter()
        .find(|e| e["event"] == "epoch_committed")
        .unwrap()["progress"]
        .clone();
    let spilled = progress["spilled_bytes"].as_u64().unwrap();
    assert!(spilled > 0, "{progress}");
    let pool = progress["peak_pool_bytes"].as_u64().unwrap();
    assert!(
        pool > 0 && pool <= (memory_mb << 20) / 4,
        "peak pool {pool}: {progress}"
    );
    // Each executor's peak RSS within the limit and the documented margin.
    let executors = events(&d.join("events.jsonl"))
        .into_iter()
        .rfind(|e| e["event"] == "executors")
        .unwrap();
    for e in executors["executors"].as_array().unwrap() {
        let rss = e["peak_rss_bytes"].as_u64().unwrap();
        eprintln!("{}: peak RSS {} MiB", e["name"], rss >> 20);
        assert!(
            rss <= (memory_mb + MARGIN_MB) << 20,
            "{} peaked at {} MiB (limit {memory_mb} + {MARGIN_MB} MiB)",
            e["name"],
            rss >> 20
        );
    }

    // The same job at 1 MiB: the aggregation's share (256 KiB) cannot hold even the
    // state it must sort before spilling, so the job fails naming the operator and the limit,
    // and publishes nothing.
    let small = tempfile::tempdir().unwrap();
    job(small.path(), GROUP_BY);
    let text = fails(&run(small.path(), "1"));
    assert!(
        text.contains("out of executor memory")
            && text.contains("AggregateStream[")
            && text.contains("the executor's memory pool is 512.0 KiB, half of --memory-mb 1, of which operators that spill may hold 256.0 KiB"),
        "{text}"
    );
    assert!(
        sluice::table::parquet_files(&small.path().join("out")).is_empty(),
        "nothing published"
    );
}

/// What an executor may use over `--memory-mb` (README: Memory): the binary's own pages and
/// allocator slack.
const MARGIN_MB: u64 = 96;

#[test]
fn a_join_too_big_for_its_pool_fails_with_the_operator_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each partition's build side holds ~1.5 M rows; the pool at --memory-mb 8 is 4 MiB.
    job(
        d,
        "SELECT a.auction, count(*) AS n, sum(b.price) AS s FROM bids a \
         JOIN bids b ON a.auction = b.auction GROUP BY a.auction",
    );
    let text = fails(&run(d, "8"));
    assert!(
        text.contains("out of executor memory")
            && text.contains("HashJoinInput")
            && text.contains("the executor's memory pool is 4.0 MiB, half of --memory-mb 8"),
        "{text}"
    );
    assert!(
        !d.join("out").exists() || sluice::table::parquet_files(&d.join("out")).is_empty(),
        "nothing published"
    );
}
