//! The no-op stamp: an unchanged rerun is answered from `.dagrun/noop-stamp`, and every
//! change the full path would act on sends the run down the full path.
//!
//! A stamp is only written over paths whose times are more than 2 s old (coarse
//! timestamps), so these tests wait that long before the run that writes it.

use std::{
    collections::BTreeSet,
    path::Path,
    process::Output,
    time::{Duration, SystemTime},
};

use crate::support::*;

const STAMP: &str = ".dagrun/noop-stamp";

/// A chain, a folder output and inputs of its own, one environment variable in the key.
const PIPE: &str = r#"
params:
  greeting: hello
fingerprint:
  env: [NOOP_FLAVOUR]
stages:
  prepare:
    kind: command
    cmd: cat in/a.txt > data.txt && echo ${params.greeting} >> data.txt
    deps: [in/a.txt]
    outs: [data.txt]
  tree:
    kind: command
    cmd: mkdir -p out/t && cp data.txt out/t/one.txt && cp in/b.txt out/t/two.txt
    deps: [data.txt, in/b.txt]
    outs: [out/t]
  last:
    kind: command
    cmd: cat out/t/one.txt out/t/two.txt > out/last.txt
    deps: [out/t]
    outs: [out/last.txt]
"#;

fn setup() -> Ws {
    let ws = Ws::new();
    ws.write("p.yaml", PIPE);
    ws.write("in/a.txt", "alpha\n");
    ws.write("in/b.txt", "beta\n");
    ws.write("other.yaml", OTHER);
    ws
}

/// A pipeline sharing nothing with `PIPE`: `cache gc other.yaml` drops `PIPE`'s records.
const OTHER: &str = r#"
stages:
  other:
    kind: command
    cmd: echo other > other.txt
    outs: [other.txt]
"#;

fn age() {
    std::thread::sleep(Duration::from_millis(2100));
}

/// Exit code, the nodes that ran, and the summary line without its time.
fn outcome(o: &Output) -> (Option<i32>, BTreeSet<String>, String) {
    let err = String::from_utf8_lossy(&o.stderr);
    let summary = err
        .lines()
        .find(|l| l.starts_with("p.yaml: "))
        .map(|l| {
            l.rsplit_once(" in ")
                .map(|(a, _)| a)
                .unwrap_or(l)
                .to_string()
        })
        .unwrap_or_default();
    (o.status.code(), executed(&err), summary)
}

/// Runs until a stamp is written (the run after the outputs are old enough).
fn stamped(ws: &Ws, args: &[&str]) {
    ws.run(args);
    age();
    let ran = ws.run(args);
    assert!(ran.is_empty(), "not a no-op: {ran:?}");
    assert!(ws.p(STAMP).exists(), "no stamp was written");
}

/// The stamp answers: nothing runs, the same summary, and the index is not even opened
/// (its seal file is unchanged).
fn answered(ws: &Ws, args: &[&str]) {
    let seal = std::fs::read(ws.p(".dagrun/db-seal")).unwrap();
    let o = ws.cmd(args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (_, ran, summary) = outcome(&o);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(summary, "p.yaml: 3 nodes, 0 ran, 3 cached");
    assert_eq!(
        std::fs::read(ws.p(".dagrun/db-seal")).unwrap(),
        seal,
        "the full path ran (it flushes the index)"
    );
}

fn set_mtime(p: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn an_unchanged_rerun_is_answered_by_the_stamp() {
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    answered(&ws, &["p.yaml"]);
    answered(&ws, &["p.yaml"]);
    // Off switch: the full path runs (and flushes).
    let seal = std::fs::read(ws.p(".dagrun/db-seal")).unwrap();
    let o = ws
        .cmd(&["p.yaml"])
        .env("DAGRUN_NOOP_STAMP", "0")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_ne!(std::fs::read(ws.p(".dagrun/db-seal")).unwrap(), seal);
    // ... and any command that opens the cache removed the stamp.
    assert!(!ws.p(STAMP).exists());
}

#[test]
fn an_input_rewritten_with_its_size_and_mtime_kept_reruns() {
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    let a = ws.p("in/a.txt");
    let old = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::write(&a, "ALPHA\n").unwrap();
    set_mtime(&a, old);
    assert_eq!(ws.run(&["p.yaml"]), set(&["prepare", "tree", "last"]));
}

#[test]
fn pipeline_params_and_environment_changes_rerun() {
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    // -S: a different command line.
    assert_eq!(
        ws.run(&["p.yaml", "-S", "params.greeting=hi"]),
        set(&["prepare", "tree", "last"])
    );
    stamped(&ws, &["p.yaml"]);
    // An edited pipeline (same length).
    ws.write("p.yaml", &PIPE.replace("hello", "howdy"));
    assert_eq!(ws.run(&["p.yaml"]), set(&["prepare", "tree", "last"]));
    // A variable of `fingerprint.env`.
    stamped(&ws, &["p.yaml"]);
    let o = ws
        .cmd(&["p.yaml"])
        .env("NOOP_FLAVOUR", "x")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(outcome(&o).1, set(&["prepare", "tree", "last"]));
}

#[test]
fn outputs_deleted_added_to_or_linked_are_seen() {
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    // A deleted output is restored by the full path (nothing runs, but it is back).
    std::fs::remove_file(ws.p("out/last.txt")).unwrap();
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert!(ws.p("out/last.txt").exists());

    // A file added inside a folder output: `tree` is not a no-op any more (its output
    // differs from the record: restored), and `last` reads a different folder.
    stamped(&ws, &["p.yaml"]);
    ws.write("out/t/three.txt", "gamma\n");
    let o = ws.dagrun(&["p.yaml"]);
    let plain = {
        let w2 = setup();
        stamped(&w2, &["p.yaml"]);
        w2.write("out/t/three.txt", "gamma\n");
        let o2 = w2
            .cmd(&["p.yaml"])
            .env("DAGRUN_NOOP_STAMP", "0")
            .output()
            .unwrap();
        outcome(&o2)
    };
    assert_eq!(outcome(&o), plain);

    // The output's folder replaced by a symbolic link to a copy of it: dagrun never
    // writes through a link; the full path says so, the stamp does not hide it.
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    copy_dir(&ws.p("out"), &ws.p("elsewhere"));
    std::fs::remove_dir_all(ws.p("out")).unwrap();
    std::os::unix::fs::symlink(ws.p("elsewhere"), ws.p("out")).unwrap();
    let seal = std::fs::read(ws.p(".dagrun/db-seal")).unwrap();
    let o = ws
        .cmd(&["p.yaml"])
        .env("RUST_LOG", "dagrun=debug")
        .output()
        .unwrap();
    assert_ne!(
        std::fs::read(ws.p(".dagrun/db-seal")).unwrap(),
        seal,
        "the stamp answered: {}",
        text(&o)
    );
    let w2 = setup();
    stamped(&w2, &["p.yaml"]);
    copy_dir(&w2.p("out"), &w2.p("elsewhere"));
    std::fs::remove_dir_all(w2.p("out")).unwrap();
    std::os::unix::fs::symlink(w2.p("elsewhere"), w2.p("out")).unwrap();
    let o2 = w2
        .cmd(&["p.yaml"])
        .env("DAGRUN_NOOP_STAMP", "0")
        .output()
        .unwrap();
    assert_eq!(outcome(&o), outcome(&o2), "{}\n{}", text(&o), text(&o2));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

#[test]
fn cache_gc_and_cleared_records_rerun() {
    let ws = setup();
    stamped(&ws, &["p.yaml"]);
    // Another command opened the cache: the stamp is gone, the full path decides.
    ws.ok(&["cache", "gc", "p.yaml"]);
    assert!(!ws.p(STAMP).exists());
    assert!(ws.run(&["p.yaml"]).is_empty());
    // Records cleared under a kept stamp (as if the removal had been lost): the key
    // covers the index's seal, which the clearing changed.
    stamped(&ws, &["p.yaml"]);
    let keep = std::fs::read(ws.p(STAMP)).unwrap();
    ws.ok(&["cache", "gc", "other.yaml"]);
    std::fs::write(ws.p(STAMP), keep).unwrap();
    let o = ws.dagrun(&["p.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    let seal_changed = outcome(&o);
    // With no records the outputs are not dagrun's any more, or run again: whatever
    // the full path says.
    let w2 = setup();
    stamped(&w2, &["p.yaml"]);
    w2.ok(&["cache", "gc", "other.yaml"]);
    let o2 = w2
        .cmd(&["p.yaml"])
        .env("DAGRUN_NOOP_STAMP", "0")
        .output()
        .unwrap();
    assert_eq!(seal_changed, outcome(&o2));
}

/// Blocks while `hold` exists: a second pipeline that keeps the cache busy.
const BUSY: &str = r#"
stages:
  busy:
    kind: command
    cmd: touch busy-started; while [ -e hold ]; do sleep 0.05; done; echo ok > busy.txt
    outs: [busy.txt]
"#;

#[test]
fn a_held_lock_behaves_as_without_the_stamp() {
    let ws = setup();
    ws.write("q.yaml", BUSY);
    stamped(&ws, &["p.yaml"]);
    let keep = std::fs::read(ws.p(STAMP)).unwrap();
    ws.write("hold", "");
    let mut other = ws.spawn(&["q.yaml"]);
    ws.wait_for("busy-started", Duration::from_secs(30));
    // The other run removed the stamp when it opened the cache; put it back, so that
    // only the lock stands between the stamp and an answer.
    std::fs::write(ws.p(STAMP), &keep).unwrap();
    let o = ws.dagrun(&["p.yaml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("is in use by another dagrun process"), "{t}");
    // `--wait` waits for it, then the full path (the other run flushed the index).
    let waiting = ws.spawn(&["--wait", "p.yaml"]);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert!(other.wait().unwrap().success());
    let o = waiting.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(outcome(&o).2, "p.yaml: 3 nodes, 0 ran, 3 cached");
}

/// The state the property test varies besides the files: the command line and the
/// environment.
#[derive(Clone, Default)]
struct Knobs {
    set: bool,
    flavour: bool,
}

fn run_with(ws: &Ws, k: &Knobs, stamp: bool) -> (Option<i32>, BTreeSet<String>, String) {
    let mut args = vec!["p.yaml"];
    if k.set {
        args.extend(["-S", "params.greeting=hi"]);
    }
    let mut c = ws.cmd(&args);
    c.env("DAGRUN_NOOP_STAMP", if stamp { "1" } else { "0" });
    if k.flavour {
        c.env("NOOP_FLAVOUR", "spicy");
    } else {
        c.env_remove("NOOP_FLAVOUR");
    }
    outcome(&c.output().unwrap())
}

/// One random change, made to a workspace.
fn mutate(ws: &Ws, m: u64) {
    match m {
        0 => {
            // Same size, same mtime, other bytes.
            let a = ws.p("in/a.txt");
            let old = std::fs::metadata(&a).unwrap().modified().unwrap();
            let now = ws.read("in/a.txt");
            let flipped = if now == "alpha\n" {
                "ALPHA\n"
            } else {
                "alpha\n"
            };
            std::fs::write(&a, flipped).unwrap();
            set_mtime(&a, old);
        }
        1 => set_mtime(&ws.p("in/b.txt"), SystemTime::now()),
        2 => {
            let now = ws.read("p.yaml");
            let next = if now.contains("hello") {
                now.replace("hello", "howdy")
            } else {
                now.replace("howdy", "hello")
            };
            ws.write("p.yaml", &next);
        }
        3 => {
            ws.ok(&["cache", "gc", "other.yaml"]);
        }
        9 => {
            ws.ok(&["cache", "gc", "p.yaml"]);
        }
        4 => {
            let _ = std::fs::remove_file(ws.p("out/last.txt"));
        }
        5 => {
            let extra = ws.p("out/t/extra.txt");
            if extra.exists() {
                std::fs::remove_file(extra).unwrap();
            } else if ws.p("out/t").is_dir() {
                std::fs::write(extra, "extra\n").unwrap();
            }
        }
        6 => {
            let out = ws.p("out");
            if out.is_symlink() {
                std::fs::remove_file(&out).unwrap();
                copy_dir(&ws.p("elsewhere"), &out);
                std::fs::remove_dir_all(ws.p("elsewhere")).unwrap();
            } else if out.is_dir() {
                copy_dir(&out, &ws.p("elsewhere"));
                std::fs::remove_dir_all(&out).unwrap();
                std::os::unix::fs::symlink(ws.p("elsewhere"), &out).unwrap();
            }
        }
        _ => {}
    }
}

#[test]
fn random_changes_get_the_same_answer_with_and_without_the_stamp() {
    let mut seed: u64 = std::env::var("DAGRUN_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("DAGRUN_PROP_SEED={seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (a, b) = (setup(), setup());
    let mut k = Knobs::default();
    let (mut stamp_used, mut stamps_seen) = (0, 0);
    for step in 0..8 {
        // Let outputs age so that `a` can write a stamp, then one run each.
        age();
        assert_eq!(
            run_with(&a, &k, true),
            run_with(&b, &k, false),
            "step {step}"
        );
        let had_stamp = a.p(STAMP).exists();
        stamps_seen += usize::from(had_stamp);
        let m = next() % 11;
        match m {
            7 => k.set = !k.set,
            8 => k.flavour = !k.flavour,
            10 => {}
            _ => {
                mutate(&a, m);
                mutate(&b, m);
            }
        }
        let seal = std::fs::read(a.p(".dagrun/db-seal")).ok();
        let (with, without) = (run_with(&a, &k, true), run_with(&b, &k, false));
        assert_eq!(with, without, "step {step}, change {m}");
        if had_stamp && std::fs::read(a.p(".dagrun/db-seal")).ok() == seal {
            stamp_used += 1;
        }
    }
    eprintln!("a stamp stood before {stamps_seen} of 8 changes, and answered after {stamp_used}");
    // Each change was judged with a stamp in place, not merely without one.
    assert!(
        stamps_seen >= 4,
        "only {stamps_seen} of 8 changes met a stamp"
    );
}
