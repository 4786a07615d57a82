use std::{collections::BTreeSet, time::Duration};

use crate::support::*;

/// `fast` finishes at once; `slow` blocks while `hold` exists, after noting in its
/// scratch folder that it started. On a resume it reports whether it found the note.
const SLOW: &str = r#"
stages:
  fast:
    kind: command
    matrix: {i: [1, 2]}
    cmd: echo fast ${matrix.i} > fast-${matrix.i}.txt
    outs: [fast-${matrix.i}.txt]
  slow:
    kind: command
    needs: [fast]
    cmd: >-
      if [ -e "$DAGRUN_SCRATCH/started" ]; then r=resumed; else r=fresh; fi;
      touch "$DAGRUN_SCRATCH/started"; touch slow-started;
      while [ -e hold ]; do sleep 0.05; done;
      echo $r > slow.txt
    outs: [slow.txt]
"#;

#[test]
fn kill_9_then_resume_reuses_finished_nodes_and_restarts_the_interrupted_one() {
    let ws = Ws::new();
    ws.write("p.yaml", SLOW);
    ws.write("hold", "");
    let mut child = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    std::fs::remove_file(ws.p("hold")).unwrap();
    // Nothing is corrupt, the lock is free, and the finished nodes are reused.
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    let (run, _) = ws.predicted("p.yaml");
    assert_eq!(run, set(&["slow"]));
    assert_eq!(ws.run(&["p.yaml"]), set(&["slow"]));
    // The interrupted node got its scratch folder back.
    assert_eq!(ws.read("slow.txt"), "resumed\n");
    // Once committed, the scratch folder is gone.
    let scratch = ws.p(".dagrun/scratch");
    assert_eq!(
        std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0),
        0
    );
}

#[test]
fn ctrl_c_stops_cleanly_with_nothing_half_written() {
    let ws = Ws::new();
    ws.write("p.yaml", SLOW);
    ws.write("hold", "");
    let child = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    kill(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    assert!(!ws.p("slow.txt").exists());
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert_eq!(ws.run(&["p.yaml"]), set(&["slow"]));
    let (out, _) = ws.ok(&["log"]);
    assert!(out.contains("interrupted"), "{out}");
}

#[test]
fn a_second_invocation_names_the_holder_or_waits() {
    let ws = Ws::new();
    ws.write("p.yaml", SLOW);
    ws.write("hold", "");
    let mut first = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    let o = ws.dagrun(&["p.yaml"]);
    let t = text(&o);
    assert_eq!(
        o.status.code(),
        Some(3),
        "a busy cache has its own exit code: {t}"
    );
    assert!(t.contains("is in use by another dagrun process"), "{t}");
    assert!(t.contains(&format!("pid {}", first.id())), "{t}");
    assert!(t.contains("run p.yaml"), "{t}");
    let o = ws.dagrun(&["-q", "log"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // `status` says what the run is doing, from the snapshot it writes every second.
    let (out, _) = ws.ok(&["status"]);
    assert!(
        out.starts_with(&format!(
            "a run is in progress (pid {}, started ",
            first.id()
        )),
        "{out}"
    );
    assert!(out.contains("nodes finished"), "{out}");
    let (out, _) = ws.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["in_progress"]["pid"], first.id(), "{out}");
    assert!(v["stages"].is_null(), "{out}");
    let t0 = std::time::Instant::now();
    loop {
        let (out, _) = ws.ok(&["status"]);
        if out.contains("  running  slow  ") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // With --wait, the second one waits for the first and then finds everything cached.
    let mut second = ws.spawn(&["p.yaml", "--wait"]);
    let stderr = second.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let _ = tx.send(lines.next().and_then(|l| l.ok()).unwrap_or_default());
        lines
            .map_while(Result::ok)
            .collect::<Vec<String>>()
            .join("\n")
    });
    // Release the first run only once the second says it is waiting for it.
    let first_line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the second dagrun printed nothing");
    assert!(
        first_line.contains("waiting for another dagrun process"),
        "{first_line}"
    );
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    let rest = reader.join().unwrap();
    assert!(executed(&rest).is_empty(), "{rest}");
}

/// A command whose subshell (not `sh` itself) writes after a while.
const LINGER: &str = r#"
stages:
  slow:
    kind: command
    cmd: >-
      touch slow-started;
      (sleep 2; echo line >> late.txt);
      echo done > slow.txt
    outs: [slow.txt]
"#;

#[test]
fn kill_9_leaves_no_command_writing_behind_the_resumed_run() {
    let ws = Ws::new();
    ws.write("p.yaml", LINGER);
    let mut child = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    // The resumed run kills the subshell the dead one left, then reruns the node.
    assert_eq!(ws.run(&["p.yaml"]), set(&["slow"]));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ws.read("late.txt"),
        "line\n",
        "only the resumed run's command wrote"
    );
}

#[test]
fn temp_files_of_an_interrupted_restore_are_not_content_and_are_removed() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: mkdir -p data && echo a > data/a.txt\n    outs: [data/a.txt]\n  b:\n    kind: command\n    cmd: cat data/* > b.txt\n    deps: [data]\n    outs: [b.txt]\n",
    );
    assert_eq!(ws.run(&["p.yaml"]), set(&["a", "b"]));
    // A restore of data/a.txt killed between writing its temp file and the rename.
    std::fs::remove_file(ws.p("data/a.txt")).unwrap();
    ws.write("data/.a.txt.dagrun-tmp-4242", "a\n");
    let (run, _) = ws.predicted("p.yaml");
    assert!(run.is_empty(), "{run:?}");
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert_eq!(ws.read("data/a.txt"), "a\n");
    assert!(!ws.p("data/.a.txt.dagrun-tmp-4242").exists());
}

#[test]
fn the_summary_and_the_log_count_each_outcome_once() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:
  ok:
    kind: command
    matrix: {i: [1, 2, 3]}
    cmd: echo ${matrix.i} > ok-${matrix.i}.txt
    outs: [ok-${matrix.i}.txt]
  bad:
    kind: command
    matrix: {i: [1, 2]}
    cmd: exit 3
  after:
    kind: command
    needs: ['bad[i=1]']
    cmd: echo after
",
    );
    let o = ws.dagrun(&["p.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("p.yaml: 6 nodes, 3 ran, 0 cached, 2 failed, 1 skipped in"),
        "{}",
        text(&o)
    );
    let (out, _) = ws.ok(&["log"]);
    assert!(
        out.contains("6 nodes, 3 ran, 0 cached, 2 failed, 1 skipped (failed: bad[i=1], bad[i=2])"),
        "{out}"
    );

    // An interrupted run: the node that was stopped is counted as interrupted.
    let ws = Ws::new();
    ws.write("p.yaml", SLOW);
    ws.write("hold", "");
    let child = ws.spawn(&["p.yaml"]);
    ws.wait_for("slow-started", Duration::from_secs(30));
    kill(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        text(&o).contains("p.yaml: 3 nodes, 2 ran, 0 cached, 1 interrupted in"),
        "{}",
        text(&o)
    );
    let (out, _) = ws.ok(&["log"]);
    assert!(
        out.contains("3 nodes, 2 ran, 0 cached, 1 interrupted"),
        "{out}"
    );
    std::fs::remove_file(ws.p("hold")).unwrap();
    // One node: no plural.
    let (_, err) = ws.ok(&["p.yaml"]);
    assert!(err.contains("p.yaml: 3 nodes, 1 ran, 2 cached in"), "{err}");
    let (out, _) = ws.ok(&["plan", "p.yaml", "--only", "slow"]);
    assert!(out.starts_with("p.yaml: 1 node, 1 cached"), "{out}");
}

#[test]
fn a_commands_log_keeps_the_order_of_stdout_and_stderr() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: echo one; echo two >&2; echo 'dagrun:progress 1/2 half'; echo three; echo four >&2\n",
    );
    ws.run(&["p.yaml"]);
    let (out, _) = ws.ok(&["show", "a"]);
    let log: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("log"))
        .skip(1)
        .map(str::trim)
        .collect();
    // The progress line updates the display and is not logged.
    assert_eq!(log[1..], ["one", "two", "three", "four"], "{out}");
}

#[test]
fn status_why_and_show_say_that_the_last_run_failed() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: echo oops; exit 3\n",
    );
    assert_eq!(ws.dagrun(&["p.yaml"]).status.code(), Some(1));
    let want = "its last run failed (";
    let (out, _) = ws.ok(&["status", "p.yaml"]);
    assert!(
        out.contains(want) && out.contains("command exited with status 3"),
        "{out}"
    );
    let (out, _) = ws.ok(&["why", "a"]);
    assert!(
        out.contains(want) && out.contains("command exited with status 3; log: .dagrun/logs/a.log"),
        "{out}"
    );
    assert!(!out.contains("never run"), "{out}");
    let (out, _) = ws.ok(&["show", "a"]);
    assert!(
        out.contains("command exited with status 3")
            && out.contains("log       .dagrun/logs/a.log")
            && out.contains("  oops"),
        "{out}"
    );
    // Once it succeeds, the failure is forgotten.
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: echo fine\n",
    );
    ws.run(&["p.yaml"]);
    let (out, _) = ws.ok(&["show", "a"]);
    assert!(!out.contains("failed"), "{out}");
}

// ---- the scheduler and group commit under kill -9 (issue 19) --------------------------

/// A chain of `n` short nodes `c0 → c1 → …` (each appends to its upstream's output) and
/// `n` leaves `l0 …` that each read `c0`'s output: chained commits and commits that
/// finish together.
fn chain_and_fan(n: usize) -> String {
    let mut y = String::from("stages:\n");
    for k in 0..n {
        let input = if k == 0 {
            "input.txt".to_string()
        } else {
            format!("c{}.txt", k - 1)
        };
        y.push_str(&format!(
            "  c{k}:\n    kind: command\n    cmd: cat {input} > c{k}.txt && echo {k} >> c{k}.txt\n    deps: [{input}]\n    outs: [c{k}.txt]\n"
        ));
        y.push_str(&format!(
            "  l{k}:\n    kind: command\n    cmd: cat c0.txt > l{k}.txt && echo leaf {k} >> l{k}.txt\n    deps: [c0.txt]\n    outs: [l{k}.txt]\n"
        ));
    }
    y
}

/// The upstream ids of each node of [`chain_and_fan`].
fn chain_and_fan_upstream(n: usize) -> Vec<(String, Option<String>)> {
    let mut v = Vec::new();
    for k in 0..n {
        v.push((format!("c{k}"), (k > 0).then(|| format!("c{}", k - 1))));
        v.push((format!("l{k}"), Some("c0".to_string())));
    }
    v
}

/// Checks what must hold after any crash: the cache verifies, every node reported done
/// (`  done   ID` printed before the kill) is cached now, and no record is committed
/// without the record of its upstream (the set of committed nodes is closed upward).
fn assert_consistent(ws: &Ws, n: usize, reported_done: &BTreeSet<String>) {
    if !ws.p(".dagrun/db").exists() {
        // Killed before the cache was made: nothing can have finished.
        assert!(reported_done.is_empty(), "{reported_done:?}");
        return;
    }
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    let plan = ws.plan_json("p.yaml");
    let cached: BTreeSet<String> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "cached")
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    for d in reported_done {
        assert!(
            cached.contains(d),
            "`{d}` was reported done before the kill but is not cached: {plan}"
        );
    }
    // Nodes with a committed record (`latest`), read from the cache itself.
    let cache = dagrun_cache::Cache::open(
        &ws.p(".dagrun"),
        &dagrun_cache::OpenOptions {
            wait: false,
            holder: "test".into(),
        },
        &|_| {},
    )
    .expect("open the cache");
    let committed: BTreeSet<String> = cache
        .latest_all()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    drop(cache);
    for (id, up) in chain_and_fan_upstream(n) {
        if let Some(up) = up {
            if committed.contains(&id) {
                assert!(
                    committed.contains(&up),
                    "`{id}` was committed before its upstream `{up}`: {committed:?}"
                );
            }
        }
    }
}

fn done_lines(stderr: &str) -> BTreeSet<String> {
    executed(stderr)
}

#[test]
fn a_run_killed_at_each_commit_step_resumes_with_nothing_corrupt_or_rerun() {
    let n = 4;
    for point in [
        "node-finished:3",
        "commit-insert:2",
        "commit-before-flush:3",
        "commit-after-flush:4",
    ] {
        let ws = Ws::new();
        ws.write("p.yaml", &chain_and_fan(n));
        ws.write("input.txt", "in\n");
        let o = ws
            .cmd(&["p.yaml", "-j", "2"])
            .env("DAGRUN_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "{point}: the failpoint did not stop the run: {}",
            text(&o)
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains("failpoint"), "{point}: {err}");
        let before = done_lines(&err);
        assert_consistent(&ws, n, &before);
        let again = ws.run(&["p.yaml", "-j", "2"]);
        assert!(
            again.is_disjoint(&before),
            "{point}: finished nodes ran again: {:?}",
            again.intersection(&before).collect::<Vec<_>>()
        );
        // A node whose record was durable when the run stopped, but not yet reported,
        // is in neither set: it ran once and is cached.
        let all: BTreeSet<String> = chain_and_fan_upstream(n)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!((&again | &before).is_subset(&all));
        assert_consistent(&ws, n, &all);
        assert_eq!(ws.read(&format!("c{}.txt", n - 1)), "in\n0\n1\n2\n3\n");
        assert!(ws.run(&["p.yaml"]).is_empty(), "{point}: a no-op after");
    }
}

#[test]
fn many_short_nodes_killed_at_random_points_never_corrupt_or_rerun_finished_work() {
    let n = 12;
    let ws = Ws::new();
    ws.write("p.yaml", &chain_and_fan(n));
    ws.write("input.txt", "in\n");
    let mut done: BTreeSet<String> = BTreeSet::new();
    // Kill times from a fixed linear congruential sequence: the same every run.
    let mut x: u64 = 19;
    for round in 0..8 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis(20 + (x >> 33) % 250);
        let child = ws.spawn(&["p.yaml", "-j", "2"]);
        std::thread::sleep(after);
        kill(child.id(), libc::SIGKILL);
        let o = child.wait_with_output().unwrap();
        let now = done_lines(&String::from_utf8_lossy(&o.stderr));
        assert!(
            now.is_disjoint(&done),
            "round {round}: finished nodes ran again: {:?}",
            now.intersection(&done).collect::<Vec<_>>()
        );
        done.extend(now);
        assert_consistent(&ws, n, &done);
    }
    let last = ws.run(&["p.yaml", "-j", "2"]);
    assert!(last.is_disjoint(&done), "{last:?}");
    let mut want = String::from("in\n");
    for k in 0..n {
        want.push_str(&format!("{k}\n"));
    }
    assert_eq!(ws.read(&format!("c{}.txt", n - 1)), want);
    assert_eq!(ws.read("l5.txt"), "in\n0\nleaf 5\n");
    assert!(ws.run(&["p.yaml"]).is_empty());
}

#[test]
fn concurrent_invocations_run_each_node_once_and_leave_the_cache_whole() {
    let n = 8;
    let ws = Ws::new();
    ws.write("p.yaml", &chain_and_fan(n));
    ws.write("input.txt", "in\n");
    let runs: Vec<_> = (0..3)
        .map(|_| ws.spawn(&["p.yaml", "-j", "2", "--wait"]))
        .collect();
    let mut ran = Vec::new();
    for c in runs {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        ran.push(done_lines(&String::from_utf8_lossy(&o.stderr)));
    }
    let total: usize = ran.iter().map(BTreeSet::len).sum();
    assert_eq!(
        total,
        2 * n,
        "each node ran once over all invocations: {ran:?}"
    );
    assert_consistent(&ws, n, &ran.iter().flatten().cloned().collect());
    assert!(ws.run(&["p.yaml"]).is_empty());
}
