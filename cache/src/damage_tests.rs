//! The store against damage: flipped, truncated and missing objects, damaged views,
//! unreadable records, a damaged index, stray files, a deleted lock file; and `export`.
//! (Crashes at named points, `gc`'s included, are tests/cli/crash.rs's.)

use std::{collections::HashSet, os::unix::fs::PermissionsExt, path::Path};

use crate::{Artifact, ArtifactType, Cache, Error, Hash, Metrics, OpenOptions, Record, Timing};

fn open(dir: &Path) -> Cache {
    Cache::open(
        dir,
        &OpenOptions {
            wait: false,
            holder: "test".into(),
        },
        &|_| {},
    )
    .unwrap()
}

fn record(node: &str, key: &[u8], outputs: &[(&str, &Artifact)]) -> Record {
    let now = chrono::Utc::now();
    Record {
        key: crate::hash_bytes(key),
        node: node.into(),
        kind: "command".into(),
        kind_version: 1,
        components: serde_json::json!({}),
        outputs: outputs
            .iter()
            .map(|(n, a)| (n.to_string(), (*a).clone()))
            .collect(),
        metrics: Metrics::default(),
        timing: Timing {
            started: now,
            finished: now,
            seconds: 0.0,
        },
        log: None,
        engine_version: "test".into(),
        pipeline: "p.yaml".into(),
        param_refs: Default::default(),
    }
}

/// Makes an object file writable and hands it to `f`.
fn damage(cache: &Cache, hash: &Hash, f: impl FnOnce(&Path)) {
    let p = cache.objects.file_path(hash);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    f(&p);
}

fn flip_byte(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x10;
    std::fs::write(p, b).unwrap();
}

#[test]
fn a_damaged_or_missing_object_is_never_handed_out_and_its_records_go() {
    type Harm = fn(&Path);
    let harms: [(&str, Harm); 3] = [
        ("flipped", flip_byte),
        ("truncated", |p| {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..b.len() - 1]).unwrap();
        }),
        ("missing", |p| std::fs::remove_file(p).unwrap()),
    ];
    for (what, harm) in harms {
        let ws = tempfile::tempdir().unwrap();
        let cache = open(&ws.path().join(".dagrun"));
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(ws.path().join("big"), &big).unwrap();
        let art = cache
            .ingest(&ws.path().join("big"), ArtifactType::File)
            .unwrap();
        let rec = record("n", b"k", &[("big", &art)]);
        cache.commit(&rec).unwrap();
        damage(&cache, &art.hash, harm);
        std::fs::remove_file(ws.path().join("big")).unwrap();

        let err = cache.restore_output(&art, ws.path(), "big").unwrap_err();
        assert_eq!(err.damaged_object(), Some(art.hash), "{what}: {err}");
        assert!(!ws.path().join("big").exists(), "{what}: nothing restored");
        let leftovers: Vec<_> = std::fs::read_dir(ws.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != ".dagrun")
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
        // Not cached any more, and the damaged file is out of the store.
        assert!(cache.record(&rec.key).unwrap().is_none(), "{what}");
        assert!(!cache.contains_object(&art.hash).unwrap(), "{what}");
        if what != "missing" {
            assert!(cache
                .dir()
                .join("quarantine")
                .join(art.hash.to_hex())
                .exists());
        }
        // Storing the bytes again makes it whole, and then it restores.
        std::fs::write(ws.path().join("src"), &big).unwrap();
        cache
            .ingest(&ws.path().join("src"), ArtifactType::File)
            .unwrap();
        cache.restore_output(&art, ws.path(), "big").unwrap();
        assert_eq!(std::fs::read(ws.path().join("big")).unwrap(), big, "{what}");
        assert!(cache.verify().unwrap().is_clean(), "{what}");
    }
}

#[test]
fn a_stored_copy_of_other_size_is_replaced_when_the_same_bytes_are_stored() {
    let ws = tempfile::tempdir().unwrap();
    let cache = open(&ws.path().join(".dagrun"));
    let big = vec![3u8; 40_000];
    std::fs::write(ws.path().join("a"), &big).unwrap();
    let art = cache
        .ingest(&ws.path().join("a"), ArtifactType::File)
        .unwrap();
    damage(&cache, &art.hash, |p| std::fs::write(p, b"short").unwrap());
    cache
        .ingest(&ws.path().join("a"), ArtifactType::File)
        .unwrap();
    assert_eq!(
        std::fs::read(cache.objects.file_path(&art.hash)).unwrap(),
        big
    );
}

#[test]
fn a_small_object_with_other_bytes_in_the_index_is_not_handed_out() {
    let ws = tempfile::tempdir().unwrap();
    let cache = open(&ws.path().join(".dagrun"));
    let h = cache.put_bytes(b"the log").unwrap();
    cache.objects.blobs.insert(h.0, &b"the lag"[..]).unwrap();
    let err = cache.read_verified(&h).unwrap_err();
    assert!(matches!(err, Error::DamagedObject { .. }), "{err}");
    assert!(!cache.contains_object(&h).unwrap());
    assert_eq!(cache.put_bytes(b"the log").unwrap(), h);
    assert_eq!(cache.read_verified(&h).unwrap(), b"the log");
}

#[test]
fn views_are_verified_and_a_damaged_one_is_made_again() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path().join(".dagrun");
    let d = ws.path().join("out");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("a"), vec![1u8; 30_000]).unwrap();
    std::fs::write(d.join("s"), b"small").unwrap();
    let (art, key) = {
        let cache = open(&dir);
        let art = cache.ingest(&d, ArtifactType::Dataset).unwrap();
        let rec = record("up", b"k", &[("out", &art)]);
        cache.commit(&rec).unwrap();
        let view = cache.materialize(&art).unwrap();
        assert_eq!(std::fs::read(view.join("s")).unwrap(), b"small");
        (art, rec.key)
    };
    // A view file replaced by other bytes (not a hard link of the object any more): the
    // next process finds it and makes the view again from the intact objects.
    let cache = open(&dir);
    let view = dir.join("views-v1").join(art.hash.to_hex());
    std::fs::remove_file(view.join("s")).unwrap();
    std::fs::write(view.join("s"), b"smell").unwrap();
    let again = cache.materialize(&art).unwrap();
    assert_eq!(std::fs::read(again.join("s")).unwrap(), b"small");
    assert!(cache.record(&key).unwrap().is_some());
    drop(cache);
    // The object itself flipped (and the view with it, through the hard link): an error,
    // and the record that names it is dropped.
    let cache = open(&dir);
    let a = art.entries.as_ref().unwrap()[0].hash;
    damage(&cache, &a, flip_byte);
    let err = cache.materialize(&art).unwrap_err();
    assert_eq!(err.damaged_object(), Some(a), "{err}");
    assert!(cache.record(&key).unwrap().is_none());
    assert!(!view.exists() || cache.materialize(&art).is_err());
}

#[test]
fn unreadable_records_are_reported_and_treated_as_absent() {
    let ws = tempfile::tempdir().unwrap();
    let cache = open(&ws.path().join(".dagrun"));
    let good = record("good", b"g", &[]);
    let mut nan = record("nan", b"n", &[]);
    nan.metrics.scalars.insert("loss".into(), f64::NAN);
    nan.metrics.scalars.insert("gain".into(), f64::NEG_INFINITY);
    cache.commit(&good).unwrap();
    cache.commit(&nan).unwrap();
    // NaN and infinities round-trip.
    let back = cache.record(&nan.key).unwrap().unwrap();
    assert!(back.metrics.scalars["loss"].is_nan());
    assert_eq!(back.metrics.scalars["gain"], f64::NEG_INFINITY);
    // A record of an older version with `null` for a NaN still reads.
    let old = br#"{"key":"KEY","node":"old","kind":"command","kind_version":1,"components":{},
        "outputs":{},"metrics":{"scalars":{"loss":null}},"timing":{"started":"2024-01-01T00:00:00Z",
        "finished":"2024-01-01T00:00:00Z","seconds":0.0},"log":null,"engine_version":"0",
        "pipeline":"p.yaml"}"#;
    let old_key = crate::hash_bytes(b"old");
    let old = String::from_utf8_lossy(old).replace("KEY", &old_key.to_hex());
    cache.records.insert(old_key.0, old.as_bytes()).unwrap();
    assert!(cache.record(&old_key).unwrap().unwrap().metrics.scalars["loss"].is_nan());
    // Garbage where a record should be: absent, everywhere.
    let bad = crate::hash_bytes(b"bad");
    cache.records.insert(bad.0, &b"{\"key\": tru"[..]).unwrap();
    assert!(cache.record(&bad).unwrap().is_none());
    assert!(cache.record_head(&bad).unwrap().is_none());
    assert_eq!(cache.records().unwrap().len(), 3);
    let keep: HashSet<Hash> = [good.key, nan.key, old_key, bad].into_iter().collect();
    let gc = cache.gc(&keep, true).unwrap();
    assert_eq!((gc.records_kept, gc.records_removed), (3, 1));
    let v = cache.verify().unwrap();
    assert_eq!(v.unreadable_records.len(), 1, "{v:?}");
    assert!(!v.is_clean());
    assert!(cache.verify().unwrap().is_clean());
    assert_eq!(cache.records().unwrap().len(), 3);
}

#[test]
fn stray_files_among_objects_are_reported_and_left_alone() {
    let ws = tempfile::tempdir().unwrap();
    let cache = open(&ws.path().join(".dagrun"));
    std::fs::write(ws.path().join("big"), vec![5u8; 20_000]).unwrap();
    let art = cache
        .ingest(&ws.path().join("big"), ArtifactType::File)
        .unwrap();
    let rec = record("n", b"k", &[("big", &art)]);
    cache.commit(&rec).unwrap();
    let objects = cache.dir().join("objects-v1");
    let shard = cache
        .objects
        .file_path(&art.hash)
        .parent()
        .unwrap()
        .to_path_buf();
    for p in [
        objects.join(".DS_Store"),
        shard.join(".DS_Store"),
        shard.join("copy of it"),
    ] {
        std::fs::write(&p, b"x").unwrap();
    }
    let v = cache.verify().unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.stray_files.len(), 3, "{v:?}");
    cache.gc(&[rec.key].into_iter().collect(), false).unwrap();
    cache.gc(&HashSet::new(), false).unwrap();
    assert!(objects.join(".DS_Store").exists() && shard.join("copy of it").exists());
}

#[test]
fn a_lock_file_deleted_while_the_cache_is_open_does_not_let_a_second_one_in() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path().join(".dagrun");
    let first = open(&dir);
    std::fs::remove_file(dir.join("lock")).unwrap();
    let opts = OpenOptions {
        wait: false,
        holder: "second".into(),
    };
    let err = Cache::open(&dir, &opts, &|_| {}).err().expect("refused");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another dagrun process"),
        "{err}"
    );
    drop(first);
    Cache::open(&dir, &opts, &|_| {}).unwrap();
}

#[test]
fn an_index_that_lost_durable_writes_says_so() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path().join(".dagrun");
    let saved = ws.path().join("saved-db");
    {
        let cache = open(&dir);
        cache.commit(&record("a", b"a", &[])).unwrap();
    }
    // A copy of the index as it was, put back after more was committed: what a log
    // cut short at a damaged byte looks like to the next open.
    copy_dir(&dir.join("db"), &saved);
    {
        let cache = open(&dir);
        cache.commit(&record("b", b"b", &[])).unwrap();
    }
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    copy_dir(&saved, &dir.join("db"));
    let cache = open(&dir);
    assert!(cache.record(&crate::hash_bytes(b"b")).unwrap().is_none());
    let v = cache.verify().unwrap();
    let d = v.index_damage.clone().expect("damage found");
    assert!(d.lost_flushes >= 1, "{d:?}");
    assert!(d.to_string().contains("is lost"), "{d}");
    assert!(!v.is_clean());
    // Reported once; the seal starts again from what the index holds.
    assert!(cache.verify().unwrap().is_clean());
    drop(cache);
    assert!(open(&dir).verify().unwrap().is_clean());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn export_merges_and_never_overwrites_what_differs_unless_forced() {
    let ws = tempfile::tempdir().unwrap();
    let cache = open(&ws.path().join(".dagrun"));
    let d = ws.path().join("out");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("a.txt"), b"a").unwrap();
    std::fs::write(d.join("sub/b.txt"), b"b").unwrap();
    let folder = cache.ingest(&d, ArtifactType::File).unwrap();
    std::fs::write(ws.path().join("f.txt"), b"f").unwrap();
    let file = cache
        .ingest(&ws.path().join("f.txt"), ArtifactType::File)
        .unwrap();
    let outs = [("out", &folder), ("f.txt", &file)];
    let dest = ws.path().join("export");
    std::fs::create_dir_all(dest.join("out")).unwrap();
    std::fs::write(dest.join("out/mine.txt"), b"mine").unwrap();
    let r = cache.export(&outs, &dest, false).unwrap();
    assert_eq!(r.written.len(), 3);
    assert_eq!(std::fs::read(dest.join("out/mine.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(dest.join("out/sub/b.txt")).unwrap(), b"b");
    // Again: nothing to write.
    let r = cache.export(&outs, &dest, false).unwrap();
    assert_eq!((r.written.len(), r.unchanged.len()), (0, 3));
    // A file that differs: refused, and nothing else written either.
    std::fs::write(dest.join("out/a.txt"), b"edited").unwrap();
    std::fs::remove_file(dest.join("f.txt")).unwrap();
    let err = cache.export(&outs, &dest, false).unwrap_err();
    assert!(
        matches!(&err, Error::ExportConflict(c) if c.len() == 1),
        "{err}"
    );
    assert!(err.to_string().contains("out/a.txt"), "{err}");
    assert!(!dest.join("f.txt").exists());
    assert_eq!(std::fs::read(dest.join("out/a.txt")).unwrap(), b"edited");
    let r = cache.export(&outs, &dest, true).unwrap();
    assert_eq!(r.written.len(), 2);
    assert_eq!(std::fs::read(dest.join("out/a.txt")).unwrap(), b"a");
    // A folder where a file goes, or a link on the way, is never replaced.
    std::fs::remove_file(dest.join("f.txt")).unwrap();
    std::fs::create_dir_all(dest.join("f.txt")).unwrap();
    std::fs::remove_dir_all(dest.join("out/sub")).unwrap();
    let elsewhere = ws.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("out/sub")).unwrap();
    let err = cache.export(&outs, &dest, true).unwrap_err();
    assert!(
        matches!(&err, Error::ExportConflict(c) if c.len() == 2),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
