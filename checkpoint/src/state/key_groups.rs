//! Key groups: the unit keyed state is partitioned and moved in.
//!
//! As in Flink, every key belongs to one of a fixed number of key groups (its hash modulo the
//! maximum, recorded in the checkpoint), and a partition of a query with `P` partitions holds
//! a contiguous range of them: key group `g` is in partition `g * P / max`. Changing `P`
//! changes the ranges, never a key's group, so a partition of the new layout is restored from
//! the old partitions whose ranges overlap its own, keeping the entries of its groups
//! ([`super::StateBackend::open_rescaled`]).

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Arc, Mutex};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::remote::Remote;
use super::{db_error, incarnation, io, StateBackend, StatePartition, StatePartitionId};
use crate::error::{CheckpointError, Result};
use crate::location::Location;
use crate::Epoch;

/// Entries classified at a time when a partition is rebuilt from another layout.
const RESCALE_CHUNK: usize = 4096;

/// The key groups `start..end` one state partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyGroups {
    /// The first key group.
    pub start: u32,
    /// One past the last key group.
    pub end: u32,
}

impl KeyGroups {
    /// The range partition `p` of `partitions` holds when there are `max` key groups
    /// (`partitions <= max`; partition `p` holds every `g` with `g * partitions / max == p`).
    pub fn of_partition(p: u32, partitions: u32, max: u32) -> KeyGroups {
        let (p, n, max) = (u64::from(p), u64::from(partitions.max(1)), u64::from(max));
        let start = (p * max).div_ceil(n);
        let end = ((p + 1) * max).div_ceil(n);
        KeyGroups {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The partition of `partitions` holding key group `group` (of `max`).
    pub fn partition_of(group: u32, partitions: u32, max: u32) -> u32 {
        (u64::from(group) * u64::from(partitions) / u64::from(max.max(1))) as u32
    }

    /// Whether it holds `group`.
    pub fn contains(&self, group: u32) -> bool {
        self.start <= group && group < self.end
    }

    /// Whether it shares a key group with `other`.
    pub fn overlaps(&self, other: &KeyGroups) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Its directory name under an operator's state: `kg-S-E`.
    pub fn dir_name(&self) -> String {
        format!("kg-{}-{}", self.start, self.end)
    }
}

impl std::fmt::Display for KeyGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key groups {}..{}", self.start, self.end)
    }
}

/// How an operator's stored entries are split and merged when its partition count changes:
/// only the operator knows its key layout.
pub trait Redistribution {
    /// The key group of each entry; `None` for a partition-wide entry (a bound or an index
    /// marker) that every new partition keeps, merged with [`Redistribution::merge`].
    fn key_groups(
        &self,
        entries: &[(Vec<u8>, Vec<u8>)],
    ) -> std::result::Result<Vec<Option<u32>>, String>;

    /// The value of partition-wide entry `key` found in two old partitions.
    fn merge(&self, key: &[u8], kept: &[u8], other: &[u8]) -> Vec<u8>;
}

impl StateBackend {
    /// The instance for `id` at `epoch`, built from the snapshots of `sources`: partitions of
    /// the same operator in the layout `epoch` was committed with (another partition count).
    /// It keeps the entries of the key groups `id` holds and merges the partition-wide ones
    /// (see [`Redistribution`]). Its first snapshot is a full one, even when the epoch writes
    /// nothing, so that restoring `id` later never needs the old layout's files.
    ///
    /// An instance already open at `epoch` is reused, as [`StateBackend::open`] does.
    pub fn open_rescaled(
        &self,
        id: &StatePartitionId,
        store: &Location,
        epoch: Epoch,
        sources: &[StatePartitionId],
        how: &dyn Redistribution,
    ) -> Result<Arc<Mutex<StatePartition>>> {
        let Some(range) = id.key_groups else {
            return Err(CheckpointError::Corrupt {
                path: self.root.join(id.relative_dir()),
                message: "a state partition without key groups cannot be rescaled".into(),
            });
        };
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = partitions.get(id) {
            if let Ok(mut p) = existing.lock() {
                if p.epoch == Some(epoch) && !p.dirty {
                    p.restored = false;
                    return Ok(existing.clone());
                }
            }
            partitions.remove(id);
        }
        let part_dir = self.root.join(id.query_id.as_str()).join(id.relative_dir());
        if part_dir.exists() {
            fs::remove_dir_all(&part_dir).map_err(io("remove stale state", &part_dir))?;
        }
        let incarnation = incarnation();
        let dir = part_dir.join(&incarnation);
        fs::create_dir_all(&dir).map_err(io("create state directory", &dir))?;
        let db = self.open_db(&dir.join("db"))?;
        let mut opts = rocksdb::WriteOptions::default();
        opts.disable_wal(true);
        let mut shared: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (n, source) in sources.iter().enumerate() {
            let scratch = dir.join(format!("source-{n}"));
            let (old, _, _) = self.restore_db(source, store, epoch, &scratch)?;
            let name = Remote::of(store).child(&source.relative_dir()).name("");
            let mut entries = old.iterator(rocksdb::IteratorMode::Start);
            loop {
                let mut chunk = Vec::with_capacity(RESCALE_CHUNK);
                for item in entries.by_ref().take(RESCALE_CHUNK) {
                    let (k, v) = item.map_err(|e| db_error(&scratch, e))?;
                    chunk.push((k.into_vec(), v.into_vec()));
                }
                if chunk.is_empty() {
                    break;
                }
                let groups =
                    how.key_groups(&chunk)
                        .map_err(|message| CheckpointError::Corrupt {
                            path: name.clone(),
                            message: format!("redistributing its state by key group: {message}"),
                        })?;
                let mut batch = WriteBatch::default();
                for ((k, v), group) in chunk.into_iter().zip(groups) {
                    match group {
                        Some(g) if range.contains(g) => batch.put(k, v),
                        Some(_) => {}
                        None => match shared.get_mut(&k) {
                            Some(kept) => *kept = how.merge(&k, kept, &v),
                            None => {
                                shared.insert(k, v);
                            }
                        },
                    }
                }
                db.write_opt(batch, &opts).map_err(|e| db_error(&dir, e))?;
            }
            drop(entries);
            drop(old);
            fs::remove_dir_all(&scratch).map_err(io("remove restored state", &scratch))?;
        }
        let mut batch = WriteBatch::default();
        for (k, v) in &shared {
            batch.put(k, v);
        }
        db.write_opt(batch, &opts).map_err(|e| db_error(&dir, e))?;
        let partition = Arc::new(Mutex::new(StatePartition {
            id: id.clone(),
            dir,
            db,
            epoch: Some(epoch),
            dirty: false,
            stored: BTreeMap::new(),
            incarnation,
            log: Vec::new(),
            max_changelogs: self.config.max_changelogs,
            // No chain: the next snapshot is a full one.
            chain: None,
            restored: true,
        }));
        partitions.insert(id.clone(), partition.clone());
        Ok(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_group_once_and_agree_with_partition_of() {
        for max in [1u32, 7, 128, 1000] {
            for partitions in 1..=max.min(40) {
                let mut next = 0;
                for p in 0..partitions {
                    let r = KeyGroups::of_partition(p, partitions, max);
                    assert_eq!(r.start, next, "max {max}, {partitions} partitions, p {p}");
                    assert!(r.end > r.start, "an empty range: {r:?}");
                    for g in r.start..r.end {
                        assert_eq!(KeyGroups::partition_of(g, partitions, max), p);
                    }
                    next = r.end;
                }
                assert_eq!(next, max);
            }
        }
    }

    #[test]
    fn ranges_are_balanced() {
        let sizes: Vec<u32> = (0..3)
            .map(|p| {
                let r = KeyGroups::of_partition(p, 3, 128);
                r.end - r.start
            })
            .collect();
        assert_eq!(sizes, vec![43, 43, 42]);
        assert_eq!(KeyGroups::of_partition(1, 2, 128).dir_name(), "kg-64-128");
    }
}
