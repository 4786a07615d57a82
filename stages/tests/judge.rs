//! `judge_eval` through the real engine with Hugging Face backbones: a Gemma policy and a GPT-2
//! reference, judged by a Llama `*ForSequenceClassification` folder in bf16 (the paper's judge
//! setup at fixture scale; tests/fixtures written by scripts/make_decoder_fixtures.py).

use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
};

use dagrun_cache::{Cache, OpenOptions};
use dagrun_engine::{
    plan::Selection,
    run::{run, Observer, Outcome, RunOptions},
    stage::{Progress, ProgressSink},
    Pipeline,
};
use dagrun_stages::registry;
use serde_json::Value;

struct Quiet;
impl ProgressSink for Quiet {
    fn progress(&self, _node: &str, _p: &Progress) {}
}
impl Observer for Quiet {
    fn started(&self, _node: &str) {}
    fn finished(&self, _node: &str, _outcome: &Outcome) {}
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

fn open(dir: &Path) -> Cache {
    let options = OpenOptions {
        wait: true,
        holder: "test".into(),
    };
    Cache::open(&dir.join(".dagrun"), &options, &|_| {}).unwrap()
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
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    let p = Pipeline::load(&file, dir.path(), &registry()).unwrap_or_else(|e| panic!("{e}"));
    let cache = open(dir.path());
    let options = RunOptions {
        jobs: 1,
        gpus: 0,
        selection: Selection::default(),
        command: "test".into(),
        ..Default::default()
    };
    let report = run(
        &p,
        &cache,
        &options,
        Arc::new(Quiet),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    for outcome in report.outcomes.values() {
        assert!(matches!(outcome, Outcome::Ran { .. }), "{outcome:?}");
    }
    drop(cache);
    let cache = open(dir.path());
    let latest = cache.latest("judge").unwrap().expect("judge ran");
    let rec = cache.record(&latest.key).unwrap().expect("record");
    let path = cache.materialize(&rec.outputs["results"]).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v["prompts"], 2);
    assert!(v["reference"].as_f64().unwrap().is_finite());
    let policy = &v["policies"][0];
    assert!(policy["mean_reward"].as_f64().unwrap().is_finite(), "{v}");
    assert!(policy["std_reward"].as_f64().unwrap() > 0.0, "{v}");
}
