//! The `kl_calibrate` kind: the β of one PPO method for a target final KL, measured by short
//! PPO probes (the arithmetic is [`crate::rl::calibrate`], docs/algorithms.md §5a).
//!
//! Params: every `ppo` param but `beta`/`beta_from` (the probes train exactly as a `ppo` node
//! with those params would, at each probed β), and `kl_target`, `betas`, `probe_seeds`,
//! `probe_members`, `max_extra_probes`. Output `beta`: JSON with the chosen β, the target,
//! every probe and the fit; a `ppo` node takes it as `beta_from`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, Place, StageContext, StageError, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device},
    parse_params,
    ppo::{PpoParams, Setup},
    stage_error,
};
use crate::{
    files::write_json,
    rl::{
        calibrate::{self, Calibration, Check, FitPoint, Probe},
        policy::{load_policy, Policy},
        ppo::train,
        rollout::Method,
        rollout::PpoModels,
    },
};

/// The params `kl_calibrate` adds to a `ppo` node's.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationParams {
    /// The final KL (mean of a run's last tenth of steps of `Σ_t kl_t`) to calibrate for.
    pub kl_target: f64,
    /// The β values probed first (at least two, each > 0).
    pub betas: Vec<f64>,
    /// The seeds of the probes at each β (PPO's `seed`; keep them apart from the sweep's).
    #[serde(default = "default_probe_seeds")]
    pub probe_seeds: Vec<u64>,
    /// The ensemble members the probes train against (`aggregation: member`), each with
    /// every seed: the sweep's members, so that the calibrated β suits all of them. Default:
    /// the `member` param.
    #[serde(default)]
    pub probe_members: Option<Vec<usize>>,
    /// When the target lies outside the probes' KLs, how many more β values may be probed
    /// (each halving the smallest or doubling the largest) before giving up.
    #[serde(default = "default_max_extra")]
    pub max_extra_probes: usize,
    /// The seeds of the sweep this β is for. Given, the fitted β is *checked*: probes with
    /// every (member, check seed) pair — the sweep's own runs — and their mean final KL
    /// compared with the target; a miss beyond `tolerance` moves β (a secant step) and checks
    /// again, at most `max_refinements` times. The answer is the β whose check came closest.
    #[serde(default)]
    pub check_seeds: Option<Vec<u64>>,
    /// How far a check's mean final KL may lie from the target: `|mean/target − 1|`.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Checks after the first, each at a refined β.
    #[serde(default = "default_max_refinements")]
    pub max_refinements: usize,
}

fn default_tolerance() -> f64 {
    0.1
}

fn default_max_refinements() -> usize {
    3
}

/// The most refinements: each trains the sweep's runs again.
const MAX_REFINEMENTS: usize = 10;

fn default_probe_seeds() -> Vec<u64> {
    vec![1001]
}

fn default_max_extra() -> usize {
    3
}

/// The most extra probes: 20 doublings move β by a factor of a million.
const MAX_EXTRA_PROBES: usize = 20;

/// The params of `kl_calibrate` that are also `ppo`'s.
const OWN: [&str; 8] = [
    "kl_target",
    "betas",
    "probe_seeds",
    "probe_members",
    "max_extra_probes",
    "check_seeds",
    "tolerance",
    "max_refinements",
];

/// Splits a `kl_calibrate` node's params into its own and the probes' `ppo` params.
fn split(params: &Value) -> Result<(CalibrationParams, PpoParams), ParamError> {
    let Some(map) = params.as_object() else {
        return Err(ParamError::general("params must be a map"));
    };
    for taken in ["beta", "beta_from"] {
        if map.contains_key(taken) {
            return Err(ParamError::at(
                taken,
                "is what kl_calibrate chooses; remove it (the probed values are `betas`)",
            ));
        }
    }
    let (own, rest): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
        .clone()
        .into_iter()
        .partition(|(k, _)| OWN.contains(&k.as_str()));
    let c: CalibrationParams = parse_params(&Value::Object(own))?;
    let p: PpoParams = parse_params(&Value::Object(rest))?;
    Ok((c, p))
}

impl CalibrationParams {
    fn check(&self) -> Result<(), ParamError> {
        if !(self.kl_target.is_finite() && self.kl_target > 0.0) {
            return Err(ParamError::at(
                "kl_target",
                format!("must be a number > 0, not {}", self.kl_target),
            ));
        }
        if let Some(b) = self.betas.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
            return Err(ParamError::at(
                "betas",
                format!("every β must be a number > 0, not {b}"),
            ));
        }
        let mut distinct = self.betas.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        if distinct.len() < 2 {
            return Err(ParamError::at(
                "betas",
                "needs at least two different values",
            ));
        }
        if self.probe_seeds.is_empty() {
            return Err(ParamError::at("probe_seeds", "needs at least one seed"));
        }
        if self.max_extra_probes > MAX_EXTRA_PROBES {
            return Err(ParamError::at(
                "max_extra_probes",
                format!("must be at most {MAX_EXTRA_PROBES} (each one halves or doubles β)"),
            ));
        }
        if self.check_seeds.as_ref().is_some_and(Vec::is_empty) {
            return Err(ParamError::at(
                "check_seeds",
                "needs at least one seed (or leave it out: no check)",
            ));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(ParamError::at(
                "tolerance",
                format!("must be a number between 0 and 1, not {}", self.tolerance),
            ));
        }
        if self.max_refinements > MAX_REFINEMENTS {
            return Err(ParamError::at(
                "max_refinements",
                format!("must be at most {MAX_REFINEMENTS} (each trains the sweep's runs again)"),
            ));
        }
        if self.probe_members.as_ref().is_some_and(Vec::is_empty) {
            return Err(ParamError::at("probe_members", "needs at least one member"));
        }
        Ok(())
    }
}

/// The `beta` output: what was chosen and everything it was chosen from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationResult {
    pub method: Method,
    pub kl_target: f64,
    /// The chosen β: the best check's, or without checks the fitted one.
    pub beta: f64,
    /// β interpolated on the probes' fit.
    pub fitted_beta: f64,
    /// The probed β values whose fitted KLs bracket the target.
    pub between: (f64, f64),
    /// PPO steps of every probe (a final KL belongs to a number of steps).
    pub steps: usize,
    pub probes: Vec<Probe>,
    pub fit: Vec<FitPoint>,
    /// The checks' tolerance (`|mean/target − 1|`).
    pub tolerance: f64,
    /// The checks on the sweep's own runs, in order (none without `check_seeds`).
    pub checks: Vec<Check>,
    /// The chosen β's check: the sweep's mean final KL at that β.
    pub checked_kl: Option<f64>,
}

impl CalibrationResult {
    /// Reads a `kl_calibrate` node's `beta` output.
    pub fn read(path: &Path) -> Result<Self, StageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("beta_from: cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "beta_from: {} is not a kl_calibrate result: {e}",
                path.display()
            )
            .into()
        })
    }
}

pub struct KlCalibrateKind;

impl StageKind for KlCalibrateKind {
    fn params_schema(&self) -> Option<Value> {
        // The ppo params without β, and this kind's own.
        let mut schema = super::params_schema::<PpoParams>();
        let own = super::params_schema::<CalibrationParams>();
        if let Some(props) = schema["properties"].as_object_mut() {
            props.remove("beta");
            props.remove("beta_from");
            if let Some(o) = own["properties"].as_object() {
                props.extend(o.clone());
            }
        }
        if let (Some(req), Some(o)) = (
            schema["required"].as_array_mut(),
            own["required"].as_array(),
        ) {
            req.extend(o.iter().cloned());
        }
        Some(schema)
    }
    fn name(&self) -> &'static str {
        "kl_calibrate"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "the β of a PPO method for a target final KL, from short PPO probes"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let (c, p) = split(&crate::data::artifact_refs_as_text(params))?;
        c.check()?;
        p.check()
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("beta", ArtifactType::Metrics)]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let (c, p) = split(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let Setup {
            models,
            policy,
            prompts,
            ..
        } = Setup::load_train(&p, &device)?;
        let mut grid = c.betas.clone();
        grid.sort_by(f64::total_cmp);
        grid.dedup();
        let members = c.probe_members.clone().unwrap_or_else(|| vec![p.member]);
        let pairs = |seeds: &[u64]| -> Vec<(usize, u64)> {
            members
                .iter()
                .flat_map(|&m| seeds.iter().map(move |&s| (m, s)))
                .collect()
        };
        let runs = pairs(&c.probe_seeds);
        let check_runs = c.check_seeds.as_deref().map(pairs).unwrap_or_default();
        let mut prober = Prober {
            params: &p,
            models: &models,
            prompts: &prompts,
            device: &device,
            loaded: Some(policy),
            cancel: ctx.cancel_flag(),
            done: 0,
            planned: (grid.len() * runs.len() + check_runs.len() * (1 + c.max_refinements)) as u64,
        };
        let mut probes: Vec<Probe> = Vec::new();
        let mut extra = 0usize;
        let mut pending = grid;
        let found = loop {
            for beta in std::mem::take(&mut pending) {
                for &(member, seed) in &runs {
                    probes.push(prober.probe(ctx, beta, member, seed, "probe")?);
                }
            }
            let fit = calibrate::fit(&probes);
            let at = calibrate::locate(&fit, c.kl_target);
            match (&at, at.next_beta(&fit)) {
                (Calibration::Found { beta, between }, _) => break (*beta, *between, fit),
                (_, Some(next)) if extra < c.max_extra_probes && !fit.is_empty() => {
                    ctx.log(format!(
                        "target KL {} outside the probes' fitted KLs {:.4}–{:.4}: probing β {next}",
                        c.kl_target,
                        fit.last().map_or(f64::NAN, |f| f.fitted_kl),
                        fit.first().map_or(f64::NAN, |f| f.fitted_kl),
                    ));
                    extra += 1;
                    prober.planned += runs.len() as u64;
                    pending.push(next);
                }
                _ => {
                    let range = fit
                        .iter()
                        .map(|f| format!("β {}: {:.4}", f.beta, f.fitted_kl))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let hint = match at {
                        Calibration::NeedLarger => "larger β values",
                        _ => "smaller β values",
                    };
                    return Err(format!(
                        "kl_target {} is outside the final KLs the probes reached ({range}); \
                         add {hint} to `betas` or raise `max_extra_probes`",
                        c.kl_target
                    )
                    .into());
                }
            }
        };
        let (fitted_beta, between, fit) = found;
        ctx.log(format!(
            "β {fitted_beta:.6} for a final KL of {} (between the probes at β {} and {})",
            c.kl_target, between.0, between.1
        ));
        // The check on the sweep's own runs, refined until it lands within the tolerance.
        let mut checks: Vec<Check> = Vec::new();
        let mut beta = fitted_beta;
        while !check_runs.is_empty() {
            let mut kls = Vec::with_capacity(check_runs.len());
            for &(member, seed) in &check_runs {
                kls.push(prober.probe(ctx, beta, member, seed, "check")?.final_kl);
            }
            let kls: Vec<f64> = kls.into_iter().filter(|k| k.is_finite()).collect();
            let check = Check {
                beta,
                runs: kls.len(),
                mean_kl: kls.iter().sum::<f64>() / kls.len() as f64,
            };
            ctx.log(format!(
                "check at β {beta:.6}: the sweep's {} runs end at a mean KL of {:.4} ({:+.1}% of the target)",
                check.runs,
                check.mean_kl,
                100.0 * (check.mean_kl / c.kl_target - 1.0)
            ));
            let hit = check.hits(c.kl_target, c.tolerance);
            checks.push(check);
            if hit {
                break;
            }
            if checks.len() > c.max_refinements {
                ctx.log(format!(
                    "no check within ±{:.0}% of the target after {} refinements: the closest is kept",
                    100.0 * c.tolerance,
                    c.max_refinements
                ));
                break;
            }
            match calibrate::refine(&checks, &fit, c.kl_target) {
                Some(next) => beta = next,
                None => break,
            }
        }
        let best = calibrate::best_check(&checks, c.kl_target).cloned();
        let beta = best.as_ref().map_or(fitted_beta, |b| b.beta);
        ctx.metric("beta", beta);
        ctx.metric("kl_target", c.kl_target);
        ctx.metric(
            "probes",
            (probes.len() + checks.len() * check_runs.len()) as f64,
        );
        if let Some(b) = &best {
            ctx.metric("checked_kl", b.mean_kl);
        }
        write_json(
            &ctx.output_path("beta"),
            &CalibrationResult {
                method: p.method,
                kl_target: c.kl_target,
                beta,
                fitted_beta,
                between,
                steps: p.steps,
                probes,
                fit,
                tolerance: c.tolerance,
                checks,
                checked_kl: best.map(|b| b.mean_kl),
            },
        )?;
        Ok(())
    }
}

/// Trains PPO probes: each exactly as a `ppo` node with the same params, β, member and seed
/// would train.
struct Prober<'a> {
    params: &'a PpoParams,
    models: &'a PpoModels<'static>,
    prompts: &'a [Vec<u32>],
    device: &'a Device,
    /// The policy `Setup` loaded trains the first probe; each later one starts from a fresh
    /// copy of the reference.
    loaded: Option<Policy>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Probes trained, and planned (for progress; grows when the grid widens).
    done: u64,
    planned: u64,
}

impl Prober<'_> {
    fn probe(
        &mut self,
        ctx: &StageContext,
        beta: f64,
        member: usize,
        seed: u64,
        what: &str,
    ) -> Result<Probe, StageError> {
        let p = self.params;
        let mut cfg = p.config();
        cfg.rollout.beta = beta;
        cfg.rollout.member = member;
        cfg.seed = seed;
        // Each probe checkpoints into its own scratch folder: a killed calibration resumes
        // its probes where they were.
        let ckpt = ctx
            .scratch()
            .join(format!("{what}-beta{beta}-member{member}-seed{seed}"));
        let policy = match self.loaded.take() {
            Some(policy) => policy,
            None => load_policy(Path::new(&p.policy), &self.device.clone().autodiff())?,
        };
        let (done, total) = (self.done, self.planned.max(self.done + 1));
        let cancel = &self.cancel;
        let run = train(
            &cfg,
            self.models,
            policy,
            self.prompts,
            Some(&ckpt),
            &|| cancel.load(std::sync::atomic::Ordering::Relaxed),
            &mut |step: usize, s: &[(&'static str, f64)]| {
                ctx.progress(
                    done * p.steps as u64 + step as u64,
                    total * p.steps as u64,
                    format!(
                        "{what} β {beta:.4} member {member} seed {seed}: kl {:.3}",
                        s[0].1
                    ),
                )
            },
        )
        .map_err(stage_error)?;
        self.done += 1;
        let kl: Vec<f64> = run.stats.iter().map(|s| s.kl).collect();
        let score: Vec<f64> = run.stats.iter().map(|s| s.score).collect();
        let probe = Probe {
            beta,
            seed,
            member,
            final_kl: calibrate::final_mean(&kl),
            final_score: calibrate::final_mean(&score),
        };
        ctx.log(format!(
            "{what} β {beta} member {member} seed {seed}: final KL {:.4}, final score {:.4}",
            probe.final_kl, probe.final_score
        ));
        Ok(probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: Value) -> Value {
        let mut v = serde_json::json!({
            "policy": "p", "reward_model": "r", "prompts": "q", "method": "vanilla",
            "kl_target": 4.0, "betas": [0.1, 0.4], "steps": 5,
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn params_split_into_its_own_and_the_probes() {
        let (c, p) = split(&params(serde_json::json!({"probe_seeds": [3, 4]}))).unwrap();
        assert_eq!(c.probe_seeds, vec![3, 4]);
        assert_eq!(c.probe_members, None);
        assert_eq!(c.max_extra_probes, 3);
        assert_eq!(
            (c.check_seeds, c.tolerance, c.max_refinements),
            (None, 0.1, 3)
        );
        assert_eq!(p.steps, 5);
        assert_eq!(p.method, Method::Vanilla);
        KlCalibrateKind
            .validate(&params(serde_json::json!({})))
            .unwrap();
    }

    #[test]
    fn bad_params_are_located() {
        let at = |extra: Value| {
            KlCalibrateKind
                .validate(&params(extra))
                .unwrap_err()
                .param
                .unwrap_or_default()
        };
        assert_eq!(at(serde_json::json!({"beta": 0.1})), "beta");
        assert_eq!(at(serde_json::json!({"beta_from": "x"})), "beta_from");
        assert_eq!(at(serde_json::json!({"kl_target": 0.0})), "kl_target");
        assert_eq!(at(serde_json::json!({"kl_target": -1.0})), "kl_target");
        assert_eq!(at(serde_json::json!({"betas": [0.1, 0.1]})), "betas");
        assert_eq!(at(serde_json::json!({"betas": [0.1, 0.0]})), "betas");
        assert_eq!(at(serde_json::json!({"probe_seeds": []})), "probe_seeds");
        assert_eq!(
            at(serde_json::json!({"probe_members": []})),
            "probe_members"
        );
        assert_eq!(
            at(serde_json::json!({"max_extra_probes": 21})),
            "max_extra_probes"
        );
        assert_eq!(at(serde_json::json!({"check_seeds": []})), "check_seeds");
        for t in [0.0, 1.0, -0.1] {
            assert_eq!(at(serde_json::json!({"tolerance": t})), "tolerance");
        }
        assert_eq!(
            at(serde_json::json!({"max_refinements": 11})),
            "max_refinements"
        );
        // A typo is still an unknown field of the ppo params.
        assert_eq!(at(serde_json::json!({"stpes": 3})), "stpes");
        assert_eq!(at(serde_json::json!({"steps": 0})), "steps");
    }

    #[test]
    fn the_schema_has_both_param_sets_and_no_beta() {
        let s = KlCalibrateKind.params_schema().unwrap();
        let props = s["properties"].as_object().unwrap();
        for k in ["kl_target", "betas", "probe_seeds", "policy", "lr", "steps"] {
            assert!(props.contains_key(k), "{k}");
        }
        assert!(!props.contains_key("beta") && !props.contains_key("beta_from"));
        let req: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            req.contains(&"kl_target") && req.contains(&"policy"),
            "{req:?}"
        );
    }
}
