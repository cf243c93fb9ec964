//! The one way the driver tells its user what happens while a job runs: it reports [`Event`]s
//! to a [`Reporter`]. The library never prints; `sluice`'s `main.rs` renders events on the
//! terminal, and a test or an embedding program can collect them instead.

use serde::Serialize;

use super::report::EpochProgress;

/// Something the user should see while a job runs. `sluice run --events FILE` writes each as
/// one JSON object tagged by `"event"` (the variant's snake_case name).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The driver starts scheduling an epoch's tasks.
    EpochStarted {
        /// The epoch.
        epoch: u64,
        /// Stages in its DAG.
        stages: usize,
        /// Executors it starts with.
        executors: usize,
    },
    /// Every task of a stage has finished (again, after outputs lost with an executor were
    /// regenerated).
    StageFinished {
        /// The epoch.
        epoch: u64,
        /// The stage (its index in the DAG; the progress record's `stages` use the same).
        stage: usize,
        /// Its tasks.
        tasks: usize,
    },
    /// An epoch committed: its progress record (also in `progress/N` of the checkpoint).
    EpochCommitted {
        /// The record.
        progress: Box<EpochProgress>,
        /// The query is bounded (its one epoch's summary is the job report).
        bounded: bool,
    },
    /// A streaming query with the console sink produced this epoch's rows (rendered).
    ConsoleRows {
        /// The epoch.
        epoch: u64,
        /// The rendered table.
        table: String,
    },
    /// A recovery step or a decision the user should know about: an executor lost and the
    /// tasks re-run, an epoch retried, planning retried, the state partitions kept, a stop
    /// requested.
    Notice {
        /// What happened, in a sentence.
        message: String,
    },
}

impl Event {
    /// A [`Event::Notice`].
    pub fn notice(message: impl Into<String>) -> Self {
        Event::Notice {
            message: message.into(),
        }
    }
}

/// Receives the driver's [`Event`]s, in order, from the driver's task.
pub trait Reporter: Send + Sync {
    /// One event; must not block for long (epochs wait for it).
    fn report(&self, event: Event);
}

/// Drops every event (a library user that only wants the [`super::JobReport`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

/// Collects events in memory, for tests and embedding programs.
#[derive(Debug, Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn report(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}
