//! The `dataset_mix` kind: a preference training set from several sources (JSON Lines or
//! Parquet, flat or chat format), with filters, deduplication, weights or caps, a seeded
//! shuffle and a train/eval split ([`crate::data::mix`] has the exact rules).
//!
//! Params: [`DatasetMixParams`]. Output `data` (dataset folder): `train.jsonl`,
//! `eval.jsonl`, `train.parquet`, `eval.parquet`, rows `{prompt, chosen, rejected,
//! prompt_messages, source}`; `prompt_messages` (the chat before the final assistant
//! message) is present in JSONL only for rows read from chat data, and an empty list in
//! Parquet for flat rows. Metrics: per source `NAME.read`, `NAME.dropped_empty`,
//! `NAME.dropped_identical`, `NAME.dropped_too_long`, `NAME.dropped_duplicate`,
//! `NAME.kept`, `NAME.selected`, `NAME.train`, `NAME.eval`, the same under `total.`, and
//! `train`/`eval` (row counts).

use std::{collections::HashSet, path::Path};

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_params;
use crate::data::{
    artifact_refs_as_text,
    io::preference_columns,
    mix::{mix, Amount, MixOptions, MixSource, MixedPair},
    named, read_preferences, write_jsonl, write_parquet, PreferenceFormat, PreferencePair,
};

/// One source of the mix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixSourceParams {
    /// A `.jsonl`/`.parquet` file, or a folder of them (read recursively, in path order).
    /// Relative paths are relative to the workspace. `${stages.task.preferences}` is the
    /// whole folder; `${stages.task.preferences}/clean.jsonl` one file of it.
    pub path: String,
    /// `auto` (default: per row, chat when `chosen` is a list), `flat` or `chat`.
    #[serde(default)]
    pub format: PreferenceFormat,
    /// The source's name in metrics and in the `source` column; default: the file's stem
    /// (`clean.jsonl` → `clean`) or the folder's name. Required when `path` is a whole
    /// `${stages...}` reference (a cache folder named by its hash).
    #[serde(default)]
    pub name: Option<String>,
    /// Take round(weight × kept) pairs, repeating pairs when weight > 1. Default 1 when no
    /// `cap` is given. Not with `cap`.
    #[serde(default)]
    pub weight: Option<f64>,
    /// Take at most this many distinct pairs. Not with `weight`.
    #[serde(default)]
    pub cap: Option<usize>,
}

impl MixSourceParams {
    /// The name: `name`, else the path's file stem.
    pub fn resolved_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let p = Path::new(self.path.trim_end_matches('/'));
            let stem = if p
                .extension()
                .is_some_and(|e| e == "jsonl" || e == "parquet")
            {
                p.file_stem()
            } else {
                p.file_name()
            };
            stem.map_or_else(|| self.path.clone(), |s| s.to_string_lossy().into_owned())
        })
    }
}

fn default_eval_fraction() -> f64 {
    0.1
}
fn default_max_chars() -> Option<usize> {
    Some(8192)
}
fn default_dedup() -> bool {
    true
}

/// Parameters of `dataset_mix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetMixParams {
    /// The sources; earlier sources win when deduplicating.
    pub sources: Vec<MixSourceParams>,
    /// Seed of the selection, shuffle and split. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Share of the distinct selected pairs that go to eval, in [0, 1). Default 0.1.
    #[serde(default = "default_eval_fraction")]
    pub eval_fraction: f64,
    /// Drop pairs with chars(prompt) + max(chars(chosen), chars(rejected)) above this;
    /// `null` for no limit. Default 8192.
    #[serde(default = "default_max_chars")]
    pub max_chars: Option<usize>,
    /// Drop repeated (prompt, chosen, rejected) triples. Default true.
    #[serde(default = "default_dedup")]
    pub dedup: bool,
}

impl DatasetMixParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.sources.is_empty() {
            return Err(ParamError::at("sources", "needs at least one source"));
        }
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = |f: &str| format!("sources[{i}].{f}");
            if s.path.trim().is_empty() {
                return Err(ParamError::at(&at("path"), "is empty"));
            }
            if s.weight.is_some() && s.cap.is_some() {
                return Err(ParamError::at(
                    &at("cap"),
                    "give either `weight` or `cap`, not both",
                ));
            }
            if let Some(w) = s.weight {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(ParamError::at(&at("weight"), "must be a number ≥ 0"));
                }
            }
            let name = s.resolved_name();
            if name.is_empty() {
                return Err(ParamError::at(&at("name"), "is empty"));
            }
            if !names.insert(name.clone()) {
                return Err(ParamError::at(
                    &at("name"),
                    format!("two sources are named `{name}`: set `name` on one of them"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return Err(ParamError::at("eval_fraction", "must be in [0, 1)"));
        }
        if self.max_chars == Some(0) {
            return Err(ParamError::at("max_chars", "must be at least 1 (or null)"));
        }
        Ok(())
    }
}

pub struct DatasetMixKind;

fn write_split(dir: &Path, split: &str, rows: &[MixedPair]) -> Result<(), StageError> {
    write_jsonl(&dir.join(format!("{split}.jsonl")), rows)?;
    let pairs: Vec<PreferencePair> = rows.iter().map(|r| r.pair.clone()).collect();
    let sources = rows.iter().map(|r| r.source.clone()).collect();
    write_parquet(
        &dir.join(format!("{split}.parquet")),
        &preference_columns(&pairs, Some(sources)),
    )?;
    Ok(())
}

impl StageKind for DatasetMixKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<DatasetMixParams>())
    }
    fn name(&self) -> &'static str {
        "dataset_mix"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "preference pairs from JSONL/Parquet sources (flat or chat): filters, dedup, weights or caps, shuffle, train/eval split"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        // A whole-value `${stages...}` path is a cache folder named by its hash: such a
        // source needs a `name`.
        let sources = params.get("sources").and_then(Value::as_array);
        for (i, s) in sources.into_iter().flatten().enumerate() {
            let whole_ref = s
                .get("path")
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key("$artifact"));
            if whole_ref && s.get("name").is_none() {
                return Err(named(ParamError::at(
                    &format!("sources[{i}].name"),
                    "is required when `path` is a whole `${stages...}` reference",
                )));
            }
        }
        parse_params::<DatasetMixParams>(&artifact_refs_as_text(params))
            .map_err(named)?
            .validate()
            .map_err(named)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("data", ArtifactType::Dataset)]
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: DatasetMixParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        p.validate().map_err(|e| named(e).message)?;
        let mut sources = Vec::new();
        for (i, s) in p.sources.iter().enumerate() {
            if ctx.cancelled() {
                return Err(Box::new(dagrun_engine::stage::Cancelled));
            }
            let name = s.resolved_name();
            ctx.progress(
                i as u64,
                p.sources.len() as u64 + 1,
                format!("reading {name}"),
            );
            let path = ctx.workdir.join(&s.path);
            let pairs = read_preferences(&path, s.format)?;
            ctx.log(format!(
                "{name}: {} pairs from {}",
                pairs.len(),
                path.display()
            ));
            sources.push(MixSource {
                name,
                pairs,
                amount: match (s.weight, s.cap) {
                    (_, Some(c)) => Amount::Cap(c),
                    (w, None) => Amount::Weight(w.unwrap_or(1.0)),
                },
            });
        }
        // Weights repeat pairs: the training split holds up to Σ round(weight × pairs) rows
        // (filters only remove), each a copy of its pair, twice (the split and its output
        // rows). Checked before repeating any.
        let mut bytes = 0.0;
        for (i, src) in sources.iter().enumerate() {
            if let Amount::Weight(w) = src.amount {
                let pair_bytes = src
                    .pairs
                    .iter()
                    .map(|q| (q.prompt.len() + q.chosen.len() + q.rejected.len() + 128) as f64)
                    .sum::<f64>()
                    / src.pairs.len().max(1) as f64;
                let rows = (w * src.pairs.len() as f64).round();
                bytes += 2.0 * rows * pair_bytes;
                crate::memory::fits_available(bytes, &format!("weight {w} of `{}`", src.name))
                    .map_err(|e| format!("sources[{i}].weight: {e}"))?;
            }
        }
        ctx.progress(p.sources.len() as u64, p.sources.len() as u64 + 1, "mixing");
        let mixed = mix(
            sources,
            &MixOptions {
                seed: p.seed,
                eval_fraction: p.eval_fraction,
                max_chars: p.max_chars,
                dedup: p.dedup,
            },
        );
        for (name, c) in mixed
            .counts
            .iter()
            .chain([&("total".to_string(), mixed.total.clone())])
        {
            for (field, v) in c.fields() {
                ctx.metric(&format!("{name}.{field}"), v as f64);
            }
            ctx.log(format!(
                "{name}: read {}, dropped {} empty, {} identical, {} too long, {} duplicate; kept {}, selected {} → train {}, eval {}",
                c.read, c.dropped_empty, c.dropped_identical, c.dropped_too_long,
                c.dropped_duplicate, c.kept, c.selected, c.train, c.eval
            ));
        }
        ctx.metric("train", mixed.train.len() as f64);
        ctx.metric("eval", mixed.eval.len() as f64);
        if mixed.train.is_empty() {
            return Err("the mix is empty: every pair was filtered out or weighted to zero".into());
        }
        let dir = ctx.output_path("data");
        write_split(&dir, "train", &mixed.train)?;
        write_split(&dir, "eval", &mixed.eval)?;
        ctx.progress(
            p.sources.len() as u64 + 1,
            p.sources.len() as u64 + 1,
            "done",
        );
        Ok(())
    }
}
