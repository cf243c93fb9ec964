//! What the UI shows, built from the driver's events (live) or a checkpoint's progress records
//! (history), and the JSON views of `/api/v1/`.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use serde_json::{json, Value};

use crate::driver::events::{Event, ExecutorStatus, StageInfo};
use crate::driver::EpochProgress;

/// Progress records kept in memory (the checkpoint keeps its own `--retain-epochs`).
pub const KEPT_EPOCHS: usize = 1000;
/// Notices kept.
const KEPT_NOTICES: usize = 100;

/// The query as the UI knows it.
#[derive(Debug, Default)]
pub struct Model {
    /// `live` (a running driver) or `history` (`sluice ui --checkpoint`).
    pub mode: &'static str,
    /// `starting`, `running`, `finished`, `failed` or `stopped`.
    pub state: String,
    pub query_id: Option<String>,
    pub bounded: Option<bool>,
    pub trigger: Option<String>,
    pub parallelism: Option<usize>,
    pub started_at_ms: Option<u64>,
    pub stages: Vec<StageInfo>,
    pub epochs: VecDeque<EpochProgress>,
    pub executors: Vec<ExecutorStatus>,
    /// Executors declared lost, with the epoch that lost them.
    pub lost: Vec<Value>,
    pub notices: VecDeque<(u64, String)>,
    /// The epoch running now, if any.
    pub running_epoch: Option<u64>,
}

impl Model {
    /// An empty model in `mode`.
    pub fn new(mode: &'static str) -> Self {
        Model {
            mode,
            state: "starting".into(),
            ..Default::default()
        }
    }

    /// Applies one driver event.
    pub fn apply(&mut self, event: &Event, now_ms: u64) {
        match event {
            Event::QueryStarted {
                query_id,
                bounded,
                trigger,
                parallelism,
                started_at_ms,
                stages,
            } => {
                self.state = "running".into();
                self.query_id = Some(query_id.clone());
                self.bounded = Some(*bounded);
                self.trigger = trigger.clone();
                self.parallelism = Some(*parallelism);
                self.started_at_ms = Some(*started_at_ms);
                self.stages = stages.clone();
            }
            Event::Executors { executors } => self.executors = executors.clone(),
            Event::EpochStarted { epoch, .. } => self.running_epoch = Some(*epoch),
            Event::StageFinished { .. }
            | Event::TaskFinished { .. }
            | Event::ConsoleRows { .. } => {}
            Event::EpochCommitted { progress, .. } => {
                self.running_epoch = None;
                self.add_epoch((**progress).clone());
            }
            Event::Notice { message } => {
                self.notices.push_back((now_ms, message.clone()));
                while self.notices.len() > KEPT_NOTICES {
                    self.notices.pop_front();
                }
            }
        }
    }

    /// Adds a committed epoch's record.
    pub fn add_epoch(&mut self, progress: EpochProgress) {
        if self.query_id.is_none() {
            self.query_id = Some(progress.query_id.to_string());
        }
        for lost in &progress.lost_executors {
            let mut v = serde_json::to_value(lost).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.insert("epoch".into(), json!(progress.epoch));
            }
            self.lost.push(v);
        }
        self.epochs.push_back(progress);
        while self.epochs.len() > KEPT_EPOCHS {
            self.epochs.pop_front();
        }
    }

    /// `GET /api/v1/query`.
    pub fn query(&self, now_ms: u64) -> Value {
        let last = self.epochs.back();
        json!({
            "mode": self.mode,
            "state": self.state,
            "query_id": self.query_id,
            "bounded": self.bounded,
            "trigger": self.trigger,
            "parallelism": self.parallelism,
            "started_at_ms": self.started_at_ms,
            "uptime_ms": self.started_at_ms.map(|s| now_ms.saturating_sub(s)),
            "executors": self.executors.len(),
            "stages": self.stages.len(),
            "epochs_committed": self.epochs.len(),
            "last_committed_epoch": last.map(|p| p.epoch),
            "running_epoch": self.running_epoch,
            "watermark_ms": last.and_then(|p| p.watermark_ms),
            "input_rows": self.epochs.iter().map(|p| p.input_rows).sum::<u64>(),
            "sink_rows": self.epochs.iter().map(|p| p.sink_rows).sum::<u64>(),
            "notices": self.notices.iter().map(|(at, m)| json!({"at_ms": at, "message": m})).collect::<Vec<_>>(),
        })
    }

    /// `GET /api/v1/epochs?since=N`: the kept records after epoch `since`, oldest first.
    pub fn epochs(&self, since: Option<u64>) -> Vec<&EpochProgress> {
        self.epochs
            .iter()
            .filter(|p| since.is_none_or(|s| p.epoch > s))
            .collect()
    }

    /// `GET /api/v1/epochs/N`.
    pub fn epoch(&self, epoch: u64) -> Option<&EpochProgress> {
        self.epochs.iter().rev().find(|p| p.epoch == epoch)
    }

    /// `GET /api/v1/stages?epoch=N`: the DAG, and each stage's tasks in epoch N (default:
    /// the last committed).
    pub fn stages(&self, epoch: Option<u64>) -> Value {
        let record = match epoch {
            Some(e) => self.epoch(e),
            None => self.epochs.back(),
        };
        let runs: BTreeMap<usize, &crate::driver::StageProgress> = record
            .map(|p| p.stages.iter().map(|s| (s.stage, s)).collect())
            .unwrap_or_default();
        let mut ids: Vec<usize> = self.stages.iter().map(|s| s.stage).collect();
        ids.extend(runs.keys());
        ids.sort_unstable();
        ids.dedup();
        let stages: Vec<Value> = ids
            .iter()
            .map(|id| {
                let info = self.stages.iter().find(|s| s.stage == *id);
                json!({
                    "stage": id,
                    "tasks": info.map(|i| i.tasks),
                    "output": info.map(|i| i.output.clone()),
                    "inputs": info.map(|i| i.inputs.clone()).unwrap_or_default(),
                    "tables": info.map(|i| i.tables.clone()).unwrap_or_default(),
                    "plan": info.map(|i| i.plan.clone()),
                    "run": runs.get(id),
                })
            })
            .collect();
        json!({ "epoch": record.map(|p| p.epoch), "stages": stages })
    }

    /// `GET /api/v1/executors`.
    pub fn executors(&self, now_ms: u64) -> Value {
        #[derive(Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            status: &'a ExecutorStatus,
            heartbeat_age_ms: u64,
        }
        let rows: Vec<Row> = self
            .executors
            .iter()
            .map(|e| Row {
                status: e,
                heartbeat_age_ms: now_ms.saturating_sub(e.last_heartbeat_ms),
            })
            .collect();
        // Dynamic allocation's latest decision, with the epoch it followed.
        let allocation = self.epochs.iter().rev().find_map(|p| {
            let a = p.allocation.as_ref()?;
            Some(
                json!({ "epoch": p.epoch, "executors": a.executors, "target": a.target,
                         "reason": a.reason, "backlog": a.backlog }),
            )
        });
        json!({ "executors": rows, "lost": self.lost, "allocation": allocation })
    }
}
