//! What a starting driver does next, decided from what the checkpoint store holds.
//!
//! Pure functions over observed state; no I/O, so every case is unit-tested.

use crate::Epoch;

/// What the logs of a checkpoint say, as observed at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochLog {
    /// The highest epoch with an `offsets/N` entry.
    pub last_planned: Option<Epoch>,
    /// The highest epoch with a `commits/N` entry.
    pub last_committed: Option<Epoch>,
}

/// The next step for a query, given its [`EpochLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochAction {
    /// Nothing recorded yet, or the last planned epoch committed: plan `epoch` afresh.
    PlanNew { epoch: Epoch },
    /// `epoch` has recorded offsets but no commit: run it again with exactly those offsets.
    Replay { epoch: Epoch },
}

impl EpochLog {
    /// The next action. An offsets entry without a commit is always replayed before anything new
    /// is planned, so an epoch's input never changes once recorded.
    pub fn next_action(&self) -> EpochAction {
        match (self.last_planned, self.last_committed) {
            (None, _) => EpochAction::PlanNew { epoch: Epoch(0) },
            (Some(p), Some(c)) if c >= p => EpochAction::PlanNew { epoch: p.next() },
            (Some(p), _) => EpochAction::Replay { epoch: p },
        }
    }
}

/// Whose checkpoint it is, decided when a query opens one that already has metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Written by this query (same plan fingerprint): resume it.
    Resume,
    /// Written by another query that never recorded an epoch (it failed planning, say): this
    /// query takes it over.
    Adopt,
    /// Written by another query that recorded epochs: refuse it, touching nothing.
    Refuse,
}

/// Decides [`Ownership`] from the recorded and the current plan fingerprints and whether the
/// checkpoint's query ever recorded an epoch.
pub fn ownership(recorded: &str, current: &str, recorded_any_epoch: bool) -> Ownership {
    match (recorded == current, recorded_any_epoch) {
        (true, _) => Ownership::Resume,
        (false, false) => Ownership::Adopt,
        (false, true) => Ownership::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(p: Option<u64>, c: Option<u64>) -> EpochLog {
        EpochLog {
            last_planned: p.map(Epoch),
            last_committed: c.map(Epoch),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(
            log(None, None).next_action(),
            EpochAction::PlanNew { epoch: Epoch(0) }
        );
        assert_eq!(
            log(Some(0), None).next_action(),
            EpochAction::Replay { epoch: Epoch(0) }
        );
        assert_eq!(
            log(Some(0), Some(0)).next_action(),
            EpochAction::PlanNew { epoch: Epoch(1) }
        );
        assert_eq!(
            log(Some(5), Some(4)).next_action(),
            EpochAction::Replay { epoch: Epoch(5) }
        );
    }
}
