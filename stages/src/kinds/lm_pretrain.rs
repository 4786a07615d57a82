//! The `lm_pretrain` kind: causal-LM training of a GPT-2 on a text corpus — the
//! reference policy of the built-in task. (With real weights, a pipeline loads the
//! policy instead of running this stage.)
//!
//! Checkpoints go to the node's scratch folder every `checkpoint_every` steps: a killed
//! node resumes where it was and ends identical to an uninterrupted run.

use std::collections::BTreeMap;

use burn::module::Module;
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device},
    parse_params,
};
use crate::{
    data::read_texts,
    ml::{
        optim::AdamConfig,
        schedule::LrSchedule,
        tokenizer::{BpeTrainConfig, TextTokenizer},
        train_lm::{LmTrainConfig, LmTrainer},
        Gpt2, Gpt2Config,
    },
};

/// Params of `lm_pretrain`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LmPretrainParams {
    /// A text corpus: a JSONL/Parquet file or a folder of them (its `train*` files are used when present).
    pub corpus: String,
    /// The column holding the text.
    #[serde(default = "text")]
    pub text_column: String,
    /// A `tokenizer.json`; without one, a byte-level BPE of `vocab_size` is trained on the corpus.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Vocabulary size of a trained tokenizer.
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    /// Layers.
    #[serde(default = "two")]
    pub n_layer: usize,
    /// Attention heads.
    #[serde(default = "four")]
    pub n_head: usize,
    /// Width.
    #[serde(default = "sixty_four")]
    pub n_embd: usize,
    /// Context length.
    #[serde(default = "sixty_four")]
    pub n_positions: usize,
    /// Tokens per training sequence.
    #[serde(default = "thirty_two")]
    pub seq_len: usize,
    /// Sequences per step.
    #[serde(default = "sixteen")]
    pub batch_size: usize,
    /// Optimizer steps.
    #[serde(default = "three_hundred")]
    pub steps: usize,
    /// Peak learning rate (cosine schedule with linear warm-up).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Warm-up steps.
    #[serde(default = "twenty")]
    pub warmup_steps: usize,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (none if absent).
    #[serde(default = "clip")]
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps into the scratch folder (0: never).
    #[serde(default = "fifty")]
    pub checkpoint_every: usize,
    /// Seed of initialisation and data order.
    #[serde(default)]
    pub seed: u64,
}

fn text() -> String {
    "text".into()
}
fn vocab() -> usize {
    1024
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn sixty_four() -> usize {
    64
}
fn thirty_two() -> usize {
    32
}
fn sixteen() -> usize {
    16
}
fn three_hundred() -> usize {
    300
}
fn lr() -> f64 {
    3e-3
}
fn twenty() -> usize {
    20
}
fn fifty() -> usize {
    50
}
fn clip() -> Option<f64> {
    Some(1.0)
}

pub struct LmPretrainKind;

impl StageKind for LmPretrainKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<LmPretrainParams>())
    }
    fn name(&self) -> &'static str {
        "lm_pretrain"
    }
    fn version(&self) -> u32 {
        // 2: log-probs under autodiff as z[target] - logsumexp(z), Adam in place on
        // libtorch: the same method, other float rounding.
        2
    }
    fn summary(&self) -> &'static str {
        "causal-LM training of a GPT-2 on a text corpus (the built-in task's reference policy)"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: LmPretrainParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if !p.n_embd.is_multiple_of(p.n_head) {
            return Err(ParamError::at(
                "n_head",
                format!(
                    "n_embd {} is not a multiple of n_head {}",
                    p.n_embd, p.n_head
                ),
            ));
        }
        if p.seq_len > p.n_positions {
            return Err(ParamError::at(
                "seq_len",
                format!("{} exceeds n_positions {}", p.seq_len, p.n_positions),
            ));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("model", ArtifactType::Model)]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: LmPretrainParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let corpus_path = std::path::Path::new(&p.corpus);
        let files = match crate::data::prompts::corpus_files(corpus_path)? {
            crate::data::prompts::CorpusFiles::Splits { train, .. } => train,
            crate::data::prompts::CorpusFiles::Pool(all) => all,
        };
        let mut texts: Vec<String> = Vec::new();
        for f in &files {
            texts.extend(read_texts(f, &p.text_column)?.into_iter().map(|r| r.text));
        }
        if texts.is_empty() {
            return Err(format!("corpus `{}` has no rows", p.corpus).into());
        }
        let tok_path = ctx.scratch().join("tokenizer.json");
        let tok = match &p.tokenizer {
            Some(t) => TextTokenizer::from_file(std::path::Path::new(t))?,
            None => {
                let cfg = BpeTrainConfig {
                    vocab_size: p.vocab_size,
                    ..Default::default()
                };
                TextTokenizer::train_bpe(texts.iter().map(String::as_str), &cfg)?
            }
        };
        tok.save(&tok_path)?;
        let eos = tok
            .eos_id()
            .ok_or("the tokenizer has no `<|endoftext|>` token")?;
        let mut tokens = Vec::new();
        for t in &texts {
            tokens.extend(tok.encode(t)?);
            tokens.push(eos);
        }
        ctx.log(format!(
            "{} texts, {} tokens, vocabulary {}",
            texts.len(),
            tokens.len(),
            tok.vocab_size()
        ));
        let config = Gpt2Config {
            vocab_size: tok.vocab_size(),
            n_positions: p.n_positions,
            n_embd: p.n_embd,
            n_layer: p.n_layer,
            n_head: p.n_head,
            bos_token_id: Some(eos),
            eos_token_id: Some(eos),
            ..Gpt2Config::small()
        };
        let init = Gpt2::init(&config, ctx.derive_seed("init"), &device)?;
        let train_cfg = LmTrainConfig {
            seq_len: p.seq_len,
            batch_size: p.batch_size,
            grad_accum_steps: 1,
            max_steps: p.steps,
            schedule: LrSchedule::CosineWarmup {
                peak_lr: p.lr,
                warmup_steps: p.warmup_steps,
                total_steps: p.steps,
                min_lr: 0.0,
            },
            optimizer: AdamConfig::adamw(p.weight_decay),
            max_grad_norm: p.max_grad_norm,
            seed: ctx.derive_seed("data"),
            checkpoint_every: p.checkpoint_every,
        };
        let ckpt = ctx.scratch().join("checkpoints");
        let mut trainer = LmTrainer::new(&init, &tokens, train_cfg, &device, Some(&ckpt))?;
        if trainer.step > 0 {
            ctx.log(format!(
                "resumed from the checkpoint at step {}",
                trainer.step
            ));
        }
        while trainer.step < p.steps {
            if ctx.cancelled() {
                return Err(Box::new(Cancelled));
            }
            let loss = trainer.train_step()?;
            let step = trainer.step;
            if p.checkpoint_every > 0 && step % p.checkpoint_every == 0 && step < p.steps {
                trainer.save_checkpoint(&ckpt)?;
            }
            ctx.progress(step as u64, p.steps as u64, format!("loss {loss:.3}"));
        }
        for (i, l) in trainer.losses.iter().enumerate() {
            ctx.series("loss", (i + 1) as f64, *l as f64);
        }
        let tail = &trainer.losses[trainer.losses.len().saturating_sub(10)..];
        let final_loss = tail.iter().map(|&l| l as f64).sum::<f64>() / tail.len().max(1) as f64;
        ctx.metric("final_loss", final_loss);
        ctx.metric(
            "first_loss",
            trainer.losses.first().copied().unwrap_or(f32::NAN) as f64,
        );
        ctx.log(format!(
            "loss {:.3} → {final_loss:.3}",
            trainer.losses.first().copied().unwrap_or(f32::NAN)
        ));
        trainer
            .model()
            .valid()
            .save_hf_dir(&ctx.output_path("model"), Some(&tok_path))?;
        Ok(())
    }
}
