use super::*;

fn id(partition: u32) -> StatePartitionId {
    StatePartitionId {
        query_id: crate::QueryId::new("q").unwrap(),
        operator: 0,
        partition,
    }
}

/// Every snapshot full (no changelogs).
fn full() -> StateConfig {
    StateConfig {
        max_changelogs: 0,
        ..Default::default()
    }
}

fn chained(n: usize) -> StateConfig {
    StateConfig {
        max_changelogs: n,
        ..Default::default()
    }
}

#[test]
fn changelog_snapshots_restore_their_base_plus_the_writes_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = StateBackend::new(&dir.path().join("a"), chained(2)).unwrap();
    let part = a.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    put(&mut part, "k0", "v0");
    part.snapshot(Epoch(0), &store, false).unwrap();
    put(&mut part, "k1", "v1");
    part.write(&[], &[b"k0".to_vec()]).unwrap();
    let one = part.snapshot(Epoch(1), &store, false).unwrap();
    put(&mut part, "k2", "v2");
    put(&mut part, "k1", "v1b");
    put(&mut part, "k15", "gone");
    part.delete_range(b"k1", b"k2").unwrap();
    part.snapshot(Epoch(2), &store, false).unwrap();
    put(&mut part, "k3", "v3");
    part.snapshot(Epoch(3), &store, false).unwrap();
    let remote = store.join("op-0/part-0");
    let manifest = |n| read_manifest(&remote, Epoch(n)).unwrap();
    assert_eq!(manifest(0).base, None);
    assert_eq!(manifest(1).base, Some(Epoch(0)));
    assert_eq!(manifest(2).changelogs.len(), 2);
    assert_eq!(manifest(3).base, None, "a full snapshot after 2 changelogs");
    // A changelog snapshot uploads the epoch's writes only: no SST.
    assert!(one.uploaded_bytes < 100, "{one:?}");
    drop(part);
    let b = StateBackend::new(&dir.path().join("b"), chained(2)).unwrap();
    let at = |n| {
        let p = b.open(&id(0), &store, Some(Epoch(n))).unwrap();
        let p = p.lock().unwrap();
        ["k0", "k1", "k2", "k3"].map(|k| get(&p, k))
    };
    assert_eq!(at(1), [None, Some("v1".into()), None, None]);
    // Epoch 2's range delete removed k1 (and k15), replayed from the changelog.
    assert_eq!(at(2), [None, None, Some("v2".into()), None]);
    assert_eq!(at(3), [None, None, Some("v2".into()), Some("v3".into())]);
    // A restored instance continues the chain.
    let p = b.open(&id(0), &store, Some(Epoch(1))).unwrap();
    put(&mut p.lock().unwrap(), "k9", "v9");
    p.lock().unwrap().snapshot(Epoch(2), &store, false).unwrap();
    assert_eq!(manifest(2).base, Some(Epoch(0)));
    assert_eq!(manifest(2).changelogs.len(), 2);
}

#[test]
fn garbage_collection_keeps_the_base_and_changelogs_of_retained_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = StateBackend::new(&dir.path().join("a"), chained(3)).unwrap();
    let part = a.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    // Full snapshots at 0, 4 and 8; changelogs in between.
    for epoch in 0..9u64 {
        put(&mut part, &format!("k{epoch}"), "v");
        part.snapshot(Epoch(epoch), &store, false).unwrap();
    }
    drop(part);
    let remote = store.join("op-0/part-0");
    collect_garbage(&store, Epoch(6)).unwrap();
    for n in [0, 1, 2, 3, 5] {
        assert!(!remote.join(format!("epoch-{n}")).exists(), "epoch {n}");
    }
    assert!(remote.join("epoch-4").exists(), "the base of 6 and 7");
    let logs = fs::read_dir(remote.join("changelog")).unwrap().count();
    assert_eq!(logs, 3, "epochs 5, 6 and 7");
    for epoch in [6, 7, 8] {
        let b = StateBackend::new(&dir.path().join(format!("b{epoch}")), chained(3)).unwrap();
        let p = b.open(&id(0), &store, Some(Epoch(epoch))).unwrap();
        let p = p.lock().unwrap();
        for k in 0..=epoch {
            assert_eq!(get(&p, &format!("k{k}")).as_deref(), Some("v"), "{epoch}");
        }
    }
    // A damaged changelog is an error naming it, not a panic.
    let log = fs::read_dir(remote.join("changelog"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-7.log"))
        .unwrap();
    let bytes = fs::read(&log).unwrap();
    fs::write(&log, &bytes[..bytes.len() - 1]).unwrap();
    let c = StateBackend::new(&dir.path().join("c"), chained(3)).unwrap();
    let err = c
        .open(&id(0), &store, Some(Epoch(7)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("-7.log") && err.contains("malformed"), "{err}");
}

fn put(p: &mut StatePartition, k: &str, v: &str) {
    p.write(&[(k.as_bytes().to_vec(), v.as_bytes().to_vec())], &[])
        .unwrap();
}

fn get(p: &StatePartition, k: &str) -> Option<String> {
    p.get_many(&[k.as_bytes()]).unwrap()[0]
        .as_ref()
        .map(|v| String::from_utf8(v.clone()).unwrap())
}

#[test]
fn snapshots_upload_only_new_files_and_restore_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = StateBackend::new(&dir.path().join("a"), full()).unwrap();
    let part = a.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    put(&mut part, "k1", "v1");
    let first = part.snapshot(Epoch(0), &store, false).unwrap();
    assert!(first.uploaded_bytes > 0);
    put(&mut part, "k2", "v2");
    let second = part.snapshot(Epoch(1), &store, false).unwrap();
    // The first SST is already stored: only the new one is uploaded.
    let stored = fs::read_dir(store.join("op-0/part-0/sst")).unwrap().count();
    assert_eq!(stored, 2);
    assert!(second.uploaded_bytes < second.total_bytes + 64 * 1024);
    let m1 = read_manifest(&store.join("op-0/part-0"), Epoch(1)).unwrap();
    let m0 = read_manifest(&store.join("op-0/part-0"), Epoch(0)).unwrap();
    assert_eq!(m1.sst.len(), 2);
    assert!(m0.sst.values().all(|f| m1.sst.values().any(|g| g == f)));
    put(&mut part, "k3", "uncommitted");
    drop(part);

    // Another executor restores epoch 1: k1 and k2, not the later write.
    let b = StateBackend::new(&dir.path().join("b"), full()).unwrap();
    let restored = b.open(&id(0), &store, Some(Epoch(1))).unwrap();
    let restored = restored.lock().unwrap();
    assert_eq!(get(&restored, "k1").as_deref(), Some("v1"));
    assert_eq!(get(&restored, "k2").as_deref(), Some("v2"));
    assert_eq!(get(&restored, "k3"), None);
    // Restoring epoch 0 gives the older state.
    drop(restored);
    let older = b.open(&id(0), &store, Some(Epoch(0))).unwrap();
    assert_eq!(get(&older.lock().unwrap(), "k2"), None);
}

#[test]
fn reuses_an_instance_at_the_right_epoch_and_discards_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = StateBackend::new(&dir.path().join("a"), StateConfig::default()).unwrap();
    let part = a.open(&id(1), &store, None).unwrap();
    put(&mut part.lock().unwrap(), "k", "0");
    part.lock()
        .unwrap()
        .snapshot(Epoch(0), &store, false)
        .unwrap();
    put(&mut part.lock().unwrap(), "k", "1");
    part.lock()
        .unwrap()
        .snapshot(Epoch(1), &store, false)
        .unwrap();
    // Epoch 1 committed: the open instance is reused.
    let same = a.open(&id(1), &store, Some(Epoch(1))).unwrap();
    assert!(Arc::ptr_eq(&same, &part));
    // Epoch 1 never committed (driver crashed): reopening at epoch 0 discards it.
    drop(same);
    drop(part);
    let back = a.open(&id(1), &store, Some(Epoch(0))).unwrap();
    assert_eq!(get(&back.lock().unwrap(), "k").as_deref(), Some("0"));
    // A task attempt that wrote and failed before its snapshot leaves a dirty instance:
    // the next attempt gets epoch 0 again, without the failed attempt's write.
    put(&mut back.lock().unwrap(), "k", "failed attempt");
    let retry = a.open(&id(1), &store, Some(Epoch(0))).unwrap();
    assert!(!Arc::ptr_eq(&retry, &back));
    assert_eq!(get(&retry.lock().unwrap(), "k").as_deref(), Some("0"));
}

#[test]
fn garbage_collection_keeps_what_retained_snapshots_need() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let a = StateBackend::new(&dir.path().join("a"), full()).unwrap();
    let part = a.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    for epoch in 0..6u64 {
        put(&mut part, &format!("k{epoch}"), "v");
        // Overwrite and compact so old SSTs stop being referenced.
        part.db.compact_range::<&[u8], &[u8]>(None, None);
        part.snapshot(Epoch(epoch), &store, false).unwrap();
    }
    let remote = store.join("op-0/part-0");
    let removed = collect_garbage(&store, Epoch(4)).unwrap();
    assert!(removed > 0);
    for n in 0..4 {
        assert!(!remote.join(format!("epoch-{n}")).exists(), "epoch {n}");
    }
    drop(part);
    // Epoch 4 and 5 still restore completely.
    for epoch in [4, 5] {
        let b = StateBackend::new(&dir.path().join(format!("b{epoch}")), full()).unwrap();
        let p = b.open(&id(0), &store, Some(Epoch(epoch))).unwrap();
        let p = p.lock().unwrap();
        for k in 0..=epoch {
            assert_eq!(get(&p, &format!("k{k}")).as_deref(), Some("v"));
        }
    }
}

#[test]
fn a_missing_snapshot_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateBackend::new(&dir.path().join("a"), StateConfig::default()).unwrap();
    let err = a
        .open(&id(0), &dir.path().join("store"), Some(Epoch(3)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("epoch-3"), "{err}");
    assert!(err.contains("snapshot"), "{err}");
}

#[test]
fn an_unchanged_partition_writes_no_snapshot_and_restores_from_its_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let remote = store.join("op-0/part-0");
    let a = StateBackend::new(&dir.path().join("a"), chained(3)).unwrap();
    let part = a.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    put(&mut part, "k0", "v0");
    part.snapshot(Epoch(0), &store, false).unwrap();
    put(&mut part, "k1", "v1");
    part.snapshot(Epoch(1), &store, false).unwrap();
    // Epochs 2..=4 write nothing (an empty write included): no snapshot files.
    for epoch in 2..=4u64 {
        part.write(&[], &[]).unwrap();
        let stats = part.snapshot(Epoch(epoch), &store, false).unwrap();
        assert_eq!(stats.uploaded_bytes, 0);
        assert!(stats.total_bytes > 0, "the state still has its size");
        assert!(!remote.join(format!("epoch-{epoch}")).exists());
        assert_eq!(part.epoch(), Some(Epoch(epoch)));
    }
    put(&mut part, "k5", "v5");
    part.snapshot(Epoch(5), &store, false).unwrap();
    drop(part);
    // Epoch 3 restores from epoch 1's snapshot; epoch 5 from its own.
    for (epoch, keys) in [(3u64, &["k0", "k1"][..]), (5, &["k0", "k1", "k5"][..])] {
        let b = StateBackend::new(&dir.path().join(format!("b{epoch}")), chained(3)).unwrap();
        let p = b.open(&id(0), &store, Some(Epoch(epoch))).unwrap();
        let p = p.lock().unwrap();
        for k in keys {
            assert!(get(&p, k).is_some(), "epoch {epoch}: {k}");
        }
        assert_eq!(get(&p, "k5").is_some(), epoch == 5);
    }
    // Retention from epoch 4 keeps epoch 1 (the state of epochs 2-4) and 5.
    collect_garbage(&store, Epoch(4)).unwrap();
    assert!(remote.join("epoch-1").exists());
    assert!(remote.join("epoch-5").exists());
    let c = StateBackend::new(&dir.path().join("c"), chained(3)).unwrap();
    let p = c.open(&id(0), &store, Some(Epoch(4))).unwrap();
    assert!(get(&p.lock().unwrap(), "k1").is_some());
}
