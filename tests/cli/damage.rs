//! Damage to the cache, and what dagrun does about it (README, "Crashes, Ctrl-C and
//! concurrent runs"): flipped, truncated and missing objects are never handed out and
//! their nodes run again; unreadable records and a damaged index are reported and
//! treated as absent; stray files are reported and left alone; a deleted `lock` file
//! does not let a second dagrun in.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use dagrun_cache::{Cache, OpenOptions};

use crate::support::*;

/// `big` writes 50,000 bytes (an object file in the cache); `count` reads it.
const BIG: &str = r#"
stages:
  big:
    kind: command
    cmd: head -c 50000 /dev/zero | tr '\0' 'a' > big.bin; echo ran >> big-runs.txt
    outs: [big.bin]
  count:
    kind: command
    cmd: wc -c < big.bin > count.txt; echo ran >> count-runs.txt
    deps: [big.bin]
    outs: [count.txt]
"#;

/// The object files of a cache.
fn object_files(ws: &Ws) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(ws.p(".dagrun/objects-v1"))
        .unwrap()
        .flatten()
    {
        if shard.file_type().unwrap().is_dir() {
            out.extend(
                std::fs::read_dir(shard.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    out
}

fn writable(p: &std::path::Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn a_damaged_or_missing_object_is_never_restored_and_its_node_runs_again() {
    type Harm = fn(&std::path::Path);
    let harms: [(&str, Harm); 3] = [
        ("flipped", |p| {
            writable(p);
            let mut b = std::fs::read(p).unwrap();
            b[1234] ^= 1;
            std::fs::write(p, b).unwrap();
        }),
        ("truncated", |p| {
            writable(p);
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..40_000]).unwrap();
        }),
        ("missing", |p| std::fs::remove_file(p).unwrap()),
    ];
    for (what, harm) in harms {
        let ws = Ws::new();
        ws.write("p.yaml", BIG);
        assert_eq!(ws.run(&["p.yaml"]), set(&["big", "count"]));
        let objects = object_files(&ws);
        assert_eq!(objects.len(), 1, "{what}: {objects:?}");
        harm(&objects[0]);
        std::fs::remove_file(ws.p("big.bin")).unwrap();
        // The restore finds the damage: `big` runs again (exit 0), and `count`, whose
        // input comes out the same, stays cached.
        let (_, err) = ws.ok(&["p.yaml"]);
        assert_eq!(executed(&err), set(&["big"]), "{what}: {err}");
        assert!(
            err.contains("the cache does not hand it out")
                && err.contains("dropped the record of `big`"),
            "{what}: {err}"
        );
        assert_eq!(ws.read("big.bin"), "a".repeat(50_000), "{what}");
        assert_eq!(ws.read("big-runs.txt"), "ran\nran\n", "{what}");
        assert_eq!(ws.read("count-runs.txt"), "ran\n", "{what}");
        let (out, _) = ws.ok(&["cache", "verify"]);
        assert!(out.contains("no corruption"), "{what}: {out}");
        if what != "missing" {
            let q: Vec<_> = std::fs::read_dir(ws.p(".dagrun/quarantine"))
                .unwrap()
                .collect();
            assert_eq!(q.len(), 1, "{what}: the damaged file is kept aside");
        }
        assert!(ws.run(&["p.yaml"]).is_empty(), "{what}");
    }
}

#[test]
fn a_node_recomputed_from_a_damaged_restore_is_never_cached_under_the_good_key() {
    // The attack of the issue: `count` must read the real bytes, so its record is that
    // of the real input.
    let ws = Ws::new();
    ws.write("p.yaml", BIG);
    ws.run(&["p.yaml"]);
    let objects = object_files(&ws);
    writable(&objects[0]);
    let mut b = std::fs::read(&objects[0]).unwrap();
    b.truncate(10);
    std::fs::write(&objects[0], b).unwrap();
    std::fs::remove_file(ws.p("big.bin")).unwrap();
    ws.ok(&["p.yaml", "--rerun", "count"]);
    assert_eq!(ws.read("count.txt").trim(), "50000");
}

#[test]
fn stray_files_in_the_cache_are_reported_and_left_alone() {
    let ws = Ws::new();
    ws.write("p.yaml", BIG);
    ws.run(&["p.yaml"]);
    let shard = object_files(&ws)[0].parent().unwrap().to_path_buf();
    ws.write(".dagrun/objects-v1/.DS_Store", "finder");
    std::fs::write(shard.join(".DS_Store"), "finder").unwrap();
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    assert!(
        out.contains(".DS_Store` is not an object (left alone"),
        "{out}"
    );
    ws.ok(&["cache", "gc", "p.yaml"]);
    assert!(ws.p(".dagrun/objects-v1/.DS_Store").exists());
    assert!(shard.join(".DS_Store").exists());
    assert!(ws.run(&["p.yaml"]).is_empty());
}

fn open_cache(ws: &Ws) -> Cache {
    Cache::open(
        &ws.p(".dagrun"),
        &OpenOptions {
            wait: false,
            holder: "test".into(),
        },
        &|_| {},
    )
    .unwrap()
}

#[test]
fn records_with_nan_metrics_and_unreadable_records_block_nothing() {
    let ws = Ws::new();
    ws.write("p.yaml", BIG);
    ws.run(&["p.yaml"]);
    // `big` reported a NaN and an infinity (as a native kind may).
    let key = {
        let cache = open_cache(&ws);
        let key = cache.latest("big").unwrap().unwrap().key;
        let mut rec = cache.record(&key).unwrap().unwrap();
        rec.metrics.scalars.insert("loss".into(), f64::NAN);
        rec.metrics.scalars.insert("ratio".into(), f64::INFINITY);
        cache.commit(&rec).unwrap();
        key
    };
    let (out, _) = ws.ok(&["show", "big"]);
    assert!(out.contains("NaN") && out.contains("inf"), "{out}");
    let (out, _) = ws.ok(&["show", "big", "--json"]);
    assert!(out.contains("\"NaN\""), "{out}");
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    ws.ok(&["cache", "gc", "p.yaml"]);
    assert!(ws.run(&["p.yaml"]).is_empty());
    // Bytes in the index that are no record: reported, treated as not cached, and the
    // node runs again; everything else works meanwhile.
    {
        let db = sled::open(ws.p(".dagrun/db")).unwrap();
        db.open_tree("records-v1")
            .unwrap()
            .insert(key.0, &b"{\"key\": \"oops"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let (out, err) = ws.ok(&["plan", "p.yaml"]);
    assert!(out.contains("stale    big"), "{out}");
    assert!(err.contains("is unreadable"), "{err}");
    ws.ok(&["show", "count"]);
    ws.ok(&["status", "p.yaml"]);
    let (_, err) = ws.ok(&["p.yaml"]);
    assert_eq!(executed(&err), set(&["big"]), "{err}");
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    // Unreadable, then removed by verify: reported once.
    let db_key = {
        let db = sled::open(ws.p(".dagrun/db")).unwrap();
        let t = db.open_tree("records-v1").unwrap();
        let k = dagrun_cache::hash_bytes(b"not a record");
        t.insert(k.0, &b"\xff\xfe"[..]).unwrap();
        db.flush().unwrap();
        k
    };
    let o = ws.dagrun(&["cache", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "removed the unreadable record {}",
            &db_key.to_hex()[..12]
        )),
        "{}",
        text(&o)
    );
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    ws.ok(&["cache", "gc", "p.yaml"]);
}

#[test]
fn a_damaged_index_is_reported_and_what_it_lost_runs_again() {
    let ws = Ws::new();
    ws.write("p.yaml", BIG);
    ws.run(&["p.yaml"]);
    // The log of sled's index: bytes flipped after what the first run wrote, so that
    // recovery cuts it short there (what a bad sector or a stray write does).
    let saved = tempfile::tempdir().unwrap();
    let db = ws.p(".dagrun/db/db");
    std::fs::copy(&db, saved.path().join("db")).unwrap();
    let before = std::fs::metadata(&db).unwrap().len();
    ws.write(
        "p.yaml",
        &BIG.replace("wc -c < big.bin", "wc -c < big.bin | tr -d ' '"),
    );
    assert_eq!(ws.run(&["p.yaml"]), set(&["count"]));
    let mut bytes = std::fs::read(&db).unwrap();
    let after = bytes.len() as u64;
    assert!(after > before, "the second run appended to the log");
    // Flip a byte of every message the second run added: the first one cuts the log.
    for i in (before as usize..after as usize).step_by(7) {
        bytes[i] ^= 0x40;
    }
    std::fs::write(&db, bytes).unwrap();
    let (out, err) = ws.ok(&["plan", "p.yaml"]);
    assert!(
        err.contains("the cache index (`db/`) was found damaged"),
        "{out}\n{err}"
    );
    let (_, err) = ws.ok(&["p.yaml"]);
    assert_eq!(executed(&err), set(&["count"]), "{err}");
    let o = ws.dagrun(&["cache", "verify"]);
    assert!(text(&o).contains("index damage:"), "{}", text(&o));
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
}

/// `slow` blocks while `hold` exists, after noting that it started.
const SLOW: &str = r#"
stages:
  slow:
    kind: command
    cmd: touch slow-started; while [ -e hold ]; do sleep 0.05; done; echo done > slow.txt
    outs: [slow.txt]
"#;

#[test]
fn deleting_the_lock_file_during_a_run_does_not_let_a_second_dagrun_in() {
    let ws = Ws::new();
    ws.write("p.yaml", SLOW);
    ws.write("hold", "");
    let mut first = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    std::fs::remove_file(ws.p(".dagrun/lock")).unwrap();
    let o = ws.dagrun(&["p.yaml", "--rerun", "slow"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("is in use by another dagrun process"), "{t}");
    assert!(t.contains(&format!("pid {}", first.id())), "{t}");
    // The first run's command is still running: it finishes and is committed.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert!(first.wait().unwrap().success());
    assert_eq!(ws.read("slow.txt"), "done\n");
    assert!(ws.run(&["p.yaml"]).is_empty());
}

/// Native kinds read their inputs from views of the cache (hard links to its objects).
const NATIVE: &str = r#"
stages:
  task:
    kind: toy_task
    params: {seed: 0}
  prompts:
    kind: prompts
    params:
      corpus: ${stages.task.corpus}
      tokenizer: ${stages.task.tokenizer}
      min_chars: 100
      seed: 0
"#;

fn output_hash(ws: &Ws, node: &str, output: &str) -> serde_json::Value {
    let (out, _) = ws.ok(&["show", node, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["outputs"][output].clone()
}

#[test]
fn a_damaged_object_a_native_stage_would_read_makes_its_producer_run_again() {
    let ws = Ws::new();
    ws.write("p.yaml", NATIVE);
    assert_eq!(ws.run(&["p.yaml"]), set(&["task", "prompts"]));
    let prompts = output_hash(&ws, "prompts", "prompts");
    // The corpus's training file, as stored (and as the view `prompts` read links it).
    let corpus = output_hash(&ws, "task", "corpus");
    let entry = corpus["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "train.jsonl")
        .unwrap()
        .clone();
    let hex = entry["hash"].as_str().unwrap();
    let object = ws.p(&format!(".dagrun/objects-v1/{}/{}", &hex[..2], &hex[2..]));
    writable(&object);
    let mut b = std::fs::read(&object).unwrap();
    b[100] ^= 0x20;
    std::fs::write(&object, b).unwrap();
    // `prompts` must run: before it reads the corpus, the damage is found, and `task`
    // runs again to make it.
    let (_, err) = ws.ok(&["p.yaml", "--rerun", "prompts"]);
    assert_eq!(executed(&err), set(&["task", "prompts"]), "{err}");
    assert!(err.contains("dropped the record of `task`"), "{err}");
    assert_eq!(output_hash(&ws, "prompts", "prompts"), prompts);
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
}
