//! The `backbone_pretrain` kind (docs/algorithms.md §2): Bradley–Terry training of a whole
//! backbone plus one scalar head, stopped early once the running training loss falls under a
//! threshold (the paper: 0.4). Output: a reward model with one head. The `init` backbone is
//! any Hugging Face folder `ml::models::backbone` loads (GPT-2, Gemma, Llama), trained in
//! float32, on pairs read as every reward model reads them ([`crate::ml::reward`]). Metrics:
//! `steps`, `stopped_early`, `final_running_loss`, and `eval_accuracy` when the data has an
//! `eval` split with pairs (absent otherwise).

use std::collections::BTreeMap;

use burn::module::Module;
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device, read_split},
    parse_params,
};
use crate::data::PreferencePair;
use crate::ml::{
    io::chat::ChatTemplate,
    models::{
        backbone::{Backbone, LanguageModel},
        gpt2_hf::TOKENIZER_FILE,
        heads::LinearHeads,
        hf_weights::WeightDtype,
        reward_model::{bradley_terry_loss, RewardModel},
        weights::to_f32_vec,
    },
    reward::{Exchange, RewardInput},
    rng::SeededRng,
    training::{
        grads::ParamGrads,
        guard::{check_loss, check_params},
        optim::{Adam, AdamConfig},
        schedule::LrSchedule,
    },
    TokenBatch,
};

/// Params of `backbone_pretrain` (defaults: the paper's Table 2 where it has one).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackbonePretrainParams {
    /// Preference data: a folder with `train` and `eval` splits (the `dataset_mix` output).
    pub data: String,
    /// The backbone to start from: a Hugging Face GPT-2 folder with its tokenizer.json.
    pub init: String,
    /// The chat template (`model`: the folder's own; `gemma`, `llama3`, `llama3.1`, `qwen2.5`,
    /// `plain`); default: the folder's own `chat_template` (tokenizer_config.json) when it has
    /// one, else from the `model_type` of its `config.json` (gpt2 → plain, gemma → gemma,
    /// llama → llama3, qwen2 → qwen2.5).
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    /// Pairs per step (the paper's effective batch).
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Peak learning rate (cosine schedule).
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Warm-up steps of the schedule.
    #[serde(default)]
    pub warmup_steps: usize,
    /// AdamW weight decay.
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    /// Passes over the training pairs at most.
    #[serde(default = "defaults::epochs")]
    pub epochs: f64,
    /// Stop once the running training loss is below this (0 disables early stopping).
    #[serde(default = "defaults::loss_threshold")]
    pub loss_threshold: f64,
    /// Steps the running loss averages over.
    #[serde(default = "defaults::running_window")]
    pub running_window: usize,
    /// Tokens of prompt + response kept (the last ones; a leading BOS stays).
    #[serde(default = "defaults::max_len")]
    pub max_len: usize,
    /// Global gradient-norm clipping (none if absent).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// Seed of the head's initialisation and the data order.
    #[serde(default)]
    pub seed: u64,
}

/// The defaults of [`BackbonePretrainParams`], by field.
mod defaults {
    pub fn batch_size() -> usize {
        32
    }
    pub fn lr() -> f64 {
        1e-5
    }
    pub fn weight_decay() -> f64 {
        0.001
    }
    pub fn epochs() -> f64 {
        1.0
    }
    pub fn loss_threshold() -> f64 {
        0.4
    }
    pub fn running_window() -> usize {
        20
    }
    pub fn max_len() -> usize {
        128
    }
}

/// Pairs per forward pass of the accuracy.
const EVAL_BATCH: usize = 64;

pub struct BackbonePretrainKind;

/// Accuracy of a reward model on pairs: the fraction with `r(chosen) > r(rejected)`.
fn pair_accuracy(
    rm: &RewardModel,
    input: &RewardInput,
    pairs: &[PreferencePair],
) -> Result<f64, StageError> {
    let rm = rm.valid();
    let mut right = 0usize;
    for chunk in pairs.chunks(EVAL_BATCH) {
        let (c, r) = encode_pairs(input, chunk)?;
        let sc = to_f32_vec(rm.forward(&c)?);
        let sr = to_f32_vec(rm.forward(&r)?);
        right += sc.iter().zip(&sr).filter(|(a, b)| a > b).count();
    }
    Ok(right as f64 / pairs.len() as f64)
}

/// Right-padded batches of the chosen and of the rejected exchanges of `pairs`.
fn encode_pairs(
    input: &RewardInput,
    pairs: &[PreferencePair],
) -> Result<(TokenBatch, TokenBatch), StageError> {
    let side = |chosen: bool| -> Result<TokenBatch, StageError> {
        let rows = pairs
            .iter()
            .map(|p| {
                let response = if chosen { &p.chosen } else { &p.rejected };
                Ok(input
                    .encode(&Exchange::pair(p.prompt.as_str(), response.as_str()))?
                    .ids)
            })
            .collect::<Result<Vec<_>, StageError>>()?;
        Ok(input.batch(&rows)?)
    };
    Ok((side(true)?, side(false)?))
}

impl StageKind for BackbonePretrainKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<BackbonePretrainParams>())
    }
    fn name(&self) -> &'static str {
        "backbone_pretrain"
    }
    fn version(&self) -> u32 {
        // 2: Adam in place on libtorch (the same update, other float rounding).
        // 3: pairs read through `ml::reward` (one reader for every kind): `plain` text gets
        // the special tokens its tokenizer adds (a BOS for Gemma/Llama tokenizers, nothing
        // for GPT-2's), and a truncation keeps the leading BOS; no `eval_accuracy` metric
        // (it was NaN) without eval pairs. GPT-2 backbones train exactly as before.
        // 4: the saved model folder also holds `tokenizer_config.json` and
        // `generation_config.json` (ml/io/hf_files.rs); the weights are as before.
        4
    }
    fn summary(&self) -> &'static str {
        "Bradley–Terry training of a reward backbone with one head, stopped at a loss threshold"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: BackbonePretrainParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if p.batch_size == 0 {
            return Err(ParamError::at("batch_size", "must be at least 1"));
        }
        if !(p.epochs.is_finite() && p.epochs > 0.0) {
            return Err(ParamError::at("epochs", "must be a number > 0"));
        }
        for (name, n) in [("running_window", p.running_window), ("max_len", p.max_len)] {
            if n == 0 {
                return Err(ParamError::at(name, "must be at least 1"));
            }
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(ParamError::at("lr", "must be a number > 0"));
        }
        if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
            return Err(ParamError::at("weight_decay", "must be a number ≥ 0"));
        }
        if p.loss_threshold.is_nan() {
            return Err(ParamError::at("loss_threshold", "must be a number"));
        }
        if let Some(n) = p.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return Err(ParamError::at("max_grad_norm", "must be a number > 0"));
            }
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
        let p: BackbonePretrainParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let data = std::path::Path::new(&p.data);
        let train = read_split(data, "train")?;
        let eval = read_split(data, "eval").unwrap_or_default();
        if train.len() < p.batch_size {
            return Err(format!(
                "{} training pairs, fewer than one batch of {}",
                train.len(),
                p.batch_size
            )
            .into());
        }
        let init_dir = std::path::Path::new(&p.init);
        let tok_path = init_dir.join(TOKENIZER_FILE);
        let input = RewardInput::for_model(init_dir, p.chat_template, p.max_len)?;
        ctx.log(format!("chat template: {}", input.template()));
        let ad = device.clone().autodiff();
        let backbone = Backbone::from_hf_dir(init_dir, &ad, WeightDtype::F32)?;
        let heads = LinearHeads::init(backbone.hidden_size(), &[ctx.derive_seed("head")], &ad)?;
        let mut rm = RewardModel::new(backbone, heads)?;
        let steps_per_epoch = train.len() / p.batch_size;
        let total = ((steps_per_epoch as f64) * p.epochs).ceil().max(1.0) as usize;
        let schedule = LrSchedule::CosineWarmup {
            peak_lr: p.lr,
            warmup_steps: p.warmup_steps,
            total_steps: total,
            min_lr: 0.0,
        };
        let mut adam = Adam::new(AdamConfig::adamw(p.weight_decay));
        let mut rng = SeededRng::new(ctx.derive_seed("data"));
        let mut order: Vec<usize> = Vec::new();
        let mut cursor = 0;
        let mut losses: Vec<f64> = Vec::new();
        let mut stopped_early = false;
        let mut curves = crate::tensorboard::Curves::for_node(ctx);
        for step in 0..total {
            if ctx.cancelled() {
                return Err(Box::new(Cancelled));
            }
            if cursor + p.batch_size > order.len() {
                order = (0..train.len()).collect();
                rng.shuffle(&mut order);
                cursor = 0;
            }
            let batch: Vec<_> = order[cursor..cursor + p.batch_size]
                .iter()
                .map(|&i| train[i].clone())
                .collect();
            cursor += p.batch_size;
            let (c, r) = encode_pairs(&input, &batch)?;
            let loss = bradley_terry_loss(rm.forward(&c)?, rm.forward(&r)?);
            let value = loss.clone().into_scalar::<f32>() as f64;
            check_loss(step + 1, "loss", value)?;
            let grads = ParamGrads::from_loss(loss, &rm);
            rm = adam.step_clipped(rm, grads, schedule.lr(step), p.max_grad_norm);
            losses.push(value);
            ctx.series("loss", (step + 1) as f64, value);
            let w = &losses[losses.len().saturating_sub(p.running_window)..];
            let running = w.iter().sum::<f64>() / w.len() as f64;
            ctx.series("running_loss", (step + 1) as f64, running);
            curves.write(
                (step + 1) as f64,
                &[
                    ("loss", value),
                    ("running_loss", running),
                    ("lr", schedule.lr(step)),
                ],
            );
            ctx.progress(
                (step + 1) as u64,
                total as u64,
                format!("loss {running:.3}"),
            );
            if p.loss_threshold > 0.0
                && losses.len() >= p.running_window
                && running < p.loss_threshold
            {
                ctx.log(format!(
                    "running loss {running:.4} < {} after {} steps: stopping",
                    p.loss_threshold,
                    step + 1
                ));
                stopped_early = true;
                break;
            }
        }
        check_params(losses.len(), &rm)?;
        let rm = rm.valid();
        ctx.metric("steps", losses.len() as f64);
        ctx.metric("stopped_early", stopped_early as u8 as f64);
        if !eval.is_empty() {
            let acc_eval = pair_accuracy(&rm, &input, &eval)?;
            ctx.metric("eval_accuracy", acc_eval);
            ctx.log(format!(
                "eval accuracy {acc_eval:.3} on {} pairs",
                eval.len()
            ));
        }
        ctx.metric("final_running_loss", {
            let w = &losses[losses.len().saturating_sub(p.running_window)..];
            w.iter().sum::<f64>() / w.len().max(1) as f64
        });
        ctx.log(format!("{} steps", losses.len()));
        rm.save(&ctx.output_path("model"), Some(&tok_path))?;
        Ok(())
    }
}
