use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn dry_run_predicts_exactly_what_runs_and_writes_nothing() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    // Nothing exists yet: the dry run must not create the cache.
    let (run, blocked) = ws.predicted("p.yaml");
    assert!(
        !ws.p(".dagrun").exists(),
        "a dry run wrote the cache folder"
    );
    assert!(blocked.is_empty());
    assert_eq!(ws.run(&["p.yaml"]), run);

    // Change one seed's command: only it is predicted, only it runs.
    ws.write(
        "p.yaml",
        &SWEEP.replace("echo ${matrix.seed} >>", "echo seed ${matrix.seed} >>"),
    );
    let (run, blocked) = ws.predicted("p.yaml");
    assert_eq!(
        run,
        set(&["train[seed=0]", "train[seed=1]", "train[seed=2]"])
    );
    assert!(blocked.is_empty());
    let (out, _) = ws.ok(&["p.yaml", "--dry-run"]);
    assert!(out.contains("param `cmd` changed"), "{out}");
    assert_eq!(ws.run(&["p.yaml"]), run);

    // Change the greeting: prepare is stale, the sweep is blocked on it and reruns
    // because data.txt changes.
    ws.write(
        "p.yaml",
        &SWEEP
            .replace("echo ${matrix.seed} >>", "echo seed ${matrix.seed} >>")
            .replace("hello", "bonjour"),
    );
    let (run, blocked) = ws.predicted("p.yaml");
    assert_eq!(run, set(&["prepare"]));
    assert_eq!(
        blocked,
        set(&["train[seed=0]", "train[seed=1]", "train[seed=2]"])
    );
    let ran = ws.run(&["p.yaml"]);
    assert_eq!(ran, &run | &blocked);
    assert_eq!(ws.read("model-0.txt"), "bonjour\nseed 0\n");
}

#[test]
fn early_cutoff_keeps_downstream_cached() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    ws.run(&["p.yaml"]);
    // A different command that writes the same bytes.
    ws.write(
        "p.yaml",
        &SWEEP.replace(
            "echo ${params.greeting} > data.txt",
            "printf 'hello\\n' > data.txt",
        ),
    );
    let (out, err) = ws.ok(&["p.yaml"]);
    assert_eq!(executed(&err), set(&["prepare"]), "{out}{err}");
    assert!(err.contains("3 kept by early cutoff"), "{err}");

    // --rerun forces a node; downstream stays cached since outputs are identical.
    assert_eq!(ws.run(&["p.yaml", "--rerun", "prepare"]), set(&["prepare"]));
    // --downstream forces everything below too.
    assert_eq!(
        ws.run(&["p.yaml", "--rerun", "prepare", "--downstream"]),
        set(&["prepare", "train[seed=0]", "train[seed=1]", "train[seed=2]"])
    );
    // One node of a sweep.
    assert_eq!(
        ws.run(&["p.yaml", "--rerun", "train[seed=1]"]),
        set(&["train[seed=1]"])
    );
}

#[test]
fn outputs_are_restored_from_the_cache_without_running() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    ws.run(&["p.yaml"]);
    std::fs::remove_file(ws.p("model-1.txt")).unwrap();
    ws.write("data.txt", "tampered\n");
    let (out, _) = ws.ok(&["plan", "p.yaml"]);
    assert!(out.contains("will restore data.txt"), "{out}");
    let (_, err) = ws.ok(&["p.yaml"]);
    assert!(executed(&err).is_empty(), "{err}");
    assert!(err.contains("restored"), "{err}");
    assert_eq!(ws.read("model-1.txt"), "hello\n1\n");
    assert_eq!(ws.read("data.txt"), "hello\n");
}

#[test]
fn input_files_are_part_of_the_key_and_why_names_them() {
    let ws = Ws::new();
    ws.write("raw.csv", "a,b\n1,2\n");
    ws.write(
        "p.yaml",
        "stages:\n  clean:\n    kind: command\n    cmd: tr a-z A-Z < raw.csv > clean.csv\n    deps: [raw.csv]\n    outs: [clean.csv]\n",
    );
    ws.run(&["p.yaml"]);
    let (out, _) = ws.ok(&["why", "clean"]);
    assert!(out.contains("cached"), "{out}");
    ws.write("raw.csv", "a,b\n3,4\n");
    let (out, _) = ws.ok(&["why", "clean"]);
    assert!(out.contains("input file `raw.csv` changed"), "{out}");
    let (out, _) = ws.ok(&["status"]);
    assert!(out.contains("1 stale"), "{out}");
    assert_eq!(ws.run(&["p.yaml"]), set(&["clean"]));
    assert_eq!(ws.read("clean.csv"), "A,B\n3,4\n");
    // Key order in YAML does not matter.
    ws.write(
        "p.yaml",
        "stages:\n  clean:\n    outs: [clean.csv]\n    deps: [raw.csv]\n    cmd: tr a-z A-Z < raw.csv > clean.csv\n    kind: command\n",
    );
    assert!(ws.run(&["p.yaml"]).is_empty());
}

#[test]
fn a_failed_stage_is_not_cached_and_independent_nodes_finish() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  bad:
    kind: command
    cmd: echo "about to fail"; exit 3
    outs: [bad.txt]
  after_bad:
    kind: command
    cmd: cat bad.txt > after.txt
    deps: [bad.txt]
    outs: [after.txt]
  good:
    kind: command
    cmd: echo fine > good.txt
    outs: [good.txt]
"#,
    );
    let o = ws.dagrun(&["p.yaml"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("failed: bad: command exited with status 3"),
        "{t}"
    );
    assert!(t.contains("log: .dagrun/logs/bad.log"), "{t}");
    assert!(ws.read(".dagrun/logs/bad.log").contains("about to fail"));
    assert!(t.contains("skip   after_bad"), "{t}");
    assert_eq!(ws.read("good.txt"), "fine\n");
    // The failure was not cached: fixing it runs it.
    ws.write(
        "p.yaml",
        &ws.read("p.yaml").replace("exit 3", "echo ok > bad.txt"),
    );
    assert_eq!(ws.run(&["p.yaml"]), set(&["bad", "after_bad"]));
    assert!(
        !ws.p(".dagrun/logs/bad.log").exists(),
        "stale failure logs are removed"
    );
}

#[test]
fn show_log_export_and_progress_lines() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  train:
    kind: command
    cmd: for i in 1 2 3; do echo "dagrun:progress $i/3 step $i"; echo "loss $i"; done; mkdir -p model && echo w > model/weights.bin
    outs: [model]
"#,
    );
    ws.ok(&["p.yaml"]);
    let (out, _) = ws.ok(&["show", "train"]);
    assert!(out.contains("model  file"), "{out}");
    assert!(out.contains("1 files"), "{out}");
    assert!(out.contains("loss 3"), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.trim_start().starts_with("dagrun:progress")),
        "progress lines are not logged: {out}"
    );
    let (out, _) = ws.ok(&["show", "train", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["node"], "train");
    let (out, _) = ws.ok(&["log"]);
    assert!(out.contains("success"), "{out}");
    let dest = ws.p("exported");
    ws.ok(&["export", "train", dest.to_str().unwrap()]);
    assert_eq!(ws.read("exported/model/weights.bin"), "w\n");
    let o = ws.dagrun(&["show", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("no record of node `nope`"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_rewrite_that_keeps_size_and_mtime_is_still_seen() {
    let ws = Ws::new();
    let backdate = |rel: &str| {
        let st = std::process::Command::new("touch")
            .args(["-d", "2020-01-01 00:00:00"])
            .arg(ws.p(rel))
            .status()
            .unwrap();
        assert!(st.success());
    };
    ws.write("raw.csv", "a,b\n1,2\n");
    backdate("raw.csv");
    ws.write(
        "p.yaml",
        "stages:\n  clean:\n    kind: command\n    cmd: tr a-z A-Z < raw.csv > clean.csv\n    deps: [raw.csv]\n    outs: [clean.csv]\n",
    );
    // Older than the clock's resolution, so the stat cache trusts it.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(ws.run(&["p.yaml"]), set(&["clean"]));
    // Same size, same inode, the old mtime put back (as `cp -p` or `utime` would).
    std::fs::write(ws.p("raw.csv"), "a,b\n3,4\n").unwrap();
    backdate("raw.csv");
    assert_eq!(ws.run(&["p.yaml"]), set(&["clean"]));
    assert_eq!(ws.read("clean.csv"), "A,B\n3,4\n");
}

#[test]
fn the_order_of_outs_is_not_in_the_key_and_a_command_device_is() {
    let ws = Ws::new();
    let p = |outs: &str, device: &str| {
        format!("stages:\n  a:\n    kind: command\n    cmd: echo $DAGRUN_DEVICE > x.txt; echo y > y.txt\n    outs: [{outs}]\n{device}")
    };
    ws.write("p.yaml", &p("x.txt, y.txt", ""));
    assert_eq!(ws.run(&["p.yaml"]), set(&["a"]));
    ws.write("p.yaml", &p("y.txt, x.txt", ""));
    assert!(ws.run(&["p.yaml"]).is_empty());
    ws.write("p.yaml", &p("y.txt, x.txt", "    device: cuda:1\n"));
    assert_eq!(ws.run(&["p.yaml"]), set(&["a"]));
    assert_eq!(ws.read("x.txt"), "cuda:1\n");
    let (out, _) = ws.ok(&["show", "a"]);
    assert!(out.contains("cuda:1"), "{out}");
}

#[test]
fn why_names_a_folder_input_as_a_folder_and_an_unset_variable_as_unset() {
    let ws = Ws::new();
    ws.write("data/a.txt", "a\n");
    ws.write(
        "p.yaml",
        "fingerprint:\n  env: [DAGRUN_TEST_SEED]\nstages:\n  a:\n    kind: command\n    cmd: ls data > list.txt\n    deps: [data]\n    outs: [list.txt]\n",
    );
    ws.run(&["p.yaml"]);
    ws.write("data/b.txt", "b\n");
    let o = ws
        .cmd(&["why", "a"])
        .env("DAGRUN_TEST_SEED", "3")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(out.contains("input folder `data` changed"), "{out}");
    assert!(
        out.contains("environment `env:DAGRUN_TEST_SEED` changed: (unset or empty) → 3"),
        "{out}"
    );
}

// ---- the plan says what the run will do (issue 17) -----------------------------------

/// `up` feeds `down`; `down` also reads an environment variable.
const TWO_LEVELS: &str = r#"
fingerprint:
  env: [DAGRUN_TEST_LEVEL]
stages:
  up:
    kind: command
    cmd: echo up > up.txt
    outs: [up.txt]
  down:
    kind: command
    cmd: cat up.txt > down.txt && echo down >> down.txt
    deps: [up.txt]
    outs: [down.txt]
  other:
    kind: command
    cmd: cat up.txt > other.txt
    deps: [up.txt]
    outs: [other.txt]
"#;

/// The plan's will_run set and each node's state, with `env` set for the plan.
fn plan_with(ws: &Ws, env: &[(&str, &str)]) -> serde_json::Value {
    let mut c = ws.cmd(&["plan", "p.yaml", "--json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn state_of<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {plan}"))
}

fn will_run(plan: &serde_json::Value) -> BTreeSet<String> {
    plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["will_run"] == true)
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

fn run_with(ws: &Ws, env: &[(&str, &str)]) -> BTreeSet<String> {
    let mut c = ws.cmd(&["p.yaml"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    executed(&String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_node_changed_itself_behind_a_changed_upstream_is_stale_with_its_own_reason() {
    let ws = Ws::new();
    ws.write("p.yaml", TWO_LEVELS);
    run_with(&ws, &[("DAGRUN_TEST_LEVEL", "1")]);
    // Both levels change at once: up's command, and down's command.
    ws.write(
        "p.yaml",
        &TWO_LEVELS
            .replace("echo up > up.txt", "echo UP > up.txt")
            .replace("echo down >>", "echo DOWN >>"),
    );
    let plan = plan_with(&ws, &[("DAGRUN_TEST_LEVEL", "1")]);
    let down = state_of(&plan, "down");
    assert_eq!(down["state"], "stale", "{plan}");
    assert_eq!(down["will_run"], true);
    let reasons = down["reasons"].to_string();
    assert!(
        reasons.contains("cmd"),
        "down's own change is said: {reasons}"
    );
    // `other` changed nothing itself: blocked on `up`, as before.
    assert_eq!(state_of(&plan, "other")["state"], "blocked");
    let (out, _) = ws.ok(&["why", "down", "-p", "p.yaml"]);
    assert!(out.contains("cmd"), "{out}");
    let predicted = will_run(&plan);
    let ran = run_with(&ws, &[("DAGRUN_TEST_LEVEL", "1")]);
    assert!(predicted.is_subset(&ran), "{predicted:?} ⊄ {ran:?}");
    assert_eq!(ran, set(&["up", "down", "other"]));
}

#[test]
fn an_environment_change_behind_a_changed_upstream_is_predicted() {
    let ws = Ws::new();
    ws.write("p.yaml", TWO_LEVELS);
    run_with(&ws, &[("DAGRUN_TEST_LEVEL", "1")]);
    ws.write(
        "p.yaml",
        &TWO_LEVELS.replace("echo up > up.txt", "echo UP > up.txt"),
    );
    let plan = plan_with(&ws, &[("DAGRUN_TEST_LEVEL", "2")]);
    for id in ["up", "down", "other"] {
        assert_eq!(state_of(&plan, id)["will_run"], true, "{id}: {plan}");
    }
    assert!(
        state_of(&plan, "down")["reasons"]
            .to_string()
            .contains("DAGRUN_TEST_LEVEL"),
        "{plan}"
    );
    assert_eq!(
        run_with(&ws, &[("DAGRUN_TEST_LEVEL", "2")]),
        will_run(&plan)
    );
    // And an environment change alone: every node that reads it, nothing else.
    let plan = plan_with(&ws, &[("DAGRUN_TEST_LEVEL", "3")]);
    let predicted = will_run(&plan);
    assert_eq!(predicted, set(&["up", "down", "other"]), "{plan}");
    assert_eq!(run_with(&ws, &[("DAGRUN_TEST_LEVEL", "3")]), predicted);
}

#[test]
fn a_gpu_request_the_machine_cannot_meet_is_in_the_plan_as_in_the_run() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  g:\n    kind: command\n    resources: {gpus: 2}\n    cmd: echo g > g.txt\n    outs: [g.txt]\n",
    );
    let (out, _) = ws.ok(&["plan", "p.yaml", "--gpus", "1"]);
    assert!(
        out.contains("missing") && out.contains("needs 2 GPU(s) but 1 available"),
        "{out}"
    );
    let (out, _) = ws.ok(&["plan", "p.yaml", "--gpus", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state_of(&v, "g")["state"], "missing");
    assert_eq!(state_of(&v, "g")["will_run"], false);
    let o = ws.dagrun(&["p.yaml", "--gpus", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("needs 2 GPU(s) but 1 available"),
        "{}",
        text(&o)
    );
    assert!(!ws.p("a.txt").exists(), "nothing ran");
    // With enough GPUs the plan and the run agree again.
    let (out, _) = ws.ok(&["plan", "p.yaml", "--gpus", "2"]);
    assert!(!out.contains("missing"), "{out}");
}

#[test]
fn special_files_and_symlink_loops_among_inputs_are_located_errors() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: cat in > a.txt\n    deps: [in]\n    outs: [a.txt]\n",
    );
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(ws.p("in"))
        .status()
        .unwrap();
    assert!(mkfifo.success());
    for args in [vec!["plan", "p.yaml"], vec!["p.yaml"]] {
        let o = ws.dagrun(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("p.yaml:5:12: input `in` of `a`")
                && text(&o).contains("it is a FIFO, not a regular file or a folder"),
            "{args:?}: {}",
            text(&o)
        );
    }
    // A link to a character device.
    std::fs::remove_file(ws.p("in")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", ws.p("in")).unwrap();
    let o = ws.dagrun(&["plan", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("it is a character device"),
        "{}",
        text(&o)
    );
    // A folder input holding a symlink loop.
    std::fs::remove_file(ws.p("in")).unwrap();
    std::fs::create_dir(ws.p("in")).unwrap();
    std::os::unix::fs::symlink("loop", ws.p("in/loop")).unwrap();
    let o = ws.dagrun(&["plan", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("p.yaml:5:12: input `in` of `a`"),
        "{}",
        text(&o)
    );
    assert!(!ws.p(".dagrun").exists() || ws.p(".dagrun").is_dir());
}
