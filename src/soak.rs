//! A long-running streaming query watched from the outside: a Nexmark windowed aggregation to
//! Parquet on the local manager, with the resident set size of the driver and of each executor
//! sampled from `/proc` at a fixed interval (the soak command and its shortened test).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One sample: seconds since start, the driver's RSS and each executor's (bytes).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_s: f64,
    pub driver: u64,
    pub executors: Vec<u64>,
}

/// `VmRSS` of process `pid`, in bytes (`None` once it is gone).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The soak query: Nexmark bids at `rate` per second, 10 s tumbling windows per auction into
/// Parquet, one-second trigger, two executors of 256 MiB; retention keeps the checkpoint
/// bounded. What it prints goes to `dir/soak.log`.
pub fn start(dir: &Path, rate: u64) -> Child {
    std::fs::write(
        dir.join("soak.sql"),
        format!(
            "CREATE TABLE bid (WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)\n\
               WITH (connector = 'nexmark', kind = 'bid', rate = '{rate}');\n\
             CREATE TABLE hot WITH (connector = 'parquet', path = 'out/hot/');\n\
             INSERT INTO hot SELECT window_start, window_end, auction, count(*) AS bids, max(price) AS top\n\
             FROM TABLE(TUMBLE(bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
             GROUP BY window_start, window_end, auction;\n"
        ),
    )
    .expect("write the soak job");
    Command::new(crate::sluice_binary())
        .current_dir(dir)
        .args([
            "run",
            "soak.sql",
            "--executors",
            "2",
            "--slots",
            "1",
            "--trigger",
            "1s",
            "--checkpoint",
            "ckpt",
            "--retain-epochs",
            "20",
            "--memory-mb",
            "256",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("soak.log")).expect("create soak.log"))
        .spawn()
        .expect("start sluice")
}

/// Samples the driver `child` and its executors every `interval` for `duration`, calling
/// `each` with every sample; returns them all.
pub fn watch(
    child: &Child,
    duration: Duration,
    interval: Duration,
    mut each: impl FnMut(&Sample),
) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(interval);
        let executors = crate::process::children_of(child.id())
            .into_iter()
            .filter_map(rss)
            .collect();
        let Some(driver) = rss(child.id()) else {
            break;
        };
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            driver,
            executors,
        };
        each(&sample);
        samples.push(sample);
    }
    samples
}

/// Stops the query as a user would (Ctrl-C) and waits for it; how it exited.
pub fn stop(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().expect("wait for sluice")
}

/// Growth after warm-up of one process's series: the largest RSS of the last third of the
/// samples after `warm_up_s` minus the largest of the first third (bytes; negative when it
/// shrank).
pub fn growth(samples: &[Sample], warm_up_s: f64, of: impl Fn(&Sample) -> Option<u64>) -> i64 {
    let after: Vec<u64> = samples
        .iter()
        .filter(|s| s.at_s >= warm_up_s)
        .filter_map(of)
        .collect();
    let third = (after.len() / 3).max(1);
    let first = after.iter().take(third).max().copied().unwrap_or(0);
    let last = after.iter().rev().take(third).max().copied().unwrap_or(0);
    last as i64 - first as i64
}

/// One line per sample: seconds, driver MiB, each executor's MiB.
pub fn line(s: &Sample) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "{:>7.0} s  driver {:>7.1} MiB  executors {}",
        s.at_s,
        mib(s.driver),
        s.executors
            .iter()
            .map(|e| format!("{:>7.1} MiB", mib(*e)))
            .collect::<Vec<_>>()
            .join(" ")
    )
}
