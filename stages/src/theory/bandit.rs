//! Figure 2: a multi-armed bandit with noisy reward estimates, solved by the vanilla
//! KL-regularised policy and by a variance-aware one.
//!
//! Vanilla (paper Eq. 1 on a bandit): `max_π πᵀr̂ - β·KL(π‖π0)`, solved by
//! `π ∝ π0·exp(r̂/β)`.
//!
//! Variance-aware, two forms ([`VarianceAwareForm`]):
//! - `sharpe` (default): `π ∝ π0·exp(r̂/(β·σ²))`, the paper's Theorem 3.6 — the KL-regularised
//!   optimum (Rafailov et al. App. A.1 technique) for the reward-to-variability ratio `r̂/σ²`,
//!   the bandit analogue of the Sharpe direction `Σ⁻¹r̂` of Definition 3.2. Like the Sharpe
//!   ratio it is measured against 0 (the reference's zero policy change), so adding a
//!   constant to all estimates changes it.
//! - `weighted_kl`: the exact maximiser of `πᵀr̂ - β·Σᵢ σᵢ²·πᵢ·ln(πᵢ/π0ᵢ)`, the objective whose
//!   per-sample form `β·σ²·kl` the paper's variance-aware PPO uses (§5, docs/algorithms.md §5).
//!   Stationarity `r̂ᵢ - βσᵢ²(ln(πᵢ/π0ᵢ) + 1) = λ` gives `πᵢ = π0ᵢ·exp((r̂ᵢ - λ)/(βσᵢ²) - 1)`;
//!   λ (the multiplier of `Σπ = 1`) is found by bisection. It is shift-invariant, but note what
//!   it does on Figure 2's arms: a low-variance arm is cheap to move in *both* directions, so
//!   mass leaves the reliable arms for the noisy high-estimate one when β is small (a test
//!   below pins this); the risk aversion of the paper's story comes from the `sharpe` form.
//!
//! β of the variance-aware policy: given, or (default) chosen so that `KL(π‖π0)` equals the
//! vanilla policy's, the paper's fair-comparison rule (App. 8). With all variances equal to
//! `c`, both forms equal the vanilla policy with `β·c`, and KL matching finds exactly that.

use serde::{Deserialize, Serialize};

use super::TheoryError;

/// Which variance-aware policy to compute (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VarianceAwareForm {
    /// `π ∝ π0·exp(r̂/(β·σ²))` (paper Theorem 3.6, Sharpe-ratio reward).
    #[default]
    Sharpe,
    /// Exact maximiser of `πᵀr̂ - β·Σᵢ σᵢ²·πᵢ·ln(πᵢ/π0ᵢ)` (variance-weighted KL of paper §5).
    WeightedKl,
}

/// Params of the `bandit` stage (Figure 2). Defaults reproduce the paper's story: arm 1
/// looks best but is worst and very uncertain; arms 2 and 3 are better and well estimated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BanditParams {
    /// True (unknown to the policies) expected reward of each arm, `r*`.
    pub true_rewards: Vec<f64>,
    /// Estimated reward of each arm, `r̂` (what both policies optimise).
    pub estimated_rewards: Vec<f64>,
    /// Variance `σ²` of each arm's estimate (all > 0).
    pub variances: Vec<f64>,
    /// Reference policy `π0` (positive, summing to 1); `None` means uniform.
    pub reference: Option<Vec<f64>>,
    /// KL coefficient β of the vanilla policy (> 0).
    pub beta: f64,
    /// KL coefficient of the variance-aware policy; `None` chooses it so that both policies
    /// have the same `KL(π‖π0)` (paper App. 8).
    pub beta_variance_aware: Option<f64>,
    /// Which variance-aware policy to compute.
    pub variance_aware_form: VarianceAwareForm,
    /// Half-width of the plotted uncertainty intervals, in standard deviations (`r̂ ± z·σ`).
    pub interval_z: f64,
}

impl Default for BanditParams {
    fn default() -> Self {
        BanditParams {
            true_rewards: vec![0.2, 0.7, 0.8],
            estimated_rewards: vec![1.0, 0.6, 0.55],
            variances: vec![0.36, 0.04, 0.04],
            reference: None,
            beta: 0.5,
            beta_variance_aware: None,
            variance_aware_form: VarianceAwareForm::Sharpe,
            interval_z: 1.96,
        }
    }
}

/// Expected reward of a policy under the true and under the estimated rewards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolicyReturn {
    /// `πᵀr*`, what the policy really earns.
    pub true_return: f64,
    /// `πᵀr̂`, what the policy believes it earns.
    pub estimated_return: f64,
    /// `KL(π‖π0)` in nats.
    pub kl_to_reference: f64,
}

/// Output of the `bandit` stage; carries everything Figure 2 draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanditResult {
    /// `r*` per arm (copied from the params).
    pub true_rewards: Vec<f64>,
    /// `r̂` per arm (copied from the params).
    pub estimated_rewards: Vec<f64>,
    /// `σ` per arm.
    pub std_devs: Vec<f64>,
    /// Half-width of the uncertainty intervals in standard deviations.
    pub interval_z: f64,
    /// β used by the vanilla policy.
    pub beta: f64,
    /// β used by the variance-aware policy (given or KL-matched).
    pub beta_variance_aware: f64,
    /// Whether `beta_variance_aware` was chosen by matching `KL(π‖π0)` to the vanilla policy's.
    pub kl_matched: bool,
    /// The variance-aware form used.
    pub variance_aware_form: VarianceAwareForm,
    /// `π0` per arm.
    pub reference_policy: Vec<f64>,
    /// `π ∝ π0·exp(r̂/β)` per arm.
    pub vanilla_policy: Vec<f64>,
    /// The variance-aware policy per arm.
    pub variance_aware_policy: Vec<f64>,
    /// Returns of `π0`.
    pub reference: PolicyReturn,
    /// Returns of the vanilla policy.
    pub vanilla: PolicyReturn,
    /// Returns of the variance-aware policy.
    pub variance_aware: PolicyReturn,
}

impl BanditParams {
    /// Checks lengths, positivity and that `π0` is a distribution.
    pub fn validate(&self) -> Result<(), TheoryError> {
        let n = self.true_rewards.len();
        if n == 0 {
            return Err(TheoryError::param("true_rewards", "needs at least one arm"));
        }
        for (field, len) in [
            ("estimated_rewards", self.estimated_rewards.len()),
            ("variances", self.variances.len()),
        ] {
            if len != n {
                return Err(TheoryError::param(
                    field,
                    format!("has {len} entries but `true_rewards` has {n}"),
                ));
            }
        }
        for (name, xs) in [
            ("true_rewards", &self.true_rewards),
            ("estimated_rewards", &self.estimated_rewards),
        ] {
            if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
                return Err(TheoryError::param(format!("{name}[{i}]"), "must be finite"));
            }
        }
        if let Some(i) = self
            .variances
            .iter()
            .position(|v| !(v.is_finite() && *v > 0.0))
        {
            return Err(TheoryError::param(
                format!("variances[{i}]"),
                format!("must be finite and > 0, got {}", self.variances[i]),
            ));
        }
        if let Some(p0) = &self.reference {
            if p0.len() != n {
                return Err(TheoryError::param(
                    "reference",
                    format!("has {} entries but there are {n} arms", p0.len()),
                ));
            }
            if let Some(i) = p0.iter().position(|p| !(p.is_finite() && *p > 0.0)) {
                return Err(TheoryError::param(
                    format!("reference[{i}]"),
                    "must be > 0 (the policies are supported where π0 is)",
                ));
            }
            let sum: f64 = p0.iter().sum();
            if (sum - 1.0).abs() > 1e-9 {
                return Err(TheoryError::param(
                    "reference",
                    format!("must sum to 1, sums to {sum}"),
                ));
            }
        }
        for (field, b) in [
            ("beta", Some(self.beta)),
            ("beta_variance_aware", self.beta_variance_aware),
        ] {
            if let Some(b) = b {
                if !(b.is_finite() && b > 0.0) {
                    return Err(TheoryError::param(field, format!("must be > 0, got {b}")));
                }
            }
        }
        if !(self.interval_z.is_finite() && self.interval_z >= 0.0) {
            return Err(TheoryError::param("interval_z", "must be finite and ≥ 0"));
        }
        Ok(())
    }
}

/// Solves both policies for `params` and evaluates their returns.
pub fn run_bandit(params: &BanditParams) -> Result<BanditResult, TheoryError> {
    params.validate()?;
    let n = params.true_rewards.len();
    let reference = params
        .reference
        .clone()
        .unwrap_or_else(|| vec![1.0 / n as f64; n]);
    let vanilla = vanilla_policy(&reference, &params.estimated_rewards, params.beta);
    let aware = |beta: f64| match params.variance_aware_form {
        VarianceAwareForm::Sharpe => sharpe_policy(
            &reference,
            &params.estimated_rewards,
            &params.variances,
            beta,
        ),
        VarianceAwareForm::WeightedKl => weighted_kl_policy(
            &reference,
            &params.estimated_rewards,
            &params.variances,
            beta,
        ),
    };
    let beta_va = match params.beta_variance_aware {
        Some(b) => b,
        None => match_kl(kl(&vanilla, &reference), &reference, &aware)?,
    };
    let variance_aware = aware(beta_va);
    let evaluate = |pi: &[f64]| PolicyReturn {
        true_return: super::solutions::dot(pi, &params.true_rewards),
        estimated_return: super::solutions::dot(pi, &params.estimated_rewards),
        kl_to_reference: kl(pi, &reference),
    };
    Ok(BanditResult {
        true_rewards: params.true_rewards.clone(),
        estimated_rewards: params.estimated_rewards.clone(),
        std_devs: params.variances.iter().map(|v| v.sqrt()).collect(),
        interval_z: params.interval_z,
        beta: params.beta,
        beta_variance_aware: beta_va,
        kl_matched: params.beta_variance_aware.is_none(),
        variance_aware_form: params.variance_aware_form,
        reference: evaluate(&reference),
        vanilla: evaluate(&vanilla),
        variance_aware: evaluate(&variance_aware),
        reference_policy: reference,
        vanilla_policy: vanilla,
        variance_aware_policy: variance_aware,
    })
}

/// `π ∝ π0·exp(r̂/β)`, computed with the log-sum-exp shift.
pub fn vanilla_policy(reference: &[f64], estimated: &[f64], beta: f64) -> Vec<f64> {
    let logits: Vec<f64> = reference
        .iter()
        .zip(estimated)
        .map(|(p, r)| p.ln() + r / beta)
        .collect();
    softmax(&logits)
}

/// The β at which `policy(β)` has `KL(policy(β)‖π0) = target`, by bisection on `ln β`
/// over `[1e-12, 1e12]` (the KL falls from a vertex's to 0 as β grows).
pub fn match_kl(
    target: f64,
    reference: &[f64],
    policy: &dyn Fn(f64) -> Vec<f64>,
) -> Result<f64, TheoryError> {
    let excess = |ln_beta: f64| kl(&policy(ln_beta.exp()), reference) - target;
    let (mut lo, mut hi) = (1e-12f64.ln(), 1e12f64.ln());
    if !(target > 0.0 && excess(lo) > 0.0 && excess(hi) < 0.0) {
        return Err(TheoryError::param(
            "beta_variance_aware",
            format!(
                "cannot be matched to the vanilla policy's KL(π‖π0) = {target:.3e}; give it explicitly"
            ),
        ));
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if excess(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    Ok((0.5 * (lo + hi)).exp())
}

/// `π ∝ π0·exp(r̂/(β·σ²))` ([`VarianceAwareForm::Sharpe`]).
pub fn sharpe_policy(
    reference: &[f64],
    estimated: &[f64],
    variances: &[f64],
    beta: f64,
) -> Vec<f64> {
    let logits: Vec<f64> = reference
        .iter()
        .zip(estimated)
        .zip(variances)
        .map(|((p, r), v)| p.ln() + r / (beta * v))
        .collect();
    softmax(&logits)
}

/// The maximiser of `πᵀr̂ - β·Σᵢ σᵢ²·πᵢ·ln(πᵢ/π0ᵢ)` on the simplex
/// ([`VarianceAwareForm::WeightedKl`]): `πᵢ = π0ᵢ·exp((r̂ᵢ - λ)/(βσᵢ²) - 1)` with λ by bisection.
pub fn weighted_kl_policy(
    reference: &[f64],
    estimated: &[f64],
    variances: &[f64],
    beta: f64,
) -> Vec<f64> {
    let n = reference.len() as f64;
    let temps: Vec<f64> = variances.iter().map(|v| beta * v).collect();
    let log_pi = |lambda: f64| -> Vec<f64> {
        reference
            .iter()
            .zip(estimated)
            .zip(&temps)
            .map(|((p, r), t)| p.ln() + (r - lambda) / t - 1.0)
            .collect()
    };
    // At `lo` some arm alone has πᵢ ≥ 1; at `hi` every arm has πᵢ ≤ 1/n.
    let mut lo = f64::NEG_INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for ((p, r), t) in reference.iter().zip(estimated).zip(&temps) {
        lo = lo.max(r - t * (1.0 - p.ln()));
        hi = hi.max(r - t * (1.0 - (n * p).ln()));
    }
    let log_sum = |lambda: f64| log_sum_exp(&log_pi(lambda));
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if log_sum(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // Remove the last rounding-level mismatch of Σπ = 1.
    softmax(&log_pi(0.5 * (lo + hi)))
}

/// `KL(p‖q)` in nats.
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(pi, _)| **pi > 0.0)
        .map(|(pi, qi)| pi * (pi / qi).ln())
        .sum()
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|x| (x - lse).exp()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_arms_tell_the_papers_story() {
        let res = run_bandit(&BanditParams::default()).unwrap();
        // Vanilla chases arm 1 (highest estimate) and earns less than π0 really.
        let argmax = |p: &[f64]| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(argmax(&res.vanilla_policy), 0);
        assert_ne!(argmax(&res.variance_aware_policy), 0);
        assert!(res.variance_aware.true_return > res.vanilla.true_return);
        assert!(res.variance_aware.true_return > res.reference.true_return);
        assert!(res.vanilla.true_return < res.reference.true_return);
        assert!(res.vanilla.estimated_return > res.variance_aware.estimated_return);
        // Fair comparison: same distance from π0.
        assert!(res.kl_matched);
        assert!((res.vanilla.kl_to_reference - res.variance_aware.kl_to_reference).abs() < 1e-9);
        for pi in [&res.vanilla_policy, &res.variance_aware_policy] {
            assert!((pi.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    /// On the default arms with a small β, the weighted-KL optimum moves mass *to* the
    /// noisy arm 1 (reliable arms are cheap to empty): documented in the module docs.
    #[test]
    fn weighted_kl_with_small_beta_chases_the_noisy_arm() {
        let params = BanditParams {
            beta_variance_aware: Some(0.25),
            variance_aware_form: VarianceAwareForm::WeightedKl,
            ..BanditParams::default()
        };
        let res = run_bandit(&params).unwrap();
        assert!(
            res.variance_aware_policy[0] > 0.9,
            "{:?}",
            res.variance_aware_policy
        );
        assert!(res.variance_aware.true_return < res.vanilla.true_return);
    }

    #[test]
    fn weighted_kl_solution_satisfies_stationarity() {
        let p0 = [0.5, 0.3, 0.2];
        let r = [0.3, -1.0, 2.0];
        let var = [0.5, 2.0, 4.0];
        let beta = 0.7;
        let pi = weighted_kl_policy(&p0, &r, &var, beta);
        // r̂ᵢ - βσᵢ²(ln(πᵢ/π0ᵢ) + 1) is the same λ for every arm.
        let lambdas: Vec<f64> = (0..3)
            .map(|i| r[i] - beta * var[i] * ((pi[i] / p0[i]).ln() + 1.0))
            .collect();
        for l in &lambdas {
            assert!((l - lambdas[0]).abs() < 1e-10, "{lambdas:?}");
        }
        assert!((pi.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }

    #[test]
    fn weighted_kl_is_shift_invariant_and_sharpe_is_not() {
        let p0 = [1.0 / 3.0; 3];
        let r = [1.0, 0.6, 0.55];
        let shifted: Vec<f64> = r.iter().map(|x| x + 1.0).collect();
        let var = [1.0, 0.5, 0.25];
        let a = weighted_kl_policy(&p0, &r, &var, 1.0);
        let b = weighted_kl_policy(&p0, &shifted, &var, 1.0);
        for i in 0..3 {
            assert!((a[i] - b[i]).abs() < 1e-9, "{a:?} vs {b:?}");
        }
        let c = sharpe_policy(&p0, &r, &var, 1.0);
        let d = sharpe_policy(&p0, &shifted, &var, 1.0);
        assert!((c[0] - d[0]).abs() > 1e-3);
    }

    #[test]
    fn equal_variances_reduce_to_vanilla_with_scaled_beta() {
        let c = 0.3;
        for (form, beta_va) in [
            (VarianceAwareForm::Sharpe, Some(0.25)),
            (VarianceAwareForm::WeightedKl, Some(0.25)),
            (VarianceAwareForm::Sharpe, None),
            (VarianceAwareForm::WeightedKl, None),
        ] {
            let params = BanditParams {
                variances: vec![c; 3],
                reference: Some(vec![0.2, 0.5, 0.3]),
                beta: 0.25 * c,
                beta_variance_aware: beta_va,
                variance_aware_form: form,
                ..BanditParams::default()
            };
            let res = run_bandit(&params).unwrap();
            // β·c = vanilla β, whether given or found by KL matching.
            assert!(
                (res.beta_variance_aware - 0.25).abs() < 1e-8,
                "{}",
                res.beta_variance_aware
            );
            for i in 0..3 {
                assert!(
                    (res.vanilla_policy[i] - res.variance_aware_policy[i]).abs() < 1e-10,
                    "{form:?}: {:?} vs {:?}",
                    res.vanilla_policy,
                    res.variance_aware_policy
                );
            }
            assert!((res.vanilla.true_return - res.variance_aware.true_return).abs() < 1e-10);
        }
    }

    #[test]
    fn invalid_params_name_the_field() {
        let mut p = BanditParams::default();
        p.variances[1] = 0.0;
        let err = run_bandit(&p).unwrap_err().to_string();
        assert!(err.contains("`variances[1]`"), "{err}");
        let p = BanditParams {
            reference: Some(vec![0.5, 0.5, 0.5]),
            ..BanditParams::default()
        };
        let err = run_bandit(&p).unwrap_err().to_string();
        assert!(
            err.contains("`reference`") && err.contains("sum to 1"),
            "{err}"
        );
        let p: Result<BanditParams, _> = serde_json::from_str(r#"{"bta": 1.0}"#);
        assert!(p.is_err());
        let p: BanditParams = serde_json::from_str(r#"{"beta": 0.5}"#).unwrap();
        assert_eq!(p.true_rewards, BanditParams::default().true_rewards);
    }
}
