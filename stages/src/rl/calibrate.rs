//! Choosing β for a KL target (docs/algorithms.md §5a).
//!
//! The paper compares vanilla and variance-aware PPO at about the same final KL from the
//! reference policy (App. 8), with β tuned by hand. Here β is found by measurement: short
//! PPO *probes* at a few β values, each probe's final KL (the mean of its last tenth of
//! steps, [`final_mean`], the same rule the `ppo` kind reports), then
//!
//! 1. the mean final KL at each β, made non-increasing in β by isotonic regression
//!    ([`isotonic_non_increasing`], pool-adjacent-violators weighted by the probes behind each
//!    mean): a larger β penalises the KL more, so the final KL falls with β, and probe noise
//!    must not make the fit turn back;
//! 2. the two probed β values whose fitted KLs bracket the target, and between them linear
//!    interpolation of `ln KL` against `ln β` (a power law `KL ∝ β^−a` is a straight line
//!    there); where a bracketing KL is not positive, linear interpolation of `KL` against
//!    `ln β` instead;
//! 3. a target outside every fitted KL: the grid is widened by [`Calibration::next_beta`]
//!    (β halved below the smallest, doubled above the largest) a few times, then the target is
//!    refused with the probes' range in the message.
//!
//! 4. optionally, a *check* of the chosen β on the very runs it is for: probes with the
//!    sweep's own (member, seed) pairs at that β. PPO from a seed is deterministic, so the
//!    check's mean final KL is the sweep's. When it misses the target by more than a
//!    tolerance, the next β comes from [`refine`] (a secant step in `ln β`–`ln KL` through the
//!    checks, or the grid fit's local slope before there are two), and the check repeats, a
//!    bounded number of times; the β whose check came closest is the answer ([`best_check`]).
//!
//! Why the check: a run's final KL is heavy-tailed across seeds (at one β, eight runs ended
//! between 0.9× and 2.2× their median), so a few probes from other seeds place β only to
//! within tens of percent of where the sweep's own runs land. The check makes "the sweep
//! ends at the target KL" a measured fact instead of an estimate.
//!
//! This module is the arithmetic; running the probes is the `kl_calibrate` kind's.

use serde::{Deserialize, Serialize};

/// The mean of the last tenth of `values` (at least one value): a run's "final" KL or
/// score. `NaN` for no values.
pub fn final_mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let tail = &values[values.len() - (values.len() / 10).max(1)..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

/// One probe: PPO at `beta` from `seed` against ensemble `member`, and where it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub beta: f64,
    pub seed: u64,
    pub member: usize,
    /// [`final_mean`] of the probe's per-step KL.
    pub final_kl: f64,
    /// [`final_mean`] of the probe's per-step score.
    pub final_score: f64,
}

/// The fit at one probed β.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitPoint {
    pub beta: f64,
    /// Probes at this β.
    pub probes: usize,
    /// Mean final KL of those probes.
    pub mean_kl: f64,
    /// The isotonic (non-increasing in β) fit at this β.
    pub fitted_kl: f64,
}

/// What the fit says about the target.
#[derive(Debug, Clone, PartialEq)]
pub enum Calibration {
    /// The fitted KLs bracket the target: β interpolated, and the two bracketing points.
    Found { beta: f64, between: (f64, f64) },
    /// Every fitted KL is above the target: a larger β is needed.
    NeedLarger,
    /// Every fitted KL is below the target: a smaller β is needed.
    NeedSmaller,
}

impl Calibration {
    /// The β to probe next when the target is outside the fit (`None` once found): double
    /// the largest or halve the smallest probed β.
    pub fn next_beta(&self, fit: &[FitPoint]) -> Option<f64> {
        let (lo, hi) = (fit.first()?.beta, fit.last()?.beta);
        match self {
            Calibration::Found { .. } => None,
            Calibration::NeedLarger => Some(hi * 2.0),
            Calibration::NeedSmaller => Some(lo / 2.0),
        }
    }
}

/// One check: the mean final KL of the sweep's own runs at `beta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub beta: f64,
    /// Runs averaged (the sweep's (member, seed) pairs with a finite final KL).
    pub runs: usize,
    pub mean_kl: f64,
}

impl Check {
    /// How far the check is from `target`, as `|ln(mean_kl / target)|` (∞ when not positive).
    pub fn miss(&self, target: f64) -> f64 {
        if self.mean_kl > 0.0 && target > 0.0 && self.mean_kl.is_finite() {
            (self.mean_kl / target).ln().abs()
        } else {
            f64::INFINITY
        }
    }

    /// Whether the check is within `tolerance` of `target` (`|mean/target − 1| ≤ tolerance`).
    pub fn hits(&self, target: f64, tolerance: f64) -> bool {
        self.mean_kl.is_finite() && (self.mean_kl / target - 1.0).abs() <= tolerance
    }
}

/// The check closest to `target` (in log ratio); `None` for no checks.
pub fn best_check(checks: &[Check], target: f64) -> Option<&Check> {
    checks
        .iter()
        .min_by(|a, b| a.miss(target).total_cmp(&b.miss(target)))
}

/// The largest factor one refinement moves β by: a noisy check must not throw β far off.
pub const MAX_REFINE_FACTOR: f64 = 4.0;

/// The next β to check after `checks` (at least one) missed `target`.
///
/// With two checks or more: the secant in `ln β` against `ln KL` through the check closest
/// to the target and the closest one on the other side of it (or, with none on the other
/// side, the next closest), when its slope is negative (KL falling with β). Otherwise the
/// slope of the grid `fit` around the last check's β, and failing that, −1 (KL ∝ 1/β). The
/// step is bounded to a factor of [`MAX_REFINE_FACTOR`] either way. `None` when no check has
/// a positive finite KL.
pub fn refine(checks: &[Check], fit: &[FitPoint], target: f64) -> Option<f64> {
    let usable: Vec<&Check> = checks
        .iter()
        .filter(|c| c.miss(target).is_finite())
        .collect();
    let best = *usable
        .iter()
        .min_by(|a, b| a.miss(target).total_cmp(&b.miss(target)))?;
    let side = |c: &Check| (c.mean_kl - target).signum();
    let partner = usable
        .iter()
        .filter(|c| c.beta != best.beta)
        .min_by(|a, b| {
            // Prefer the other side of the target, then the nearest.
            let ka = (side(a) == side(best), a.miss(target));
            let kb = (side(b) == side(best), b.miss(target));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        });
    let secant = partner.and_then(|p| {
        let s = (best.mean_kl.ln() - p.mean_kl.ln()) / (best.beta.ln() - p.beta.ln());
        (s.is_finite() && s < 0.0).then_some(s)
    });
    let slope = secant
        .or_else(|| local_slope(fit, best.beta))
        .unwrap_or(-1.0);
    let step = (target.ln() - best.mean_kl.ln()) / slope;
    let bound = MAX_REFINE_FACTOR.ln();
    Some((best.beta.ln() + step.clamp(-bound, bound)).exp())
}

/// The slope of `ln fitted KL` against `ln β` on the fit segment around `beta` (the nearest
/// segment beyond the fit's ends); `None` where it is not negative and finite.
fn local_slope(fit: &[FitPoint], beta: f64) -> Option<f64> {
    let pairs: Vec<&[FitPoint]> = fit.windows(2).collect();
    let seg = pairs
        .iter()
        .find(|w| w[0].beta <= beta && beta <= w[1].beta)
        .or_else(|| {
            if fit.first().is_some_and(|f| beta < f.beta) {
                pairs.first()
            } else {
                pairs.last()
            }
        })?;
    let (a, b) = (&seg[0], &seg[1]);
    let s = (b.fitted_kl.ln() - a.fitted_kl.ln()) / (b.beta.ln() - a.beta.ln());
    (s.is_finite() && s < 0.0).then_some(s)
}

/// Weighted pool-adjacent-violators: the non-increasing sequence closest to `y` in weighted
/// least squares (each output is the weighted mean of a run of consecutive inputs).
pub fn isotonic_non_increasing(y: &[f64], w: &[f64]) -> Vec<f64> {
    assert_eq!(y.len(), w.len(), "one weight per value");
    // Blocks of (weighted mean, weight, length), kept non-increasing left to right.
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(y.len());
    for (&v, &wt) in y.iter().zip(w) {
        blocks.push((v, wt, 1));
        while blocks.len() > 1 {
            let (m2, w2, n2) = blocks[blocks.len() - 1];
            let (m1, w1, n1) = blocks[blocks.len() - 2];
            if m1 >= m2 {
                break;
            }
            blocks.truncate(blocks.len() - 2);
            blocks.push(((m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2));
        }
    }
    blocks
        .into_iter()
        .flat_map(|(m, _, n)| std::iter::repeat_n(m, n))
        .collect()
}

/// Groups `probes` by β (ascending) and fits their mean final KLs, non-increasing in β.
/// Probes with a non-finite final KL are left out (a diverged probe says nothing about
/// where β lands).
pub fn fit(probes: &[Probe]) -> Vec<FitPoint> {
    let mut betas: Vec<f64> = probes
        .iter()
        .filter(|p| p.final_kl.is_finite())
        .map(|p| p.beta)
        .collect();
    betas.sort_by(f64::total_cmp);
    betas.dedup();
    let mut points: Vec<FitPoint> = betas
        .into_iter()
        .map(|beta| {
            let kls: Vec<f64> = probes
                .iter()
                .filter(|p| p.beta == beta && p.final_kl.is_finite())
                .map(|p| p.final_kl)
                .collect();
            FitPoint {
                beta,
                probes: kls.len(),
                mean_kl: kls.iter().sum::<f64>() / kls.len() as f64,
                fitted_kl: f64::NAN,
            }
        })
        .collect();
    let y: Vec<f64> = points.iter().map(|p| p.mean_kl).collect();
    let w: Vec<f64> = points.iter().map(|p| p.probes as f64).collect();
    for (p, f) in points.iter_mut().zip(isotonic_non_increasing(&y, &w)) {
        p.fitted_kl = f;
    }
    points
}

/// Where `target` falls on the fit (`fit` as [`fit`] returns it, at least one point).
pub fn locate(fit: &[FitPoint], target: f64) -> Calibration {
    let (Some(first), Some(last)) = (fit.first(), fit.last()) else {
        return Calibration::NeedLarger;
    };
    if target > first.fitted_kl {
        return Calibration::NeedSmaller;
    }
    if target < last.fitted_kl {
        return Calibration::NeedLarger;
    }
    for pair in fit.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.fitted_kl >= target && target >= b.fitted_kl {
            return Calibration::Found {
                beta: interpolate(a, b, target),
                between: (a.beta, b.beta),
            };
        }
    }
    // One point whose fitted KL is exactly the target.
    Calibration::Found {
        beta: first.beta,
        between: (first.beta, first.beta),
    }
}

/// β between two fit points where the fitted KL would be `target`.
fn interpolate(a: &FitPoint, b: &FitPoint, target: f64) -> f64 {
    let (xa, xb) = (a.beta.ln(), b.beta.ln());
    if a.fitted_kl == b.fitted_kl {
        // A flat stretch (pooled by the fit) at the target: its geometric middle.
        return ((xa + xb) / 2.0).exp();
    }
    let t = if a.fitted_kl > 0.0 && b.fitted_kl > 0.0 && target > 0.0 {
        (a.fitted_kl.ln() - target.ln()) / (a.fitted_kl.ln() - b.fitted_kl.ln())
    } else {
        (a.fitted_kl - target) / (a.fitted_kl - b.fitted_kl)
    };
    (xa + t * (xb - xa)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(beta: f64, final_kl: f64) -> Probe {
        Probe {
            beta,
            seed: 0,
            member: 0,
            final_kl,
            final_score: 0.0,
        }
    }

    #[test]
    fn final_mean_is_the_last_tenth() {
        assert!(final_mean(&[]).is_nan());
        assert_eq!(final_mean(&[3.0]), 3.0);
        // 9 values: the last one; 20 values: the last two.
        assert_eq!(
            final_mean(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
            9.0
        );
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(final_mean(&v), 19.5);
    }

    #[test]
    fn pava_pools_violators_by_weight() {
        // Already non-increasing: unchanged.
        assert_eq!(
            isotonic_non_increasing(&[5.0, 3.0, 3.0, 1.0], &[1.0; 4]),
            vec![5.0, 3.0, 3.0, 1.0]
        );
        // 2 < 4 violates: pooled to 3 (equal weights).
        assert_eq!(
            isotonic_non_increasing(&[5.0, 2.0, 4.0, 1.0], &[1.0; 4]),
            vec![5.0, 3.0, 3.0, 1.0]
        );
        // Weights 1 and 3: (2·1 + 4·3)/4 = 3.5.
        assert_eq!(
            isotonic_non_increasing(&[5.0, 2.0, 4.0, 1.0], &[1.0, 1.0, 3.0, 1.0]),
            vec![5.0, 3.5, 3.5, 1.0]
        );
        // A cascade: 1, 2, 3 increasing pools to their mean 2 everywhere.
        assert_eq!(
            isotonic_non_increasing(&[1.0, 2.0, 3.0], &[1.0; 3]),
            vec![2.0, 2.0, 2.0]
        );
        assert!(isotonic_non_increasing(&[], &[]).is_empty());
    }

    #[test]
    fn a_power_law_is_inverted_exactly() {
        // KL = 2/β: the log-log line through any two probes gives β = 2/target.
        let probes: Vec<Probe> = [0.1, 0.2, 0.4, 0.8]
            .iter()
            .map(|&b| probe(b, 2.0 / b))
            .collect();
        let f = fit(&probes);
        for target in [20.0, 13.0, 5.0, 2.5] {
            match locate(&f, target) {
                Calibration::Found { beta, .. } => {
                    assert!((beta - 2.0 / target).abs() < 1e-12, "{target}: {beta}")
                }
                other => panic!("{target}: {other:?}"),
            }
        }
        assert_eq!(locate(&f, 21.0), Calibration::NeedSmaller);
        assert_eq!(locate(&f, 2.4), Calibration::NeedLarger);
        assert_eq!(Calibration::NeedSmaller.next_beta(&f), Some(0.05));
        assert_eq!(Calibration::NeedLarger.next_beta(&f), Some(1.6));
    }

    #[test]
    fn probes_at_one_beta_are_averaged_and_noise_is_made_monotone() {
        let probes = vec![
            probe(0.1, 10.0),
            probe(0.1, 12.0),
            probe(0.2, 8.0),
            // Noise: a larger β with a larger KL; pooled with 0.2's mean (weights 2 and 1).
            probe(0.4, 9.5),
            probe(0.4, 9.5),
            probe(0.8, f64::NAN),
        ];
        let f = fit(&probes);
        assert_eq!(f.len(), 3, "the NaN probe is left out: {f:?}");
        assert_eq!((f[0].probes, f[0].mean_kl, f[0].fitted_kl), (2, 11.0, 11.0));
        let pooled = (8.0 + 9.5 * 2.0) / 3.0;
        assert_eq!(f[1].fitted_kl, pooled);
        assert_eq!(f[2].fitted_kl, pooled);
        // The target on the flat stretch: its geometric middle.
        match locate(&f, pooled) {
            Calibration::Found { beta, between } => {
                // First bracketing pair is (0.1, 0.2): log-log from 11 down to `pooled`.
                assert_eq!(between, (0.1, 0.2));
                assert!((beta - 0.2).abs() < 1e-12, "{beta}");
            }
            other => panic!("{other:?}"),
        }
        let flat = [
            FitPoint {
                beta: 0.1,
                probes: 1,
                mean_kl: 4.0,
                fitted_kl: 4.0,
            },
            FitPoint {
                beta: 0.4,
                probes: 1,
                mean_kl: 4.0,
                fitted_kl: 4.0,
            },
        ];
        match locate(&flat, 4.0) {
            Calibration::Found { beta, .. } => assert!((beta - 0.2).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
    }

    fn check(beta: f64, mean_kl: f64) -> Check {
        Check {
            beta,
            runs: 8,
            mean_kl,
        }
    }

    #[test]
    fn checks_hit_and_miss_by_ratio() {
        assert!(check(0.1, 10.9).hits(10.0, 0.1));
        assert!(check(0.1, 9.1).hits(10.0, 0.1));
        assert!(!check(0.1, 11.2).hits(10.0, 0.1));
        assert!(!check(0.1, f64::NAN).hits(10.0, 0.1));
        assert_eq!(check(0.1, -1.0).miss(10.0), f64::INFINITY);
        // 8 is closer than 12.6 in log ratio (ln 1.25 < ln 1.26).
        let checks = [check(0.1, 12.6), check(0.2, 8.0), check(0.3, f64::NAN)];
        assert_eq!(best_check(&checks, 10.0).unwrap().beta, 0.2);
        assert!(best_check(&[], 10.0).is_none());
    }

    #[test]
    fn refine_steps_along_the_power_law() {
        // The grid says KL = 2/β (slope −1); a check at 0.1 found 40 instead of the grid's
        // 20: the first step uses the grid's slope, β × 4 for a target of 10 → 0.4.
        let f = fit(&[probe(0.1, 20.0), probe(0.2, 10.0), probe(0.4, 5.0)]);
        let next = refine(&[check(0.1, 40.0)], &f, 10.0).unwrap();
        assert!((next - 0.4).abs() < 1e-12, "{next}");
        // Two checks on a power law KL = 4/β²: the secant is exact.
        let law = |b: f64| 4.0 / (b * b);
        let next = refine(&[check(0.5, law(0.5)), check(0.8, law(0.8))], &f, 10.0).unwrap();
        assert!((next - (0.4f64).sqrt()).abs() < 1e-12, "{next}");
        // The partner is taken from the other side of the target when there is one.
        let checks = [check(0.5, 12.0), check(0.6, 11.0), check(0.9, 8.0)];
        let s = (11.0f64.ln() - 8.0f64.ln()) / (0.6f64.ln() - 0.9f64.ln());
        let want = (0.6f64.ln() + (10.0f64.ln() - 11.0f64.ln()) / s).exp();
        let next = refine(&checks, &f, 10.0).unwrap();
        assert!((next - want).abs() < 1e-12, "{next} vs {want}");
    }

    #[test]
    fn refine_is_bounded_and_survives_noise() {
        let f = fit(&[probe(0.1, 20.0), probe(0.2, 10.0)]);
        // A check 1000× off: at most a factor of 4.
        let next = refine(&[check(0.1, 10_000.0)], &f, 10.0).unwrap();
        assert!((next - 0.4).abs() < 1e-12, "{next}");
        // Two checks with KL rising in β (noise): no secant; the grid's slope instead.
        let next = refine(&[check(0.1, 12.0), check(0.2, 14.0)], &f, 10.0).unwrap();
        let want = (0.1f64.ln() + (10.0f64.ln() - 12.0f64.ln()) / -1.0).exp();
        assert!((next - want).abs() < 1e-12, "{next}");
        // A flat grid and one check: slope −1.
        let flat = fit(&[probe(0.1, 5.0), probe(0.2, 5.0)]);
        let next = refine(&[check(0.1, 20.0)], &flat, 10.0).unwrap();
        assert!((next - 0.2).abs() < 1e-12, "{next}");
        // Nothing usable.
        assert_eq!(refine(&[check(0.1, f64::NAN)], &f, 10.0), None);
        assert_eq!(refine(&[], &f, 10.0), None);
    }

    #[test]
    fn a_non_positive_kl_interpolates_linearly_in_log_beta() {
        let f = fit(&[probe(0.1, 1.0), probe(1.0, -1.0)]);
        match locate(&f, 0.0) {
            // Halfway in KL: halfway in ln β, √(0.1·1).
            Calibration::Found { beta, .. } => assert!((beta - 0.1f64.sqrt()).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
    }
}
