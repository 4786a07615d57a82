//! Causal self-attention shared by every architecture (GPT-2 in `gpt2.rs`, Gemma/Llama/Qwen2 in
//! `decoder.rs`): the [`KvCache`], the additive causal + padding mask with the positions of the
//! new tokens ([`KvCache::begin`]) (the attention itself: [`crate::ml::ops::attention`]).
//!
//! Explicit matmuls and an additive mask (not a fused kernel) make every backend compute the
//! same function, with or without a cache (PLATFORM.md: burn-tch's sdpa inverts burn's mask and
//! aligns `is_causal` top-left). Positions count a row's real tokens only, so a padded row gets
//! the positions it would have unpadded (left padding included).

use burn::tensor::{Device, Tensor, TensorData};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::TokenBatch;

/// The masked-out score added to attention logits (exp underflows to exactly 0).
const MASKED: f32 = -1.0e9;

/// Keys and values of one layer, `[batch, kv_heads, seen, head_dim]`.
pub(crate) type LayerKv = Option<(Tensor<4>, Tensor<4>)>;

/// Cached keys and values of every layer, plus the mask of the tokens they came from.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values, `[batch, kv_heads, seen, head_dim]`.
    layers: Vec<LayerKv>,
    /// Per row: the mask of every token seen so far (1 real, 0 pad).
    mask: Vec<Vec<u8>>,
}

/// What a forward pass over new tokens needs besides the tokens.
pub(crate) struct Step {
    /// Additive mask `[b, 1, t, past + t]` (0 where a query may attend, very negative else), f32.
    pub bias: Tensor<4>,
    /// Position of each new token (row-major `[b, t]`): the number of real tokens before it.
    pub positions: Vec<i64>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of tokens (columns) cached so far.
    pub fn seen(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    /// Register the new tokens of `batch` (appending its mask) for a model of `n_layers` layers
    /// that accepts `max_positions` tokens, and build the mask bias and positions.
    pub(crate) fn begin(
        &mut self,
        batch: &TokenBatch,
        n_layers: usize,
        max_positions: usize,
        device: &Device,
    ) -> Result<Step> {
        let (b, t) = (batch.rows, batch.len);
        if self.mask.is_empty() {
            self.mask = vec![Vec::new(); b];
            self.layers = vec![None; n_layers];
        } else if self.mask.len() != b {
            return Err(MlError::Invalid(format!(
                "KV cache holds {} rows, the batch has {b}",
                self.mask.len()
            )));
        }
        let past = self.seen();
        let total = past + t;
        if total > max_positions {
            return Err(MlError::Invalid(format!(
                "sequence of {total} tokens exceeds the model's {max_positions} positions"
            )));
        }
        let mut positions = Vec::with_capacity(b * t);
        let mut bias = vec![MASKED; b * t * total];
        for r in 0..b {
            let new = &batch.mask[r * t..(r + 1) * t];
            let mut seen_real = self.mask[r].iter().filter(|&&m| m == 1).count();
            self.mask[r].extend_from_slice(new);
            let keys = &self.mask[r];
            for (q, &m) in new.iter().enumerate() {
                positions.push(seen_real.saturating_sub(usize::from(m == 0)) as i64);
                seen_real += usize::from(m == 1);
                let row = &mut bias[(r * t + q) * total..(r * t + q + 1) * total];
                for (k, slot) in row.iter_mut().enumerate().take(past + q + 1) {
                    if keys[k] == 1 {
                        *slot = 0.0;
                    }
                }
            }
        }
        let bias = Tensor::from_data(TensorData::new(bias, [b, 1, t, total]), device);
        Ok(Step { bias, positions })
    }

    /// The per-layer slots (after [`KvCache::begin`]).
    pub(crate) fn layers_mut(&mut self) -> std::slice::IterMut<'_, LayerKv> {
        self.layers.iter_mut()
    }
}

/// Append new keys and values `[b, kv, t, dh]` to a layer's slot; returns all of them.
pub(crate) fn extend(slot: &mut LayerKv, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let (k, v) = match slot.take() {
        Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        None => (k, v),
    };
    *slot = Some((k.clone(), v.clone()));
    (k, v)
}
