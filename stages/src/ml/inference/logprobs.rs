//! Per-token log-probabilities of sequences under a causal LM: `log p(x_t | x_<t)`.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use crate::ml::error::Result;
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::backbone::LanguageModel;
use crate::ml::models::weights::to_f32_vec;
use crate::ml::ops::{self, HeadLogits};

/// Log-probs of each token given its prefix, from logits `[b, t, vocab]` of `batch`:
/// `[b, t - 1]`, entry `(r, c)` = log p(token `c + 1` | tokens ≤ `c`), 0 where token `c + 1` or
/// token `c` is padding. Differentiable (the policy-gradient losses use it).
pub fn token_logprobs_from_logits(logits: Tensor<3>, batch: &TokenBatch) -> Tensor<2> {
    let [b, t, v] = logits.dims();
    let logits = logits.slice([0..b, 0..t - 1, 0..v]);
    let (targets, valid) = targets_and_valid(batch, t - 1, &logits.device());
    // Under autodiff the targets' entries only (`ops::log_softmax_gather`: fewer
    // vocabulary-sized tensors in the graph); without it the backend's `log_softmax`.
    let logp = if logits.is_autodiff() {
        ops::log_softmax_gather(logits, 2, targets)
    } else {
        log_softmax(logits, 2).gather(2, targets)
    };
    logp.reshape([b, t - 1]) * valid
}

/// [`token_logprobs_from_logits`] of a training forward, from the hidden states of the first
/// `t - 1` positions (`[b, t - 1, e]`) and the LM head's weight `[vocab, e]`, with the
/// logits computed vocabulary-major: `W hᵀ` (`[vocab, b(t-1)]`), the log-sum-exp taken over
/// dimension 0. The same numbers as `h Wᵀ` but the backward then produces the weight's
/// gradient in the weight's own `[vocab, e]` layout: with `h Wᵀ` it comes out `[e, vocab]`
/// and, for GPT-2's tied embeddings, is added to the embedding's gradient through a
/// transposed (strided) read of the whole matrix per backward pass (what that costs:
/// docs/benchmarks.md). PyTorch avoids that copy by choosing the gradient's strides in its
/// matmul backward; burn's autodiff does not, so the layout is chosen here ([`ops::lm_head`]). On libtorch its fused kernel gives the
/// weight's gradient in its layout directly: the logits are then row-major, `h Wᵀ`, and
/// the log-softmax runs along the last dimension, where libtorch's kernels are fastest.
pub fn next_token_logprobs_from_head(
    hidden: Tensor<3>,
    head: Tensor<2>,
    batch: &TokenBatch,
) -> Tensor<2> {
    let [b, w, e] = hidden.dims();
    let (targets, valid) = targets_and_valid(batch, w, &hidden.device());
    let HeadLogits { logits, vocab_dim } = ops::lm_head(hidden.reshape([b * w, e]), head);
    let targets = if vocab_dim == 0 {
        targets.reshape([1, b * w])
    } else {
        targets.reshape([b * w, 1])
    };
    ops::log_softmax_gather(logits, vocab_dim, targets).reshape([b, w]) * valid
}

/// Next-token ids `[b, w, 1]` of `batch` and the 0/1 mask `[b, w]` of positions whose token
/// and predecessor are both real.
fn targets_and_valid(
    batch: &TokenBatch,
    w: usize,
    device: &burn::tensor::Device,
) -> (Tensor<3, Int>, Tensor<2>) {
    let (b, t) = (batch.rows, batch.len);
    assert_eq!(w + 1, t, "next-token positions do not match the batch");
    let mut targets = Vec::with_capacity(b * w);
    let mut valid = Vec::with_capacity(b * w);
    for r in 0..b {
        for c in 1..t {
            targets.push(batch.ids[r * t + c] as i64);
            let ok = batch.mask[r * t + c] == 1 && batch.mask[r * t + c - 1] == 1;
            valid.push(if ok { 1.0f32 } else { 0.0 });
        }
    }
    (
        Tensor::from_data(TensorData::new(targets, [b, w, 1]), device),
        Tensor::from_data(TensorData::new(valid, [b, w]), device),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::training::grads::ParamGrads;
    use crate::ml::{Gpt2, Gpt2Config, Padding};
    use burn::module::Module;
    use burn::tensor::Device;

    #[allow(deprecated)] // Device::libtorch: burn marks burn-tch deprecated
    fn devices() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut d = vec![Device::flex()];
        #[cfg(feature = "tch")]
        d.push(Device::libtorch());
        d
    }

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The training path (vocabulary-major logits and log-sum-exp; on libtorch the fused
    /// head and log-softmax) gives the log-probs and the parameter gradients of
    /// `log_softmax(h Wᵀ)[target]`, computed here directly.
    #[test]
    fn head_path_matches_log_softmax_in_values_and_gradients() {
        for device in devices() {
            let ad = device.clone().autodiff();
            let model = Gpt2::init(&Gpt2Config::tiny(50), 3, &ad).unwrap();
            let rows = [vec![1, 5, 7, 9, 2], vec![4, 4, 8]];
            let batch = TokenBatch::from_rows(&rows, 0, Padding::Right).unwrap();
            let (b, t) = (batch.rows, batch.len);
            // A loss that weighs every position differently, so each gradient entry counts.
            let weights: Vec<f32> = (0..b * (t - 1)).map(|i| 0.3 + 0.1 * i as f32).collect();
            let weights = Tensor::<2>::from_data(TensorData::new(weights, [b, t - 1]), &ad);

            let hidden = model.hidden(&batch, None).unwrap();
            let e = hidden.dims()[2];
            let ours = next_token_logprobs_from_head(
                hidden.slice([0..b, 0..t - 1, 0..e]),
                model.lm_head_weight(),
                &batch,
            );
            let (targets, valid) = targets_and_valid(&batch, t - 1, &ad);
            let logits = model.lm_logits(model.hidden(&batch, None).unwrap());
            let reference = log_softmax(logits.slice([0..b, 0..t - 1, 0..50]), 2)
                .gather(2, targets)
                .reshape([b, t - 1])
                * valid;
            let d = max_diff(ours.clone().detach(), reference.clone().detach());
            assert!(d < 1e-5, "{device:?}: log-probs differ by {d}");
            // Also the path without autodiff (the backend's log_softmax).
            let plain =
                token_logprobs_from_logits(model.valid().forward(&batch, None).unwrap(), &batch);
            let d = max_diff(plain, reference.clone().detach().inner());
            assert!(d < 1e-5, "{device:?}: no-autodiff log-probs differ by {d}");

            let g1 = ParamGrads::from_loss((ours * weights.clone()).sum(), &model);
            let g2 = ParamGrads::from_loss((reference * weights).sum(), &model);
            assert_eq!(g1.grads.len(), g2.grads.len());
            for (path, a) in &g1.grads {
                let r = &g2.grads[path];
                let d = (a.clone() - r.clone()).abs().max().into_scalar::<f32>();
                let scale = r.clone().abs().max().into_scalar::<f32>();
                assert!(
                    d <= 1e-5 + 1e-4 * scale,
                    "{device:?}: gradient of {path} differs by {d} (max {scale})"
                );
            }
            assert!(
                g1.grads.contains_key("wte"),
                "the tied head's gradient is there"
            );
        }
    }
}
