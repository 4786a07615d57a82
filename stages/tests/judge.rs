//! `judge_eval` through the real engine with Hugging Face backbones: a Gemma policy and a GPT-2
//! reference, judged by a Llama `*ForSequenceClassification` folder in bf16 (the paper's judge
//! setup at fixture scale; tests/fixtures written by scripts/make_decoder_fixtures.py).

mod engine_support;

use std::path::PathBuf;

use engine_support::{assert_ran, output, run_pipeline};
use serde_json::Value;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn judge_eval_scores_a_gemma_policy_with_a_llama_sequence_classifier_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"prompt\": \"This movie was\"}\n{\"prompt\": \"The quick brown\"}\n",
    )
    .unwrap();
    let yaml = format!(
        "stages:\n  judge:\n    kind: judge_eval\n    device: cpu\n    params:\n      \
         policies: [\"{gemma}\"]\n      reference: \"{gpt2}\"\n      prompts: \"{prompts}\"\n      \
         judge_model: \"{judge}\"\n      judge_dtype: bf16\n      max_new_tokens: 4\n",
        gemma = fixture("gemma-tiny"),
        gpt2 = fixture("gpt2-tiny"),
        prompts = prompts.display(),
        judge = fixture("llama-rm-tiny-bf16"),
    );
    assert_ran(&run_pipeline(dir.path(), &yaml));
    let (path, _) = output(dir.path(), "judge", "results");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v["prompts"], 2);
    assert!(v["reference"].as_f64().unwrap().is_finite());
    let policy = &v["policies"][0];
    assert!(policy["mean_reward"].as_f64().unwrap().is_finite(), "{v}");
    assert!(policy["std_reward"].as_f64().unwrap() > 0.0, "{v}");
}
