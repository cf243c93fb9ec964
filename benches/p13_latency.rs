//! P13 — end-to-end latency of a file-stream pipeline at a fixed input rate: Sluice at triggers
//! of 0 ms, 100 ms and 1 s against Flink 2.3 and Spark Structured Streaming, on the same machine
//! in one run (issue 22).
//!
//! A feeder writes the bids as JSON-lines files into `in/bid/` at `--rate` events per second,
//! one file every 100 ms (written under a hidden name and renamed, as every engine's file
//! source expects), each event's `date_time` the wall-clock time its file was written. A watcher
//! lists the output directory every 5 ms and records when each data file first became visible:
//! Sluice's Parquet files appear when an epoch commits (published by rename); Flink's CSV part
//! files when a checkpoint commits them (they roll every 100 ms; `--flink-checkpoint-ms`, 1 s by
//! default, is its commit interval); Spark's Parquet files as its writer creates them (before
//! its `_spark_metadata` commit, so Spark's figures are, if anything, too low).
//!
//! Queries (`--queries`): `lat_pass`, the bids as they are — latency = visible − `date_time` for
//! every row; `lat_window`, a 1-second tumbling count per auction with a `--watermark-ms`
//! watermark in every engine — window-visible latency = visible − (`window_end` + the
//! watermark delay), the time from the watermark passing the window's end (at a fixed rate and
//! event time = wall time, that is when the window can close) to its row being visible.
//! Measured over the events (windows) of `--seconds` after a `--warmup` (JVM start-up, the
//! first epochs), which every engine's run includes; printed: rows measured, rows missing
//! (pass-through: written but never visible), p50, p90, p99 and max in milliseconds, and the
//! engine's CPU seconds over its run.
//!
//! Run: `scripts/bench-latency.sh [--rate 2000] [--seconds 30] [--warmup 20]
//! [--engines sluice,flink,spark] [--triggers 0ms,100ms,1s] [--queries lat_pass,lat_window]
//! [--watermark-ms 1000] [--flink-checkpoint-ms 1000]`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    rate: u64,
    seconds: u64,
    warmup: u64,
    engines: Vec<String>,
    triggers: Vec<String>,
    queries: Vec<String>,
    watermark_ms: i64,
    flink_checkpoint_ms: u64,
}

fn args() -> Args {
    let list = |v: Option<String>, what: &str| -> Vec<String> {
        v.unwrap_or_else(|| panic!("{what} needs a value"))
            .split(',')
            .map(str::to_string)
            .collect()
    };
    let mut a = Args {
        rate: 2000,
        seconds: 30,
        warmup: 20,
        engines: list(Some("sluice,flink,spark".into()), ""),
        triggers: list(Some("0ms,100ms,1s".into()), ""),
        queries: list(Some("lat_pass,lat_window".into()), ""),
        watermark_ms: 1000,
        flink_checkpoint_ms: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} N"))
        };
        match arg.as_str() {
            "--rate" => a.rate = num("--rate").max(10),
            "--seconds" => a.seconds = num("--seconds"),
            "--warmup" => a.warmup = num("--warmup"),
            "--watermark-ms" => a.watermark_ms = num("--watermark-ms") as i64,
            "--flink-checkpoint-ms" => a.flink_checkpoint_ms = num("--flink-checkpoint-ms"),
            "--engines" => a.engines = list(it.next(), "--engines"),
            "--triggers" => a.triggers = list(it.next(), "--triggers"),
            "--queries" => a.queries = list(it.next(), "--queries"),
            _ => {}
        }
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `rate / 10` bids every 100 ms into `dir` until `stop`; returns each file's time
/// (its events' `date_time`, ms) and event count.
fn feed(
    dir: PathBuf,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(i64, u64)>> {
    std::thread::spawn(move || {
        let per_file = rate / 10;
        let started = Instant::now();
        let (mut seq, mut written) = (0u64, 0u64);
        let mut files = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at_ms = now_ms();
            let at = sluice::datagen::iso_millis(at_ms);
            let mut text = String::with_capacity(per_file as usize * 100);
            for i in 0..per_file {
                let n = written + i;
                text.push_str(&format!(
                    "{{\"auction\":{},\"bidder\":{},\"price\":{},\"date_time\":\"{at}\",\"extra\":\"{n}\"}}\n",
                    n % 100,
                    (n * 7919) % 10_000,
                    100 + (n * 31) % 9_900
                ));
            }
            let tmp = dir.join(format!(".part-{seq:08}.json"));
            std::fs::write(&tmp, text).expect("write an input file");
            std::fs::rename(&tmp, dir.join(format!("part-{seq:08}.json"))).expect("publish it");
            files.push((at_ms, per_file));
            written += per_file;
            seq += 1;
            let next = started + Duration::from_millis(100 * seq);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        files
    })
}

/// Records, every 5 ms until `stop`, when each visible data file under `out` first appeared.
fn watch(out: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeMap<PathBuf, i64>> {
    std::thread::spawn(move || {
        let mut seen = BTreeMap::new();
        loop {
            let done = stop.load(Ordering::Relaxed);
            let at = now_ms();
            for entry in walkdir::WalkDir::new(&out)
                .into_iter()
                .filter_entry(|e| {
                    let name = e.file_name().to_string_lossy();
                    e.depth() == 0 || !(name.starts_with('.') || name.starts_with('_'))
                })
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
            {
                let name = entry.file_name().to_string_lossy();
                if name.starts_with("part-") || name.ends_with(".parquet") {
                    seen.entry(entry.path().to_path_buf()).or_insert(at);
                }
            }
            if done {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// One engine's configuration in the run.
struct Engine {
    label: String,
    kind: &'static str,
    trigger_ms: u64,
}

/// Starts `engine` on `query` reading `input` (holding `bid/`), writing `out`, for `run`.
fn start(engine: &Engine, a: &Args, query: &str, dir: &Path, run: Duration) -> Option<Child> {
    let (input, out) = (dir.join("in"), dir.join("out"));
    let log = std::fs::File::create(dir.join("engine.log")).expect("a log file");
    let err = log.try_clone().expect("a log handle");
    let root = sluice::repo_root();
    let mut cmd = match engine.kind {
        "sluice" => {
            let select = match query {
                "lat_pass" => {
                    "SELECT auction, bidder, price, date_time, extra FROM bid".to_string()
                }
                _ => "SELECT auction, count(*) AS num, window_start, window_end \
                      FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND)) \
                      GROUP BY auction, window_start, window_end"
                    .to_string(),
            };
            let job = format!(
                "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP, extra VARCHAR, \
                   WATERMARK FOR date_time AS date_time - INTERVAL '{}' MILLISECOND) \
                 WITH (connector = 'json', path = '{}/bid/', stream = 'true');\n\
                 CREATE TABLE out WITH (connector = 'parquet', path = '{}/');\n\
                 INSERT INTO out {select};\n",
                a.watermark_ms,
                input.display(),
                out.display()
            );
            std::fs::write(dir.join("job.sql"), job).unwrap();
            let mut c = Command::new(sluice::sluice_binary());
            c.arg("run")
                .arg(dir.join("job.sql"))
                .args(["--executors", "2", "--slots", "1", "--ui", "off"])
                .args(["--trigger", &format!("{}ms", engine.trigger_ms)])
                .arg("--checkpoint")
                .arg(dir.join("ckpt"));
            c
        }
        "flink" => {
            let python = root.join(".venv-flink/bin/python");
            if !python.exists() {
                return None;
            }
            let mut c = Command::new(python);
            c.arg(root.join("benches/peers/flink_nexmark.py"))
                .arg("--data")
                .arg(&input)
                .arg("--out")
                .arg(&out)
                .args(["--query", query, "--parallelism", "2"])
                .arg("--checkpoint-ms")
                .arg(a.flink_checkpoint_ms.to_string())
                .arg("--watermark-ms")
                .arg(a.watermark_ms.to_string())
                .arg("--run-seconds")
                .arg(run.as_secs_f64().to_string());
            c
        }
        _ => {
            let python = root.join(".venv/bin/python");
            if !python.exists() {
                return None;
            }
            let mut c = Command::new(python);
            c.arg(root.join("benches/peers/latency_spark.py"))
                .arg(input.join(""))
                .arg(&out)
                .arg(dir.join("ckpt"))
                .arg(query)
                .arg(engine.trigger_ms.to_string())
                .arg(run.as_secs_f64().to_string())
                .arg(a.watermark_ms.to_string());
            c
        }
    };
    Some(
        cmd.stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start the engine"),
    )
}

/// `pid` and its live descendants, from /proc.
fn tree(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        found.push(p);
        for task in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    found
}

/// CPU seconds (user + system) of `pid` and its live descendants.
fn tree_cpu(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            Some((field(11) + field(12)) / ticks)
        })
        .sum()
}

/// Kills `pid` and every descendant (a peer's JVM is its Python process's child).
fn kill_tree(pid: u32) {
    for p in tree(pid).into_iter().rev() {
        // SAFETY: kill(2) on a pid this bench started (or its descendants).
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
}

/// Latency figures of one run, or why there are none.
fn measure(engine: &Engine, a: &Args, query: &str, dir: &Path) -> Result<String, String> {
    let run_time = Duration::from_secs(a.warmup + a.seconds + 4);
    let input = dir.join("in/bid");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let stop_feed = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let t0 = now_ms();
    let feeder = feed(input, a.rate, stop_feed.clone());
    let watcher = watch(dir.join("out"), stop_watch.clone());
    let Some(mut child) = start(engine, a, query, dir, run_time) else {
        stop_feed.store(true, Ordering::Relaxed);
        stop_watch.store(true, Ordering::Relaxed);
        let _ = (feeder.join(), watcher.join());
        return Err("not installed (scripts/bench-latency.sh installs the peers)".into());
    };
    let pid = child.id();
    let cpu = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let (cpu, stop) = (cpu.clone(), stop_watch.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = tree_cpu(pid);
                let mut c = cpu.lock().unwrap();
                *c = c.max(now);
                drop(c);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Feed through the warm-up, the measured seconds and a tail that closes their windows.
    std::thread::sleep(Duration::from_secs(a.warmup + a.seconds + 2));
    stop_feed.store(true, Ordering::Relaxed);
    let written = feeder.join().unwrap_or_default();
    // Let the last commits land (a Flink checkpoint, a Sluice epoch), then stop the engine.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_tree(pid);
    let _ = child.wait();
    stop_watch.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap_or_default();
    let _ = sampler.join();
    let cpu = *cpu.lock().unwrap();
    if seen.is_empty() {
        let log = std::fs::read_to_string(dir.join("engine.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return Err(format!("no output; log ends: {}", tail.join(" | ")));
    }
    let mut csv = std::fs::File::create(dir.join("seen.csv")).unwrap();
    writeln!(csv, "filename,seen_ms").unwrap();
    for (path, at) in &seen {
        writeln!(csv, "{},{at}", path.display()).unwrap();
    }
    let (from, to) = (
        t0 + a.warmup as i64 * 1000,
        t0 + (a.warmup + a.seconds) as i64 * 1000,
    );
    let files: Vec<String> = seen.keys().map(|p| format!("'{}'", p.display())).collect();
    let rows = if engine.kind == "flink" {
        let names = match query {
            "lat_pass" => "['auction', 'bidder', 'price', 'date_time', 'extra']",
            _ => "['auction', 'num', 'window_start', 'window_end']",
        };
        format!(
            "read_csv([{}], header = false, names = {names}, auto_detect = true, filename = true)",
            files.join(", ")
        )
    } else {
        format!("read_parquet([{}], filename = true)", files.join(", "))
    };
    let ms = |col: &str| format!("epoch_ms(CAST({col} AS TIMESTAMP))");
    let (latency, event, expected) = match query {
        "lat_pass" => (
            format!("s.seen_ms - {}", ms("o.date_time")),
            ms("o.date_time"),
            // Bids written in the measured seconds.
            written
                .iter()
                .filter(|(at, _)| (from..to).contains(at))
                .map(|(_, n)| n)
                .sum::<u64>()
                .to_string(),
        ),
        _ => (
            format!("s.seen_ms - ({} + {})", ms("o.window_end"), a.watermark_ms),
            ms("o.window_start"),
            // Each measured second's window holds every one of the 100 auctions.
            format!("{}", a.seconds * 100),
        ),
    };
    let sql = format!(
        "SELECT count(*), {expected} - count(*), \
                round(quantile_cont(lat, 0.5)), round(quantile_cont(lat, 0.9)), \
                round(quantile_cont(lat, 0.99)), max(lat) \
         FROM (SELECT {latency} AS lat, {event} AS ev FROM {rows} o \
               JOIN read_csv('{}') s ON o.filename = s.filename) \
         WHERE ev >= {from} AND ev < {to}",
        dir.join("seen.csv").display()
    );
    let row = sluice::table::duckdb_rows(&sql)
        .into_iter()
        .next()
        .unwrap_or_default();
    let v: Vec<&str> = row.split('\t').collect();
    if v.len() < 6 {
        return Err(format!("DuckDB gave no figures ({row})"));
    }
    if v[0] == "0" {
        return Err(format!(
            "none of the {} rows of the measured seconds visible by the end of the run ({cpu:.1} CPU s)",
            v[1]
        ));
    }
    Ok(format!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.1}",
        v[0], v[1], v[2], v[3], v[4], v[5], cpu
    ))
}

fn main() {
    let a = args();
    let work = sluice::repo_root().join("bench-data/p13-work");
    let _ = std::fs::remove_dir_all(&work);
    let mut engines = Vec::new();
    for e in &a.engines {
        match e.as_str() {
            "sluice" => {
                for t in &a.triggers {
                    let ms = humantime::parse_duration(t)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or_else(|_| panic!("--triggers: '{t}' is not a duration"));
                    engines.push(Engine {
                        label: format!("sluice {t}"),
                        kind: "sluice",
                        trigger_ms: ms,
                    });
                }
            }
            "flink" => engines.push(Engine {
                label: format!("flink ckpt {}ms", a.flink_checkpoint_ms),
                kind: "flink",
                trigger_ms: 0,
            }),
            "spark" => engines.push(Engine {
                label: "spark 0ms".into(),
                kind: "spark",
                trigger_ms: 0,
            }),
            other => panic!("--engines: unknown engine '{other}' (sluice, flink, spark)"),
        }
    }
    println!(
        "P13: {} bids/s as JSON files every 100 ms, {} s measured after {} s of warm-up, watermark {} ms; latency in ms (pass-through: visible - event time; window: visible - (window end + watermark))",
        a.rate, a.seconds, a.warmup, a.watermark_ms
    );
    println!(
        "{:<10} {:<17} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "query", "engine", "rows", "missing", "p50", "p90", "p99", "max", "CPU s"
    );
    for query in &a.queries {
        for engine in &engines {
            let dir = work.join(format!("{query}-{}", engine.label.replace(' ', "-")));
            std::fs::create_dir_all(&dir).unwrap();
            match measure(engine, &a, query, &dir) {
                Ok(line) => println!("{query:<10} {:<17} {line}", engine.label),
                Err(e) => println!("{query:<10} {:<17} {e}", engine.label),
            }
        }
    }
}
