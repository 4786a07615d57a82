//! Judge evaluation (docs/algorithms.md §6, the paper's Figure 7): every trained policy, and
//! the reference, answers held-out prompts; a judge scores each answer; a policy's result is
//! its mean judge reward, and each method's is the distribution of its policies' results.
//!
//! The judge is a reward model read through [`crate::ml::reward`] (one of its heads, or their
//! mean) or, on the built-in task, the world's ground-truth reward. A policy answers its
//! prompts as PPO trained it to: read with the same template and ids
//! ([`crate::rl::policy::read_prompts`]), and the judge reads each prompt's own text and the
//! response exactly as PPO's reward model reads a sample.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::World;
use crate::ml::inference::generate::{generate, GenerateConfig};
use crate::ml::inference::sampling::SamplingConfig;
use crate::ml::io::chat::ChatTemplate;
use crate::ml::io::tokenizer::TextTokenizer;
use crate::ml::models::backbone::Backbone;
use crate::ml::models::gpt2_hf::TOKENIZER_FILE;
use crate::ml::models::hf_weights::WeightDtype;
use crate::ml::reward::{Exchange, RewardReader};
use crate::ml::rng::SeededRng;
use crate::ml::{MlError, Result};
use crate::rl::policy::read_prompts;
use crate::stats::Distribution;

/// Who scores the answers.
// One judge per run: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Judge {
    /// The built-in task's ground-truth reward.
    World(World),
    /// A reward model: head `head`, or the mean of its heads.
    Model {
        reader: RewardReader,
        head: Option<usize>,
    },
}

impl Judge {
    /// The judge's score of each exchange.
    pub fn score(&self, exchanges: &[Exchange]) -> Result<Vec<f64>> {
        match self {
            Judge::World(w) => Ok(exchanges
                .iter()
                .map(|e| w.reward(e.prompt(), e.response()))
                .collect()),
            Judge::Model { reader, head } => {
                let scores = reader.score(exchanges)?;
                Ok((0..scores.len())
                    .map(|i| match head {
                        Some(h) => scores.head(i, *h),
                        None => scores.mean(i),
                    })
                    .collect())
            }
        }
    }
}

/// How answers are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerConfig {
    /// Most tokens per answer.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// Seed of the sampling: every policy gets the same stream of draws.
    pub seed: u64,
    /// How the policy reads a prompt (`ppo`'s `prompt_template`: `None` is `plain`), see
    /// [`read_prompts`].
    pub prompt_template: Option<ChatTemplate>,
}

/// A policy's answers to the held-out prompts.
#[derive(Debug, Clone)]
pub struct Answers {
    /// The template the policy read the prompts with.
    pub template: ChatTemplate,
    /// Each prompt's token ids as the policy read them (as PPO's rollout encodes them).
    pub prompt_ids: Vec<Vec<u32>>,
    /// The sampled sequences (prompt ⊕ response, the policy's token ids) and their prompt
    /// lengths.
    pub sequences: Vec<Vec<u32>>,
    pub prompt_lens: Vec<usize>,
    /// What the judge reads of each: the prompt's own text and the response, as PPO's reward
    /// model reads a sample ([`crate::ml::reward::SampleTexts`]).
    pub exchanges: Vec<Exchange>,
    /// The first prompt's ids as text (special tokens kept): what the policy was shown.
    pub first_prompt: String,
}

/// The answers of the policy in folder `dir` (any architecture [`Backbone`] loads, with its
/// `tokenizer.json`) to `prompts`: the prompts read as PPO reads them ([`read_prompts`] with
/// `cfg.prompt_template`), responses sampled until a stop id the folder declares.
pub fn sample_answers(
    dir: &Path,
    prompts: &[String],
    cfg: &AnswerConfig,
    device: &Device,
) -> Result<Answers> {
    if prompts.is_empty() {
        return Err(MlError::Invalid("no prompts to evaluate".into()));
    }
    let tok = TextTokenizer::from_file(&dir.join(TOKENIZER_FILE))?;
    let read = read_prompts(dir, tok.clone(), cfg.prompt_template.as_ref(), prompts)?;
    let lm = Backbone::from_hf_dir(dir, device, WeightDtype::F32)?;
    let generation = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: SamplingConfig {
            temperature: cfg.temperature,
            ..SamplingConfig::default()
        },
        stop_ids: crate::ml::models::decoder_hf::stop_ids(dir, &tok)?,
        pad_id: tok.pad_id(),
    };
    // The same sampling stream for every policy: differences come from the policies.
    let mut rng = SeededRng::new(cfg.seed);
    let (mut sequences, mut prompt_lens, mut exchanges) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in read.ids.chunks(cfg.batch_size.max(1)) {
        let g = generate(&lm, chunk, &generation, &mut rng)?;
        for (s, &n) in g.sequences.iter().zip(&g.prompt_lens) {
            exchanges.push(read.samples.exchange(s, n, &generation.stop_ids)?);
        }
        sequences.extend(g.sequences);
        prompt_lens.extend(g.prompt_lens);
    }
    Ok(Answers {
        first_prompt: tok.decode(&read.ids[0])?,
        template: read.template,
        prompt_ids: read.ids,
        sequences,
        prompt_lens,
        exchanges,
    })
}

/// A policy's judged answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The mean and standard deviation of the judge's scores.
    pub mean: f64,
    pub std: f64,
    /// The first prompt as the policy read it ([`Answers::first_prompt`]).
    pub first_prompt: String,
}

/// The judge's scores of the answers of the policy in folder `dir` to `prompts`
/// ([`sample_answers`]).
pub fn evaluate_policy(
    dir: &Path,
    prompts: &[String],
    cfg: &AnswerConfig,
    judge: &Judge,
    device: &Device,
) -> Result<Evaluation> {
    let answers = sample_answers(dir, prompts, cfg, device)?;
    let scores = judge.score(&answers.exchanges)?;
    let d = Distribution::of(&scores, 10);
    Ok(Evaluation {
        mean: d.mean,
        std: d.std,
        first_prompt: answers.first_prompt,
    })
}

/// One policy's evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyScore {
    pub node: String,
    pub group: String,
    pub mean_reward: f64,
    pub std_reward: f64,
    /// The first held-out prompt as this policy read it (its ids as text).
    #[serde(default)]
    pub first_prompt: String,
}

/// The `judge_eval` kind's `results`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeResults {
    pub judge: String,
    pub prompts: usize,
    /// How the policies and the reference read the prompts (`plain`, or a chat template).
    #[serde(default)]
    pub prompt_template: String,
    pub reference: f64,
    /// The first held-out prompt as the reference read it.
    #[serde(default)]
    pub reference_first_prompt: String,
    pub policies: Vec<PolicyScore>,
    /// Per group: the distribution of its policies' mean judge rewards, and the share of
    /// its policies that fall below the reference policy.
    pub groups: BTreeMap<String, GroupSummary>,
}

/// One group's (method's) policies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    pub distribution: Distribution,
    pub share_below_reference: f64,
}

/// Groups the policies' mean rewards by their `group` and summarises each group against the
/// reference policy's mean reward.
pub fn summarize(reference: f64, policies: &[PolicyScore]) -> BTreeMap<String, GroupSummary> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in policies {
        groups
            .entry(s.group.clone())
            .or_default()
            .push(s.mean_reward);
    }
    groups
        .into_iter()
        .map(|(g, v)| {
            let below = v.iter().filter(|&&x| x < reference).count() as f64 / v.len() as f64;
            (
                g,
                GroupSummary {
                    distribution: Distribution::of(&v, 10),
                    share_below_reference: below,
                },
            )
        })
        .collect()
}
