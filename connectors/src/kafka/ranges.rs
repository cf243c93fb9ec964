//! Deciding an epoch's offset ranges from broker watermarks and the previous position.

use std::collections::BTreeMap;

use crate::error::{ConnectorError, Result};
use crate::options::BadRecordPolicy;
use crate::{KafkaSplit, OffsetGap, SourceEpoch, Split};

/// One partition as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// The oldest retained offset.
    pub low: i64,
    /// One past the newest offset.
    pub high: i64,
}

/// What [`plan_ranges`] decides from.
#[derive(Debug)]
pub struct RangeInputs<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Every partition with its watermarks.
    pub partitions: &'a [PartitionState],
    /// The previous epoch's position (`None` for the query's first epoch).
    pub previous: Option<&'a BTreeMap<i32, i64>>,
    /// Where each partition starts in the first epoch (from the `start` option).
    pub initial: &'a BTreeMap<i32, i64>,
    /// Most records this epoch reads across partitions.
    pub limit: Option<u64>,
    /// Read no further than this (`--trigger available-now`).
    pub until: Option<&'a BTreeMap<i32, i64>>,
    /// What to do when unread offsets are gone.
    pub on_lost: BadRecordPolicy,
}

/// Decides an epoch's offset ranges. Pure, so every case is unit-tested.
///
/// - A partition with a recorded position continues from it; a partition first seen after the
///   first epoch (added to the topic) starts at its earliest offset.
/// - A position below the partition's low watermark (deleted by retention) or above its high
///   watermark (topic truncated or recreated) is an error under `fail`; under `skip` reading
///   resumes at the low watermark and the gap is recorded.
/// - `limit` is shared across partitions in proportion to their backlog.
pub fn plan_ranges(inputs: &RangeInputs<'_>) -> Result<SourceEpoch> {
    let mut epoch = SourceEpoch::default();
    let mut starts = Vec::with_capacity(inputs.partitions.len());
    for p in inputs.partitions {
        let from = match inputs.previous {
            Some(prev) => prev.get(&p.partition).copied().unwrap_or(p.low),
            None => inputs.initial.get(&p.partition).copied().unwrap_or(p.low),
        };
        let lost = if from < p.low {
            Some(format!(
                "offsets {from}..{} were deleted by retention before the query read them",
                p.low
            ))
        } else if from > p.high {
            Some(format!(
                "the query's next offset is {from} but the partition ends at {} (was the topic truncated or recreated?)",
                p.high
            ))
        } else {
            None
        };
        let from = match lost {
            None => from,
            Some(reason) => match inputs.on_lost {
                BadRecordPolicy::Skip => {
                    epoch.gaps.push(OffsetGap {
                        topic: inputs.topic.to_string(),
                        partition: p.partition,
                        expected: from,
                        resumed_at: p.low,
                        reason,
                    });
                    p.low
                }
                _ => {
                    return Err(ConnectorError::OffsetsLost {
                        topic: inputs.topic.to_string(),
                        partition: p.partition,
                        message: format!(
                            "{reason}; set on_offsets_lost = 'skip' to continue from offset {} and record the gap",
                            p.low
                        ),
                    })
                }
            },
        };
        let mut end = p.high;
        if let Some(until) = inputs.until {
            end = end.min(until.get(&p.partition).copied().unwrap_or(from).max(from));
        }
        starts.push((p.partition, from, end.max(from)));
    }
    let backlog: u64 = starts.iter().map(|(_, f, e)| (e - f) as u64).sum();
    let takes: Vec<u64> = match inputs.limit {
        Some(limit) if backlog > limit => {
            let mut takes: Vec<u64> = starts
                .iter()
                .map(|(_, f, e)| ((e - f) as u128 * limit as u128 / backlog as u128) as u64)
                .collect();
            let mut left = limit - takes.iter().sum::<u64>();
            for (i, (_, f, e)) in starts.iter().enumerate() {
                if left == 0 {
                    break;
                }
                if takes[i] < (e - f) as u64 {
                    takes[i] += 1;
                    left -= 1;
                }
            }
            takes
        }
        _ => starts.iter().map(|(_, f, e)| (e - f) as u64).collect(),
    };
    for ((partition, from, _), take) in starts.into_iter().zip(takes) {
        let end = from + take as i64;
        if end > from {
            epoch.splits.push(Split::Kafka(KafkaSplit {
                topic: inputs.topic.to_string(),
                partition,
                start: from,
                end,
            }));
        }
        epoch.position.insert(partition, end);
    }
    epoch.available = inputs
        .partitions
        .iter()
        .map(|p| (p.partition, p.high))
        .collect();
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(i32, i64, i64)]) -> Vec<PartitionState> {
        list.iter()
            .map(|&(partition, low, high)| PartitionState {
                partition,
                low,
                high,
            })
            .collect()
    }

    fn ranges(epoch: &SourceEpoch) -> Vec<(i32, i64, i64)> {
        epoch
            .splits
            .iter()
            .map(|s| match s {
                Split::Kafka(k) => (k.partition, k.start, k.end),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn inputs<'a>(
        partitions: &'a [PartitionState],
        previous: Option<&'a BTreeMap<i32, i64>>,
        initial: &'a BTreeMap<i32, i64>,
    ) -> RangeInputs<'a> {
        RangeInputs {
            topic: "t",
            partitions,
            previous,
            initial,
            limit: None,
            until: None,
            on_lost: BadRecordPolicy::Fail,
        }
    }

    #[test]
    fn first_epoch_reads_from_the_start_and_later_ones_continue() {
        let p = parts(&[(0, 0, 10), (1, 5, 8)]);
        let initial = [(0, 0), (1, 5)].into();
        let e0 = plan_ranges(&inputs(&p, None, &initial)).unwrap();
        assert_eq!(ranges(&e0), vec![(0, 0, 10), (1, 5, 8)]);
        let p = parts(&[(0, 0, 12), (1, 5, 8), (2, 0, 3)]);
        let e1 = plan_ranges(&inputs(&p, Some(&e0.position), &initial)).unwrap();
        // Partition 1 has nothing new; partition 2 was added and starts at its earliest.
        assert_eq!(ranges(&e1), vec![(0, 10, 12), (2, 0, 3)]);
        assert_eq!(e1.position, [(0, 12), (1, 8), (2, 3)].into());
    }

    #[test]
    fn the_limit_is_shared_by_backlog_and_never_exceeded() {
        let p = parts(&[(0, 0, 900), (1, 0, 100), (2, 0, 0)]);
        let initial = BTreeMap::new();
        let mut i = inputs(&p, None, &initial);
        i.limit = Some(101);
        let e = plan_ranges(&i).unwrap();
        let total: i64 = ranges(&e).iter().map(|(_, s, e)| e - s).sum();
        assert_eq!(total, 101);
        assert_eq!(ranges(&e), vec![(0, 0, 91), (1, 0, 10)]);
    }

    #[test]
    fn available_now_stops_at_the_captured_end() {
        let p = parts(&[(0, 0, 50), (1, 0, 50)]);
        let initial = BTreeMap::new();
        let until = [(0, 30)].into();
        let mut i = inputs(&p, None, &initial);
        i.until = Some(&until);
        let e = plan_ranges(&i).unwrap();
        // Partition 1 appeared after the backlog was captured: nothing of it now.
        assert_eq!(ranges(&e), vec![(0, 0, 30)]);
    }

    #[test]
    fn lost_offsets_fail_or_are_recorded() {
        let p = parts(&[(0, 40, 50), (1, 0, 5)]);
        let previous = [(0, 20), (1, 9)].into();
        let initial = BTreeMap::new();
        let err = plan_ranges(&inputs(&p, Some(&previous), &initial)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("partition 0") && text.contains("20..40"),
            "{text}"
        );
        let mut i = inputs(&p, Some(&previous), &initial);
        i.on_lost = BadRecordPolicy::Skip;
        let e = plan_ranges(&i).unwrap();
        assert_eq!(ranges(&e), vec![(0, 40, 50), (1, 0, 5)]);
        assert_eq!(e.gaps.len(), 2);
        assert_eq!((e.gaps[0].expected, e.gaps[0].resumed_at), (20, 40));
        assert_eq!((e.gaps[1].expected, e.gaps[1].resumed_at), (9, 0));
        assert!(e.gaps[1].reason.contains("truncated or recreated"));
    }
}
