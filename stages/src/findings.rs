//! The paper's claims as measured findings: each claim the pipeline can measure, with the
//! measured value, its confidence interval and a verdict — supported, contradicted, or
//! inconclusive at this sample size (with how many policies per method would settle it).
//! The report kind renders [`Findings`] as its first table and writes it to `numbers.json`
//! under `findings` (the keys are documented in docs/algorithms.md, "Findings").
//!
//! The unit of evidence for the RLHF claims is a *policy* (one PPO run): the judge's mean
//! reward of each policy is one observation, and intervals resample policies. Everything is
//! seeded ([`Settings::seed`]), so the same results give the same numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rl::judge::JudgeResults;
use crate::rm::ensemble::EnsembleStats;
use crate::stats::infer::{
    bootstrap, bootstrap_two, brown_forsythe, mean, permutation_test, policies_to_settle, variance,
    wilson, z_two_sided, Interval, Test,
};
use crate::stats::quantile;
use crate::theory::simulate::SimulationResult;

/// How the findings are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Confidence level of every interval.
    pub level: f64,
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Relabellings of the permutation test.
    pub permutations: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Final KLs count as comparable when their ratio lies within `1 ± kl_tolerance`.
    pub kl_tolerance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            level: 0.95,
            resamples: crate::stats::infer::RESAMPLES,
            permutations: 20_000,
            seed: 0,
            kl_tolerance: 0.2,
        }
    }
}

/// What a claim's measurement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Supported,
    Contradicted,
    Inconclusive,
}

/// One claim of the paper and what the pipeline measured about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// A stable key (`judge_variance_lower`, …).
    pub id: String,
    /// The claim, in words, with where the paper makes it.
    pub claim: String,
    /// What was measured, in words.
    pub measured: String,
    /// The measured value and its interval (none where the claim is a count).
    pub interval: Option<Interval>,
    pub verdict: Verdict,
    /// For an inconclusive comparison: policies per method that would make the interval
    /// as narrow as the measured effect.
    pub policies_to_settle: Option<usize>,
}

/// One method's policies, judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodFindings {
    pub policies: usize,
    pub mean: Interval,
    pub variance: Interval,
    /// The 10% quantile of the policies' judge rewards.
    pub q10: Interval,
    /// The fraction of policies whose judge reward is at or below the reference policy's.
    pub share_at_or_below_reference: Interval,
    /// Final KL to the reference policy (mean over the method's PPO runs), when known.
    pub final_kl: Option<Interval>,
}

/// Two methods compared: `b − a` for each statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub mean_difference: Interval,
    pub variance_difference: Interval,
    pub q10_difference: Interval,
    /// Brown–Forsythe test of equal variances.
    pub brown_forsythe: Option<Test>,
    /// Permutation test of equal means.
    pub permutation_means: Option<Test>,
}

/// Everything the report states with intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    pub settings: Settings,
    pub claims: Vec<Claim>,
    pub methods: BTreeMap<String, MethodFindings>,
    pub comparisons: Vec<Comparison>,
}

/// The measured results a report holds (any of them may be missing).
#[derive(Default)]
pub struct Inputs<'a> {
    pub judge: Option<&'a JudgeResults>,
    /// Final KL of each PPO run (the mean of its last tenth of steps), by method.
    pub final_kl: BTreeMap<String, Vec<f64>>,
    pub heads: Option<&'a EnsembleStats>,
    pub simulations: Vec<(String, &'a SimulationResult)>,
}

/// Fewer policies (or runs) than this in a group give no interval worth a verdict: a
/// resample of one value is that value, and the variance of one value is 0.
pub const MIN_PER_GROUP: usize = 3;

/// A seed of its own for each group, from its name (adding a group changes no other
/// group's intervals).
fn group_seed(seed: u64, name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The method names the paper compares: `vanilla` is `a`, `variance_aware` is `b`.
const VANILLA: &str = "vanilla";
const VARIANCE_AWARE: &str = "variance_aware";

fn q10(xs: &[f64]) -> f64 {
    quantile(xs, 0.1)
}

/// The verdict of a claim "the value is above `bar`" from its interval.
fn above(i: &Interval, bar: f64) -> Verdict {
    if i.lo > bar {
        Verdict::Supported
    } else if i.hi < bar {
        Verdict::Contradicted
    } else {
        Verdict::Inconclusive
    }
}

fn flip(v: Verdict) -> Verdict {
    match v {
        Verdict::Supported => Verdict::Contradicted,
        Verdict::Contradicted => Verdict::Supported,
        Verdict::Inconclusive => Verdict::Inconclusive,
    }
}

/// Four significant digits.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    format!("{x:.digits$}")
}

pub fn findings(inputs: &Inputs, s: Settings) -> Findings {
    let mut out = Findings {
        settings: s,
        claims: Vec::new(),
        methods: BTreeMap::new(),
        comparisons: Vec::new(),
    };
    let pct = (s.level * 100.0).round();
    theory_claims(inputs, s, &mut out.claims);
    heads_claims(inputs, s, &mut out.claims);
    let Some(j) = inputs.judge else {
        kl_claim(inputs, s, &mut out.claims);
        return out;
    };
    let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in &j.policies {
        by.entry(p.group.clone()).or_default().push(p.mean_reward);
    }
    for (g, xs) in &by {
        let seed = group_seed(s.seed, g);
        let reference = j.reference;
        let at_or_below = move |v: &[f64]| {
            v.iter().filter(|&&x| x <= reference).count() as f64 / v.len().max(1) as f64
        };
        let m = MethodFindings {
            policies: xs.len(),
            mean: bootstrap(xs, mean, s.resamples, s.level, seed),
            variance: bootstrap(xs, variance, s.resamples, s.level, seed.wrapping_add(1)),
            q10: bootstrap(xs, q10, s.resamples, s.level, seed.wrapping_add(2)),
            share_at_or_below_reference: bootstrap(
                xs,
                at_or_below,
                s.resamples,
                s.level,
                seed.wrapping_add(3),
            ),
            final_kl: inputs
                .final_kl
                .get(g)
                .map(|k| bootstrap(k, mean, s.resamples, s.level, seed.wrapping_add(4))),
        };
        // Each method beats the reference: its mean judge reward is above the reference's.
        let diff = Interval {
            estimate: m.mean.estimate - reference,
            lo: m.mean.lo - reference,
            hi: m.mean.hi - reference,
            level: s.level,
        };
        out.claims.push(Claim {
            id: format!("{g}_beats_reference"),
            claim: format!("`{g}` policies improve on the reference policy (Figure 7)"),
            measured: format!(
                "mean judge reward of {} policies minus the reference's ({}), {pct}% bootstrap interval",
                xs.len(),
                sig(reference)
            ),
            interval: Some(diff),
            verdict: if xs.len() < MIN_PER_GROUP {
                Verdict::Inconclusive
            } else {
                above(&diff, 0.0)
            },
            policies_to_settle: None,
        });
        out.methods.insert(g.clone(), m);
    }
    if let (Some(a), Some(b)) = (by.get(VANILLA), by.get(VARIANCE_AWARE)) {
        let seed = group_seed(s.seed, "vanilla vs variance_aware");
        let enough = a.len().min(b.len()) >= MIN_PER_GROUP;
        let two = |f: fn(&[f64]) -> f64, k: u64| {
            bootstrap_two(
                a,
                b,
                |x, y| f(y) - f(x),
                s.resamples,
                s.level,
                seed.wrapping_add(k),
            )
        };
        let c = Comparison {
            a: VANILLA.into(),
            b: VARIANCE_AWARE.into(),
            mean_difference: two(mean, 0),
            variance_difference: two(variance, 1),
            q10_difference: two(q10, 2),
            brown_forsythe: brown_forsythe(&[a, b]),
            permutation_means: permutation_test(a, b, s.permutations, seed.wrapping_add(3)),
        };
        let v = &c.variance_difference;
        let verdict = if enough {
            flip(above(v, 0.0))
        } else {
            Verdict::Inconclusive
        };
        let bf = c
            .brown_forsythe
            .map(|t| {
                format!(
                    "; Brown–Forsythe F = {}, p = {}",
                    sig(t.statistic),
                    sig(t.p_value)
                )
            })
            .unwrap_or_default();
        out.claims.push(Claim {
            id: "judge_variance_lower".into(),
            claim: "variance-aware policies have a lower spread of the judge's reward than vanilla ones (Figure 7)".into(),
            measured: format!(
                "variance of policies' judge rewards, variance-aware minus vanilla ({} and {} policies), {pct}% bootstrap interval{bf}",
                b.len(),
                a.len()
            ),
            interval: Some(*v),
            verdict,
            policies_to_settle: (verdict == Verdict::Inconclusive)
                .then(|| policies_to_settle(v, a.len().min(b.len())))
                .flatten(),
        });
        let q = &c.q10_difference;
        let verdict = if enough {
            above(q, 0.0)
        } else {
            Verdict::Inconclusive
        };
        out.claims.push(Claim {
            id: "judge_q10_higher".into(),
            claim: "variance-aware policies are less risky: their worst policies (10% quantile) score higher (Figure 7)".into(),
            measured: format!("10% quantile of policies' judge rewards, variance-aware minus vanilla, {pct}% bootstrap interval"),
            interval: Some(*q),
            verdict,
            policies_to_settle: (verdict == Verdict::Inconclusive)
                .then(|| policies_to_settle(q, a.len().min(b.len())))
                .flatten(),
        });
        out.comparisons.push(c);
    }
    kl_claim(inputs, s, &mut out.claims);
    out
}

/// The methods are compared at comparable KL: the ratio of the compared policies' mean final
/// KLs within tolerance.
///
/// Unlike the other claims this is a property of the experiment's design, not a hypothesis
/// about PPO in general: what could confound the comparison is a KL difference between the
/// policies actually compared, so the verdict reads the ratio of their means itself
/// (supported inside `1 ± kl_tolerance`, contradicted outside). The bootstrap interval beside
/// it says how much that ratio would move with other seeds.
fn kl_claim(inputs: &Inputs, s: Settings, claims: &mut Vec<Claim>) {
    let (Some(a), Some(b)) = (
        inputs.final_kl.get(VANILLA),
        inputs.final_kl.get(VARIANCE_AWARE),
    ) else {
        return;
    };
    let ratio = bootstrap_two(
        a,
        b,
        |x, y| mean(y) / mean(x),
        s.resamples,
        s.level,
        group_seed(s.seed, "final KL"),
    );
    let (lo, hi) = (1.0 - s.kl_tolerance, 1.0 + s.kl_tolerance);
    // A ratio means something only for positive KLs and enough runs on each side.
    let usable = a.len().min(b.len()) >= MIN_PER_GROUP
        && mean(a) > 0.0
        && mean(b) > 0.0
        && ratio.estimate.is_finite();
    let verdict = if !usable {
        Verdict::Inconclusive
    } else if (lo..=hi).contains(&ratio.estimate) {
        Verdict::Supported
    } else {
        Verdict::Contradicted
    };
    claims.push(Claim {
        id: "kl_comparable".into(),
        claim: format!(
            "the methods are compared at comparable KL to the reference policy (App. 8; here: within ±{:.0}%)",
            100.0 * s.kl_tolerance
        ),
        measured: format!(
            "mean final KL of the compared policies, variance-aware ÷ vanilla ({} and {} runs; the verdict reads the ratio itself, the {:.0}% bootstrap interval how it would vary over seeds)",
            b.len(),
            a.len(),
            s.level * 100.0
        ),
        interval: Some(ratio),
        verdict,
        policies_to_settle: None,
    });
}

/// Theorem 3.3's closed form for `P(wᵀr* ≤ 0)` against the Monte Carlo frequency: supported
/// when every closed form lies within its frequency's Wilson interval.
fn theory_claims(inputs: &Inputs, s: Settings, claims: &mut Vec<Claim>) {
    // Two checks per simulation (one per method): each at the level that keeps the pair's
    // chance of a false "contradicted" at 1 − level (Bonferroni).
    let each = 1.0 - (1.0 - s.level) / 2.0;
    for (label, r) in &inputs.simulations {
        if r.draws == 0 {
            continue;
        }
        let mut inside = true;
        let mut parts = Vec::new();
        // The interval shown is that of the method furthest from its closed form.
        let mut worst: Option<(f64, Interval)> = None;
        for (name, m) in [
            ("vanilla", &r.vanilla),
            ("variance-aware", &r.variance_aware),
        ] {
            let u = &m.underperformance;
            let w = wilson(u.monte_carlo, r.draws, each);
            inside &= w.lo <= u.closed_form && u.closed_form <= w.hi;
            parts.push(format!(
                "{name}: Monte Carlo {} [{}, {}] vs closed form {}",
                sig(u.monte_carlo),
                sig(w.lo),
                sig(w.hi),
                sig(u.closed_form)
            ));
            let miss = (u.monte_carlo - u.closed_form).abs();
            if worst.is_none_or(|(m, _)| miss > m) {
                let i = Interval {
                    estimate: u.monte_carlo - u.closed_form,
                    lo: w.lo - u.closed_form,
                    hi: w.hi - u.closed_form,
                    level: each,
                };
                worst = Some((miss, i));
            }
        }
        let worst = worst.map(|(_, i)| i);
        claims.push(Claim {
            id: format!("theorem_3_3[{label}]"),
            claim: "Theorem 3.3: the closed form gives the probability that a method's solution underperforms (wᵀr* ≤ 0)".into(),
            measured: format!(
                "{} draws; {}; Wilson {:.1}% intervals (Bonferroni over the two methods)",
                r.draws,
                parts.join("; "),
                each * 100.0
            ),
            interval: worst,
            verdict: if inside {
                Verdict::Supported
            } else {
                Verdict::Contradicted
            },
            policies_to_settle: None,
        });
    }
}

/// Figure 6: the heads disagree — the variance across heads of a chosen response's reward is
/// above zero on average (interval: the normal approximation over the evaluation pairs).
fn heads_claims(inputs: &Inputs, s: Settings, claims: &mut Vec<Claim>) {
    let Some(h) = inputs.heads else { return };
    let d = &h.chosen_variance;
    if d.n == 0 {
        return;
    }
    let z = z_two_sided(s.level);
    let se = d.std / (d.n as f64).sqrt();
    let i = Interval {
        estimate: d.mean,
        lo: d.mean - z * se,
        hi: d.mean + z * se,
        level: s.level,
    };
    claims.push(Claim {
        id: "heads_disagree".into(),
        claim: "the reward heads disagree: the variance across heads of a response's reward is not zero (Figure 6)".into(),
        measured: format!(
            "mean variance across {} heads over {} chosen responses (median {}), {:.0}% normal interval",
            h.heads,
            d.n,
            sig(d.median()),
            s.level * 100.0
        ),
        interval: Some(i),
        verdict: above(&i, 0.0),
        policies_to_settle: None,
    });
}

/// One claim's result in one run of the pipeline (a task seed of a robustness sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The run's label (its matrix values, e.g. `world=1`).
    pub run: String,
    pub verdict: Verdict,
    pub interval: Option<Interval>,
}

/// One claim across every run: its cell in each (absent where a run did not measure it) and
/// the count of each verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimAcross {
    pub id: String,
    pub claim: String,
    pub cells: Vec<Option<Cell>>,
    pub supported: usize,
    pub contradicted: usize,
    pub inconclusive: usize,
}

/// The claims tables of several runs side by side: does a finding survive another world?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    /// The runs, in the order given.
    pub runs: Vec<String>,
    /// Every claim any run states, in the order first met.
    pub claims: Vec<ClaimAcross>,
}

/// Puts the findings of several runs (label, findings) side by side.
pub fn across(runs: &[(String, Findings)]) -> Robustness {
    let mut claims: Vec<ClaimAcross> = Vec::new();
    for (_, f) in runs {
        for c in &f.claims {
            if !claims.iter().any(|a| a.id == c.id) {
                claims.push(ClaimAcross {
                    id: c.id.clone(),
                    claim: c.claim.clone(),
                    cells: Vec::new(),
                    supported: 0,
                    contradicted: 0,
                    inconclusive: 0,
                });
            }
        }
    }
    for a in &mut claims {
        for (label, f) in runs {
            let cell = f.claims.iter().find(|c| c.id == a.id).map(|c| Cell {
                run: label.clone(),
                verdict: c.verdict,
                interval: c.interval,
            });
            match cell.as_ref().map(|c| c.verdict) {
                Some(Verdict::Supported) => a.supported += 1,
                Some(Verdict::Contradicted) => a.contradicted += 1,
                Some(Verdict::Inconclusive) => a.inconclusive += 1,
                None => {}
            }
            a.cells.push(cell);
        }
    }
    Robustness {
        runs: runs.iter().map(|(l, _)| l.clone()).collect(),
        claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::judge::{summarize, PolicyScore};

    fn judge(vanilla: &[f64], aware: &[f64], reference: f64) -> JudgeResults {
        let mut policies = Vec::new();
        for (g, xs) in [(VANILLA, vanilla), (VARIANCE_AWARE, aware)] {
            for (i, &x) in xs.iter().enumerate() {
                policies.push(PolicyScore {
                    node: format!("ppo[method={g},seed={i}]"),
                    group: g.into(),
                    mean_reward: x,
                    std_reward: 0.1,
                    first_prompt: String::new(),
                });
            }
        }
        JudgeResults {
            judge: "test".into(),
            prompts: 10,
            prompt_template: "plain".into(),
            reference,
            reference_first_prompt: String::new(),
            groups: summarize(reference, &policies),
            policies,
        }
    }

    fn claim<'a>(f: &'a Findings, id: &str) -> &'a Claim {
        f.claims.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn a_clear_difference_is_supported_and_its_reverse_contradicted() {
        let wide = [0.2, 1.9, 0.5, 2.4, 1.1, 0.1, 2.2, 1.6, 0.4, 2.0, 0.9, 1.8];
        let narrow = [
            1.5, 1.55, 1.45, 1.6, 1.5, 1.52, 1.48, 1.58, 1.42, 1.5, 1.53, 1.47,
        ];
        let j = judge(&wide, &narrow, -0.5);
        let f = findings(
            &Inputs {
                judge: Some(&j),
                ..Inputs::default()
            },
            Settings::default(),
        );
        assert_eq!(
            claim(&f, "judge_variance_lower").verdict,
            Verdict::Supported
        );
        assert_eq!(
            claim(&f, "vanilla_beats_reference").verdict,
            Verdict::Supported
        );
        assert_eq!(
            claim(&f, "variance_aware_beats_reference").verdict,
            Verdict::Supported
        );
        let bf = f.comparisons[0].brown_forsythe.unwrap();
        assert!(bf.p_value < 0.01, "{bf:?}");
        let swapped = judge(&narrow, &wide, 5.0);
        let f = findings(
            &Inputs {
                judge: Some(&swapped),
                ..Inputs::default()
            },
            Settings::default(),
        );
        assert_eq!(
            claim(&f, "judge_variance_lower").verdict,
            Verdict::Contradicted
        );
        assert_eq!(
            claim(&f, "vanilla_beats_reference").verdict,
            Verdict::Contradicted
        );
        // The same inputs give the same numbers.
        let again = findings(
            &Inputs {
                judge: Some(&swapped),
                ..Inputs::default()
            },
            Settings::default(),
        );
        assert_eq!(f, again);
    }

    #[test]
    fn a_small_noisy_difference_is_inconclusive_with_a_sample_size_to_settle_it() {
        let a = [1.0, 1.4, 0.9, 1.3, 1.1, 0.8, 1.2, 1.25];
        let b = [1.05, 1.3, 0.95, 1.35, 1.1, 0.85, 1.15, 1.2];
        let j = judge(&a, &b, 0.0);
        let f = findings(
            &Inputs {
                judge: Some(&j),
                ..Inputs::default()
            },
            Settings::default(),
        );
        let c = claim(&f, "judge_variance_lower");
        assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
        assert!(c.policies_to_settle.unwrap() > 8, "{c:?}");
    }

    #[test]
    fn kl_ratio_decides_comparability() {
        let mut inputs = Inputs::default();
        inputs
            .final_kl
            .insert(VANILLA.into(), vec![1.0, 1.1, 0.9, 1.05, 0.95, 1.0]);
        inputs.final_kl.insert(
            VARIANCE_AWARE.into(),
            vec![1.02, 0.98, 1.0, 1.04, 0.97, 1.01],
        );
        let f = findings(&inputs, Settings::default());
        assert_eq!(claim(&f, "kl_comparable").verdict, Verdict::Supported);
        inputs
            .final_kl
            .insert(VARIANCE_AWARE.into(), vec![3.0, 3.1, 2.9, 3.2, 2.8, 3.0]);
        let f = findings(&inputs, Settings::default());
        assert_eq!(claim(&f, "kl_comparable").verdict, Verdict::Contradicted);
        // Heavy tails: the means match (ratio 1.0) while the interval is wide; the verdict
        // reads the compared policies' ratio, the interval stays in the claim.
        inputs
            .final_kl
            .insert(VANILLA.into(), vec![5.0, 6.0, 7.0, 8.0, 9.0, 25.0]);
        inputs.final_kl.insert(
            VARIANCE_AWARE.into(),
            vec![10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        );
        let f = findings(&inputs, Settings::default());
        let c = claim(&f, "kl_comparable");
        assert_eq!(c.verdict, Verdict::Supported, "{c:?}");
        let i = c.interval.unwrap();
        assert!((i.estimate - 1.0).abs() < 1e-12, "{i:?}");
        assert!(i.lo < 0.8 || i.hi > 1.2, "a wide interval: {i:?}");
        // 1.25 is outside ±20 %.
        inputs.final_kl.insert(VARIANCE_AWARE.into(), vec![12.5; 6]);
        let f = findings(&inputs, Settings::default());
        assert_eq!(claim(&f, "kl_comparable").verdict, Verdict::Contradicted);
    }

    #[test]
    fn one_policy_or_a_nan_gives_no_verdict_and_no_panic() {
        let j = judge(&[1.0], &[2.0], 0.0);
        let f = findings(
            &Inputs {
                judge: Some(&j),
                ..Inputs::default()
            },
            Settings::default(),
        );
        for c in &f.claims {
            assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
        }
        let j = judge(&[1.0, f64::NAN, 1.2, 0.9], &[1.1, 1.3, 1.0, 1.2], 0.0);
        let f = findings(
            &Inputs {
                judge: Some(&j),
                ..Inputs::default()
            },
            Settings::default(),
        );
        assert!(f.comparisons[0].brown_forsythe.is_none());
        assert!(f.comparisons[0].permutation_means.is_none());
        assert_eq!(
            claim(&f, "vanilla_beats_reference").verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            claim(&f, "judge_variance_lower").verdict,
            Verdict::Inconclusive
        );
        let mut inputs = Inputs::default();
        inputs
            .final_kl
            .insert(VANILLA.into(), vec![-0.1, -0.2, -0.15]);
        inputs
            .final_kl
            .insert(VARIANCE_AWARE.into(), vec![-0.1, -0.2, -0.15]);
        let f = findings(&inputs, Settings::default());
        assert_eq!(claim(&f, "kl_comparable").verdict, Verdict::Inconclusive);
    }

    #[test]
    fn four_significant_digits() {
        assert_eq!(sig(1.23456), "1.235");
        assert_eq!(sig(-0.0046712), "-0.004671");
        assert_eq!(sig(1234.4), "1234");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(f64::NAN), "NaN");
    }

    #[test]
    fn across_runs_counts_each_verdict_and_keeps_missing_claims_apart() {
        let claim = |id: &str, v: Verdict| Claim {
            id: id.into(),
            claim: format!("claim {id}"),
            measured: String::new(),
            interval: None,
            verdict: v,
            policies_to_settle: None,
        };
        let with = |claims: Vec<Claim>| Findings {
            settings: Settings::default(),
            claims,
            methods: BTreeMap::new(),
            comparisons: Vec::new(),
        };
        let runs = vec![
            (
                "world=0".to_string(),
                with(vec![
                    claim("a", Verdict::Supported),
                    claim("b", Verdict::Inconclusive),
                ]),
            ),
            (
                "world=1".to_string(),
                with(vec![claim("a", Verdict::Contradicted)]),
            ),
            (
                "world=2".to_string(),
                with(vec![
                    claim("c", Verdict::Supported),
                    claim("a", Verdict::Supported),
                ]),
            ),
        ];
        let r = across(&runs);
        assert_eq!(r.runs, vec!["world=0", "world=1", "world=2"]);
        let ids: Vec<&str> = r.claims.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        let a = &r.claims[0];
        assert_eq!((a.supported, a.contradicted, a.inconclusive), (2, 1, 0));
        assert_eq!(a.cells[1].as_ref().unwrap().run, "world=1");
        let b = &r.claims[1];
        assert_eq!((b.supported, b.contradicted, b.inconclusive), (0, 0, 1));
        assert!(b.cells[1].is_none() && b.cells[2].is_none());
        assert!(r.claims[2].cells[0].is_none());
    }
}
