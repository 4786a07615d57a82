//! Reward models: a [`Backbone`] (GPT-2, Gemma or Llama) and K linear heads on the final hidden
//! state of the last non-pad token, giving `[batch, K]` rewards (docs/algorithms.md §1, §3).
//!
//! # Folder formats ([`RewardModel::load`] accepts both)
//! 1. dagrun's `reward-model-v1`: a Hugging Face backbone folder (`config.json`, safetensors
//!    weights, `tokenizer.json`; GPT-2 as `GPT2LMHeadModel`, or a Gemma/Llama/Qwen2 folder) plus
//!    - `reward_heads.safetensors`: `weight` `[n_embd, K]` (column k = head k), `bias` `[K]`,
//!      F32;
//!    - `reward_model.json`: `{"format": "dagrun-reward-model-v1", "num_heads": K,
//!      "n_embd": E}`.
//!
//!    Features are pooled at each row's last real token (attention mask), or, with
//!    `"pool_skip_id": P` (written when a sequence classifier is saved), as in format 2.
//! 2. A Hugging Face `LlamaForSequenceClassification` / `GemmaForSequenceClassification`
//!    folder (such as the paper's judge, FsfairX-LLaMA3-RM-v0.1): its `score.weight`
//!    `[num_labels, hidden]` (no bias) becomes K = num_labels heads with zero bias, pooled as
//!    transformers does: at the rightmost token whose id is not `pad_token_id` (within the
//!    attention mask), so a real EOS that equals the pad id is skipped as transformers skips it.
//!
//! A plain language-model folder without either is not a reward model ([`RewardModel::load`]
//! says so).

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::backbone::{Backbone, LanguageModel};
use crate::ml::models::decoder::LmHead;
use crate::ml::models::decoder_hf::{decoder_config, load_decoder, model_kind, read_score_head};
use crate::ml::models::gpt2_hf::CONFIG_FILE;
use crate::ml::models::heads::LinearHeads;
use crate::ml::models::hf_weights::WeightDtype;
use crate::ml::models::weights::HostTensors;

/// File holding the heads' weights.
pub const HEADS_FILE: &str = "reward_heads.safetensors";
/// File describing the heads.
pub const META_FILE: &str = "reward_model.json";
/// The `format` value of [`META_FILE`].
pub const FORMAT: &str = "dagrun-reward-model-v1";

/// The contents of `reward_model.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RewardModelMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Number of heads K.
    pub num_heads: usize,
    /// Backbone width (rows of the head matrix).
    pub n_embd: usize,
    /// Pool at the rightmost token whose id is not this one ([`Pooling::LastNonPad`], kept
    /// from a Hugging Face sequence classifier); absent: the last real token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_skip_id: Option<u32>,
}

/// Which token's hidden state a reward model scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Each row's last real token (attention mask): dagrun's heads.
    #[default]
    LastReal,
    /// The rightmost real token whose id is not this pad id (transformers'
    /// `*ForSequenceClassification`); with `None`, the last real token.
    LastNonPad(Option<u32>),
}

impl Pooling {
    /// The pooled column of each row of `batch` (0 for a row with no such token, as
    /// transformers' argmax gives).
    pub fn columns(&self, batch: &TokenBatch) -> Vec<usize> {
        match self {
            Pooling::LastReal | Pooling::LastNonPad(None) => batch.last_real_index(),
            Pooling::LastNonPad(Some(pad)) => (0..batch.rows)
                .map(|r| {
                    let s = r * batch.len;
                    (0..batch.len)
                        .rposition(|c| batch.mask[s + c] == 1 && batch.ids[s + c] != *pad)
                        .unwrap_or(0)
                })
                .collect(),
        }
    }
}

/// The final hidden state of each row's last real token: `[rows, n_embd]`.
pub fn last_token_features(model: &impl LanguageModel, batch: &TokenBatch) -> Result<Tensor<2>> {
    let hidden = model.hidden_states(batch, None)?;
    Ok(gather_last(hidden, batch))
}

/// Rows of `hidden` `[b, t, e]` at each row's last real token → `[b, e]`.
pub fn gather_last(hidden: Tensor<3>, batch: &TokenBatch) -> Tensor<2> {
    gather_columns(hidden, &batch.last_real_index())
}

/// Rows of `hidden` `[b, t, e]` at column `columns[r]` of row `r` → `[b, e]`.
pub fn gather_columns(hidden: Tensor<3>, columns: &[usize]) -> Tensor<2> {
    let [b, t, e] = hidden.dims();
    let device = hidden.device();
    let index: Vec<i64> = columns
        .iter()
        .enumerate()
        .map(|(r, &c)| (r * t + c) as i64)
        .collect();
    let index: Tensor<1, Int> = Tensor::from_data(TensorData::new(index, [b]), &device);
    hidden.reshape([b * t, e]).select(0, index)
}

/// Backbone + K heads.
#[derive(Module, Debug)]
pub struct RewardModel {
    /// The transformer (its LM head is unused).
    pub backbone: Backbone,
    /// The K scalar heads.
    pub heads: LinearHeads,
    /// Where the features are taken.
    #[module(skip)]
    pooling: Pooling,
}

impl RewardModel {
    /// A reward model from a backbone ([`Gpt2`](crate::ml::Gpt2), [`Decoder`](crate::ml::models::decoder::Decoder)
    /// or [`Backbone`]) and heads (widths must agree), pooling at the last real token.
    pub fn new(backbone: impl Into<Backbone>, heads: LinearHeads) -> Result<Self> {
        let backbone = backbone.into();
        if heads.n_embd() != backbone.hidden_size() {
            return Err(MlError::Invalid(format!(
                "heads of width {} on a backbone of width {}",
                heads.n_embd(),
                backbone.hidden_size()
            )));
        }
        Ok(RewardModel {
            backbone,
            heads,
            pooling: Pooling::LastReal,
        })
    }

    /// The same model pooling with `pooling`.
    pub fn with_pooling(self, pooling: Pooling) -> Self {
        RewardModel { pooling, ..self }
    }

    /// How features are pooled.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Stop gradients into the backbone (only the heads train).
    pub fn freeze_backbone(self) -> Self {
        RewardModel {
            backbone: self.backbone.no_grad(),
            ..self
        }
    }

    /// The pooled final hidden states `[rows, hidden]` of `batch` (the heads' input).
    pub fn features(&self, batch: &TokenBatch) -> Result<Tensor<2>> {
        let hidden = self.backbone.hidden_states(batch, None)?;
        Ok(gather_columns(hidden, &self.pooling.columns(batch)))
    }

    /// Rewards `[rows, K]` of the sequences in `batch` (any padding side), in the heads' dtype
    /// (features are cast to it: f32 heads on a bf16 backbone score in f32).
    pub fn forward(&self, batch: &TokenBatch) -> Result<Tensor<2>> {
        let dtype = FloatDType::from(self.heads.weight.val().dtype());
        Ok(self.heads.forward(self.features(batch)?.cast(dtype)))
    }

    /// Load a reward-model folder in float32 (see the module docs).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_as(dir, device, WeightDtype::F32)
    }

    /// Load a reward-model folder (either format of the module docs), the backbone (and a
    /// sequence classifier's score head) in `dtype`; dagrun's heads stay float32.
    pub fn load_as(dir: &Path, device: &Device, dtype: WeightDtype) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            return Self::load_seq_cls(dir, device, dtype);
        }
        let text = std::fs::read_to_string(&meta_path).map_err(|e| MlError::io(&meta_path, e))?;
        let meta: RewardModelMeta =
            serde_json::from_str(&text).map_err(|e| MlError::json(&meta_path, e))?;
        if meta.format != FORMAT {
            return Err(MlError::Invalid(format!(
                "{}: format `{}` is not `{FORMAT}`",
                meta_path.display(),
                meta.format
            )));
        }
        let backbone = Backbone::from_hf_dir(dir, device, dtype)?;
        let mut set = HostTensors::read(&dir.join(HEADS_FILE))?;
        let heads = LinearHeads::from_host(&mut set, meta.n_embd, meta.num_heads, device)?;
        let pooling = match meta.pool_skip_id {
            Some(id) => Pooling::LastNonPad(Some(id)),
            None => Pooling::LastReal,
        };
        Ok(Self::new(backbone, heads)?.with_pooling(pooling))
    }

    /// A Hugging Face `*ForSequenceClassification` folder (Gemma or Llama).
    fn load_seq_cls(dir: &Path, device: &Device, dtype: WeightDtype) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let (kind, value) = model_kind(&config_path)?;
        let (Some(labels), false) = (kind.seq_cls_labels, kind.model_type == "gpt2") else {
            return Err(MlError::Invalid(format!(
                "{} is not a reward model: no {META_FILE} (dagrun's heads) and config.json's \
                 architectures is not a Llama/Gemma/Qwen2 *ForSequenceClassification",
                dir.display()
            )));
        };
        let config = decoder_config(&value, &config_path)?;
        let mut loaded =
            load_decoder(dir, &config, LmHead::None, dtype, device, &["score.weight"])?;
        let score = read_score_head(&mut loaded.rest, labels, config.hidden_size, dtype, device)?;
        let bias = Tensor::zeros([labels], (device, dtype.dtype()));
        let heads = LinearHeads::from_tensors(score.transpose(), bias);
        Ok(Self::new(loaded.model, heads)?.with_pooling(Pooling::LastNonPad(config.pad_token_id)))
    }

    /// Write the folder (backbone as a HF GPT-2 folder, heads, meta); `tokenizer` is copied.
    pub fn save(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
        self.backbone.save_hf_dir(dir, tokenizer)?;
        let heads_path = dir.join(HEADS_FILE);
        self.heads.to_host(&heads_path).write(&heads_path)?;
        let meta = RewardModelMeta {
            format: FORMAT.to_string(),
            num_heads: self.heads.num_heads(),
            n_embd: self.heads.n_embd(),
            pool_skip_id: match self.pooling {
                Pooling::LastNonPad(id) => id,
                Pooling::LastReal => None,
            },
        };
        let meta_path = dir.join(META_FILE);
        let json = serde_json::to_string_pretty(&meta).expect("json") + "\n";
        crate::files::write_atomic(&meta_path, json.as_bytes())
            .map_err(|e| MlError::io(&meta_path, e))
    }
}

/// Bradley–Terry loss of `[b, K]` rewards of chosen and rejected responses: the sum over the
/// K heads of each head's `-mean_b log σ(r_k(x, y+) - r_k(x, y-))` (docs/algorithms.md §1, §3).
pub fn bradley_terry_loss(chosen: Tensor<2>, rejected: Tensor<2>) -> Tensor<1> {
    let [b, _] = chosen.dims();
    log_sigmoid(chosen - rejected).sum().neg() / b as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::approx_constant)] // 0.693147 is docs/algorithms.md's test vector, not ln 2.
    fn bradley_terry_loss_matches_the_test_vectors() {
        let device = Device::flex();
        let t = |v: Vec<f32>, k: usize| {
            let b = v.len() / k;
            Tensor::<2>::from_data(TensorData::new(v, [b, k]), &device)
        };
        let loss = |c: Vec<f32>, r: Vec<f32>, k: usize| -> f32 {
            bradley_terry_loss(t(c, k), t(r, k)).into_scalar()
        };
        // docs/algorithms.md §1: margin 0 → 0.693147, margin 1 → 0.313262.
        assert!((loss(vec![0.5], vec![0.5], 1) - 0.693147).abs() < 1e-6);
        assert!((loss(vec![1.0], vec![0.0], 1) - 0.313262).abs() < 1e-6);
        // Mean over pairs, sum over heads: pairs with margins (0, 1) on head 0 and (1, 1) on
        // head 1 → (0.693147 + 0.313262) / 2 + 0.313262.
        let two = loss(vec![0.0, 1.0, 1.0, 1.0], vec![0.0, 0.0, 0.0, 0.0], 2);
        assert!(
            (two - ((0.693147 + 0.313262) / 2.0 + 0.313262)).abs() < 1e-5,
            "{two}"
        );
    }

    #[test]
    fn pooling_skips_trailing_pad_ids_like_transformers() {
        // Row 0 ends with a real token equal to the pad id (an EOS used as pad): transformers
        // pools at the token before it. Row 1 is right-padded, row 2 left-padded.
        let batch = TokenBatch {
            rows: 3,
            len: 4,
            ids: vec![5, 6, 7, 0, 5, 6, 0, 0, 0, 5, 6, 7],
            mask: vec![1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1],
        };
        assert_eq!(Pooling::LastReal.columns(&batch), vec![3, 1, 3]);
        assert_eq!(Pooling::LastNonPad(Some(0)).columns(&batch), vec![2, 1, 3]);
        assert_eq!(Pooling::LastNonPad(None).columns(&batch), vec![3, 1, 3]);
    }
}
