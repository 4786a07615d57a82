//! A model dagrun trained, exported, and loaded by Hugging Face transformers gives the same
//! log-probs (runs when python with torch + transformers is available: DAGRUN_PYTHON or
//! python3; skipped with a message otherwise).

use dagrun_stages::ml::inference::logprobs::token_logprobs_rows;
use dagrun_stages::ml::training::schedule::LrSchedule;
use dagrun_stages::ml::training::train_lm::{LmTrainConfig, LmTrainer};
use dagrun_stages::ml::{DeviceSpec, Gpt2, Gpt2Config, TokenBatch};

use crate::common::{max_abs_diff, python_with_transformers};
use crate::train::corpus_tokens;

#[test]
fn dagrun_trained_export_loads_in_transformers_with_the_same_logprobs() {
    let Some(python) = python_with_transformers() else {
        return;
    };
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let (tok, ids) = corpus_tokens();
    let model = Gpt2::init(&Gpt2Config::tiny(tok.vocab_size()), 9, &device).unwrap();
    let config = LmTrainConfig {
        seq_len: 24,
        batch_size: 4,
        grad_accum_steps: 1,
        max_steps: 10,
        schedule: LrSchedule::Constant { lr: 3e-3 },
        optimizer: Default::default(),
        max_grad_norm: Some(1.0),
        seed: 1,
        checkpoint_every: 0,
    };
    let mut trainer = LmTrainer::new(&model, &ids, config, &device, None).unwrap();
    trainer.run(None, None).unwrap();
    let trained = trainer.into_model();

    let dir = tempfile::tempdir().unwrap();
    let tok_path = dir.path().join("tok.json");
    tok.save(&tok_path).unwrap();
    let out = dir.path().join("model");
    trained.save_hf_dir(&out, Some(&tok_path)).unwrap();

    let texts = ["the cat sat on the mat.", "a dog met the end", "Zürich!"];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hf_logprobs.py");
    let output = std::process::Command::new(&python)
        .arg(script)
        .arg(&out)
        .args(texts)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hf_logprobs.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hf: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The special tokens and what `generate` stops at, as transformers reads them.
    assert_eq!(hf["eos_token"], "<|endoftext|>", "{hf}");
    assert_eq!(
        hf["generation_eos_token_id"],
        serde_json::json!(tok.eos_id().unwrap()),
        "{hf}"
    );
    for (i, text) in texts.iter().enumerate() {
        let case = &hf["texts"][i];
        let hf_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(hf_ids, tok.encode(text).unwrap(), "{text}");
        // `AutoTokenizer` loads the folder (its tokenizer_config.json) and encodes the same.
        assert_eq!(
            case["auto_ids"],
            serde_json::json!(hf_ids),
            "{text}: {case}"
        );
        let hf_lp: Vec<f32> = case["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ours = token_logprobs_rows(&trained, &TokenBatch::unpadded(&[hf_ids]).unwrap())
            .unwrap()
            .remove(0);
        let diff = max_abs_diff(&ours, &hf_lp);
        println!("{text:?}: max |Δ| vs transformers = {diff:.2e}");
        assert!(diff <= 1e-4, "{text:?}: {diff}");
    }
}

/// Gemma, Llama and Qwen2 folders written by dagrun load in transformers (AutoModelForCausalLM) and
/// give the same log-probs (skipped without python + transformers).
#[test]
fn exported_decoders_load_in_transformers_with_the_same_logprobs() {
    use dagrun_stages::ml::models::backbone::Backbone;
    use dagrun_stages::ml::models::hf_weights::WeightDtype;
    let Some(python) = python_with_transformers() else {
        return;
    };
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let texts = ["The quick brown fox", "café 42!"];
    for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        let src = crate::common::fixtures().join(name);
        let model = Backbone::from_hf_dir(&src, &device, WeightDtype::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model
            .save_hf_dir(dir.path(), Some(&src.join("tokenizer.json")))
            .unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hf_logprobs.py");
        let output = std::process::Command::new(&python)
            .arg(script)
            .arg(dir.path())
            .args(texts)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "hf_logprobs.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let hf: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        for case in hf["texts"].as_array().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            let hf_lp: Vec<f32> = serde_json::from_value(case["token_logprobs"].clone()).unwrap();
            let ours = token_logprobs_rows(&model, &TokenBatch::unpadded(&[ids]).unwrap())
                .unwrap()
                .remove(0);
            let diff = max_abs_diff(&ours, &hf_lp);
            println!("{name} exported: max |Δ| vs transformers = {diff:.2e}");
            assert!(diff <= 1e-4, "{name}: {diff}");
        }
    }
}
