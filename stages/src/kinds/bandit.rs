//! The `bandit` kind: Figure 2 of the paper, a three-armed bandit where the vanilla
//! KL-regularised policy chases a noisy arm and the variance-aware one does not.
//!
//! Params: [`BanditParams`] (every field has a default). Output `result`: the
//! [`crate::theory::BanditResult`] as JSON. Metrics: the true return of each policy.

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde_json::Value;

use super::parse_params;
use crate::files::write_json;
use crate::theory::{run_bandit, BanditParams};

pub struct BanditKind;

impl StageKind for BanditKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<crate::theory::bandit::BanditParams>())
    }
    fn name(&self) -> &'static str {
        "bandit"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "Figure 2: vanilla vs variance-aware KL-regularised policies on a bandit"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: BanditParams = parse_params(params)?;
        p.validate().map_err(super::theory_param_error)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("result", ArtifactType::Metrics)]
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: BanditParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let r = run_bandit(&p)?;
        ctx.metric("true_return_reference", r.reference.true_return);
        ctx.metric("true_return_vanilla", r.vanilla.true_return);
        ctx.metric("true_return_variance_aware", r.variance_aware.true_return);
        ctx.metric("kl_vanilla", r.vanilla.kl_to_reference);
        ctx.metric("kl_variance_aware", r.variance_aware.kl_to_reference);
        ctx.log(format!(
            "true return: reference {:.4}, vanilla {:.4}, variance-aware {:.4}",
            r.reference.true_return, r.vanilla.true_return, r.variance_aware.true_return
        ));
        write_json(&ctx.output_path("result"), &r)?;
        Ok(())
    }
}
