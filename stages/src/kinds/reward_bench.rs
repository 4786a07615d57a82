//! The `reward_bench` kind (the paper's Table 1 and Figure 9): a reward model scored on
//! RewardBench-format data, for the ensemble mean reward and for each head. The algorithm is
//! [`crate::rm::bench`]; how the model reads a row's prompt and response (its chat template,
//! the last `max_len` tokens): [`crate::ml::reward`]. A pair is right when the chosen
//! response's reward is strictly above the rejected one's. Sections, weights and the overall
//! score: [`crate::data::reward_bench`]. The params: [`RewardBenchParams`] (`dagrun kinds
//! reward_bench`).
//!
//! Output `results` (JSON, [`crate::rm::bench::RewardBenchResults`]): row counts per subset; per-subset
//! accuracy, section scores and the overall score of the ensemble mean and of every head;
//! per section, the distribution of σ² across heads of the chosen responses' rewards
//! (Figure 6 per section). Metrics: `pairs`, `truncated`, `ensemble.overall`,
//! `ensemble.SECTION`, `head.K.overall`.

use std::collections::BTreeMap;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, Place, StageContext, StageError, StageKind};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device},
    parse_params, stage_error,
};
use crate::{
    data::reward_bench::{read_rows, sections_of, UnknownSubsets, Weighting},
    files::write_json,
    ml::{io::chat::ChatTemplate, models::hf_weights::WeightDtype, reward::RewardReader, MlError},
    rm::bench::{cap_per_subset, evaluate},
};

/// Params of `reward_bench`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBenchParams {
    /// The reward model folder (`${stages.head_ensemble.model}`, `${stages.backbone.model}`,
    /// or an exported one).
    pub model: String,
    /// RewardBench rows `prompt, chosen, rejected, subset`: a `.parquet`/`.jsonl` file or a
    /// folder of them.
    pub data: String,
    /// The chat template (`model`: the folder's own; `gemma`, `llama3`, `llama3.1`, `qwen2.5`,
    /// `plain`); default: the folder's own `chat_template` (tokenizer_config.json) when it has
    /// one, else from the `model_type` of its `config.json` (gpt2 → plain, gemma → gemma,
    /// llama → llama3, qwen2 → qwen2.5).
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    /// Sequences per forward pass.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Tokens kept per sequence (the last ones; a leading BOS stays).
    #[serde(default = "defaults::max_len")]
    pub max_len: usize,
    /// How subsets are weighted within a section: `counts` (rows per subset) or
    /// `rewardbench` (the leaderboard's constants).
    #[serde(default)]
    pub weighting: Weighting,
    /// What to do with subsets that are not RewardBench's: `error`, or `other` (an `Other`
    /// section outside the overall score).
    #[serde(default)]
    pub unknown_subsets: UnknownSubsets,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "defaults::ddof")]
    pub ddof: usize,
    /// Rows scored per subset, the first ones (0: all).
    #[serde(default)]
    pub max_per_subset: usize,
}

/// The defaults of [`RewardBenchParams`], by field.
mod defaults {
    pub fn batch_size() -> usize {
        32
    }
    pub fn max_len() -> usize {
        512
    }
    pub fn ddof() -> usize {
        1
    }
}

pub struct RewardBenchKind;

impl StageKind for RewardBenchKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<RewardBenchParams>())
    }
    fn name(&self) -> &'static str {
        "reward_bench"
    }
    fn version(&self) -> u32 {
        // 2: the model reads through `ml::reward` (one reader for every kind): `plain` text
        // gets the special tokens its tokenizer adds (a BOS for Gemma/Llama tokenizers,
        // nothing for GPT-2's), and a truncation keeps the leading BOS.
        2
    }
    fn summary(&self) -> &'static str {
        "RewardBench scores (per subset, section, overall) of a reward model's ensemble mean and of each head"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: RewardBenchParams = parse_params(&crate::data::artifact_refs_as_text(params))
            .map_err(crate::data::named)?;
        if p.batch_size == 0 {
            return Err(ParamError::at("batch_size", "must be at least 1"));
        }
        if p.max_len == 0 {
            return Err(ParamError::at("max_len", "must be at least 1"));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("results", ArtifactType::Metrics)]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: RewardBenchParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let data = std::path::Path::new(&p.data);
        let rows = cap_per_subset(read_rows(data)?, p.max_per_subset);
        if rows.is_empty() {
            return Err(format!("`{}` has no rows", data.display()).into());
        }
        let sections = sections_of(rows.iter().map(|r| r.subset.as_str()), p.unknown_subsets)
            .map_err(|e| format!("`{}`: {e}", data.display()))?;
        let device = node_device(ctx)?;
        let reader = RewardReader::load(
            std::path::Path::new(&p.model),
            &device,
            WeightDtype::F32,
            p.chat_template,
            p.max_len,
            p.batch_size,
        )?;
        ctx.log(format!(
            "{} pairs in {} subsets; {} heads; chat template `{}`",
            rows.len(),
            sections.len(),
            reader.num_heads(),
            reader.input().template()
        ));
        let total = 2 * rows.len() as u64;
        let results = {
            let ctx_ref: &StageContext = ctx;
            evaluate(
                &reader,
                &rows,
                &sections,
                p.weighting,
                p.ddof,
                &mut |done| {
                    if ctx_ref.cancelled() {
                        return Err(MlError::Cancelled);
                    }
                    ctx_ref.progress(done as u64, total, format!("{done} of {total} sequences"));
                    Ok(())
                },
            )
            .map_err(|e| match e {
                MlError::Invalid(m) => format!("`{}`: {m}", data.display()).into(),
                e => stage_error(e),
            })?
        };
        if results.truncated > 0 {
            ctx.log(format!(
                "{} of {} sequences cut to their last {} tokens",
                results.truncated,
                2 * rows.len(),
                p.max_len
            ));
        }
        ctx.metric("pairs", rows.len() as f64);
        ctx.metric("truncated", results.truncated as f64);
        ctx.metric("ensemble.overall", results.ensemble.overall);
        for (key, title) in results.section_order() {
            let e = results.ensemble.sections[&key].score;
            ctx.metric(&format!("ensemble.{key}"), e);
            let hs: Vec<f64> = results
                .per_head
                .iter()
                .filter_map(|h| h.sections.get(&key).map(|s| s.score))
                .collect();
            let (lo, hi) = hs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                    (a.min(x), b.max(x))
                });
            ctx.log(format!(
                "{title}: ensemble {:.1}%, heads {:.1}–{:.1}% ({} pairs)",
                100.0 * e,
                100.0 * lo,
                100.0 * hi,
                results.ensemble.sections[&key].count
            ));
        }
        for (h, s) in results.per_head.iter().enumerate() {
            ctx.metric(&format!("head.{h}.overall"), s.overall);
        }
        ctx.log(format!(
            "overall: ensemble {:.1}%",
            100.0 * results.ensemble.overall
        ));
        write_json(&ctx.output_path("results"), &results)?;
        Ok(())
    }
}
