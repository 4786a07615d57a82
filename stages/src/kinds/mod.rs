//! Native stage kinds, and what they share.

pub mod backbone_pretrain;
pub mod bandit;
pub mod dataset_mix;
pub mod figures;
pub mod head_ensemble;
pub mod judge_eval;
pub mod lm_pretrain;
pub mod ml_util;
pub mod ppo;
pub mod prompts;
pub mod report;
pub mod reward_bench;
pub mod simulate;
pub mod toy_task;

use dagrun_engine::stage::ParamError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Deserialises a kind's params, turning serde's message into a [`ParamError`] that
/// names the parameter when serde does.
/// The JSON schema of a kind's params type (`StageKind::params_schema`).
pub fn params_schema<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

pub fn parse_params<T: DeserializeOwned>(params: &Value) -> Result<T, ParamError> {
    serde_json::from_value(params.clone()).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .strip_prefix("unknown field `")
            .or_else(|| msg.split("field `").nth(1))
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        ParamError {
            param: field,
            message: msg,
        }
    })
}

/// Writes pretty JSON, creating the parent folder.
pub fn write_json(path: &std::path::Path, v: &impl serde::Serialize) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(
        path,
        serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?,
    )
}
