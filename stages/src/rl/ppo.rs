//! PPO, vanilla and variance-aware (docs/algorithms.md §4–5): the training loop and one step.
//!
//! A step takes a batch of prompts from a shuffled pass over the prompt set, makes a
//! [`Rollout`] (sample, score, evaluate, advantages: [`super::rollout`]), then makes
//! `ppo_epochs` passes over shuffled mini-batches of it, each an Adam step on the
//! [`PpoLoss`] (clipped policy and value losses: [`super::loss`]); a mini-batch whose mean
//! ratio exceeds `ratio_threshold` is skipped. The loop checkpoints its whole state
//! ([`TrainerState`]: weights, Adam's moments, the RNG, the prompt order, the statistics)
//! every `checkpoint_every` steps, so a killed run resumes where it was and ends as an
//! uninterrupted one would.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::loss::{minibatch_loss, LossConfig, PpoLoss};
use super::policy::{Policy, PolicyValue};
use super::rollout::{rollout, PpoModels, Rollout, RolloutConfig};
use super::timing::StepTimes;
use crate::ml::rng::{RngState, SeededRng};
use crate::ml::training::checkpoint;
use crate::ml::training::grads::ParamGrads;
use crate::ml::training::guard::{check_loss, check_params};
use crate::ml::training::optim::{Adam, AdamConfig};
use crate::ml::training::sink::StepSink;
use crate::ml::{MlError, Result};

/// PPO's settings (the `ppo` kind's params without its inputs; defaults there).
#[derive(Debug, Clone, PartialEq)]
pub struct PpoConfig {
    /// Rewards, advantages and returns.
    pub rollout: RolloutConfig,
    /// The clipped losses.
    pub loss: LossConfig,
    /// Adam's learning rate (no schedule; no weight decay).
    pub lr: f64,
    /// Prompts per step.
    pub batch_size: usize,
    /// Rows per mini-batch.
    pub mini_batch_size: usize,
    /// Passes over each rollout.
    pub ppo_epochs: usize,
    /// Steps.
    pub steps: usize,
    /// Skip a mini-batch update whose mean ratio exceeds this.
    pub ratio_threshold: f64,
    /// Global gradient-norm clipping.
    pub max_grad_norm: Option<f64>,
    /// Checkpoint every N steps (0: never).
    pub checkpoint_every: usize,
    /// Seed of the prompt order, the sampling and the value head's initialisation.
    pub seed: u64,
}

impl PpoConfig {
    /// Adam as PPO uses it (TRL: no weight decay).
    pub fn optimizer() -> Adam {
        Adam::new(AdamConfig {
            weight_decay: 0.0,
            ..AdamConfig::default()
        })
    }

    /// The seed of the value head's initialisation.
    pub fn value_head_seed(&self) -> u64 {
        self.seed ^ 0x76_68
    }
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

impl StepStats {
    /// The measurements by name (what a [`StepSink`] gets).
    pub fn scalars(&self) -> [(&'static str, f64); 10] {
        [
            ("kl", self.kl),
            ("score", self.score),
            ("kl_penalty", self.kl_penalty),
            ("variance", self.variance),
            ("policy_loss", self.policy_loss),
            ("value_loss", self.value_loss),
            ("entropy", self.entropy),
            ("mean_ratio", self.mean_ratio),
            ("response_length", self.response_length),
            ("skipped", self.skipped as f64),
        ]
    }
}

/// Everything besides the weights and Adam's moments that a checkpoint keeps.
#[derive(Serialize, Deserialize)]
struct TrainerState {
    stats: Vec<StepStats>,
    rng: RngState,
    order: Vec<usize>,
    cursor: usize,
    /// The policy's hidden width (kept for checkpoints written before `PolicyValue::from_weights`).
    n_embd: usize,
}

/// The result of a run.
pub struct PpoRun {
    pub policy: PolicyValue,
    pub stats: Vec<StepStats>,
    /// The step of the checkpoint the run resumed from (0: it started fresh).
    pub resumed_at: usize,
}

/// Runs PPO on `prompts` (token ids) from the reference policy in `models` (the policy starts
/// as a copy of it, `policy` on the autodiff device), resuming from `checkpoint_dir` when it
/// holds a checkpoint. `sink` sees each step's [`StepStats`]; `cancel` is polled between steps.
pub fn train(
    cfg: &PpoConfig,
    models: &PpoModels,
    policy: Policy,
    prompts: &[Vec<u32>],
    checkpoint_dir: Option<&Path>,
    cancel: &dyn Fn() -> bool,
    sink: &mut dyn StepSink,
) -> Result<PpoRun> {
    cfg.rollout
        .check_heads(models.reward.num_heads())
        .map_err(MlError::Invalid)?;
    if prompts.len() < cfg.batch_size {
        return Err(MlError::Invalid(format!(
            "{} prompts, fewer than one batch of {}",
            prompts.len(),
            cfg.batch_size
        )));
    }
    let ad = models.device.clone().autodiff();
    let width = crate::ml::models::backbone::LanguageModel::hidden_size(&policy);
    let mut adam = PpoConfig::optimizer();
    let mut rng = SeededRng::new(cfg.seed);
    let mut stats: Vec<StepStats> = Vec::new();
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    let mut pv = PolicyValue::new(policy, cfg.value_head_seed(), &ad)?;
    let mut resumed_at = 0;
    if let Some(dir) = checkpoint_dir {
        if let Some(ck) = checkpoint::load_latest(dir, &mut adam, &models.device)? {
            let st: TrainerState =
                serde_json::from_value(ck.trainer).map_err(|e| MlError::json(&ck.path, e))?;
            pv = PolicyValue::from_weights(&pv.lm, ck.weights, &ad)?;
            stats = st.stats;
            rng = SeededRng::from_state(st.rng);
            order = st.order;
            cursor = st.cursor;
            resumed_at = ck.step;
        }
    }
    for step in stats.len()..cfg.steps {
        if cancel() {
            return Err(MlError::Cancelled);
        }
        // One pass over the shuffled prompts, reshuffled when it runs out.
        if cursor + cfg.batch_size > order.len() {
            order = (0..prompts.len()).collect();
            rng.shuffle(&mut order);
            cursor = 0;
        }
        let batch: Vec<Vec<u32>> = order[cursor..cursor + cfg.batch_size]
            .iter()
            .map(|&i| prompts[i].clone())
            .collect();
        cursor += cfg.batch_size;
        let (next, st, _times) = ppo_step(cfg, models, pv, &mut adam, &mut rng, &batch, step)?;
        pv = next;
        sink.step(st.step, &st.scalars());
        stats.push(st);
        let done = stats.len();
        if let Some(dir) = checkpoint_dir {
            if cfg.checkpoint_every > 0
                && done.is_multiple_of(cfg.checkpoint_every)
                && done < cfg.steps
            {
                check_params(done, &pv)?;
                let state = TrainerState {
                    stats: stats.clone(),
                    rng: rng.state(),
                    order: order.clone(),
                    cursor,
                    n_embd: width,
                };
                let state = serde_json::to_value(state).expect("the trainer state is JSON");
                checkpoint::save(dir, done, &pv.weights(), &adam, state)?;
            }
        }
    }
    check_params(stats.len(), &pv)?;
    Ok(PpoRun {
        policy: pv,
        stats,
        resumed_at,
    })
}

/// One PPO step on `prompts` (token ids): a [`Rollout`], then `ppo_epochs` passes of Adam over
/// its mini-batches. [`train`] calls it once per step; `dagrun bench ppo-step` times it.
/// `step` counts from 0; a non-finite loss fails the step.
pub fn ppo_step(
    cfg: &PpoConfig,
    models: &PpoModels,
    mut pv: PolicyValue,
    adam: &mut Adam,
    rng: &mut SeededRng,
    prompts: &[Vec<u32>],
    step: usize,
) -> Result<(PolicyValue, StepStats, StepTimes)> {
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
    } = rollout(&cfg.rollout, models, &pv, rng, prompts, &mut times)?;
    let b = samples.len();
    let t0 = Instant::now();
    // With `profile`: wait for the device, charge the time since `since` to `slot`.
    let wait = |slot: &mut f64, since: Instant| -> Result<Instant> {
        if !models.profile {
            return Ok(since);
        }
        models
            .device
            .sync()
            .map_err(|e| MlError::Invalid(format!("waiting for the device: {e:?}")))?;
        let now = Instant::now();
        *slot += (now - since).as_secs_f64();
        Ok(now)
    };
    let (mut pg_sum, mut vf_sum, mut ratio_sum, mut updates, mut skipped) =
        (0.0, 0.0, 0.0, 0usize, 0usize);
    for _ in 0..cfg.ppo_epochs {
        let mut rows: Vec<usize> = (0..b).collect();
        rng.shuffle(&mut rows);
        for mb in rows.chunks(cfg.mini_batch_size.max(1)) {
            let t_part = Instant::now();
            let PpoLoss {
                total,
                policy,
                value,
                mean_ratio,
            } = minibatch_loss(&pv, &samples, mb, models.pad, &cfg.loss, &ad)?;
            check_loss(step + 1, "PPO loss", policy + cfg.loss.vf_coef * value)?;
            if mean_ratio > cfg.ratio_threshold {
                skipped += 1;
                continue;
            }
            let t_part = wait(&mut times.update_forward, t_part)?;
            let grads = ParamGrads::from_loss(total, &pv);
            let t_part = wait(&mut times.update_backward, t_part)?;
            pv = adam.step_clipped(pv, grads, cfg.lr, cfg.max_grad_norm);
            wait(&mut times.update_optimizer, t_part)?;
            pg_sum += policy;
            vf_sum += value;
            ratio_sum += mean_ratio;
            updates += 1;
        }
    }
    let mean = |xs: &mut dyn Iterator<Item = f64>| xs.sum::<f64>() / b as f64;
    let st = StepStats {
        step: step + 1,
        kl: mean(&mut kl.iter().copied()),
        score: mean(&mut scores.iter().copied()),
        kl_penalty: mean(
            &mut kl
                .iter()
                .zip(&weights)
                .map(|(k, w)| cfg.rollout.beta * w * k),
        ),
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
