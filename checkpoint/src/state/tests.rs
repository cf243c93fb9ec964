use super::*;
use crate::location::ObjectRoot;

/// The stores every test runs against: a local directory and an object store (in memory here;
/// `tests/object_store.rs` runs the engine against a real S3 server).
fn stores(dir: &Path) -> Vec<Location> {
    let memory = Arc::new(object_store::memory::InMemory::new());
    vec![
        Location::from(dir.join("store")),
        Location::Object(ObjectRoot::new(memory, "memory://bucket", "ckpt/state")),
    ]
}

/// The store's partition 0 of operator 0.
fn part0(store: &Location) -> Remote {
    Remote::of(store).child("op-0/part-0")
}

fn has_snapshot(store: &Location, epoch: u64) -> bool {
    part0(store).snapshot_epochs().unwrap().contains(&epoch)
}

fn for_each_store(test: impl Fn(&Path, &Location)) {
    let dir = tempfile::tempdir().unwrap();
    for (n, store) in stores(dir.path()).iter().enumerate() {
        test(&dir.path().join(format!("executors-{n}")), store);
    }
}

fn id(partition: u32) -> StatePartitionId {
    StatePartitionId {
        query_id: crate::QueryId::new("q").unwrap(),
        operator: 0,
        partition,
        key_groups: None,
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
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), chained(2)).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        put(&mut part, "k0", "v0");
        part.snapshot(Epoch(0), store, false).unwrap();
        put(&mut part, "k1", "v1");
        part.write(&[], &[b"k0".to_vec()]).unwrap();
        let one = part.snapshot(Epoch(1), store, false).unwrap();
        put(&mut part, "k2", "v2");
        put(&mut part, "k1", "v1b");
        put(&mut part, "k15", "gone");
        part.delete_range(b"k1", b"k2").unwrap();
        part.snapshot(Epoch(2), store, false).unwrap();
        put(&mut part, "k3", "v3");
        part.snapshot(Epoch(3), store, false).unwrap();
        let remote = part0(store);
        let manifest = |n| read_manifest(&remote, Epoch(n)).unwrap();
        assert_eq!(manifest(0).base, None);
        assert_eq!(manifest(1).base, Some(Epoch(0)));
        assert_eq!(manifest(2).changelogs.len(), 2);
        assert_eq!(manifest(3).base, None, "a full snapshot after 2 changelogs");
        // A changelog snapshot uploads the epoch's writes only: no SST.
        assert!(one.uploaded_bytes < 100, "{one:?}");
        drop(part);
        let b = StateBackend::new(&dir.join("b"), chained(2)).unwrap();
        let at = |n| {
            let p = b.open(&id(0), store, Some(Epoch(n))).unwrap();
            let p = p.lock().unwrap();
            ["k0", "k1", "k2", "k3"].map(|k| get(&p, k))
        };
        assert_eq!(at(1), [None, Some("v1".into()), None, None]);
        // Epoch 2's range delete removed k1 (and k15), replayed from the changelog.
        assert_eq!(at(2), [None, None, Some("v2".into()), None]);
        assert_eq!(at(3), [None, None, Some("v2".into()), Some("v3".into())]);
        // A restored instance continues the chain.
        let p = b.open(&id(0), store, Some(Epoch(1))).unwrap();
        put(&mut p.lock().unwrap(), "k9", "v9");
        p.lock().unwrap().snapshot(Epoch(2), store, false).unwrap();
        assert_eq!(manifest(2).base, Some(Epoch(0)));
        assert_eq!(manifest(2).changelogs.len(), 2);
    });
}

#[test]
fn garbage_collection_keeps_the_base_and_changelogs_of_retained_snapshots() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), chained(3)).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        // Full snapshots at 0, 4 and 8; changelogs in between.
        for epoch in 0..9u64 {
            put(&mut part, &format!("k{epoch}"), "v");
            part.snapshot(Epoch(epoch), store, false).unwrap();
        }
        drop(part);
        let remote = part0(store);
        collect_garbage(store, Epoch(6)).unwrap();
        for n in [0, 1, 2, 3, 5] {
            assert!(!has_snapshot(store, n), "epoch {n}");
        }
        assert!(has_snapshot(store, 4), "the base of 6 and 7");
        let logs = remote.names("changelog").unwrap().len();
        assert_eq!(logs, 3, "epochs 5, 6 and 7");
        for epoch in [6, 7, 8] {
            let b = StateBackend::new(&dir.join(format!("b{epoch}")), chained(3)).unwrap();
            let p = b.open(&id(0), store, Some(Epoch(epoch))).unwrap();
            let p = p.lock().unwrap();
            for k in 0..=epoch {
                assert_eq!(get(&p, &format!("k{k}")).as_deref(), Some("v"), "{epoch}");
            }
        }
        // A damaged changelog is an error naming it, not a panic.
        let log = remote
            .names("changelog")
            .unwrap()
            .into_iter()
            .find(|name| name.ends_with("-7.log"))
            .map(|name| format!("changelog/{name}"))
            .unwrap();
        let bytes = remote.read(&log).unwrap().unwrap();
        remote
            .write(&log, &bytes[..bytes.len() - 1], false)
            .unwrap();
        let c = StateBackend::new(&dir.join("c"), chained(3)).unwrap();
        let err = c
            .open(&id(0), store, Some(Epoch(7)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("-7.log") && err.contains("malformed"), "{err}");
    });
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

/// A stateful query's first epochs may bring no rows: an empty partition snapshots durably
/// (fsyncing what exists: no SST, no `sst` directory yet) and restores empty; the next
/// snapshot with data is durable too.
#[test]
fn an_empty_partition_snapshots_durably_and_restores_empty() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), full()).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        part.snapshot(Epoch(0), store, true).unwrap();
        assert!(part0(store).names("sst").unwrap().is_empty());
        put(&mut part, "k", "v");
        part.snapshot(Epoch(1), store, true).unwrap();
        drop(part);
        let b = StateBackend::new(&dir.join("b"), full()).unwrap();
        let restored = b.open(&id(0), store, Some(Epoch(0))).unwrap();
        assert!(restored.lock().unwrap().scan(b"", None).unwrap().is_empty());
        let restored = b.open(&id(0), store, Some(Epoch(1))).unwrap();
        assert_eq!(restored.lock().unwrap().scan(b"", None).unwrap().len(), 1);
    });
}

#[test]
fn snapshots_upload_only_new_files_and_restore_elsewhere() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), full()).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        put(&mut part, "k1", "v1");
        let first = part.snapshot(Epoch(0), store, false).unwrap();
        assert!(first.uploaded_bytes > 0);
        put(&mut part, "k2", "v2");
        let second = part.snapshot(Epoch(1), store, false).unwrap();
        // The first SST is already stored: only the new one is uploaded.
        let stored = part0(store).names("sst").unwrap().len();
        assert_eq!(stored, 2);
        assert!(second.uploaded_bytes < second.total_bytes + 64 * 1024);
        let m1 = read_manifest(&part0(store), Epoch(1)).unwrap();
        let m0 = read_manifest(&part0(store), Epoch(0)).unwrap();
        assert_eq!(m1.sst.len(), 2);
        assert!(m0.sst.values().all(|f| m1.sst.values().any(|g| g == f)));
        put(&mut part, "k3", "uncommitted");
        drop(part);

        // Another executor restores epoch 1: k1 and k2, not the later write.
        let b = StateBackend::new(&dir.join("b"), full()).unwrap();
        let restored = b.open(&id(0), store, Some(Epoch(1))).unwrap();
        let restored = restored.lock().unwrap();
        assert_eq!(get(&restored, "k1").as_deref(), Some("v1"));
        assert_eq!(get(&restored, "k2").as_deref(), Some("v2"));
        assert_eq!(get(&restored, "k3"), None);
        // Restoring epoch 0 gives the older state.
        drop(restored);
        let older = b.open(&id(0), store, Some(Epoch(0))).unwrap();
        assert_eq!(get(&older.lock().unwrap(), "k2"), None);
    });
}

#[test]
fn reuses_an_instance_at_the_right_epoch_and_discards_a_newer_one() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), StateConfig::default()).unwrap();
        let part = a.open(&id(1), store, None).unwrap();
        put(&mut part.lock().unwrap(), "k", "0");
        part.lock()
            .unwrap()
            .snapshot(Epoch(0), store, false)
            .unwrap();
        put(&mut part.lock().unwrap(), "k", "1");
        part.lock()
            .unwrap()
            .snapshot(Epoch(1), store, false)
            .unwrap();
        // Epoch 1 committed: the open instance is reused.
        let same = a.open(&id(1), store, Some(Epoch(1))).unwrap();
        assert!(Arc::ptr_eq(&same, &part));
        // Epoch 1 never committed (driver crashed): reopening at epoch 0 discards it.
        drop(same);
        drop(part);
        let back = a.open(&id(1), store, Some(Epoch(0))).unwrap();
        assert_eq!(get(&back.lock().unwrap(), "k").as_deref(), Some("0"));
        // A task attempt that wrote and failed before its snapshot leaves a dirty instance:
        // the next attempt gets epoch 0 again, without the failed attempt's write.
        put(&mut back.lock().unwrap(), "k", "failed attempt");
        let retry = a.open(&id(1), store, Some(Epoch(0))).unwrap();
        assert!(!Arc::ptr_eq(&retry, &back));
        assert_eq!(get(&retry.lock().unwrap(), "k").as_deref(), Some("0"));
    });
}

#[test]
fn garbage_collection_keeps_what_retained_snapshots_need() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), full()).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        for epoch in 0..6u64 {
            put(&mut part, &format!("k{epoch}"), "v");
            // Overwrite and compact so old SSTs stop being referenced.
            part.db.compact_range::<&[u8], &[u8]>(None, None);
            part.snapshot(Epoch(epoch), store, false).unwrap();
        }
        let removed = collect_garbage(store, Epoch(4)).unwrap();
        assert!(removed > 0);
        for n in 0..4 {
            assert!(!has_snapshot(store, n), "epoch {n}");
        }
        drop(part);
        // Epoch 4 and 5 still restore completely.
        for epoch in [4, 5] {
            let b = StateBackend::new(&dir.join(format!("b{epoch}")), full()).unwrap();
            let p = b.open(&id(0), store, Some(Epoch(epoch))).unwrap();
            let p = p.lock().unwrap();
            for k in 0..=epoch {
                assert_eq!(get(&p, &format!("k{k}")).as_deref(), Some("v"));
            }
        }
    });
}

#[test]
fn a_missing_snapshot_is_a_clear_error() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), StateConfig::default()).unwrap();
        let err = a
            .open(&id(0), store, Some(Epoch(3)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("epoch-3"), "{err}");
        assert!(err.contains("snapshot"), "{err}");
    });
}

#[test]
fn an_unchanged_partition_writes_no_snapshot_and_restores_from_its_last_one() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), chained(3)).unwrap();
        let part = a.open(&id(0), store, None).unwrap();
        let mut part = part.lock().unwrap();
        put(&mut part, "k0", "v0");
        part.snapshot(Epoch(0), store, false).unwrap();
        put(&mut part, "k1", "v1");
        part.snapshot(Epoch(1), store, false).unwrap();
        // Epochs 2..=4 write nothing (an empty write included): no snapshot files.
        for epoch in 2..=4u64 {
            part.write(&[], &[]).unwrap();
            let stats = part.snapshot(Epoch(epoch), store, false).unwrap();
            assert_eq!(stats.uploaded_bytes, 0);
            assert!(stats.total_bytes > 0, "the state still has its size");
            assert!(!has_snapshot(store, epoch));
            assert_eq!(part.epoch(), Some(Epoch(epoch)));
        }
        put(&mut part, "k5", "v5");
        part.snapshot(Epoch(5), store, false).unwrap();
        drop(part);
        // Epoch 3 restores from epoch 1's snapshot; epoch 5 from its own.
        for (epoch, keys) in [(3u64, &["k0", "k1"][..]), (5, &["k0", "k1", "k5"][..])] {
            let b = StateBackend::new(&dir.join(format!("b{epoch}")), chained(3)).unwrap();
            let p = b.open(&id(0), store, Some(Epoch(epoch))).unwrap();
            let p = p.lock().unwrap();
            for k in keys {
                assert!(get(&p, k).is_some(), "epoch {epoch}: {k}");
            }
            assert_eq!(get(&p, "k5").is_some(), epoch == 5);
        }
        // Retention from epoch 4 keeps epoch 1 (the state of epochs 2-4) and 5.
        collect_garbage(store, Epoch(4)).unwrap();
        assert!(has_snapshot(store, 1));
        assert!(has_snapshot(store, 5));
        let c = StateBackend::new(&dir.join("c"), chained(3)).unwrap();
        let p = c.open(&id(0), store, Some(Epoch(4))).unwrap();
        assert!(get(&p.lock().unwrap(), "k1").is_some());
    });
}

#[test]
fn on_an_object_store_attempts_of_one_epoch_never_mix_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = stores(dir.path()).pop().unwrap();
    assert!(store.is_object());
    let a = StateBackend::new(&dir.path().join("a"), full()).unwrap();
    let first = a.open(&id(0), &store, None).unwrap();
    put(&mut first.lock().unwrap(), "k", "epoch 0");
    first
        .lock()
        .unwrap()
        .snapshot(Epoch(0), &store, false)
        .unwrap();
    put(&mut first.lock().unwrap(), "k", "attempt a");
    first
        .lock()
        .unwrap()
        .snapshot(Epoch(1), &store, false)
        .unwrap();
    // A second attempt of epoch 1 (another executor, restored from epoch 0) writes its own
    // small files beside the first attempt's, and its manifest replaces the first one.
    let b = StateBackend::new(&dir.path().join("b"), full()).unwrap();
    let second = b.open(&id(0), &store, Some(Epoch(0))).unwrap();
    put(&mut second.lock().unwrap(), "k", "attempt b");
    second
        .lock()
        .unwrap()
        .snapshot(Epoch(1), &store, false)
        .unwrap();
    let attempts = part0(&store).names("epoch-1").unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "two attempts' small files and one manifest: {attempts:?}"
    );
    // An attempt that uploaded its small files but died before its manifest is no snapshot.
    part0(&store)
        .write("epoch-2/dead-attempt/CURRENT", b"MANIFEST-000001\n", false)
        .unwrap();
    assert!(!has_snapshot(&store, 2));
    let c = StateBackend::new(&dir.path().join("c"), full()).unwrap();
    for epoch in [1, 2] {
        let p = c.open(&id(0), &store, Some(Epoch(epoch))).unwrap();
        assert_eq!(get(&p.lock().unwrap(), "k").as_deref(), Some("attempt b"));
    }
    // Retention from epoch 2 keeps epoch 1 (the state of epoch 2) and drops epoch 0 and the
    // files only it and the first attempt referenced.
    let removed = collect_garbage(&store, Epoch(2)).unwrap();
    assert!(removed >= 2, "{removed}");
    assert!(!has_snapshot(&store, 0));
    let p = c.open(&id(0), &store, Some(Epoch(1))).unwrap();
    assert_eq!(get(&p.lock().unwrap(), "k").as_deref(), Some("attempt b"));
}

/// Test layout: a key's group is its first byte's digit; `~` keys are partition-wide bounds,
/// merged by taking the smaller.
struct ByFirstDigit;

impl Redistribution for ByFirstDigit {
    fn key_groups(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Option<u32>>, String> {
        entries
            .iter()
            .map(|(k, _)| match k.first() {
                Some(b'~') => Ok(None),
                Some(d @ b'0'..=b'9') => Ok(Some(u32::from(d - b'0'))),
                _ => Err(format!("an unexpected key {k:?}")),
            })
            .collect()
    }

    fn merge(&self, _key: &[u8], kept: &[u8], other: &[u8]) -> Vec<u8> {
        kept.min(other).to_vec()
    }
}

fn ranged(partition: u32, partitions: u32) -> StatePartitionId {
    StatePartitionId {
        key_groups: Some(KeyGroups::of_partition(partition, partitions, 4)),
        ..id(partition)
    }
}

fn all(p: &StatePartition) -> Vec<(String, String)> {
    p.scan(b"", None)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn rescaling_splits_and_merges_partitions_by_key_group() {
    for_each_store(|dir, store| {
        // Two partitions of four key groups: 0..2 and 2..4, each with its own bound.
        let a = StateBackend::new(&dir.join("a"), chained(3)).unwrap();
        for (p, keys, bound) in [(0, ["0a", "1b"], "5"), (1, ["2c", "3d"], "4")] {
            let part = a.open(&ranged(p, 2), store, None).unwrap();
            let mut part = part.lock().unwrap();
            put(&mut part, keys[0], "x");
            part.snapshot(Epoch(0), store, false).unwrap();
            // A changelog snapshot: the rescaled restore replays it.
            put(&mut part, keys[1], "y");
            put(&mut part, "~bound", bound);
            part.snapshot(Epoch(1), store, false).unwrap();
        }
        assert!(Remote::of(store)
            .child("op-0/kg-2-4")
            .snapshot_epochs()
            .unwrap()
            .contains(&1));
        let old = [ranged(0, 2), ranged(1, 2)];
        // Four partitions: each takes one group of one old partition, and the bound.
        let b = StateBackend::new(&dir.join("b"), chained(3)).unwrap();
        let third = b
            .open_rescaled(&ranged(2, 4), store, Epoch(1), &old, &ByFirstDigit)
            .unwrap();
        assert_eq!(
            all(&third.lock().unwrap()),
            vec![("2c".into(), "x".into()), ("~bound".into(), "4".into())]
        );
        // One partition: everything, the bounds merged.
        let one = b
            .open_rescaled(&ranged(0, 1), store, Epoch(1), &old, &ByFirstDigit)
            .unwrap();
        let mut one = one.lock().unwrap();
        assert!(one.was_restored());
        assert_eq!(one.epoch(), Some(Epoch(1)));
        assert_eq!(
            all(&one)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["0a=x", "1b=y", "2c=x", "3d=y", "~bound=4"]
        );
        // Its first snapshot is full, though the epoch wrote nothing, and restores as is.
        one.snapshot(Epoch(2), store, false).unwrap();
        drop(one);
        let whole = Remote::of(store).child("op-0/kg-0-4");
        assert_eq!(read_manifest(&whole, Epoch(2)).unwrap().base, None);
        let c = StateBackend::new(&dir.join("c"), chained(3)).unwrap();
        let again = c.open(&ranged(0, 1), store, Some(Epoch(2))).unwrap();
        assert_eq!(all(&again.lock().unwrap()).len(), 5);
    });
}

#[test]
fn rescaling_reports_an_entry_it_cannot_place() {
    for_each_store(|dir, store| {
        let a = StateBackend::new(&dir.join("a"), full()).unwrap();
        let part = a.open(&ranged(0, 1), store, None).unwrap();
        put(&mut part.lock().unwrap(), "?", "x");
        part.lock()
            .unwrap()
            .snapshot(Epoch(0), store, false)
            .unwrap();
        let err = a
            .open_rescaled(
                &ranged(0, 2),
                store,
                Epoch(0),
                &[ranged(0, 1)],
                &ByFirstDigit,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kg-0-4") && err.contains("unexpected key"),
            "{err}"
        );
    });
}

#[test]
fn first_key_and_bounded_scans_skip_range_deleted_keys_and_honour_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Location::from(dir.path().join("store"));
    let backend = StateBackend::new(&dir.path().join("a"), full()).unwrap();
    let part = backend.open(&id(0), &store, None).unwrap();
    let mut part = part.lock().unwrap();
    assert_eq!(part.first_key(&[], None).unwrap(), None);
    for k in ["a1", "a2", "b1", "c1"] {
        put(&mut part, k, "v");
    }
    assert_eq!(part.first_key(&[], None).unwrap(), Some(b"a1".to_vec()));
    part.delete_range(b"a", b"b").unwrap();
    assert_eq!(part.first_key(&[], None).unwrap(), Some(b"b1".to_vec()));
    assert_eq!(part.first_key(b"b2", None).unwrap(), Some(b"c1".to_vec()));
    assert_eq!(part.first_key(b"b2", Some(b"c")).unwrap(), None);
    // A bounded scan stops after the entry that reaches the byte budget (key + value).
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        entries.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        keys(part.scan_limited(&[], None, 1).unwrap()),
        [b"b1".to_vec()]
    );
    assert_eq!(
        keys(part.scan_limited(&[], None, 4).unwrap()),
        [b"b1".to_vec(), b"c1".to_vec()]
    );
    assert_eq!(
        keys(part.scan_limited(&[], Some(b"c"), 100).unwrap()),
        [b"b1".to_vec()]
    );
}
