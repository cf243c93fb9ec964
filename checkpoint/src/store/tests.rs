//! Unit tests of the checkpoint store.

use super::*;
use crate::EpochAction;

fn id(s: &str) -> crate::QueryId {
    crate::QueryId::new(s).unwrap()
}

#[test]
fn offsets_then_commit_moves_the_log_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    assert_eq!(
        store.epoch_log().unwrap().next_action(),
        EpochAction::PlanNew { epoch: Epoch(0) }
    );
    store.write_offsets(Epoch(0), &vec!["a.parquet"]).unwrap();
    assert_eq!(
        store.epoch_log().unwrap().next_action(),
        EpochAction::Replay { epoch: Epoch(0) }
    );
    let again: Vec<String> = store.read_offsets(Epoch(0)).unwrap().unwrap();
    assert_eq!(again, vec!["a.parquet"]);
    store
        .write_commit(&CommitRecord {
            max_event_ms: None,
            max_event_by_source: Default::default(),
            epoch: Epoch(0),
            committed_at_ms: 1,
            output_rows: 3,
        })
        .unwrap();
    let reopened = CheckpointStore::open_or_create(dir.path(), "fp", &id("other")).unwrap();
    assert_eq!(
        reopened.metadata().query_id.as_str(),
        "q1",
        "query id survives restarts"
    );
    assert_eq!(
        reopened.epoch_log().unwrap().next_action(),
        EpochAction::PlanNew { epoch: Epoch(1) }
    );
}

#[test]
fn log_entries_are_never_replaced_and_a_second_holder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    store.write_offsets(Epoch(0), &1).unwrap();
    let err = store.write_offsets(Epoch(0), &2).unwrap_err();
    assert!(matches!(err, CheckpointError::Fenced { .. }), "{err}");
    assert_eq!(store.read_offsets::<i32>(Epoch(0)).unwrap(), Some(1));
    let held = store.lock().unwrap();
    // flock is per open file description: a second open in this process conflicts too.
    let err = store.lock().unwrap_err();
    assert!(
        err.to_string().contains("in use by another driver"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    store.lock().unwrap();
}

#[test]
fn retention_keeps_the_newest_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    for n in 0..10 {
        store.write_offsets(Epoch(n), &n).unwrap();
        store
            .write_commit(&CommitRecord {
                max_event_ms: None,
                max_event_by_source: Default::default(),
                epoch: Epoch(n),
                committed_at_ms: 0,
                output_rows: 0,
            })
            .unwrap();
        store.write_sink_record("t", Epoch(n), &n).unwrap();
    }
    store.retain(Epoch(9), 3).unwrap();
    assert_eq!(
        store.planned_epochs().unwrap(),
        vec![Epoch(7), Epoch(8), Epoch(9)]
    );
    assert!(store
        .read_sink_record::<u64>("t", Epoch(6))
        .unwrap()
        .is_none());
    assert!(store
        .read_sink_record::<u64>("t", Epoch(7))
        .unwrap()
        .is_some());
    assert_eq!(
        store.epoch_log().unwrap().next_action(),
        EpochAction::PlanNew { epoch: Epoch(10) }
    );
}

#[test]
fn expired_entries_are_reused_for_new_ones() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    let inodes = |dir: &Path| -> std::collections::BTreeSet<u64> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    // Entries alternately longer and shorter than the expired ones they are written into.
    let len = |n: u64| {
        if n.is_multiple_of(2) {
            n as usize
        } else {
            40 - n as usize
        }
    };
    for n in 0..40u64 {
        store.write_offsets(Epoch(n), &vec![n; len(n)]).unwrap();
        store.write_progress(Epoch(n), &n).unwrap();
        store.retain(Epoch(n), 3).unwrap();
        seen.extend(inodes(&dir.path().join("offsets")));
    }
    // Only the retained epochs are visible, each with its own content (read by another
    // store, not from memory); the log went round a handful of files.
    let reader = CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    assert_eq!(
        reader.planned_epochs().unwrap(),
        vec![Epoch(37), Epoch(38), Epoch(39)]
    );
    for n in 37..40u64 {
        assert_eq!(
            reader.read_offsets::<Vec<u64>>(Epoch(n)).unwrap(),
            Some(vec![n; len(n)])
        );
        assert_eq!(reader.read_progress::<u64>(Epoch(n)).unwrap(), Some(n));
    }
    assert!(seen.len() <= 3 + 2, "{} inodes for 40 entries", seen.len());
    // A new run deletes what the last one kept for reuse.
    reader.retain(Epoch(39), 3).unwrap();
    let hidden = fs::read_dir(dir.path().join("offsets"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with(".free.")
        })
        .count();
    assert_eq!(hidden, 0);
}

#[test]
fn a_different_query_is_refused_without_touching_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_or_create(dir.path(), "fp-a", &id("q")).unwrap();
    // Before any epoch is recorded, a corrected query takes the checkpoint over.
    let taken = CheckpointStore::open_or_create(dir.path(), "fp-z", &id("other")).unwrap();
    assert_eq!(taken.metadata().plan_fingerprint, "fp-z");
    assert_eq!(taken.metadata().query_id.as_str(), "q");
    let store2 = CheckpointStore::open_or_create(dir.path(), "fp-a", &id("q")).unwrap();
    store2.write_offsets(Epoch(0), &"input").unwrap();
    drop((store, taken));
    let before = fs::read(dir.path().join("metadata")).unwrap();
    let err = CheckpointStore::open_or_create(dir.path(), "fp-b", &id("q")).unwrap_err();
    assert!(err.to_string().contains("different query"), "{err}");
    assert_eq!(before, fs::read(dir.path().join("metadata")).unwrap());
}

#[test]
fn corrupt_and_future_metadata_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("metadata"), b"{not json").unwrap();
    let err = CheckpointStore::open_or_create(dir.path(), "fp", &id("q")).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    fs::write(dir.path().join("metadata"), br#"{"format_version": 99}"#).unwrap();
    let err = CheckpointStore::open_or_create(dir.path(), "fp", &id("q")).unwrap_err();
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[test]
fn a_query_id_that_cannot_name_files_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    CheckpointStore::open_or_create(dir.path(), "fp", &id("q1")).unwrap();
    let meta = dir.path().join("metadata");
    let text = std::fs::read_to_string(&meta).unwrap();
    for bad in ["../../etc", "ünïcødé-ïd", ""] {
        std::fs::write(&meta, text.replace("\"q1\"", &format!("{bad:?}"))).unwrap();
        let err =
            CheckpointStore::open_or_create(dir.path(), "fp", &id("q2")).expect_err("refused");
        assert!(
            err.to_string().contains("is not 1 to 64 ASCII letters"),
            "{err}"
        );
        let err = CheckpointStore::open_existing(dir.path()).expect_err("refused");
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        std::fs::write(&meta, &text).unwrap();
    }
}
