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

/// A K-head reward model on each backbone family, exported as a `*ForSequenceClassification`
/// folder with one head (a member, or the mean of the heads): transformers'
/// `AutoModelForSequenceClassification` loads it and scores the reader's token ids as dagrun
/// does, less the dropped bias (skipped without python + transformers); dagrun loads a
/// decoder's export back as a classifier with the same scores; a folder's own chat template
/// travels into the export's `tokenizer_config.json`.
#[test]
fn a_reward_head_exports_as_a_sequence_classifier_that_scores_the_same() {
    use burn::tensor::{Tensor, TensorData};
    use dagrun_stages::ml::models::backbone::{Backbone, LanguageModel};
    use dagrun_stages::ml::models::heads::LinearHeads;
    use dagrun_stages::ml::models::hf_weights::WeightDtype;
    use dagrun_stages::ml::models::reward_model::RewardModel;
    use dagrun_stages::ml::models::seq_cls::{save_seq_cls, ScoreHead};
    use dagrun_stages::ml::reward::{Exchange, RewardReader};
    let python = python_with_transformers();
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let exchanges = [
        Exchange::pair("The movie was", " a delight from start to end."),
        Exchange::pair("I think", " no."),
        Exchange::pair("Tell me a story", " Once upon a time, a café opened."),
    ];
    let template = "{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}";
    let bias = [0.25f32, -0.5, 0.75];
    for name in ["gpt2-tiny", "gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        let src = crate::common::fixtures().join(name);
        let backbone = Backbone::from_hf_dir(&src, &device, WeightDtype::F32).unwrap();
        let e = backbone.hidden_size();
        let w: Vec<f32> = (0..e * 3)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0)
            .collect();
        let heads = LinearHeads::from_tensors(
            Tensor::from_data(TensorData::new(w, [e, 3]), &device),
            Tensor::from_data(TensorData::new(bias.to_vec(), [3]), &device),
        );
        let dir = tempfile::tempdir().unwrap();
        let rm = dir.path().join("rm");
        RewardModel::new(backbone, heads)
            .unwrap()
            .save(&rm, Some(&src.join("tokenizer.json")))
            .unwrap();
        let own_template = name == "qwen2-tiny";
        if own_template {
            let tc = serde_json::json!({"chat_template": template, "eos_token": "<|endoftext|>"});
            std::fs::write(rm.join("tokenizer_config.json"), tc.to_string()).unwrap();
        }
        let reader = RewardReader::load(&rm, &device, WeightDtype::F32, None, 256, 4).unwrap();
        let rows: Vec<Vec<u32>> = reader
            .encode(&exchanges)
            .unwrap()
            .into_iter()
            .map(|enc| enc.ids)
            .collect();
        let scores = reader.score(&exchanges).unwrap();
        for (choice, label) in [(ScoreHead::Member(1), "member1"), (ScoreHead::Mean, "mean")] {
            let out = dir.path().join(label);
            let x =
                save_seq_cls(reader.model(), &rm, reader.input().template(), &out, choice).unwrap();
            let want: Vec<f64> = (0..exchanges.len())
                .map(|r| match choice {
                    ScoreHead::Member(k) => scores.head(r, k) - bias[k] as f64,
                    _ => scores.mean(r) - (bias.iter().sum::<f32>() / 3.0) as f64,
                })
                .collect();
            let dropped = match choice {
                ScoreHead::Member(k) => bias[k],
                _ => bias.iter().sum::<f32>() / 3.0,
            };
            assert!((x.dropped_bias - dropped).abs() < 1e-6, "{name}: {x:?}");
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(config["architectures"][0], x.architecture.as_str());
            assert!(
                x.architecture.ends_with("ForSequenceClassification"),
                "{x:?}"
            );
            assert_eq!(config["num_labels"], 1, "{config}");
            assert_eq!(config["pad_token_id"], x.pad_token_id, "{config}");
            for f in [
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
            ] {
                assert!(out.join(f).is_file(), "{name}: no {f}");
            }
            let tc: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
            )
            .unwrap();
            if own_template {
                assert_eq!(tc["chat_template"], template, "{name}");
            }
            // dagrun reads a decoder's export back as a one-label classifier.
            if name != "gpt2-tiny" {
                let back =
                    RewardReader::load(&out, &device, WeightDtype::F32, None, 256, 4).unwrap();
                assert_eq!(back.num_heads(), 1);
                let got = back.score(&exchanges).unwrap();
                for (r, w) in want.iter().enumerate() {
                    let g = got.head(r, 0);
                    assert!((g - w).abs() < 1e-4, "{name} {label} row {r}: {g} vs {w}");
                }
            }
            let Some(py) = &python else { continue };
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/hf_seq_cls.py");
            let output = std::process::Command::new(py)
                .arg(script)
                .arg(&out)
                .arg(serde_json::to_string(&rows).unwrap())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "hf_seq_cls.py failed on {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let hf: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(hf["architecture"], x.architecture.as_str(), "{hf}");
            assert_eq!(hf["num_labels"], 1, "{hf}");
            if own_template {
                assert_eq!(hf["chat_template"], template, "{hf}");
            }
            for (r, w) in want.iter().enumerate() {
                let h = hf["scores"][r][0].as_f64().unwrap();
                println!("{name} {label} row {r}: transformers {h:.6}, dagrun {w:.6}");
                assert!((h - w).abs() < 1e-4, "{name} {label} row {r}: {h} vs {w}");
            }
        }
    }
}
