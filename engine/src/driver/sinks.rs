//! Committing an epoch's output: one table, or every table of a statement set, all or none.
//!
//! One table commits as its connector does (`sinks/TABLE/N` recorded, then published). A
//! statement set records each table's publication first (publishing nothing), then writes
//! `sinks/.statement-set/N` naming the tables recorded — the one write that decides the epoch's
//! output — and only then publishes them. A crash before that write re-runs the epoch (its
//! per-table records are stale and are overwritten); a crash after it finishes every recorded
//! publication without running anything. Either every table receives the epoch or none does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_checkpoint::{CheckpointStore, Epoch, QueryId};
use sluice_connectors::{CommitSummary, Committer, Recorded, WriterReceipt};

use crate::error::{EngineError, Result};
use crate::plan::PlannedQuery;
use crate::protocol::StageId;

/// The checkpoint name of a statement set's commit record (`sinks/.statement-set/N`): a table
/// name cannot start with a dot unless quoted.
pub(super) const SET_RECORD: &str = ".statement-set";

/// A statement set's commit record: the tables whose publication the epoch recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SetRecord {
    tables: Vec<String>,
}

struct Member {
    table: String,
    stage: StageId,
    committer: Arc<dyn Committer>,
}

/// What an epoch's commit delivered, in all and per table.
#[derive(Debug, Clone, Default)]
pub(super) struct Delivered {
    pub total: CommitSummary,
    pub by_table: BTreeMap<String, CommitSummary>,
}

impl Delivered {
    fn add(&mut self, table: &str, s: CommitSummary) {
        self.total.files += s.files;
        self.total.rows += s.rows;
        self.total.bytes += s.bytes;
        self.by_table.insert(table.to_string(), s);
    }
}

/// The committers of a query's tables.
pub(super) struct SinkSet {
    members: Vec<Member>,
}

impl SinkSet {
    /// The committers of `planned`'s tables; `None` when the driver prints the query's rows
    /// instead (a console sink commits nothing).
    pub fn new(planned: &PlannedQuery) -> Result<Option<SinkSet>> {
        let mut members = Vec::new();
        for sink in &planned.sinks {
            let Some(committer) = sink.spec.committer()? else {
                return Ok(None);
            };
            members.push(Member {
                table: sink.table.clone().unwrap_or_default(),
                stage: sink.stage,
                committer,
            });
        }
        Ok(Some(SinkSet { members }))
    }

    #[cfg(test)]
    fn of(members: Vec<(&str, StageId, Arc<dyn Committer>)>) -> SinkSet {
        SinkSet {
            members: members
                .into_iter()
                .map(|(table, stage, committer)| Member {
                    table: table.to_string(),
                    stage,
                    committer,
                })
                .collect(),
        }
    }

    fn single(&self) -> Option<&Member> {
        match self.members.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Publishes what each sink stage's tasks staged (`receipts` of a stage) and records it.
    pub fn commit(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        receipts: impl Fn(StageId) -> Vec<WriterReceipt>,
    ) -> Result<Delivered> {
        let mut delivered = Delivered::default();
        if let Some(one) = self.single() {
            let summary = one.committer.commit(store, epoch, receipts(one.stage))?;
            delivered.add(&one.table, summary);
            return Ok(delivered);
        }
        let mut recorded = Vec::new();
        for m in &self.members {
            match m.committer.record(store, epoch, receipts(m.stage))? {
                Recorded::Publish => recorded.push(m.table.clone()),
                Recorded::Done(summary) => delivered.add(&m.table, summary),
            }
        }
        if recorded.is_empty() {
            return Ok(delivered);
        }
        store.write_sink_record(SET_RECORD, epoch, &SetRecord { tables: recorded })?;
        self.finish_recorded_into(store, epoch, &mut delivered)?;
        Ok(delivered)
    }

    /// Whether `epoch`'s publication was recorded (it may be unfinished). Reads only.
    pub fn publish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<bool> {
        Ok(match self.single() {
            Some(one) => one.committer.publish_recorded(store, epoch)?,
            None => store
                .read_sink_record::<SetRecord>(SET_RECORD, epoch)?
                .is_some(),
        })
    }

    /// Completes `epoch`'s recorded publication (idempotent).
    pub fn finish_recorded(&self, store: &CheckpointStore, epoch: Epoch) -> Result<Delivered> {
        let mut delivered = Delivered::default();
        match self.single() {
            Some(one) => {
                let summary = one.committer.finish_recorded(store, epoch)?;
                delivered.add(&one.table, summary);
            }
            None => self.finish_recorded_into(store, epoch, &mut delivered)?,
        }
        Ok(delivered)
    }

    fn finish_recorded_into(
        &self,
        store: &CheckpointStore,
        epoch: Epoch,
        delivered: &mut Delivered,
    ) -> Result<()> {
        let record = store
            .read_sink_record::<SetRecord>(SET_RECORD, epoch)?
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "no publication of epoch {epoch} is recorded for the statement set"
                ))
            })?;
        for table in &record.tables {
            let member = self.members.iter().find(|m| &m.table == table).ok_or_else(|| {
                EngineError::Internal(format!(
                    "epoch {epoch} recorded a publication to table '{table}', which this job does not write (did the job change?)"
                ))
            })?;
            let summary = member.committer.finish_recorded(store, epoch)?;
            delivered.add(table, summary);
        }
        Ok(())
    }

    /// Discards everything staged for `epoch` (after a failed epoch).
    pub fn abort(&self, query_id: &QueryId, epoch: Epoch) {
        for m in &self.members {
            m.committer.abort(query_id, epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_connectors::parquet_sink::ParquetSink;
    use sluice_connectors::{ParquetSinkSpec, Sink, WriterContext};
    use std::path::Path;

    fn parquet_files(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir() && !name.starts_with('.') {
                    found.extend(parquet_files(&e.path()));
                } else if name.ends_with(".parquet") {
                    found.push(name);
                }
            }
        }
        found.sort();
        found
    }

    /// Two Parquet tables, and a writer staging `rows` rows into one of them.
    struct Tables {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        store: CheckpointStore,
        sinks: Vec<ParquetSink>,
        query: QueryId,
    }

    impl Tables {
        fn new() -> Tables {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let query = QueryId::new("query-statement-set").unwrap();
            let store = CheckpointStore::open_or_create(root.join("ckpt"), "fp", &query).unwrap();
            let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
            let sinks = ["a", "b"]
                .iter()
                .map(|t| {
                    let spec = ParquetSinkSpec {
                        table: t.to_string(),
                        path: root.join(t).to_string_lossy().into_owned(),
                        partition_by: Vec::new(),
                        target_file_bytes: 1 << 30,
                        storage: Vec::new(),
                    };
                    ParquetSink::new(spec, schema.clone()).unwrap()
                })
                .collect();
            Tables {
                _dir: dir,
                root,
                store,
                sinks,
                query,
            }
        }

        fn set(&self) -> SinkSet {
            SinkSet::of(vec![
                ("a", StageId(1), Arc::new(self.sinks[0].committer())),
                ("b", StageId(3), Arc::new(self.sinks[1].committer())),
            ])
        }

        fn stage(&self, table: usize, epoch: u64, attempt: &str, rows: i64) -> WriterReceipt {
            let sink = &self.sinks[table];
            let ctx = WriterContext {
                query_id: self.query.clone(),
                epoch: Epoch(epoch),
                task: 0,
                attempt: attempt.into(),
            };
            let mut w = sink.open_writer(&ctx).unwrap();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])),
                vec![Arc::new(Int64Array::from_iter_values(0..rows))],
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap()
        }

        fn files(&self, table: &str) -> Vec<String> {
            parquet_files(&self.root.join(table))
        }
    }

    #[test]
    fn a_statement_set_publishes_every_table_or_none() {
        let t = Tables::new();
        let set = t.set();
        // A crash after the tables' records, before the set's: nothing is published, the
        // epoch is not "recorded", and its re-run replaces the stale records.
        let a = t.stage(0, 0, "a1", 3);
        let b = t.stage(1, 0, "a1", 5);
        t.sinks[0]
            .committer()
            .record(&t.store, Epoch(0), vec![a])
            .unwrap();
        t.sinks[1]
            .committer()
            .record(&t.store, Epoch(0), vec![b])
            .unwrap();
        assert!(!set.publish_recorded(&t.store, Epoch(0)).unwrap());
        assert!(t.files("a").is_empty() && t.files("b").is_empty());
        let a = t.stage(0, 0, "a2", 4);
        let b = t.stage(1, 0, "a2", 6);
        let receipts = |stage: StageId| match stage.0 {
            1 => vec![a.clone()],
            3 => vec![b.clone()],
            _ => Vec::new(),
        };
        let done = set.commit(&t.store, Epoch(0), receipts).unwrap();
        assert_eq!(done.total.rows, 10);
        assert_eq!(done.by_table["a"].rows, 4);
        assert_eq!(done.by_table["b"].rows, 6);
        assert_eq!(t.files("a").len(), 1, "only the re-run's file");
        assert_eq!(t.files("b").len(), 1);
        assert!(set.publish_recorded(&t.store, Epoch(0)).unwrap());

        // A crash after the set's record, before publishing: the restarted driver finishes
        // every table's publish without running anything.
        let a = t.stage(0, 1, "a1", 7);
        let b = t.stage(1, 1, "a1", 8);
        t.sinks[0]
            .committer()
            .record(&t.store, Epoch(1), vec![a])
            .unwrap();
        t.sinks[1]
            .committer()
            .record(&t.store, Epoch(1), vec![b])
            .unwrap();
        t.store
            .write_sink_record(
                SET_RECORD,
                Epoch(1),
                &SetRecord {
                    tables: vec!["a".into(), "b".into()],
                },
            )
            .unwrap();
        assert!(set.publish_recorded(&t.store, Epoch(1)).unwrap());
        let done = set.finish_recorded(&t.store, Epoch(1)).unwrap();
        assert_eq!(done.total.rows, 15);
        assert_eq!(t.files("a").len(), 2);
        assert_eq!(t.files("b").len(), 2);
        // Finishing again (a second crash) publishes nothing twice.
        let again = set.finish_recorded(&t.store, Epoch(1)).unwrap();
        assert_eq!(again.total, done.total);
        assert_eq!(t.files("a").len(), 2);

        // A table with no rows in an epoch needs no record; the other still publishes.
        let b = t.stage(1, 2, "a1", 2);
        let receipts = |stage: StageId| match stage.0 {
            3 => vec![b.clone()],
            _ => Vec::new(),
        };
        let done = set.commit(&t.store, Epoch(2), receipts).unwrap();
        assert_eq!(done.by_table["a"].rows, 0);
        assert_eq!(done.by_table["b"].rows, 2);
        assert_eq!(t.files("b").len(), 3);
        t.set().abort(&t.query, Epoch(3));
    }
}
