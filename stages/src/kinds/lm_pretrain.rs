//! The `lm_pretrain` kind: causal-LM training of a GPT-2 on a text corpus — the
//! reference policy of the built-in task — or, with `init`, causal-LM fine-tuning of an
//! existing GPT-2, Gemma, Llama or Qwen2 folder on the corpus, saved as a folder of the same
//! architecture that `ppo` takes as its policy. The loop is
//! [`crate::ml::training::train_lm`]; this file is its params and the adapter.
//!
//! Checkpoints go to the node's scratch folder every `checkpoint_every` steps: a killed
//! node resumes where it was and ends identical to an uninterrupted run.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
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
        models::{
            backbone::{Backbone, LanguageModel},
            decoder_hf::stop_ids,
            gpt2_hf::TOKENIZER_FILE,
            hf_weights::WeightDtype,
        },
        training::optim::AdamConfig,
        training::schedule::LrSchedule,
        training::train_lm::{LmTrainConfig, LmTrainer, TrainableLm},
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
    /// Fine-tune this model instead of training a GPT-2 from scratch: a Hugging Face
    /// `*ForCausalLM` folder (GPT-2, Gemma, Llama or Qwen2, with its `tokenizer.json`),
    /// trained in f32 on the corpus as its tokenizer encodes each text (`tokenizer(text)`:
    /// with the BOS a Gemma or Llama tokenizer adds), each text followed by the model's EOS.
    /// The `model` output is a folder of the same architecture, with the tokenizer files of
    /// `init`. The size params (`n_layer`, `n_head`, `n_embd`, `n_positions`, `vocab_size`)
    /// and `tokenizer` come from the model and are not given.
    #[serde(default)]
    pub init: Option<String>,
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
        self.training_bytes(params, self.n_embd, self.n_layer, vocab)
    }

    /// Bytes a training of a model of `params` parameters, width `hidden`, `layers` layers and
    /// a vocabulary of `vocab` needs at least on batches of these sizes (see
    /// [`LmPretrainParams::memory_estimate`]).
    fn training_bytes(&self, params: f64, hidden: usize, layers: usize, vocab: usize) -> f64 {
        let (v, e, l) = (vocab as f64, hidden as f64, layers as f64);
        let tokens = self.batch_size as f64 * self.seq_len as f64;
        16.0 * params + 4.0 * tokens * (16.0 * e * l + 3.0 * v)
    }
}

/// The params an `init` model fixes (its sizes and tokenizer): given with `init`, an error.
const FIXED_BY_INIT: [&str; 6] = [
    "tokenizer",
    "vocab_size",
    "n_layer",
    "n_head",
    "n_embd",
    "n_positions",
];

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
        "causal-LM training of a GPT-2 on a text corpus (the built-in task's reference policy), or fine-tuning of a GPT-2/Gemma/Llama/Qwen2 folder (`init`)"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: LmPretrainParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if p.init.is_some() {
            if let Some(k) = FIXED_BY_INIT.iter().find(|k| params.get(**k).is_some()) {
                return Err(ParamError::at(
                    k,
                    format!(
                        "`{k}` comes from the `init` model (its config.json and tokenizer); \
                         leave it out"
                    ),
                ));
            }
        }
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
        if p.init.is_some() {
            // The model's sizes are known at run time, where its memory is checked.
            return Ok(());
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
        let corpus_path = Path::new(&p.corpus);
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
        match &p.init {
            Some(dir) => fine_tune(ctx, &p, Path::new(dir), &texts, &device),
            None => from_scratch(ctx, &p, &texts, &device),
        }
    }
}

/// Trains a GPT-2 of the params' sizes from a seeded initialisation, with the given tokenizer
/// or one trained on `texts`.
fn from_scratch(
    ctx: &mut StageContext,
    p: &LmPretrainParams,
    texts: &[String],
    device: &Device,
) -> Result<(), StageError> {
    let tok_path = ctx.scratch().join("tokenizer.json");
    let tok = match &p.tokenizer {
        Some(t) => TextTokenizer::from_file(Path::new(t))?,
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
    for t in texts {
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
    let init = Gpt2::init(&config, ctx.derive_seed("init"), device)?;
    train(ctx, p, &init, &tokens, device, &tok_path)
}

/// Fine-tunes the causal LM in folder `dir` (`init`) on `texts`, encoded as its tokenizer
/// encodes a text (with the special tokens its post-processor adds), each followed by the
/// first EOS the model declares.
fn fine_tune(
    ctx: &mut StageContext,
    p: &LmPretrainParams,
    dir: &Path,
    texts: &[String],
    device: &Device,
) -> Result<(), StageError> {
    let tok_path = dir.join(TOKENIZER_FILE);
    if !tok_path.is_file() {
        return Err(format!("`init`: {} has no {TOKENIZER_FILE}", dir.display()).into());
    }
    let tok = TextTokenizer::from_file(&tok_path)?;
    let model = Backbone::causal_lm_from_hf_dir(dir, device, WeightDtype::F32)
        .map_err(|e| format!("`init`: {e}"))?;
    let eos = stop_ids(dir, &tok)?.first().copied().ok_or_else(|| {
        format!(
            "`init`: {} declares no EOS (`eos_token_id` in config.json or \
             generation_config.json) and its tokenizer has no `<|endoftext|>`",
            dir.display()
        )
    })?;
    let vocab = model.lm_head_weight()?.dims()[0];
    let mut tokens = Vec::new();
    for t in texts {
        tokens.extend(tok.encode_with_special_tokens(t)?);
        tokens.push(eos);
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(format!(
            "`init`: token id {id} of {} is outside the model's vocabulary of {vocab}",
            tok_path.display()
        )
        .into());
    }
    let arch = model.model_type().to_string();
    crate::memory::fits_available(
        p.training_bytes(
            model.num_params() as f64,
            model.hidden_size(),
            model.num_layers(),
            vocab,
        ),
        &format!("fine-tuning the {arch} model {}", dir.display()),
    )?;
    ctx.log(format!(
        "fine-tuning the {arch} model {} ({} parameters): {} texts, {} tokens",
        dir.display(),
        model.num_params(),
        texts.len(),
        tokens.len()
    ));
    train(ctx, p, &model, &tokens, device, &tok_path)
}

/// The training loop of either: `init` trained on `tokens`, resuming from the node's
/// checkpoints; the result saved as the `model` output with the tokenizer at `tok_path`.
fn train<M: TrainableLm>(
    ctx: &mut StageContext,
    p: &LmPretrainParams,
    init: &M,
    tokens: &[u32],
    device: &Device,
    tok_path: &Path,
) -> Result<(), StageError> {
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
    let mut trainer = LmTrainer::new(init, tokens, train_cfg, device, Some(&ckpt))?;
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
        .save_hf(&ctx.output_path("model"), Some(tok_path))?;
    Ok(())
}
