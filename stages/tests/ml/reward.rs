//! Reward models: K heads on the last real token, freezing, features, save/load.

use burn::module::Module;
use burn::tensor::Tensor;
use dagrun_stages::ml::models::heads::LinearHeads;
use dagrun_stages::ml::models::reward_model::{
    bradley_terry_loss, last_token_features, RewardModel,
};
use dagrun_stages::ml::models::weights::to_f32_vec;
use dagrun_stages::ml::training::grads::ParamGrads;
use dagrun_stages::ml::training::optim::{Adam, AdamConfig};
use dagrun_stages::ml::{DeviceSpec, Gpt2, Padding, TokenBatch};

use crate::common::{cpu_devices, max_abs_diff, tiny_hf_dir};

fn rows() -> Vec<Vec<u32>> {
    vec![vec![5, 17, 42, 7, 99, 3], vec![11, 250], vec![64, 1, 2]]
}

#[test]
fn rewards_are_k_heads_on_the_last_real_token_whatever_the_padding() {
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        let backbone = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        let heads = LinearHeads::init(32, &[1, 2, 3, 4], &device).unwrap();
        let rm = RewardModel::new(backbone, heads).unwrap();
        let right = TokenBatch::from_rows(&rows(), 0, Padding::Right).unwrap();
        let left = TokenBatch::from_rows(&rows(), 0, Padding::Left).unwrap();
        let r_right = rm.forward(&right).unwrap();
        assert_eq!(r_right.dims(), [3, 4]);
        let r_left = to_f32_vec(rm.forward(&left).unwrap());
        let r_right = to_f32_vec(r_right);
        assert!(max_abs_diff(&r_left, &r_right) < 1e-5, "{spec}");
        // Row 1 alone (no padding at all) scores the same.
        let alone = TokenBatch::unpadded(&[rows()[1].clone()]).unwrap();
        let r_alone = to_f32_vec(rm.forward(&alone).unwrap());
        assert!(max_abs_diff(&r_alone, &r_right[4..8]) < 1e-5, "{spec}");
        // Heads differ (different seeds).
        assert!((r_right[0] - r_right[1]).abs() > 1e-6);
    }
}

#[test]
fn a_frozen_backbone_gets_no_gradient_and_the_heads_do() {
    let device = DeviceSpec::Cpu.resolve().unwrap().autodiff();
    let backbone = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let heads = LinearHeads::init(32, &[1, 2], &device).unwrap();
    let rm = RewardModel::new(backbone, heads).unwrap();
    let chosen = TokenBatch::from_rows(&rows(), 0, Padding::Right).unwrap();
    let rejected =
        TokenBatch::from_rows(&[vec![9], vec![8, 8], vec![7, 7, 7]], 0, Padding::Right).unwrap();
    let loss = |m: &RewardModel| {
        bradley_terry_loss(m.forward(&chosen).unwrap(), m.forward(&rejected).unwrap())
    };
    let all = ParamGrads::from_loss(loss(&rm), &rm);
    assert!(all.grads.contains_key("backbone.h.0.attn.c_attn.weight"));
    assert!(all.grads.contains_key("heads.weight"));
    let frozen = rm.freeze_backbone();
    let some = ParamGrads::from_loss(loss(&frozen), &frozen);
    let keys: Vec<&String> = some.grads.keys().collect();
    assert_eq!(keys, vec!["heads.bias", "heads.weight"]);
    // One Adam step moves the heads only.
    let before = to_f32_vec(frozen.backbone.valid().forward(&chosen, None).unwrap());
    let heads_before = to_f32_vec(
        frozen
            .heads
            .valid()
            .forward(last_token_features(&frozen.backbone.valid(), &chosen).unwrap()),
    );
    let stepped = Adam::new(AdamConfig::default()).step(frozen, some, 0.1);
    let after = to_f32_vec(stepped.backbone.valid().forward(&chosen, None).unwrap());
    assert_eq!(before, after);
    let heads_after = to_f32_vec(
        stepped
            .heads
            .valid()
            .forward(last_token_features(&stepped.backbone.valid(), &chosen).unwrap()),
    );
    assert!(max_abs_diff(&heads_before, &heads_after) > 1e-3);
}

/// Heads train on features computed once by the backbone: the BT loss falls.
#[test]
fn heads_train_on_precomputed_features() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let backbone = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let chosen = TokenBatch::from_rows(&rows(), 0, Padding::Right).unwrap();
    let rejected =
        TokenBatch::from_rows(&[vec![9], vec![8, 8], vec![7, 7, 7]], 0, Padding::Right).unwrap();
    let ad = device.clone().autodiff();
    let fc: Tensor<2> = last_token_features(&backbone, &chosen).unwrap().autodiff();
    let fr: Tensor<2> = last_token_features(&backbone, &rejected)
        .unwrap()
        .autodiff();
    let mut heads = LinearHeads::init(32, &[7, 8, 9], &ad).unwrap();
    let mut adam = Adam::new(AdamConfig::default());
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = bradley_terry_loss(heads.forward(fc.clone()), heads.forward(fr.clone()));
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = ParamGrads::from_loss(loss, &heads);
        heads = adam.step(heads, grads, 0.05);
    }
    println!("head BT loss: {} → {}", losses[0], losses[29]);
    assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn reward_model_folder_round_trips() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let backbone = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let rm = RewardModel::new(
        backbone,
        LinearHeads::init(32, &[5, 6, 7], &device).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rm.save(tmp.path(), Some(&tiny_hf_dir().join("tokenizer.json")))
        .unwrap();
    let back = RewardModel::load(tmp.path(), &device).unwrap();
    let batch = TokenBatch::from_rows(&rows(), 0, Padding::Right).unwrap();
    assert_eq!(
        to_f32_vec(back.forward(&batch).unwrap()),
        to_f32_vec(rm.forward(&batch).unwrap())
    );
    let err = RewardModel::load(&tiny_hf_dir(), &device).unwrap_err();
    assert!(err.to_string().contains("not a reward model"), "{err}");
}

/// A Gemma/Llama backbone trains like GPT-2's: Bradley–Terry gradients reach every decoder
/// weight (under HF-style paths, no enum level) and one Adam step lowers the loss.
#[test]
fn a_decoder_backbone_gets_gradients_and_learns() {
    use dagrun_stages::ml::models::backbone::Backbone;
    use dagrun_stages::ml::models::hf_weights::WeightDtype;
    let device = DeviceSpec::Cpu.resolve().unwrap().autodiff();
    let dir = crate::common::fixtures().join("llama-tiny");
    let backbone = Backbone::from_hf_dir(&dir, &device, WeightDtype::F32).unwrap();
    let heads = LinearHeads::init(32, &[1], &device).unwrap();
    let rm = RewardModel::new(backbone, heads).unwrap();
    let chosen = TokenBatch::from_rows(&rows(), 0, Padding::Right).unwrap();
    let rejected =
        TokenBatch::from_rows(&[vec![9], vec![8, 8], vec![7, 7, 7]], 0, Padding::Right).unwrap();
    let loss = |m: &RewardModel| {
        bradley_terry_loss(m.forward(&chosen).unwrap(), m.forward(&rejected).unwrap())
    };
    let before: f32 = loss(&rm).into_scalar();
    let grads = ParamGrads::from_loss(loss(&rm), &rm);
    for name in [
        "backbone.embed_tokens",
        "backbone.layers.0.self_attn.q_proj.weight",
        "backbone.layers.1.mlp.down_proj.weight",
        "backbone.norm.weight",
        "heads.weight",
    ] {
        assert!(
            grads.grads.contains_key(name),
            "{name}: {:?}",
            grads.grads.keys()
        );
    }
    let mut adam = Adam::new(AdamConfig::default());
    let rm = adam.step(rm, grads, 1e-2);
    let after: f32 = loss(&rm).into_scalar();
    assert!(after < before, "{before} -> {after}");
}

/// What a reward model reads — the text, the special tokens, the left truncation that keeps
/// the BOS — against transformers' tokenisation of the same cases
/// (`tests/fixtures/reward-reader.json`, written by scripts/make_reward_reader_fixtures.py).
#[test]
fn the_reward_reader_reads_what_transformers_tokenises() {
    use dagrun_stages::ml::io::{chat::ChatTemplate, tokenizer::TextTokenizer};
    use dagrun_stages::ml::reward::{Exchange, RewardInput};
    let path = crate::common::fixtures().join("reward-reader.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut truncated_with_bos = 0;
    for c in &cases {
        let s = |k: &str| c[k].as_str().unwrap().to_string();
        let dir = crate::common::fixtures().join(s("tokenizer"));
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let template: ChatTemplate = s("template").parse().unwrap();
        let max_len = c["max_len"].as_u64().unwrap() as usize;
        let input = RewardInput::new(tok, template, max_len).unwrap();
        let exchange = Exchange::pair(s("prompt"), s("response"));
        let what = format!(
            "{} {} {max_len} {:?}",
            s("tokenizer"),
            s("template"),
            s("prompt")
        );
        assert_eq!(input.text(&exchange).unwrap(), s("text"), "{what}");
        let got = input.encode(&exchange).unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got.ids, want, "{what}");
        assert_eq!(got.truncated, c["truncated"].as_bool().unwrap(), "{what}");
        if got.truncated && s("tokenizer") != "gpt2-tiny" {
            truncated_with_bos += 1;
        }
    }
    assert!(truncated_with_bos >= 8, "the BOS rule is exercised");
}
