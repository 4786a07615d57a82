//! Language-model training: the loss falls, and kill + resume is bit-identical on `cpu`.

use dagrun_stages::ml::io::tokenizer::{BpeTrainConfig, TextTokenizer};
use dagrun_stages::ml::training::optim::AdamConfig;
use dagrun_stages::ml::training::schedule::LrSchedule;
use dagrun_stages::ml::training::train_lm::{LmTrainConfig, LmTrainer};
use dagrun_stages::ml::{DeviceSpec, Gpt2, Gpt2Config, TokenBatch};

const CORPUS: &str = "the cat sat on the mat. the dog sat on the log. \
a cat and a dog met on the mat and sat on the log. the end. ";

pub fn corpus_tokens() -> (TextTokenizer, Vec<u32>) {
    let lines: Vec<String> = CORPUS.split(". ").map(|s| format!("{s}. ")).collect();
    let tok = TextTokenizer::train_bpe(
        lines.iter().cycle().take(200),
        &BpeTrainConfig {
            vocab_size: 300,
            min_frequency: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let text = CORPUS.repeat(30);
    let ids = tok.encode(&text).unwrap();
    (tok, ids)
}

fn config(max_steps: usize) -> LmTrainConfig {
    LmTrainConfig {
        seq_len: 24,
        batch_size: 4,
        grad_accum_steps: 2,
        max_steps,
        schedule: LrSchedule::CosineWarmup {
            peak_lr: 3e-3,
            warmup_steps: 3,
            total_steps: max_steps,
            min_lr: 3e-4,
        },
        optimizer: AdamConfig::adamw(0.01),
        max_grad_norm: Some(1.0),
        seed: 11,
        checkpoint_every: 3,
    }
}

#[test]
fn training_a_tiny_gpt2_lowers_its_loss() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let (tok, ids) = corpus_tokens();
    let model = Gpt2::init(&Gpt2Config::tiny(tok.vocab_size()), 3, &device).unwrap();
    let probe = TokenBatch::unpadded(&[ids[..24].to_vec(), ids[50..74].to_vec()]).unwrap();
    let before: f32 = LmTrainer::loss(&model, &probe).unwrap().into_scalar();
    let mut trainer = LmTrainer::new(&model, &ids, config(40), &device, None).unwrap();
    trainer.run(None, None).unwrap();
    let losses = trainer.losses.clone();
    let trained = trainer.into_model();
    let after: f32 = LmTrainer::loss(&trained, &probe).unwrap().into_scalar();
    println!(
        "probe loss {before:.3} → {after:.3}; train loss {:.3} → {:.3}",
        losses[0], losses[39]
    );
    assert!(
        before > 5.0,
        "random init should be near ln(vocab): {before}"
    );
    assert!(after < 0.5 * before, "{before} → {after}");
    assert!(losses[39] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn killed_and_resumed_training_ends_bit_identical() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let (tok, ids) = corpus_tokens();
    let model = Gpt2::init(&Gpt2Config::tiny(tok.vocab_size()), 5, &device).unwrap();
    let steps = 8;

    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = LmTrainer::new(&model, &ids, config(steps), &device, None).unwrap();
    straight.run(Some(straight_dir.path()), None).unwrap();

    // "Killed" after 5 steps: the last checkpoint is step 3, steps 4-5 are lost.
    let dir = tempfile::tempdir().unwrap();
    let mut first = LmTrainer::new(&model, &ids, config(steps), &device, Some(dir.path())).unwrap();
    first.run(Some(dir.path()), Some(5)).unwrap();
    assert_eq!(first.step, 5);
    drop(first);
    let mut resumed =
        LmTrainer::new(&model, &ids, config(steps), &device, Some(dir.path())).unwrap();
    assert_eq!(resumed.step, 3, "resumes from the last checkpoint");
    resumed.run(Some(dir.path()), None).unwrap();
    assert_eq!(resumed.step, steps);

    assert_eq!(resumed.losses, straight.losses);
    let a = straight.into_model().named_weights();
    let b = resumed.into_model().named_weights();
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let same = ta
            .values
            .iter()
            .zip(&tb.values)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{na} differs after resume");
    }
    // A third run finds the finished checkpoint and has nothing left to do.
    let done = LmTrainer::new(&model, &ids, config(steps), &device, Some(dir.path())).unwrap();
    assert_eq!(done.step, steps);
}

#[test]
fn resuming_with_a_different_config_is_refused() {
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let (tok, ids) = corpus_tokens();
    let model = Gpt2::init(&Gpt2Config::tiny(tok.vocab_size()), 5, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut t = LmTrainer::new(&model, &ids, config(3), &device, Some(dir.path())).unwrap();
    t.run(Some(dir.path()), None).unwrap();
    let err = LmTrainer::new(&model, &ids, config(4), &device, Some(dir.path())).unwrap_err();
    assert!(
        err.to_string().contains("different training config"),
        "{err}"
    );
}

/// The corpus as the tiny decoder fixtures' tokenizer (shared by all three) encodes it.
fn fixture_tokens(dir: &std::path::Path) -> Vec<u32> {
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    tok.encode_with_special_tokens(&CORPUS.repeat(12)).unwrap()
}

fn small_config(max_steps: usize) -> LmTrainConfig {
    LmTrainConfig {
        seq_len: 16,
        batch_size: 4,
        grad_accum_steps: 1,
        checkpoint_every: 2,
        ..config(max_steps)
    }
}

/// Fine-tuning a Qwen2, Llama and Gemma folder (`lm_pretrain` with `init`): the loss falls,
/// the result saves as a folder of the same architecture that loads back as a policy with
/// the same logits, and a killed run resumes to the same weights, bit for bit.
#[test]
fn fine_tuning_a_decoder_lowers_its_loss_saves_its_architecture_and_resumes_bit_identical() {
    use burn::module::Module;
    use dagrun_stages::ml::models::backbone::{Backbone, LanguageModel};
    use dagrun_stages::ml::models::hf_weights::WeightDtype;
    use dagrun_stages::ml::models::weights::to_f32_vec;
    use dagrun_stages::ml::training::train_lm::TrainableLm;
    let device = DeviceSpec::Cpu.resolve().unwrap();
    for family in ["qwen2", "llama", "gemma"] {
        let dir = crate::common::fixtures().join(format!("{family}-tiny"));
        let ids = fixture_tokens(&dir);
        let model = Backbone::causal_lm_from_hf_dir(&dir, &device, WeightDtype::F32).unwrap();
        let probe = TokenBatch::unpadded(&[ids[..16].to_vec(), ids[40..56].to_vec()]).unwrap();
        let before: f32 = LmTrainer::loss(&model, &probe).unwrap().into_scalar();
        let steps = 6;
        let straight_dir = tempfile::tempdir().unwrap();
        let mut straight =
            LmTrainer::new(&model, &ids, small_config(steps), &device, None).unwrap();
        straight.run(Some(straight_dir.path()), None).unwrap();
        let trained = straight.model().valid();
        let after: f32 = LmTrainer::loss(&trained, &probe).unwrap().into_scalar();
        assert!(after < before, "{family}: probe loss {before} → {after}");
        // Saved as its own architecture, loaded back as a policy: the same logits.
        let out = tempfile::tempdir().unwrap();
        let saved = out.path().join("model");
        trained
            .save_hf(&saved, Some(&dir.join("tokenizer.json")))
            .unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], family, "{config}");
        let back = dagrun_stages::rl::policy::load_policy(&saved, &device).unwrap();
        assert_eq!(back.model_type(), family);
        let a = to_f32_vec(trained.forward(&probe, None).unwrap());
        let b = to_f32_vec(back.forward(&probe, None).unwrap());
        assert_eq!(a, b, "{family}: the saved model's logits");
        assert!(LanguageModel::max_positions(&back) >= 16);
        // Killed after 3 steps (the last checkpoint is step 2), resumed: the same end.
        let ck = tempfile::tempdir().unwrap();
        let mut first =
            LmTrainer::new(&model, &ids, small_config(steps), &device, Some(ck.path())).unwrap();
        first.run(Some(ck.path()), Some(3)).unwrap();
        drop(first);
        let mut resumed =
            LmTrainer::new(&model, &ids, small_config(steps), &device, Some(ck.path())).unwrap();
        assert_eq!(
            resumed.step, 2,
            "{family}: resumes from the last checkpoint"
        );
        resumed.run(Some(ck.path()), None).unwrap();
        assert_eq!(resumed.losses, straight.losses, "{family}");
        let a = straight.into_model().named_weights();
        let b = resumed.into_model().named_weights();
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(
                ta.values
                    .iter()
                    .zip(&tb.values)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{family}: {na} differs after resume"
            );
        }
    }
    // A checkpoint of one architecture does not resume another.
    let qwen = crate::common::fixtures().join("qwen2-tiny");
    let llama = crate::common::fixtures().join("llama-tiny");
    let ids = fixture_tokens(&qwen);
    let ck = tempfile::tempdir().unwrap();
    let q = Backbone::causal_lm_from_hf_dir(&qwen, &device, WeightDtype::F32).unwrap();
    let mut t = LmTrainer::new(&q, &ids, small_config(2), &device, Some(ck.path())).unwrap();
    t.run(Some(ck.path()), None).unwrap();
    let l = Backbone::causal_lm_from_hf_dir(&llama, &device, WeightDtype::F32).unwrap();
    let err = LmTrainer::new(&l, &ids, small_config(2), &device, Some(ck.path())).unwrap_err();
    assert!(err.to_string().contains("qwen2"), "{err}");
}
