//! How task attempts ended, as progress records and errors tell it.

use serde::{Deserialize, Serialize};

/// How one attempt ended (or that it is still running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum AttemptOutcome {
    /// Still running.
    Running,
    /// Finished; its output is the task's.
    Succeeded,
    /// Finished after another attempt of the task had already won; output discarded.
    Superseded,
    /// Failed with this error.
    Failed(String),
    /// Could not fetch an input; the input is regenerated and the task runs again.
    FetchFailed(String),
    /// Its executor was lost while it ran.
    ExecutorLost,
    /// Succeeded, but its output was on an executor that was lost before every consumer had
    /// read it, so the task ran again.
    OutputLost,
}

impl AttemptOutcome {
    /// Its name, as progress records and metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Superseded => "superseded",
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::FetchFailed(_) => "fetch_failed",
            AttemptOutcome::ExecutorLost => "executor_lost",
            AttemptOutcome::OutputLost => "output_lost",
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt.
    pub attempt: u64,
    /// Where it ran.
    pub executor: u32,
    /// Whether it was a speculative copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub speculative: bool,
    /// How it ended.
    pub outcome: AttemptOutcome,
}
