//! The `ppo` kind: PPO of a policy (GPT-2, Gemma, Llama or Qwen2: [`crate::rl::policy`])
//! against a reward model, vanilla or variance-aware.
//! The algorithm is [`crate::rl`]: the loop and a step in [`crate::rl::ppo`], the loss in
//! [`crate::rl::loss`]; this file is its params and the adapter that loads the models and
//! writes the outputs.
//!
//! Outputs: `policy` (a Hugging Face folder of the policy's architecture, float32, with its
//! tokenizer, `tokenizer_config.json` and `generation_config.json`) and `curves` (JSON: per-step KL, score,
//! KL penalty, variance, losses, entropy). Checkpoints go to the node's scratch folder every
//! `checkpoint_every` steps, so a killed node resumes where it was.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, Place, StageContext, StageError, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{backend_env, node_device, split_file},
    parse_params, stage_error,
};
use crate::{
    data::read_texts,
    files::write_json,
    ml::{
        inference::{generate::GenerateConfig, sampling::SamplingConfig},
        io::{chat::ChatTemplate, tokenizer::TextTokenizer},
        models::{gpt2_hf::TOKENIZER_FILE, hf_weights::WeightDtype},
        reward::{ReadSamples, RewardReader},
    },
    rl::{
        calibrate::final_mean,
        loss::LossConfig,
        policy::{load_policy, read_prompts, Policy},
        ppo::{train, PpoConfig, StepStats},
        rollout::{Aggregation, Method, PpoModels, RolloutConfig},
    },
};

/// Params of `ppo` (defaults: the paper's App. 8 for vanilla PPO).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PpoParams {
    /// The reference policy, also the starting point: a Hugging Face folder with
    /// tokenizer.json, GPT-2 or a Gemma/Llama/Qwen2 `*ForCausalLM` (trained in float32).
    pub policy: String,
    /// The K-head reward model folder.
    pub reward_model: String,
    /// How the reward model reads a prompt and a sampled response (`plain`, `gemma`,
    /// `llama3`, `llama3.1`); default: from its `config.json`. With `plain` it reads the policy's text
    /// as generated; with a chat template, a user turn and an assistant turn. Either way
    /// without the EOS that ended the response, which preference data does not have.
    #[serde(default)]
    pub rm_chat_template: Option<ChatTemplate>,
    /// How the policy reads a prompt: `plain` (the default: the prompt's text as
    /// `tokenizer(text)` encodes it, with the BOS a Gemma or Llama tokenizer adds and nothing
    /// added for GPT-2), or a chat template (`model`: the policy folder's own
    /// `tokenizer_config.json` template; or `gemma`, `llama3`, `llama3.1`, `qwen2.5`) that
    /// renders the prompt as a user turn followed by the opening of the assistant's turn.
    /// The reward model then reads the prompt's own text and the response as a pair.
    #[serde(default)]
    pub prompt_template: Option<ChatTemplate>,
    /// Dtype the reward model is loaded and scores in (`f32` or `bf16`, Gemma/Llama/Qwen2
    /// backbones; bf16 halves its memory). The policy and the reference train and run in f32.
    #[serde(default)]
    pub rm_dtype: WeightDtype,
    /// Prompts: a folder with `train` rows `{prompt}` (the `prompts` output) or a file.
    pub prompts: String,
    #[serde(default = "defaults::method")]
    pub method: Method,
    /// KL coefficient β (fixed: no adaptive control). Or `beta_from`.
    #[serde(default)]
    #[schemars(default = "defaults::beta_shown")]
    pub beta: Option<f64>,
    /// Instead of `beta`: the `beta` output of a `kl_calibrate` node for this node's
    /// `method`, the β it chose for its KL target (docs/algorithms.md §5a).
    #[serde(default)]
    pub beta_from: Option<String>,
    /// Adam learning rate (no schedule).
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Prompts per step.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Rows per PPO mini-batch.
    #[serde(default = "defaults::mini_batch_size")]
    pub mini_batch_size: usize,
    /// Passes over each rollout batch.
    #[serde(default = "defaults::ppo_epochs")]
    pub ppo_epochs: usize,
    /// PPO steps.
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Most tokens per response.
    #[serde(default = "defaults::max_new_tokens")]
    pub max_new_tokens: usize,
    /// Which reward the policy maximises.
    #[serde(default = "defaults::aggregation")]
    pub aggregation: Aggregation,
    /// The ensemble member for `aggregation: member`.
    #[serde(default)]
    pub member: usize,
    /// λ of the `mean_minus_*` aggregations.
    #[serde(default = "defaults::lambda")]
    pub lambda: f64,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "defaults::ddof")]
    pub ddof: usize,
    /// Replace the ensemble variance in variance-aware PPO's KL weight by this constant (1.0
    /// makes it vanilla PPO). The `mean_minus_*` aggregations and the reported variance keep
    /// the ensemble's own.
    #[serde(default)]
    pub variance_override: Option<f64>,
    /// ε of the clipped policy loss: the ratio is clipped to [1 − ε, 1 + ε].
    #[serde(default = "defaults::cliprange")]
    pub cliprange: f64,
    /// How far a value may move from its old value in the clipped value loss.
    #[serde(default = "defaults::cliprange_value")]
    pub cliprange_value: f64,
    /// Weight of the value loss in the total loss.
    #[serde(default = "defaults::vf_coef")]
    pub vf_coef: f64,
    /// Discount γ of GAE.
    #[serde(default = "defaults::gamma")]
    pub gamma: f64,
    /// λ of GAE.
    #[serde(default = "defaults::lam")]
    pub lam: f64,
    /// Skip an update whose mean ratio exceeds this.
    #[serde(default = "defaults::ratio_threshold")]
    pub ratio_threshold: f64,
    /// Sampling temperature of the responses.
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// Sample among the k likeliest tokens only (0: all).
    #[serde(default)]
    pub top_k: usize,
    /// Sample among the likeliest tokens whose probabilities add up to p (1: all).
    #[serde(default = "defaults::top_p")]
    pub top_p: f64,
    /// Global gradient-norm clipping (none by default, as TRL).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps into the scratch folder (0: never).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: usize,
    /// Tokens the reward model reads (the last ones; a leading BOS stays).
    #[serde(default = "defaults::rm_max_len")]
    pub rm_max_len: usize,
    /// Seed of the prompt order, the sampling and the value head's initialisation.
    #[serde(default)]
    pub seed: u64,
}

/// The defaults of [`PpoParams`], by field.
mod defaults {
    use super::{Aggregation, Method};

    pub fn method() -> Method {
        Method::Vanilla
    }
    pub fn beta() -> f64 {
        0.2
    }
    /// What `dagrun kinds ppo` shows as `beta`'s default (taken when no `beta_from` is given).
    pub fn beta_shown() -> Option<f64> {
        Some(beta())
    }
    pub fn lr() -> f64 {
        1.414e-5
    }
    pub fn batch_size() -> usize {
        128
    }
    pub fn mini_batch_size() -> usize {
        128
    }
    pub fn ppo_epochs() -> usize {
        4
    }
    pub fn steps() -> usize {
        192
    }
    pub fn max_new_tokens() -> usize {
        10
    }
    pub fn aggregation() -> Aggregation {
        Aggregation::Member
    }
    pub fn lambda() -> f64 {
        1.0
    }
    pub fn ddof() -> usize {
        1
    }
    pub fn cliprange() -> f64 {
        0.2
    }
    pub fn cliprange_value() -> f64 {
        0.2
    }
    pub fn vf_coef() -> f64 {
        0.1
    }
    pub fn gamma() -> f64 {
        1.0
    }
    pub fn lam() -> f64 {
        0.95
    }
    pub fn ratio_threshold() -> f64 {
        10.0
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn top_p() -> f64 {
        1.0
    }
    pub fn checkpoint_every() -> usize {
        10
    }
    pub fn rm_max_len() -> usize {
        128
    }
}

impl PpoParams {
    /// β as given (the default when neither `beta` nor `beta_from` is); a `beta_from` is
    /// read into `beta` by [`PpoParams::resolve_beta`] before the node trains.
    pub fn beta(&self) -> f64 {
        self.beta.unwrap_or_else(defaults::beta)
    }

    /// Reads `beta_from` (a `kl_calibrate` result) into `beta`; returns the KL target it was
    /// calibrated for, if any.
    pub fn resolve_beta(&mut self) -> Result<Option<f64>, StageError> {
        let Some(path) = &self.beta_from else {
            return Ok(None);
        };
        let c = super::kl_calibrate::CalibrationResult::read(Path::new(path))?;
        if c.method != self.method {
            return Err(format!(
                "beta_from: {path} was calibrated for method {:?}, this node is {:?}",
                c.method, self.method
            )
            .into());
        }
        self.beta = Some(c.beta);
        Ok(Some(c.kl_target))
    }

    /// The algorithm's settings.
    pub fn config(&self) -> PpoConfig {
        PpoConfig {
            rollout: RolloutConfig {
                method: self.method,
                beta: self.beta(),
                aggregation: self.aggregation,
                member: self.member,
                lambda: self.lambda,
                ddof: self.ddof,
                variance_override: self.variance_override,
                gamma: self.gamma,
                lam: self.lam,
            },
            loss: LossConfig {
                cliprange: self.cliprange,
                cliprange_value: self.cliprange_value,
                vf_coef: self.vf_coef,
            },
            lr: self.lr,
            batch_size: self.batch_size,
            mini_batch_size: self.mini_batch_size,
            ppo_epochs: self.ppo_epochs,
            steps: self.steps,
            ratio_threshold: self.ratio_threshold,
            max_grad_norm: self.max_grad_norm,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
        }
    }

    /// How responses are sampled.
    fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            ..SamplingConfig::default()
        }
    }

    /// The checks that need no files (a located error each).
    pub(crate) fn check(&self) -> Result<(), ParamError> {
        let at_least_one = [
            ("batch_size", self.batch_size),
            ("mini_batch_size", self.mini_batch_size),
            ("ppo_epochs", self.ppo_epochs),
            ("steps", self.steps),
            ("max_new_tokens", self.max_new_tokens),
            ("rm_max_len", self.rm_max_len),
        ];
        for (name, v) in at_least_one {
            if v == 0 {
                return Err(ParamError::at(name, "must be at least 1"));
            }
        }
        let finite_at_least_zero = [
            ("beta", self.beta()),
            ("lambda", self.lambda),
            ("cliprange", self.cliprange),
            ("cliprange_value", self.cliprange_value),
            ("vf_coef", self.vf_coef),
            ("gamma", self.gamma),
            ("lam", self.lam),
        ];
        for (name, v) in finite_at_least_zero {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ParamError::at(
                    name,
                    format!("must be a number ≥ 0, not {v}"),
                ));
            }
        }
        if self.beta.is_some() && self.beta_from.is_some() {
            return Err(ParamError::at(
                "beta_from",
                "give `beta` or `beta_from`, not both",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ParamError::at(
                "lr",
                format!("must be a number > 0, not {}", self.lr),
            ));
        }
        if self.ratio_threshold.is_nan() || self.ratio_threshold <= 0.0 {
            return Err(ParamError::at("ratio_threshold", "must be > 0"));
        }
        if let Some(v) = self.variance_override {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ParamError::at("variance_override", "must be a number ≥ 0"));
            }
        }
        if let Some(n) = self.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return Err(ParamError::at("max_grad_norm", "must be a number > 0"));
            }
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ParamError::at("temperature", "must be a number > 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ParamError::at("top_p", "must be in (0, 1]"));
        }
        Ok(())
    }
}

pub struct PpoKind;

impl StageKind for PpoKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<PpoParams>())
    }
    fn name(&self) -> &'static str {
        "ppo"
    }
    fn version(&self) -> u32 {
        // 2: log-probs in the update as z[target] - logsumexp(z) (vocabulary-major), Adam in
        // place on libtorch: the same method, other float rounding.
        // 3: the reward model reads a response without its closing EOS (`without_stop`);
        // `variance_override` no longer changes the `mean_minus_*` aggregations.
        // 4: the reward model reads through `ml::reward` (one reader for every kind): `plain`
        // text gets the special tokens its tokenizer adds (a BOS for Gemma/Llama tokenizers,
        // nothing for GPT-2's), a chat template's prompt turn is the decoded prompt, and a
        // truncation keeps the leading BOS. GPT-2 reward models read exactly as before.
        // 5: samples stop at every EOS id the policy folder declares (as the judge and
        // `dagrun model generate`), and the saved policy folder also holds
        // `tokenizer_config.json` and `generation_config.json`; the built-in task trains as
        // before.
        5
    }
    fn summary(&self) -> &'static str {
        "PPO of a GPT-2, Gemma, Llama or Qwen2 policy against a reward ensemble, vanilla or variance-aware"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: PpoParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        p.check()
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("policy", ArtifactType::Model),
            OutputDecl::new("curves", ArtifactType::Metrics),
        ]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let mut p: PpoParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let kl_target = p.resolve_beta()?;
        if let Some(t) = kl_target {
            ctx.log(format!("β {} (calibrated for a final KL of {t})", p.beta()));
        }
        let device = node_device(ctx)?;
        let setup = Setup::load_train(&p, &device)?;
        ctx.log(format!(
            "policy: {}, prompts read as `{}`; reward model: {} heads, chat template `{}`",
            setup.policy.model_type(),
            setup.prompt_template,
            setup.models.reward.num_heads(),
            setup.rm_template
        ));
        let Setup {
            models,
            policy,
            prompts,
            ..
        } = setup;
        let ckpt = ctx.scratch().join("checkpoints");
        let cancel = ctx.cancel_flag();
        let total = p.steps as u64;
        let mut curves = crate::tensorboard::Curves::for_node(ctx);
        let run = {
            let ctx_ref: &StageContext = ctx;
            train(
                &p.config(),
                &models,
                policy,
                &prompts,
                Some(&ckpt),
                &|| cancel.load(std::sync::atomic::Ordering::Relaxed),
                &mut |step: usize, s: &[(&'static str, f64)]| {
                    curves.write(step as f64, s);
                    ctx_ref.progress(
                        step as u64,
                        total,
                        format!("kl {:.3} score {:.3}", s[0].1, s[1].1),
                    )
                },
            )
            .map_err(stage_error)?
        };
        for s in &run.stats {
            ctx.log(step_line(s));
        }
        if run.resumed_at > 0 {
            ctx.log(format!(
                "resumed from the checkpoint at step {}",
                run.resumed_at
            ));
        }
        for s in &run.stats {
            let x = s.step as f64;
            ctx.series("kl", x, s.kl);
            ctx.series("score", x, s.score);
            ctx.series("kl_penalty", x, s.kl_penalty);
            ctx.series("variance", x, s.variance);
            ctx.series("value_loss", x, s.value_loss);
            ctx.series("entropy", x, s.entropy);
        }
        // The final numbers: the mean of the last tenth of the steps (at least one).
        let avg = |f: &dyn Fn(&StepStats) -> f64| {
            final_mean(&run.stats.iter().map(f).collect::<Vec<_>>())
        };
        ctx.metric("final_kl", avg(&|s| s.kl));
        ctx.metric("final_score", avg(&|s| s.score));
        ctx.metric("final_kl_penalty", avg(&|s| s.kl_penalty));
        ctx.metric(
            "mean_variance",
            run.stats.iter().map(|s| s.variance).sum::<f64>() / run.stats.len() as f64,
        );
        write_json(
            &ctx.output_path("curves"),
            &serde_json::json!({
                "method": p.method,
                "beta": p.beta(),
                "kl_target": kl_target,
                "steps": run.stats,
            }),
        )?;
        let tok_path = Path::new(&p.policy).join(TOKENIZER_FILE);
        run.policy
            .lm
            .valid()
            .save_hf_dir(&ctx.output_path("policy"), Some(&tok_path))?;
        Ok(())
    }
}

/// What a `ppo` node trains with, loaded from its params' folders.
pub struct Setup {
    /// The reference policy, the reward model reading the policy's samples, sampling.
    pub models: PpoModels<'static>,
    /// The policy to train (a copy of the reference on the autodiff device).
    pub policy: Policy,
    /// The prompts as the policy's token ids (an empty prompt is its end-of-text token).
    pub prompts: Vec<Vec<u32>>,
    /// The reward model's chat template.
    pub rm_template: ChatTemplate,
    /// The policy's prompt template (`plain` unless `prompt_template` chose one).
    pub prompt_template: ChatTemplate,
}

impl Setup {
    /// [`Setup::load`] with the `train` prompts of `p.prompts` (a `prompts` output or a
    /// file): what a `ppo` node and a `kl_calibrate` node train on.
    pub fn load_train(p: &PpoParams, device: &Device) -> Result<Self, StageError> {
        let file = split_file(Path::new(&p.prompts), "train")?;
        let texts: Vec<String> = read_texts(&file, "prompt")?
            .into_iter()
            .map(|r| r.text)
            .collect();
        Self::load(p, &texts, device)
    }

    /// Loads the policy (`p.policy`) and the reward model (`p.reward_model`) on `device` and
    /// tokenises `prompts`.
    pub fn load(p: &PpoParams, prompts: &[String], device: &Device) -> Result<Self, StageError> {
        let policy_dir = Path::new(&p.policy);
        let tok = TextTokenizer::from_file(&policy_dir.join(TOKENIZER_FILE))?;
        // The prompts as the policy reads them; the reward model reads their own text.
        let read = read_prompts(policy_dir, tok.clone(), p.prompt_template.as_ref(), prompts)?;
        let reader = RewardReader::load(
            Path::new(&p.reward_model),
            device,
            p.rm_dtype,
            p.rm_chat_template.clone(),
            p.rm_max_len,
            p.batch_size,
        )?;
        let rm_template = reader.input().template().clone();
        let models = PpoModels {
            device: device.clone(),
            reference: load_policy(policy_dir, device)?,
            pad: tok.pad_id(),
            generate: GenerateConfig {
                max_new_tokens: p.max_new_tokens,
                sampling: p.sampling(),
                stop_ids: crate::ml::models::decoder_hf::stop_ids(policy_dir, &tok)?,
                pad_id: tok.pad_id(),
            },
            reward: Box::new(ReadSamples {
                reader,
                samples: read.samples,
            }),
            profile: false,
        };
        let policy = load_policy(policy_dir, &device.clone().autodiff())?;
        Ok(Setup {
            models,
            policy,
            prompts: read.ids,
            rm_template,
            prompt_template: read.template,
        })
    }
}

/// A step's log line.
fn step_line(s: &StepStats) -> String {
    let skipped = if s.skipped > 0 {
        format!(" ({} skipped)", s.skipped)
    } else {
        String::new()
    };
    format!(
        "step {:>4}: kl {:.4} score {:.4} penalty {:.4} σ² {:.4} vf {:.4} entropy {:.3}{skipped}",
        s.step, s.kl, s.score, s.kl_penalty, s.variance, s.value_loss, s.entropy
    )
}
