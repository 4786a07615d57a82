//! The Gemma/Llama/Qwen2 decoder against Hugging Face transformers on the tiny sharded fixtures
//! of scripts/make_decoder_fixtures.py (tests/fixtures/{gemma,llama,qwen2}-tiny, llama-rm-tiny,
//! gemma-rm-tiny, qwen2-rm-tiny, and their -bf16 copies).
//!
//! Tolerances (max absolute difference):
//! - float32, and bf16 weights upcast to float32: [`TOL`] = 1e-4 (log-probs and scores), on
//!   `cpu` (burn-flex) and `libtorch-cpu`.
//! - bfloat16 computation: [`TOL_BF16_LOGPROB`] for log-probs, [`TOL_BF16_SCORE`] for scores.
//!   bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2%), and where each backend rounds
//!   inside a matmul or an elementwise chain differs from PyTorch's kernels, so the results
//!   agree to a few bf16 ulps of the logits, not to float32 precision. Observed (2026-11-28,
//!   torch 2.9.0, both CPU devices): 2.5e-2 (Gemma) and 2.2e-2 (Llama) for log-probs, 1.4e-2
//!   for scores; Qwen2 (2026-12-06, transformers 5.25): 3.5e-2 for log-probs — the same size as transformers' own bf16-vs-float32 gap on these weights
//!   (1.4e-2 to 2.8e-2); the tolerances leave about 2× headroom.

use std::path::{Path, PathBuf};

use dagrun_stages::ml::cli::{self, GenerateOptions};
use dagrun_stages::ml::inference::logprobs::token_logprobs_rows;
use dagrun_stages::ml::inference::sampling::SamplingConfig;
use dagrun_stages::ml::models::backbone::{Backbone, LanguageModel};
use dagrun_stages::ml::models::decoder_hf::{decoder_config, model_kind};
use dagrun_stages::ml::models::hf_weights::WeightDtype;
use dagrun_stages::ml::models::reward_model::{Pooling, RewardModel};
use dagrun_stages::ml::models::weights::{to_f32_vec, HostTensors};
use dagrun_stages::ml::{DeviceSpec, KvCache, Padding, TokenBatch};
use serde_json::Value;

use crate::common::{cpu_devices, fixtures, max_abs_diff};

const TOL: f32 = 1e-4;
const TOL_BF16_LOGPROB: f32 = 0.06;
const TOL_BF16_SCORE: f32 = 0.03;

fn reference() -> Value {
    let path = fixtures().join("decoders-reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn dir(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// (ids, expected log-probs) of every text of a causal model's reference section.
fn texts(section: &Value) -> Vec<(Vec<u32>, Vec<f32>)> {
    section["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (u32s(&t["ids"]), f32s(&t["token_logprobs"])))
        .collect()
}

/// Max |Δ| of the log-probs of `model` against a reference section: each text alone, and all
/// texts as one right-padded and one left-padded batch.
fn logprob_diff(model: &impl LanguageModel, section: &Value) -> f32 {
    let cases = texts(section);
    let mut worst = 0.0f32;
    for (ids, expected) in &cases {
        let got = &token_logprobs_rows(
            model,
            &TokenBatch::unpadded(std::slice::from_ref(ids)).unwrap(),
        )
        .unwrap()[0];
        worst = worst.max(max_abs_diff(got, expected));
    }
    let rows: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
    for padding in [Padding::Right, Padding::Left] {
        let batch = TokenBatch::from_rows(&rows, 0, padding).unwrap();
        let got = token_logprobs_rows(model, &batch).unwrap();
        for ((_, expected), row) in cases.iter().zip(&got) {
            worst = worst.max(max_abs_diff(row, expected));
        }
    }
    worst
}

/// Max |Δ| of a reward model's scores: each case alone, the right-padded batch (against
/// transformers' own batched scores) and a left-padded batch.
fn score_diff(rm: &RewardModel, section: &Value) -> f32 {
    let cases = section["cases"].as_array().unwrap();
    let rows: Vec<Vec<u32>> = cases.iter().map(|c| u32s(&c["ids"])).collect();
    let expected: Vec<Vec<f32>> = cases.iter().map(|c| f32s(&c["scores"])).collect();
    let mut worst = 0.0f32;
    for (ids, e) in rows.iter().zip(&expected) {
        let got = to_f32_vec(
            rm.forward(&TokenBatch::unpadded(std::slice::from_ref(ids)).unwrap())
                .unwrap(),
        );
        worst = worst.max(max_abs_diff(&got, e));
    }
    let batched: Vec<f32> = section["right_padded_batch_scores"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(f32s)
        .collect();
    let right = TokenBatch::from_rows(&rows, 0, Padding::Right).unwrap();
    worst = worst.max(max_abs_diff(
        &to_f32_vec(rm.forward(&right).unwrap()),
        &batched,
    ));
    let left = TokenBatch::from_rows(&rows, 0, Padding::Left).unwrap();
    let flat: Vec<f32> = expected.concat();
    worst = worst.max(max_abs_diff(&to_f32_vec(rm.forward(&left).unwrap()), &flat));
    worst
}

#[test]
fn causal_logprobs_match_transformers_in_f32_on_every_cpu_device() {
    let r = reference();
    for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        for spec in cpu_devices() {
            let device = spec.resolve().unwrap();
            let model = Backbone::from_hf_dir(&dir(name), &device, WeightDtype::F32).unwrap();
            let diff = logprob_diff(&model, &r["models"][name]["f32"]);
            println!("{name} f32 {spec}: max |Δ logprob| = {diff:.2e}");
            assert!(diff <= TOL, "{name} {spec}: {diff}");
        }
    }
}

#[test]
fn sequence_classifier_scores_match_transformers_in_f32_on_every_cpu_device() {
    let r = reference();
    for name in ["llama-rm-tiny", "gemma-rm-tiny", "qwen2-rm-tiny"] {
        for spec in cpu_devices() {
            let device = spec.resolve().unwrap();
            let rm = RewardModel::load(&dir(name), &device).unwrap();
            assert_eq!(rm.pooling(), Pooling::LastNonPad(Some(0)));
            let k = if name.starts_with("gemma") { 2 } else { 1 };
            assert_eq!(rm.heads.num_heads(), k);
            let diff = score_diff(&rm, &r["models"][name]["f32"]);
            println!("{name} f32 {spec}: max |Δ score| = {diff:.2e}");
            assert!(diff <= TOL, "{name} {spec}: {diff}");
        }
    }
}

#[test]
fn bf16_checkpoints_match_transformers_in_bf16_and_upcast() {
    let r = reference();
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
            let folder = dir(&format!("{name}-bf16"));
            let entry = &r["models"][name];
            let up = Backbone::from_hf_dir(&folder, &device, WeightDtype::F32).unwrap();
            let d_up = logprob_diff(&up, &entry["bf16_upcast"]);
            let half = Backbone::from_hf_dir(&folder, &device, WeightDtype::Bf16).unwrap();
            let d_half = logprob_diff(&half, &entry["bf16"]);
            // The bf16 path really rounds to bf16: it is off the float32 computation.
            let d_half_vs_f32 = logprob_diff(&half, &entry["bf16_upcast"]);
            println!(
                "{name} {spec}: bf16→f32 max |Δ| = {d_up:.2e}, bf16 max |Δ| = {d_half:.2e} \
                 (bf16 vs f32 computation: {d_half_vs_f32:.2e})"
            );
            assert!(d_up <= TOL, "{name} {spec} upcast: {d_up}");
            assert!(d_half <= TOL_BF16_LOGPROB, "{name} {spec} bf16: {d_half}");
            assert!(
                d_half_vs_f32 > 1e-3,
                "{name} {spec}: bf16 computed like f32"
            );
            let hidden = half
                .hidden_states(&TokenBatch::unpadded(&[vec![1, 2, 3]]).unwrap(), None)
                .unwrap();
            assert_eq!(hidden.dtype(), burn::tensor::DType::BF16);
        }
        let name = "llama-rm-tiny";
        let folder = dir(&format!("{name}-bf16"));
        let entry = &r["models"][name];
        let up = RewardModel::load_as(&folder, &device, WeightDtype::F32).unwrap();
        let d_up = score_diff(&up, &entry["bf16_upcast"]);
        let half = RewardModel::load_as(&folder, &device, WeightDtype::Bf16).unwrap();
        let d_half = score_diff(&half, &entry["bf16"]);
        println!("{name} {spec}: bf16→f32 max |Δ| = {d_up:.2e}, bf16 max |Δ| = {d_half:.2e}");
        assert!(d_up <= TOL, "{name} {spec} upcast: {d_up}");
        assert!(d_half <= TOL_BF16_SCORE, "{name} {spec} bf16: {d_half}");
    }
}

#[test]
fn llama3_and_qwen2_rope_frequencies_match_transformers() {
    let r = reference();
    for name in ["llama-tiny", "qwen2-tiny"] {
        let path = dir(name).join("config.json");
        let (_, value) = model_kind(&path).unwrap();
        let config = decoder_config(&value, &path).unwrap();
        let expected = f32s(&r["models"][name]["inv_freq"]);
        let got = config.inv_freq();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g - e).abs() <= 1e-6 * e.abs(),
                "{name}: {got:?} vs {expected:?}"
            );
        }
    }
}

/// Qwen2: the fixture's config is read with biases on q/k/v only, theta 1e6 and no window;
/// with `use_sliding_window: true` a sequence up to the window computes as before (the
/// windowed mask equals the causal one) and a longer one is refused, cache included.
#[test]
fn qwen2_biases_and_the_sliding_window_refusal() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let path = dir("qwen2-tiny").join("config.json");
    let (_, value) = model_kind(&path).unwrap();
    let config = decoder_config(&value, &path).unwrap();
    assert!(config.qkv_bias && !config.attention_bias && config.tie_word_embeddings);
    assert_eq!((config.rope_theta, config.sliding_window), (1e6, None));
    let r = reference();
    let cases = texts(&r["models"]["qwen2-tiny"]["f32"]);
    let ids = cases[0].0.clone();
    let tmp = copy_folder("qwen2-tiny");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap())
            .unwrap();
    v["use_sliding_window"] = serde_json::json!(true);
    v["sliding_window"] = serde_json::json!(ids.len());
    v.as_object_mut().unwrap().remove("layer_types");
    std::fs::write(tmp.path().join("config.json"), v.to_string()).unwrap();
    let windowed = Backbone::from_hf_dir(tmp.path(), &device, WeightDtype::F32).unwrap();
    let full = Backbone::from_hf_dir(&dir("qwen2-tiny"), &device, WeightDtype::F32).unwrap();
    let batch = TokenBatch::unpadded(std::slice::from_ref(&ids)).unwrap();
    assert_eq!(
        token_logprobs_rows(&windowed, &batch).unwrap(),
        token_logprobs_rows(&full, &batch).unwrap()
    );
    let mut longer = ids.clone();
    longer.push(ids[0]);
    let err = token_logprobs_rows(&windowed, &TokenBatch::unpadded(&[longer]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sliding-window attention") && err.contains(&format!("window {}", ids.len())),
        "{err}"
    );
    // Through a cache: the prompt fits, one more token does not.
    let mut cache = KvCache::new();
    windowed.logits_of(&batch, Some(&mut cache)).unwrap();
    let one = TokenBatch::unpadded(&[vec![ids[0]]]).unwrap();
    assert!(windowed.logits_of(&one, Some(&mut cache)).is_err());
}

/// Merge a sharded folder's tensors into one `model.safetensors` (plus its config) in `out`.
fn unshard(folder: &Path, out: &Path) {
    let mut all = HostTensors::new(out.join("model.safetensors"));
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("model-") && name.ends_with(".safetensors") {
            all.tensors
                .extend(HostTensors::read(&path).unwrap().tensors);
        }
    }
    all.write(&out.join("model.safetensors")).unwrap();
    std::fs::copy(folder.join("config.json"), out.join("config.json")).unwrap();
}

#[test]
fn sharded_load_equals_single_file_load() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let r = reference();
    for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        let folder = dir(name);
        assert!(folder.join("model.safetensors.index.json").exists());
        let tmp = tempfile::tempdir().unwrap();
        unshard(&folder, tmp.path());
        let sharded = Backbone::from_hf_dir(&folder, &device, WeightDtype::F32).unwrap();
        let single = Backbone::from_hf_dir(tmp.path(), &device, WeightDtype::F32).unwrap();
        for (ids, _) in texts(&r["models"][name]["f32"]) {
            let batch = TokenBatch::unpadded(&[ids]).unwrap();
            assert_eq!(
                token_logprobs_rows(&sharded, &batch).unwrap(),
                token_logprobs_rows(&single, &batch).unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn kv_cache_decoding_equals_recomputation() {
    let r = reference();
    for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        for spec in cpu_devices() {
            let device = spec.resolve().unwrap();
            let model = Backbone::from_hf_dir(&dir(name), &device, WeightDtype::F32).unwrap();
            let cases = texts(&r["models"][name]["f32"]);
            // Two rows of different lengths, left-padded; then 4 steps of one token each.
            let (a, b) = (&cases[0].0, &cases[1].0);
            let prompts = vec![a[..6].to_vec(), b[..3].to_vec()];
            let mut cache = KvCache::new();
            let first = TokenBatch::from_rows(&prompts, 0, Padding::Left).unwrap();
            model.logits_of(&first, Some(&mut cache)).unwrap();
            let mut full = first.clone();
            for step in 0..4 {
                let ids = vec![a[6 + step], b[3 + step]];
                let one = TokenBatch {
                    rows: 2,
                    len: 1,
                    ids: ids.clone(),
                    mask: vec![1, 1],
                };
                let cached = to_f32_vec(model.logits_of(&one, Some(&mut cache)).unwrap());
                let mut rows_ids = Vec::new();
                let mut rows_mask = Vec::new();
                for (row, &id) in ids.iter().enumerate() {
                    let s = row * full.len;
                    rows_ids.extend_from_slice(&full.ids[s..s + full.len]);
                    rows_ids.push(id);
                    rows_mask.extend_from_slice(&full.mask[s..s + full.len]);
                    rows_mask.push(1);
                }
                full = TokenBatch {
                    rows: 2,
                    len: full.len + 1,
                    ids: rows_ids,
                    mask: rows_mask,
                };
                let logits = model.logits_of(&full, None).unwrap();
                let [bsz, t, v] = logits.dims();
                let last = to_f32_vec(logits.slice([0..bsz, t - 1..t, 0..v]));
                let diff = max_abs_diff(&cached, &last);
                assert!(diff <= 1e-5, "{name} {spec} step {step}: {diff}");
            }
        }
    }
}

#[test]
fn greedy_generation_reproduces_transformers() {
    let r = reference();
    for name in ["gemma-tiny", "llama-tiny", "qwen2-tiny"] {
        for case in r["models"][name]["f32"]["greedy"].as_array().unwrap() {
            let expected = u32s(&case["ids"]);
            let prompt_len = case["prompt_ids"].as_array().unwrap().len();
            let opts = GenerateOptions {
                max_new_tokens: expected.len() - prompt_len,
                sampling: SamplingConfig::greedy(),
                stop_at_eos: false,
                device: DeviceSpec::Cpu,
                ..GenerateOptions::default()
            };
            let v = cli::generate(&dir(name), case["prompt"].as_str().unwrap(), &opts).unwrap();
            assert_eq!(u32s(&v["ids"]), expected, "{name}");
        }
    }
}

#[test]
fn model_reward_scores_a_llama_sequence_classifier_folder() {
    let r = reference();
    for case in r["models"]["llama-rm-tiny"]["f32"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["prompt"].is_string())
    {
        let v = cli::reward(
            &dir("llama-rm-tiny"),
            case["prompt"].as_str().unwrap(),
            case["response"].as_str().unwrap(),
            DeviceSpec::Cpu,
            WeightDtype::F32,
        )
        .unwrap();
        let got = f32s(&v["rewards"]);
        assert!(max_abs_diff(&got, &f32s(&case["scores"])) <= TOL, "{v}");
        assert_eq!(v["variance"].as_f64().unwrap(), 0.0);
    }
    let v = cli::logprobs(
        &dir("gemma-tiny"),
        "Hello",
        DeviceSpec::Cpu,
        WeightDtype::Bf16,
    )
    .unwrap();
    assert!(!v["token_logprobs"].as_array().unwrap().is_empty());
    // A causal LM folder is not a reward model; a classifier without LM head has no log-probs.
    let err = cli::reward(
        &dir("llama-tiny"),
        "a",
        "b",
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a reward model"), "{err}");
    let err = cli::logprobs(
        &dir("llama-rm-tiny"),
        "Hello",
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no LM head"), "{err}");
}

/// Copy a fixture folder into a temp dir for corruption.
fn copy_folder(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    tmp
}

#[test]
fn broken_folders_are_reported_by_file_and_tensor() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let load = |p: &Path| Backbone::from_hf_dir(p, &device, WeightDtype::F32).unwrap_err();

    // A config that disagrees with the weights: the shape error names tensor and shard.
    let tmp = copy_folder("llama-tiny");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"intermediate_size\": 80", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let err = load(tmp.path()).to_string();
    assert!(
        err.contains("mlp.gate_proj.weight")
            && err.contains("[96, 32]")
            && err.contains("model-0000"),
        "{err}"
    );

    // A tensor missing from the index.
    let tmp = copy_folder("gemma-tiny");
    let index = tmp.path().join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove("model.layers.1.post_attention_layernorm.weight");
    std::fs::write(&index, v.to_string()).unwrap();
    let err = load(tmp.path()).to_string();
    assert!(
        err.contains("missing tensor `model.layers.1.post_attention_layernorm.weight`"),
        "{err}"
    );

    // A shard the index names but that is absent.
    let tmp = copy_folder("gemma-tiny");
    std::fs::remove_file(tmp.path().join("model-00002-of-00004.safetensors")).unwrap();
    let err = load(tmp.path()).to_string();
    assert!(err.contains("model-00002-of-00004.safetensors"), "{err}");

    // An architecture that is not implemented.
    let tmp = copy_folder("gemma-tiny");
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"gemma\"", "\"gemma2\"")).unwrap();
    let err = load(tmp.path()).to_string();
    assert!(
        err.contains("model_type `gemma2` is not supported"),
        "{err}"
    );
}

/// `dagrun model logprobs` tokenizes as transformers' `tokenizer(text)`: a tokenizer whose
/// post-processor adds a BOS (Gemma, Llama 3) gets it, and the BOS is scored as context.
#[test]
fn logprobs_text_gets_the_bos_its_tokenizer_adds() {
    let tmp = copy_folder("gemma-tiny");
    let path = tmp.path().join("tokenizer.json");
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let bos = serde_json::json!({"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}});
    let seq =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    tok["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [bos, seq("A", 0)],
        "pair": [bos, seq("A", 0), seq("B", 1)],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}
    });
    std::fs::write(&path, tok.to_string()).unwrap();
    let plain = cli::logprobs(
        &dir("gemma-tiny"),
        "Hello",
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap();
    let with = cli::logprobs(tmp.path(), "Hello", DeviceSpec::Cpu, WeightDtype::F32).unwrap();
    let (plain_ids, with_ids) = (u32s(&plain["ids"]), u32s(&with["ids"]));
    assert_eq!(with_ids[0], 0);
    assert_eq!(&with_ids[1..], &plain_ids[..]);
    assert_eq!(
        with["token_logprobs"].as_array().unwrap().len(),
        plain_ids.len()
    );
}

/// A decoder saved by dagrun loads back to the same function, in f32 and bf16, with and
/// without an LM head (a classifier's backbone is written as the headless `LlamaModel`).
#[test]
fn saved_decoders_load_back_to_the_same_outputs() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let r = reference();
    for (name, dtype) in [
        ("gemma-tiny", WeightDtype::F32),
        ("llama-tiny-bf16", WeightDtype::Bf16),
        ("qwen2-tiny", WeightDtype::F32),
        ("qwen2-tiny-bf16", WeightDtype::Bf16),
    ] {
        let model = Backbone::from_hf_dir(&dir(name), &device, dtype).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        model.save_hf_dir(tmp.path(), None).unwrap();
        let back = Backbone::from_hf_dir(tmp.path(), &device, dtype).unwrap();
        let key = name.trim_end_matches("-bf16");
        for (ids, _) in texts(&r["models"][key]["f32"]) {
            let batch = TokenBatch::unpadded(&[ids]).unwrap();
            assert_eq!(
                token_logprobs_rows(&model, &batch).unwrap(),
                token_logprobs_rows(&back, &batch).unwrap(),
                "{name}"
            );
        }
    }
    let rm = RewardModel::load(&dir("llama-rm-tiny"), &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rm.save(
        tmp.path(),
        Some(&dir("llama-rm-tiny").join("tokenizer.json")),
    )
    .unwrap();
    let config = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    assert!(config.contains("\"LlamaModel\""), "{config}");
    let back = RewardModel::load(tmp.path(), &device).unwrap();
    assert_eq!(back.pooling(), Pooling::LastNonPad(Some(0)));
    // Every case, including the one ending in a real EOS (= pad id), as one padded batch.
    let rows: Vec<Vec<u32>> = r["models"]["llama-rm-tiny"]["f32"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| u32s(&c["ids"]))
        .collect();
    let batch = TokenBatch::from_rows(&rows, 0, Padding::Right).unwrap();
    assert_eq!(
        to_f32_vec(back.forward(&batch).unwrap()),
        to_f32_vec(rm.forward(&batch).unwrap())
    );
}
