//! A reward model on RewardBench-format data (docs/algorithms.md §8, the paper's Table 1 and
//! Figure 9): every row's chosen and rejected response read by the reward model
//! ([`crate::ml::reward`]), then accuracies per subset, section scores and the overall score,
//! for the ensemble mean reward and for each head alone; and per section, the distribution of
//! the heads' variance on the chosen responses (Figure 6 per section). Rows, sections,
//! weights and scoring rules: [`crate::data::reward_bench`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::reward_bench::{is_correct, score, BenchRow, BenchScores, Section, Weighting};
use crate::ml::reward::{Exchange, RewardReader};
use crate::ml::{MlError, Result};
use crate::stats::{mean_var, Distribution};

/// The `reward_bench` kind's `results`.
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
pub fn cap_per_subset(rows: Vec<BenchRow>, n: usize) -> Vec<BenchRow> {
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

/// Scores `rows` (their subsets mapped to `sections`) with `reader`; `after_batch` sees the
/// sequences scored so far, of `2 × rows` (an error stops the scoring: cancellation).
pub fn evaluate(
    reader: &RewardReader,
    rows: &[BenchRow],
    sections: &BTreeMap<String, Section>,
    weighting: Weighting,
    ddof: usize,
    after_batch: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<RewardBenchResults> {
    // Sequences 2i (chosen) and 2i+1 (rejected).
    let mut truncated = 0usize;
    let mut seqs = Vec::with_capacity(2 * rows.len());
    for (i, r) in rows.iter().enumerate() {
        for response in [&r.chosen, &r.rejected] {
            let e = reader
                .input()
                .encode(&Exchange::pair(r.prompt.as_str(), response.as_str()))
                .map_err(|e| MlError::Invalid(format!("pair {}: {e}", i + 1)))?;
            truncated += usize::from(e.truncated);
            seqs.push(e.ids);
        }
    }
    let rewards = reader.score_ids(&seqs, after_batch)?;
    let k = rewards.heads;
    let subset_of: Vec<&str> = rows.iter().map(|r| r.subset.as_str()).collect();
    let outcomes = |f: &dyn Fn(usize) -> f64| -> Vec<bool> {
        (0..rows.len())
            .map(|i| is_correct(f(2 * i), f(2 * i + 1)))
            .collect()
    };
    let ensemble = score(
        &subset_of,
        &outcomes(&|s| rewards.mean(s)),
        sections,
        weighting,
    );
    let per_head: Vec<BenchScores> = (0..k)
        .map(|h| {
            score(
                &subset_of,
                &outcomes(&|s| rewards.head(s, h)),
                sections,
                weighting,
            )
        })
        .collect();
    let mut variances: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let sec = sections.get(&r.subset).copied().unwrap_or(Section::Other);
        let heads: Vec<f64> = rewards.row(2 * i).iter().map(|&x| x as f64).collect();
        variances
            .entry(sec.key().to_string())
            .or_default()
            .push(mean_var(&heads, ddof).1);
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        *counts.entry(r.subset.clone()).or_default() += 1;
    }
    Ok(RewardBenchResults {
        heads: k,
        chat_template: reader.input().template().to_string(),
        weighting,
        pairs: rows.len(),
        truncated,
        counts,
        ensemble,
        per_head,
        chosen_variance: variances
            .into_iter()
            .map(|(s, v)| (s, Distribution::of(&v, 20)))
            .collect(),
        ddof,
    })
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
