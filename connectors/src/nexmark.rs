//! The Nexmark source: the event stream of the Nexmark benchmark, generated in process.
//!
//! Events are numbered; event `n` is a person, an auction or a bid by the benchmark's fixed
//! proportions 1 : 3 : 46 (out of every 50 events), and every field of event `n` is a function
//! of `n` alone (a random generator seeded by the event id, as in the reference generator), so
//! any split of the id space produces the same events on any executor, and a replayed epoch
//! the same rows. Field generation follows the reference generator (Beam / Flink Nexmark):
//! person and auction ids counted per kind from 1000, hot sellers, hot auctions and hot bidders
//! (ratio 100), prices `round(10^(6·u)·100)` cents, categories 10–14, auctions expiring within
//! the next few seconds of event time, and `extra` padding to the average event sizes
//! (person 200, auction 500, bid 100 bytes).
//!
//! A table reads one kind (`kind = 'bid' | 'auction' | 'person'`); several tables of the same
//! stream (e.g. persons and auctions for query 8) see consistent ids. Event time advances by
//! `1000 / rate` ms per event from a fixed base time (2015-07-15, as in the reference).
//! With `events = N` the source is bounded (one epoch); with `rate` and no `events` it is
//! unbounded: each epoch reads the events whose event time has come, paced by wall time since
//! the query's first epoch (recorded in the offsets log, so a replay reads the same ids).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};
use crate::{PlanRequest, ReadContext, Source, SourceEpoch, Split, SplitReader};

/// Nexmark's event proportions: of every 50 events, 1 person, 3 auctions, 46 bids.
const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const FIRST_CATEGORY_ID: i64 = 10;
const NUM_CATEGORIES: i64 = 5;
const HOT_RATIO: u32 = 100;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
/// 2015-07-15T00:00:00Z, the reference generator's base time.
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;
/// Events per split of a bounded table.
const SPLIT_EVENTS: u64 = 250_000;
/// Rows per batch.
const BATCH_ROWS: usize = 8192;

/// Which events a Nexmark table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NexmarkKind {
    /// People registering.
    Person,
    /// Auctions opened.
    Auction,
    /// Bids placed.
    Bid,
}

/// A Nexmark table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkSpec {
    /// The table's name.
    pub table: String,
    /// Which events it holds.
    pub kind: NexmarkKind,
    /// Events (of all kinds) in the stream; `None`: unbounded.
    pub events: Option<u64>,
    /// Events per second of event time (and of wall time, when unbounded).
    pub rate: u64,
    /// Most events one epoch generates (unbounded streams).
    pub max_events_per_trigger: Option<u64>,
}

/// The columns of a Nexmark table of `kind`.
pub fn schema(kind: NexmarkKind) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(match kind {
        NexmarkKind::Person => vec![
            i("id"),
            s("name"),
            s("email_address"),
            s("credit_card"),
            s("city"),
            s("state"),
            Field::new("date_time", ts(), false),
            s("extra"),
        ],
        NexmarkKind::Auction => vec![
            i("id"),
            s("item_name"),
            s("description"),
            i("initial_bid"),
            i("reserve"),
            Field::new("date_time", ts(), false),
            Field::new("expires", ts(), false),
            i("seller"),
            i("category"),
            s("extra"),
        ],
        NexmarkKind::Bid => vec![
            i("auction"),
            i("bidder"),
            i("price"),
            s("channel"),
            s("url"),
            Field::new("date_time", ts(), false),
            s("extra"),
        ],
    }))
}

/// What kind event `n` is.
pub fn kind_of(n: u64) -> NexmarkKind {
    let offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        NexmarkKind::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        NexmarkKind::Auction
    } else {
        NexmarkKind::Bid
    }
}

/// The 0-based id of the last person created at or before event `n`.
fn last_person(n: u64) -> i64 {
    // The reference's `epoch * PERSON_PROPORTION + min(offset, PERSON_PROPORTION - 1)`, with
    // one person per 50 events the offset term is always 0.
    let epoch = n / TOTAL_PROPORTION;
    (epoch * PERSON_PROPORTION + PERSON_PROPORTION - 1) as i64
}

/// The 0-based id of the last auction created at or before event `n`.
fn last_auction(n: u64) -> i64 {
    let epoch = (n / TOTAL_PROPORTION) as i64;
    let offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        (epoch - 1) * AUCTION_PROPORTION as i64 + AUCTION_PROPORTION as i64 - 1
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION as i64 + AUCTION_PROPORTION as i64 - 1
    } else {
        epoch * AUCTION_PROPORTION as i64 + (offset - PERSON_PROPORTION) as i64
    }
}

/// A person id among the recently active ones.
fn next_person(rng: &mut StdRng, n: u64) -> i64 {
    let last = last_person(n).max(0);
    let active = NUM_ACTIVE_PEOPLE.min(last + 1);
    last + 1 - active + rng.random_range(0..active.max(1))
}

/// An auction id among those in flight.
fn next_auction(rng: &mut StdRng, n: u64) -> i64 {
    let last = last_auction(n).max(0);
    let min = (last - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.random_range(0..=(last - min))
}

fn next_price(rng: &mut StdRng) -> i64 {
    (10f64.powf(rng.random::<f64>() * 6.0) * 100.0).round() as i64
}

fn next_string(rng: &mut StdRng, max_len: usize) -> String {
    let len = rng.random_range(3..=max_len.max(3));
    (0..len)
        .map(|i| {
            if i > 0 && rng.random_range(0..13) == 0 {
                ' '
            } else {
                char::from(b'a' + rng.random_range(0..26u8))
            }
        })
        .collect()
}

fn pad(rng: &mut StdRng, current: usize, target: usize) -> String {
    let want = target.saturating_sub(current);
    let mut s = String::with_capacity(want);
    while s.len() < want {
        s.push(char::from(b'a' + rng.random_range(0..26u8)));
    }
    s
}

const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const HOT_CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: &[&str] = &[
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];

/// Builds the rows of one kind for a range of event ids.
struct Columns {
    kind: NexmarkKind,
    ints: Vec<Int64Builder>,
    strings: Vec<StringBuilder>,
    times: Vec<TimestampMillisecondBuilder>,
    rows: usize,
}

impl Columns {
    fn new(kind: NexmarkKind) -> Self {
        let (ints, strings, times) = match kind {
            NexmarkKind::Person => (1, 6, 1),
            NexmarkKind::Auction => (5, 3, 2),
            NexmarkKind::Bid => (3, 3, 1),
        };
        Self {
            kind,
            ints: (0..ints)
                .map(|_| Int64Builder::with_capacity(BATCH_ROWS))
                .collect(),
            strings: (0..strings).map(|_| StringBuilder::new()).collect(),
            times: (0..times)
                .map(|_| TimestampMillisecondBuilder::with_capacity(BATCH_ROWS))
                .collect(),
            rows: 0,
        }
    }

    /// Appends event `n` (of this builder's kind) at event time `t`.
    fn push(&mut self, n: u64, t: i64) {
        let mut rng = StdRng::seed_from_u64(n);
        match self.kind {
            NexmarkKind::Person => {
                let id = last_person(n) + FIRST_PERSON_ID;
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
                    LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
                );
                let email = format!(
                    "{}@{}.com",
                    next_string(&mut rng, 7),
                    next_string(&mut rng, 5)
                );
                let card = (0..4)
                    .map(|_| format!("{:04}", rng.random_range(0..10_000)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let city = US_CITIES[rng.random_range(0..US_CITIES.len())];
                let state = US_STATES[rng.random_range(0..US_STATES.len())];
                let size = 8 + name.len() + email.len() + card.len() + city.len() + state.len() + 8;
                let extra = pad(&mut rng, size, 200);
                self.ints[0].append_value(id);
                for (b, v) in self.strings.iter_mut().zip([
                    name.as_str(),
                    email.as_str(),
                    card.as_str(),
                    city,
                    state,
                    extra.as_str(),
                ]) {
                    b.append_value(v);
                }
                self.times[0].append_value(t);
            }
            NexmarkKind::Auction => {
                let id = last_auction(n) + FIRST_AUCTION_ID;
                let seller = if rng.random_range(0..HOT_RATIO) > 0 {
                    (last_person(n) / HOT_RATIO as i64) * HOT_RATIO as i64
                } else {
                    next_person(&mut rng, n)
                } + FIRST_PERSON_ID;
                let category = FIRST_CATEGORY_ID + rng.random_range(0..NUM_CATEGORIES);
                let initial_bid = next_price(&mut rng);
                let reserve = initial_bid + next_price(&mut rng);
                let expires = t + rng.random_range(1_000..20_000);
                let item = next_string(&mut rng, 20);
                let description = next_string(&mut rng, 100);
                let extra = pad(&mut rng, item.len() + description.len() + 48, 500);
                for (b, v) in self
                    .ints
                    .iter_mut()
                    .zip([id, initial_bid, reserve, seller, category])
                {
                    b.append_value(v);
                }
                for (b, v) in self.strings.iter_mut().zip([item, description, extra]) {
                    b.append_value(v);
                }
                self.times[0].append_value(t);
                self.times[1].append_value(expires);
            }
            NexmarkKind::Bid => {
                let auction = if rng.random_range(0..HOT_RATIO) > 0 {
                    (last_auction(n).max(0) / HOT_RATIO as i64) * HOT_RATIO as i64
                } else {
                    next_auction(&mut rng, n)
                } + FIRST_AUCTION_ID;
                let bidder = if rng.random_range(0..HOT_RATIO) > 0 {
                    (last_person(n) / HOT_RATIO as i64) * HOT_RATIO as i64 + 1
                } else {
                    next_person(&mut rng, n)
                } + FIRST_PERSON_ID;
                let price = next_price(&mut rng);
                let (channel, url) = if rng.random_range(0..HOT_RATIO) > 0 {
                    let i = rng.random_range(0..HOT_CHANNELS.len());
                    (HOT_CHANNELS[i].to_string(), HOT_URLS[i].to_string())
                } else {
                    let c = rng.random_range(0..10_000);
                    (
                        format!("channel-{c}"),
                        format!(
                            "https://www.nexmark.com/{}/item.htm?query=1&channel_id={c}",
                            next_string(&mut rng, 5)
                        ),
                    )
                };
                let extra = pad(&mut rng, channel.len() + url.len() + 32, 100);
                for (b, v) in self.ints.iter_mut().zip([auction, bidder, price]) {
                    b.append_value(v);
                }
                for (b, v) in self.strings.iter_mut().zip([channel, url, extra]) {
                    b.append_value(v);
                }
                self.times[0].append_value(t);
            }
        }
        self.rows += 1;
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut ints = self
            .ints
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut strings = self
            .strings
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut times = self
            .times
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next = |c: char| -> ArrayRef {
            match c {
                'i' => ints.next(),
                's' => strings.next(),
                _ => times.next(),
            }
            .expect("column layouts match")
        };
        let layout = match self.kind {
            NexmarkKind::Person => "isssssts",
            NexmarkKind::Auction => "issiittiis",
            NexmarkKind::Bid => "iiissts",
        };
        self.rows = 0;
        layout.chars().map(&mut next).collect()
    }
}

/// Event time of event `n` at `rate` events per second.
fn event_time(n: u64, rate: u64, base_ms: i64) -> i64 {
    base_ms + (n as i128 * 1000 / rate.max(1) as i128) as i64
}

/// A Nexmark table as a source.
#[derive(Debug)]
pub struct NexmarkSource {
    spec: NexmarkSpec,
    schema: SchemaRef,
    /// When an unbounded stream started, until its first epoch records it.
    started_ms: std::sync::Mutex<Option<i64>>,
}

impl NexmarkSource {
    /// The source for `spec`.
    pub fn new(spec: NexmarkSpec) -> Self {
        let schema = schema(spec.kind);
        Self {
            spec,
            schema,
            started_ms: std::sync::Mutex::new(None),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn splits(from: u64, to: u64, base_ms: i64) -> Vec<Split> {
    (from..to)
        .step_by(SPLIT_EVENTS as usize)
        .map(|start| {
            Split::Generated(crate::GeneratedSplit {
                from: start,
                to: (start + SPLIT_EVENTS).min(to),
                base_ms,
            })
        })
        .collect()
}

impl Source for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn bounded(&self) -> bool {
        self.spec.events.is_some()
    }

    fn plan_epoch(&self, request: &PlanRequest<'_>) -> Result<SourceEpoch> {
        if let Some(events) = self.spec.events {
            if request.previous.is_some() && !request.rescan {
                return Ok(SourceEpoch::default());
            }
            return Ok(SourceEpoch {
                splits: splits(0, events, BASE_TIME_MS),
                ..Default::default()
            });
        }
        // Unbounded: position 0 = next event id, 1 = wall time of the first epoch, which is
        // also the event time of event 0.
        let (next, start_ms) = match request.previous {
            Some(p) => (
                p.position.get(&0).copied().unwrap_or(0).max(0) as u64,
                p.position.get(&1).copied().unwrap_or_else(now_ms),
            ),
            None => {
                // The stream starts when it is first planned, whether or not an event is due.
                let mut started = self.started_ms.lock().unwrap_or_else(|p| p.into_inner());
                (0, *started.get_or_insert_with(now_ms))
            }
        };
        let due = ((now_ms() - start_ms).max(0) as u128 * self.spec.rate as u128 / 1000) as u64;
        let mut end = due.max(next);
        if request.respect_limit {
            if let Some(limit) = self.spec.max_events_per_trigger {
                end = end.min(next + limit);
            }
        }
        if let Some(until) = request.until.and_then(|u| u.get(&0)) {
            end = end.min((*until).max(next as i64) as u64);
        }
        Ok(SourceEpoch {
            splits: splits(next, end, start_ms),
            position: BTreeMap::from([(0, end as i64), (1, start_ms)]),
            ..Default::default()
        })
    }

    fn available_end(&self) -> Result<Option<BTreeMap<i32, i64>>> {
        Ok(None)
    }

    fn open(
        &self,
        split: &Split,
        projection: Option<&[usize]>,
        _ctx: &ReadContext,
    ) -> Result<Box<dyn SplitReader>> {
        let Split::Generated(split) = split else {
            return Err(ConnectorError::InvalidOptions {
                table: self.spec.table.clone(),
                message: format!("a nexmark source was handed another source's split: {split:?}"),
            });
        };
        Ok(Box::new(NexmarkReader {
            kind: self.spec.kind,
            rate: self.spec.rate,
            next: split.from,
            to: split.to,
            base_ms: split.base_ms,
            columns: Columns::new(self.spec.kind),
            schema: self.schema.clone(),
            projection: projection.map(<[usize]>::to_vec),
        }))
    }
}

struct NexmarkReader {
    kind: NexmarkKind,
    rate: u64,
    next: u64,
    to: u64,
    base_ms: i64,
    columns: Columns,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
}

impl SplitReader for NexmarkReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while self.next < self.to && self.columns.rows < BATCH_ROWS {
            let n = self.next;
            self.next += 1;
            if kind_of(n) == self.kind {
                self.columns.push(n, event_time(n, self.rate, self.base_ms));
            }
        }
        if self.columns.rows == 0 {
            return Ok(None);
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), self.columns.finish()).map_err(|e| {
                ConnectorError::InvalidOptions {
                    table: "nexmark".into(),
                    message: e.to_string(),
                }
            })?;
        Ok(Some(match &self.projection {
            Some(p) => batch
                .project(p)
                .map_err(|e| ConnectorError::InvalidOptions {
                    table: "nexmark".into(),
                    message: e.to_string(),
                })?,
            None => batch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_and_ids_follow_the_benchmark() {
        let mut counts = [0u64; 3];
        for n in 0..5000 {
            counts[kind_of(n) as usize] += 1;
        }
        assert_eq!(counts, [100, 300, 4600]);
        // Person and auction ids count each kind from 0 without gaps.
        let persons: Vec<i64> = (0..200)
            .filter(|&n| kind_of(n) == NexmarkKind::Person)
            .map(last_person)
            .collect();
        assert_eq!(persons, (0..4).collect::<Vec<_>>());
        let auctions: Vec<i64> = (0..100)
            .filter(|&n| kind_of(n) == NexmarkKind::Auction)
            .map(last_auction)
            .collect();
        assert_eq!(auctions, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn every_kind_generates_rows_of_its_schema() {
        let ctx = ReadContext {
            query_id: sluice_checkpoint::QueryId::new("q").unwrap(),
            epoch: sluice_checkpoint::Epoch(0),
        };
        for (kind, rows) in [
            (NexmarkKind::Person, 100),
            (NexmarkKind::Auction, 300),
            (NexmarkKind::Bid, 4600),
        ] {
            let source = NexmarkSource::new(NexmarkSpec {
                table: "t".into(),
                kind,
                events: Some(5000),
                rate: 1000,
                max_events_per_trigger: None,
            });
            let plan = source.plan_epoch(&PlanRequest::default()).unwrap();
            let mut reader = source.open(&plan.splits[0], Some(&[0, 2]), &ctx).unwrap();
            let batch = reader.next_batch().unwrap().unwrap();
            assert_eq!(batch.num_rows(), rows, "{kind:?}");
            assert_eq!(batch.num_columns(), 2);
            assert_eq!(
                batch.schema().field(0).name(),
                source.schema().field(0).name()
            );
        }
    }

    #[test]
    fn events_are_a_function_of_their_id() {
        let read = |from, to| {
            let source = NexmarkSource::new(NexmarkSpec {
                table: "bid".into(),
                kind: NexmarkKind::Bid,
                events: Some(10_000),
                rate: 1000,
                max_events_per_trigger: None,
            });
            let split = Split::Generated(crate::GeneratedSplit {
                from,
                to,
                base_ms: BASE_TIME_MS,
            });
            let ctx = ReadContext {
                query_id: sluice_checkpoint::QueryId::new("q").unwrap(),
                epoch: sluice_checkpoint::Epoch(0),
            };
            let mut reader = source.open(&split, None, &ctx).unwrap();
            let mut batches = Vec::new();
            while let Some(b) = reader.next_batch().unwrap() {
                batches.push(b);
            }
            arrow::compute::concat_batches(&source.schema(), &batches).unwrap()
        };
        let whole = read(0, 10_000);
        let parts = [read(0, 3_333), read(3_333, 10_000)];
        let joined = arrow::compute::concat_batches(&whole.schema(), &parts).unwrap();
        assert_eq!(whole, joined);
        assert_eq!(whole.num_rows(), 9_200);
        // Bids name auctions and bidders that exist by then.
        let auctions = whole
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert!(auctions
            .values()
            .iter()
            .all(|&a| (FIRST_AUCTION_ID..FIRST_AUCTION_ID + 600).contains(&a)));
    }
}
