//! Per-token log-probabilities of sequences under a causal LM: `log p(x_t | x_<t)`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::backbone::LanguageModel;
use super::batch::TokenBatch;
use super::error::Result;
use super::weights::to_f32_vec;

/// Log-probs of each token given its prefix, from logits `[b, t, vocab]` of `batch`:
/// `[b, t - 1]`, entry `(r, c)` = log p(token `c + 1` | tokens ≤ `c`), 0 where token `c + 1` or
/// token `c` is padding. Differentiable (the policy-gradient losses use it).
pub fn token_logprobs_from_logits(logits: Tensor<3>, batch: &TokenBatch) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    let device = logits.device();
    let logp = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2);
    let mut targets = Vec::with_capacity(b * (t - 1));
    let mut valid = Vec::with_capacity(b * (t - 1));
    for r in 0..b {
        for c in 1..t {
            targets.push(batch.ids[r * t + c] as i64);
            let ok = batch.mask[r * t + c] == 1 && batch.mask[r * t + c - 1] == 1;
            valid.push(if ok { 1.0f32 } else { 0.0 });
        }
    }
    let targets: Tensor<3, Int> =
        Tensor::from_data(TensorData::new(targets, [b, t - 1, 1]), &device);
    let valid: Tensor<2> = Tensor::from_data(TensorData::new(valid, [b, t - 1]), &device);
    logp.gather(2, targets).reshape([b, t - 1]) * valid
}

/// [`token_logprobs_from_logits`] after a forward pass of `model` on `batch`.
pub fn token_logprobs(model: &impl LanguageModel, batch: &TokenBatch) -> Result<Tensor<2>> {
    if batch.len < 2 {
        return Ok(Tensor::zeros([batch.rows, 0], &model.device()));
    }
    let logits = model.logits_of(batch, None)?;
    Ok(token_logprobs_from_logits(logits, batch))
}

/// Per row, the log-probs of its real tokens after its first one (host values): what
/// `dagrun model logprobs` prints.
pub fn token_logprobs_rows(
    model: &impl LanguageModel,
    batch: &TokenBatch,
) -> Result<Vec<Vec<f32>>> {
    let lp = token_logprobs(&model.valid(), batch)?;
    let t = batch.len;
    let values = to_f32_vec(lp);
    Ok((0..batch.rows)
        .map(|r| {
            (1..t)
                .filter(|&c| batch.mask[r * t + c] == 1 && batch.mask[r * t + c - 1] == 1)
                .map(|c| values[r * (t - 1) + c - 1])
                .collect()
        })
        .collect())
}
