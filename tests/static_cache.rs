//! A stream–static join keeps its static side on the executors: over 20 epochs of a streamed
//! JSON file table joined with a CSV table, the CSV's scan runs in the first epoch and once
//! more after its file is replaced — every other epoch reads what the executors kept — and the
//! output equals DataFusion's join of each epoch's files with the table as it was then. The
//! small static side is broadcast (the stream's rows are not shuffled) unless it is over
//! `--broadcast-threshold`.

mod common;

use std::time::Duration;

use common::stream::progress;
use common::{eventually, ok, sluice, spawn, wait_output};
use sluice::reference::{Input, Reference};
use sluice::table::read_rows;

/// Stream file `k`: 200 bids of bidders 0..50.
fn stream_file(k: u64) -> String {
    (0..200)
        .map(|i| {
            let n = k * 200 + i;
            format!("{{\"bidder\": {}, \"price\": {}}}\n", n % 50, n)
        })
        .collect()
}

/// The static table, version `v`: each bidder's region.
fn regions(v: u32) -> String {
    let mut text = String::from("bidder,region\n");
    for b in 0..50 {
        text.push_str(&format!("{b},region-{v}-{}\n", b % 7));
    }
    text
}

#[test]
fn a_static_table_is_read_once_and_again_only_after_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["landing", "dim", "ref/early", "ref/late"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("dim/regions.csv"), regions(1)).unwrap();
    std::fs::write(
        d.join("job.sql"),
        "CREATE TABLE bids (bidder BIGINT, price BIGINT)\n\
           WITH (connector = 'json', path = 'landing/', stream = 'true', max_files_per_trigger = '1');\n\
         CREATE TABLE regions (bidder BIGINT, region VARCHAR) WITH (connector = 'csv', path = 'dim/');\n\
         CREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
         INSERT INTO out SELECT b.bidder, r.region, b.price FROM bids b JOIN regions r ON b.bidder = r.bidder;\n",
    )
    .unwrap();
    let child = spawn(
        d,
        &[
            "run",
            "job.sql",
            "--checkpoint",
            "ckpt",
            "--trigger",
            "100ms",
            "--executors",
            "2",
            "--slots",
            "1",
        ],
        &[],
    );
    let committed = || progress(&d.join("ckpt")).len();
    for k in 0..20u64 {
        if k == 10 {
            // Replace the static table (atomically, as a user would) before file 10 lands.
            let hidden = d.join("dim/.regions.csv");
            std::fs::write(&hidden, regions(2)).unwrap();
            std::fs::rename(&hidden, d.join("dim/regions.csv")).unwrap();
        }
        let text = stream_file(k);
        let name = format!("bids-{k:03}.json");
        std::fs::write(d.join("landing").join(format!(".{name}")), &text).unwrap();
        std::fs::rename(
            d.join("landing").join(format!(".{name}")),
            d.join("landing").join(&name),
        )
        .unwrap();
        let part = if k < 10 { "ref/early" } else { "ref/late" };
        std::fs::write(d.join(part).join(&name), &text).unwrap();
        assert!(
            eventually(Duration::from_secs(60), || committed() > k as usize),
            "epoch {k} did not commit"
        );
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The regions scan: the stage reading the CSV (tasks kept or run, per epoch).
    let records = progress(&d.join("ckpt"));
    assert_eq!(records.len(), 20);
    let scan = |r: &serde_json::Value| -> (u64, u64) {
        // The stage with kept tasks in some epoch is the static scan; in each epoch: its
        // tasks and how many of them were kept.
        let stages = r["stages"].as_array().unwrap();
        let s = &stages[static_stage(&records)];
        (
            s["tasks"].as_u64().unwrap(),
            s["cached_tasks"].as_u64().unwrap(),
        )
    };
    let kept: Vec<bool> = records
        .iter()
        .map(|r| {
            let (tasks, cached) = scan(r);
            assert!(cached == 0 || cached == tasks, "{r}");
            cached == tasks && tasks > 0
        })
        .collect();
    let expected: Vec<bool> = (0..20).map(|e| e != 0 && e != 10).collect();
    assert_eq!(kept, expected, "epochs whose static scan was kept");

    // Each epoch's rows met the table as it was when the epoch was planned.
    let early_regions = d.join("ref/regions-1.csv");
    let late_regions = d.join("ref/regions-2.csv");
    std::fs::write(&early_regions, regions(1)).unwrap();
    std::fs::write(&late_regions, regions(2)).unwrap();
    let join = |bids: &std::path::Path, regions: &std::path::Path| {
        Reference::new()
            .table("bids", Input::Json(bids))
            .table("regions", Input::Csv(regions))
            .rows("SELECT b.bidder, r.region, b.price FROM bids b JOIN regions r ON b.bidder = r.bidder")
    };
    let mut want = join(&d.join("ref/early"), &early_regions);
    want.extend(join(&d.join("ref/late"), &late_regions));
    want.sort();
    assert_eq!(want.len(), 4000);
    assert_eq!(read_rows(&d.join("out")), want);
}

/// The index of the stage that had kept tasks in some epoch.
fn static_stage(records: &[serde_json::Value]) -> usize {
    records
        .iter()
        .find_map(|r| {
            r["stages"]
                .as_array()
                .unwrap()
                .iter()
                .position(|s| s["cached_tasks"].as_u64() > Some(0))
        })
        .expect("some epoch kept the static scan")
}

#[test]
fn a_small_static_side_is_broadcast_and_one_over_the_threshold_shuffled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["landing", "dim"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("dim/regions.csv"), regions(1)).unwrap();
    std::fs::write(
        d.join("job.sql"),
        "CREATE TABLE bids (bidder BIGINT, price BIGINT)\n\
           WITH (connector = 'json', path = 'landing/', stream = 'true');\n\
         CREATE TABLE regions (bidder BIGINT, region VARCHAR) WITH (connector = 'csv', path = 'dim/');\n\
         CREATE TABLE out WITH (connector = 'parquet', path = 'out/');\n\
         INSERT INTO out SELECT b.bidder, r.region, b.price FROM bids b JOIN regions r ON b.bidder = r.bidder;\n",
    )
    .unwrap();
    let explain = |threshold: &str| {
        ok(&sluice(
            d,
            &[
                "explain",
                "job.sql",
                "--parallelism",
                "4",
                "--broadcast-threshold",
                threshold,
            ],
        ))
    };
    // Under the default 10 MiB: the static side is gathered whole by every stream task, and
    // nothing is shuffled by key.
    let broadcast = ok(&sluice(d, &["explain", "job.sql", "--parallelism", "4"]));
    assert!(broadcast.contains("mode=CollectLeft"), "{broadcast}");
    assert!(broadcast.contains("output Gather"), "{broadcast}");
    assert!(!broadcast.contains("output Hash"), "{broadcast}");
    // Over the threshold (one byte under the file's size), or with broadcasting off: both
    // sides are shuffled by the join key.
    let size = std::fs::metadata(d.join("dim/regions.csv")).unwrap().len();
    for threshold in [size.to_string(), "0".to_string()] {
        let shuffled = explain(&threshold);
        assert!(
            shuffled.contains("mode=Partitioned"),
            "{threshold}: {shuffled}"
        );
        assert!(shuffled.contains("output Hash"), "{threshold}: {shuffled}");
        assert!(!shuffled.contains("CollectLeft"), "{threshold}: {shuffled}");
    }
    assert!(explain(&(size + 1).to_string()).contains("mode=CollectLeft"));
}
