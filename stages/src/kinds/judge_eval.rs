//! The `judge_eval` kind: every trained policy, and the reference, answers held-out prompts;
//! a judge scores each answer; each policy gets its mean judge reward, and each method (a
//! matrix key of the policies, `method` by default) the distribution of its policies' scores.
//! The algorithm is [`crate::rl::judge`]; this file is its params and the adapter.
//!
//! The judge is a reward model folder (its head `judge_head`, or the mean of its heads) —
//! dagrun's heads on any backbone, or a Hugging Face Llama/Gemma `*ForSequenceClassification`
//! folder such as the paper's FsfairX-LLaMA3-RM, loaded in `judge_dtype` (`f32` or `bf16`) —
//! or, on the built-in task, the world's ground-truth reward (`judge_world`). Policies are
//! Hugging Face folders of any architecture `ml::models::backbone` loads (GPT-2, Gemma, Llama,
//! Qwen2), reading the prompts as `ppo` trained them to (`prompt_template`).

use std::collections::BTreeMap;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device, split_file},
    parse_params, stage_error,
};
use crate::{
    data::{read_texts, World},
    files::write_json,
    ml::{io::chat::ChatTemplate, models::hf_weights::WeightDtype, reward::RewardReader},
    rl::judge::{
        evaluate_policy, summarize, AnswerConfig, Evaluation, Judge, JudgeResults, PolicyScore,
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
    /// The chat template (`model`: the folder's own; `gemma`, `llama3`, `llama3.1`, `qwen2.5`,
    /// `plain`); default: the folder's own `chat_template` (tokenizer_config.json) when it has
    /// one, else from the `model_type` of its `config.json` (gpt2 → plain, gemma → gemma,
    /// llama → llama3, qwen2 → qwen2.5).
    #[serde(default)]
    pub judge_chat_template: Option<ChatTemplate>,
    /// The head of the judge model to use (default: the mean of its heads).
    #[serde(default)]
    pub judge_head: Option<usize>,
    /// Dtype the judge model is loaded and run in (`f32` or `bf16`; an 8B judge in bf16
    /// takes ~16 GB of GPU memory).
    #[serde(default)]
    pub judge_dtype: WeightDtype,
    /// How the policies and the reference read a prompt, as the `ppo` param of the same name
    /// (give the one the policies were trained with): `plain` (the default: the prompt's text
    /// as `tokenizer(text)` encodes it, with the BOS a Gemma or Llama tokenizer adds and
    /// nothing added for GPT-2), or a chat template (`model`: each policy folder's own
    /// `tokenizer_config.json` template; or `gemma`, `llama3`, `llama3.1`, `qwen2.5`) that
    /// renders the prompt as a user turn followed by the opening of the assistant's turn.
    /// Either way the judge reads the prompt's own text and the answer, as PPO's reward model
    /// does.
    #[serde(default)]
    pub prompt_template: Option<ChatTemplate>,
    /// The built-in task's world: the ground-truth reward plays the judge.
    #[serde(default)]
    pub judge_world: Option<String>,
    /// The matrix key that names a policy's method.
    #[serde(default = "defaults::group_by")]
    pub group_by: String,
    /// Prompts evaluated (the first N of the test split).
    #[serde(default = "defaults::max_prompts")]
    pub max_prompts: usize,
    /// Most tokens per sampled response.
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Sampling temperature of the responses.
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// Prompts per generation batch.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Tokens the judge model reads (the last ones).
    #[serde(default = "defaults::judge_max_len")]
    pub judge_max_len: usize,
    /// Seed of the sampling: every policy gets the same stream of draws.
    #[serde(default)]
    pub seed: u64,
}

/// The defaults of [`JudgeEvalParams`], by field.
mod defaults {
    pub fn group_by() -> String {
        "method".into()
    }
    pub fn max_prompts() -> usize {
        200
    }
    pub fn max_new_tokens() -> usize {
        10
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn batch_size() -> usize {
        64
    }
    pub fn judge_max_len() -> usize {
        128
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
        // 3: a judge model reads through `ml::reward` (one reader for every kind): `plain`
        // text gets the special tokens its tokenizer adds, a chat template's prompt turn is
        // the prompt as the policy's tokenizer decodes it, a truncation keeps the leading BOS.
        // The built-in world's judge is unchanged.
        // 4: a policy's answers stop at every EOS id its `generation_config.json` and
        // `config.json` declare, not only its tokenizer's (the built-in task's are the same).
        // 5: a policy reads its prompts as `ppo` encodes them (`rl::policy::read_prompts`):
        // plain text gets the BOS a Gemma/Llama tokenizer adds, and the judge reads the
        // prompt's own text without it; `prompt_template` renders chat prompts; `results`
        // records the template and each policy's first prompt. GPT-2 policies (no BOS) and
        // their scores are unchanged.
        5
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
        for (name, n) in [
            ("max_prompts", p.max_prompts),
            ("max_new_tokens", p.max_new_tokens),
            ("batch_size", p.batch_size),
            ("judge_max_len", p.judge_max_len),
        ] {
            if n == 0 {
                return Err(ParamError::at(name, "must be at least 1"));
            }
        }
        if !(p.temperature.is_finite() && p.temperature > 0.0) {
            return Err(ParamError::at("temperature", "must be a number > 0"));
        }
        match (&p.judge_model, &p.judge_world) {
            (Some(_), Some(_)) => Err(ParamError::at("judge_world", "give `judge_model` or `judge_world`, not both")),
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
        if prompts.is_empty() {
            return Err(format!("`{}` has no prompts", file.display()).into());
        }
        let judge = match (&p.judge_world, &p.judge_model) {
            (Some(w), _) => Judge::World(World::load(std::path::Path::new(w))?),
            (_, Some(m)) => {
                let reader = RewardReader::load(
                    std::path::Path::new(m),
                    &device,
                    p.judge_dtype,
                    p.judge_chat_template,
                    p.judge_max_len,
                    JUDGE_BATCH,
                )?;
                ctx.log(format!(
                    "judge chat template: {}",
                    reader.input().template()
                ));
                if let Some(h) = p.judge_head.filter(|&h| h >= reader.num_heads()) {
                    return Err(format!(
                        "`judge_head` {h}, but the judge model has {} head(s)",
                        reader.num_heads()
                    )
                    .into());
                }
                Judge::Model {
                    reader,
                    head: p.judge_head,
                }
            }
            _ => unreachable!("validated"),
        };
        let answers = AnswerConfig {
            max_new_tokens: p.max_new_tokens,
            temperature: p.temperature,
            batch_size: p.batch_size,
            seed: p.seed,
            prompt_template: p.prompt_template.clone(),
        };
        let total = p.policies.len() + 1;
        let evaluate = |path: &str, label: &str, i: usize| -> Result<Evaluation, StageError> {
            if ctx.cancelled() {
                return Err(Box::new(Cancelled));
            }
            ctx.progress(i as u64, total as u64, label.to_string());
            evaluate_policy(
                std::path::Path::new(path),
                &prompts,
                &answers,
                &judge,
                &device,
            )
            .map_err(stage_error)
        };
        let template = p.prompt_template.clone().unwrap_or(ChatTemplate::Plain);
        ctx.log(format!("prompts read as `{template}`"));
        let reference_eval = evaluate(&p.reference, "reference", 0)?;
        let reference = reference_eval.mean;
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
            let e = evaluate(&path, &node, i + 1)?;
            ctx.log(format!("{node}: mean judge reward {:.4}", e.mean));
            scores.push(PolicyScore {
                node,
                group,
                mean_reward: e.mean,
                std_reward: e.std,
                first_prompt: e.first_prompt,
            });
        }
        let groups = summarize(reference, &scores);
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
            prompt_template: template.to_string(),
            reference,
            reference_first_prompt: reference_eval.first_prompt,
            policies: scores,
            groups,
        };
        write_json(&ctx.output_path("results"), &results)?;
        Ok(())
    }
}

/// Sequences per forward pass of a judge model.
const JUDGE_BATCH: usize = 64;
