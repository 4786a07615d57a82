//! The `judge_eval` kind (ALGORITHMS.md §6): every trained policy, and the reference,
//! answers held-out prompts; a judge scores each answer; each policy gets its mean judge
//! reward, and each method (a matrix key of the policies, `method` by default) gets the
//! distribution of its policies' scores (Figure 7).
//!
//! The judge is a reward model folder (its head `judge_head`, or the mean of its heads) —
//! dagrun's heads on any backbone, or a Hugging Face Llama/Gemma `*ForSequenceClassification`
//! folder such as the paper's FsfairX-LLaMA3-RM, loaded in `judge_dtype` (`f32` or `bf16`) —
//! or, on the built-in task, the world's ground-truth reward (`judge_world`). Policies are
//! Hugging Face folders of any architecture `ml::backbone` loads (GPT-2, Gemma, Llama).

use std::collections::BTreeMap;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{
        backend_env, encode_tail, model_template, node_device, split_file, without_stop,
        Distribution,
    },
    parse_params, write_json,
};
use crate::{
    data::{read_texts, World},
    ml::{
        backbone::Backbone,
        chat::ChatTemplate,
        generate::{generate, GenerateConfig},
        hf_weights::WeightDtype,
        reward::RewardModel,
        rng::SeededRng,
        sampling::SamplingConfig,
        tokenizer::TextTokenizer,
        weights::to_f32_vec,
        Padding, TokenBatch,
    },
};

/// One policy to evaluate: a path, or `{node, matrix, path}` from a sweep reference.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PolicyRef {
    Path(String),
    Node {
        node: String,
        matrix: BTreeMap<String, Value>,
        path: String,
        #[serde(default)]
        label: Option<String>,
    },
}

/// Params of `judge_eval`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeEvalParams {
    /// The trained policies (usually `${stages.ppo.policy}`, a sweep).
    pub policies: Vec<PolicyRef>,
    /// The reference policy.
    pub reference: String,
    /// Held-out prompts: a folder with a `test` split (the `prompts` output) or a file.
    pub prompts: String,
    /// A judge reward model folder.
    #[serde(default)]
    pub judge_model: Option<String>,
    /// How the judge reads a prompt and a response (`plain`, `gemma`, `llama3`, `llama3.1`); default:
    /// from its `config.json` (a Llama-3 reward model → llama3, a Llama-3.1 one → llama3.1).
    #[serde(default)]
    pub judge_chat_template: Option<ChatTemplate>,
    /// The head of the judge model to use (default: the mean of its heads).
    #[serde(default)]
    pub judge_head: Option<usize>,
    /// Dtype the judge model is loaded and run in (`f32` or `bf16`; an 8B judge in bf16
    /// takes ~16 GB of GPU memory).
    #[serde(default)]
    pub judge_dtype: WeightDtype,
    /// The built-in task's world: the ground-truth reward plays the judge.
    #[serde(default)]
    pub judge_world: Option<String>,
    /// The matrix key that names a policy's method.
    #[serde(default = "method")]
    pub group_by: String,
    /// Prompts evaluated (the first N of the test split).
    #[serde(default = "n")]
    pub max_prompts: usize,
    /// Most tokens per sampled response.
    #[serde(default = "ten")]
    pub max_new_tokens: usize,
    /// Sampling temperature of the responses.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Prompts per generation batch.
    #[serde(default = "batch")]
    pub batch_size: usize,
    /// Tokens the judge model reads (the last ones).
    #[serde(default = "max_len")]
    pub judge_max_len: usize,
    /// Seed of the sampling: every policy gets the same stream of draws.
    #[serde(default)]
    pub seed: u64,
}

fn method() -> String {
    "method".into()
}
fn n() -> usize {
    200
}
fn ten() -> usize {
    10
}
fn one() -> f64 {
    1.0
}
fn batch() -> usize {
    64
}
fn max_len() -> usize {
    128
}

/// One policy's evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyScore {
    pub node: String,
    pub group: String,
    pub mean_reward: f64,
    pub std_reward: f64,
}

/// The `results` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgeResults {
    pub judge: String,
    pub prompts: usize,
    pub reference: f64,
    pub policies: Vec<PolicyScore>,
    /// Per group: the distribution of its policies' mean judge rewards, and the share of
    /// its policies that fall below the reference policy.
    pub groups: BTreeMap<String, GroupSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    pub distribution: Distribution,
    pub share_below_reference: f64,
}

// One judge per run: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Judge {
    World(World),
    Model {
        rm: RewardModel,
        tok: TextTokenizer,
        template: ChatTemplate,
        head: Option<usize>,
    },
}

impl Judge {
    fn score(
        &self,
        prompts: &[String],
        responses: &[String],
        full: &[String],
        max_len: usize,
    ) -> Result<Vec<f64>, StageError> {
        match self {
            Judge::World(w) => Ok(prompts
                .iter()
                .zip(responses)
                .map(|(p, r)| w.reward(p, r))
                .collect()),
            Judge::Model {
                rm,
                tok,
                template,
                head,
            } => {
                let k = rm.heads.num_heads();
                // `plain` reads the policy's text as generated; a chat template gets a user
                // turn and an assistant turn.
                let texts: Vec<String> = match template {
                    ChatTemplate::Plain => full.to_vec(),
                    t => prompts
                        .iter()
                        .zip(responses)
                        .map(|(p, r)| t.render_pair(p, r))
                        .collect::<Result<_, _>>()?,
                };
                let mut out = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(64) {
                    let rows = chunk
                        .iter()
                        .map(|t| encode_tail(tok, t, max_len))
                        .collect::<Result<Vec<_>, _>>()?;
                    let r = to_f32_vec(rm.forward(&TokenBatch::from_rows(
                        &rows,
                        tok.pad_id(),
                        Padding::Right,
                    )?)?);
                    for row in r.chunks(k) {
                        out.push(match head {
                            Some(h) => row[*h] as f64,
                            None => row.iter().map(|&x| x as f64).sum::<f64>() / k as f64,
                        });
                    }
                }
                Ok(out)
            }
        }
    }
}

pub struct JudgeEvalKind;

impl StageKind for JudgeEvalKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<JudgeEvalParams>())
    }
    fn name(&self) -> &'static str {
        "judge_eval"
    }
    fn version(&self) -> u32 {
        // 2: a `plain` judge model reads the sequence without the response's closing EOS, as
        // a chat-template judge already did.
        2
    }
    fn summary(&self) -> &'static str {
        "mean judge reward of every policy and the reference on held-out prompts; per-method distributions"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let mut v = crate::data::artifact_refs_as_text(params);
        // A sweep reference is a list only at run time.
        if let Some(s) = v
            .get("policies")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            v["policies"] = Value::Array(vec![Value::String(s)]);
        }
        let p: JudgeEvalParams = parse_params(&v)?;
        match (&p.judge_model, &p.judge_world) {
            (Some(_), Some(_)) => Err(ParamError::general("give `judge_model` or `judge_world`, not both")),
            (None, None) => Err(ParamError::general("a judge is needed: `judge_model` (a reward model) or `judge_world` (the built-in task)")),
            _ => Ok(()),
        }
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("results", ArtifactType::Metrics)]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: JudgeEvalParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let file = split_file(std::path::Path::new(&p.prompts), "test")?;
        let mut prompts: Vec<String> = read_texts(&file, "prompt")?
            .into_iter()
            .map(|r| r.text)
            .collect();
        prompts.truncate(p.max_prompts);
        let judge = match (&p.judge_world, &p.judge_model) {
            (Some(w), _) => Judge::World(World::load(std::path::Path::new(w))?),
            (_, Some(m)) => {
                let dir = std::path::Path::new(m);
                let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
                let template = model_template(dir, p.judge_chat_template, &tok)?;
                ctx.log(format!("judge chat template: {template}"));
                Judge::Model {
                    rm: RewardModel::load_as(dir, &device, p.judge_dtype)?,
                    tok,
                    template,
                    head: p.judge_head,
                }
            }
            _ => unreachable!("validated"),
        };
        let evaluate =
            |path: &str, label: &str, i: usize, total: usize| -> Result<(f64, f64), StageError> {
                if ctx.cancelled() {
                    return Err(Box::new(Cancelled));
                }
                ctx.progress(i as u64, total as u64, label.to_string());
                let dir = std::path::Path::new(path);
                let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
                let lm = Backbone::from_hf_dir(dir, &device, WeightDtype::F32)?;
                let cfg = GenerateConfig {
                    max_new_tokens: p.max_new_tokens,
                    sampling: SamplingConfig {
                        temperature: p.temperature,
                        ..SamplingConfig::default()
                    },
                    stop_ids: tok.eos_id().into_iter().collect(),
                    pad_id: tok.pad_id(),
                };
                // The same sampling stream for every policy: differences come from the policies.
                let mut rng = SeededRng::new(p.seed);
                let mut scores = Vec::with_capacity(prompts.len());
                for chunk in prompts.chunks(p.batch_size.max(1)) {
                    let ids: Vec<Vec<u32>> = chunk
                        .iter()
                        .map(|t| {
                            tok.encode(t).map(|mut v| {
                                if v.is_empty() {
                                    v.push(tok.eos_id().unwrap_or(0));
                                }
                                v
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    let g = generate(&lm, &ids, &cfg, &mut rng)?;
                    // The judge reads responses without their closing EOS, as `ppo`'s reward
                    // model does (see `without_stop`).
                    let responses: Vec<String> = g
                        .responses
                        .iter()
                        .map(|r| tok.decode(without_stop(r, 0, &cfg.stop_ids)))
                        .collect::<Result<_, _>>()?;
                    let full: Vec<String> = g
                        .sequences
                        .iter()
                        .zip(&g.prompt_lens)
                        .map(|(s, &n)| tok.decode(without_stop(s, n, &cfg.stop_ids)))
                        .collect::<Result<_, _>>()?;
                    scores.extend(judge.score(chunk, &responses, &full, p.judge_max_len)?);
                }
                let d = Distribution::of(&scores, 10);
                Ok((d.mean, d.std))
            };
        let total = p.policies.len() + 1;
        let (reference, _) = evaluate(&p.reference, "reference", 0, total)?;
        ctx.log(format!(
            "reference policy: mean judge reward {reference:.4}"
        ));
        let mut scores = Vec::new();
        for (i, pol) in p.policies.iter().enumerate() {
            let (node, group, path) = match pol {
                PolicyRef::Path(path) => (path.clone(), "policies".to_string(), path.clone()),
                PolicyRef::Node {
                    node, matrix, path, ..
                } => {
                    let g = matrix
                        .get(&p.group_by)
                        .map(dagrun_engine::selector::scalar_string)
                        .unwrap_or_else(|| "policies".into());
                    (node.clone(), g, path.clone())
                }
            };
            let (mean, std) = evaluate(&path, &node, i + 1, total)?;
            ctx.log(format!("{node}: mean judge reward {mean:.4}"));
            scores.push(PolicyScore {
                node,
                group,
                mean_reward: mean,
                std_reward: std,
            });
        }
        let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in &scores {
            groups
                .entry(s.group.clone())
                .or_default()
                .push(s.mean_reward);
        }
        let groups: BTreeMap<String, GroupSummary> = groups
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
            .collect();
        ctx.metric("reference.mean_reward", reference);
        for (g, s) in &groups {
            ctx.metric(&format!("{g}.mean"), s.distribution.mean);
            ctx.metric(&format!("{g}.variance"), s.distribution.variance);
            ctx.metric(&format!("{g}.q10"), s.distribution.quantiles[1].1);
            ctx.metric(
                &format!("{g}.share_below_reference"),
                s.share_below_reference,
            );
            ctx.log(format!(
                "{g}: mean {:.4}, variance {:.6}, {:.0}% below the reference",
                s.distribution.mean,
                s.distribution.variance,
                100.0 * s.share_below_reference
            ));
        }
        let judge_name = if p.judge_world.is_some() {
            "ground truth (built-in task)".to_string()
        } else {
            format!("reward model {}", p.judge_model.clone().unwrap_or_default())
        };
        let results = JudgeResults {
            judge: judge_name,
            prompts: prompts.len(),
            reference,
            policies: scores,
            groups,
        };
        write_json(&ctx.output_path("results"), &results)?;
        Ok(())
    }
}
