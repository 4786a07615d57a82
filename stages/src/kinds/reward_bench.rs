//! The `reward_bench` kind (ALGORITHMS.md §8, the paper's Table 1 and Figure 9): a reward
//! model scored on RewardBench-format data, for the ensemble mean reward and for each head.
//!
//! Each row's prompt and response become a user turn and an assistant turn rendered with
//! the model's chat template ([`crate::ml::chat`]); the reward is read at the last token.
//! A pair is right when the chosen response's reward is strictly above the rejected one's.
//! Sections, weights and the overall score: [`crate::data::reward_bench`].
//!
//! Params ([`RewardBenchParams`]):
//!
//! | param             | value |
//! |-------------------|-------|
//! | `model`           | a reward model folder (`${stages.head_ensemble.model}`, `${stages.backbone.model}`, or an exported one) |
//! | `data`            | RewardBench rows `prompt, chosen, rejected, subset`: a `.parquet`/`.jsonl` file or a folder of them |
//! | `chat_template`   | `gemma`, `llama3`, `llama3.1` or `plain`; default: from the `model_type` of the model's `config.json` (gpt2 → plain) |
//! | `batch_size`      | sequences per forward pass (default 32) |
//! | `max_len`         | tokens kept per sequence, the last ones (default 512) |
//! | `weighting`       | `counts` (default, §8: rows per subset) or `rewardbench` (the leaderboard's constants) |
//! | `unknown_subsets` | `error` (default) or `other` (an `Other` section outside the overall score) |
//! | `ddof`            | delta degrees of freedom of the ensemble variance σ² of the chosen rewards (default 1) |
//! | `max_per_subset`  | score only the first N rows of each subset (default 0: all) |
//!
//! Output `results` (JSON, [`RewardBenchResults`]): row counts per subset; per-subset
//! accuracy, section scores and the overall score of the ensemble mean and of every head;
//! per section, the distribution of σ² across heads of the chosen responses' rewards
//! (Figure 6 per section). Metrics: `pairs`, `truncated`, `ensemble.overall`,
//! `ensemble.SECTION`, `head.K.overall`.

use std::collections::BTreeMap;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device, Distribution},
    parse_params, write_json,
};
use crate::{
    data::reward_bench::{
        is_correct, read_rows, score, sections_of, BenchRow, BenchScores, Section, UnknownSubsets,
        Weighting,
    },
    ml::{
        chat::ChatTemplate,
        reward::{ensemble_stats, RewardModel},
        tokenizer::TextTokenizer,
        weights::to_f32_vec,
        Padding, TokenBatch,
    },
};

/// Params of `reward_bench` (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardBenchParams {
    /// The reward model folder.
    pub model: String,
    /// The RewardBench-format data (file or folder).
    pub data: String,
    /// The chat template; default from the model's `config.json`.
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    /// Sequences per forward pass.
    #[serde(default = "b32")]
    pub batch_size: usize,
    /// Tokens kept per sequence (the last ones).
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// How subsets are weighted within a section.
    #[serde(default)]
    pub weighting: Weighting,
    /// What to do with subsets that are not RewardBench's.
    #[serde(default)]
    pub unknown_subsets: UnknownSubsets,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "one")]
    pub ddof: usize,
    /// Rows scored per subset, the first ones (0: all).
    #[serde(default)]
    pub max_per_subset: usize,
}

fn b32() -> usize {
    32
}
fn max_len() -> usize {
    512
}
fn one() -> usize {
    1
}

/// The `results` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardBenchResults {
    /// Number of heads K.
    pub heads: usize,
    /// The chat template used.
    pub chat_template: String,
    pub weighting: Weighting,
    /// Pairs scored.
    pub pairs: usize,
    /// Sequences (of 2 × pairs) cut to `max_len` tokens.
    pub truncated: usize,
    /// Pairs scored per subset.
    pub counts: BTreeMap<String, usize>,
    /// Scores of the ensemble mean reward `(1/K) Σ_k r_k`.
    pub ensemble: BenchScores,
    /// Scores of each head alone (`per_head[k]`: head k).
    pub per_head: Vec<BenchScores>,
    /// Per section key: σ² across heads of the chosen responses' rewards.
    pub chosen_variance: BTreeMap<String, Distribution>,
    pub ddof: usize,
}

impl RewardBenchResults {
    /// The sections scored, in RewardBench's order: (key, title).
    pub fn section_order(&self) -> Vec<(String, String)> {
        crate::data::reward_bench::SECTIONS
            .iter()
            .filter(|s| self.ensemble.sections.contains_key(s.key()))
            .map(|s| (s.key().to_string(), s.title().to_string()))
            .collect()
    }
}

/// Keeps the first `n` rows of each subset (all when `n` is 0), in file order.
fn cap_per_subset(rows: Vec<BenchRow>, n: usize) -> Vec<BenchRow> {
    if n == 0 {
        return rows;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    rows.into_iter()
        .filter(|r| {
            let c = seen.entry(r.subset.clone()).or_default();
            *c += 1;
            *c <= n
        })
        .collect()
}

/// Per-head rewards `[sequences × K]` of token rows, by batches, with progress.
fn score_rows(
    ctx: &StageContext,
    rm: &RewardModel,
    pad_id: u32,
    rows: &[Vec<u32>],
    batch_size: usize,
) -> Result<Vec<f32>, StageError> {
    let k = rm.heads.num_heads();
    let mut out = Vec::with_capacity(rows.len() * k);
    let total = rows.len() as u64;
    for chunk in rows.chunks(batch_size.max(1)) {
        if ctx.cancelled() {
            return Err(Box::new(Cancelled));
        }
        let batch = TokenBatch::from_rows(chunk, pad_id, Padding::Right)?;
        out.extend(to_f32_vec(rm.forward(&batch)?));
        let done = (out.len() / k) as u64;
        ctx.progress(done, total, format!("{} of {total} sequences", done));
    }
    Ok(out)
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
        1
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

        let dir = std::path::Path::new(&p.model);
        let device = node_device(ctx)?;
        let rm = RewardModel::load(dir, &device)?;
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let template = ChatTemplate::for_model(dir, &tok, p.chat_template)?;
        let k = rm.heads.num_heads();
        ctx.log(format!(
            "{} pairs in {} subsets; {k} heads; chat template `{template}`",
            rows.len(),
            sections.len()
        ));

        // Sequences 2i (chosen) and 2i+1 (rejected), the last `max_len` tokens of each.
        let mut truncated = 0usize;
        let mut seqs = Vec::with_capacity(2 * rows.len());
        for (i, r) in rows.iter().enumerate() {
            for response in [&r.chosen, &r.rejected] {
                let text = template
                    .render_pair(&r.prompt, response)
                    .map_err(|e| format!("`{}`: pair {}: {e}", data.display(), i + 1))?;
                let mut ids = template.encode_text(&tok, &text)?;
                if ids.is_empty() {
                    ids.push(tok.pad_id());
                }
                if ids.len() > p.max_len {
                    ids.drain(..ids.len() - p.max_len);
                    truncated += 1;
                }
                seqs.push(ids);
            }
        }
        if truncated > 0 {
            ctx.log(format!(
                "{truncated} of {} sequences cut to their last {} tokens",
                seqs.len(),
                p.max_len
            ));
        }
        let rewards = score_rows(ctx, &rm, tok.pad_id(), &seqs, p.batch_size)?;
        let reward = |seq: usize| &rewards[seq * k..(seq + 1) * k];
        let mean = |r: &[f32]| r.iter().map(|&x| x as f64).sum::<f64>() / k as f64;

        let subset_of: Vec<&str> = rows.iter().map(|r| r.subset.as_str()).collect();
        let outcomes = |f: &dyn Fn(&[f32]) -> f64| -> Vec<bool> {
            (0..rows.len())
                .map(|i| is_correct(f(reward(2 * i)), f(reward(2 * i + 1))))
                .collect()
        };
        let ensemble = score(&subset_of, &outcomes(&mean), &sections, p.weighting);
        let per_head: Vec<BenchScores> = (0..k)
            .map(|h| {
                score(
                    &subset_of,
                    &outcomes(&|r: &[f32]| r[h] as f64),
                    &sections,
                    p.weighting,
                )
            })
            .collect();
        let mut variances: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            let sec = sections.get(&r.subset).copied().unwrap_or(Section::Other);
            variances
                .entry(sec.key().to_string())
                .or_default()
                .push(ensemble_stats(reward(2 * i), p.ddof).1);
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &rows {
            *counts.entry(r.subset.clone()).or_default() += 1;
        }
        let results = RewardBenchResults {
            heads: k,
            chat_template: template.to_string(),
            weighting: p.weighting,
            pairs: rows.len(),
            truncated,
            counts,
            ensemble,
            per_head,
            chosen_variance: variances
                .into_iter()
                .map(|(s, v)| (s, Distribution::of(&v, 20)))
                .collect(),
            ddof: p.ddof,
        };

        ctx.metric("pairs", rows.len() as f64);
        ctx.metric("truncated", truncated as f64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_keeps_the_first_rows_of_each_subset() {
        let row = |s: &str, p: &str| BenchRow {
            prompt: p.into(),
            chosen: String::new(),
            rejected: String::new(),
            subset: s.into(),
        };
        let rows = vec![row("a", "1"), row("b", "2"), row("a", "3"), row("a", "4")];
        let kept: Vec<String> = cap_per_subset(rows.clone(), 2)
            .into_iter()
            .map(|r| r.prompt)
            .collect();
        assert_eq!(kept, ["1", "2", "3"]);
        assert_eq!(cap_per_subset(rows, 0).len(), 4);
    }
}
