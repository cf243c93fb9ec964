//! Produces JSON `events` records (the README's streaming example) — or, with `--kind bids`,
//! the out-of-order bids of `examples/hot_items.sql` — to a Kafka topic.
//!
//!   cargo run --example produce_events -- --bootstrap 127.0.0.1:9092 --topic events \
//!       --partitions 4 --count 100000 [--first 0] [--kind events|bids] [--bad-every K]
//!
//! Record `i` is `{"user_id": i, "kind": "k<i%7>", "amount": <i%100+1>.5, "ts": "2026-11-0<i%3+1>T10:00:00Z"}`
//! on partition `i % partitions`, batched as ordinary producers do (`linger.ms = 5`). With
//! `--bad-every K`, every K-th record (`i % K == K - 1`) is a value that is not JSON, for the
//! dead-letter table. Bid `i` is `sluice::datagen::stream_bid(1, i)`: 10 ms of event time apart,
//! shuffled by up to ±1.5 s.

use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(about = "Produce the README's example records to a Kafka topic")]
struct Args {
    /// The broker's HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The topic (it must exist: `scripts/broker.sh topic NAME PARTITIONS`).
    #[arg(long, default_value = "events")]
    topic: String,
    /// Record i goes to partition i % PARTITIONS.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    partitions: u64,
    /// Records to produce.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// The first record's number (to continue an earlier run).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// What to produce.
    #[arg(long, value_enum, default_value_t = Kind::Events)]
    kind: Kind,
    /// Make every K-th record (i % K == K - 1) a value that is not JSON.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    bad_every: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// The `events` of examples/pipeline.sql.
    Events,
    /// The out-of-order bids of examples/hot_items.sql.
    Bids,
}

fn main() {
    let args = Args::parse();
    let event = |i: u64| {
        if args.bad_every.is_some_and(|k| i % k == k - 1) {
            return format!("{{\"user_id\": {i}, \"amount\": not json").into_bytes();
        }
        match args.kind {
            Kind::Bids => sluice::datagen::stream_bid(1, i).json(),
            Kind::Events => sluice::datagen::event_json(i),
        }
    };
    let record = |i: u64| {
        (
            (i % args.partitions) as i32,
            i.to_string().into_bytes(),
            event(i),
        )
    };
    let started = std::time::Instant::now();
    sluice::broker::Producer::connect(&args.bootstrap).send_all(
        &args.topic,
        (args.first..args.first + args.count).map(record),
    );
    eprintln!(
        "produced {} records to {} in {:.2}s",
        args.count,
        args.topic,
        started.elapsed().as_secs_f64()
    );
}
