//! Closed forms of paper §2–3 (docs/algorithms.md §7) for a diagonal Σ, given by its diagonal.
//!
//! - Definition 3.1 (vanilla): `max wᵀr̂ s.t. ‖w‖² ≤ ε` → `w = √ε·r̂/‖r̂‖`.
//! - Definition 3.2 (variance-aware): `max wᵀr̂ s.t. wᵀΣw ≤ ε'`, `ε' = λ_min(Σ)·ε`
//!   → `w = √ε'·Σ⁻¹r̂/√(r̂ᵀΣ⁻¹r̂)`.
//! - Theorem 3.3: `P(wᵀr* ≤ 0)` is `Φ(-√(r*ᵀΣ⁻¹r*))` (variance-aware) and
//!   `Φ(-‖r*‖²/√(r*ᵀΣr*))` (vanilla).
//! - Theorem 2.2: `β_δ = √d + √(2·ln(1/δ))` bounds the norm of a d-dimensional
//!   standard Gaussian with probability ≥ 1-δ.
//!
//! `w` is the policy change `π - π0`; the reference policy itself has `w = 0` and
//! true return 0, so "underperforming the reference" means `wᵀr* ≤ 0`.

use super::normal;

/// `w = √ε·r̂/‖r̂‖` (Definition 3.1). Returns the zero vector when `r̂ = 0`.
pub fn vanilla_solution(r_hat: &[f64], epsilon: f64) -> Vec<f64> {
    let norm = dot(r_hat, r_hat).sqrt();
    if norm == 0.0 {
        return vec![0.0; r_hat.len()];
    }
    let scale = epsilon.sqrt() / norm;
    r_hat.iter().map(|r| scale * r).collect()
}

/// `w = √ε'·Σ⁻¹r̂/√(r̂ᵀΣ⁻¹r̂)` with `ε' = λ_min(Σ)·ε` (Definition 3.2).
///
/// `variances` is the diagonal of Σ (all entries must be positive; the caller
/// validates). Returns the zero vector when `r̂ = 0`.
pub fn variance_aware_solution(r_hat: &[f64], variances: &[f64], epsilon: f64) -> Vec<f64> {
    assert_eq!(r_hat.len(), variances.len(), "r̂ and Σ differ in length");
    let eps_prime = lambda_min(variances) * epsilon;
    let q: f64 = r_hat.iter().zip(variances).map(|(r, v)| r * r / v).sum();
    if q == 0.0 {
        return vec![0.0; r_hat.len()];
    }
    let scale = eps_prime.sqrt() / q.sqrt();
    r_hat
        .iter()
        .zip(variances)
        .map(|(r, v)| scale * r / v)
        .collect()
}

/// The Sharpe ratio of a direction: `wᵀr̂ / √(wᵀΣw)` (Theorem 3.6); invariant to scaling `w`.
pub fn sharpe_ratio(w: &[f64], r_hat: &[f64], variances: &[f64]) -> f64 {
    let risk: f64 = w.iter().zip(variances).map(|(x, v)| x * x * v).sum();
    dot(w, r_hat) / risk.sqrt()
}

/// The smallest eigenvalue of a diagonal Σ, `λ_min(Σ) = min σᵢ²`.
pub fn lambda_min(variances: &[f64]) -> f64 {
    variances.iter().copied().fold(f64::INFINITY, f64::min)
}

/// `P(wᵀr* ≤ 0)` for the variance-aware solution: `Φ(-√(r*ᵀΣ⁻¹r*))` (Theorem 3.3).
pub fn p_underperform_variance_aware(r_star: &[f64], variances: &[f64]) -> f64 {
    let q: f64 = r_star.iter().zip(variances).map(|(r, v)| r * r / v).sum();
    normal::cdf(-q.sqrt())
}

/// `P(wᵀr* ≤ 0)` for the vanilla solution: `Φ(-‖r*‖²/√(r*ᵀΣr*))` (Theorem 3.3).
pub fn p_underperform_vanilla(r_star: &[f64], variances: &[f64]) -> f64 {
    let norm2 = dot(r_star, r_star);
    let risk: f64 = r_star.iter().zip(variances).map(|(r, v)| r * r * v).sum();
    normal::cdf(-norm2 / risk.sqrt())
}

/// `β_δ = √d + √(2·ln(1/δ))`, a (1-δ)-probability bound on the norm of N(0, I_d) (Theorem 2.2).
pub fn beta_delta(d: usize, delta: f64) -> f64 {
    (d as f64).sqrt() + (2.0 * (1.0 / delta).ln()).sqrt()
}

/// The dot product of two equally long slices.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/algorithms.md §7 test vector: r̂ = (1, 1), Σ = diag(1, 4).
    #[test]
    fn algorithms_section_7_vector() {
        let r_hat = [1.0, 1.0];
        let var = [1.0, 4.0];
        let w = variance_aware_solution(&r_hat, &var, 1.0);
        // Direction Σ⁻¹r̂ = (1, 0.25).
        assert!((w[1] / w[0] - 0.25).abs() < 1e-15);
        let direction = [1.0, 0.25];
        assert!((sharpe_ratio(&direction, &r_hat, &var) - 1.25f64.sqrt()).abs() < 1e-15);
        assert!((sharpe_ratio(&direction, &r_hat, &var) - 1.1180).abs() < 5e-5);
        assert!((sharpe_ratio(&r_hat, &r_hat, &var) - 0.8944).abs() < 5e-5);
        assert!((sharpe_ratio(&r_hat, &r_hat, &var) - 2.0 / 5f64.sqrt()).abs() < 1e-15);
        // The solution is on the boundary wᵀΣw = ε' = λ_min·ε = 1.
        let wsw: f64 = w.iter().zip(&var).map(|(x, v)| x * x * v).sum();
        assert!((wsw - 1.0).abs() < 1e-15);
        // The vanilla one is on the sphere ‖w‖² = ε.
        let v = vanilla_solution(&r_hat, 2.0);
        assert!((dot(&v, &v) - 2.0).abs() < 1e-15);
    }

    #[test]
    fn zero_estimate_gives_zero_change() {
        assert_eq!(vanilla_solution(&[0.0, 0.0], 1.0), vec![0.0, 0.0]);
        assert_eq!(
            variance_aware_solution(&[0.0, 0.0], &[1.0, 2.0], 1.0),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn closed_forms_in_one_dimension() {
        // d = 1, r* = 2, σ² = 4: both are Φ(-1).
        let p = normal::cdf(-1.0);
        assert!((p_underperform_variance_aware(&[2.0], &[4.0]) - p).abs() < 1e-15);
        assert!((p_underperform_vanilla(&[2.0], &[4.0]) - p).abs() < 1e-15);
        assert!((beta_delta(100, 0.05) - (10.0 + (2.0 * 20f64.ln()).sqrt())).abs() < 1e-12);
    }
}
