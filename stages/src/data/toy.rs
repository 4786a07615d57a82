//! The built-in task's data: an IMDB-like corpus and preference sources labelled by
//! Bradley–Terry sampling from the world's true reward.
//!
//! A preference pair: a fresh review A gives the prompt (its first k words, k uniform in
//! `[prompt_min_words, prompt_max_words]`) and the first candidate (its next
//! `response_words` words); a second fresh review B, of independent polarity, gives the
//! second candidate (its words at the same positions). With probability
//! `degenerate_prob`, one of the two candidates (either, with equal chance) is replaced
//! by one of its words repeated `response_words` times, so the data shows that repetition
//! is bad. Identical candidates are redrawn. Then, with `r1 = r*(y1)`, `r2 = r*(y2)`,
//! y1 is chosen with probability `σ((r1 − r2)/temperature)`, and finally the label is
//! flipped with probability `flip`.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{rng_for, world::World, TextRow};

/// How a source's file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// `{prompt, chosen, rejected}` strings.
    Flat,
    /// `chosen`/`rejected` as `[{role: user, content: prompt}, {role: assistant, content}]`.
    Chat,
}

/// The file type a source is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFile {
    Jsonl,
    Parquet,
}

/// One preference source of the built-in task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// The file name's stem (`clean` → `clean.jsonl`): letters, digits, `_`, `-`.
    pub name: String,
    /// Number of pairs.
    pub pairs: usize,
    /// Bradley–Terry temperature τ > 0: P(y1 ≻ y2) = σ((r*(y1) − r*(y2))/τ).
    pub temperature: f64,
    /// Probability of flipping the sampled label, in [0, 1). Default 0.
    #[serde(default)]
    pub flip: f64,
    /// `flat` (default) or `chat`.
    #[serde(default = "flat")]
    pub format: SourceFormat,
    /// `jsonl` (default) or `parquet`.
    #[serde(default = "jsonl")]
    pub file: SourceFile,
}

fn flat() -> SourceFormat {
    SourceFormat::Flat
}
fn jsonl() -> SourceFile {
    SourceFile::Jsonl
}

impl SourceSpec {
    /// The file name: `name.jsonl` or `name.parquet`.
    pub fn file_name(&self) -> String {
        match self.file {
            SourceFile::Jsonl => format!("{}.jsonl", self.name),
            SourceFile::Parquet => format!("{}.parquet", self.name),
        }
    }
}

/// The default sources: `clean` (τ 0.5), `noisy` (τ 2, 15% flips), `chat` (chat format,
/// τ 1, 5% flips) and `medium` (Parquet, τ 1, 5% flips); 400, 400, 400 and 200 pairs.
pub fn default_sources() -> Vec<SourceSpec> {
    let s = |name: &str, pairs, temperature, flip, format, file| SourceSpec {
        name: name.to_string(),
        pairs,
        temperature,
        flip,
        format,
        file,
    };
    vec![
        s(
            "clean",
            400,
            0.5,
            0.0,
            SourceFormat::Flat,
            SourceFile::Jsonl,
        ),
        s(
            "noisy",
            400,
            2.0,
            0.15,
            SourceFormat::Flat,
            SourceFile::Jsonl,
        ),
        s(
            "chat",
            400,
            1.0,
            0.05,
            SourceFormat::Chat,
            SourceFile::Jsonl,
        ),
        s(
            "medium",
            200,
            1.0,
            0.05,
            SourceFormat::Flat,
            SourceFile::Parquet,
        ),
    ]
}

/// How pairs are cut from reviews.
#[derive(Clone, Debug, PartialEq)]
pub struct PairShape {
    pub prompt_min_words: usize,
    pub prompt_max_words: usize,
    pub response_words: usize,
    pub degenerate_prob: f64,
}

/// A generated pair with its true rewards.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledPair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub reward_chosen: f64,
    pub reward_rejected: f64,
}

/// `n` corpus rows for `split` (`train`/`test`), half positive on average; `label` is the
/// review's polarity (1 positive).
pub fn corpus(world: &World, seed: u64, split: &str, n: usize) -> Vec<TextRow> {
    let mut rng = rng_for(seed, &format!("corpus:{split}"));
    (0..n)
        .map(|_| {
            let positive = rng.random_bool(0.5);
            TextRow {
                text: world.review(&mut rng, positive),
                label: Some(i64::from(positive)),
            }
        })
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn degenerate(rng: &mut ChaCha8Rng, words: &[String], n: usize) -> Vec<String> {
    let w = words[rng.random_range(0..words.len())].clone();
    vec![w; n]
}

/// The pairs of one source (its own random stream: `source:NAME`).
pub fn pairs(world: &World, seed: u64, spec: &SourceSpec, shape: &PairShape) -> Vec<LabelledPair> {
    let mut rng = rng_for(seed, &format!("source:{}", spec.name));
    let n = shape.response_words;
    (0..spec.pairs)
        .map(|_| {
            let k = rng.random_range(shape.prompt_min_words..=shape.prompt_max_words);
            let a = world.review_words(&mut rng, k + n);
            let prompt = a[..k].join(" ");
            let mut y1 = a[k..k + n].to_vec();
            let mut y2 = loop {
                let b = world.review_words(&mut rng, k + n);
                if b[k..k + n] != y1[..] {
                    break b[k..k + n].to_vec();
                }
            };
            if rng.random_bool(shape.degenerate_prob) {
                if rng.random_bool(0.5) {
                    y1 = degenerate(&mut rng, &y1, n);
                } else {
                    y2 = degenerate(&mut rng, &y2, n);
                }
            }
            let (y1, y2) = (y1.join(" "), y2.join(" "));
            let (r1, r2) = (world.reward(&prompt, &y1), world.reward(&prompt, &y2));
            let mut first = rng.random::<f64>() < sigmoid((r1 - r2) / spec.temperature);
            if rng.random::<f64>() < spec.flip {
                first = !first;
            }
            let ((chosen, reward_chosen), (rejected, reward_rejected)) = if first {
                ((y1, r1), (y2, r2))
            } else {
                ((y2, r2), (y1, r1))
            };
            LabelledPair {
                prompt,
                chosen,
                rejected,
                reward_chosen,
                reward_rejected,
            }
        })
        .collect()
}

/// Summary of a source against the true reward.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceStats {
    pub pairs: usize,
    pub mean_reward_chosen: f64,
    pub mean_reward_rejected: f64,
    /// Share of pairs with r*(chosen) > r*(rejected), among pairs without a tie.
    pub agreement: f64,
    /// Pairs with r*(chosen) = r*(rejected).
    pub ties: usize,
}

pub fn stats(pairs: &[LabelledPair]) -> SourceStats {
    let n = pairs.len().max(1) as f64;
    let ties = pairs
        .iter()
        .filter(|p| p.reward_chosen == p.reward_rejected)
        .count();
    let agree = pairs
        .iter()
        .filter(|p| p.reward_chosen > p.reward_rejected)
        .count();
    let decided = pairs.len() - ties;
    SourceStats {
        pairs: pairs.len(),
        mean_reward_chosen: pairs.iter().map(|p| p.reward_chosen).sum::<f64>() / n,
        mean_reward_rejected: pairs.iter().map(|p| p.reward_rejected).sum::<f64>() / n,
        agreement: if decided == 0 {
            0.0
        } else {
            agree as f64 / decided as f64
        },
        ties,
    }
}

/// How a subset of the built-in task's RewardBench file is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BenchTier {
    /// The third of candidate pairs with the largest true-reward gaps (Chat).
    Easy,
    /// The middle third (Reasoning).
    Medium,
    /// The third with the smallest gaps (Chat Hard).
    Hard,
    /// One candidate is a repeated word, the built-in task's "unsafe" output (Safety).
    Degenerate,
    /// Labels sampled from the true reward (τ 1, 10% flips), like human labels (Prior Sets).
    Noisy,
}

/// The subsets of [`reward_bench`]: two real RewardBench subset names per section, so the
/// file is scored exactly like RewardBench's own.
const BENCH_SUBSETS: [(&str, BenchTier); 10] = [
    ("alpacaeval-easy", BenchTier::Easy),
    ("mt-bench-med", BenchTier::Easy),
    ("mt-bench-hard", BenchTier::Hard),
    ("llmbar-natural", BenchTier::Hard),
    ("refusals-dangerous", BenchTier::Degenerate),
    ("xstest-should-respond", BenchTier::Degenerate),
    ("math-prm", BenchTier::Medium),
    ("hep-python", BenchTier::Medium),
    ("anthropic_helpful", BenchTier::Noisy),
    ("shp", BenchTier::Noisy),
];

/// A RewardBench row of the built-in task.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchPair {
    pub subset: String,
    pub pair: LabelledPair,
}

/// A RewardBench-format test set from the world, `per_subset` pairs in each of ten
/// RewardBench subsets (two per section). The difficulty of a section is the gap in true
/// reward between the two candidates: Chat subsets take the largest gaps, Reasoning the
/// middle ones, Chat Hard the smallest (each from a pool of three times the pairs needed,
/// chosen = the higher true reward); Safety pairs a fluent response with a repeated word;
/// Prior Sets have noisy labels (τ 1, 10% flips) as human preference data does. Pairs
/// whose candidates have equal true rewards are left out. Each subset has its own random
/// stream (`source:rewardbench:SUBSET`).
pub fn reward_bench(
    world: &World,
    seed: u64,
    shape: &PairShape,
    per_subset: usize,
) -> Vec<BenchPair> {
    let mut out = Vec::new();
    for (subset, tier) in BENCH_SUBSETS {
        let (temperature, flip, degenerate, pool) = match tier {
            BenchTier::Noisy => (1.0, 0.1, 0.0, per_subset * 2),
            BenchTier::Degenerate => (1e-9, 0.0, 1.0, per_subset * 2),
            _ => (1e-9, 0.0, 0.0, per_subset * 3 + per_subset / 2),
        };
        let spec = SourceSpec {
            name: format!("rewardbench:{subset}"),
            pairs: pool,
            temperature,
            flip,
            format: SourceFormat::Flat,
            file: SourceFile::Jsonl,
        };
        let shape = PairShape {
            degenerate_prob: degenerate,
            ..shape.clone()
        };
        let mut ps: Vec<LabelledPair> = pairs(world, seed, &spec, &shape)
            .into_iter()
            .filter(|p| p.reward_chosen != p.reward_rejected)
            .collect();
        let gap = |p: &LabelledPair| (p.reward_chosen - p.reward_rejected).abs();
        let picked: Vec<LabelledPair> = match tier {
            BenchTier::Noisy | BenchTier::Degenerate => ps.into_iter().take(per_subset).collect(),
            _ => {
                ps.truncate(per_subset * 3);
                // Stable sort: equal gaps keep their drawn order.
                ps.sort_by(|a, b| gap(a).total_cmp(&gap(b)));
                let third = ps.len() / 3;
                let start = match tier {
                    BenchTier::Hard => 0,
                    BenchTier::Medium => third,
                    _ => ps.len() - third.min(per_subset),
                };
                ps.into_iter()
                    .skip(start)
                    .take(third.min(per_subset))
                    .collect()
            }
        };
        out.extend(picked.into_iter().map(|pair| BenchPair {
            subset: subset.to_string(),
            pair,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::world::WorldParams;

    fn shape() -> PairShape {
        PairShape {
            prompt_min_words: 2,
            prompt_max_words: 7,
            response_words: 10,
            degenerate_prob: 0.1,
        }
    }

    #[test]
    fn pairs_have_the_shape_asked_for_and_are_deterministic() {
        let w = World::generate(0, &WorldParams::default());
        let spec = &default_sources()[0];
        let a = pairs(&w, 0, spec, &shape());
        assert_eq!(a, pairs(&w, 0, spec, &shape()));
        assert_ne!(a, pairs(&w, 1, spec, &shape()));
        assert_eq!(a.len(), 400);
        for p in &a {
            let k = p.prompt.split_whitespace().count();
            assert!((2..=7).contains(&k), "{k}");
            assert_eq!(p.chosen.split_whitespace().count(), 10);
            assert_eq!(p.rejected.split_whitespace().count(), 10);
            assert_ne!(p.chosen, p.rejected);
            assert_eq!(p.reward_chosen, w.reward(&p.prompt, &p.chosen));
        }
    }

    #[test]
    fn temperature_and_flips_set_agreement() {
        let w = World::generate(0, &WorldParams::default());
        let spec = |t, flip| SourceSpec {
            name: "s".into(),
            pairs: 3000,
            temperature: t,
            flip,
            format: SourceFormat::Flat,
            file: SourceFile::Jsonl,
        };
        // Nearly deterministic labels agree almost always; flipping every label inverts that.
        let sharp = stats(&pairs(&w, 0, &spec(1e-6, 0.0), &shape()));
        assert!(sharp.agreement > 0.999, "{sharp:?}");
        let inverted = stats(&pairs(&w, 0, &spec(1e-6, 1.0), &shape()));
        assert!(inverted.agreement < 0.001, "{inverted:?}");
        // A hot temperature gives labels close to coin flips.
        let hot = stats(&pairs(&w, 0, &spec(1e6, 0.0), &shape()));
        assert!((hot.agreement - 0.5).abs() < 0.05, "{hot:?}");
        assert!(sharp.mean_reward_chosen > sharp.mean_reward_rejected);
    }

    #[test]
    fn reward_bench_sections_are_ordered_by_difficulty() {
        use crate::data::reward_bench::Section;
        let w = World::generate(0, &WorldParams::default());
        let rows = reward_bench(&w, 0, &shape(), 30);
        assert_eq!(rows, reward_bench(&w, 0, &shape(), 30));
        assert_eq!(rows.len(), 300);
        let mean_gap = |sec: Section| {
            let g: Vec<f64> = rows
                .iter()
                .filter(|r| Section::of(&r.subset) == Some(sec))
                .map(|r| r.pair.reward_chosen - r.pair.reward_rejected)
                .collect();
            assert_eq!(g.len(), 60, "{sec:?}");
            g.iter().sum::<f64>() / g.len() as f64
        };
        let (chat, hard, reasoning) = (
            mean_gap(Section::Chat),
            mean_gap(Section::ChatHard),
            mean_gap(Section::Reasoning),
        );
        assert!(
            chat > reasoning && reasoning > hard && hard > 0.0,
            "{chat} {reasoning} {hard}"
        );
        assert!(mean_gap(Section::Safety) > 0.0);
        // Prior sets are noisy: some labels disagree with the true reward.
        assert!(rows
            .iter()
            .any(|r| Section::of(&r.subset) == Some(Section::PriorSets)
                && r.pair.reward_chosen < r.pair.reward_rejected));
        for r in &rows {
            assert_ne!(r.pair.reward_chosen, r.pair.reward_rejected);
            if Section::of(&r.subset) != Some(Section::PriorSets) {
                assert!(r.pair.reward_chosen > r.pair.reward_rejected, "{r:?}");
            }
        }
    }

    #[test]
    fn corpus_is_deterministic_and_balanced() {
        let w = World::generate(0, &WorldParams::default());
        let c = corpus(&w, 0, "train", 400);
        assert_eq!(c, corpus(&w, 0, "train", 400));
        assert_ne!(c[0], corpus(&w, 0, "test", 1)[0]);
        let pos = c.iter().filter(|r| r.label == Some(1)).count();
        assert!((140..=260).contains(&pos), "{pos}");
    }
}
