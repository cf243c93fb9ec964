//! P9 — the P1 group-by with its input and output on an S3-compatible server, against the same
//! job on local files and against pyarrow reading the same objects.
//!
//! Workload: N generated bid rows in Parquet (P1's data), `SELECT auction, count(*), max(price),
//! sum(price) FROM bids GROUP BY auction`, output as Parquet. In one run, alternating after a
//! warm-up of each:
//! - Sluice, local: `sluice run` with 2 executors × 1 slot, files to files (P1);
//! - Sluice, S3: the same job reading `s3://bench/bids/` and writing `s3://bench/out-R/` on a
//!   local S3-compatible server (moto's, `scripts/install-s3.sh`), its checkpoint on S3 too;
//! - pyarrow: `pyarrow.dataset` over the same objects through `S3FileSystem`, the same
//!   aggregation (`Table.group_by`) and the output written back to the server.
//!
//! Prints the medians and the ratios S3/local and Sluice-S3/pyarrow-S3. The server is a Python
//! process on the same two cores, so the S3 numbers measure Sluice's object-store path under a
//! slow store more than S3 itself.
//!
//! Run: `scripts/bench-p9.sh [--rows 2000000] [--runs 3]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use sluice::stats::median;

const QUERY: &str = "SELECT auction, count(*) AS n, max(price) AS top, sum(price) AS total FROM bids GROUP BY auction";

fn main() {
    let mut rows: u64 = 2_000_000;
    let mut runs: usize = 3;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => rows = it.next().and_then(|v| v.parse().ok()).expect("--rows N"),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            _ => {} // cargo bench passes --bench
        }
    }
    let root = sluice::repo_root();
    let data = sluice::datagen::p1_bids(&root, rows);
    let work = root.join("bench-data/p9-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let s3 = S3Server::start();
    s3.create_bucket("bench");
    let started = Instant::now();
    s3.upload(&data, "bench", "bids");
    eprintln!(
        "uploaded the input in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let sluice = sluice::sluice_binary();
    let (mut local, mut remote, mut arrow) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let l = run_sluice(
            &sluice,
            &s3,
            &work,
            &format!("{}/", data.display()),
            &work.join(format!("out-{run}")).display().to_string(),
            None,
        );
        let r = run_sluice(
            &sluice,
            &s3,
            &work,
            "s3://bench/bids/",
            &format!("s3://bench/out-{run}/"),
            Some(format!("s3://bench/ckpt-{run}")),
        );
        let p = run_pyarrow(&s3, run);
        eprintln!(
            "run {run}{}: sluice local {:.3}s, sluice s3 {:.3}s, pyarrow s3 {:.3}s",
            if run == 0 { " (warm-up)" } else { "" },
            l.as_secs_f64(),
            r.as_secs_f64(),
            p.as_secs_f64()
        );
        if run > 0 {
            local.push(l);
            remote.push(r);
            arrow.push(p);
        }
    }
    let (l, r, p) = (
        median(&local).unwrap_or_default().as_secs_f64(),
        median(&remote).unwrap_or_default().as_secs_f64(),
        median(&arrow).unwrap_or_default().as_secs_f64(),
    );
    let m = rows as f64 / 1e6;
    println!("P9 group-by over {rows} rows, input and output on S3 (moto), median of {runs} runs");
    println!("  sluice, local files:    {l:.3}s  ({:.1} M rows/s)", m / l);
    println!("  sluice, S3:             {r:.3}s  ({:.1} M rows/s)", m / r);
    println!(
        "  pyarrow, S3 (1 process): {p:.3}s  ({:.1} M rows/s)",
        m / p
    );
    println!("  ratio sluice S3 / sluice local throughput: {:.2}x", l / r);
    println!("  ratio sluice S3 / pyarrow S3 throughput:   {:.2}x", p / r);
    let _ = std::fs::remove_dir_all(&work);
}

/// `sluice run` of the P1 job from `input` to `output`, as a user runs it.
fn run_sluice(
    sluice: &Path,
    s3: &S3Server,
    work: &Path,
    input: &str,
    output: &str,
    checkpoint: Option<String>,
) -> Duration {
    let job = work.join("p9.sql");
    std::fs::write(
        &job,
        format!(
            "CREATE TABLE bids WITH (connector = 'parquet', path = '{input}');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = '{output}');\n\
             INSERT INTO out {QUERY};"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(sluice);
    cmd.args([
        "run",
        job.to_str().unwrap(),
        "--executors",
        "2",
        "--slots",
        "1",
    ]);
    if let Some(checkpoint) = &checkpoint {
        cmd.args(["--checkpoint", checkpoint]);
    }
    for (k, v) in s3.env() {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = cmd.output().expect("sluice runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "sluice failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// pyarrow over the same objects: read, aggregate, write back; the seconds it took.
fn run_pyarrow(s3: &S3Server, run: usize) -> Duration {
    let script = r#"
import sys, time
import pyarrow.fs as pafs, pyarrow.dataset as ds, pyarrow.parquet as pq
endpoint, key, secret, run = sys.argv[1:5]
started = time.perf_counter()
fs = pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http",
                       access_key=key, secret_key=secret, region="us-east-1")
bids = ds.dataset("bench/bids", format="parquet", filesystem=fs).to_table(columns=["auction", "price"])
out = bids.group_by("auction").aggregate([("price", "count"), ("price", "max"), ("price", "sum")])
pq.write_table(out, f"bench/pyarrow-{run}/part-0.parquet", filesystem=fs)
print(f"seconds={time.perf_counter() - started}")
"#;
    let out = Command::new(sluice::table::readers_python())
        .args(["-c", script, &s3.endpoint(), ACCESS_KEY, SECRET_KEY])
        .arg(run.to_string())
        .output()
        .expect("running pyarrow");
    assert!(
        out.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let secs: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("seconds="))
        .and_then(|v| v.trim().parse().ok())
        .expect("pyarrow's time");
    Duration::from_secs_f64(secs)
}
