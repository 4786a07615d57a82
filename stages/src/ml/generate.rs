//! Batched autoregressive generation with a KV cache.
//!
//! Prompts are left-padded so that every row's next token comes from the last column; each
//! step feeds one new token per row through the cached model. A row stops after it emits EOS
//! (the EOS is kept); finished rows are fed padding (masked out) until every row is done or
//! `max_new_tokens` is reached. For a given seed the result is reproducible.

use burn::tensor::Tensor;

use super::attention::KvCache;
use super::backbone::LanguageModel;
use super::batch::{Padding, TokenBatch};
use super::error::{MlError, Result};
use super::rng::SeededRng;
use super::sampling::SamplingConfig;
use super::weights::to_f32_vec;

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateConfig {
    /// At most this many tokens are appended to each prompt.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Stop a row after this token (kept in the output); `None` never stops early.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// Id fed for finished rows and used for padding (masked, so it does not matter).
    #[serde(default)]
    pub pad_id: u32,
}

/// The generated sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Per row: the prompt's ids followed by the generated ones.
    pub sequences: Vec<Vec<u32>>,
    /// Per row: the generated ids only (cut after the first EOS, which is kept).
    pub responses: Vec<Vec<u32>>,
    /// Per row: the length of the prompt.
    pub prompt_lens: Vec<usize>,
}

/// The logits of the last column only (the LM head is applied to `[b, 1, hidden]`, not to
/// every prompt position: with a 256k vocabulary that is most of a prefill's memory), as host
/// rows.
fn last_logits(model: &impl LanguageModel, hidden: Tensor<3>) -> Result<Vec<Vec<f32>>> {
    let [b, t, e] = hidden.dims();
    let logits = model.logits(hidden.slice([0..b, t - 1..t, 0..e]))?;
    let v = logits.dims()[2];
    let values = to_f32_vec(logits.reshape([b, v]));
    Ok(values.chunks(v).map(<[f32]>::to_vec).collect())
}

/// Generate continuations of `prompts` (token ids, each non-empty) with `model` (GPT-2, Gemma,
/// Llama: any [`LanguageModel`]).
pub fn generate(
    model: &impl LanguageModel,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    rng: &mut SeededRng,
) -> Result<Generation> {
    config.sampling.validate()?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(MlError::Invalid(
            "generation needs non-empty prompts".into(),
        ));
    }
    let model = model.valid();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let limit = model.max_positions();
    if longest + config.max_new_tokens > limit {
        return Err(MlError::Invalid(format!(
            "prompt ({longest} tokens) + max_new_tokens ({}) exceeds the model's {limit} positions",
            config.max_new_tokens
        )));
    }
    let b = prompts.len();
    let mut responses: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut cache = KvCache::new();
    let mut batch = TokenBatch::from_rows(prompts, config.pad_id, Padding::Left)?;
    for _ in 0..config.max_new_tokens {
        let hidden = model.hidden_states(&batch, Some(&mut cache))?;
        let rows = last_logits(&model, hidden)?;
        let mut ids = Vec::with_capacity(b);
        let mut mask = Vec::with_capacity(b);
        for (r, row) in rows.iter().enumerate() {
            if done[r] {
                ids.push(config.pad_id);
                mask.push(0);
                continue;
            }
            let next = config.sampling.pick(row, rng);
            responses[r].push(next);
            done[r] = config.eos_id == Some(next);
            ids.push(next);
            mask.push(1);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        batch = TokenBatch {
            rows: b,
            len: 1,
            ids,
            mask,
        };
    }
    let sequences = prompts
        .iter()
        .zip(&responses)
        .map(|(p, r)| p.iter().chain(r).copied().collect())
        .collect();
    Ok(Generation {
        sequences,
        responses,
        prompt_lens: prompts.iter().map(Vec::len).collect(),
    })
}
