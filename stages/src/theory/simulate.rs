//! Figure 5: Monte-Carlo comparison of the vanilla (Definition 3.1) and variance-aware
//! (Definition 3.2) solutions for a fixed true reward vector, with the closed forms of
//! Theorem 3.3 and the bound of Theorem 2.2 beside the estimates.
//!
//! The fixed problem comes from the seed (see [`crate::theory::rng`] for the streams):
//! - `r* = signal · z/‖z‖` with `z ~ N(0, I_d)`, so `‖r*‖ = signal` exactly.
//! - `σᵢ² = exp(ln a + uᵢ·(ln b - ln a))` with `uᵢ ~ U[0, 1)`: log-uniform on `[a, b]`, where
//!   `[a, b]` is `high_range` (default `[0.01, 1]`: two decades) or `low_range` (default
//!   `[0.09, 0.11]`: nearly equal, same geometric mean 0.1). The same `uᵢ` serve both
//!   settings, so high and low differ only in the spread.
//!
//! Why `signal = 0.4` by default: for a generic `r*` with `d = 1000` and unit-order rewards,
//! both probabilities of Theorem 3.3 are below 1e-100 and nothing can be compared. With
//! `‖r*‖ = s`, `P_van ≈ Φ(-s/√mean(σ²))` and `P_va ≈ Φ(-s·√mean(1/σ²))`; `s = 0.4` puts them
//! at about 0.19 and 0.03 (high variability) and both at about 0.10 (low variability).
//!
//! Each draw `r̂ = r* + Σ^{1/2}ξ` is reduced in one O(d) pass, without allocation, to the
//! six sums `r̂ᵀr*`, `‖r̂‖²`, `r̂ᵀΣ⁻¹r*`, `r̂ᵀΣ⁻¹r̂`, `r̂ᵀΣr̂`, `‖ξ‖²`, from which both
//! returns and both Theorem 2.2 checks follow:
//! - vanilla `wᵀr* = √ε·r̂ᵀr*/‖r̂‖`; bound holds iff `r̂ᵀr* ≥ ‖r̂‖² - β_δ·√(r̂ᵀΣr̂)`;
//! - variance-aware `wᵀr* = √ε'·r̂ᵀΣ⁻¹r*/√(r̂ᵀΣ⁻¹r̂)`; bound holds iff
//!   `r̂ᵀΣ⁻¹r* ≥ r̂ᵀΣ⁻¹r̂ - β_δ·√(r̂ᵀΣ⁻¹r̂)`.

use serde::{Deserialize, Serialize};

use super::rng::{self, STREAM_DRAWS, STREAM_TRUE_REWARDS, STREAM_VARIANCES};
use super::solutions::{self, beta_delta, lambda_min};
use super::summary::{self, Summary};
use super::TheoryError;

/// How much the variances of Σ vary across coordinates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Variability {
    /// Log-uniform over `high_range` (default two decades).
    #[default]
    High,
    /// Log-uniform over `low_range` (default nearly equal).
    Low,
}

/// Params of the `simulate` stage (Figure 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SimulateParams {
    /// Dimension d: the number of (prompt, response) pairs.
    pub d: usize,
    /// Number M of Monte-Carlo draws of `r̂`.
    pub draws: usize,
    /// Seed of everything random (r*, Σ and the draws).
    pub seed: u64,
    /// `‖r*‖`, the scale of the true reward vector (> 0); see the module docs for the default.
    pub signal: f64,
    /// Which variance range Σ's diagonal is drawn from.
    pub variability: Variability,
    /// `[a, b]` of the log-uniform variances under `variability: high` (0 < a ≤ b).
    pub high_range: [f64; 2],
    /// `[a, b]` of the log-uniform variances under `variability: low` (0 < a ≤ b).
    pub low_range: [f64; 2],
    /// ε, the squared radius of the vanilla constraint `‖w‖² ≤ ε` (> 0).
    pub epsilon: f64,
    /// δ of Theorem 2.2's bound, in (0, 1).
    pub delta: f64,
    /// Number of histogram bins of the return distributions (≥ 1).
    pub bins: usize,
    /// Explicit `r*` of length d, replacing the seeded one (`signal` is then ignored).
    pub true_rewards: Option<Vec<f64>>,
    /// Explicit diagonal of Σ of length d, replacing the seeded one (`variability` is then ignored).
    pub variances: Option<Vec<f64>>,
    /// Keep every draw's true returns in the result (2·M numbers).
    pub keep_returns: bool,
}

impl Default for SimulateParams {
    fn default() -> Self {
        SimulateParams {
            d: 1000,
            draws: 10_000,
            seed: 0,
            signal: 0.4,
            variability: Variability::High,
            high_range: [0.01, 1.0],
            low_range: [0.09, 0.11],
            epsilon: 1.0,
            delta: 0.05,
            bins: 40,
            true_rewards: None,
            variances: None,
            keep_returns: false,
        }
    }
}

/// Monte-Carlo and closed-form probability that a method does no better than the reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Underperformance {
    /// Fraction of draws with `wᵀr* ≤ 0`.
    pub monte_carlo: f64,
    /// Its binomial standard error `√(p(1-p)/M)` at the closed-form p.
    pub standard_error: f64,
    /// Theorem 3.3's closed form.
    pub closed_form: f64,
    /// `(monte_carlo - closed_form)/standard_error`.
    pub z_score: f64,
}

/// The true-return distribution of one method over the draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodStats {
    /// Summary of `wᵀr*` over the draws.
    pub summary: Summary,
    /// Counts per bin of [`SimulationResult::histogram_edges`].
    pub histogram: Vec<u64>,
    /// `P(wᵀr* ≤ 0)`, estimated and exact.
    pub underperformance: Underperformance,
    /// Fraction of draws where Theorem 2.2's bound `wᵀr* ≥ wᵀr̂ - β_δ‖w‖_Σ` holds for this w.
    pub bound_holds: f64,
    /// Every draw's `wᵀr*`, when `keep_returns` was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<Vec<f64>>,
}

/// Output of the `simulate` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationResult {
    /// Dimension d.
    pub d: usize,
    /// Number of draws M.
    pub draws: usize,
    /// The seed used.
    pub seed: u64,
    /// The variability setting (meaningless when `custom_variances`).
    pub variability: Variability,
    /// Whether Σ came from the `variances` param instead of the seed.
    pub custom_variances: bool,
    /// `‖r*‖`.
    pub true_reward_norm: f64,
    /// Smallest variance `λ_min(Σ)`.
    pub lambda_min: f64,
    /// Largest variance `λ_max(Σ)`.
    pub lambda_max: f64,
    /// ε of the vanilla constraint.
    pub epsilon: f64,
    /// `ε' = λ_min(Σ)·ε` of the variance-aware constraint.
    pub epsilon_prime: f64,
    /// δ of Theorem 2.2.
    pub delta: f64,
    /// `β_δ = √d + √(2 ln(1/δ))`.
    pub beta_delta: f64,
    /// Fraction of draws with `‖Σ^{-1/2}(r̂ - r*)‖ ≤ β_δ` (the event under which the bound holds for every w).
    pub noise_within_beta: f64,
    /// Shared bin edges of both methods' histograms (`bins + 1` values).
    pub histogram_edges: Vec<f64>,
    /// The vanilla solution's returns.
    pub vanilla: MethodStats,
    /// The variance-aware solution's returns.
    pub variance_aware: MethodStats,
}

impl SimulateParams {
    /// Checks every field's domain.
    pub fn validate(&self) -> Result<(), TheoryError> {
        if self.d == 0 {
            return Err(TheoryError::param("d", "must be ≥ 1"));
        }
        if self.draws < 2 {
            return Err(TheoryError::param("draws", "must be ≥ 2"));
        }
        if !(self.signal.is_finite() && self.signal > 0.0) {
            return Err(TheoryError::param(
                "signal",
                format!("must be > 0, got {}", self.signal),
            ));
        }
        for (field, [a, b]) in [
            ("high_range", self.high_range),
            ("low_range", self.low_range),
        ] {
            if !(a.is_finite() && b.is_finite() && a > 0.0 && a <= b) {
                return Err(TheoryError::param(
                    field,
                    format!("must be [a, b] with 0 < a ≤ b, got [{a}, {b}]"),
                ));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(TheoryError::param("epsilon", "must be finite and > 0"));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(TheoryError::param("delta", "must lie in (0, 1)"));
        }
        if self.bins == 0 {
            return Err(TheoryError::param("bins", "must be ≥ 1"));
        }
        if let Some(r) = &self.true_rewards {
            if r.len() != self.d {
                return Err(TheoryError::param(
                    "true_rewards",
                    format!("has {} entries, d is {}", r.len(), self.d),
                ));
            }
            if let Some(i) = r.iter().position(|x| !x.is_finite()) {
                return Err(TheoryError::param(
                    format!("true_rewards[{i}]"),
                    "must be finite",
                ));
            }
            if r.iter().all(|x| *x == 0.0) {
                return Err(TheoryError::param("true_rewards", "must not be all zero"));
            }
        }
        if let Some(v) = &self.variances {
            if v.len() != self.d {
                return Err(TheoryError::param(
                    "variances",
                    format!("has {} entries, d is {}", v.len(), self.d),
                ));
            }
            if let Some(i) = v.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(TheoryError::param(
                    format!("variances[{i}]"),
                    format!("must be finite and > 0, got {}", v[i]),
                ));
            }
        }
        Ok(())
    }

    /// The fixed true reward vector: the explicit one, or `signal·z/‖z‖` from the seed.
    pub fn true_reward_vector(&self) -> Vec<f64> {
        if let Some(r) = &self.true_rewards {
            return r.clone();
        }
        let mut g = rng::seeded(self.seed, STREAM_TRUE_REWARDS);
        let z: Vec<f64> = (0..self.d).map(|_| rng::standard_normal(&mut g)).collect();
        let norm = solutions::dot(&z, &z).sqrt();
        z.iter().map(|x| self.signal * x / norm).collect()
    }

    /// The diagonal of Σ: the explicit one, or log-uniform over the variability's range.
    pub fn variance_vector(&self) -> Vec<f64> {
        if let Some(v) = &self.variances {
            return v.clone();
        }
        let [a, b] = match self.variability {
            Variability::High => self.high_range,
            Variability::Low => self.low_range,
        };
        let (la, lb) = (a.ln(), b.ln());
        let mut g = rng::seeded(self.seed, STREAM_VARIANCES);
        (0..self.d)
            .map(|_| (la + rng::uniform01(&mut g) * (lb - la)).exp())
            .collect()
    }
}

/// Runs the Monte-Carlo simulation for `params`.
pub fn run_simulation(params: &SimulateParams) -> Result<SimulationResult, TheoryError> {
    params.validate()?;
    let r_star = params.true_reward_vector();
    let var = params.variance_vector();
    let sd: Vec<f64> = var.iter().map(|v| v.sqrt()).collect();
    let inv_var: Vec<f64> = var.iter().map(|v| 1.0 / v).collect();
    let lam_min = lambda_min(&var);
    let lam_max = var.iter().copied().fold(0.0, f64::max);
    let eps_prime = lam_min * params.epsilon;
    let (sqrt_eps, sqrt_eps_prime) = (params.epsilon.sqrt(), eps_prime.sqrt());
    let beta = beta_delta(params.d, params.delta);
    let m = params.draws;

    let mut ret_van = Vec::with_capacity(m);
    let mut ret_va = Vec::with_capacity(m);
    let (mut holds_van, mut holds_va, mut noise_ok) = (0usize, 0usize, 0usize);
    let mut g = rng::seeded(params.seed, STREAM_DRAWS);
    for _ in 0..m {
        // r̂ᵀr*, ‖r̂‖², r̂ᵀΣ⁻¹r*, r̂ᵀΣ⁻¹r̂, r̂ᵀΣr̂, ‖ξ‖².
        let (mut a, mut b, mut p, mut q, mut s, mut nn) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..params.d {
            let xi = rng::standard_normal(&mut g);
            let r = r_star[i] + sd[i] * xi;
            let rs = r * r_star[i];
            let rr = r * r;
            a += rs;
            b += rr;
            p += rs * inv_var[i];
            q += rr * inv_var[i];
            s += rr * var[i];
            nn += xi * xi;
        }
        ret_van.push(if b > 0.0 {
            sqrt_eps * a / b.sqrt()
        } else {
            0.0
        });
        ret_va.push(if q > 0.0 {
            sqrt_eps_prime * p / q.sqrt()
        } else {
            0.0
        });
        holds_van += usize::from(a >= b - beta * s.sqrt());
        holds_va += usize::from(p >= q - beta * q.sqrt());
        noise_ok += usize::from(nn.sqrt() <= beta);
    }

    let lo = ret_van
        .iter()
        .chain(&ret_va)
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = ret_van
        .iter()
        .chain(&ret_va)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let edges = summary::histogram_edges(lo, hi, params.bins);
    let frac = |k: usize| k as f64 / m as f64;
    let stats = |returns: Vec<f64>, closed_form: f64, holds: usize| {
        let mc = frac(returns.iter().filter(|x| **x <= 0.0).count());
        let se = (closed_form * (1.0 - closed_form) / m as f64).sqrt();
        MethodStats {
            summary: Summary::of(&returns),
            histogram: summary::histogram(&returns, &edges),
            underperformance: Underperformance {
                monte_carlo: mc,
                standard_error: se,
                closed_form,
                z_score: if se > 0.0 {
                    (mc - closed_form) / se
                } else {
                    0.0
                },
            },
            bound_holds: frac(holds),
            returns: params.keep_returns.then_some(returns),
        }
    };
    let vanilla = stats(
        ret_van,
        solutions::p_underperform_vanilla(&r_star, &var),
        holds_van,
    );
    let variance_aware = stats(
        ret_va,
        solutions::p_underperform_variance_aware(&r_star, &var),
        holds_va,
    );
    Ok(SimulationResult {
        d: params.d,
        draws: m,
        seed: params.seed,
        variability: params.variability,
        custom_variances: params.variances.is_some(),
        true_reward_norm: solutions::dot(&r_star, &r_star).sqrt(),
        lambda_min: lam_min,
        lambda_max: lam_max,
        epsilon: params.epsilon,
        epsilon_prime: eps_prime,
        delta: params.delta,
        beta_delta: beta,
        noise_within_beta: frac(noise_ok),
        histogram_edges: edges.clone(),
        vanilla,
        variance_aware,
    })
}
