//! Reward models: a GPT-2 backbone and K linear heads on the final hidden state of the last
//! non-pad token, giving `[batch, K]` rewards (ALGORITHMS.md §1, §3).
//!
//! # Folder format (`reward-model-v1`)
//! A Hugging Face GPT-2 folder (`config.json`, `model.safetensors`, `tokenizer.json`; the
//! backbone, loadable by transformers as `GPT2LMHeadModel`) plus:
//! - `reward_heads.safetensors`: `weight` `[n_embd, K]` (column k = head k), `bias` `[K]`, F32;
//! - `reward_model.json`: `{"format": "dagrun-reward-model-v1", "num_heads": K, "n_embd": E}`.
//!
//! A plain GPT-2 folder without these files is not a reward model ([`RewardModel::load`]
//! says so).

use std::path::Path;

use burn::module::Module;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::batch::TokenBatch;
use super::error::{MlError, Result};
use super::gpt2::Gpt2;
use super::heads::LinearHeads;
use super::weights::HostTensors;

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
}

/// The final hidden state of each row's last real token: `[rows, n_embd]`.
pub fn last_token_features(model: &Gpt2, batch: &TokenBatch) -> Result<Tensor<2>> {
    let hidden = model.hidden(batch, None)?;
    Ok(gather_last(hidden, batch))
}

/// Rows of `hidden` `[b, t, e]` at each row's last real token → `[b, e]`.
pub fn gather_last(hidden: Tensor<3>, batch: &TokenBatch) -> Tensor<2> {
    let [b, t, e] = hidden.dims();
    let device = hidden.device();
    let index: Vec<i64> = batch
        .last_real_index()
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
    pub backbone: Gpt2,
    /// The K scalar heads.
    pub heads: LinearHeads,
}

impl RewardModel {
    /// A reward model from a backbone and heads (widths must agree).
    pub fn new(backbone: Gpt2, heads: LinearHeads) -> Result<Self> {
        if heads.n_embd() != backbone.config().n_embd {
            return Err(MlError::Invalid(format!(
                "heads of width {} on a backbone of width {}",
                heads.n_embd(),
                backbone.config().n_embd
            )));
        }
        Ok(RewardModel { backbone, heads })
    }

    /// Stop gradients into the backbone (only the heads train).
    pub fn freeze_backbone(self) -> Self {
        RewardModel {
            backbone: self.backbone.no_grad(),
            heads: self.heads,
        }
    }

    /// Rewards `[rows, K]` of the sequences in `batch` (any padding side).
    pub fn forward(&self, batch: &TokenBatch) -> Result<Tensor<2>> {
        Ok(self
            .heads
            .forward(last_token_features(&self.backbone, batch)?))
    }

    /// Load a reward-model folder (see the module docs).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            return Err(MlError::Invalid(format!(
                "{} is not a reward model: no {META_FILE} (a reward model is a GPT-2 folder \
                 plus {HEADS_FILE} and {META_FILE})",
                dir.display()
            )));
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
        let backbone = Gpt2::from_hf_dir(dir, device)?;
        let mut set = HostTensors::read(&dir.join(HEADS_FILE))?;
        let heads = LinearHeads::from_host(&mut set, meta.n_embd, meta.num_heads, device)?;
        Self::new(backbone, heads)
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
        };
        let meta_path = dir.join(META_FILE);
        let json = serde_json::to_string_pretty(&meta).expect("json") + "\n";
        std::fs::write(&meta_path, json).map_err(|e| MlError::io(&meta_path, e))
    }
}

/// Bradley–Terry loss of `[b, K]` rewards of chosen and rejected responses: the sum over the
/// K heads of each head's `-mean_b log σ(r_k(x, y+) - r_k(x, y-))` (ALGORITHMS.md §1, §3).
pub fn bradley_terry_loss(chosen: Tensor<2>, rejected: Tensor<2>) -> Tensor<1> {
    let [b, _] = chosen.dims();
    log_sigmoid(chosen - rejected).sum().neg() / b as f64
}

/// Mean and variance (with `ddof`: 1 = sample variance, the paper's) of per-head rewards.
pub fn ensemble_stats(rewards: &[f32], ddof: usize) -> (f64, f64) {
    let k = rewards.len();
    let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / k as f64;
    let ss: f64 = rewards.iter().map(|&r| (r as f64 - mean).powi(2)).sum();
    let var = if k > ddof {
        ss / (k - ddof) as f64
    } else {
        0.0
    };
    (mean, var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::approx_constant)] // 0.693147 is ALGORITHMS.md's test vector, not ln 2.
    fn bradley_terry_loss_matches_the_test_vectors() {
        let device = Device::flex();
        let t = |v: Vec<f32>, k: usize| {
            let b = v.len() / k;
            Tensor::<2>::from_data(TensorData::new(v, [b, k]), &device)
        };
        let loss = |c: Vec<f32>, r: Vec<f32>, k: usize| -> f32 {
            bradley_terry_loss(t(c, k), t(r, k)).into_scalar()
        };
        // ALGORITHMS.md §1: margin 0 → 0.693147, margin 1 → 0.313262.
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
    fn ensemble_stats_use_the_sample_variance() {
        let (m, v) = ensemble_stats(&[1.0, 2.0, 3.0, 6.0], 1);
        assert!((m - 3.0).abs() < 1e-12);
        // deviations -2, -1, 0, 3 → ss 14 → /3
        assert!((v - 14.0 / 3.0).abs() < 1e-12);
        let (_, v0) = ensemble_stats(&[1.0, 2.0, 3.0, 6.0], 0);
        assert!((v0 - 3.5).abs() < 1e-12);
        assert_eq!(ensemble_stats(&[5.0], 1), (5.0, 0.0));
    }
}
