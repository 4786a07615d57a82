//! The functions behind `dagrun model logprobs|generate|reward`.

use dagrun_stages::ml::cli::{self, GenerateOptions};
use dagrun_stages::ml::inference::sampling::SamplingConfig;
use dagrun_stages::ml::models::heads::LinearHeads;
use dagrun_stages::ml::models::hf_weights::WeightDtype;
use dagrun_stages::ml::models::reward_model::RewardModel;
use dagrun_stages::ml::{DeviceSpec, Gpt2};

use crate::common::{max_abs_diff, reference, tiny_hf_dir};

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn logprobs_json_matches_the_transformers_reference() {
    let r = reference();
    let case = &r["texts"][0];
    let v = cli::logprobs(
        &tiny_hf_dir(),
        case["text"].as_str().unwrap(),
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap();
    assert_eq!(v["ids"], case["ids"]);
    let got = floats(&v["token_logprobs"]);
    let expected = floats(&case["token_logprobs"]);
    assert!(max_abs_diff(&got, &expected) <= 1e-4);
    let sum: f32 = expected.iter().sum();
    assert!((v["sum_logprob"].as_f64().unwrap() as f32 - sum).abs() < 1e-3);
    assert_eq!(v.as_object().unwrap().len(), 3);
}

#[test]
fn generate_json_has_prompt_and_new_ids_and_their_text() {
    let r = reference();
    let case = &r["greedy"][0];
    let expected: Vec<u32> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let prompt_len = case["prompt_ids"].as_array().unwrap().len();
    let opts = GenerateOptions {
        max_new_tokens: expected.len() - prompt_len,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        device: DeviceSpec::Cpu,
        stop_at_eos: false,
        dtype: WeightDtype::F32,
    };
    let v = cli::generate(&tiny_hf_dir(), case["prompt"].as_str().unwrap(), &opts).unwrap();
    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(ids, expected);
    assert!(v["text"]
        .as_str()
        .unwrap()
        .starts_with(case["prompt"].as_str().unwrap()));

    let sampled = GenerateOptions {
        max_new_tokens: 6,
        sampling: SamplingConfig {
            temperature: 0.8,
            top_k: 20,
            top_p: 0.9,
            greedy: false,
        },
        seed: 5,
        device: DeviceSpec::Cpu,
        stop_at_eos: true,
        dtype: WeightDtype::F32,
    };
    let a = cli::generate(&tiny_hf_dir(), "The movie", &sampled).unwrap();
    let b = cli::generate(&tiny_hf_dir(), "The movie", &sampled).unwrap();
    assert_eq!(a, b, "same seed, same output");
}

#[test]
fn reward_json_has_per_head_rewards_mean_and_variance() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let backbone = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let rm = RewardModel::new(
        backbone,
        LinearHeads::init(32, &[1, 2, 3], &device).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rm.save(dir.path(), Some(&tiny_hf_dir().join("tokenizer.json")))
        .unwrap();
    let v = cli::reward(
        dir.path(),
        "This movie was",
        " wonderful",
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap();
    let rewards = floats(&v["rewards"]);
    assert_eq!(rewards.len(), 3);
    let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / 3.0;
    let var = rewards
        .iter()
        .map(|&r| (r as f64 - mean).powi(2))
        .sum::<f64>()
        / 2.0;
    assert!((v["mean"].as_f64().unwrap() - mean).abs() < 1e-6);
    assert!((v["variance"].as_f64().unwrap() - var).abs() < 1e-6);
    assert!(var > 0.0);
}

#[test]
fn devices_that_are_not_there_fail_before_any_work() {
    if cfg!(feature = "tch") {
        let n = dagrun_stages::ml::device::cuda_device_count();
        let err =
            cli::logprobs(&tiny_hf_dir(), "hi", DeviceSpec::Cuda(n), WeightDtype::F32).unwrap_err();
        assert!(err.to_string().contains("CUDA device"), "{err}");
    } else {
        let err = cli::logprobs(
            &tiny_hf_dir(),
            "hi",
            DeviceSpec::LibtorchCpu,
            WeightDtype::F32,
        )
        .unwrap_err();
        assert!(err.to_string().contains("--features tch"), "{err}");
    }
    let err = cli::logprobs(
        std::path::Path::new("/nonexistent"),
        "hi",
        DeviceSpec::Cpu,
        WeightDtype::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
