//! The PPO and Bradley–Terry losses on plain numbers, one token (or pair) at a time
//! (docs/algorithms.md §1, §4): the reference that the tensor losses of [`super::loss`] are
//! tested against, and `head_ensemble`'s per-pair loss (its heads train on the host).

/// The clipped policy-gradient term of one token: `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`.
pub fn clipped_surrogate(advantage: f64, ratio: f64, clip: f64) -> f64 {
    let unclipped = -advantage * ratio;
    let clipped = -advantage * ratio.clamp(1.0 - clip, 1.0 + clip);
    unclipped.max(clipped)
}

/// The clipped value loss of one token: `0.5·max((v − G)², (clip(v, v_old ± ε) − G)²)`.
pub fn clipped_value_loss(value: f64, old_value: f64, ret: f64, clip: f64) -> f64 {
    let clipped = value.clamp(old_value - clip, old_value + clip);
    0.5 * (value - ret).powi(2).max((clipped - ret).powi(2))
}

/// Bradley–Terry loss of one pair with reward margin `r⁺ − r⁻`: `−log σ(margin)`,
/// computed stably.
pub fn bt_loss(margin: f64) -> f64 {
    // −log σ(m) = log(1 + e^{−m}) = softplus(−m)
    let x = -margin;
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/algorithms.md §4's test vectors.
    #[test]
    fn clipped_losses_match_the_test_vector() {
        assert!((clipped_surrogate(0.5, 1.3, 0.2) - -0.6).abs() < 1e-12);
        assert!((clipped_surrogate(-0.5, 0.7, 0.2) - 0.4).abs() < 1e-12);
        assert!((clipped_value_loss(0.9, 0.5, 1.0, 0.2) - 0.045).abs() < 1e-12);
    }

    #[test]
    // 0.693147 is the test vector as docs/algorithms.md prints it (it happens to be ln 2).
    #[allow(clippy::approx_constant)]
    fn bradley_terry_loss_matches_the_test_vector() {
        assert!((bt_loss(0.0) - 0.693147).abs() < 1e-6);
        assert!((bt_loss(1.0) - 0.313262).abs() < 1e-6);
        assert!(bt_loss(-800.0).is_finite() && bt_loss(800.0) >= 0.0);
    }
}
