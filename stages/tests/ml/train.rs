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
