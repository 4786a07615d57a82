//! `dagrun model reward|logprobs` on the Hugging Face Gemma/Llama fixtures (sharded folders
//! written by scripts/make_decoder_fixtures.py), against transformers' reference outputs.

use std::path::PathBuf;

use crate::support::Ws;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("decoders-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn model_reward_scores_a_llama_sequence_classifier_folder() {
    let r = reference();
    let case = &r["models"]["llama-rm-tiny"]["f32"]["cases"][0];
    let model = fixture("llama-rm-tiny");
    let ws = Ws::new();
    let (out, _) = ws.ok(&[
        "model",
        "reward",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--response",
        case["response"].as_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = v["rewards"][0].as_f64().unwrap();
    let expected = case["scores"][0].as_f64().unwrap();
    assert!((got - expected).abs() <= 1e-4, "{got} vs {expected}");

    // bf16 on the bf16 copy, and log-probs of the Gemma causal LM, through the same binary.
    let (out, _) = ws.ok(&[
        "model",
        "reward",
        "--model",
        fixture("llama-rm-tiny-bf16").to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--response",
        case["response"].as_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]);
    assert!(out.starts_with("rewards:"), "{out}");
    let (out, _) = ws.ok(&[
        "model",
        "logprobs",
        "--model",
        fixture("gemma-tiny").to_str().unwrap(),
        "--text",
        "Hello",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["sum_logprob"].as_f64().unwrap() < 0.0);
}
