//! Watermarks per source, as in Flink: each streamed table with a `WATERMARK` keeps its own —
//! the largest event time its records held, minus its declared delay — and the query runs with
//! the least of them, so a lagging stream's rows are not late merely because another stream is
//! ahead. A stream that brings no new records for the idle timeout stops holding the watermark
//! back (when every stream is idle, the greatest of their watermarks applies). The query's
//! watermark never goes back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice_checkpoint::CommitRecord;

use super::report::{EpochInput, SourceWatermark};
use crate::plan::PlannedQuery;

/// What an epoch's watermarks are computed from.
pub(super) struct Inputs<'a> {
    /// Delay per streamed table with a watermark.
    pub delays: &'a BTreeMap<String, i64>,
    /// Largest event time per table read by committed epochs.
    pub max_event: &'a BTreeMap<String, i64>,
    /// Tables this epoch reads new records of.
    pub active: &'a BTreeSet<String>,
    /// The previous epoch's per-source watermarks.
    pub previous: &'a BTreeMap<String, SourceWatermark>,
    /// The previous epoch's query watermark.
    pub previous_query: Option<i64>,
    /// This epoch's batch time.
    pub now_ms: u64,
    /// How long without new records makes a stream idle (`None`: never).
    pub idle_timeout_ms: Option<u64>,
}

/// Each source's watermark and the query's.
pub(super) fn compute(inputs: &Inputs<'_>) -> (BTreeMap<String, SourceWatermark>, Option<i64>) {
    let mut sources = BTreeMap::new();
    for (name, delay) in inputs.delays {
        let max_event_ms = inputs.max_event.get(name).copied();
        let last_active_ms = if inputs.active.contains(name) {
            inputs.now_ms
        } else {
            inputs
                .previous
                .get(name)
                .map(|p| p.last_active_ms)
                .unwrap_or(inputs.now_ms)
        };
        let idle = inputs
            .idle_timeout_ms
            .is_some_and(|t| inputs.now_ms.saturating_sub(last_active_ms) >= t);
        sources.insert(
            name.clone(),
            SourceWatermark {
                max_event_ms,
                watermark_ms: max_event_ms.map(|m| m.saturating_sub(*delay)),
                last_active_ms,
                idle,
            },
        );
    }
    let active: Vec<Option<i64>> = sources
        .values()
        .filter(|s| !s.idle)
        .map(|s| s.watermark_ms)
        .collect();
    let candidate = if active.is_empty() {
        // Every stream is idle: nothing holds the watermark back.
        sources.values().filter_map(|s| s.watermark_ms).max()
    } else {
        // A stream without a record yet holds it back like one far behind.
        active
            .into_iter()
            .collect::<Option<Vec<i64>>>()
            .and_then(|w| w.into_iter().min())
    };
    let query = match (candidate, inputs.previous_query) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    (sources, query)
}

/// The watermarks of an epoch that reads new records of the `active` tables, after the
/// epoch whose input was `previous` committed with `commit`: each streamed table's and the
/// query's.
pub(super) fn of_epoch(
    planned: &PlannedQuery,
    previous: Option<&EpochInput>,
    commit: Option<&CommitRecord>,
    active: &BTreeSet<String>,
    now_ms: u64,
    idle_timeout: Option<Duration>,
) -> (BTreeMap<String, SourceWatermark>, Option<i64>) {
    let max_event_ms = commit
        .and_then(|c| c.max_event_ms)
        .or(previous.and_then(|i| i.max_event_ms));
    let previous_watermark = previous.and_then(|i| i.watermark_ms);
    // Each streamed table with a watermark keeps its own; static tables do not count.
    let delays: BTreeMap<String, i64> = planned
        .watermark_delays
        .iter()
        .filter(|(name, _)| planned.sources.get(*name).is_some_and(|s| !s.bounded()))
        .map(|(name, delay)| (name.clone(), *delay))
        .collect();
    if delays.is_empty() {
        let wm = super::lifecycle::watermark(
            planned.watermark_delay_ms,
            max_event_ms,
            previous_watermark,
        );
        return (BTreeMap::new(), wm);
    }
    let mut max_event = commit
        .map(|c| c.max_event_by_source.clone())
        .unwrap_or_default();
    if max_event.is_empty() {
        // A checkpoint from before per-source watermarks: one maximum for all.
        if let Some(m) = max_event_ms {
            max_event = delays.keys().map(|k| (k.clone(), m)).collect();
        }
    }
    let no_previous = BTreeMap::new();
    compute(&Inputs {
        delays: &delays,
        max_event: &max_event,
        active,
        previous: previous
            .map(|p| &p.source_watermarks)
            .unwrap_or(&no_previous),
        previous_query: previous_watermark,
        now_ms,
        idle_timeout_ms: idle_timeout.map(|d| d.as_millis() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        max_event: &[(&str, i64)],
        active: &[&str],
        previous: &BTreeMap<String, SourceWatermark>,
        previous_query: Option<i64>,
        now_ms: u64,
        idle_timeout_ms: Option<u64>,
    ) -> (BTreeMap<String, SourceWatermark>, Option<i64>) {
        let delays = BTreeMap::from([("fast".to_string(), 1_000), ("slow".to_string(), 2_000)]);
        let max_event = max_event.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let active = active.iter().map(|s| s.to_string()).collect();
        compute(&Inputs {
            delays: &delays,
            max_event: &max_event,
            active: &active,
            previous,
            previous_query,
            now_ms,
            idle_timeout_ms,
        })
    }

    #[test]
    fn the_least_active_stream_sets_the_watermark_and_an_idle_one_stops_holding_it() {
        let none = BTreeMap::new();
        // Only one stream has records: the other holds the watermark back.
        let (_, wm) = run(&[("fast", 60_000)], &["fast", "slow"], &none, None, 0, None);
        assert_eq!(wm, None);
        // Both: the least of 59 s and 8 s.
        let (sources, wm) = run(
            &[("fast", 60_000), ("slow", 10_000)],
            &["fast", "slow"],
            &none,
            None,
            100,
            Some(5_000),
        );
        assert_eq!(wm, Some(8_000));
        assert_eq!(sources["fast"].watermark_ms, Some(59_000));
        // The slow stream brings nothing for 5 s: idle, the fast one's watermark applies.
        let (sources, wm) = run(
            &[("fast", 70_000), ("slow", 10_000)],
            &["fast"],
            &sources,
            wm,
            5_100,
            Some(5_000),
        );
        assert!(sources["slow"].idle && !sources["fast"].idle);
        assert_eq!(wm, Some(69_000));
        // It comes back: the watermark does not go back.
        let (sources, wm) = run(
            &[("fast", 70_000), ("slow", 12_000)],
            &["slow"],
            &sources,
            wm,
            5_200,
            Some(5_000),
        );
        assert!(!sources["slow"].idle);
        assert_eq!(wm, Some(69_000));
        // Without an idle timeout a silent stream holds it back for ever.
        let (_, wm) = run(
            &[("fast", 70_000), ("slow", 10_000)],
            &["fast"],
            &BTreeMap::new(),
            None,
            1_000_000,
            None,
        );
        assert_eq!(wm, Some(8_000));
        // Every stream idle: the greatest watermark.
        let (_, wm) = run(
            &[("fast", 70_000), ("slow", 10_000)],
            &[],
            &sources,
            None,
            100_000,
            Some(5_000),
        );
        assert_eq!(wm, Some(69_000));
    }
}
