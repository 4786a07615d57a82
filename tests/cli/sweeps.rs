use crate::support::*;

#[test]
fn matrix_expands_into_nodes_with_ids_and_outputs() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    let ran = ws.run(&["p.yaml"]);
    assert_eq!(
        ran,
        set(&["prepare", "train[seed=0]", "train[seed=1]", "train[seed=2]"])
    );
    assert_eq!(ws.read("model-2.txt"), "hello\n2\n");
    // A second run executes nothing.
    assert!(ws.run(&["p.yaml"]).is_empty());
}

#[test]
fn downstream_can_depend_on_part_of_a_sweep() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        r#"
stages:
  ppo:
    kind: command
    matrix: {method: [vanilla, variance_aware], seed: [1, 2]}
    cmd: echo ${matrix.method}-${matrix.seed} > out-${matrix.method}-${matrix.seed}.txt
    outs: [out-${matrix.method}-${matrix.seed}.txt]
  judge_vanilla:
    kind: command
    needs: ["ppo[method=vanilla]"]
    cmd: cat out-vanilla-*.txt > vanilla.txt
    outs: [vanilla.txt]
  one:
    kind: command
    cmd: cat ${stages.ppo[method=variance_aware,seed=2].out-variance_aware-2.txt} > one.txt
    outs: [one.txt]
"#,
    );
    let (out, _) = ws.ok(&["graph", "p.yaml", "--format", "text"]);
    assert!(out.contains("ppo [4 nodes: 4 stale]"), "{out}");
    let (out, _) = ws.ok(&["graph", "p.yaml", "--format", "dot", "--expand"]);
    assert!(out.contains("ppo[method=vanilla,seed=1]"), "{out}");
    // Only the vanilla half of the sweep is upstream of judge_vanilla.
    let ran = ws.run(&["run", "p.yaml", "--until", "judge_vanilla"]);
    assert_eq!(
        ran,
        set(&[
            "ppo[method=vanilla,seed=1]",
            "ppo[method=vanilla,seed=2]",
            "judge_vanilla"
        ])
    );
    assert_eq!(ws.read("vanilla.txt"), "vanilla-1\nvanilla-2\n");
    let ran = ws.run(&["p.yaml"]);
    assert_eq!(
        ran,
        set(&[
            "ppo[method=variance_aware,seed=1]",
            "ppo[method=variance_aware,seed=2]",
            "one"
        ])
    );
    assert_eq!(ws.read("one.txt"), "variance_aware-2\n");
    let (out, _) = ws.ok(&["graph", "p.yaml", "--format", "mermaid"]);
    assert!(out.starts_with("flowchart LR"), "{out}");
    assert!(out.contains("ppo [4 nodes: 4 cached]"), "{out}");
}

#[test]
fn jobs_run_independent_nodes_at_once() {
    let ws = Ws::new();
    // Each node waits until both have started: with --jobs 1 this would deadlock, so a
    // timeout inside the command makes it fail instead.
    ws.write(
        "p.yaml",
        r#"
stages:
  a:
    kind: command
    matrix: {i: [1, 2]}
    cmd: >-
      touch started-${matrix.i};
      for n in $(seq 1 200); do [ -e started-1 ] && [ -e started-2 ] && break; sleep 0.05; done;
      [ -e started-1 ] && [ -e started-2 ] && echo ok > out-${matrix.i}
    outs: [out-${matrix.i}]
"#,
    );
    let ran = ws.run(&["p.yaml", "--jobs", "2"]);
    assert_eq!(ran.len(), 2);
}

#[test]
fn gpu_resources_are_checked_before_any_work() {
    let ws = Ws::new();
    ws.write(
        "p.yaml",
        "stages:\n  a:\n    kind: command\n    cmd: echo a > a.txt\n    outs: [a.txt]\n  g:\n    kind: command\n    resources: {gpus: 1}\n    cmd: echo g > g.txt\n    outs: [g.txt]\n",
    );
    let o = ws.dagrun(&["p.yaml", "--gpus", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("needs 1 GPU(s) but 0 available"),
        "{}",
        text(&o)
    );
    assert!(!ws.p("a.txt").exists(), "nothing ran");
    // With a GPU to hand out, the node sees it in CUDA_VISIBLE_DEVICES.
    ws.write(
        "p.yaml",
        "stages:\n  g:\n    kind: command\n    resources: {gpus: 1}\n    cmd: echo $CUDA_VISIBLE_DEVICES > g.txt\n    outs: [g.txt]\n",
    );
    ws.ok(&["p.yaml", "--gpus", "1"]);
    assert_eq!(ws.read("g.txt"), "0\n");
}

#[test]
fn a_matrix_key_a_native_kind_has_no_param_for_only_names_its_nodes() {
    let ws = Ws::new();
    // `bandit` has a `beta` param but no `trial`: `trial` names the nodes and feeds
    // `${matrix.trial}`; `beta` becomes the param.
    ws.write(
        "p.yaml",
        r#"
stages:
  bandit:
    kind: bandit
    matrix: {trial: [1, 2], beta: [0.25, 0.5]}
  pick:
    kind: bandit
    matrix: {trial: [1, 2]}
    params: {beta: 0.5}
"#,
    );
    let ran = ws.run(&["p.yaml"]);
    assert_eq!(ran.len(), 6, "{ran:?}");
    let (show, _) = ws.ok(&["show", "bandit[trial=1,beta=0.25]", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let params = &v["components"]["params"];
    assert_eq!(params["beta"], 0.25, "{show}");
    assert!(params.get("trial").is_none(), "{show}");
}
