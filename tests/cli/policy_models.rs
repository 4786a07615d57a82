//! PPO with decoder policies: a tiny Qwen2 and a tiny Llama policy (the random Hugging Face
//! fixtures) trained against an ensemble on a Gemma reward backbone, on the built-in task.
//! The prompts are cut with the policies' own tokenizer (every tiny fixture shares one
//! 320-token vocabulary, so the reward model reads the policies' decoded text with the same
//! tokenizer). Each PPO node's steps are checked as the GPT-2 path's are: finite losses and
//! KL in its curves, its final metrics, and its exported policy folder, which `dagrun model`
//! loads (and transformers too, where `DAGRUN_PYTHON` can import it). The policies read their
//! prompts in a chat template of their folders (`prompt_template: model`), and `judge_eval`
//! samples their answers the same way.

use std::path::Path;

use crate::support::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

const PIPELINE: &str = r#"
defaults:
  device: cpu
stages:
  task:
    kind: toy_task
    params: {seed: 0}
  mix:
    kind: dataset_mix
    params:
      seed: 0
      sources:
        - {path: "${stages.task.preferences}/clean.jsonl", name: clean}
        - {path: "${stages.task.preferences}/noisy.jsonl", name: noisy}
  prompts:
    kind: prompts
    desc: prompts cut with the policies' tokenizer
    deps: [models]
    params:
      corpus: ${stages.task.corpus}
      tokenizer: models/qwen2/tokenizer.json
      min_chars: 100
      max_train: 64
      max_test: 16
      seed: 0
  backbone:
    kind: backbone_pretrain
    desc: the Gemma reward backbone, Bradley–Terry with one head
    deps: [models]
    params:
      data: ${stages.mix.data}
      init: models/gemma
      max_len: 96
      lr: 3.0e-3
      batch_size: 32
      epochs: 1
      loss_threshold: 0.4
      seed: 0
  head_ensemble:
    kind: head_ensemble
    params:
      backbone: ${stages.backbone.model}
      data: ${stages.mix.data}
      heads: 4
      target_loss: 0.2
      max_len: 96
      bootstrap: true
      seed: 0
  ppo:
    kind: ppo
    desc: Qwen2 and Llama policies, vanilla and variance-aware
    deps: [models]
    matrix:
      family: [qwen2, llama]
      method: [vanilla, variance_aware]
    params:
      policy: models/${matrix.family}
      reward_model: ${stages.head_ensemble.model}
      prompts: ${stages.prompts.prompts}
      beta: 0.1
      lr: 5.0e-4
      batch_size: 8
      mini_batch_size: 4
      steps: 3
      max_new_tokens: 8
      rm_max_len: 96
      checkpoint_every: 1
      prompt_template: model
      seed: 1
  tuned:
    kind: lm_pretrain
    desc: the Qwen2 policy fine-tuned on the task's corpus (causal LM from its folder)
    deps: [models]
    params:
      corpus: ${stages.task.corpus}
      init: models/qwen2
      seq_len: 32
      batch_size: 8
      steps: 4
      lr: 1.0e-3
      warmup_steps: 1
      checkpoint_every: 2
      seed: 0
  ppo_tuned:
    kind: ppo
    desc: PPO from the fine-tuned Qwen2
    params:
      policy: ${stages.tuned.model}
      reward_model: ${stages.head_ensemble.model}
      prompts: ${stages.prompts.prompts}
      beta: 0.1
      lr: 5.0e-4
      batch_size: 8
      mini_batch_size: 4
      steps: 2
      max_new_tokens: 8
      rm_max_len: 96
      prompt_template: model
      seed: 1
  judge:
    kind: judge_eval
    desc: the policies answer as they were trained, in their chat template
    deps: [models]
    params:
      policies: ${stages.ppo.policy}
      reference: models/qwen2
      prompts: ${stages.prompts.prompts}
      judge_model: ${stages.head_ensemble.model}
      prompt_template: model
      max_prompts: 4
      max_new_tokens: 4
      batch_size: 4
      judge_max_len: 96
"#;

/// A chat template the tiny fixtures' tokenizer can write (it has no chat markup tokens).
const CHAT_TEMPLATE: &str = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                             {% if add_generation_prompt %}assistant:{% endif %}";

/// Python that imports transformers, or `None` (printing why).
fn python_with_transformers() -> Option<String> {
    let py = std::env::var("DAGRUN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import transformers, torch, tokenizers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        eprintln!("SKIPPED (transformers): `{py}` cannot import transformers + torch");
        None
    }
}

#[test]
fn qwen2_and_llama_policies_train_with_ppo_against_a_gemma_backed_ensemble() {
    let ws = Ws::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (from, to) in [
        ("gemma-tiny", "models/gemma"),
        ("qwen2-tiny", "models/qwen2"),
        ("llama-tiny", "models/llama"),
    ] {
        copy_dir(&fixtures.join(from), &ws.p(to));
    }
    for family in ["qwen2", "llama"] {
        ws.write(
            &format!("models/{family}/tokenizer_config.json"),
            &serde_json::json!({"chat_template": CHAT_TEMPLATE, "eos_token": "<|endoftext|>"})
                .to_string(),
        );
    }
    ws.write("p.yaml", PIPELINE);
    let ran = ws.run(&["p.yaml"]);
    let nodes: Vec<String> = ["qwen2", "llama"]
        .iter()
        .flat_map(|f| {
            ["vanilla", "variance_aware"]
                .iter()
                .map(move |m| format!("ppo[family={f},method={m}]"))
        })
        .collect();
    for node in nodes.iter().map(String::as_str).chain([
        "backbone",
        "head_ensemble",
        "judge",
        "tuned",
        "ppo_tuned",
    ]) {
        assert!(ran.contains(node), "{node} did not run: {ran:?}");
    }
    let py = python_with_transformers();
    for (i, node) in nodes.iter().enumerate() {
        let family = if i < 2 { "qwen2" } else { "llama" };
        // Every step: finite losses, KL, score, entropy; the variance of a 4-head ensemble.
        let out = ws.p(&format!("out{i}"));
        ws.ok(&["export", node, out.to_str().unwrap()]);
        let curves: serde_json::Value =
            serde_json::from_str(&ws.read(&format!("out{i}/curves"))).unwrap();
        let steps = curves["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{node}: {curves}");
        for s in steps {
            for key in [
                "kl",
                "score",
                "kl_penalty",
                "variance",
                "policy_loss",
                "value_loss",
                "entropy",
                "mean_ratio",
                "response_length",
            ] {
                let x = s[key].as_f64();
                assert!(x.is_some_and(f64::is_finite), "{node}: {key} in {s}");
            }
            assert!(s["variance"].as_f64().unwrap() > 0.0, "{node}: {s}");
            assert!(s["response_length"].as_f64().unwrap() >= 1.0, "{node}: {s}");
        }
        assert!(
            steps.iter().skip(1).any(|s| s["kl"].as_f64() != Some(0.0)),
            "{node}: the policy never moved from its reference: {curves}"
        );
        // The node's metrics.
        let (show, _) = ws.ok(&["show", node]);
        for m in [
            "final_kl",
            "final_score",
            "final_kl_penalty",
            "mean_variance",
        ] {
            assert!(show.contains(m), "{node}: no {m}: {show}");
        }
        // The exported policy is a Hugging Face folder of its family, with the files
        // transformers' tokenizer and generation config read ...
        let policy = out.join("policy");
        let config: serde_json::Value =
            serde_json::from_str(&ws.read(&format!("out{i}/policy/config.json"))).unwrap();
        assert_eq!(config["model_type"], family, "{config}");
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert!(policy.join(f).is_file(), "{node}: no {f}");
        }
        // ... that `dagrun model` loads by the node's id ...
        let text = "This movie was";
        let (lp, _) = ws.ok(&[
            "model", "logprobs", "--model", node, "--text", text, "--device", "cpu", "--json",
        ]);
        let lp: serde_json::Value = serde_json::from_str(&lp).unwrap();
        let sum = lp["sum_logprob"].as_f64().unwrap();
        assert!(sum.is_finite() && sum < 0.0, "{node}: {lp}");
        let (gen, _) = ws.ok(&[
            "model",
            "generate",
            "--model",
            node,
            "--prompt",
            text,
            "--max-new-tokens",
            "4",
            "--device",
            "cpu",
        ]);
        assert!(!gen.trim().is_empty(), "{node}: nothing generated");
        // ... and transformers, with the same log-probs.
        if let Some(py) = &py {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hf_logprobs.py");
            let o = std::process::Command::new(py)
                .arg(&script)
                .arg(&policy)
                .arg(text)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let hf: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let hf_sum: f64 = hf["texts"][0]["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .sum();
            assert!(
                (hf_sum - sum).abs() < 1e-3 * sum.abs().max(1.0),
                "{node}: transformers {hf_sum} vs dagrun {sum}"
            );
        }
    }
    // The judge sampled every policy's answers (and the reference's) with the prompts in the
    // chat template the policy was trained with, not as plain text.
    ws.ok(&["export", "judge", ws.p("judged").to_str().unwrap()]);
    let judged: serde_json::Value = serde_json::from_str(&ws.read("judged/results")).unwrap();
    assert_eq!(judged["prompt_template"], "model", "{judged}");
    let rendered = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_default();
        s.starts_with("user: ") && s.ends_with("\nassistant:") && s.len() > 17
    };
    assert!(rendered(&judged["reference_first_prompt"]), "{judged}");
    let policies = judged["policies"].as_array().unwrap();
    assert_eq!(policies.len(), nodes.len(), "{judged}");
    for p in policies {
        assert!(rendered(&p["first_prompt"]), "{p}");
        assert_eq!(p["first_prompt"], judged["reference_first_prompt"], "{p}");
        assert!(p["mean_reward"].as_f64().is_some_and(f64::is_finite), "{p}");
    }
    // `lm_pretrain` fine-tuned the Qwen2 folder into a Qwen2 folder with its tokenizer files
    // (the chat template too), which PPO took as its policy.
    ws.ok(&["export", "tuned", ws.p("tuned").to_str().unwrap()]);
    let config: serde_json::Value =
        serde_json::from_str(&ws.read("tuned/model/config.json")).unwrap();
    assert_eq!(config["model_type"], "qwen2", "{config}");
    assert_eq!(
        ws.read("tuned/model/tokenizer_config.json"),
        ws.read("models/qwen2/tokenizer_config.json")
    );
    let (show, _) = ws.ok(&["show", "tuned"]);
    assert!(show.contains("final_loss"), "{show}");
    ws.ok(&["export", "ppo_tuned", ws.p("ppo_tuned").to_str().unwrap()]);
    let curves: serde_json::Value = serde_json::from_str(&ws.read("ppo_tuned/curves")).unwrap();
    assert_eq!(
        curves["steps"].as_array().map(Vec::len),
        Some(2),
        "{curves}"
    );
    // Fully cached the second time.
    assert!(ws.run(&["p.yaml"]).is_empty());
}
