//! Experiments (issue 21): `-S`/`--params` overrides, `dagrun metrics`, and metrics from
//! command stages (`metrics:` files, `dagrun:metric` lines).

use crate::support::*;

/// A tiny training script as a command stage: its "loss" depends on `lr` and the seed.
const TRAIN: &str = r#"
params:
  lr: 0.1
  opt: {beta: 0.9}
  seeds: [1, 2]
stages:
  train:
    kind: command
    matrix: {seed: "${params.seeds}"}
    cmd: >-
      echo "dagrun:metric loss $(awk 'BEGIN{print ${params.lr} * ${matrix.seed}}')" &&
      echo "dagrun:metric curve 0.5 1" && echo "dagrun:metric curve 0.25 2" &&
      printf '{"eval": {"acc": %s, "ok": true}, "tag": "lr-${params.lr}"}' ${matrix.seed} > m-${matrix.seed}.json
    metrics: [m-${matrix.seed}.json]
  bandit:
    kind: bandit
    params: {beta: 0.5}
"#;

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_override_is_a_variant_with_its_own_key_and_switching_back_reruns_nothing() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    let ran = ws.run(&["p.yaml"]);
    assert_eq!(ran, set(&["train[seed=1]", "train[seed=2]", "bandit"]));
    // A changed param: the train nodes rerun, the bandit (which does not read it) not.
    let ran = ws.run(&["p.yaml", "-S", "params.lr=0.5"]);
    assert_eq!(ran, set(&["train[seed=1]", "train[seed=2]"]));
    // `why` names the param that changed (not only the command's text); `plan` with the
    // override says cached.
    let (out, _) = ws.ok(&["why", "train[seed=1]", "-S", "params.lr=0.7"]);
    assert!(
        out.contains("param `params.lr` changed: 0.5 → 0.7"),
        "{out}"
    );
    let (out, _) = ws.ok(&["plan", "p.yaml", "-S", "params.lr=0.5"]);
    assert!(out.contains("3 cached"), "{out}");
    // Back to the file's value: found cached, nothing runs.
    assert!(ws.run(&["p.yaml"]).is_empty());
    // A native stage's param, not written in the pipeline: set through its kind.
    let ran = ws.run(&["p.yaml", "-S", "stages.bandit.params.interval_z=1.5"]);
    assert_eq!(ran, set(&["bandit"]));
    let (out, _) = ws.ok(&["why", "bandit", "-S", "stages.bandit.params.beta=0.25"]);
    assert!(out.contains("beta"), "{out}");
    // A params file merged over `params`, then -S on top; a list value changes the sweep.
    ws.write("sweep.yaml", "opt:\n  beta: 0.5\nseeds: [1, 2, 3]\n");
    let ran = ws.run(&[
        "p.yaml",
        "--params",
        "sweep.yaml",
        "-S",
        "params.seeds=[2,3]",
    ]);
    assert_eq!(ran, set(&["train[seed=3]"]), "seed 2 is cached, seed 3 new");
    // The run history keeps each run's overrides.
    let (out, _) = ws.ok(&["log"]);
    assert!(out.contains("with -S params.lr=0.5"), "{out}");
    assert!(
        out.contains("with -S params.opt.beta=0.5 -S params.seeds=[1,2,3] -S params.seeds=[2,3]"),
        "{out}"
    );
    // graph and status take them too.
    let (out, _) = ws.ok(&["graph", "p.yaml", "-S", "params.seeds=[7]"]);
    assert!(out.contains("train"), "{out}");
    let (out, _) = ws.ok(&["status", "p.yaml", "-S", "params.lr=0.5"]);
    assert!(out.contains("train"), "{out}");
}

#[test]
fn bad_overrides_are_usage_errors_that_name_them() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    let cases: &[(&[&str], &str)] = &[
        (
            &["-S", "params.lrr=1"],
            "-S params.lrr=1: no param `lrr` (params: lr, opt, seeds)",
        ),
        (
            &["-S", "params.opt.gamma=1"],
            "-S params.opt.gamma=1: `params.opt` has no `gamma` (it has: beta)",
        ),
        (&["-S", "params.lr"], "-S params.lr: an override is KEY=VALUE"),
        (&["-S", "params.lr=[1,"], "-S params.lr=[1,: the value is not YAML"),
        (&["-S", "defaults.device=cpu"], "cannot be set"),
        (
            &["-S", "stages.nope.params.x=1"],
            "no stage `nope` (stages: train, bandit)",
        ),
        (
            &["-S", "stages.train.params.lr=1"],
            "stage `train` is a `command` stage, which has no params",
        ),
        (
            &["-S", "stages.bandit.params.bogus=1"],
            "-S stages.bandit.params.bogus=1: stage `bandit` (bandit) has no param `bogus` (params:",
        ),
        // A type the kind rejects: located at the override, not at a line of p.yaml.
        (
            &["-S", "stages.bandit.params.beta=fast"],
            "-S stages.bandit.params.beta=fast: stage `bandit` (bandit):",
        ),
        (
            &["-S", "stages.bandit.params.beta=-1"],
            "-S stages.bandit.params.beta=-1: stage `bandit` (bandit):",
        ),
        // A list where the command needs a scalar: the error is at the reference.
        (
            &["-S", "params.lr=[1,2]"],
            "(`params.lr` is set by `-S params.lr=[1,2]`)",
        ),
        (&["--params", "nope.yaml"], "--params `nope.yaml`"),
    ];
    for (args, want) in cases {
        for cmd in ["plan", "run"] {
            let mut a = vec![cmd, "p.yaml"];
            a.extend_from_slice(args);
            let o = ws.dagrun(&a);
            let e = err(&o);
            assert_eq!(o.status.code(), Some(2), "{a:?}: {e}");
            assert!(e.contains(want), "{a:?}\n want: {want}\n got: {e}");
        }
    }
    // A params file's errors point at its lines.
    ws.write("bad.yaml", "lr: 0.2\n\nnope: 1\n");
    let o = ws.dagrun(&["plan", "p.yaml", "--params", "bad.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("bad.yaml:3:7: no param `nope` (params: lr, opt, seeds)"),
        "{}",
        err(&o)
    );
    ws.write("list.yaml", "- 1\n");
    let o = ws.dagrun(&["plan", "p.yaml", "--params", "list.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("list.yaml:1:1: a params file is a YAML map"),
        "{}",
        err(&o)
    );
    // Nothing ran, nothing was written but the files of the test.
    assert!(!ws.p(".dagrun").exists());
}

#[test]
fn command_stages_report_metrics_from_files_and_output_lines() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    ws.ok(&["p.yaml"]);
    let (out, _) = ws.ok(&["show", "train[seed=2]", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &rec["metrics"];
    assert_eq!(m["scalars"]["loss"].as_f64(), Some(0.2), "{m}");
    assert_eq!(m["scalars"]["eval.acc"].as_f64(), Some(2.0), "{m}");
    assert_eq!(m["other"]["eval.ok"], true, "{m}");
    assert_eq!(m["other"]["tag"], "lr-0.1", "{m}");
    assert_eq!(
        m["series"]["curve"],
        serde_json::json!([[1.0, 0.5], [2.0, 0.25]])
    );
    // The metrics file is an output: restored when deleted, like `outs`.
    std::fs::remove_file(ws.p("m-2.json")).unwrap();
    assert!(ws.run(&["p.yaml"]).is_empty());
    assert!(ws.read("m-2.json").contains("\"acc\": 2"));
    // A command that does not write its metrics file, or writes something else, fails.
    ws.write(
        "q.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: 'true'\n    metrics: [a.json]\n  b:\n    kind: command\n    cmd: echo '[1]' > b.json\n    metrics: [b.json]\n",
    );
    let o = ws.dagrun(&["q.yaml", "-j", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let (out, _) = ws.ok(&["show", "a"]);
    assert!(
        out.contains("did not write its metrics file `a.json`"),
        "{out}"
    );
    let (out, _) = ws.ok(&["show", "b"]);
    assert!(
        out.contains("`b.json` holds a list, not a JSON object"),
        "{out}"
    );
}

#[test]
fn the_metrics_table_shows_every_variant_sorts_and_aggregates() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    ws.ok(&["p.yaml"]);
    ws.ok(&["p.yaml", "-S", "params.lr=0.5"]);
    // Current rows only: the file's lr (0.1).
    let (out, _) = ws.ok(&["metrics", "p.yaml", "--stage", "train", "--format", "csv"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "node,key,seed,eval.acc,eval.ok,loss,tag", "{out}");
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("train[seed=1],") && lines[1].ends_with(",1.0,true,0.1,lr-0.1"),
        "{out}"
    );
    // --all: both lrs; `lr` differs between the rows, so it is a column.
    let (out, _) = ws.ok(&[
        "metrics", "p.yaml", "--stage", "train", "--all", "--sort", "loss", "--desc",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].contains("node") && lines[0].contains("lr") && lines[0].contains("loss"),
        "{out}"
    );
    assert!(
        lines[1].contains("train[seed=2]") && lines[1].contains(" 0.5 "),
        "{out}"
    );
    assert!(
        lines[1].trim_start().starts_with("train"),
        "not current: {out}"
    );
    assert!(
        lines[4].starts_with('*') && lines[4].contains("0.1"),
        "{out}"
    );
    // JSON: the documented shape.
    let (out, _) = ws.ok(&["metrics", "p.yaml", "--all", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 5, "4 train variants and the bandit: {out}");
    for r in &rows {
        for k in [
            "node", "stage", "key", "current", "matrix", "params", "metrics",
        ] {
            assert!(r.get(k).is_some(), "{k} missing: {r}");
        }
    }
    let old = rows
        .iter()
        .find(|r| r["node"] == "train[seed=2]" && r["current"] == false)
        .unwrap();
    assert_eq!(old["params"]["lr"], 0.5);
    assert_eq!(old["matrix"]["seed"], 2);
    // With the override, the 0.5 variants are the current ones.
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "--stage",
        "train",
        "-S",
        "params.lr=0.5",
        "--format",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(
        rows.iter()
            .all(|r| r["params"]["lr"] == 0.5 && r["current"] == true),
        "{out}"
    );
    // --group-by lr over every variant: mean of the loss per lr.
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "--stage",
        "train",
        "--all",
        "--group-by",
        "lr",
        "--format",
        "csv",
    ]);
    assert!(out.contains("lr,metric,n,mean,sd,min,max"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("0.5,loss,2,0.75,")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("0.1,loss,2,0.15")),
        "{out}"
    );
    // Markdown.
    let (out, _) = ws.ok(&["metrics", "p.yaml", "--stage", "bandit", "--format", "md"]);
    assert!(
        out.starts_with("| node |") && out.contains("|---|"),
        "{out}"
    );
    // Bad arguments are usage errors.
    let o = ws.dagrun(&["metrics", "p.yaml", "--sort", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--sort nope: no row has"), "{}", err(&o));
    let o = ws.dagrun(&["metrics", "p.yaml", "--group-by", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ws.dagrun(&["metrics", "p.yaml", "--stage", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("no stage `nope`"), "{}", err(&o));
}

#[test]
fn cache_gc_keeps_the_variants_of_the_overrides_it_is_given() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    ws.ok(&["p.yaml"]);
    ws.ok(&["p.yaml", "-S", "params.lr=0.5"]);
    // The file's variants (lr 0.1) are neither current under the override nor the last
    // run's: they go; the override's stay.
    ws.ok(&["cache", "gc", "p.yaml", "-S", "params.lr=0.5"]);
    let (out, _) = ws.ok(&[
        "metrics", "p.yaml", "--stage", "train", "--all", "--format", "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.iter().all(|r| r["params"]["lr"] == 0.5), "{out}");
    // And the file's value runs again.
    assert_eq!(
        ws.run(&["p.yaml"]),
        set(&["train[seed=1]", "train[seed=2]"])
    );
}

#[test]
fn metrics_diff_compares_two_variants_param_by_param_and_metric_by_metric() {
    let ws = Ws::new();
    ws.write("p.yaml", TRAIN);
    ws.ok(&["p.yaml"]);
    let (out, _) = ws.ok(&["metrics", "p.yaml", "--stage", "train", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let old = rows[0]["key"].as_str().unwrap().to_string();
    assert_eq!(rows[0]["node"], "train[seed=1]");
    ws.ok(&["p.yaml", "-S", "params.lr=0.5"]);
    // An earlier variant by its key (8 digits, as `--all` shows it) against a node's
    // current one (current with the override given to `metrics`).
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.5",
        "--diff",
        &old[..8],
        "train[seed=1]",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["a"]["key"], old.as_str(), "{out}");
    assert_eq!(v["a"]["current"], false, "{out}");
    assert_eq!(v["b"]["node"], "train[seed=1]", "{out}");
    assert_eq!(v["b"]["current"], true, "{out}");
    let diffs = v["differences"].as_array().unwrap();
    let find = |what: &str, name: &str| {
        diffs
            .iter()
            .find(|d| d["what"] == what && d["name"] == name)
            .cloned()
    };
    let lr = find("param", "lr").expect("lr differs");
    assert_eq!((lr["a"].as_f64(), lr["b"].as_f64()), (Some(0.1), Some(0.5)));
    assert!((lr["change"].as_f64().unwrap() - 0.4).abs() < 1e-12, "{lr}");
    let tag = find("metric", "tag").expect("tag differs");
    assert_eq!(
        (tag["a"].as_str(), tag["b"].as_str()),
        (Some("lr-0.1"), Some("lr-0.5"))
    );
    assert!(tag["change"].is_null(), "{tag}");
    assert!(find("metric", "loss").is_some(), "{out}");
    // What is the same is left out.
    assert!(find("metric", "eval.acc").is_none(), "{out}");
    assert!(find("matrix", "seed").is_none(), "{out}");
    // The other formats: one line per difference.
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.5",
        "--diff",
        &old[..8],
        "train[seed=1]",
    ]);
    let lr_line = out.lines().find(|l| l.contains(" lr ")).unwrap_or_default();
    assert!(
        lr_line.starts_with("param") && lr_line.contains("0.1") && lr_line.ends_with("+0.4"),
        "{out}"
    );
    assert!(out.lines().next().unwrap().contains(&old[..8]), "{out}");
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.5",
        "--diff",
        &old[..8],
        "train[seed=1]",
        "--format",
        "csv",
    ]);
    assert_eq!(out.lines().next(), Some("what,name,a,b,change"), "{out}");
    assert!(out.lines().any(|l| l == "param,lr,0.1,0.5,0.4"), "{out}");
    assert!(
        out.lines().any(|l| l == "metric,tag,lr-0.1,lr-0.5,"),
        "{out}"
    );
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.5",
        "--diff",
        &old[..8],
        "train[seed=1]",
        "--format",
        "md",
    ]);
    assert!(out.contains("| param | lr | 0.1 | 0.5 | +0.4 |"), "{out}");
    // Two nodes of the sweep: the matrix value and the metrics differ, not `lr`.
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.5",
        "--diff",
        "train[seed=1]",
        "train[seed=2]",
        "--format",
        "csv",
    ]);
    assert!(out.lines().any(|l| l == "matrix,seed,1,2,1"), "{out}");
    assert!(out.lines().any(|l| l == "metric,loss,0.5,1.0,0.5"), "{out}");
    assert!(!out.contains("param,lr"), "{out}");
    // A variant against itself.
    let (out, _) = ws.ok(&[
        "metrics",
        "p.yaml",
        "--diff",
        "train[seed=2]",
        "train[seed=2]",
    ]);
    assert!(out.contains("have the same"), "{out}");
    // Unknown names are usage errors that name them.
    for (a, b, named) in [
        ("nope", "train[seed=1]", "`nope`"),
        ("train[seed=1]", "ffffffffff", "`ffffffffff`"),
        ("train[seed=9]", "train[seed=1]", "`train[seed=9]`"),
    ] {
        let o = ws.dagrun(&["metrics", "p.yaml", "--diff", a, b]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(err(&o).contains(named), "{}", err(&o));
    }
    // A node whose current variant is not cached: said so.
    let o = ws.dagrun(&[
        "metrics",
        "p.yaml",
        "-S",
        "params.lr=0.9",
        "--diff",
        "train[seed=1]",
        "train[seed=2]",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(err(&o).contains("no cached result"), "{}", err(&o));
}
