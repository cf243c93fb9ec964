//! Helpers for end-to-end tests: run the real `sluice` binary, compute reference answers with
//! DataFusion in one process.
#![allow(dead_code)]

pub mod stream;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice::datagen::{write_bidders_csv, write_bids_parquet, write_events_json, BidsSpec};
use sluice::reference::{Input, Reference};

/// Generates the test dataset under `dir/data`: bids (Parquet, several files and row groups),
/// bidders (CSV) and events (JSON lines).
pub fn generate(dir: &Path) {
    write_bids_parquet(
        &dir.join("data/bids"),
        BidsSpec {
            rows: 120_000,
            files: 3,
            auctions: 500,
            row_group_rows: 20_000,
            seed: 7,
        },
    )
    .unwrap();
    write_bidders_csv(&dir.join("data/bidders.csv"), 100_000).unwrap();
    std::fs::create_dir_all(dir.join("data/events")).unwrap();
    write_events_json(&dir.join("data/events/part-0.json"), 20_000, 1).unwrap();
    write_events_json(&dir.join("data/events/part-1.json"), 15_000, 2).unwrap();
}

/// DDL for the generated tables, as a job file would start.
pub const SOURCES: &str = "
CREATE TABLE bids WITH (connector = 'parquet', path = 'data/bids/');
CREATE TABLE bidders (bidder BIGINT, region VARCHAR, tier BIGINT) WITH (connector = 'csv', path = 'data/bidders.csv');
CREATE TABLE events (bidder BIGINT, action VARCHAR, amount DOUBLE) WITH (connector = 'json', path = 'data/events/');
";

/// The answer DataFusion gives in one process over the same files, rows rendered as strings
/// and sorted.
pub fn reference(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let bids = dir.join("data/bids/");
    let bidders = dir.join("data/bidders.csv");
    let events = dir.join("data/events/");
    Reference::new()
        .table("bids", Input::Parquet(&bids))
        .table("bidders", Input::Csv(&bidders))
        .table("events", Input::Json(&events))
        .rows(sql)
}

/// Runs `sluice ARGS` in `dir` and waits (at most `limit`) for it to finish.
pub fn sluice(dir: &Path, args: &[&str]) -> Output {
    sluice_env(dir, args, &[])
}

/// Like [`sluice`] with extra environment variables.
pub fn sluice_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = spawn(dir, args, env);
    wait_output(child, Duration::from_secs(180))
}

/// Starts `sluice ARGS` in `dir` with piped output.
pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(sluice::sluice_binary());
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // No configuration from the machine running the tests: no default file, no SLUICE_* option
    // variables (a test passes its own).
    cmd.env("XDG_CONFIG_HOME", dir.join(".no-config"))
        .env_remove("SLUICE_CONFIG");
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") && !k.starts_with("SLUICE_TEST") && k != "SLUICE_LOG" {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("sluice starts")
}

/// Waits for a child with a deadline; a hang is a test failure, not a stuck CI job.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sluice did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts success, showing the output otherwise.
pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "sluice failed ({:?})\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure and returns stderr.
pub fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "sluice should have failed\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

#[allow(unused_imports)] // not every test binary uses it
pub use sluice::process::children_of;

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .map(|i| !stat[i + 2..].starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits until `pred` holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

/// A running `sluice` whose stderr is collected in the background (for waiting on log lines).
pub struct Logged {
    pub child: Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Logged {
    /// Starts `sluice ARGS` in `dir` with `SLUICE_LOG=info`.
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all_env = vec![("SLUICE_LOG", "info")];
        all_env.extend_from_slice(env);
        let mut child = spawn(dir, args, &all_env);
        let pipe = child.stderr.take().expect("piped");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) {
        assert!(
            eventually(limit, || self.stderr.lock().unwrap().contains(needle)),
            "no '{needle}' in the log within {limit:?}:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal) and
    /// the whole log.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the reader drain
                return (status.code(), self.stderr.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sluice did not exit within {limit:?}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The events `sluice run --events FILE` has written to `file` so far (complete lines only).
pub fn events(file: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event is one JSON object per line"))
        .collect()
}

/// Waits until the events file holds an event `matches` accepts; panics naming `what` and
/// listing the events seen.
pub fn wait_for_event(
    file: &Path,
    what: &str,
    limit: Duration,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let seen = events(file);
        if let Some(event) = seen.iter().find(|e| matches(e)) {
            return event.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "no {what} event in {} within {limit:?}: {seen:#?}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An `epoch_committed` event for `epoch`.
pub fn committed(epoch: u64) -> impl Fn(&serde_json::Value) -> bool {
    move |e| e["event"] == "epoch_committed" && e["progress"]["epoch"] == epoch
}

/// Every value of the BIGINT column `name` in the Parquet files under `root`, read with the
/// `parquet` crate.
pub fn int_column(root: &Path, name: &str) -> Vec<i64> {
    use arrow::array::{Array, Int64Array};
    let mut values = Vec::new();
    for file in sluice::table::parquet_files(root) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name} in {}", file.display()))
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("BIGINT")
                .clone();
            values.extend((0..col.len()).map(|i| col.value(i)));
        }
    }
    values
}

/// How many epochs the checkpoint at `ckpt` has committed: one past the highest `commits/N`
/// (retention keeps only the last epochs' entries, so they cannot be counted).
#[allow(dead_code)]
pub fn committed_epochs(ckpt: &std::path::Path) -> u64 {
    std::fs::read_dir(ckpt.join("commits"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
                .map(|n| n + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The seed of a randomized test: `$SLUICE_TEST_SEED`, else a fixed one under CI (`CI` set) so
/// a failure replays, else a fresh one. Printed, so any run can be replayed.
#[allow(dead_code)]
pub fn test_seed() -> u64 {
    let seed = match std::env::var("SLUICE_TEST_SEED") {
        Ok(s) => s.parse().expect("SLUICE_TEST_SEED is a number"),
        Err(_) if std::env::var_os("CI").is_some() => 20_261_204,
        Err(_) => rand::random(),
    };
    eprintln!("random seed: {seed} (replay with SLUICE_TEST_SEED={seed})");
    seed
}

/// A streaming job through two faults at random moments, reproducible from `seed`: `sluice
/// ARGS` in `dir` is killed (`kill -9`) 1–4 s after it starts; `between` runs (more input, say);
/// it is started again and one of its executors is killed 1–4 s later (the driver re-runs that
/// executor's tasks elsewhere, restoring their state from the checkpoint); 0.5–2.5 s after that
/// it is stopped (SIGTERM). What is left is the caller's to drain.
#[allow(dead_code)]
pub fn kill_driver_then_executor(dir: &Path, args: &[&str], seed: u64, between: impl FnOnce()) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Round 1: the driver (its executors notice and exit).
    let child = spawn(dir, args, &[]);
    std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = wait_output(child, Duration::from_secs(60));
    between();
    // Round 2: restarted, then one executor.
    let child = spawn(dir, args, &[]);
    std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
    let mut executors = children_of(child.id());
    for _ in 0..100 {
        if !executors.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        executors = children_of(child.id());
    }
    let victim = executors[rng.random_range(0..executors.len())] as i32;
    unsafe { libc::kill(victim, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(rng.random_range(500..2500)));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = wait_output(child, Duration::from_secs(60));
}
