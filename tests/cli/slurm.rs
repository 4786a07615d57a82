//! The Slurm executor against a real Slurm cluster (CI starts a one-node cluster on
//! localhost with `ci/slurm/start.sh`). With `DAGRUN_SLURM_TESTS=1` a missing cluster
//! is a failure; without it these tests say they were skipped when no cluster answers.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::*;

/// Whether a Slurm cluster answers here.
fn cluster() -> bool {
    let required = std::env::var("DAGRUN_SLURM_TESTS").is_ok_and(|v| v == "1");
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(
        up || !required,
        "DAGRUN_SLURM_TESTS=1 but no Slurm cluster answers (start one with ci/slurm/start.sh)"
    );
    if !up {
        eprintln!("skipped: no Slurm cluster here (ci/slurm/start.sh starts one)");
    }
    up
}

/// Polling settings that keep the tests quick.
const FAST: &str = "slurm:\n  poll_seconds: 0.3\n  submit_interval_seconds: 0.1\n";

/// A sweep of command nodes, a native kind and a local aggregate.
fn sweep() -> String {
    format!(
        r#"{FAST}  max_array: 4
stages:
  gen:
    kind: command
    matrix: {{seed: [1, 2, 3], size: [4, 8]}}
    cmd: >-
      echo run >> runs.log;
      python3 -c "import random; r = random.Random(${{matrix.seed}} * 100 + ${{matrix.size}}); print(sum(r.random() for _ in range(${{matrix.size}})))" > out/gen-${{matrix.seed}}-${{matrix.size}}.txt
    outs: [out/gen-${{matrix.seed}}-${{matrix.size}}.txt]
  bandit:
    kind: bandit
    params: {{beta: 0.4}}
  total:
    kind: command
    executor: local
    needs: [gen]
    cmd: cat out/gen-*.txt > out/total.txt
    outs: [out/total.txt]
"#
    )
}

/// node → key, from `dagrun plan --json`.
fn keys(ws: &Ws) -> BTreeMap<String, String> {
    ws.plan_json("p.yaml")["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_string(),
                n["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Slurm's state of a job (`12_3`), if squeue still knows it.
fn job_state(id: &str) -> Option<String> {
    let o = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", id])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The Slurm job ids that ran a node, from the worker's lines in its log.
fn job_ids_in_log(ws: &Ws, node: &str) -> Vec<String> {
    let (out, _) = ws.ok(&["show", node, "--log-lines", "1000"]);
    out.lines()
        .filter_map(|l| l.split("(Slurm job ").nth(1))
        .map(|r| r.trim_end_matches(')').to_string())
        .collect()
}

/// Staging folders of nodes (named by key).
fn staged(ws: &Ws) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(ws.p(".dagrun/slurm"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().len() == 64)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sweep_through_slurm_equals_the_local_run() {
    if !cluster() {
        return;
    }
    let (remote, local) = (Ws::new(), Ws::new());
    for ws in [&remote, &local] {
        ws.write("p.yaml", &sweep());
    }
    // Slurm's commands behind shims that note each call.
    let shims = remote.p("shims");
    std::fs::create_dir_all(&shims).unwrap();
    for tool in ["sbatch", "squeue", "scancel"] {
        let real = String::from_utf8(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let shim = shims.join(tool);
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}/calls.{tool}\nexec {} \"$@\"\n",
                remote.path().display(),
                real.trim()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
    let o = remote
        .cmd(&["p.yaml", "--executor", "slurm"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let ran = executed(&err);
    assert_eq!(ran.len(), 8, "{ran:?}");
    // Three sbatch calls: the six sweep nodes in arrays of at most 4, and `bandit`;
    // squeue asked about every job of the run at once, never one call per node.
    let sbatch = remote.read("calls.sbatch");
    assert_eq!(sbatch.lines().count(), 3, "{sbatch}");
    let mut arrays: Vec<&str> = sbatch
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--array=")))
        .collect();
    arrays.sort();
    assert_eq!(
        arrays,
        ["--array=0-0", "--array=0-1", "--array=0-3"],
        "{sbatch}"
    );
    let squeue = remote.read("calls.squeue");
    assert!(
        squeue.lines().any(|l| l.matches(',').count() >= 1),
        "{squeue}"
    );
    assert!(squeue.lines().count() < 60, "{squeue}");
    assert_eq!(local.run(&["p.yaml", "--executor", "local"]).len(), 8);

    // Same keys, same bytes.
    assert_eq!(keys(&remote), keys(&local));
    assert_eq!(remote.read("out/total.txt"), local.read("out/total.txt"));
    let (a, _) = remote.ok(&["show", "bandit", "--json"]);
    let (b, _) = local.ok(&["show", "bandit", "--json"]);
    let outputs =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["outputs"].clone();
    assert_eq!(outputs(&a), outputs(&b));

    // Each sweep node ran once, in a task of one of the two arrays.
    let mut arrays = std::collections::BTreeSet::new();
    for seed in [1, 2, 3] {
        for size in [4, 8] {
            let ids = job_ids_in_log(&remote, &format!("gen[seed={seed},size={size}]"));
            assert_eq!(ids.len(), 1, "{ids:?}");
            arrays.insert(ids[0].split('_').next().unwrap().to_string());
        }
    }
    assert_eq!(arrays.len(), 2, "two arrays for the sweep: {arrays:?}");
    assert_eq!(remote.read("runs.log").lines().count(), 6);
    // The local aggregate did not go through Slurm.
    assert!(job_ids_in_log(&remote, "total").is_empty());
    // Committed: the staging area is empty again.
    assert!(staged(&remote).is_empty(), "{:?}", staged(&remote));

    // A second run submits nothing.
    assert!(remote.run(&["p.yaml", "--executor", "slurm"]).is_empty());
    assert_eq!(remote.read("runs.log").lines().count(), 6);
}

/// A node that notes each attempt (with the memory Slurm gave it), leaves a checkpoint
/// in its scratch folder, then holds while `hold` exists. Resumed, it says so.
fn checkpointing(retries: u32) -> String {
    format!(
        r#"{FAST}
defaults:
  executor: slurm
stages:
  train:
    kind: command
    resources: {{mem: 100M, retries: {retries}, on_retry: {{mem: 2}}}}
    cmd: >-
      echo "mem=$SLURM_MEM_PER_NODE" >> attempts.log;
      if [ -e "$DAGRUN_SCRATCH/ckpt" ]; then r="resumed from $(cat $DAGRUN_SCRATCH/ckpt)"; else r=fresh; fi;
      echo step-7 > "$DAGRUN_SCRATCH/ckpt";
      touch started;
      while [ -e hold ]; do sleep 0.1; done;
      echo "$r" > model.txt
    outs: [model.txt]
"#
    )
}

/// Writes the pipeline and `hold`, starts `dagrun p.yaml ARGS` and waits until the node's
/// job has started (and is holding).
fn hold_and_start(ws: &Ws, yaml: &str, args: &[&str]) -> std::process::Child {
    ws.write("p.yaml", yaml);
    ws.write("hold", "");
    let _ = std::fs::remove_file(ws.p("started"));
    let child = ws.spawn(&[&["p.yaml"], args].concat());
    ws.wait_for("started", Duration::from_secs(120));
    child
}

/// The Slurm job id the coordinator noted for the workspace's one staged node.
fn submitted_job_id(ws: &Ws) -> String {
    let dirs = staged(ws);
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs[0].join("submitted.json")).unwrap()).unwrap();
    note["job_id"].as_str().unwrap().to_string()
}

/// Kills the worker processes of a workspace's Slurm jobs (as a node failure or the
/// kernel's OOM killer would).
fn kill_workers(ws: &Ws) {
    let pattern = format!("worker --tasks {}", ws.path().display());
    let st = Command::new("pkill")
        .args(["-9", "-f", &pattern])
        .status()
        .unwrap();
    assert!(st.success(), "no worker of this workspace was running");
}

#[test]
fn a_killed_job_fails_with_its_log_and_the_next_run_resumes_from_its_checkpoint() {
    if !cluster() {
        return;
    }
    let ws = Ws::new();
    let child = hold_and_start(&ws, &checkpointing(0), &[]);
    kill_workers(&ws);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed: train: Slurm job"), "{err}");
    assert!(err.contains("without a result"), "{err}");
    assert!(err.contains("log: .dagrun/logs/"), "{err}");
    // Nothing was committed.
    let (run, _) = ws.predicted("p.yaml");
    assert_eq!(run, set(&["train"]));

    // The next run picks up the checkpoint the killed job left.
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert_eq!(ws.run(&["p.yaml"]), set(&["train"]));
    assert_eq!(ws.read("model.txt"), "resumed from step-7\n");
}

#[test]
fn a_killed_job_is_retried_with_more_memory_and_resumes() {
    if !cluster() {
        return;
    }
    let ws = Ws::new();
    let child = hold_and_start(&ws, &checkpointing(1), &[]);
    std::fs::remove_file(ws.p("started")).unwrap();
    kill_workers(&ws);
    // The retry starts (and finds the checkpoint); let it finish.
    ws.wait_for("started", Duration::from_secs(120));
    std::fs::remove_file(ws.p("hold")).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retrying (attempt 2 of 2)"), "{err}");
    assert_eq!(ws.read("model.txt"), "resumed from step-7\n");
    assert_eq!(ws.read("attempts.log"), "mem=100\nmem=200\n");
}

#[test]
fn an_interrupted_coordinator_adopts_its_jobs_on_the_next_run() {
    if !cluster() {
        return;
    }
    let ws = Ws::new();
    let mut child = hold_and_start(&ws, &checkpointing(0), &[]);
    // kill -9: the coordinator cannot cancel anything; the job keeps running.
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    let id = submitted_job_id(&ws);
    assert_eq!(job_state(&id).as_deref(), Some("RUNNING"));

    // A new coordinator takes the running job over instead of submitting another.
    let next = ws.spawn(&["p.yaml"]);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::remove_file(ws.p("hold")).unwrap();
    let out = next.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.read("model.txt"), "fresh\n");
    assert_eq!(ws.read("attempts.log").lines().count(), 1);
    assert_eq!(job_ids_in_log(&ws, "train"), vec![id.clone()]);

    // And a job that finished while no coordinator ran is collected, not rerun.
    let yaml = checkpointing(0).replace("step-7", "step-8");
    let mut child = hold_and_start(&ws, &yaml, &[]);
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    std::fs::remove_file(ws.p("hold")).unwrap();
    wait_until("the orphaned job's result", Duration::from_secs(60), || {
        staged(&ws).iter().any(|d| d.join("result.json").exists())
    });
    assert_eq!(ws.run(&["p.yaml"]), set(&["train"]));
    assert_eq!(ws.read("attempts.log").lines().count(), 2);
    let (out, _) = ws.ok(&["cache", "verify"]);
    assert!(out.contains("no corruption"), "{out}");
    // The array folders the killed coordinators left behind go with `cache gc`.
    let arrays = || {
        std::fs::read_dir(ws.p(".dagrun/slurm/arrays"))
            .unwrap()
            .count()
    };
    assert!(arrays() > 0);
    let (out, _) = ws.ok(&["cache", "gc", "p.yaml"]);
    assert!(out.contains("Slurm staging folder(s)"), "{out}");
    assert_eq!(arrays(), 0);
    assert!(staged(&ws).is_empty());
}

#[test]
fn ctrl_c_cancels_the_submitted_jobs_or_keeps_them_when_asked() {
    if !cluster() {
        return;
    }
    let ws = Ws::new();
    let child = hold_and_start(&ws, &checkpointing(0), &[]);
    let id = submitted_job_id(&ws);
    kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    wait_until("the job's cancellation", Duration::from_secs(30), || {
        job_state(&id).as_deref() == Some("CANCELLED")
    });

    // `--on-interrupt keep`: the job survives Ctrl-C and the next run collects it.
    let child = hold_and_start(&ws, &checkpointing(0), &["--on-interrupt", "keep"]);
    kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("keep running"), "{err}");
    std::fs::remove_file(ws.p("hold")).unwrap();
    assert_eq!(ws.run(&["p.yaml"]), set(&["train"]));
    // Two attempts started in all: the cancelled one and the kept one, which resumed
    // from the checkpoint of the first.
    assert_eq!(ws.read("attempts.log").lines().count(), 2);
    assert_eq!(ws.read("model.txt"), "resumed from step-7\n");
}

#[test]
fn plan_and_errors_for_slurm_pipelines() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "defaults:\n  executor: slurm\n  resources: {mem: 16Q}\nstages:\n  a:\n    kind: command\n    cmd: 'true'\n",
    );
    let o = ws.dagrun(&["plan", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("p.yaml:3:")
            && err.contains("`resources.mem`: `16Q`: the unit must be K, M, G or T"),
        "{err}"
    );
    ws.write(
        "p.yaml",
        "slurm:\n  on_interrupt: later\nstages:\n  a:\n    kind: command\n    cmd: 'true'\n",
    );
    let err = String::from_utf8_lossy(&ws.dagrun(&["plan", "p.yaml"]).stderr).into_owned();
    assert!(
        err.contains("p.yaml:2:") && err.contains("`slurm.on_interrupt` is `cancel` or `keep`"),
        "{err}"
    );
    // Without Slurm's commands, a run that needs them stops before any work.
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: touch ran\n    outs: [ran]\n",
    );
    let o = ws
        .cmd(&["p.yaml", "--executor", "slurm"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`sbatch` is not on PATH"), "{err}");
    assert!(!ws.p("ran").exists());
    // The plan names each node's executor.
    let v = ws.plan_json("p.yaml");
    assert_eq!(v["nodes"][0]["executor"], "local");
}
