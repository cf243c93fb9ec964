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
    /// The query is planned and installed on its executors; its epochs start.
    QueryStarted {
        /// The query's id (its checkpoint's).
        query_id: String,
        /// Whether the query is bounded (one epoch).
        bounded: bool,
        /// The trigger (`1s`, `once`, `available-now`); none for a bounded query.
        trigger: Option<String>,
        /// Partitions per scan and shuffle.
        parallelism: usize,
        /// When it started, ms since the Unix epoch.
        started_at_ms: u64,
        /// The stage DAG, as `sluice explain` shows it.
        stages: Vec<StageInfo>,
    },
    /// The executors and how they are: at every epoch's start and after every commit.
    Executors {
        /// Every executor taking part now.
        executors: Vec<ExecutorStatus>,
    },
    /// The driver starts scheduling an epoch's tasks.
    EpochStarted {
        /// The epoch.
        epoch: u64,
        /// Stages in its DAG.
        stages: usize,
        /// Executors it starts with.
        executors: usize,
    },
    /// A task attempt succeeded (the first of its task's attempts to do so).
    TaskFinished {
        /// The epoch.
        epoch: u64,
        /// Its stage.
        stage: usize,
        /// Its partition.
        partition: usize,
        /// Rows it produced.
        rows: u64,
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

/// One stage of the query's DAG.
#[derive(Debug, Clone, Serialize)]
pub struct StageInfo {
    /// Its index (as in `sluice explain` and progress records).
    pub stage: usize,
    /// Tasks per epoch.
    pub tasks: usize,
    /// What it does with its rows: `Hash { partitions: N }`, `Gather`, `Sink`, `Result`.
    pub output: String,
    /// Stages it reads.
    pub inputs: Vec<usize>,
    /// Tables it scans.
    pub tables: Vec<String>,
    /// Its physical plan, one operator per line.
    pub plan: String,
}

impl StageInfo {
    /// The stages of `planned`.
    pub fn of(planned: &crate::plan::PlannedQuery) -> Vec<StageInfo> {
        planned
            .stages
            .iter()
            .map(|stage| StageInfo {
                stage: stage.id.0,
                tasks: stage.tasks,
                output: format!("{:?}", stage.output),
                inputs: stage.inputs.iter().map(|s| s.0).collect(),
                tables: stage.tables.iter().map(|(t, _)| t.clone()).collect(),
                plan: datafusion::physical_plan::displayable(stage.plan.as_ref())
                    .indent(false)
                    .to_string(),
            })
            .collect()
    }
}

/// An executor as the driver sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutorStatus {
    /// Its id in this driver's run.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Where peers fetch its shuffle outputs.
    pub address: String,
    /// Its process id.
    pub pid: u32,
    /// Tasks it runs at once.
    pub slots: u32,
    /// Memory it may use.
    pub memory_bytes: u64,
    /// When it last reported (heartbeat or task report), ms since the Unix epoch.
    pub last_heartbeat_ms: u64,
    /// Resident set size at its last heartbeat, and its peak.
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Task attempts it finished in this run, and those that failed.
    pub tasks_run: u64,
    pub tasks_failed: u64,
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
