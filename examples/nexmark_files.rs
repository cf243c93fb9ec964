//! Writes the Nexmark stream that `connector = 'nexmark'` generates as JSON-lines files, one
//! directory per kind (`person/`, `auction/`, `bid/`), so that an engine without Sluice's
//! generator — Flink's filesystem source, DuckDB — reads exactly the events a Sluice job does
//! (see `sluice::datagen::write_nexmark_json`).
//!
//! Run: `cargo run --release --example nexmark_files -- --events 10000000 --out DIR
//! [--rate 10000] [--file-events 1000000]`

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Write the Nexmark stream as JSON-lines files, one directory per kind")]
struct Args {
    /// Events in the stream (all kinds: 2 % persons, 6 % auctions, 92 % bids).
    #[arg(long)]
    events: u64,
    /// The directory to write `person/`, `auction/` and `bid/` into (emptied first).
    #[arg(long)]
    out: PathBuf,
    /// Events per second of event time, as the source's `rate` option.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Events of the stream (all kinds) per file.
    #[arg(long, default_value_t = 1_000_000)]
    file_events: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    for (kind, rows) in
        sluice::datagen::write_nexmark_json(&args.out, args.events, args.rate, args.file_events)?
    {
        println!("{kind}: {rows} events in {}", args.out.join(kind).display());
    }
    Ok(())
}
