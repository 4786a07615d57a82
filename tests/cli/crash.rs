//! The crash harness: kills dagrun (SIGKILL) at random moments, and aborts it at named
//! crash points (`DAGRUN_FAILPOINT`, see `cache/src/failpoint.rs`), during runs of many
//! short nodes, restores, `cache gc`, `cache verify` and native training; after each
//! crash it checks that `cache verify` finds nothing wrong, that the resumed run gives
//! the right bytes, and that nothing that had finished runs again.
//!
//! CI runs a bounded number of kills per scenario; to run longer by hand:
//! `DAGRUN_CRASH_KILLS=200 cargo test --test cli crash`. `DAGRUN_CRASH_SEED` replays the
//! random delays of a failed run (each test prints its seed).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use crate::support::*;

/// Kills per scenario.
fn kills() -> usize {
    std::env::var("DAGRUN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// xorshift64*: delays that a seed replays.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("DAGRUN_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{test}: DAGRUN_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay in `[0, max)`.
    fn delay(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.next() % ms)
    }
}

/// Runs `dagrun ARGS` and kills it with SIGKILL after `delay` (unless it finished
/// first). Returns the nodes it reported done, and whether it was killed.
fn kill_after(ws: &Ws, args: &[&str], delay: Duration) -> (BTreeSet<String>, bool) {
    let mut child = ws.spawn(args);
    let t = Instant::now();
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if t.elapsed() >= delay {
            kill(child.id(), libc::SIGKILL);
            break true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let o = child.wait_with_output().unwrap();
    (executed(&String::from_utf8_lossy(&o.stderr)), killed)
}

/// `cache verify` finds nothing wrong (or there is no cache yet: killed before it made one).
fn verify_clean(ws: &Ws, what: &str) {
    if !ws.p(".dagrun/db").exists() {
        return;
    }
    let o = ws.dagrun(&["cache", "verify"]);
    assert!(
        o.status.success() && text(&o).contains("no corruption"),
        "{what}: {}",
        text(&o)
    );
}

const N: usize = 16;

/// `N` short nodes, every other one writing an object file (above 16 KiB), the rest small
/// objects kept in the index, and a node reading them all. `tag` changes every output.
fn many(tag: &str) -> String {
    let list = (0..N).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    format!(
        r#"stages:
  gen:
    kind: command
    matrix: {{i: [{list}]}}
    cmd: >-
      echo {tag} ${{matrix.i}} > gen-${{matrix.i}}.txt;
      if [ $((${{matrix.i}} % 2)) = 0 ]; then head -c 20000 /dev/zero | tr '\0' '{tag}' >> gen-${{matrix.i}}.txt; fi;
      echo x >> runs-${{matrix.i}}.txt
    outs: [gen-${{matrix.i}}.txt]
  sum:
    kind: command
    needs: [gen]
    cmd: cat {files} | wc -c | tr -d ' ' > sum.txt
    outs: [sum.txt]
"#,
        files = (0..N)
            .map(|i| format!("gen-{i}.txt"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn expected_gen(tag: &str, i: usize) -> String {
    let mut s = format!("{tag} {i}\n");
    if i.is_multiple_of(2) {
        s.push_str(&tag.repeat(20_000));
    }
    s
}

/// Every output of [`many`] has its bytes.
fn check_many(ws: &Ws, tag: &str, what: &str) {
    let mut total = 0;
    for i in 0..N {
        let want = expected_gen(tag, i);
        total += want.len();
        assert_eq!(
            ws.read(&format!("gen-{i}.txt")),
            want,
            "{what}: gen-{i}.txt"
        );
    }
    assert_eq!(
        ws.read("sum.txt").trim(),
        total.to_string(),
        "{what}: sum.txt"
    );
}

/// How long a full run of the pipeline takes here (kills land within it).
fn timed_full_run(ws: &Ws) -> Duration {
    let t = Instant::now();
    ws.run(&["p.yaml"]);
    t.elapsed()
}

/// Resumes after a crash: nothing that had finished runs again, the bytes are right,
/// and the cache is intact.
fn resume(ws: &Ws, done_before: &BTreeSet<String>, tag: &str, what: &str) {
    verify_clean(ws, what);
    let again = ws.run(&["p.yaml"]);
    let rerun: Vec<_> = again.intersection(done_before).collect();
    assert!(
        rerun.is_empty(),
        "{what}: finished nodes ran again: {rerun:?}"
    );
    check_many(ws, tag, what);
    verify_clean(ws, what);
    assert!(
        ws.run(&["p.yaml"]).is_empty(),
        "{what}: a further run is a no-op"
    );
}

#[test]
fn crash_during_runs_of_many_short_nodes() {
    let mut rng = Rng::new("crash_during_runs_of_many_short_nodes");
    let probe = Ws::new();
    probe.write("p.yaml", &many("a"));
    let full = timed_full_run(&probe);
    for k in 0..kills() {
        let ws = Ws::new();
        ws.write("p.yaml", &many("a"));
        let delay = rng.delay(full);
        let (done, _) = kill_after(&ws, &["p.yaml"], delay);
        let what = format!("kill {k} after {delay:?}");
        resume(&ws, &done, "a", &what);
        // Each node's command ran once, or twice if the kill stopped it.
        for i in 0..N {
            let runs = std::fs::read_to_string(ws.p(&format!("runs-{i}.txt"))).unwrap();
            assert!(runs.lines().count() <= 2, "{what}: gen {i} ran {runs:?}");
        }
    }
}

#[test]
fn crash_during_restores() {
    let mut rng = Rng::new("crash_during_restores");
    let ws = Ws::new();
    ws.write("p.yaml", &many("b"));
    ws.run(&["p.yaml"]);
    // How long restoring everything takes.
    let remove_outputs = |ws: &Ws| {
        for i in 0..N {
            let _ = std::fs::remove_file(ws.p(&format!("gen-{i}.txt")));
        }
        let _ = std::fs::remove_file(ws.p("sum.txt"));
    };
    remove_outputs(&ws);
    let full = timed_full_run(&ws);
    for k in 0..kills() {
        remove_outputs(&ws);
        // Half of the time a modified output instead of a missing one.
        if k % 2 == 1 {
            ws.write("gen-3.txt", "edited\n");
        }
        let delay = rng.delay(full + Duration::from_millis(20));
        kill_after(&ws, &["p.yaml"], delay);
        let what = format!("kill {k} after {delay:?}");
        verify_clean(&ws, &what);
        // Restores only: everything was cached.
        let again = ws.run(&["p.yaml"]);
        assert!(again.is_empty(), "{what}: {again:?}");
        check_many(&ws, "b", &what);
    }
}

#[test]
fn crash_during_gc_and_verify() {
    let mut rng = Rng::new("crash_during_gc_and_verify");
    for k in 0..kills() {
        let ws = Ws::new();
        // Two generations: the first one's records are garbage once the second ran.
        ws.write("p.yaml", &many("c"));
        ws.run(&["p.yaml"]);
        ws.write("p.yaml", &many("d"));
        ws.run(&["p.yaml"]);
        let t = Instant::now();
        ws.ok(&["cache", "gc", "p.yaml", "--dry-run"]);
        let probe = t.elapsed() * 2;
        for args in [["cache", "gc", "p.yaml"].as_slice(), &["cache", "verify"]] {
            let delay = rng.delay(probe);
            kill_after(&ws, args, delay);
            let what = format!("kill {k} of {args:?} after {delay:?}");
            verify_clean(&ws, &what);
            assert!(ws.run(&["p.yaml"]).is_empty(), "{what}");
            check_many(&ws, "d", &what);
        }
        // The first generation again: it runs (gc may have removed it, or not yet).
        ws.write("p.yaml", &many("c"));
        ws.run(&["p.yaml"]);
        check_many(&ws, "c", "after gc");
    }
}

/// Aborts at a named crash point (the `N`-th time it is reached).
fn crash_at(ws: &Ws, args: &[&str], point: &str) -> BTreeSet<String> {
    let o = ws
        .cmd(args)
        .env("DAGRUN_FAILPOINT", point)
        .output()
        .expect("run dagrun");
    let t = text(&o);
    assert!(!o.status.success(), "{point}: did not crash: {t}");
    assert!(t.contains("failpoint"), "{point}: {t}");
    executed(&String::from_utf8_lossy(&o.stderr))
}

#[test]
fn crash_at_every_named_point() {
    let mut rng = Rng::new("crash_at_every_named_point");
    // The commit path: each node's record queued or inserted (once a node), and a group
    // commit's first flush (nodes finishing together share one, so only the first is sure
    // to come).
    for point in ["node-finished", "commit-insert"] {
        for _ in 0..kills() {
            let ws = Ws::new();
            ws.write("p.yaml", &many("e"));
            let hit = 1 + rng.next() % (N as u64);
            let point = format!("{point}:{hit}");
            let done = crash_at(&ws, &["p.yaml"], &point);
            resume(&ws, &done, "e", &point);
        }
    }
    for point in ["commit-before-flush:1", "commit-after-flush:1"] {
        let ws = Ws::new();
        ws.write("p.yaml", &many("e"));
        let done = crash_at(&ws, &["p.yaml"], point);
        resume(&ws, &done, "e", point);
    }
    // Restores (every output missing, then restored).
    for _ in 0..kills() {
        let ws = Ws::new();
        ws.write("p.yaml", &many("f"));
        ws.run(&["p.yaml"]);
        for i in 0..N {
            std::fs::remove_file(ws.p(&format!("gen-{i}.txt"))).unwrap();
        }
        let point = format!("restore-before-rename:{}", 1 + rng.next() % (N as u64));
        crash_at(&ws, &["p.yaml"], &point);
        verify_clean(&ws, &point);
        assert!(ws.run(&["p.yaml"]).is_empty(), "{point}");
        check_many(&ws, "f", &point);
    }
    // gc: once the records are gone (durably), and after each object removal.
    for point in [
        "gc-records-removed:1",
        "gc-object-removed:1",
        "gc-object-removed:5",
    ] {
        let ws = Ws::new();
        ws.write("p.yaml", &many("g"));
        ws.run(&["p.yaml"]);
        ws.write("p.yaml", &many("h"));
        ws.run(&["p.yaml"]);
        crash_at(&ws, &["cache", "gc", "p.yaml"], point);
        verify_clean(&ws, point);
        assert!(ws.run(&["p.yaml"]).is_empty(), "{point}");
        // Whatever gc removed runs again; what it did not is still cached.
        ws.write("p.yaml", &many("g"));
        ws.run(&["p.yaml"]);
        check_many(&ws, "g", point);
        verify_clean(&ws, point);
    }
}

/// A tiny `lm_pretrain` that checkpoints every 5 steps.
const TRAIN: &str = r#"
stages:
  task:
    kind: toy_task
    params: {seed: 0}
  lm:
    kind: lm_pretrain
    device: cpu
    params:
      corpus: ${stages.task.corpus}
      tokenizer: ${stages.task.tokenizer}
      n_layer: 1
      n_head: 2
      n_embd: 16
      steps: 40
      checkpoint_every: 5
      seed: 0
"#;

/// The model's content hash, from `show --json`.
fn model_hash(ws: &Ws) -> String {
    let (out, _) = ws.ok(&["show", "lm", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["outputs"]["model"]["hash"].as_str().unwrap().to_string()
}

#[test]
fn crash_during_native_training() {
    let mut rng = Rng::new("crash_during_native_training");
    let reference = Ws::new();
    reference.write("p.yaml", TRAIN);
    let full = timed_full_run(&reference);
    let want = model_hash(&reference);
    for k in 0..kills().min(3) {
        let ws = Ws::new();
        ws.write("p.yaml", TRAIN);
        let delay = rng.delay(full);
        let (done, _) = kill_after(&ws, &["p.yaml"], delay);
        let what = format!("kill {k} after {delay:?}");
        verify_clean(&ws, &what);
        let again = ws.run(&["p.yaml"]);
        assert!(again.is_disjoint(&done), "{what}: {again:?} after {done:?}");
        verify_clean(&ws, &what);
        // A resumed training ends with the same model as an uninterrupted one.
        assert_eq!(model_hash(&ws), want, "{what}");
    }
}
