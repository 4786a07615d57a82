//! The PPO loss of one mini-batch (docs/algorithms.md §4 step 6, TRL 0.11; OpenRLHF's
//! `PolicyLoss` and `ValueLoss`): the clipped surrogate of the policy and the clipped value
//! loss, each a mean over the response tokens of the mini-batch, and `policy + vf_coef·value`.
//! [`super::math`] has the same two losses one token at a time; the tests hold them equal.

use burn::tensor::{Device, Tensor, TensorData};

use super::policy::PolicyValue;
use super::rollout::Sample;
use crate::ml::inference::logprobs::next_token_logprobs_from_head;
use crate::ml::models::backbone::LanguageModel;
use crate::ml::{Padding, Result, TokenBatch};

/// The loss's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// ε of the policy loss: the ratio is clipped to [1 − ε, 1 + ε].
    pub cliprange: f64,
    /// How far a value may move from its old value in the value loss.
    pub cliprange_value: f64,
    /// Weight of the value loss in the total.
    pub vf_coef: f64,
}

/// The loss of a mini-batch: the total to back-propagate, and its parts read back.
#[derive(Debug, Clone)]
pub struct PpoLoss {
    /// `policy + vf_coef · value`, tracked.
    pub total: Tensor<1>,
    /// The clipped surrogate (mean over response tokens).
    pub policy: f64,
    /// The clipped value loss (mean over response tokens).
    pub value: f64,
    /// The mean probability ratio `π_new/π_old` over response tokens (an update is skipped
    /// when it exceeds `ratio_threshold`).
    pub mean_ratio: f64,
}

/// `Σ max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) · mask / n` (tokens where `mask` is 1; `n` of them).
pub fn policy_loss(
    adv: Tensor<2>,
    ratio: Tensor<2>,
    mask: Tensor<2>,
    n: f64,
    clip: f64,
) -> Tensor<1> {
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.neg() * ratio.clamp(1.0 - clip, 1.0 + clip);
    (pg1.max_pair(pg2) * mask).sum() / n
}

/// `½ Σ max((v − G)², (clip(v, v_old ± ε) − G)²) · mask / n`.
pub fn value_loss(
    values: Tensor<2>,
    old_values: Tensor<2>,
    returns: Tensor<2>,
    mask: Tensor<2>,
    n: f64,
    clip: f64,
) -> Tensor<1> {
    let vclip = old_values.clone() + (values.clone() - old_values).clamp(-clip, clip);
    let vf1 = (values - returns.clone()).square();
    let vf2 = (vclip - returns).square();
    (vf1.max_pair(vf2) * mask).sum() * 0.5 / n
}

/// Host tensor `[rows, cols]` from row-major values.
fn host2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// The loss of the samples `rows` under the current `pv` (on the autodiff `device`), their
/// sequences right-padded with `pad`.
pub fn minibatch_loss(
    pv: &PolicyValue,
    samples: &[Sample],
    rows: &[usize],
    pad: u32,
    cfg: &LossConfig,
    device: &Device,
) -> Result<PpoLoss> {
    let ids: Vec<Vec<u32>> = rows.iter().map(|&r| samples[r].ids.clone()).collect();
    let batch = TokenBatch::from_rows(&ids, pad, Padding::Right)?;
    let (b, t) = (batch.rows, batch.len);
    let w = t - 1;
    // Per log-prob column (column c predicts token c + 1): the response tokens' numbers.
    let mut mask = vec![0f32; b * w];
    let (mut adv, mut ret, mut old_lp, mut old_v) = (
        vec![0f32; b * w],
        vec![0f32; b * w],
        vec![0f32; b * w],
        vec![0f32; b * w],
    );
    for (i, &r) in rows.iter().enumerate() {
        let s = &samples[r];
        for j in 0..s.adv.len() {
            let c = i * w + s.prompt_len + j - 1;
            mask[c] = 1.0;
            adv[c] = s.adv[j] as f32;
            ret[c] = s.ret[j] as f32;
            old_lp[c] = s.old_logp[j] as f32;
            old_v[c] = s.old_v[j] as f32;
        }
    }
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    let mask = host2(mask, b, w, device);
    let adv = host2(adv, b, w, device);
    let ret = host2(ret, b, w, device);
    let old_lp = host2(old_lp, b, w, device);
    let old_v = host2(old_v, b, w, device);
    let hidden = pv.lm.hidden_states(&batch, None)?;
    let e = hidden.dims()[2];
    // The LM head only for the positions that predict a token (the last predicts none).
    let logp = next_token_logprobs_from_head(
        hidden.clone().slice([0..b, 0..w, 0..e]),
        pv.lm.lm_head_weight()?,
        &batch,
    );
    let values = pv.value.forward(hidden).slice([0..b, 0..w]);
    let ratio = (logp - old_lp).exp();
    let pg = policy_loss(adv, ratio.clone(), mask.clone(), n, cfg.cliprange);
    let vf = value_loss(values, old_v, ret, mask.clone(), n, cfg.cliprange_value);
    let mean_ratio = (ratio.detach() * mask).sum().into_scalar::<f32>() as f64 / n;
    let policy = pg.clone().into_scalar::<f32>() as f64;
    let value = vf.clone().into_scalar::<f32>() as f64;
    Ok(PpoLoss {
        total: pg + vf * cfg.vf_coef,
        policy,
        value,
        mean_ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::super::math::{clipped_surrogate, clipped_value_loss};
    use super::*;

    /// The tensor losses against the per-token reference at ratios away from 1 (both sides
    /// of the clip range), values moving past their clip, and masked-out tokens that must not
    /// count.
    #[test]
    fn the_tensor_losses_equal_the_scalar_reference_away_from_ratio_one() {
        let device = Device::flex();
        let (b, w) = (3, 5);
        let f = |i: usize, a: f64, m: f64| ((i as f64 * a).sin() * m) as f32;
        let adv: Vec<f32> = (0..b * w).map(|i| f(i, 1.3, 1.5)).collect();
        // Ratios from about 0.4 to 1.6: many outside [0.8, 1.2].
        let ratio: Vec<f32> = (0..b * w).map(|i| 1.0 + f(i, 0.7, 0.6)).collect();
        let old_v: Vec<f32> = (0..b * w).map(|i| f(i, 2.1, 1.0)).collect();
        let values: Vec<f32> = (0..b * w).map(|i| old_v[i] + f(i, 0.9, 0.5)).collect();
        let ret: Vec<f32> = (0..b * w).map(|i| f(i, 0.4, 2.0)).collect();
        let mask: Vec<f32> = (0..b * w)
            .map(|i| if i % 4 == 3 { 0.0 } else { 1.0 })
            .collect();
        assert!(ratio.iter().any(|&r| r > 1.25) && ratio.iter().any(|&r| r < 0.75));
        let n = mask.iter().sum::<f32>() as f64;
        let t = |v: &Vec<f32>| host2(v.clone(), b, w, &device);
        let (clip, vclip) = (0.2, 0.2);
        let pg = policy_loss(t(&adv), t(&ratio), t(&mask), n, clip).into_scalar::<f32>() as f64;
        let vf = value_loss(t(&values), t(&old_v), t(&ret), t(&mask), n, vclip).into_scalar::<f32>()
            as f64;
        let kept = (0..b * w).filter(|&i| mask[i] == 1.0);
        let want_pg = kept
            .clone()
            .map(|i| clipped_surrogate(adv[i] as f64, ratio[i] as f64, clip))
            .sum::<f64>()
            / n;
        let want_vf = kept
            .map(|i| clipped_value_loss(values[i] as f64, old_v[i] as f64, ret[i] as f64, vclip))
            .sum::<f64>()
            / n;
        assert!((pg - want_pg).abs() < 1e-5, "policy loss {pg} vs {want_pg}");
        assert!((vf - want_vf).abs() < 1e-5, "value loss {vf} vs {want_vf}");
        // docs/algorithms.md §4's test vectors, through the tensor path.
        let one = |v: f32| host2(vec![v], 1, 1, &device);
        let pg = policy_loss(one(0.5), one(1.3), one(1.0), 1.0, 0.2).into_scalar::<f32>();
        assert!((pg - -0.6).abs() < 1e-6, "{pg}");
        let vf = value_loss(one(0.9), one(0.5), one(1.0), one(1.0), 1.0, 0.2).into_scalar::<f32>();
        assert!((vf - 0.045).abs() < 1e-6, "{vf}");
    }
}
