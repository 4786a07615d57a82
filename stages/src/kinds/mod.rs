//! Native stage kinds: each a thin adapter — its params (a serde struct whose schema `dagrun
//! kinds KIND` prints), a call into a library module, and its outputs — and what they share.

pub mod backbone_pretrain;
pub mod bandit;
pub mod dataset_mix;
pub mod figures;
pub mod head_ensemble;
pub mod judge_eval;
pub mod kl_calibrate;
pub mod lm_pretrain;
pub mod ml_util;
pub mod ppo;
pub mod prompts;
pub mod report;
pub mod reward_bench;
pub mod simulate;
pub mod toy_task;

use dagrun_engine::stage::{Cancelled, ParamError, StageError};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The JSON schema of a kind's params type (`StageKind::params_schema`).
pub fn params_schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

/// Deserialises a kind's params, turning serde's message into a [`ParamError`] that
/// names the parameter when serde does.
pub fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(params.clone()).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // The path of the value serde choked on (`sources[0].weight`); at the top level, the
        // field its message names (a missing or unknown field).
        let field = match path.as_str() {
            "" | "." => msg
                .strip_prefix("unknown field `")
                .or_else(|| msg.split("field `").nth(1))
                .and_then(|r| r.split('`').next())
                .map(str::to_string),
            p => Some(p.to_string()),
        };
        ParamError {
            param: field,
            message: msg,
        }
    })
}

/// An error of the ML core as a stage's error (an interruption as the engine's [`Cancelled`]).
pub fn stage_error(e: crate::ml::MlError) -> StageError {
    match e {
        crate::ml::MlError::Cancelled => Box::new(Cancelled),
        e => Box::new(e),
    }
}

/// A theory kind's parameter error at the param it names.
pub fn theory_param_error(e: crate::theory::TheoryError) -> ParamError {
    match e {
        crate::theory::TheoryError::InvalidParam { field, reason } => {
            ParamError::at(&field, reason)
        }
        e => ParamError::general(e.to_string()),
    }
}
