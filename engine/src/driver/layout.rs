//! The layout of a query's keyed state for one run: its partition count, its key groups, and
//! whether the run's first epoch redistributes state committed with another partition count
//! (see `sluice_checkpoint::state::KeyGroups`).

use sluice_checkpoint::Epoch;

use super::epoch::EpochRunner;
use super::report::EpochInput;
use crate::error::{EngineError, Result};

/// What [`EpochRunner::state_layout`] decided.
pub(super) struct StateLayout {
    pub(super) parallelism: usize,
    pub(super) key_groups: Option<u32>,
    pub(super) rescale: Option<(Epoch, u32)>,
}

impl EpochRunner<'_> {
    /// The partition count and key groups this run uses, and whether its first epoch rescales
    /// keyed state: `desired` unless the checkpoint says otherwise.
    ///
    /// The key groups are fixed by the checkpoint's first epoch. An epoch recorded but not
    /// committed is re-run with the partition count it was planned with; a checkpoint written
    /// before key groups keeps the count its state started with.
    pub(super) fn state_layout(&self, desired: usize, stateful: bool) -> Result<StateLayout> {
        let planned = self.store.planned_epochs()?;
        let last_planned = match planned.last() {
            Some(&e) => self.store.read_offsets::<EpochInput>(e)?.map(|i| (e, i)),
            None => None,
        };
        let committed = self.store.epoch_log()?.last_committed;
        let default_groups = (desired * 3 / 2).next_power_of_two().clamp(128, 32768) as u32;
        let Some((last, recorded)) = last_planned else {
            return Ok(StateLayout {
                parallelism: desired,
                key_groups: Some(default_groups),
                rescale: None,
            });
        };
        let recorded_partitions = recorded.partitions.unwrap_or(desired);
        let Some(max) = recorded.key_groups else {
            if !stateful {
                return Ok(StateLayout {
                    parallelism: desired,
                    key_groups: Some(default_groups),
                    rescale: None,
                });
            }
            if recorded_partitions != desired {
                self.notice(format!(
                    "keeping the {recorded_partitions} state partitions this query's checkpoint started with (not {desired}): it was written before key groups, so its state cannot be redistributed; start a new checkpoint to change the partition count"
                ));
            }
            return Ok(StateLayout {
                parallelism: recorded_partitions,
                key_groups: None,
                rescale: None,
            });
        };
        let pending = committed.is_none_or(|c| c < last);
        let parallelism = if pending && stateful {
            if recorded_partitions != desired {
                self.notice(format!(
                    "epoch {last} is re-run with the {recorded_partitions} partitions it was planned with (not {desired}); restart once it has committed to change the partition count"
                ));
            }
            recorded_partitions
        } else {
            desired
        };
        if stateful && parallelism > max as usize {
            return Err(EngineError::Config(format!(
                "--parallelism {parallelism} is more than the {max} key groups this query's checkpoint divides its state into (a partition holds at least one)"
            )));
        }
        let mut rescale = None;
        if let (true, Some(c)) = (stateful, committed) {
            let was = self
                .store
                .read_offsets::<EpochInput>(c)?
                .and_then(|i| i.partitions)
                .unwrap_or(parallelism);
            if was != parallelism {
                self.notice(format!(
                    "redistributing keyed state from {was} to {parallelism} partitions ({max} key groups) at epoch {}",
                    c.0 + 1
                ));
                rescale = Some((Epoch(c.0 + 1), was as u32));
            }
        }
        Ok(StateLayout {
            parallelism,
            key_groups: Some(max),
            rescale,
        })
    }
}
