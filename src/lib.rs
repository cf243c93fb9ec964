//! Support code shared by Sluice's end-to-end tests, examples and benchmarks (the root package
//! owns `tests/`, `examples/` and `benches/`; it is not published).
//!
//! - [`datagen`]: deterministic generated data (the `bids` table of the README and benchmarks).
//! - [`nexmark`]: the Nexmark queries the benchmarks run.
//! - [`table`]: reading a Parquet table back *independently* of Sluice's sink code — plain
//!   `parquet` crate readers plus hive-style directory names — so tests check what any reader
//!   would see.
//! - [`broker`]: a real Kafka-protocol broker on loopback (installed on first use) and a
//!   producer.
//! - [`reference`]: the independent answer — DataFusion computing a query in one process.
//! - [`kube_fake`]: a fake of the Kubernetes API server (pods, secrets) that runs pods as
//!   local processes — labelled as such: no real cluster can be installed here.
//! - [`progress`]: progress records read back from a checkpoint.
//! - [`process`]: the processes a driver spawned.
//! - [`s3`]: a real S3-compatible server on loopback and an independent reader of a bucket.
//! - [`soak`]: a long-running streaming query and its processes' memory, sampled.
//! - [`stats`]: medians and percentiles for the benchmarks.
//! - [`web`]: HTTP requests to the web UI and scripts driving a real headless browser.
//! - [`sluice_binary`]: where the built `sluice` binary is.

pub mod broker;
pub mod datagen;
pub mod kube_fake;
pub mod nexmark;
pub mod process;
pub mod progress;
pub mod reference;
pub mod s3;
pub mod soak;
pub mod stats;
pub mod table;
pub mod web;

use std::path::PathBuf;

/// The workspace root (this package's directory). Read at run time from `CARGO_MANIFEST_DIR`,
/// which cargo sets for every test, bench and example it runs: cargo reuses a compiled test
/// binary from a shared target directory for another checkout of the same workspace, so the
/// path compiled in (`env!`) may name a clone that is gone. That is only the fallback.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|p| p.join("Cargo.toml").exists())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The `sluice` binary built alongside the running test or bench (or `$SLUICE_BIN`).
pub fn sluice_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(bin);
    }
    // Test and bench executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the running executable has a path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("executable in target/<profile>/deps");
    let bin = profile_dir.join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sluice-engine` (cargo test --workspace does)",
        bin.display()
    );
    bin
}
