//! libtorch's fused kernels (`stages/src/ml/ops/libtorch.rs`) are part of a libtorch node's key: a
//! change of `DAGRUN_FUSED_OPS` makes libtorch results stale, says why, and leaves cpu
//! results cached; a bad value stops the run before any work, naming it.

use crate::support::*;

const PIPELINE: &str = r#"
params:
  seed: 0
stages:
  task:
    kind: toy_task
    params: {seed: "${params.seed}"}
  lm_cpu:
    kind: lm_pretrain
    device: cpu
    params: &lm
      corpus: ${stages.task.corpus}
      tokenizer: ${stages.task.tokenizer}
      n_layer: 1
      n_head: 2
      n_embd: 16
      steps: 3
      seed: ${params.seed}
  lm_libtorch:
    kind: lm_pretrain
    device: libtorch-cpu
    params: *lm
"#;

fn with_ops(ws: &Ws, ops: &str, args: &[&str]) -> (bool, String) {
    let o = ws
        .cmd(args)
        .env("DAGRUN_FUSED_OPS", ops)
        .output()
        .expect("run dagrun");
    (o.status.success(), text(&o))
}

#[test]
fn a_change_of_fused_ops_makes_libtorch_nodes_stale_and_says_why() {
    let ws = Ws::new();
    ws.write("p.yaml", PIPELINE);
    let (ok, out) = with_ops(&ws, "none", &["p.yaml"]);
    assert!(ok, "{out}");

    // Same setting: nothing to do.
    let (ok, out) = with_ops(&ws, "none", &["plan", "p.yaml"]);
    assert!(ok && out.contains("3 nodes, 3 cached"), "{out}");

    // Another setting: the libtorch node only, with the reason.
    let (ok, out) = with_ops(&ws, "layer_norm rms_norm", &["plan", "p.yaml"]);
    assert!(ok, "{out}");
    assert!(out.contains("1 stale"), "{out}");
    let stale = out
        .lines()
        .find(|l| l.contains("stale "))
        .unwrap_or_default();
    assert!(stale.contains("lm_libtorch"), "{out}");
    assert!(
        stale.contains("environment `fused_ops` changed: none → layer_norm rms_norm"),
        "{out}"
    );

    // A bad value: an error naming it, and nothing runs.
    let (ok, out) = with_ops(&ws, "layer_norm gelu", &["p.yaml"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("unknown operation `gelu`") && out.contains("gelu_tanh"),
        "{out}"
    );
    assert!(executed(&out).is_empty(), "{out}");
}
