//! The soak command: a Nexmark windowed aggregation (bids at `--rate` per second, 10 s tumbling
//! windows per auction into Parquet, two executors of 256 MiB, one-second trigger) runs for
//! `--minutes`, printing the driver's and each executor's RSS every `--every-secs`, then the
//! growth after the first fifth of the run. `scripts/soak.sh [--minutes 30] [--rate 20000]
//! [--every-secs 60]`.

use std::time::Duration;

use sluice::soak;

fn main() {
    let mut minutes = 30u64;
    let mut rate = 20_000u64;
    let mut every = 60u64;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match arg.as_str() {
            "--minutes" => minutes = value(),
            "--rate" => rate = value(),
            "--every-secs" => every = value().max(1),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    println!("soak: {minutes} min, Nexmark bids at {rate}/s, RSS every {every} s");
    let child = soak::start(dir.path(), rate);
    let samples = soak::watch(
        &child,
        Duration::from_secs(minutes * 60),
        Duration::from_secs(every),
        |s| println!("{}", soak::line(s)),
    );
    let stopped = soak::stop(child).success();
    let epochs = sluice::progress::records(&dir.path().join("ckpt")).len();
    let warm_up = minutes as f64 * 60.0 / 5.0;
    let mib = |b: i64| b as f64 / (1 << 20) as f64;
    println!(
        "after a {warm_up:.0} s warm-up: driver {:+.1} MiB; executors {}; {epochs} epochs kept; stopped cleanly: {stopped}",
        mib(soak::growth(&samples, warm_up, |s| Some(s.driver))),
        (0..2)
            .map(|e| format!(
                "{:+.1} MiB",
                mib(soak::growth(&samples, warm_up, |s| s.executors.get(e).copied()))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
