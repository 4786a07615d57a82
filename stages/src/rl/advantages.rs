//! From a rollout's per-token numbers to what the PPO update trains on (docs/algorithms.md
//! §4–5, TRL 0.11 semantics; Stable-Baselines3's `RolloutBuffer.compute_returns_and_advantage`
//! is the same computation): per-token rewards with the KL penalty, generalised advantage
//! estimation and returns, then advantages whitened over the batch. On the host, in f64, one
//! response at a time (responses have different lengths).

/// Per-token rewards of one response: `R_t = −β·w·kl_t`, plus the score `s` at the last
/// token. `w` is the KL weight: 1 for vanilla PPO, the ensemble variance `σ²(x, y)` for
/// variance-aware PPO (§5).
pub fn token_rewards(kl: &[f64], beta: f64, weight: f64, score: f64) -> Vec<f64> {
    let mut r: Vec<f64> = kl.iter().map(|k| -beta * weight * k).collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// Generalised advantage estimation over one response: `δ_t = R_t + γV_{t+1} − V_t`
/// (V after the end is 0), `A_t = δ_t + γλA_{t+1}`. Returns `(A, G)` with the returns
/// `G = A + V`, computed before any whitening.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lambda: f64) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(rewards.len(), values.len(), "one value per token");
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// Whitens advantages over every token of the batch: `(A − mean)/sqrt(var + 1e-8)`
/// with the unbiased variance, as TRL's `masked_whiten` (the mean is not added back).
pub fn whiten(batch: &mut [Vec<f64>]) {
    let n: usize = batch.iter().map(Vec::len).sum();
    if n == 0 {
        return;
    }
    let mean = batch.iter().flatten().sum::<f64>() / n as f64;
    let ss: f64 = batch
        .iter()
        .flatten()
        .map(|a| (a - mean) * (a - mean))
        .sum();
    let var = if n > 1 { ss / (n - 1) as f64 } else { 0.0 };
    let scale = 1.0 / (var + 1e-8).sqrt();
    for a in batch.iter_mut().flatten() {
        *a = (*a - mean) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} vs {b:?}");
        }
    }

    /// docs/algorithms.md §4's test vector.
    #[test]
    fn rewards_gae_returns_and_whitening_match_the_test_vector() {
        let r = token_rewards(&[0.1, -0.05, 0.2], 0.2, 1.0, 1.0);
        close(&r, &[-0.02, 0.01, 0.96], 1e-12);
        let (a, g) = gae(&r, &[0.5, 0.4, 0.3], 1.0, 0.95);
        close(&a, &[0.39015, 0.537, 0.66], 1e-9);
        close(&g, &[0.89015, 0.937, 0.96], 1e-9);
        let mut batch = vec![a];
        whiten(&mut batch);
        close(&batch[0], &[-1.02812, 0.05885, 0.96928], 1e-5);
    }

    /// The variance weight scales the KL penalty exactly like β does (§5's invariant: with
    /// σ² ≡ 1 variance-aware PPO is vanilla PPO).
    #[test]
    fn variance_weight_scales_the_penalty_like_beta() {
        let kl = [0.3, -0.1, 0.05, 0.2];
        let va = token_rewards(&kl, 0.05, 2.0, 0.7);
        let van = token_rewards(&kl, 0.1, 1.0, 0.7);
        close(&va, &van, 1e-15);
    }
}
