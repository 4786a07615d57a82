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
        io::tokenizer::{BpeTrainConfig, TextTokenizer},
        training::optim::AdamConfig,
        training::schedule::LrSchedule,
        training::train_lm::{LmTrainConfig, LmTrainer},
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
    #[serde(default = "defaults::text_column")]
    pub text_column: String,
    /// A `tokenizer.json`; without one, a byte-level BPE of `vocab_size` is trained on the corpus.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Vocabulary size of a trained tokenizer.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Layers.
    #[serde(default = "defaults::n_layer")]
    pub n_layer: usize,
    /// Attention heads.
    #[serde(default = "defaults::n_head")]
    pub n_head: usize,
    /// Width.
    #[serde(default = "defaults::n_embd")]
    pub n_embd: usize,
    /// Context length.
    #[serde(default = "defaults::n_positions")]
    pub n_positions: usize,
    /// Tokens per training sequence.
    #[serde(default = "defaults::seq_len")]
    pub seq_len: usize,
    /// Sequences per step.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Optimizer steps.
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Peak learning rate (cosine schedule with linear warm-up).
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Warm-up steps.
    #[serde(default = "defaults::warmup_steps")]
    pub warmup_steps: usize,
    /// AdamW weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clipping (none if absent).
    #[serde(default = "defaults::max_grad_norm")]
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps into the scratch folder (0: never).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: usize,
    /// Seed of initialisation and data order.
    #[serde(default)]
    pub seed: u64,
}

/// The defaults of [`LmPretrainParams`], by field.
mod defaults {
    pub fn text_column() -> String {
        "text".into()
    }
    pub fn vocab_size() -> usize {
        1024
    }
    pub fn n_layer() -> usize {
        2
    }
    pub fn n_head() -> usize {
        4
    }
    pub fn n_embd() -> usize {
        64
    }
    pub fn n_positions() -> usize {
        64
    }
    pub fn seq_len() -> usize {
        32
    }
    pub fn batch_size() -> usize {
        16
    }
    pub fn steps() -> usize {
        300
    }
    pub fn lr() -> f64 {
        3e-3
    }
    pub fn warmup_steps() -> usize {
        20
    }
    pub fn max_grad_norm() -> Option<f64> {
        Some(1.0)
    }
    pub fn checkpoint_every() -> usize {
        50
    }
}

impl LmPretrainParams {
    /// The model and batch this trains, for a message.
    fn describe(&self) -> String {
        format!(
            "a GPT-2 of width {}, {} layers, {} positions and a vocabulary of {}, on batches of {} × {} tokens",
            self.n_embd, self.n_layer, self.n_positions, self.vocab_size, self.batch_size, self.seq_len
        )
    }

    /// The size param that makes the memory estimate too large: the first one whose default
    /// would bring the estimate down the most.
    fn largest_size(&self) -> &'static str {
        let d = |f: fn(&mut LmPretrainParams)| {
            let mut q = self.clone();
            f(&mut q);
            q.memory_estimate(q.vocab_size)
        };
        let candidates: [(&'static str, f64); 6] = [
            ("n_embd", d(|q| q.n_embd = defaults::n_embd())),
            ("n_layer", d(|q| q.n_layer = defaults::n_layer())),
            (
                "n_positions",
                d(|q| q.n_positions = defaults::n_positions()),
            ),
            ("vocab_size", d(|q| q.vocab_size = defaults::vocab_size())),
            ("batch_size", d(|q| q.batch_size = defaults::batch_size())),
            ("seq_len", d(|q| q.seq_len = defaults::seq_len())),
        ];
        candidates
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or("n_embd", |c| c.0)
    }

    /// Bytes a training of these sizes needs at least, with a vocabulary of `vocab`: weights,
    /// gradients and Adam's two moments (4 × 4 bytes a parameter), the activations autodiff
    /// keeps (about 16 values of width `n_embd` per token and layer) and the logits (3 copies).
    /// In f64, so that absurd sizes cannot overflow.
    fn memory_estimate(&self, vocab: usize) -> f64 {
        let (v, e, l) = (vocab as f64, self.n_embd as f64, self.n_layer as f64);
        let params = v * e + self.n_positions as f64 * e + l * (12.0 * e * e + 13.0 * e) + 2.0 * e;
        let tokens = self.batch_size as f64 * self.seq_len as f64;
        16.0 * params + 4.0 * tokens * (16.0 * e * l + 3.0 * v)
    }
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
        // 3: the saved model folder also holds `tokenizer_config.json` and
        // `generation_config.json` (ml/io/hf_files.rs); the weights are as before.
        3
    }
    fn summary(&self) -> &'static str {
        "causal-LM training of a GPT-2 on a text corpus (the built-in task's reference policy)"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: LmPretrainParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        for (name, n) in [
            ("n_layer", p.n_layer),
            ("n_head", p.n_head),
            ("n_embd", p.n_embd),
            ("n_positions", p.n_positions),
            ("batch_size", p.batch_size),
            ("steps", p.steps),
            ("vocab_size", p.vocab_size),
        ] {
            if n == 0 {
                return Err(ParamError::at(name, "must be at least 1"));
            }
        }
        if p.seq_len < 2 {
            return Err(ParamError::at(
                "seq_len",
                "must be at least 2 (a token and the one it predicts)",
            ));
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(ParamError::at(
                "lr",
                format!("must be a number > 0, not {}", p.lr),
            ));
        }
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(ParamError::at("weight_decay", "must be a number ≥ 0"));
        }
        if let Some(n) = p.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return Err(ParamError::at("max_grad_norm", "must be a number > 0"));
            }
        }
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
        // With a tokenizer given its vocabulary is only known at run time: `vocab_size` stands in.
        crate::memory::fits_physical(p.memory_estimate(p.vocab_size), &p.describe())
            .map_err(|e| ParamError::at(p.largest_size(), e))?;
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
        crate::memory::fits_available(
            p.memory_estimate(tok.vocab_size()),
            &format!(
                "training a GPT-2 of width {} and {} layers",
                p.n_embd, p.n_layer
            ),
        )?;
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
        // For the curves: the rate each step trained at.
        let schedule = train_cfg.schedule.clone();
        let mut trainer = LmTrainer::new(&init, &tokens, train_cfg, &device, Some(&ckpt))?;
        if trainer.step > 0 {
            ctx.log(format!(
                "resumed from the checkpoint at step {}",
                trainer.step
            ));
        }
        let mut curves = crate::tensorboard::Curves::for_node(ctx);
        while trainer.step < p.steps {
            if ctx.cancelled() {
                return Err(Box::new(Cancelled));
            }
            let loss = trainer.train_step()?;
            let step = trainer.step;
            curves.write(
                step as f64,
                &[("loss", loss as f64), ("lr", schedule.lr(step - 1))],
            );
            if p.checkpoint_every > 0 && step.is_multiple_of(p.checkpoint_every) && step < p.steps {
                trainer.save_checkpoint(&ckpt)?;
            }
            ctx.progress(step as u64, p.steps as u64, format!("loss {loss:.3}"));
        }
        trainer.check_params()?;
        for (i, l) in trainer.losses.iter().enumerate() {
            ctx.series("loss", (i + 1) as f64, *l as f64);
        }
        let tail = &trainer.losses[trainer.losses.len().saturating_sub(10)..];
        let final_loss = tail.iter().map(|&l| l as f64).sum::<f64>() / tail.len().max(1) as f64;
        ctx.metric("final_loss", final_loss);
        // `steps` ≥ 1 (validated): there is a first loss.
        let first = trainer.losses[0] as f64;
        ctx.metric("first_loss", first);
        ctx.log(format!("loss {first:.3} → {final_loss:.3}"));
        trainer
            .model()
            .valid()
            .save_hf_dir(&ctx.output_path("model"), Some(&tok_path))?;
        Ok(())
    }
}
