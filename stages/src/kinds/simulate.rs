//! The `simulate` kind: Figure 5 of the paper. Draws `r̂ = r* + N(0, Σ)` many times in
//! d dimensions, solves Definitions 3.1 and 3.2 for each draw, and compares the true
//! returns of both methods, with Theorem 3.3's closed-form underperformance
//! probabilities beside the Monte-Carlo estimates.
//!
//! Params: [`SimulateParams`]. Output `result`: [`crate::theory::SimulationResult`] as
//! JSON. Metrics: mean and std of the true return, and `P(wᵀr* ≤ 0)` (Monte Carlo,
//! standard error, closed form) per method.

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde_json::Value;

use super::parse_params;
use crate::files::write_json;
use crate::theory::{run_simulation, SimulateParams};

pub struct SimulateKind;

impl StageKind for SimulateKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<
            crate::theory::simulate::SimulateParams,
        >())
    }
    fn name(&self) -> &'static str {
        "simulate"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Figure 5: Monte-Carlo of vanilla vs variance-aware solutions with Theorem 3.3's closed forms"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: SimulateParams = parse_params(params)?;
        p.validate().map_err(super::theory_param_error)?;
        // The returns of both methods per draw (and a sorted copy each for their summary),
        // and a handful of vectors of length d.
        let bytes = 32.0 * p.draws as f64 + 48.0 * p.d as f64;
        let at = if p.draws >= p.d { "draws" } else { "d" };
        crate::memory::fits_physical(bytes, &format!("{} draws in {} dimensions", p.draws, p.d))
            .map_err(|e| ParamError::at(at, e))?;
        // Two histograms (edges and counts) per method.
        crate::memory::fits_physical(32.0 * p.bins as f64, &format!("{} histogram bins", p.bins))
            .map_err(|e| ParamError::at("bins", e))
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("result", ArtifactType::Metrics)]
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: SimulateParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        ctx.progress(0, 1, format!("d={} M={}", p.d, p.draws));
        let r = run_simulation(&p)?;
        for (name, m) in [
            ("vanilla", &r.vanilla),
            ("variance_aware", &r.variance_aware),
        ] {
            ctx.metric(&format!("{name}.mean_return"), m.summary.mean);
            ctx.metric(&format!("{name}.std_return"), m.summary.std);
            ctx.metric(
                &format!("{name}.p_underperform_mc"),
                m.underperformance.monte_carlo,
            );
            ctx.metric(
                &format!("{name}.p_underperform_se"),
                m.underperformance.standard_error,
            );
            ctx.metric(
                &format!("{name}.p_underperform_closed_form"),
                m.underperformance.closed_form,
            );
            ctx.log(format!(
                "{name}: mean {:.5} std {:.5}; P(return ≤ 0) = {:.4} ± {:.4} (closed form {:.4})",
                m.summary.mean,
                m.summary.std,
                m.underperformance.monte_carlo,
                m.underperformance.standard_error,
                m.underperformance.closed_form
            ));
        }
        ctx.progress(1, 1, "done");
        write_json(&ctx.output_path("result"), &r)?;
        Ok(())
    }
}
