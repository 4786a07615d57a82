//! The `head_ensemble` kind: K linear heads on a frozen backbone, trained on features
//! computed once, with Figure 6's variance statistics. The algorithm is
//! [`crate::rm::ensemble`]; the features are the reward reader's ([`crate::ml::reward`]); this
//! file is the params and the adapter.
//!
//! Outputs: `model` (the K-head reward model) and `stats` (JSON: per-head accuracy and
//! loss curves, and the Figure 6 variance statistics with histograms).

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, Place, StageContext, StageError, StageKind};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device, read_split},
    parse_params, stage_error,
};
use crate::{
    data::PreferencePair,
    files::write_json,
    ml::{
        io::chat::ChatTemplate,
        models::{
            gpt2_hf::TOKENIZER_FILE, heads::LinearHeads, hf_weights::WeightDtype,
            reward_model::RewardModel,
        },
        reward::{Exchange, RewardReader},
        MlError,
    },
    rm::ensemble::{evaluate, fit_heads, EnsembleConfig, PairFeatures},
};

/// Params of `head_ensemble` (defaults: the paper's K = 10 and target loss 0.2).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadEnsembleParams {
    /// The reward model whose backbone is frozen (the `backbone_pretrain` output).
    pub backbone: String,
    /// The chat template (`model`: the folder's own; `gemma`, `llama3`, `llama3.1`, `qwen2.5`,
    /// `plain`); default: the folder's own `chat_template` (tokenizer_config.json) when it has
    /// one, else from the `model_type` of its `config.json` (gpt2 → plain, gemma → gemma,
    /// llama → llama3, qwen2 → qwen2.5).
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    /// Preference data with `train` and `eval` splits.
    pub data: String,
    /// Number of heads K.
    #[serde(default = "defaults::heads")]
    pub heads: usize,
    /// Adam learning rate of the heads.
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Pairs per step.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Passes over the data at most, per head.
    #[serde(default = "defaults::max_epochs")]
    pub max_epochs: usize,
    /// A head stops once its running loss is at most this (the paper: about 0.2).
    #[serde(default = "defaults::target_loss")]
    pub target_loss: f64,
    /// Steps the running loss averages over.
    #[serde(default = "defaults::running_window")]
    pub running_window: usize,
    /// Give each head its own data order (default: heads differ by initialisation only).
    #[serde(default)]
    pub vary_data_order: bool,
    /// Train each head on a bootstrap resample of the training pairs.
    #[serde(default)]
    pub bootstrap: bool,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "defaults::ddof")]
    pub ddof: usize,
    /// Tokens of prompt + response kept (the last ones; a leading BOS stays).
    #[serde(default = "defaults::max_len")]
    pub max_len: usize,
    /// Histogram bins of the variance statistics.
    #[serde(default = "defaults::bins")]
    pub bins: usize,
    /// Seed of the heads' initialisation and data order.
    #[serde(default)]
    pub seed: u64,
}

/// The defaults of [`HeadEnsembleParams`], by field.
mod defaults {
    pub fn heads() -> usize {
        10
    }
    pub fn lr() -> f64 {
        1e-2
    }
    pub fn batch_size() -> usize {
        32
    }
    pub fn max_epochs() -> usize {
        30
    }
    pub fn target_loss() -> f64 {
        0.2
    }
    pub fn running_window() -> usize {
        20
    }
    pub fn ddof() -> usize {
        1
    }
    pub fn max_len() -> usize {
        128
    }
    pub fn bins() -> usize {
        30
    }
}

/// Sequences per forward pass of the feature computation.
const FEATURE_BATCH: usize = 64;

pub struct HeadEnsembleKind;

impl StageKind for HeadEnsembleKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<HeadEnsembleParams>())
    }
    fn name(&self) -> &'static str {
        "head_ensemble"
    }
    fn version(&self) -> u32 {
        // 3: features through `ml::reward` (one reader for every kind): pooled where the
        // backbone's reward model pools (a Hugging Face sequence classifier's rule), `plain`
        // text with the special tokens its tokenizer adds, a truncation keeps the leading
        // BOS. GPT-2 backbones read exactly as before.
        // 4: the saved model folder also holds `tokenizer_config.json` and
        // `generation_config.json` (ml/io/hf_files.rs); the weights are as before.
        4
    }
    fn summary(&self) -> &'static str {
        "K reward heads on a frozen backbone, trained on features computed once; Figure 6 statistics"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: HeadEnsembleParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if p.heads == 0 {
            return Err(ParamError::at("heads", "must be at least 1"));
        }
        // At least a seed, a bias and the statistics of each head (its weights come on top,
        // checked with the backbone's width when the node runs).
        crate::memory::fits_physical(64.0 * p.heads as f64, &format!("{} heads", p.heads))
            .map_err(|e| ParamError::at("heads", e))?;
        if p.heads <= p.ddof {
            return Err(ParamError::at(
                "ddof",
                format!("must be below the number of heads ({})", p.heads),
            ));
        }
        for (name, n) in [
            ("batch_size", p.batch_size),
            ("max_epochs", p.max_epochs),
            ("running_window", p.running_window),
            ("max_len", p.max_len),
            ("bins", p.bins),
        ] {
            if n == 0 {
                return Err(ParamError::at(name, "must be at least 1"));
            }
        }
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(ParamError::at("lr", "must be a number > 0"));
        }
        // Two histograms (edges and counts) of Figure 6.
        crate::memory::fits_physical(32.0 * p.bins as f64, &format!("{} histogram bins", p.bins))
            .map_err(|e| ParamError::at("bins", e))?;
        if p.target_loss.is_nan() {
            return Err(ParamError::at("target_loss", "must be a number"));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("model", ArtifactType::Model),
            OutputDecl::new("stats", ArtifactType::Metrics),
        ]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: HeadEnsembleParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let dir = std::path::Path::new(&p.backbone);
        let reader = RewardReader::load(
            dir,
            &device,
            WeightDtype::F32,
            p.chat_template,
            p.max_len,
            FEATURE_BATCH,
        )?;
        let data = std::path::Path::new(&p.data);
        let train = read_split(data, "train")?;
        let eval = read_split(data, "eval")?;
        if train.is_empty() {
            return Err(format!("`{}`: no training pairs", data.display()).into());
        }
        ctx.log(format!(
            "features of {} train and {} eval pairs, computed once",
            train.len(),
            eval.len()
        ));
        ctx.log(format!("chat template: {}", reader.input().template()));
        let side =
            |pairs: &[PreferencePair], chosen: bool, what: &str| -> Result<Vec<f32>, StageError> {
                ctx.progress(0, 1, format!("backbone features: {what}"));
                let exchanges: Vec<Exchange> = pairs
                    .iter()
                    .map(|q| {
                        Exchange::pair(
                            q.prompt.as_str(),
                            if chosen { &q.chosen } else { &q.rejected },
                        )
                    })
                    .collect();
                Ok(reader.features(&exchanges)?)
            };
        let d = reader.model().heads.n_embd();
        // The features (4 arrays of pairs × d floats) and each head's weights (f64 while
        // training, f32 stored, on the host and the device).
        let pairs = (train.len() + eval.len()) as f64;
        crate::memory::fits_available(
            16.0 * pairs * d as f64 + 24.0 * p.heads as f64 * d as f64,
            &format!(
                "{} heads of width {d} on {} pairs",
                p.heads,
                train.len() + eval.len()
            ),
        )?;
        let train_features = PairFeatures {
            d,
            chosen: side(&train, true, "train chosen")?,
            rejected: side(&train, false, "train rejected")?,
        };
        let eval_features = PairFeatures {
            d,
            chosen: side(&eval, true, "eval chosen")?,
            rejected: side(&eval, false, "eval rejected")?,
        };
        let cfg = EnsembleConfig {
            heads: p.heads,
            lr: p.lr,
            batch_size: p.batch_size,
            max_epochs: p.max_epochs,
            target_loss: p.target_loss,
            running_window: p.running_window,
            vary_data_order: p.vary_data_order,
            bootstrap: p.bootstrap,
            ddof: p.ddof,
            bins: p.bins,
            heads_seed: ctx.derive_seed("heads"),
            order_seed: ctx.derive_seed("order"),
        };
        // Each head's running loss, written as the head finishes (a head trains in moments).
        let mut curves = crate::tensorboard::Curves::for_node(ctx);
        let heads = {
            let ctx_ref: &StageContext = ctx;
            fit_heads(&cfg, &train_features, &mut |k, fit| {
                let tag = format!("head_{k}/running_loss");
                for (i, loss) in fit.curve.iter().enumerate() {
                    curves.write((i + 1) as f64, &[(&tag, *loss)]);
                }
                ctx_ref.log(format!(
                    "head {k}: {} steps, running loss {:.4}",
                    fit.steps, fit.final_loss
                ));
                ctx_ref.progress(
                    (k + 1) as u64,
                    p.heads as u64,
                    format!("head {k}: loss {:.3}", fit.final_loss),
                );
                if ctx_ref.cancelled() {
                    return Err(MlError::Cancelled);
                }
                Ok(())
            })
            .map_err(stage_error)?
        };
        let stats = evaluate(&cfg, &heads, &eval_features);
        for (k, a) in stats.head_accuracy.iter().enumerate() {
            ctx.metric(&format!("head_{k}.eval_accuracy"), *a);
        }
        ctx.metric(
            "mean_head_accuracy",
            stats.head_accuracy.iter().sum::<f64>() / p.heads as f64,
        );
        ctx.metric("ensemble_accuracy", stats.ensemble_accuracy);
        ctx.metric("chosen_variance.mean", stats.chosen_variance.mean);
        ctx.metric("chosen_variance.median", stats.chosen_variance.median());
        ctx.metric("difference_variance.mean", stats.difference_variance.mean);
        ctx.metric(
            "difference_variance.median",
            stats.difference_variance.median(),
        );
        write_json(&ctx.output_path("stats"), &stats)?;
        let w = Tensor::<2>::from_data(TensorData::new(heads.weights, [d, p.heads]), &device);
        let bias: Vec<f32> = heads.bias.iter().map(|&b| b as f32).collect();
        let b = Tensor::<1>::from_data(TensorData::new(bias, [p.heads]), &device);
        let base = reader.into_model();
        let pooling = base.pooling();
        let rm =
            RewardModel::new(base.backbone, LinearHeads::from_tensors(w, b))?.with_pooling(pooling);
        rm.save(&ctx.output_path("model"), Some(&dir.join(TOKENIZER_FILE)))?;
        Ok(())
    }
}
