//! The `report` kind: one self-contained HTML page (plots inline as SVG) with a table of
//! the numbers beside each plot, the plots again as PNG and SVG files, and every number
//! as `numbers.json`.
//!
//! Params (each section is optional; a section appears when its input is given):
//!
//! | param      | value                                                  |
//! |------------|--------------------------------------------------------|
//! | `title`    | the page title                                         |
//! | `bandit`   | `${stages.<bandit stage>.result}` (Figure 2)           |
//! | `simulate` | `${stages.<simulate stage>.result}`, one or a sweep (Figure 5) |
//!
//! Output `report`: a folder with `index.html`, `numbers.json` and the figures.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde_json::Value;

use crate::theory::{plot, BanditResult, SimulationResult};

pub struct ReportKind;

const KNOWN: [&str; 3] = ["title", "bandit", "simulate"];

impl StageKind for ReportKind {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "an HTML report with plots and tables of upstream results, plus numbers.json"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let Value::Object(o) = params else {
            return Err(ParamError::general("params must be a map"));
        };
        for k in o.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(ParamError::at(
                    k,
                    format!("unknown report section `{k}` (known: {})", KNOWN.join(", ")),
                ));
            }
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("report", ArtifactType::Report)]
    }
    fn environment(&self, _device: &str) -> Result<BTreeMap<String, String>, String> {
        // Plot text is laid out with this font: a different font gives different files.
        let font = plot::ensure_font()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "none".into());
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
        if let Some(v) = ctx.params.get("bandit") {
            let (label, path) = single(v, "bandit")?;
            let r: BanditResult = read_json(&path)?;
            page.bandit(&dir, &r, &label, ctx)?;
            numbers.insert("bandit".into(), serde_json::to_value(&r)?);
        }
        if let Some(v) = ctx.params.get("simulate") {
            let mut results = Vec::new();
            for (label, path) in many(v) {
                let r: SimulationResult = read_json(&path)?;
                results.push((label, r));
            }
            page.simulation(&dir, &results, ctx)?;
            let m: serde_json::Map<String, Value> = results
                .iter()
                .map(|(l, r)| (l.clone(), serde_json::to_value(r).expect("json")))
                .collect();
            numbers.insert("simulate".into(), Value::Object(m));
        }
        std::fs::write(
            dir.join("numbers.json"),
            serde_json::to_vec_pretty(&Value::Object(numbers))?,
        )?;
        std::fs::write(dir.join("index.html"), page.finish())?;
        ctx.log("wrote index.html, numbers.json and the figures (see them with `dagrun export NODE DIR`)");
        Ok(())
    }
}

/// A single artifact path (a reference to one node).
fn single(v: &Value, what: &str) -> Result<(String, String), StageError> {
    many(v)
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{what}` names no artifact").into())
}

/// `(label, path)` of one artifact or of each artifact of a sweep.
fn many(v: &Value) -> Vec<(String, String)> {
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

fn read_json<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, StageError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    Ok(serde_json::from_slice(&bytes).map_err(|e| format!("`{path}`: {e}"))?)
}

/// The HTML page under construction.
struct Page {
    html: String,
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
        Page { html }
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

    fn finish(mut self) -> String {
        self.html.push_str("<p class=\"note\">Generated by dagrun. Every number on this page is in numbers.json.</p></body></html>");
        self.html
    }
}
