//! The `ppo` kind (ALGORITHMS.md §4–5): PPO of a GPT-2 policy against a reward model,
//! vanilla or variance-aware.
//!
//! Per step, for a batch of prompts: sample responses (KV cache), score them with the
//! reward model (one member, or an aggregation of the K heads), compute log-probs under
//! the policy and the frozen reference and values from a value head, turn them into
//! per-token rewards `R_t = −β·w·kl_t` (+ the score at the last token; `w` = 1 for vanilla,
//! the ensemble variance σ²(x, y) for variance-aware), GAE, whitening, then `ppo_epochs`
//! passes of clipped policy and value losses over shuffled mini-batches (TRL 0.11
//! semantics). Checkpoints go to the node's scratch folder every `checkpoint_every`
//! steps, so a killed node resumes where it was.
//!
//! Outputs: `policy` (Hugging Face GPT-2 folder) and `curves` (JSON: per-step KL, score,
//! KL penalty, variance, losses, entropy).

use std::{collections::BTreeMap, time::Instant};

use burn::{
    module::Module,
    tensor::{activation::log_softmax, Device, Tensor, TensorData},
};
use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{backend_env, encode_tail, model_template, node_device, split_file, without_stop},
    parse_params, write_json,
};
use crate::{
    data::read_texts,
    ml::{
        chat::ChatTemplate,
        checkpoint,
        generate::{generate_timed, GenerateConfig},
        grads::ParamGrads,
        logprobs::{next_token_logprobs_from_head, token_logprobs_from_logits},
        optim::{Adam, AdamConfig},
        reward::RewardModel,
        rng::{RngState, SeededRng},
        sampling::SamplingConfig,
        tokenizer::TextTokenizer,
        value_head::ValueHead,
        weights::{to_f32_vec, HostTensors},
        Gpt2, Padding, TokenBatch,
    },
    rl::math::{gae, mean_var, token_rewards, whiten},
};

/// Vanilla PPO or the variance-aware variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Vanilla,
    VarianceAware,
}

/// How the reward of a sample is taken from the K heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Head `member` (the paper: each policy is trained against one member).
    Member,
    Mean,
    Min,
    /// mean − λ·variance (Coste et al. 2023).
    MeanMinusVar,
    /// mean − λ·std.
    MeanMinusStd,
}

/// Params of `ppo` (defaults: the paper's App. 8 for vanilla PPO).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PpoParams {
    /// The reference policy, also the starting point: a Hugging Face GPT-2 folder with tokenizer.json.
    pub policy: String,
    /// The K-head reward model folder.
    pub reward_model: String,
    /// How the reward model reads a prompt and a sampled response (`plain`, `gemma`,
    /// `llama3`, `llama3.1`); default: from its `config.json`. With `plain` it reads the policy's text
    /// as generated; with a chat template, a user turn and an assistant turn. Either way
    /// without the EOS that ended the response, which preference data does not have.
    #[serde(default)]
    pub rm_chat_template: Option<ChatTemplate>,
    /// Prompts: a folder with `train` rows `{prompt}` (the `prompts` output) or a file.
    pub prompts: String,
    #[serde(default = "vanilla")]
    pub method: Method,
    /// KL coefficient β (fixed: no adaptive control).
    #[serde(default = "beta")]
    pub beta: f64,
    /// Adam learning rate (no schedule).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Prompts per step.
    #[serde(default = "b128")]
    pub batch_size: usize,
    /// Rows per PPO mini-batch.
    #[serde(default = "b128")]
    pub mini_batch_size: usize,
    /// Passes over each rollout batch.
    #[serde(default = "four")]
    pub ppo_epochs: usize,
    /// PPO steps.
    #[serde(default = "steps")]
    pub steps: usize,
    /// Most tokens per response.
    #[serde(default = "ten")]
    pub max_new_tokens: usize,
    /// Which reward the policy maximises.
    #[serde(default = "member_agg")]
    pub aggregation: Aggregation,
    /// The ensemble member for `aggregation: member`.
    #[serde(default)]
    pub member: usize,
    /// λ of the `mean_minus_*` aggregations.
    #[serde(default = "one")]
    pub lambda: f64,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "one_usize")]
    pub ddof: usize,
    /// Replace the ensemble variance in variance-aware PPO's KL weight by this constant (1.0
    /// makes it vanilla PPO). The `mean_minus_*` aggregations and the reported variance keep
    /// the ensemble's own.
    #[serde(default)]
    pub variance_override: Option<f64>,
    /// ε of the clipped policy loss: the ratio is clipped to [1 − ε, 1 + ε].
    #[serde(default = "clip")]
    pub cliprange: f64,
    /// How far a value may move from its old value in the clipped value loss.
    #[serde(default = "clip")]
    pub cliprange_value: f64,
    /// Weight of the value loss in the total loss.
    #[serde(default = "vf_coef")]
    pub vf_coef: f64,
    /// Discount γ of GAE.
    #[serde(default = "one")]
    pub gamma: f64,
    /// λ of GAE.
    #[serde(default = "lam")]
    pub lam: f64,
    /// Skip an update whose mean ratio exceeds this.
    #[serde(default = "ratio_threshold")]
    pub ratio_threshold: f64,
    /// Sampling temperature of the responses.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Sample among the k likeliest tokens only (0: all).
    #[serde(default)]
    pub top_k: usize,
    /// Sample among the likeliest tokens whose probabilities add up to p (1: all).
    #[serde(default = "one")]
    pub top_p: f64,
    /// Global gradient-norm clipping (none by default, as TRL).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps into the scratch folder (0: never).
    #[serde(default = "ten")]
    pub checkpoint_every: usize,
    /// Tokens the reward model reads (the last ones).
    #[serde(default = "b128")]
    pub rm_max_len: usize,
    /// Seed of the prompt order, the sampling and the value head's initialisation.
    #[serde(default)]
    pub seed: u64,
}

fn vanilla() -> Method {
    Method::Vanilla
}
fn beta() -> f64 {
    0.2
}
fn lr() -> f64 {
    1.414e-5
}
fn b128() -> usize {
    128
}
fn four() -> usize {
    4
}
fn steps() -> usize {
    192
}
fn ten() -> usize {
    10
}
fn member_agg() -> Aggregation {
    Aggregation::Member
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn clip() -> f64 {
    0.2
}
fn vf_coef() -> f64 {
    0.1
}
fn lam() -> f64 {
    0.95
}
fn ratio_threshold() -> f64 {
    10.0
}

/// A policy with its value head (one module, so one optimizer updates both).
#[derive(Module, Debug)]
pub struct PolicyValue {
    pub lm: Gpt2,
    pub value: ValueHead,
}

/// What one PPO step measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepStats {
    pub step: usize,
    /// Mean over the batch of `Σ_t kl_t`.
    pub kl: f64,
    /// Mean score (the reward the policy maximises).
    pub score: f64,
    /// Mean of `β·w·Σ_t kl_t`.
    pub kl_penalty: f64,
    /// Mean ensemble variance σ² of the samples (the ensemble's, also under
    /// `variance_override`).
    pub variance: f64,
    pub policy_loss: f64,
    pub value_loss: f64,
    /// Mean entropy of the policy over response tokens.
    pub entropy: f64,
    pub mean_ratio: f64,
    pub response_length: f64,
    /// Mini-batch updates skipped for a ratio above the threshold.
    pub skipped: usize,
}

#[derive(Serialize, Deserialize)]
struct TrainerState {
    stats: Vec<StepStats>,
    rng: RngState,
    order: Vec<usize>,
    cursor: usize,
    n_embd: usize,
}

/// The prompt rows of a PPO run and what it needs.
pub struct PpoInputs<'a> {
    pub prompts: Vec<String>,
    pub device: Device,
    pub checkpoint_dir: Option<&'a std::path::Path>,
}

/// The result of a run.
pub struct PpoRun {
    pub policy: PolicyValue,
    pub stats: Vec<StepStats>,
    pub resumed_at: usize,
}

fn pv_weights(pv: &PolicyValue) -> HostTensors {
    let mut set = HostTensors::new("");
    for (n, t) in pv.lm.named_weights() {
        set.tensors.insert(n, t);
    }
    for (n, t) in pv.value.heads().to_host(std::path::Path::new("")).tensors {
        set.tensors.insert(format!("v_head.{n}"), t);
    }
    set
}

fn pv_from(
    config: &crate::ml::Gpt2Config,
    mut set: HostTensors,
    n_embd: usize,
    device: &Device,
) -> Result<PolicyValue, StageError> {
    let mut head = HostTensors::new("v_head");
    let keys: Vec<String> = set
        .tensors
        .keys()
        .filter(|k| k.starts_with("v_head."))
        .cloned()
        .collect();
    for k in keys {
        let t = set.tensors.remove(&k).expect("listed");
        head.tensors.insert(k["v_head.".len()..].to_string(), t);
    }
    let lm = Gpt2::from_tensors(config, set, device)?;
    let value = ValueHead::from_heads(crate::ml::heads::LinearHeads::from_host(
        &mut head, n_embd, 1, device,
    )?);
    Ok(PolicyValue { lm, value })
}

/// One sampled response and everything PPO needs of it.
struct Sample {
    ids: Vec<u32>,
    prompt_len: usize,
    old_logp: Vec<f64>,
    old_v: Vec<f64>,
    adv: Vec<f64>,
    ret: Vec<f64>,
}

/// Host tensor `[rows, cols]` from row-major values.
fn host2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Runs PPO. `on_step` sees each step's statistics as it finishes.
pub fn run_ppo(
    p: &PpoParams,
    inputs: PpoInputs,
    cancel: &dyn Fn() -> bool,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<PpoRun, StageError> {
    let device = inputs.device.clone();
    let ad = device.clone().autodiff();
    let policy_dir = std::path::Path::new(&p.policy);
    let tok = TextTokenizer::from_file(&policy_dir.join("tokenizer.json"))?;
    let rm_dir = std::path::Path::new(&p.reward_model);
    let rm_tok = TextTokenizer::from_file(&rm_dir.join("tokenizer.json"))?;
    let rm = RewardModel::load(rm_dir, &device)?;
    let rm_template = model_template(rm_dir, p.rm_chat_template, &rm_tok)?;
    let k = rm.heads.num_heads();
    if p.aggregation == Aggregation::Member && p.member >= k {
        return Err(format!("`member` {} but the reward model has {k} heads", p.member).into());
    }
    // With K ≤ ddof the variance is 0 for every sample: variance-aware PPO would run without
    // a KL penalty and the `mean_minus_*` aggregations would be the mean.
    let needs_variance = (p.method == Method::VarianceAware && p.variance_override.is_none())
        || matches!(
            p.aggregation,
            Aggregation::MeanMinusVar | Aggregation::MeanMinusStd
        );
    if needs_variance && k <= p.ddof {
        return Err(format!(
            "the reward model has {k} head(s): an ensemble variance with ddof {} needs at least {}",
            p.ddof,
            p.ddof + 1
        )
        .into());
    }
    let reference = Gpt2::from_hf_dir(policy_dir, &device)?;
    let config = reference.config().clone();
    let n_embd = config.n_embd;
    let eos = tok.eos_id();
    let pad = tok.pad_id();
    let prompts: Vec<Vec<u32>> = inputs
        .prompts
        .iter()
        .map(|t| {
            let mut ids = tok.encode(t)?;
            if ids.is_empty() {
                ids.push(eos.unwrap_or(0));
            }
            Ok(ids)
        })
        .collect::<Result<_, crate::ml::MlError>>()?;
    if prompts.len() < p.batch_size {
        return Err(format!(
            "{} prompts, fewer than one batch of {}",
            prompts.len(),
            p.batch_size
        )
        .into());
    }
    let mut adam = Adam::new(AdamConfig {
        weight_decay: 0.0,
        ..AdamConfig::default()
    });
    let mut rng = SeededRng::new(p.seed);
    let mut stats: Vec<StepStats> = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    let mut pv = PolicyValue {
        lm: Gpt2::from_hf_dir(policy_dir, &ad)?,
        value: ValueHead::init(n_embd, p.seed ^ 0x76_68, &ad)?,
    };
    let mut resumed_at = 0;
    if let Some(dir) = inputs.checkpoint_dir {
        if let Some(ck) = checkpoint::load_latest(dir, &mut adam, &device)? {
            let st: TrainerState = serde_json::from_value(ck.trainer)
                .map_err(|e| format!("{}: {e}", ck.path.display()))?;
            pv = pv_from(&config, ck.weights, st.n_embd, &ad)?;
            stats = st.stats;
            rng = SeededRng::from_state(st.rng);
            order = st.order;
            cursor = st.cursor;
            resumed_at = ck.step;
        }
    }
    let sampling = SamplingConfig {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        ..SamplingConfig::default()
    };
    let models = PpoModels {
        device: device.clone(),
        reference,
        rm,
        to_rm_ids: Box::new(|s: &[u32], prompt_len: usize| {
            let text = match rm_template {
                ChatTemplate::Plain => tok.decode(s)?,
                t => t.render_pair(
                    &tok.decode(&s[..prompt_len])?,
                    &tok.decode(&s[prompt_len..])?,
                )?,
            };
            encode_tail(&rm_tok, &text, p.rm_max_len)
        }),
        rm_pad: rm_tok.pad_id(),
        pad,
        generate: GenerateConfig {
            max_new_tokens: p.max_new_tokens,
            sampling,
            stop_ids: eos.into_iter().collect(),
            pad_id: pad,
        },
        profile: false,
    };
    for step in stats.len()..p.steps {
        if cancel() {
            return Err(Box::new(Cancelled));
        }
        // 1. Prompts: one pass over the shuffled set, reshuffled when it runs out.
        if cursor + p.batch_size > order.len() {
            order = (0..prompts.len()).collect();
            rng.shuffle(&mut order);
            cursor = 0;
        }
        let batch_prompts: Vec<Vec<u32>> = order[cursor..cursor + p.batch_size]
            .iter()
            .map(|&i| prompts[i].clone())
            .collect();
        cursor += p.batch_size;
        let (next, st, _times) =
            ppo_step(p, &models, pv, &mut adam, &mut rng, &batch_prompts, step)?;
        pv = next;
        on_step(&st);
        stats.push(st);
        if let Some(dir) = inputs.checkpoint_dir {
            if p.checkpoint_every > 0
                && stats.len().is_multiple_of(p.checkpoint_every)
                && stats.len() < p.steps
            {
                let state = TrainerState {
                    stats: stats.clone(),
                    rng: rng.state(),
                    order: order.clone(),
                    cursor,
                    n_embd,
                };
                checkpoint::save(
                    dir,
                    stats.len(),
                    &pv_weights(&pv),
                    &adam,
                    serde_json::to_value(state).expect("json"),
                )?;
            }
        }
    }
    Ok(PpoRun {
        policy: pv,
        stats,
        resumed_at,
    })
}

/// A sampled sequence and its prompt's length → the reward model's input ids.
pub type ToRmIds<'a> = Box<dyn Fn(&[u32], usize) -> Result<Vec<u32>, StageError> + 'a>;

/// The fixed parts of a PPO run that every step reads: the frozen reference policy, the
/// reward model, how a policy sequence becomes reward-model input, and generation settings.
pub struct PpoModels<'a> {
    /// The run's device (without autodiff; the policy lives on its autodiff variant).
    pub device: Device,
    /// The frozen reference policy (no autodiff).
    pub reference: Gpt2,
    /// The K-head reward model (no autodiff).
    pub rm: RewardModel,
    /// A sampled sequence (policy token ids, without the stop token that ended the
    /// response) and its prompt's length → the reward model's input ids. `run_ppo` decodes with the policy's tokenizer, renders with the reward
    /// model's chat template and re-encodes the last `rm_max_len` tokens with its tokenizer.
    pub to_rm_ids: ToRmIds<'a>,
    /// Padding id of the reward model's batches.
    pub rm_pad: u32,
    /// Padding id of the policy's batches.
    pub pad: u32,
    /// How responses are sampled.
    pub generate: GenerateConfig,
    /// Split `update` into its parts ([`StepTimes::update_forward`] and the two after it),
    /// waiting for the device after each part (`dagrun bench ppo-step --profile`). Off in
    /// the stage: the waits cost a little on an asynchronous device.
    pub profile: bool,
}

/// Wall-clock seconds of the phases of one PPO step. Each phase ends by reading results back
/// to the host, so on an asynchronous device (CUDA) its kernels are inside its time, except
/// the last optimizer update's, which the next read (or a `Device::sync`) waits for.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// Sampling the responses (KV-cache decoding; sampling on the host).
    pub generation: f64,
    /// Of `generation`, with [`PpoModels::profile`] (else 0): the model's forward passes and
    /// LM head.
    #[serde(default)]
    pub generation_model: f64,
    /// Of `generation`, with [`PpoModels::profile`] (else 0): the logits' copies to the host.
    #[serde(default)]
    pub generation_to_host: f64,
    /// Of `generation`, with [`PpoModels::profile`] (else 0): choosing the tokens on the host.
    #[serde(default)]
    pub generation_sampling: f64,
    /// Reward-model input ids and the reward model's forward pass.
    pub scoring: f64,
    /// Policy + value forward (log-probs, values, entropy), the reference forward, and the
    /// per-token rewards, GAE and whitening on the host.
    pub forward: f64,
    /// `ppo_epochs` passes over mini-batches: forward, backward and Adam.
    pub update: f64,
    /// Of `update`, with [`PpoModels::profile`] (else 0): the mini-batches' loss forward
    /// (ends by reading the losses back).
    #[serde(default)]
    pub update_forward: f64,
    /// Of `update`, with [`PpoModels::profile`] (else 0): the backward passes.
    #[serde(default)]
    pub update_backward: f64,
    /// Of `update`, with [`PpoModels::profile`] (else 0): gradient clipping and Adam.
    #[serde(default)]
    pub update_optimizer: f64,
}

/// One PPO step on `batch_prompts` (token ids): sample, score, evaluate, and update `pv`
/// with `adam`. `run_ppo` calls it once per step; `dagrun bench ppo-step` times it.
pub fn ppo_step(
    p: &PpoParams,
    models: &PpoModels,
    mut pv: PolicyValue,
    adam: &mut Adam,
    rng: &mut SeededRng,
    batch_prompts: &[Vec<u32>],
    step: usize,
) -> Result<(PolicyValue, StepStats, StepTimes), StageError> {
    let ad = models.device.clone().autodiff();
    let mut times = StepTimes::default();
    let Rollout {
        samples,
        scores,
        variances,
        weights,
        kl,
        entropy_sum,
        entropy_tokens,
    } = rollout(p, models, &pv, rng, batch_prompts, &mut times)?;
    let b = samples.len();
    let t0 = Instant::now();
    // 5. PPO epochs over shuffled mini-batches.
    // With `profile`: wait for the device, charge the time since `since` to `slot`.
    let wait = |slot: &mut f64, since: Instant| -> Result<Instant, StageError> {
        if !models.profile {
            return Ok(since);
        }
        models
            .device
            .sync()
            .map_err(|e| format!("waiting for the device: {e:?}"))?;
        let now = Instant::now();
        *slot += (now - since).as_secs_f64();
        Ok(now)
    };
    let (mut pg_sum, mut vf_sum, mut ratio_sum, mut updates, mut skipped) =
        (0.0, 0.0, 0.0, 0usize, 0usize);
    for _ in 0..p.ppo_epochs {
        let mut rows: Vec<usize> = (0..b).collect();
        rng.shuffle(&mut rows);
        for mb in rows.chunks(p.mini_batch_size.max(1)) {
            let t_part = Instant::now();
            let (pg, vf, ratio, loss) = minibatch_loss(&pv, &samples, mb, models.pad, p, &ad)?;
            if ratio > p.ratio_threshold {
                skipped += 1;
                continue;
            }
            let t_part = wait(&mut times.update_forward, t_part)?;
            let grads = ParamGrads::from_loss(loss, &pv);
            let t_part = wait(&mut times.update_backward, t_part)?;
            pv = adam.step_clipped(pv, grads, p.lr, p.max_grad_norm);
            wait(&mut times.update_optimizer, t_part)?;
            pg_sum += pg;
            vf_sum += vf;
            ratio_sum += ratio;
            updates += 1;
        }
    }
    let mean = |xs: &mut dyn Iterator<Item = f64>| xs.sum::<f64>() / b as f64;
    let st = StepStats {
        step: step + 1,
        kl: mean(&mut kl.iter().copied()),
        score: mean(&mut scores.iter().copied()),
        kl_penalty: mean(&mut kl.iter().zip(&weights).map(|(k, w)| p.beta * w * k)),
        variance: mean(&mut variances.iter().copied()),
        policy_loss: pg_sum / updates.max(1) as f64,
        value_loss: vf_sum / updates.max(1) as f64,
        entropy: entropy_sum / entropy_tokens.max(1) as f64,
        mean_ratio: ratio_sum / updates.max(1) as f64,
        response_length: mean(&mut samples.iter().map(|s| s.adv.len() as f64)),
        skipped,
    };
    times.update = t0.elapsed().as_secs_f64();
    Ok((pv, st, times))
}

/// A batch of responses, scored and evaluated: what the PPO epochs train on.
struct Rollout {
    /// Per response: its tokens, old log-probs and values, whitened advantages, returns.
    samples: Vec<Sample>,
    /// Per response: the score (the reward the policy maximises).
    scores: Vec<f64>,
    /// Per response: the ensemble's variance σ²(x, y).
    variances: Vec<f64>,
    /// Per response: the KL weight w (1 for vanilla PPO).
    weights: Vec<f64>,
    /// Per response: `Σ_t kl_t`.
    kl: Vec<f64>,
    /// The policy's entropy summed over the response tokens, and their count.
    entropy_sum: f64,
    entropy_tokens: usize,
}

/// Steps 2–4 of a PPO step: sample responses from `pv`, score them, evaluate log-probs
/// (policy and reference) and values, and turn them into whitened advantages and returns.
/// Charges its phases to `times`.
fn rollout(
    p: &PpoParams,
    models: &PpoModels,
    pv: &PolicyValue,
    rng: &mut SeededRng,
    batch_prompts: &[Vec<u32>],
    times: &mut StepTimes,
) -> Result<Rollout, StageError> {
    let t0 = Instant::now();
    // 2. Responses from the current policy (1., the prompts, is the caller's).
    let current = pv.lm.valid();
    let wait_for = models.profile.then_some(&models.device);
    let (generation, gen_times) = generate_timed(
        &current,
        batch_prompts,
        &models.generate,
        rng,
        wait_for,
        None,
    )?;
    if models.profile {
        times.generation_model = gen_times.model;
        times.generation_to_host = gen_times.to_host;
        times.generation_sampling = gen_times.sampling;
    }
    // The policy's weights are shared with these evaluation copies while they live; dropped,
    // Adam can update the weights in place (see ml/optim/libtorch.rs).
    drop(current);
    times.generation = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // 3. Scores and ensemble variances.
    let texts: Vec<Vec<u32>> = generation
        .sequences
        .iter()
        .zip(&generation.prompt_lens)
        .map(|(s, &n)| (models.to_rm_ids)(without_stop(s, n, &models.generate.stop_ids), n))
        .collect::<Result<_, StageError>>()?;
    let rm_batch = TokenBatch::from_rows(&texts, models.rm_pad, Padding::Right)?;
    let rewards = to_f32_vec(models.rm.forward(&rm_batch)?);
    let k = models.rm.heads.num_heads();
    let b = batch_prompts.len();
    let mut scores = Vec::with_capacity(b);
    let mut variances = Vec::with_capacity(b);
    for r in 0..b {
        let heads: Vec<f64> = rewards[r * k..(r + 1) * k]
            .iter()
            .map(|&x| x as f64)
            .collect();
        // The ensemble's own variance: `variance_override` replaces only the KL weight.
        let (mean, var) = mean_var(&heads, p.ddof);
        let s = match p.aggregation {
            Aggregation::Member => heads[p.member],
            Aggregation::Mean => mean,
            Aggregation::Min => heads.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::MeanMinusVar => mean - p.lambda * var,
            Aggregation::MeanMinusStd => mean - p.lambda * var.sqrt(),
        };
        scores.push(s);
        variances.push(var);
    }
    times.scoring = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // 4. Log-probs (policy, reference) and values of the response tokens.
    let seqs = &generation.sequences;
    let full = TokenBatch::from_rows(seqs, models.pad, Padding::Right)?;
    let t = full.len;
    let pv_eval = pv.valid();
    let hidden = pv_eval.lm.hidden(&full, None)?;
    let logits = pv_eval.lm.lm_logits(hidden.clone());
    let values = to_f32_vec(pv_eval.value.forward(hidden));
    let ent = {
        let [bb, tt, v] = logits.dims();
        let lsm = log_softmax(logits.clone().slice([0..bb, 0..tt - 1, 0..v]), 2);
        to_f32_vec(
            (lsm.clone().exp() * lsm)
                .sum_dim(2)
                .neg()
                .reshape([bb, tt - 1]),
        )
    };
    let logp = to_f32_vec(token_logprobs_from_logits(logits, &full));
    let ref_logp = to_f32_vec(token_logprobs_from_logits(
        models.reference.forward(&full, None)?,
        &full,
    ));
    drop(pv_eval);
    let mut samples = Vec::with_capacity(b);
    let (mut kls, mut weights) = (Vec::with_capacity(b), Vec::with_capacity(b));
    let (mut ent_sum, mut ent_n) = (0.0, 0usize);
    for r in 0..b {
        let pl = generation.prompt_lens[r];
        let n = generation.responses[r].len();
        let idx = |j: usize| r * (t - 1) + pl + j - 1;
        let old_logp: Vec<f64> = (0..n).map(|j| logp[idx(j)] as f64).collect();
        let kl: Vec<f64> = (0..n)
            .map(|j| (logp[idx(j)] - ref_logp[idx(j)]) as f64)
            .collect();
        let old_v: Vec<f64> = (0..n).map(|j| values[r * t + pl + j - 1] as f64).collect();
        for j in 0..n {
            ent_sum += ent[idx(j)] as f64;
        }
        ent_n += n;
        let w = match p.method {
            Method::Vanilla => 1.0,
            Method::VarianceAware => p.variance_override.unwrap_or(variances[r]),
        };
        let rewards = token_rewards(&kl, p.beta, w, scores[r]);
        let (adv, ret) = gae(&rewards, &old_v, p.gamma, p.lam);
        kls.push(kl.iter().sum::<f64>());
        weights.push(w);
        samples.push(Sample {
            ids: seqs[r].clone(),
            prompt_len: pl,
            old_logp,
            old_v,
            adv,
            ret,
        });
    }
    let mut advs: Vec<Vec<f64>> = samples.iter().map(|s| s.adv.clone()).collect();
    whiten(&mut advs);
    for (s, a) in samples.iter_mut().zip(advs) {
        s.adv = a;
    }
    times.forward = t0.elapsed().as_secs_f64();
    Ok(Rollout {
        samples,
        scores,
        variances,
        weights,
        kl: kls,
        entropy_sum: ent_sum,
        entropy_tokens: ent_n,
    })
}

/// The PPO loss of one mini-batch: returns (policy loss, value loss, mean ratio, total loss).
fn minibatch_loss(
    pv: &PolicyValue,
    samples: &[Sample],
    rows: &[usize],
    pad: u32,
    p: &PpoParams,
    device: &Device,
) -> Result<(f64, f64, f64, Tensor<1>), StageError> {
    let ids: Vec<Vec<u32>> = rows.iter().map(|&r| samples[r].ids.clone()).collect();
    let batch = TokenBatch::from_rows(&ids, pad, Padding::Right)?;
    let (b, t) = (batch.rows, batch.len);
    let w = t - 1;
    let mut mask = vec![0f32; b * w];
    let (mut adv, mut ret, mut old_lp, mut old_v) = (
        vec![0f32; b * w],
        vec![0f32; b * w],
        vec![0f32; b * w],
        vec![0f32; b * w],
    );
    for (i, &r) in rows.iter().enumerate() {
        let s = &samples[r];
        for j in 0..s.adv.len() {
            let c = i * w + s.prompt_len + j - 1;
            mask[c] = 1.0;
            adv[c] = s.adv[j] as f32;
            ret[c] = s.ret[j] as f32;
            old_lp[c] = s.old_logp[j] as f32;
            old_v[c] = s.old_v[j] as f32;
        }
    }
    let n = mask.iter().sum::<f32>().max(1.0) as f64;
    let mask = host2(mask, b, w, device);
    let adv = host2(adv, b, w, device);
    let ret = host2(ret, b, w, device);
    let old_lp = host2(old_lp, b, w, device);
    let old_v = host2(old_v, b, w, device);
    let hidden = pv.lm.hidden(&batch, None)?;
    let e = hidden.dims()[2];
    // The LM head only for the positions that predict a token (the last predicts none).
    let logp = next_token_logprobs_from_head(
        hidden.clone().slice([0..b, 0..w, 0..e]),
        pv.lm.lm_head_weight(),
        &batch,
    );
    let values = pv.value.forward(hidden).slice([0..b, 0..w]);
    let ratio = (logp - old_lp).exp();
    let pg1 = adv.clone().neg() * ratio.clone();
    let pg2 = adv.neg() * ratio.clone().clamp(1.0 - p.cliprange, 1.0 + p.cliprange);
    let pg = (pg1.max_pair(pg2) * mask.clone()).sum() / n;
    let vclip =
        old_v.clone() + (values.clone() - old_v).clamp(-p.cliprange_value, p.cliprange_value);
    let vf1 = (values - ret.clone()).square();
    let vf2 = (vclip - ret).square();
    let vf = (vf1.max_pair(vf2) * mask.clone()).sum() * 0.5 / n;
    let ratio_mean = (ratio.detach() * mask).sum().into_scalar::<f32>() as f64 / n;
    let pg_v = pg.clone().into_scalar::<f32>() as f64;
    let vf_v = vf.clone().into_scalar::<f32>() as f64;
    Ok((pg_v, vf_v, ratio_mean, pg + vf * p.vf_coef))
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
        3
    }
    fn summary(&self) -> &'static str {
        "PPO of a GPT-2 policy against a reward ensemble, vanilla or variance-aware"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: PpoParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if p.batch_size == 0 || p.mini_batch_size == 0 {
            return Err(ParamError::at(
                "batch_size",
                "batch sizes must be at least 1",
            ));
        }
        if p.max_new_tokens == 0 {
            return Err(ParamError::at("max_new_tokens", "must be at least 1"));
        }
        if p.beta.is_nan() || p.beta < 0.0 {
            return Err(ParamError::at("beta", "must be ≥ 0"));
        }
        Ok(())
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
        let p: PpoParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let file = split_file(std::path::Path::new(&p.prompts), "train")?;
        let prompts: Vec<String> = read_texts(&file, "prompt")?
            .into_iter()
            .map(|r| r.text)
            .collect();
        let ckpt = ctx.scratch().join("checkpoints");
        let cancel = ctx.cancel_flag();
        let mut lines = Vec::new();
        let total = p.steps as u64;
        let run = {
            let ctx_ref: &StageContext = ctx;
            run_ppo(
                &p,
                PpoInputs {
                    prompts,
                    device,
                    checkpoint_dir: Some(&ckpt),
                },
                &|| cancel.load(std::sync::atomic::Ordering::Relaxed),
                &mut |s: &StepStats| {
                    ctx_ref.progress(
                        s.step as u64,
                        total,
                        format!("kl {:.3} score {:.3}", s.kl, s.score),
                    );
                    lines.push(format!(
                        "step {:>4}: kl {:.4} score {:.4} penalty {:.4} σ² {:.4} vf {:.4} entropy {:.3}{}",
                        s.step, s.kl, s.score, s.kl_penalty, s.variance, s.value_loss, s.entropy,
                        if s.skipped > 0 { format!(" ({} skipped)", s.skipped) } else { String::new() }
                    ));
                },
            )?
        };
        for l in lines {
            ctx.log(l);
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
        let tail = &run.stats[run.stats.len() - (run.stats.len() / 10).max(1)..];
        let avg =
            |f: &dyn Fn(&StepStats) -> f64| tail.iter().map(f).sum::<f64>() / tail.len() as f64;
        ctx.metric("final_kl", avg(&|s| s.kl));
        ctx.metric("final_score", avg(&|s| s.score));
        ctx.metric("final_kl_penalty", avg(&|s| s.kl_penalty));
        ctx.metric(
            "mean_variance",
            run.stats.iter().map(|s| s.variance).sum::<f64>() / run.stats.len().max(1) as f64,
        );
        write_json(
            &ctx.output_path("curves"),
            &serde_json::json!({"method": p.method, "beta": p.beta, "steps": run.stats}),
        )?;
        let tok_path = std::path::Path::new(&p.policy).join("tokenizer.json");
        run.policy
            .lm
            .valid()
            .save_hf_dir(&ctx.output_path("policy"), Some(&tok_path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The step's wiring, checked against a recomputation that shares none of its batching:
    //! each response alone through the models, log-softmax on the host in f64, the rewards,
    //! GAE and whitening of ALGORITHMS.md §4–5 written out here. An off-by-one between
    //! log-probs, values and tokens, the score on the wrong token, whitening per row, the
    //! KL weight or the stop token in the reward model's input would each show.
    use super::*;
    use crate::ml::heads::LinearHeads;

    fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny")
    }

    /// Log-probs (f64, from the logits on the host) of `ids[1..]` given the tokens before.
    fn logprobs_alone(lm: &Gpt2, ids: &[u32]) -> Vec<f64> {
        let batch = TokenBatch::from_rows(&[ids.to_vec()], 0, Padding::Right).unwrap();
        let logits = to_f32_vec(lm.forward(&batch, None).unwrap());
        let v = logits.len() / ids.len();
        (1..ids.len())
            .map(|i| {
                let row: Vec<f64> = logits[(i - 1) * v..i * v]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
                row[ids[i] as usize] - lse
            })
            .collect()
    }

    fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
    }

    fn check(method: Method) {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let reference = Gpt2::from_hf_dir(&fixture(), &device).unwrap();
        let config = reference.config().clone();
        let vocab = config.vocab_size as u32;
        let rm = RewardModel::new(
            Gpt2::init(&config, 5, &device).unwrap(),
            LinearHeads::init(config.n_embd, &[21, 22, 23], &device).unwrap(),
        )
        .unwrap();
        // A quarter of the vocabulary stops a response: some end on a stop token, others
        // at the length limit.
        let stop_ids: Vec<u32> = (0..vocab / 4).collect();
        let models = PpoModels {
            device: device.clone(),
            reference,
            rm,
            to_rm_ids: Box::new(|s: &[u32], _| Ok(s.to_vec())),
            rm_pad: 0,
            pad: 0,
            generate: GenerateConfig {
                max_new_tokens: 6,
                sampling: SamplingConfig::default(),
                stop_ids: stop_ids.clone(),
                pad_id: 0,
            },
            profile: false,
        };
        let p: PpoParams = serde_json::from_value(serde_json::json!({
            "policy": "", "reward_model": "", "prompts": "", "method": method,
            "beta": 0.3, "member": 1, "gamma": 0.9, "lam": 0.8,
        }))
        .unwrap();
        // The policy differs from the reference (else every KL is 0).
        let pv = PolicyValue {
            lm: Gpt2::init(&config, 9, &ad).unwrap(),
            value: ValueHead::init(config.n_embd, 3, &ad).unwrap(),
        };
        let prompts: Vec<Vec<u32>> = vec![
            vec![300, 301],
            vec![5, 200, 201, 202],
            vec![160],
            vec![170, 7],
        ];
        let mut rng = SeededRng::new(11);
        let ro = rollout(
            &p,
            &models,
            &pv,
            &mut rng,
            &prompts,
            &mut StepTimes::default(),
        )
        .unwrap();
        assert_eq!(ro.samples.len(), prompts.len());
        let ends: Vec<bool> = ro
            .samples
            .iter()
            .map(|s| stop_ids.contains(s.ids.last().unwrap()))
            .collect();
        assert!(
            ends.contains(&true),
            "a response ends on a stop token: {ends:?}"
        );

        let policy = pv.lm.valid();
        let value = pv.value.valid();
        let (mut raw_adv, mut want_ret) = (Vec::new(), Vec::new());
        for (r, s) in ro.samples.iter().enumerate() {
            assert_eq!(&s.ids[..s.prompt_len], &prompts[r][..]);
            let n = s.ids.len() - s.prompt_len;
            let resp = s.prompt_len - 1..s.ids.len() - 1; // log-prob i predicts ids[i + 1]
            let logp = &logprobs_alone(&policy, &s.ids)[resp.clone()];
            let ref_logp = &logprobs_alone(&models.reference, &s.ids)[resp.clone()];
            close("old log-probs", &s.old_logp, logp, 1e-4);
            let batch =
                TokenBatch::from_rows(std::slice::from_ref(&s.ids), 0, Padding::Right).unwrap();
            let v: Vec<f64> = to_f32_vec(value.forward(policy.hidden(&batch, None).unwrap()))
                .into_iter()
                .map(f64::from)
                .collect();
            let v = &v[resp];
            close("old values", &s.old_v, v, 1e-4);
            // The reward model reads the sequence without a closing stop token.
            let scored = if ends[r] {
                &s.ids[..s.ids.len() - 1]
            } else {
                &s.ids[..]
            };
            let rm_batch = TokenBatch::from_rows(&[scored.to_vec()], 0, Padding::Right).unwrap();
            let heads: Vec<f64> = to_f32_vec(models.rm.forward(&rm_batch).unwrap())
                .into_iter()
                .map(f64::from)
                .collect();
            let mean = heads.iter().sum::<f64>() / 3.0;
            let var = heads.iter().map(|h| (h - mean).powi(2)).sum::<f64>() / 2.0;
            assert!((ro.scores[r] - heads[1]).abs() < 1e-4, "member 1's score");
            assert!((ro.variances[r] - var).abs() < 1e-4, "sample variance");
            let w = if method == Method::Vanilla { 1.0 } else { var };
            assert!((ro.weights[r] - w).abs() < 1e-4);
            // R_j = −β·w·(log π − log π_ref), the score added at the last token.
            let kl: Vec<f64> = logp.iter().zip(ref_logp).map(|(a, b)| a - b).collect();
            assert!((ro.kl[r] - kl.iter().sum::<f64>()).abs() < 1e-4);
            let mut rew: Vec<f64> = kl.iter().map(|k| -0.3 * w * k).collect();
            rew[n - 1] += heads[1];
            // GAE with γ 0.9, λ 0.8, V after the end 0; returns before whitening.
            let mut adv = vec![0.0; n];
            let mut next = (0.0, 0.0); // (A_{t+1}, V_{t+1})
            for t in (0..n).rev() {
                adv[t] = rew[t] + 0.9 * next.1 - v[t] + 0.9 * 0.8 * next.0;
                next = (adv[t], v[t]);
            }
            want_ret.push(adv.iter().zip(v).map(|(a, v)| a + v).collect::<Vec<_>>());
            raw_adv.push(adv);
        }
        // Whitened over every token of the batch (unbiased variance, mean not added back).
        let all: Vec<f64> = raw_adv.iter().flatten().copied().collect();
        let m = all.iter().sum::<f64>() / all.len() as f64;
        let sd = (all.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (all.len() - 1) as f64 + 1e-8)
            .sqrt();
        for (r, s) in ro.samples.iter().enumerate() {
            let want: Vec<f64> = raw_adv[r].iter().map(|a| (a - m) / sd).collect();
            close("advantages", &s.adv, &want, 1e-3);
            close("returns", &s.ret, &want_ret[r], 1e-3);
        }

        // The loss of the whole batch before any update: every ratio is 1, so the policy
        // loss is −mean(A) and the value loss ½·mean((V − G)²), over response tokens only.
        let rows: Vec<usize> = (0..ro.samples.len()).collect();
        let (pg, vf, ratio, _) = minibatch_loss(&pv, &ro.samples, &rows, 0, &p, &ad).unwrap();
        let tokens: Vec<&Sample> = ro.samples.iter().collect();
        let count = tokens.iter().map(|s| s.adv.len()).sum::<usize>() as f64;
        let want_pg = -tokens.iter().flat_map(|s| s.adv.iter()).sum::<f64>() / count;
        let want_vf = 0.5
            * tokens
                .iter()
                .flat_map(|s| s.old_v.iter().zip(&s.ret).map(|(v, g)| (v - g).powi(2)))
                .sum::<f64>()
            / count;
        assert!((ratio - 1.0).abs() < 1e-5, "mean ratio {ratio}");
        assert!((pg - want_pg).abs() < 1e-4, "policy loss {pg} vs {want_pg}");
        assert!(
            (vf - want_vf).abs() < 1e-4 * want_vf.max(1.0),
            "value loss {vf} vs {want_vf}"
        );
    }

    #[test]
    fn a_vanilla_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::Vanilla);
    }

    #[test]
    fn a_variance_aware_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::VarianceAware);
    }
}
