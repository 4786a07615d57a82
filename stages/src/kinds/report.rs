//! The `report` kind: one self-contained HTML page (plots inline as SVG) with a table of
//! the numbers beside each plot, the plots again as PNG and SVG files, and every number
//! as `numbers.json`.
//!
//! Params: [`ReportParams`] (`dagrun kinds report`), each section optional; a section appears
//! when its input is given.
//!
//! Output `report`: a folder with `index.html`, `numbers.json` and the figures.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, Place, StageContext, StageError, StageKind};
use serde_json::Value;

use super::figures::{render, Band, Bands, Figure, GroupPoints, HeadBars, Histograms};
use crate::{
    findings::{across, findings, Findings, Inputs, Robustness, Settings, Verdict},
    rl::{calibrate::final_mean, judge::JudgeResults},
    rm::{bench::RewardBenchResults, ensemble::EnsembleStats},
    stats::mean_var,
    theory::{plot, BanditResult, SimulationResult},
};

pub struct ReportKind;

/// The report's params: the one list of its sections, for `dagrun kinds report` and for
/// validation ([`sections`]). Each section is optional and appears when its input is given.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ReportParams {
    /// The page title.
    title: Option<String>,
    /// `${stages.<bandit stage>.result}` (Figure 2).
    bandit: Option<String>,
    /// `${stages.<simulate stage>.result}`, one node or a sweep (Figure 5).
    simulate: Option<String>,
    /// `${stages.<head_ensemble stage>.stats}` (Figure 6, per-head accuracy).
    heads: Option<String>,
    /// `${stages.<ppo stage>.curves}`, a sweep (Figures 10–11, final KL and score per method).
    ppo: Option<String>,
    /// `${stages.<judge_eval stage>.results}` (Figure 7).
    judge: Option<String>,
    /// `${stages.<reward_bench stage>.results}` (Figure 9: each head's and the ensemble's
    /// RewardBench score per section).
    reward_bench: Option<String>,
    /// Another `reward_bench` result drawn beside it (the paper: the fully fine-tuned
    /// single-head model); needs `reward_bench`.
    reward_bench_baseline: Option<String>,
    /// `${stages.<report stage>.report}` of a sweep (e.g. over task seeds): the claims
    /// tables of those reports side by side, with how often each claim held.
    runs: Option<String>,
}

/// The report's sections: the fields of [`ReportParams`], read from its schema.
fn sections() -> Vec<String> {
    super::params_schema::<ReportParams>()["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

impl StageKind for ReportKind {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        // 2: a note when the PPO methods' final KLs are not about equal.
        // (The key's `font` entry became the font's content hash instead of its path: the
        // same results, a key that is the same on every machine.)
        // 3: the claims table and `findings` in numbers.json (stages/src/findings.rs).
        // 4: a run's final KL and score are the mean of its last tenth of steps everywhere
        // (the PPO table and the findings read the last step before); the PPO table shows
        // each method's β and KL target.
        // 5: `kl_comparable`'s verdict reads the compared policies' KL ratio itself (its
        // interval beside it).
        5
    }
    fn summary(&self) -> &'static str {
        "an HTML report with plots and tables of upstream results, plus numbers.json"
    }
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<ReportParams>())
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let Value::Object(o) = params else {
            return Err(ParamError::general("params must be a map"));
        };
        let known = sections();
        for k in o.keys() {
            if !known.contains(k) {
                return Err(ParamError::at(
                    k,
                    format!("unknown report section `{k}` (known: {})", known.join(", ")),
                ));
            }
        }
        if o.contains_key("reward_bench_baseline") && !o.contains_key("reward_bench") {
            return Err(ParamError::at(
                "reward_bench_baseline",
                "is drawn beside `reward_bench`, which is missing",
            ));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("report", ArtifactType::Report)]
    }
    fn environment(
        &self,
        _device: &str,
        _place: Place,
    ) -> Result<BTreeMap<String, String>, String> {
        // Plot text is laid out with this font: a different font gives different files. Named
        // by its content, so that the key does not depend on where the machine keeps it.
        let font = plot::font_id().unwrap_or_else(|_| "none".into());
        Ok([("font".to_string(), font)].into())
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let dir = ctx.output_path("report");
        std::fs::create_dir_all(&dir)?;
        let title = ctx
            .params
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("dagrun report")
            .to_string();
        let mut page = Page::new(&title);
        let mut numbers = serde_json::Map::new();
        // What the findings are computed from, as each section loads it.
        let (mut simulations, mut heads, mut judge) = (Vec::new(), None, None);
        let mut final_kl: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        if let Some(v) = ctx.params.get("bandit") {
            let (label, r): (String, BanditResult) = load_one(v, "bandit")?;
            page.bandit(&dir, &r, &label, ctx)?;
            numbers.insert("bandit".into(), serde_json::to_value(&r)?);
        }
        if let Some(v) = ctx.params.get("simulate") {
            let results: Vec<(String, SimulationResult)> = load_all(v)?;
            page.simulation(&dir, &results, ctx)?;
            numbers.insert("simulate".into(), by_label(&results)?);
            simulations = results;
        }
        if let Some(v) = ctx.params.get("heads") {
            let (_, st): (String, EnsembleStats) = load_one(v, "heads")?;
            page.heads(&dir, &st, ctx)?;
            numbers.insert("heads".into(), serde_json::to_value(&st)?);
            heads = Some(st);
        }
        if let Some(v) = ctx.params.get("ppo") {
            let runs: Vec<(String, Value)> = load_all(v)?;
            page.ppo(&dir, &runs, ctx)?;
            numbers.insert("ppo".into(), by_label(&runs)?);
            for (_, r) in &runs {
                if let Some(m) = r["method"].as_str() {
                    final_kl
                        .entry(m.to_string())
                        .or_default()
                        .push(run_final(r, "kl"));
                }
            }
        }
        if let Some(v) = ctx.params.get("judge") {
            let (_, j): (String, JudgeResults) = load_one(v, "judge")?;
            page.judge(&dir, &j, ctx)?;
            numbers.insert("judge".into(), serde_json::to_value(&j)?);
            for (g, sum) in &j.groups {
                ctx.metric(&format!("judge.{g}.mean"), sum.distribution.mean);
                ctx.metric(&format!("judge.{g}.variance"), sum.distribution.variance);
                ctx.metric(
                    &format!("judge.{g}.share_below_reference"),
                    sum.share_below_reference,
                );
            }
            ctx.metric("judge.reference", j.reference);
            judge = Some(j);
        }
        if let Some(v) = ctx.params.get("reward_bench") {
            let (_, r): (String, RewardBenchResults) = load_one(v, "reward_bench")?;
            let baseline = match ctx.params.get("reward_bench_baseline") {
                Some(b) => {
                    let (_, b): (String, RewardBenchResults) =
                        load_one(b, "reward_bench_baseline")?;
                    ctx.metric("reward_bench.baseline.overall", b.ensemble.overall);
                    numbers.insert("reward_bench_baseline".into(), serde_json::to_value(&b)?);
                    Some(b)
                }
                None => None,
            };
            page.reward_bench(&dir, &r, baseline.as_ref(), ctx)?;
            numbers.insert("reward_bench".into(), serde_json::to_value(&r)?);
            ctx.metric("reward_bench.ensemble.overall", r.ensemble.overall);
            for (key, _) in r.section_order() {
                ctx.metric(
                    &format!("reward_bench.ensemble.{key}"),
                    r.ensemble.sections[&key].score,
                );
            }
        }
        if let Some(v) = ctx.params.get("runs") {
            let runs: Vec<(String, Findings)> = artifact_paths(v)
                .into_iter()
                .map(|(label, path)| {
                    let numbers: Value =
                        read_json(&Path::new(&path).join("numbers.json").to_string_lossy())?;
                    let f: Findings = serde_json::from_value(numbers["findings"].clone())
                        .map_err(|e| format!("`{path}`: no findings in numbers.json: {e}"))?;
                    Ok((label, f))
                })
                .collect::<Result<_, StageError>>()?;
            let r = across(&runs);
            for c in &r.claims {
                ctx.metric(&format!("runs.{}.supported", c.id), c.supported as f64);
                ctx.metric(
                    &format!("runs.{}.contradicted", c.id),
                    c.contradicted as f64,
                );
            }
            page.robustness(&r);
            numbers.insert("runs".into(), serde_json::to_value(&r)?);
        }
        let inputs = Inputs {
            judge: judge.as_ref(),
            final_kl,
            heads: heads.as_ref(),
            simulations: simulations.iter().map(|(l, r)| (l.clone(), r)).collect(),
        };
        let found = findings(&inputs, Settings::default());
        for c in &found.claims {
            let v = match c.verdict {
                Verdict::Supported => 1.0,
                Verdict::Contradicted => -1.0,
                Verdict::Inconclusive => 0.0,
            };
            ctx.metric(&format!("claims.{}", c.id), v);
        }
        page.claims(&found);
        numbers.insert("findings".into(), serde_json::to_value(&found)?);
        crate::files::write_json(&dir.join("numbers.json"), &Value::Object(numbers))?;
        crate::files::write_atomic(&dir.join("index.html"), page.finish().as_bytes())?;
        ctx.log("wrote index.html, numbers.json and the figures (see them with `dagrun export NODE DIR`)");
        Ok(())
    }
}

/// The one artifact a reference names, read as JSON, with its label.
fn load_one<T: serde::de::DeserializeOwned>(
    v: &Value,
    what: &str,
) -> Result<(String, T), StageError> {
    load_all(v)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{what}` names no artifact").into())
}

/// Every artifact a reference names (one, or each node of a sweep), read as JSON, with
/// its label (the node's matrix values).
fn load_all<T: serde::de::DeserializeOwned>(v: &Value) -> Result<Vec<(String, T)>, StageError> {
    artifact_paths(v)
        .into_iter()
        .map(|(label, path)| Ok((label, read_json(&path)?)))
        .collect()
}

/// The (label, path) of every artifact a reference names.
fn artifact_paths(v: &Value) -> Vec<(String, String)> {
    match v {
        Value::String(p) => vec![(String::new(), p.clone())],
        Value::Array(items) => items
            .iter()
            .filter_map(|it| {
                let path = it.get("path")?.as_str()?.to_string();
                let label = it
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Some((label, path))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `{label: value}` for numbers.json.
fn by_label<T: serde::Serialize>(items: &[(String, T)]) -> Result<Value, StageError> {
    let mut m = serde_json::Map::new();
    for (l, x) in items {
        m.insert(l.clone(), serde_json::to_value(x)?);
    }
    Ok(Value::Object(m))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, StageError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(serde_json::from_slice(&bytes).map_err(|e| format!("`{path}`: {e}"))?)
}

/// The HTML page under construction.
struct Page {
    html: String,
    /// Where the claims table goes: right after the title.
    claims_at: usize,
}

/// The methods' final KLs differ by more than this share of the larger one: the
/// comparison is no longer at equal KL.
const KL_MATCH_TOLERANCE: f64 = 0.2;

/// A sentence for the report when the methods' final KLs (mean over runs) are not about
/// equal. The paper compares vanilla and variance-aware PPO at equal KL, choosing each
/// method's β for it (App. 8; docs/algorithms.md §5): a policy allowed further from the
/// reference can score higher for that alone.
fn kl_mismatch(finals: &[(&str, f64)]) -> Option<String> {
    let lo = finals.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let hi = finals.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    if hi.1.is_nan() || hi.1 <= 0.0 || (hi.1 - lo.1) <= KL_MATCH_TOLERANCE * hi.1 {
        return None;
    }
    Some(format!(
        "The final KL of {} ({:.3}) is {:.0} % below that of {} ({:.3}); the paper compares \
         the methods at about equal KL, choosing each method's β for it (App. 8). Compare \
         their judge scores with that in mind, or adjust β.",
        lo.0,
        lo.1,
        100.0 * (hi.1 - lo.1) / hi.1,
        hi.0,
        hi.1
    ))
}

/// A PPO run's final value of `key` (its `curves` JSON): the mean of the last tenth of its
/// steps, the one rule for "final" (`calibrate::final_mean`); `NaN` without steps.
fn run_final(run: &Value, key: &str) -> f64 {
    let series: Vec<f64> = run["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s[key].as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default();
    final_mean(&series)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Page {
    fn new(title: &str) -> Page {
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
             body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}\
             table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
             th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}figure{{margin:1em 0}}\
             .note{{color:#555;font-size:.9em}}</style></head><body><h1>{t}</h1>",
            t = esc(title)
        );
        let claims_at = html.len();
        Page { html, claims_at }
    }

    /// The claims of several runs side by side (a robustness sweep).
    fn robustness(&mut self, r: &Robustness) {
        self.html.push_str("<h2>Claims across runs</h2><p class=\"note\">Each row is a claim; each column one run of the pipeline (its own task world, preference noise and tokenizer). A cell is the run's verdict and the measured value [95% interval]; the last column counts the verdicts.</p><table><tr><th>claim</th>");
        for run in &r.runs {
            let _ = write!(self.html, "<th>{}</th>", esc(run));
        }
        self.html
            .push_str("<th>supported / contradicted / inconclusive</th></tr>");
        for c in &r.claims {
            let _ = write!(self.html, "<tr><td>{}</td>", esc(&c.claim));
            for cell in &c.cells {
                let text = match cell {
                    None => "—".to_string(),
                    Some(cell) => {
                        let v = match cell.verdict {
                            Verdict::Supported => "<b>supported</b>",
                            Verdict::Contradicted => "<b>contradicted</b>",
                            Verdict::Inconclusive => "inconclusive",
                        };
                        match cell.interval {
                            Some(i) => {
                                format!("{v}<br>{:.3} [{:.3}, {:.3}]", i.estimate, i.lo, i.hi)
                            }
                            None => v.to_string(),
                        }
                    }
                };
                let _ = write!(self.html, "<td>{text}</td>");
            }
            let _ = write!(
                self.html,
                "<td>{} / {} / {}</td></tr>",
                c.supported, c.contradicted, c.inconclusive
            );
        }
        self.html.push_str("</table>");
    }

    /// The claims table, placed at the top of the page (after the title).
    fn claims(&mut self, f: &Findings) {
        if f.claims.is_empty() {
            return;
        }
        let mut t = String::from("<h2>Claims</h2><p class=\"note\">Each claim of the paper this pipeline measures: the measured value with its confidence interval and a verdict — supported or contradicted when the interval excludes the other side, inconclusive otherwise (with the number of policies per method that would make the interval as narrow as the measured effect). Intervals resample policies (seeded); the details are in numbers.json under <code>findings</code>.</p><table><tr><th>claim</th><th>measured</th><th>value [interval]</th><th>verdict</th></tr>");
        for c in &f.claims {
            let value = c
                .interval
                .map(|i| format!("{:.4} [{:.4}, {:.4}]", i.estimate, i.lo, i.hi))
                .unwrap_or_default();
            let verdict = match (c.verdict, c.policies_to_settle) {
                (Verdict::Supported, _) => "<b>supported</b>".to_string(),
                (Verdict::Contradicted, _) => "<b>contradicted</b>".to_string(),
                (Verdict::Inconclusive, Some(n)) => {
                    format!("inconclusive (about {n} policies per method would settle it)")
                }
                (Verdict::Inconclusive, None) => "inconclusive".to_string(),
            };
            let _ = write!(
                t,
                "<tr><td>{}</td><td>{}</td><td>{value}</td><td>{verdict}</td></tr>",
                esc(&c.claim),
                esc(&c.measured)
            );
        }
        t.push_str("</table>");
        if !f.methods.is_empty() {
            t.push_str("<table><tr><th>method</th><th>policies</th><th>mean judge reward</th><th>variance</th><th>10% quantile</th><th>at or below reference</th><th>final KL</th></tr>");
            let show = |i: &crate::stats::infer::Interval| {
                format!("{:.4} [{:.4}, {:.4}]", i.estimate, i.lo, i.hi)
            };
            for (g, m) in &f.methods {
                let _ = write!(
                    t,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(g),
                    m.policies,
                    show(&m.mean),
                    show(&m.variance),
                    show(&m.q10),
                    show(&m.share_at_or_below_reference),
                    m.final_kl.as_ref().map(show).unwrap_or_default()
                );
            }
            t.push_str("</table>");
        }
        self.html.insert_str(self.claims_at, &t);
    }

    /// Writes a figure as SVG and PNG and embeds the SVG; without a font, says so.
    fn figure(
        &mut self,
        dir: &Path,
        stem: &str,
        draw: &dyn Fn(&Path) -> Result<(), crate::theory::TheoryError>,
        ctx: &StageContext,
    ) {
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        match draw(&svg).and_then(|_| draw(&png)) {
            Ok(()) => {
                let text = std::fs::read_to_string(&svg).unwrap_or_default();
                let _ = write!(self.html, "<figure>{text}<figcaption class=\"note\">{stem}.svg, {stem}.png</figcaption></figure>");
            }
            Err(e) => {
                ctx.log(format!("plot `{stem}` skipped: {e}"));
                let _ = write!(
                    self.html,
                    "<p class=\"note\">Plot not drawn: {}</p>",
                    esc(&e.to_string())
                );
            }
        }
    }

    fn bandit(
        &mut self,
        dir: &Path,
        r: &BanditResult,
        _label: &str,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html
            .push_str("<h2>Theory: a three-armed bandit (Figure 2)</h2>");
        self.html.push_str("<p>The vanilla policy π ∝ π₀·exp(r̂/β) follows the estimated rewards; the variance-aware policy discounts uncertain arms. Both are compared at equal KL(π‖π₀) unless β is given.</p>");
        self.figure(dir, "fig2_bandit", &|p| plot::plot_bandit(r, p), ctx);
        self.html.push_str("<table><tr><th>arm</th><th>true r*</th><th>estimate r̂</th><th>σ</th><th>π₀</th><th>vanilla π</th><th>variance-aware π</th></tr>");
        for i in 0..r.true_rewards.len() {
            let _ = write!(
                self.html,
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                i + 1,
                r.true_rewards[i],
                r.estimated_rewards[i],
                r.std_devs[i],
                r.reference_policy[i],
                r.vanilla_policy[i],
                r.variance_aware_policy[i]
            );
        }
        self.html.push_str("</table><table><tr><th>policy</th><th>true return</th><th>estimated return</th><th>KL(π‖π₀)</th></tr>");
        for (name, pr) in [
            ("reference π₀", &r.reference),
            ("vanilla", &r.vanilla),
            ("variance-aware", &r.variance_aware),
        ] {
            let _ = write!(
                self.html,
                "<tr><td>{name}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                pr.true_return, pr.estimated_return, pr.kl_to_reference
            );
        }
        let _ = write!(
            self.html,
            "</table><p class=\"note\">β = {:.4} (vanilla), {:.4} (variance-aware{})</p>",
            r.beta,
            r.beta_variance_aware,
            if r.kl_matched { ", matched KL" } else { "" }
        );
        Ok(())
    }

    fn simulation(
        &mut self,
        dir: &Path,
        results: &[(String, SimulationResult)],
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html
            .push_str("<h2>Theory: d-dimensional simulation (Figure 5, Theorem 3.3)</h2>");
        self.html.push_str("<p>Each draw r̂ = r* + N(0, Σ) gives a vanilla solution w = √ε·r̂/‖r̂‖ and a variance-aware one w ∝ Σ⁻¹r̂ (ε′ = λ_min(Σ)·ε). The histograms show the true returns wᵀr*; the table puts the Monte-Carlo probability of underperforming the reference (wᵀr* ≤ 0) beside Theorem 3.3's closed form.</p>");
        let refs: Vec<&SimulationResult> = results.iter().map(|(_, r)| r).collect();
        self.figure(
            dir,
            "fig5_simulation",
            &|p| plot::plot_simulation(&refs, p),
            ctx,
        );
        self.html.push_str("<table><tr><th>setting</th><th>method</th><th>mean return</th><th>std</th><th>P(wᵀr* ≤ 0), Monte Carlo</th><th>± s.e.</th><th>closed form</th><th>z</th></tr>");
        for (label, r) in results {
            let setting = if label.is_empty() {
                format!("{:?}", r.variability).to_lowercase()
            } else {
                label.clone()
            };
            for (name, m) in [
                ("vanilla", &r.vanilla),
                ("variance-aware", &r.variance_aware),
            ] {
                let u = &m.underperformance;
                let _ = write!(
                    self.html,
                    "<tr><td>{} (d={}, M={})</td><td>{name}</td><td>{:.5}</td><td>{:.5}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:+.2}</td></tr>",
                    esc(&setting), r.d, r.draws, m.summary.mean, m.summary.std, u.monte_carlo, u.standard_error, u.closed_form, u.z_score
                );
            }
        }
        self.html.push_str("</table>");
        Ok(())
    }

    fn heads(
        &mut self,
        dir: &Path,
        s: &EnsembleStats,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html
            .push_str("<h2>Reward models disagree: the head ensemble (Figure 6)</h2>");
        let _ = write!(self.html, "<p>{} heads on a frozen backbone, evaluated on {} held-out pairs. Top: the variance across heads of the reward of the chosen response; bottom: the variance of the per-head reward differences r<sub>k</sub>(x,y⁺) − r<sub>k</sub>(x,y⁻).</p>", s.heads, s.eval_pairs);
        let fig = Histograms {
            panels: vec![
                (
                    "Variance of the chosen reward".into(),
                    "σ² across heads".into(),
                    s.chosen_variance.histogram_edges.clone(),
                    s.chosen_variance.histogram_counts.clone(),
                    s.chosen_variance.mean,
                    s.chosen_variance.median(),
                ),
                (
                    "Variance of the reward difference".into(),
                    "σ² across heads".into(),
                    s.difference_variance.histogram_edges.clone(),
                    s.difference_variance.histogram_counts.clone(),
                    s.difference_variance.mean,
                    s.difference_variance.median(),
                ),
            ],
        };
        self.figure_of(dir, "fig6_variance", &fig, ctx);
        self.html.push_str("<table><tr><th>statistic</th><th>mean</th><th>median</th><th>min</th><th>max</th></tr>");
        for (name, d) in [
            ("σ² of chosen reward", &s.chosen_variance),
            ("σ² of reward difference", &s.difference_variance),
        ] {
            let _ = write!(self.html, "<tr><td>{name}</td><td>{:.4e}</td><td>{:.4e}</td><td>{:.4e}</td><td>{:.4e}</td></tr>", d.mean, d.median(), d.min, d.max);
        }
        self.html.push_str("</table><table><tr><th>head</th><th>eval accuracy</th><th>steps</th><th>final running loss</th></tr>");
        for k in 0..s.heads {
            let _ = write!(
                self.html,
                "<tr><td>{k}</td><td>{:.3}</td><td>{}</td><td>{:.4}</td></tr>",
                s.head_accuracy[k], s.head_steps[k], s.head_final_loss[k]
            );
        }
        let _ = write!(
            self.html,
            "<tr><td>ensemble mean</td><td>{:.3}</td><td></td><td></td></tr></table>",
            s.ensemble_accuracy
        );
        Ok(())
    }

    fn ppo(
        &mut self,
        dir: &Path,
        runs: &[(String, Value)],
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html
            .push_str("<h2>PPO: KL and reward during training (Figures 10–11)</h2>");
        // Group the runs by method; average each quantity over the runs of a method.
        let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for (_, v) in runs {
            let m = v
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("policies")
                .to_string();
            groups.entry(m).or_default().push(v);
        }
        let band = |key: &str| -> Vec<Band> {
            groups
                .iter()
                .map(|(m, rs)| {
                    let series: Vec<Vec<f64>> = rs
                        .iter()
                        .map(|r| {
                            r["steps"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .map(|s| s[key].as_f64().unwrap_or(f64::NAN))
                                        .collect()
                                })
                                .unwrap_or_default()
                        })
                        .collect();
                    let len = series.iter().map(Vec::len).min().unwrap_or(0);
                    let (mut xs, mut ms, mut ss) = (Vec::new(), Vec::new(), Vec::new());
                    for i in 0..len {
                        let col: Vec<f64> = series.iter().map(|s| s[i]).collect();
                        let mean = col.iter().sum::<f64>() / col.len() as f64;
                        let sd = if col.len() > 1 {
                            (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                                / (col.len() - 1) as f64)
                                .sqrt()
                        } else {
                            0.0
                        };
                        xs.push((i + 1) as f64);
                        ms.push(mean);
                        ss.push(sd);
                    }
                    (format!("{m} ({} runs)", rs.len()), xs, ms, ss)
                })
                .collect()
        };
        let (kl, score) = (band("kl"), band("score"));
        let fig = Bands {
            panels: vec![
                (
                    "KL(π‖π_ref) (Figure 10)".into(),
                    "Σ_t kl_t".into(),
                    kl.clone(),
                ),
                (
                    "Reward during training (Figure 11)".into(),
                    "score".into(),
                    score.clone(),
                ),
            ],
        };
        self.figure_of(dir, "fig10_11_ppo_curves", &fig, ctx);
        // Each run's final KL and score: the mean of its last tenth of steps, as the `ppo`
        // kind's `final_kl` metric and the findings read them (`calibrate::final_mean`).
        self.html.push_str("<table><tr><th>method</th><th>runs</th><th>β</th><th>KL target</th><th>final KL (mean ± sd over runs)</th><th>final score (mean ± sd over runs)</th></tr>");
        let mut finals: Vec<(String, f64)> = Vec::new();
        for (m, rs) in &groups {
            let per_run =
                |key: &str| -> Vec<f64> { rs.iter().map(|r| run_final(r, key)).collect() };
            let (kl, score) = (per_run("kl"), per_run("score"));
            let (km, kv) = mean_var(&kl, 1);
            let (sm, sv) = mean_var(&score, 1);
            let shown = |key: &str| -> String {
                let mut vals: Vec<f64> = rs.iter().filter_map(|r| r[key].as_f64()).collect();
                vals.sort_by(f64::total_cmp);
                vals.dedup();
                vals.iter()
                    .map(|v| format!("{v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (betas, target) = (shown("beta"), shown("kl_target"));
            let _ = write!(
                self.html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{km:.4} ± {:.4}</td><td>{sm:.4} ± {:.4}</td></tr>",
                esc(m),
                rs.len(),
                esc(&betas),
                if target.is_empty() { "—".to_string() } else { esc(&target) },
                kv.max(0.0).sqrt(),
                sv.max(0.0).sqrt(),
            );
            ctx.log(format!(
                "ppo {m}: {} runs, β {betas}, final KL {km:.4} (target {})",
                rs.len(),
                if target.is_empty() { "none" } else { &target }
            ));
            finals.push((format!("{m} ({} runs)", rs.len()), km));
        }
        self.html.push_str("</table>");
        let finals: Vec<(&str, f64)> = finals.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        if let Some(note) = kl_mismatch(&finals) {
            let _ = write!(self.html, "<p><b>Not at equal KL.</b> {}</p>", esc(&note));
        }
        Ok(())
    }

    fn judge(
        &mut self,
        dir: &Path,
        j: &JudgeResults,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html.push_str("<h2>Judge evaluation (Figure 7)</h2>");
        let _ = write!(self.html, "<p>Judge: {}. Each point is one policy's mean judge reward over {} held-out prompts.</p>", esc(&j.judge), j.prompts);
        let mut by: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for p in &j.policies {
            by.entry(p.group.clone()).or_default().push(p.mean_reward);
        }
        let fig = GroupPoints {
            title: "Judge reward per policy".into(),
            y_label: "mean judge reward".into(),
            groups: by.into_iter().collect(),
            reference: Some(("reference policy".into(), j.reference)),
        };
        self.figure_of(dir, "fig7_judge", &fig, ctx);
        self.html.push_str("<table><tr><th>method</th><th>policies</th><th>mean</th><th>variance</th><th>5%</th><th>10%</th><th>25%</th><th>median</th><th>below reference</th></tr>");
        let _ = write!(self.html, "<tr><td>reference</td><td>1</td><td>{:.4}</td><td></td><td></td><td></td><td></td><td></td><td></td></tr>", j.reference);
        for (g, s) in &j.groups {
            let d = &s.distribution;
            let _ = write!(
                self.html,
                "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.3e}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.0}%</td></tr>",
                esc(g), d.n, d.mean, d.variance, d.quantiles[0].1, d.quantiles[1].1, d.quantiles[2].1, d.quantiles[3].1, 100.0 * s.share_below_reference
            );
        }
        self.html.push_str("</table>");
        Ok(())
    }

    fn reward_bench(
        &mut self,
        dir: &Path,
        r: &RewardBenchResults,
        baseline: Option<&RewardBenchResults>,
        ctx: &StageContext,
    ) -> Result<(), StageError> {
        self.html
            .push_str("<h2>RewardBench: every head and the ensemble (Figure 9)</h2>");
        // The baseline's score: the mean of its heads (its only head, for a single model).
        let baseline_label = baseline.map(|b| {
            if b.heads == 1 {
                "baseline (one head)".to_string()
            } else {
                format!("baseline (mean of {} heads)", b.heads)
            }
        });
        let _ = write!(
            self.html,
            "<p>{} pairs, chat template <code>{}</code>. A pair is right when the chosen response's reward is strictly higher. Section scores weight subsets by {}; the overall score weights Chat, Chat Hard, Safety and Reasoning by 1 and Prior Sets by 0.5.</p>",
            r.pairs,
            esc(&r.chat_template),
            match r.weighting {
                crate::data::reward_bench::Weighting::Counts => "their number of pairs",
                crate::data::reward_bench::Weighting::Rewardbench =>
                    "RewardBench's leaderboard counts (math-prm as much as all code subsets)",
            }
        );
        let order = r.section_order();
        let pct = |s: &crate::data::reward_bench::BenchScores, key: &str| {
            s.sections.get(key).map_or(f64::NAN, |x| 100.0 * x.score)
        };
        let fig = HeadBars {
            title: "RewardBench score per section".into(),
            y_label: "score (%)".into(),
            categories: order.iter().map(|(_, t)| t.clone()).collect(),
            heads: r
                .per_head
                .iter()
                .map(|h| order.iter().map(|(k, _)| pct(h, k)).collect())
                .collect(),
            ensemble: order.iter().map(|(k, _)| pct(&r.ensemble, k)).collect(),
            baseline: baseline.zip(baseline_label.clone()).map(|(b, label)| {
                (
                    label,
                    order.iter().map(|(k, _)| pct(&b.ensemble, k)).collect(),
                )
            }),
        };
        self.figure_of(dir, "fig9_reward_bench", &fig, ctx);
        self.html.push_str("<table><tr><th>model</th>");
        for (_, t) in &order {
            let _ = write!(self.html, "<th>{}</th>", esc(t));
        }
        self.html.push_str("<th>overall</th></tr>");
        let rows = r
            .per_head
            .iter()
            .enumerate()
            .map(|(k, s)| (format!("head {k}"), s))
            .chain(std::iter::once(("ensemble mean".to_string(), &r.ensemble)))
            .chain(baseline.zip(baseline_label).map(|(b, l)| (l, &b.ensemble)));
        for (name, s) in rows {
            let _ = write!(self.html, "<tr><td>{name}</td>");
            for (k, _) in &order {
                let _ = write!(self.html, "<td>{:.1}</td>", pct(s, k));
            }
            let _ = write!(self.html, "<td>{:.1}</td></tr>", 100.0 * s.overall);
        }
        self.html.push_str("<tr><td>pairs</td>");
        for (k, _) in &order {
            let _ = write!(self.html, "<td>{}</td>", r.ensemble.sections[k].count);
        }
        let _ = write!(self.html, "<td>{}</td></tr></table>", r.pairs);
        self.html.push_str("<table><tr><th>subset</th><th>section</th><th>pairs</th><th>ensemble accuracy</th><th>heads: min</th><th>max</th></tr>");
        let mut subsets: Vec<_> = r.ensemble.subsets.iter().collect();
        subsets.sort_by_key(|(name, sub)| (sub.section, name.as_str()));
        for (name, sub) in subsets {
            let accs: Vec<f64> = r
                .per_head
                .iter()
                .filter_map(|h| h.subsets.get(name).map(|x| x.accuracy))
                .collect();
            let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let _ = write!(
                self.html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                esc(name),
                sub.section.title(),
                sub.count,
                100.0 * sub.accuracy,
                100.0 * lo,
                100.0 * hi
            );
        }
        self.html.push_str("</table>");
        Ok(())
    }

    /// Writes a figure as SVG and PNG and embeds the SVG; without a font, says so.
    fn figure_of(&mut self, dir: &Path, stem: &str, fig: &impl Figure, ctx: &StageContext) {
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        match render(fig, &svg).and_then(|_| render(fig, &png)) {
            Ok(()) => {
                let text = std::fs::read_to_string(&svg).unwrap_or_default();
                let _ = write!(self.html, "<figure>{text}<figcaption class=\"note\">{stem}.svg, {stem}.png</figcaption></figure>");
            }
            Err(e) => {
                ctx.log(format!("plot `{stem}` skipped: {e}"));
                let _ = write!(
                    self.html,
                    "<p class=\"note\">Plot not drawn: {}</p>",
                    esc(&e)
                );
            }
        }
    }

    fn finish(mut self) -> String {
        self.html.push_str("<p class=\"note\">Generated by dagrun. Every number on this page is in numbers.json.</p></body></html>");
        self.html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sections_are_the_params_fields() {
        let mut known = sections();
        known.sort();
        assert_eq!(
            known,
            [
                "bandit",
                "heads",
                "judge",
                "ppo",
                "reward_bench",
                "reward_bench_baseline",
                "runs",
                "simulate",
                "title"
            ]
        );
    }

    /// The key names the font by its bytes: the same file under two paths is the same font.
    #[test]
    fn the_font_in_the_key_is_its_content() {
        let Ok(id) = plot::font_id() else {
            return; // no font on this machine: the key says `none`
        };
        let env = ReportKind.environment("cpu", Place::Here).unwrap();
        assert_eq!(env["font"], id);
        assert_eq!(id.len(), 16);
        assert!(!env["font"].contains('/'));
    }

    #[test]
    fn final_kls_apart_by_more_than_a_fifth_are_flagged() {
        assert_eq!(kl_mismatch(&[]), None);
        assert_eq!(kl_mismatch(&[("vanilla (8 runs)", 12.6)]), None);
        assert_eq!(
            kl_mismatch(&[
                ("vanilla (8 runs)", 12.6),
                ("variance_aware (8 runs)", 12.2)
            ]),
            None
        );
        let note = kl_mismatch(&[("vanilla (8 runs)", 12.6), ("variance_aware (8 runs)", 9.5)])
            .expect("9.5 is 25 % below 12.6");
        assert!(
            note.starts_with("The final KL of variance_aware (8 runs) (9.500) is 25 % below"),
            "{note}"
        );
        assert_eq!(kl_mismatch(&[("a", 0.0), ("b", 0.0)]), None);
    }

    #[test]
    fn a_reward_bench_baseline_needs_the_reward_bench_section() {
        let k = ReportKind;
        let e = k
            .validate(&serde_json::json!({"reward_bench_baseline": "b.json"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reward_bench_baseline"));
        assert!(e.message.contains("`reward_bench`"), "{}", e.message);
        k.validate(
            &serde_json::json!({"reward_bench": "a.json", "reward_bench_baseline": "b.json"}),
        )
        .unwrap();
        assert!(k
            .validate(&serde_json::json!({"reward_bench_base": "b.json"}))
            .is_err());
    }
}
