//! Generates the sample `bids` table used by the demo and the README: deterministic rows
//! (auction, bidder, price, channel, date_time) in Parquet files with several row groups.
//!
//! Run: `cargo run --release --example generate_bids -- --rows 2000000 --out demo/data/bids`
//! (skips generation when the directory already holds the same number of rows).

use std::path::PathBuf;

use sluice::datagen::{write_bids_parquet, BidsSpec};

fn main() -> anyhow::Result<()> {
    let mut rows: u64 = 2_000_000;
    let mut out = PathBuf::from("demo/data/bids");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => {
                rows = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--rows needs a number"))?
                    .parse()?
            }
            "--out" => {
                out = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--out needs a path"))?
                    .into()
            }
            other => anyhow::bail!(
                "unknown argument {other}; usage: generate_bids [--rows N] [--out DIR]"
            ),
        }
    }
    let marker = out.join(format!(".rows-{rows}"));
    if marker.exists() {
        println!("{} already holds {rows} generated bids", out.display());
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&out);
    let files = (rows / 500_000).clamp(1, 8) as usize;
    write_bids_parquet(
        &out,
        BidsSpec {
            rows,
            files,
            auctions: 10_000,
            row_group_rows: 131_072,
            seed: 42,
        },
    )?;
    std::fs::write(&marker, b"")?;
    println!(
        "wrote {rows} bids in {files} Parquet files to {}",
        out.display()
    );
    Ok(())
}
