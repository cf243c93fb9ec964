//! The driver's background thread for one Kafka source.
//!
//! It keeps the topic's partition list fresh (partition discovery, every
//! [`PARTITION_DISCOVERY_INTERVAL`]) and, when asked, fetches the latest offsets ahead of time:
//! when the next epoch will start as soon as the current one commits, the driver asks for them
//! as the current epoch's tasks finish, so the ListOffsets round trip overlaps the commit
//! instead of adding to the next epoch. An answer older than [`PREFETCH_MAX_AGE`] is never
//! used; planning then asks the broker itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::Offset;

use super::{list_offsets, topic_partitions, METADATA_TIMEOUT};
use crate::options::KafkaSourceSpec;

/// How often the topic's metadata is asked for in the background, to find partitions added to
/// it: a partition added to the topic is read from the first trigger after the next refresh.
pub const PARTITION_DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// The oldest prefetched latest offsets an epoch is planned from. Records appended to the
/// topic after the prefetch are read by the following epoch.
pub const PREFETCH_MAX_AGE: Duration = Duration::from_millis(20);

/// Shared between the source and its thread.
pub(super) struct Background {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// The newest metadata answer: the topic's partitions, or why it failed.
    partitions: Result<Vec<i32>, String>,
    prefetch: Option<Prefetch>,
    stop: bool,
}

struct Prefetch {
    requested: Instant,
    /// `None` while in flight; `Some(None)` when the request failed (planning then asks again
    /// and reports the error itself).
    answer: Option<Option<BTreeMap<i32, i64>>>,
    started: bool,
}

impl Background {
    /// Starts the thread with the partitions just read from the broker.
    pub(super) fn start(
        consumer: Arc<BaseConsumer>,
        spec: KafkaSourceSpec,
        partitions: Vec<i32>,
    ) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Self {
            state: Mutex::new(State {
                partitions: Ok(partitions),
                prefetch: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("kafka-metadata".into())
            .spawn(move || thread.run(&consumer, &spec))?;
        Ok(shared)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, consumer: &BaseConsumer, spec: &KafkaSourceSpec) {
        let mut next_discovery = Instant::now() + PARTITION_DISCOVERY_INTERVAL;
        let mut state = self.lock();
        loop {
            if state.stop {
                return;
            }
            if let Some(p) = state.prefetch.as_mut().filter(|p| !p.started) {
                p.started = true;
                let requested = p.requested;
                let partitions = state.partitions.clone();
                drop(state);
                let answer = partitions
                    .ok()
                    .and_then(|parts| list_offsets(consumer, spec, &parts, Offset::End).ok());
                state = self.lock();
                if let Some(p) = state.prefetch.as_mut().filter(|p| p.requested == requested) {
                    p.answer = Some(answer);
                }
                self.wake.notify_all();
                continue;
            }
            let now = Instant::now();
            if now >= next_discovery {
                drop(state);
                let found = topic_partitions(consumer, spec);
                state = self.lock();
                state.partitions = found;
                next_discovery = Instant::now() + PARTITION_DISCOVERY_INTERVAL;
                continue;
            }
            state = self
                .wake
                .wait_timeout(state, next_discovery - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The topic's partitions as of the newest refresh.
    pub(super) fn partitions(&self) -> Result<Vec<i32>, String> {
        self.lock().partitions.clone()
    }

    /// Starts fetching the latest offsets now, for the next [`Background::take_latest`].
    pub(super) fn request_latest(&self) {
        self.lock().prefetch = Some(Prefetch {
            requested: Instant::now(),
            answer: None,
            started: false,
        });
        self.wake.notify_all();
    }

    /// The latest offsets fetched ahead of time, waiting for a request in flight; `None` when
    /// nothing was requested within [`PREFETCH_MAX_AGE`] or the request failed.
    pub(super) fn take_latest(&self) -> Option<BTreeMap<i32, i64>> {
        let mut state = self.lock();
        if state
            .prefetch
            .as_ref()
            .is_none_or(|p| p.requested.elapsed() > PREFETCH_MAX_AGE)
        {
            state.prefetch = None;
            return None;
        }
        let deadline = Instant::now() + METADATA_TIMEOUT;
        while state.prefetch.as_ref().is_some_and(|p| p.answer.is_none()) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.prefetch.take().and_then(|p| p.answer).flatten()
    }

    /// Ends the thread (it holds its own client; nothing else to release).
    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }
}
