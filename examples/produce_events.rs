//! Produces JSON `events` records (the README's streaming example) — or, with `--kind bids`,
//! the out-of-order bids of `examples/hot_items.sql` — to a Kafka topic.
//!
//!   cargo run --example produce_events -- --bootstrap 127.0.0.1:9092 --topic events \
//!       --partitions 4 --count 100000 [--first 0] [--kind events|bids]
//!
//! Bid `i` is `sluice::datagen::stream_bid(1, i)`: 10 ms of event time apart, shuffled by up to
//! ±1.5 s.
//!
//! Record `i` is `{"user_id": i, "kind": "k<i%7>", "amount": <i%100+1>.5, "ts": "2026-11-0<i%3+1>T10:00:00Z"}`
//! on partition `i % partitions`, batched as ordinary producers do (`linger.ms = 5`).

fn main() {
    let mut bootstrap = "127.0.0.1:9092".to_string();
    let mut topic = "events".to_string();
    let (mut partitions, mut count, mut first) = (4u64, 100_000u64, 0u64);
    let mut kind = "events".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => bootstrap = value,
            "--topic" => topic = value,
            "--partitions" => partitions = value.parse().expect("--partitions N"),
            "--count" => count = value.parse().expect("--count N"),
            "--first" => first = value.parse().expect("--first N"),
            "--kind" if value == "events" || value == "bids" => kind = value,
            other => panic!("unknown option {other}"),
        }
    }
    let event = |i: u64| match kind.as_str() {
        "bids" => sluice::datagen::stream_bid(1, i).json(),
        _ => sluice::datagen::event_json(i),
    };
    let end = first + count;
    let record = |i: u64| {
        (
            (i % partitions) as i32,
            i.to_string().into_bytes(),
            event(i),
        )
    };
    let started = std::time::Instant::now();
    sluice::broker::Producer::connect(&bootstrap).send_all(&topic, (first..end).map(record));
    eprintln!(
        "produced {count} records to {topic} in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
