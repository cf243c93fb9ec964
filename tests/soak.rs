//! The soak command's shortened variant: a Nexmark windowed aggregation runs for a few minutes
//! while the driver's and each executor's RSS are sampled; after warm-up neither keeps growing
//! (the full 30-minute run is `scripts/soak.sh`, its curve in benches/RESULTS.md).

use std::time::Duration;

use sluice::soak;

#[test]
fn driver_and_executor_memory_stops_growing_after_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let child = soak::start(dir.path(), 5_000);
    let samples = soak::watch(
        &child,
        Duration::from_secs(150),
        Duration::from_secs(5),
        |s| eprintln!("{}", soak::line(s)),
    );
    let status = soak::stop(child);
    let log = std::fs::read_to_string(dir.path().join("soak.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(samples.len() >= 25, "{samples:?}");
    let records = sluice::progress::records(&dir.path().join("ckpt"));
    let last = records.last().map_or(0, |r| r["epoch"].as_u64().unwrap());
    assert!(last > 60, "{last} epochs");
    // After a 45 s warm-up: the largest RSS of the last third of the samples within 16 MiB
    // and 10 % of the largest of the first third, for the driver and each executor.
    let warm_up = 45.0;
    let allowed = |base: u64| (16 << 20) + base as i64 / 10;
    let driver_growth = soak::growth(&samples, warm_up, |s| Some(s.driver));
    let base = samples.last().unwrap().driver;
    assert!(
        driver_growth <= allowed(base),
        "the driver grew {} MiB",
        driver_growth >> 20
    );
    for e in 0..2 {
        let g = soak::growth(&samples, warm_up, |s| s.executors.get(e).copied());
        let base = samples
            .last()
            .unwrap()
            .executors
            .get(e)
            .copied()
            .unwrap_or(0);
        assert!(g <= allowed(base), "executor {e} grew {} MiB", g >> 20);
    }
}
