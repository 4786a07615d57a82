//! Training curves as TensorBoard event files (`run --tensorboard DIR`, `defaults.tensorboard`):
//! part of no key, written while the node runs, one run folder per node id, and read back by
//! TensorBoard's own reader (the `tensorboard` Python package) equal to the node's record.
//!
//! The reader runs under `DAGRUN_PYTHON` (else `python3`); where it cannot import
//! `tensorboard` the read-back test says SKIPPED, unless `DAGRUN_TENSORBOARD_TESTS=1` (CI,
//! which installs it through scripts/torch-venv.sh) makes that a failure.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::*;

/// The smallest training node, and a command stage whose matrix value is not a plain file
/// name (`a/b`).
const PIPELINE: &str = r#"
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
      steps: 6
      seed: 0
  curve:
    kind: command
    matrix: {x: [a/b, c]}
    cmd: >-
      echo "dagrun:metric acc 0.5 1" && echo "dagrun:metric acc 0 2" &&
      echo "dagrun:metric acc 0.1 3" && echo "dagrun:metric final 1"
"#;

/// Event files under `dir` (any depth).
fn event_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(event_files(&p));
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        {
            out.push(p);
        }
    }
    out
}

#[test]
fn switching_tensorboard_on_reruns_nothing() {
    let ws = Ws::new();
    ws.write("p.yaml", PIPELINE);
    assert_eq!(ws.run(&["p.yaml"]).len(), 4);
    // Asked for curves: same keys, nothing runs, nothing is written.
    assert!(ws.run(&["p.yaml", "--tensorboard", "tb"]).is_empty());
    assert!(event_files(&ws.p("tb")).is_empty());
    // The pipeline's `defaults.tensorboard`: the same.
    ws.write(
        "q.yaml",
        &PIPELINE.replace("stages:\n", "defaults:\n  tensorboard: runs\nstages:\n"),
    );
    let (out, _) = ws.ok(&["plan", "q.yaml"]);
    assert!(out.contains("4 cached"), "{out}");
    // A node that runs writes into its own folder; the folder named by `--tensorboard` wins
    // over the pipeline's.
    let ran = ws.run(&["q.yaml", "--rerun", "lm", "--tensorboard", "tb"]);
    assert_eq!(ran, set(&["lm"]));
    let files = event_files(&ws.p("tb"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].parent().unwrap(), ws.p("tb/lm"));
    assert!(event_files(&ws.p("runs")).is_empty());
    let ran = ws.run(&["q.yaml", "--rerun", "lm"]);
    assert_eq!(ran, set(&["lm"]));
    assert_eq!(event_files(&ws.p("runs/lm")).len(), 1);
}

#[test]
fn curves_that_cannot_be_written_are_a_warning_not_a_failure() {
    let ws = Ws::new();
    ws.write("p.yaml", PIPELINE);
    ws.write("tb", "a file where the folder should be");
    let o = ws.dagrun(&["p.yaml", "--tensorboard", "tb"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{}", text(&o));
    assert!(err.contains("cannot write TensorBoard curves"), "{err}");
    // Once per node (lm, and each curve node), not once per step.
    assert_eq!(
        err.matches("cannot write TensorBoard curves").count(),
        3,
        "{err}"
    );
    let (out, _) = ws.ok(&["plan", "p.yaml"]);
    assert!(out.contains("4 cached"), "{out}");
}

/// Records in an event file (data of each, checked framing aside: that is the unit test's).
fn record_count(bytes: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at + 12 <= bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        if at + 16 + len > bytes.len() {
            break;
        }
        at += 16 + len;
        n += 1;
    }
    n
}

#[test]
fn curves_are_written_while_the_node_runs() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  live:
    kind: command
    cmd: >-
      echo "dagrun:metric loss 2 1" &&
      while [ ! -f go ]; do sleep 0.05; done &&
      echo "dagrun:metric loss 1 2"
"#,
    );
    let mut child = ws.spawn(&["p.yaml", "--tensorboard", "tb"]);
    // The first step is readable (version, start, one scalar) while the command waits.
    let t0 = Instant::now();
    loop {
        let n = event_files(&ws.p("tb/live"))
            .first()
            .map_or(0, |f| record_count(&std::fs::read(f).unwrap()));
        if n >= 3 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("no step in tb/live after 30 s ({n} records)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ws.write("go", "");
    assert!(child.wait().unwrap().success());
    let f = &event_files(&ws.p("tb/live"))[0];
    assert_eq!(record_count(&std::fs::read(f).unwrap()), 4);
}

/// TensorBoard's reader, or `None` (after saying why) where it is absent outside CI.
pub fn tensorboard_python() -> Option<String> {
    let py = std::env::var("DAGRUN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("DAGRUN_TENSORBOARD_TESTS").is_ok_and(|v| v == "1");
    assert!(
        ok || !required,
        "DAGRUN_TENSORBOARD_TESTS=1 but `{py}` cannot import tensorboard (scripts/torch-venv.sh installs it)"
    );
    if !ok {
        eprintln!(
            "SKIPPED: `{py}` cannot import tensorboard, so TensorBoard's reader cannot check the \
             event files (set DAGRUN_PYTHON to the venv of scripts/torch-venv.sh)"
        );
    }
    ok.then_some(py)
}

/// Every run folder under `root` as TensorBoard's EventAccumulator reads it: run → tag →
/// `[step, value]`.
const READER: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
root = sys.argv[1]
out = {}
for run in sorted(os.listdir(root)):
    acc = EventAccumulator(os.path.join(root, run), size_guidance={"scalars": 0})
    acc.Reload()
    out[run] = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print(json.dumps(out))
"#;

pub type Curves = BTreeMap<String, BTreeMap<String, Vec<(i64, f64)>>>;

pub fn read_back(py: &str, root: &std::path::Path) -> Curves {
    let o = Command::new(py)
        .args(["-c", READER, root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The node's series from its record, as TensorBoard stores them (f32 values, whole steps).
pub fn recorded(ws: &Ws, node: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let (out, _) = ws.ok(&["show", node, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let series: BTreeMap<String, Vec<(f64, f64)>> =
        serde_json::from_value(v["metrics"]["series"].clone()).unwrap();
    series
        .into_iter()
        .map(|(k, s)| {
            let s = s
                .into_iter()
                .map(|(x, y)| (x as i64, y as f32 as f64))
                .collect();
            (k, s)
        })
        .collect()
}

/// Every series of the record is in TensorBoard's curves, point for point (TensorBoard may
/// have more tags: curves the record does not keep).
pub fn same_series(
    curves: &BTreeMap<String, Vec<(i64, f64)>>,
    record: &BTreeMap<String, Vec<(i64, f64)>>,
    node: &str,
) {
    for (tag, points) in record {
        assert_eq!(
            curves.get(tag),
            Some(points),
            "{node} {tag}: TensorBoard ≠ record"
        );
    }
}

#[test]
fn tensorboards_reader_reads_back_the_series_of_the_record() {
    let Some(py) = tensorboard_python() else {
        return;
    };
    let ws = Ws::new();
    ws.write("p.yaml", PIPELINE);
    assert_eq!(ws.run(&["p.yaml", "--tensorboard", "tb"]).len(), 4);
    let curves = read_back(&py, &ws.p("tb"));
    // One run per node that has curves; the `a/b` value makes a plain folder name.
    let runs: Vec<&String> = curves.keys().collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs[0].starts_with("curve[x=a_b]~"), "{runs:?}");
    assert_eq!(runs[1], "curve[x=c]");
    assert_eq!(runs[2], "lm");
    for (node, run) in [
        ("curve[x=a/b]", runs[0].as_str()),
        ("curve[x=c]", "curve[x=c]"),
        ("lm", "lm"),
    ] {
        let want = recorded(&ws, node);
        assert!(!want.is_empty(), "{node} has no series");
        same_series(&curves[run], &want, node);
    }
    // TensorBoard gets more than the record keeps: the learning rate of each step.
    assert_eq!(curves["lm"]["lr"].len(), 6);
    assert_eq!(curves["lm"]["loss"].len(), 6);
    assert_eq!(
        curves["curve[x=c]"]["acc"],
        vec![(1, 0.5), (2, 0.0), (3, 0.1f32 as f64)]
    );
    // A rerun of a node restarts its curve: the reader keeps only the new run's points.
    let ran = ws.run(&["p.yaml", "--rerun", "lm", "--tensorboard", "tb"]);
    assert_eq!(ran, set(&["lm"]));
    assert_eq!(event_files(&ws.p("tb/lm")).len(), 2);
    let again = read_back(&py, &ws.p("tb"));
    same_series(&again["lm"], &recorded(&ws, "lm"), "lm");
}
