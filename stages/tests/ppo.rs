//! PPO: the variance-aware variant with σ² ≡ 1 is vanilla PPO exactly, an ensemble too
//! small for a variance is refused where one is needed, and a killed run resumes from its
//! checkpoint to the same end.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use dagrun_stages::{
    kinds::ppo::{PpoParams, Setup},
    ml::{models::heads::LinearHeads, models::reward_model::RewardModel, Gpt2},
    rl::{
        policy::PolicyValue,
        ppo::{train, PpoRun, StepStats},
        rollout::{Aggregation, Method},
    },
};

/// The tiny GPT-2 fixture (under `DAGRUN_FIXTURES` when set: a test executable run on another
/// machine, see scripts/build-for-torch.sh).
fn fixture() -> PathBuf {
    fixture_named("gpt2-tiny")
}

/// The tiny fixture `name` (`qwen2-tiny`, `gemma-rm-tiny`, ...), found as [`fixture`] is.
fn fixture_named(name: &str) -> PathBuf {
    match std::env::var_os("DAGRUN_FIXTURES") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name),
    }
}

/// A 3-head reward model on the fixture's backbone, saved in `dir`.
fn reward_model(dir: &Path) -> PathBuf {
    let device = Device::flex();
    let backbone = Gpt2::from_hf_dir(&fixture(), &device).unwrap();
    let heads = LinearHeads::init(backbone.config().n_embd, &[11, 12, 13], &device).unwrap();
    let out = dir.join("rm");
    RewardModel::new(backbone, heads)
        .unwrap()
        .save(&out, Some(&fixture().join("tokenizer.json")))
        .unwrap();
    out
}

fn params(rm: &Path, method: Method) -> PpoParams {
    let v = serde_json::json!({
        "policy": fixture().to_str().unwrap(),
        "reward_model": rm.to_str().unwrap(),
        "prompts": "unused",
        "method": method,
        "beta": 0.2,
        "lr": 1e-3,
        "batch_size": 4,
        "mini_batch_size": 2,
        "ppo_epochs": 2,
        "steps": 3,
        "max_new_tokens": 5,
        "checkpoint_every": 1,
        "seed": 7,
    });
    serde_json::from_value(v).unwrap()
}

/// `judge_eval` reads a policy's prompts as `ppo` trained it on them: the same template and
/// ids as `setup` (a `ppo` node's, from `p`), and a reward-model judge scores the answers
/// (read as the prompt's own text and the response) exactly as PPO's reward model scores the
/// same sampled sequences.
fn judged_as_trained(setup: &Setup, p: &PpoParams, texts: &[String]) {
    use dagrun_stages::rl::judge::{sample_answers, AnswerConfig, Judge};
    let cfg = AnswerConfig {
        max_new_tokens: 3,
        temperature: 1.0,
        batch_size: 2,
        seed: 3,
        prompt_template: p.prompt_template.clone(),
    };
    let answers = sample_answers(Path::new(&p.policy), texts, &cfg, &Device::flex()).unwrap();
    assert_eq!(answers.template, setup.prompt_template);
    assert_eq!(answers.prompt_ids, setup.prompts);
    assert_eq!(answers.sequences.len(), texts.len());
    for (e, t) in answers.exchanges.iter().zip(texts) {
        assert_eq!(e.prompt(), t, "the judge reads the prompt's own text");
    }
    // One batch each (as many rows as PPO's reward batches): the same floats.
    let reader = dagrun_stages::ml::reward::RewardReader::load(
        Path::new(&p.reward_model),
        &Device::flex(),
        p.rm_dtype,
        p.rm_chat_template.clone(),
        p.rm_max_len,
        p.batch_size,
    )
    .unwrap();
    let judged = Judge::Model { reader, head: None }
        .score(&answers.exchanges)
        .unwrap();
    let ppo = setup
        .models
        .reward
        .score_samples(
            &answers.sequences,
            &answers.prompt_lens,
            &setup.models.generate.stop_ids,
        )
        .unwrap();
    assert_eq!(judged.len(), ppo.len());
    for (i, j) in judged.iter().enumerate() {
        assert_eq!(*j, ppo.mean(i), "answer {i}");
    }
}

fn prompts() -> Vec<String> {
    [
        "hello there",
        "the movie",
        "a b c",
        "we watched",
        "it was",
        "so",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn weights(pv: &PolicyValue) -> Vec<(String, Vec<f32>)> {
    pv.lm
        .named_weights()
        .into_iter()
        .map(|(n, t)| (n, t.values))
        .collect()
}

/// PPO as a `ppo` node runs it: its folders loaded, then the library's loop.
fn run_ppo(
    p: &PpoParams,
    ckpt: Option<&Path>,
    cancel: &dyn Fn() -> bool,
    on_step: &dyn Fn(),
) -> Result<PpoRun, String> {
    let setup = Setup::load(p, &prompts(), &Device::flex()).map_err(|e| e.to_string())?;
    train(
        &p.config(),
        &setup.models,
        setup.policy,
        &setup.prompts,
        ckpt,
        cancel,
        &mut |_: usize, _: &[(&'static str, f64)]| on_step(),
    )
    .map_err(|e| e.to_string())
}

fn run(
    p: &PpoParams,
    ckpt: Option<&Path>,
    stop_after: Option<usize>,
) -> (Vec<(String, Vec<f32>)>, Vec<StepStats>) {
    let steps = std::cell::Cell::new(0usize);
    let r = run_ppo(
        p,
        ckpt,
        &|| stop_after.is_some_and(|n| steps.get() >= n),
        &|| steps.set(steps.get() + 1),
    );
    match r {
        Ok(run) => (weights(&run.policy), run.stats),
        Err(e) => {
            assert!(e.to_string().contains("interrupted"), "{e}");
            (Vec::new(), Vec::new())
        }
    }
}

#[test]
fn variance_aware_with_unit_variance_is_vanilla_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rm = reward_model(dir.path());
    let van = params(&rm, Method::Vanilla);
    let mut va = params(&rm, Method::VarianceAware);
    va.variance_override = Some(1.0);
    let (wv, sv) = run(&van, None, None);
    let (wa, sa) = run(&va, None, None);
    assert_eq!(sv.len(), 3);
    assert!(
        sv.iter().skip(1).any(|s| s.kl != 0.0),
        "the policy moved: {sv:?}"
    );
    // Everything is identical, the reported variance too (the ensemble's own, not the
    // override, which only replaces the KL weight).
    assert_eq!(sv, sa);
    assert!(sa.iter().all(|s| s.variance > 0.0 && s.variance != 1.0));
    assert_eq!(wv, wa, "the policies are bit-identical");
    // With the real ensemble variance the run differs.
    let va_real = params(&rm, Method::VarianceAware);
    let (wr, _) = run(&va_real, None, None);
    assert_ne!(wv, wr);
}

#[test]
fn a_variance_of_one_head_is_refused_where_it_matters() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let backbone = Gpt2::from_hf_dir(&fixture(), &device).unwrap();
    let heads = LinearHeads::init(backbone.config().n_embd, &[11], &device).unwrap();
    let rm = dir.path().join("rm1");
    RewardModel::new(backbone, heads)
        .unwrap()
        .save(&rm, Some(&fixture().join("tokenizer.json")))
        .unwrap();
    let err = |p: &PpoParams| run_ppo(p, None, &|| false, &|| {}).err();
    let mut p = params(&rm, Method::VarianceAware);
    p.steps = 1;
    let e = err(&p).expect("variance-aware PPO on one head has no KL penalty");
    assert!(e.contains("1 head(s)") && e.contains("ddof 1"), "{e}");
    p.method = Method::Vanilla;
    p.aggregation = Aggregation::MeanMinusStd;
    assert!(err(&p).is_some());
    // Vanilla PPO against the one head, and variance-aware with an override, need no variance.
    p.aggregation = Aggregation::Member;
    assert_eq!(err(&p), None);
    p.method = Method::VarianceAware;
    p.variance_override = Some(1.0);
    assert_eq!(err(&p), None);
}

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_end() {
    let dir = tempfile::tempdir().unwrap();
    let rm = reward_model(dir.path());
    let p = params(&rm, Method::Vanilla);
    let (whole, stats_whole) = run(&p, None, None);
    let ckpt = dir.path().join("ckpt");
    // Stop after two steps (as a Ctrl-C would), then resume.
    let (partial, _) = run(&p, Some(&ckpt), Some(2));
    assert!(partial.is_empty(), "the first run was interrupted");
    assert!(ckpt.join("latest").exists());
    let (resumed, stats_resumed) = run(&p, Some(&ckpt), None);
    assert_eq!(stats_whole, stats_resumed);
    assert_eq!(whole, resumed);
}

/// A Qwen2 and a Llama policy train against a 3-head reward model on the Gemma classifier
/// fixture's backbone: every step's numbers are finite, the policy moves away from its
/// reference, and a killed run resumes from its checkpoint (the decoder's weights and its
/// value head) to the same end as an uninterrupted one.
#[test]
fn decoder_policies_train_against_a_gemma_reward_model_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let gemma = fixture_named("gemma-rm-tiny");
    let backbone = dagrun_stages::ml::models::backbone::Backbone::from_hf_dir(
        &gemma,
        &device,
        dagrun_stages::ml::models::hf_weights::WeightDtype::F32,
    )
    .unwrap();
    let heads = LinearHeads::init(32, &[11, 12, 13], &device).unwrap();
    let rm = dir.path().join("gemma-rm");
    RewardModel::new(backbone, heads)
        .unwrap()
        .save(&rm, Some(&gemma.join("tokenizer.json")))
        .unwrap();
    for family in ["qwen2", "llama"] {
        let mut p = params(&rm, Method::VarianceAware);
        p.policy = fixture_named(&format!("{family}-tiny"))
            .to_str()
            .unwrap()
            .to_string();
        let (whole, stats) = run(&p, None, None);
        assert_eq!(stats.len(), 3, "{family}");
        for s in &stats {
            for (name, x) in s.scalars() {
                assert!(x.is_finite(), "{family} step {}: {name} = {x}", s.step);
            }
            assert!(s.variance > 0.0, "{family}: {s:?}");
        }
        assert!(
            stats.iter().skip(1).any(|s| s.kl != 0.0),
            "{family}: the policy moved: {stats:?}"
        );
        assert!(whole
            .iter()
            .any(|(n, _)| n == "layers.0.self_attn.q_proj.weight"));
        let ckpt = dir.path().join(format!("ckpt-{family}"));
        let (partial, _) = run(&p, Some(&ckpt), Some(2));
        assert!(partial.is_empty(), "the first run was interrupted");
        let (resumed, stats_resumed) = run(&p, Some(&ckpt), None);
        assert_eq!(stats, stats_resumed, "{family}");
        assert_eq!(whole, resumed, "{family}");
        // The reward model in bf16: the first step samples the same responses (the policy
        // has not moved), scored within bf16's rounding of the f32 scores.
        p.rm_dtype = dagrun_stages::ml::models::hf_weights::WeightDtype::Bf16;
        let (_, bf16) = run(&p, None, None);
        let (a, b) = (stats[0].score, bf16[0].score);
        assert!(bf16.iter().all(|s| s.score.is_finite() && s.kl.is_finite()));
        assert!(
            (a - b).abs() <= 0.05 * a.abs().max(1.0),
            "{family}: {a} vs {b} in bf16"
        );
    }
}

/// `prompt_template: model` renders each prompt with the policy folder's own chat template
/// (a user turn, then the assistant's opening), and the reward model reads the prompt's own
/// text, not the markup, with the response; `plain` and a template the tokenizer cannot
/// write are checked too.
#[test]
fn a_chat_prompt_template_renders_prompts_and_the_reward_model_reads_their_own_text() {
    let dir = tempfile::tempdir().unwrap();
    let rm = reward_model(dir.path());
    let policy = dir.path().join("qwen2-chat");
    std::fs::create_dir_all(&policy).unwrap();
    for e in std::fs::read_dir(fixture_named("qwen2-tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), policy.join(e.file_name())).unwrap();
    }
    let template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                    {% if add_generation_prompt %}assistant:{% endif %}";
    std::fs::write(
        policy.join("tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "eos_token": "<|endoftext|>"}).to_string(),
    )
    .unwrap();
    let mut p = params(&rm, Method::Vanilla);
    p.policy = policy.to_str().unwrap().to_string();
    let texts = vec!["hello there".to_string(), "the movie".to_string()];
    let tok =
        dagrun_stages::ml::io::tokenizer::TextTokenizer::from_file(&policy.join("tokenizer.json"))
            .unwrap();
    // Plain by default.
    let plain = Setup::load(&p, &texts, &Device::flex()).unwrap();
    assert_eq!(plain.prompts[0], tok.encode("hello there").unwrap());
    // The folder's own template.
    p.prompt_template = Some("model".parse().unwrap());
    let chat = Setup::load(&p, &texts, &Device::flex()).unwrap();
    assert_eq!(
        chat.prompts[0],
        tok.encode("user: hello there\nassistant:").unwrap()
    );
    // `judge_eval` with the same `prompt_template` reads them the same way.
    judged_as_trained(&chat, &p, &texts);
    // A sample after a rendered prompt is scored as the pair (own prompt, response).
    let response = tok.encode(" it was good").unwrap();
    let seq: Vec<u32> = [&chat.prompts[1][..], &response[..]].concat();
    let got = chat
        .models
        .reward
        .score_samples(&[seq], &[chat.prompts[1].len()], &[])
        .unwrap();
    let reader = dagrun_stages::ml::reward::RewardReader::load(
        &rm,
        &Device::flex(),
        dagrun_stages::ml::models::hf_weights::WeightDtype::F32,
        None,
        p.rm_max_len,
        4,
    )
    .unwrap();
    let want = reader
        .score(&[dagrun_stages::ml::reward::Exchange::pair(
            "the movie",
            " it was good",
        )])
        .unwrap();
    assert_eq!(got.row(0), want.row(0));
    // A named template whose markup the tiny tokenizer lacks is an error naming the policy.
    p.prompt_template = Some("qwen2.5".parse().unwrap());
    let e = Setup::load(&p, &texts, &Device::flex())
        .err()
        .expect("the tiny vocabulary has no <|im_start|>")
        .to_string();
    assert!(
        e.contains("prompt_template") && e.contains("qwen2-chat"),
        "{e}"
    );
}

/// A policy whose tokenizer adds a BOS (as Gemma's and Llama's do) reads plain prompts with
/// it, as `tokenizer(text)` encodes them; the reward model reads the prompt's own text (no
/// BOS from the policy) followed by the response as generated.
#[test]
fn a_plain_prompt_gets_the_bos_the_policy_tokenizer_adds_and_the_reward_model_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let rm = reward_model(dir.path());
    let policy = dir.path().join("qwen2-bos");
    std::fs::create_dir_all(&policy).unwrap();
    for e in std::fs::read_dir(fixture_named("qwen2-tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), policy.join(e.file_name())).unwrap();
    }
    // The fixture's tokenizer with a post-processor that puts `<|endoftext|>` first.
    let path = policy.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let bos = t["added_tokens"][0]["id"].as_u64().unwrap() as u32;
    assert_eq!(t["added_tokens"][0]["content"], "<|endoftext|>");
    let special = serde_json::json!({"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}});
    t["post_processor"] = serde_json::json!({
        "type": "TemplateProcessing",
        "single": [special, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [special, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [bos],
                                             "tokens": ["<|endoftext|>"]}}
    });
    std::fs::write(&path, t.to_string()).unwrap();
    let tok = dagrun_stages::ml::io::tokenizer::TextTokenizer::from_file(&path).unwrap();
    let mut p = params(&rm, Method::Vanilla);
    p.policy = policy.to_str().unwrap().to_string();
    let texts = vec!["hello there".to_string(), "the movie".to_string()];
    let setup = Setup::load(&p, &texts, &Device::flex()).unwrap();
    let plain = tok.encode("the movie").unwrap();
    assert_eq!(setup.prompts[1], [&[bos][..], &plain[..]].concat());
    // `judge_eval` reads them the same way (with the BOS; the judge without it).
    judged_as_trained(&setup, &p, &texts);
    let response = tok.encode(" it was good").unwrap();
    let seq: Vec<u32> = [&setup.prompts[1][..], &response[..]].concat();
    let got = setup
        .models
        .reward
        .score_samples(&[seq], &[setup.prompts[1].len()], &[])
        .unwrap();
    let reader = dagrun_stages::ml::reward::RewardReader::load(
        &rm,
        &Device::flex(),
        dagrun_stages::ml::models::hf_weights::WeightDtype::F32,
        None,
        p.rm_max_len,
        4,
    )
    .unwrap();
    let want = reader
        .score(&[dagrun_stages::ml::reward::Exchange::Sampled {
            prompt: "the movie".into(),
            response: " it was good".into(),
            text: "the movie it was good".into(),
        }])
        .unwrap();
    assert_eq!(got.row(0), want.row(0));
    // Read with the policy's BOS, the score would differ.
    let with_bos = reader
        .score(&[dagrun_stages::ml::reward::Exchange::pair(
            "<|endoftext|>the movie",
            " it was good",
        )])
        .unwrap();
    assert_ne!(got.row(0), with_bos.row(0));
}
