//! Experience for one PPO step (docs/algorithms.md §4 steps 1–5, §5; OpenRLHF's
//! `make_experience`): sample a response per prompt from the current policy, score it with the
//! reward model (one head, or an aggregation of the K heads), evaluate the log-probs of the
//! response tokens under the policy and the frozen reference and the values of the value head,
//! and turn them into per-token rewards, advantages and returns ([`super::advantages`]).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::advantages::{gae, token_rewards, whiten};
use super::policy::{Policy, PolicyValue};
use super::timing::StepTimes;
use crate::ml::inference::generate::{generate_timed, GenerateConfig};
use crate::ml::inference::logprobs::token_logprobs_from_logits;
use crate::ml::models::backbone::LanguageModel;
use crate::ml::models::weights::to_f32_vec;
use crate::ml::reward::SampleScorer;
use crate::ml::rng::SeededRng;
use crate::ml::{Padding, Result, TokenBatch};
use crate::stats::mean_var;

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

/// How a rollout turns scores and log-probs into rewards.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    pub method: Method,
    /// KL coefficient β.
    pub beta: f64,
    pub aggregation: Aggregation,
    /// The head of `Aggregation::Member`.
    pub member: usize,
    /// λ of the `mean_minus_*` aggregations.
    pub lambda: f64,
    /// Delta degrees of freedom of the ensemble variance.
    pub ddof: usize,
    /// A constant in place of the ensemble variance in variance-aware PPO's KL weight.
    pub variance_override: Option<f64>,
    /// Discount γ of GAE.
    pub gamma: f64,
    /// λ of GAE.
    pub lam: f64,
}

impl RolloutConfig {
    /// Does the reward need an ensemble variance (which K ≤ ddof heads cannot give)?
    pub fn needs_variance(&self) -> bool {
        (self.method == Method::VarianceAware && self.variance_override.is_none())
            || matches!(
                self.aggregation,
                Aggregation::MeanMinusVar | Aggregation::MeanMinusStd
            )
    }

    /// Checks the config against a reward model of `heads` heads.
    pub fn check_heads(&self, heads: usize) -> std::result::Result<(), String> {
        if self.aggregation == Aggregation::Member && self.member >= heads {
            return Err(format!(
                "`member` {} but the reward model has {heads} heads",
                self.member
            ));
        }
        // With K ≤ ddof the variance is 0 for every sample: variance-aware PPO would run
        // without a KL penalty and the `mean_minus_*` aggregations would be the mean.
        if self.needs_variance() && heads <= self.ddof {
            return Err(format!(
                "the reward model has {heads} head(s): an ensemble variance with ddof {} needs at least {}",
                self.ddof,
                self.ddof + 1
            ));
        }
        Ok(())
    }

    /// The score a sample gets from its heads' rewards, and the ensemble's variance (its own
    /// also under `variance_override`, which replaces only the KL weight).
    pub fn score(&self, heads: &[f64]) -> (f64, f64) {
        let (mean, var) = mean_var(heads, self.ddof);
        let s = match self.aggregation {
            Aggregation::Member => heads[self.member],
            Aggregation::Mean => mean,
            Aggregation::Min => heads.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregation::MeanMinusVar => mean - self.lambda * var,
            Aggregation::MeanMinusStd => mean - self.lambda * var.sqrt(),
        };
        (s, var)
    }

    /// The KL weight `w` of a sample with ensemble variance `variance`.
    pub fn kl_weight(&self, variance: f64) -> f64 {
        match self.method {
            Method::Vanilla => 1.0,
            Method::VarianceAware => self.variance_override.unwrap_or(variance),
        }
    }
}

/// The fixed parts of a PPO run that every step reads: the frozen reference policy, the
/// reward model, and how responses are sampled.
pub struct PpoModels<'a> {
    /// The run's device (without autodiff; the policy lives on its autodiff variant).
    pub device: Device,
    /// The frozen reference policy (no autodiff).
    pub reference: Policy,
    /// The reward model, reading the policy's samples.
    pub reward: Box<dyn SampleScorer + 'a>,
    /// Padding id of the policy's batches.
    pub pad: u32,
    /// How responses are sampled.
    pub generate: GenerateConfig,
    /// Wait for the device after each part of a step and time it ([`StepTimes`]'s parts;
    /// `dagrun bench ppo-step --profile`). Off in the stage: the waits cost a little on an
    /// asynchronous device.
    pub profile: bool,
}

/// One sampled response and everything the update needs of it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Prompt ⊕ response, the policy's token ids.
    pub ids: Vec<u32>,
    pub prompt_len: usize,
    /// Per response token: the log-prob under the policy that sampled it.
    pub old_logp: Vec<f64>,
    /// Per response token: the value before the update.
    pub old_v: Vec<f64>,
    /// Per response token: the whitened advantage.
    pub adv: Vec<f64>,
    /// Per response token: the return `G = A + V` (before whitening).
    pub ret: Vec<f64>,
}

impl Sample {
    /// Response tokens.
    pub fn len(&self) -> usize {
        self.adv.len()
    }

    /// Has the response no tokens?
    pub fn is_empty(&self) -> bool {
        self.adv.is_empty()
    }
}

/// A batch of responses, scored and evaluated: what the PPO epochs train on.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub samples: Vec<Sample>,
    /// Per response: the score (the reward the policy maximises).
    pub scores: Vec<f64>,
    /// Per response: the ensemble's variance σ²(x, y).
    pub variances: Vec<f64>,
    /// Per response: the KL weight w (1 for vanilla PPO).
    pub weights: Vec<f64>,
    /// Per response: `Σ_t kl_t`.
    pub kl: Vec<f64>,
    /// The policy's entropy summed over the response tokens, and their count.
    pub entropy_sum: f64,
    pub entropy_tokens: usize,
}

/// Steps 1–5 of a PPO step for `prompts` (token ids): sample responses from `pv`, score
/// them, evaluate log-probs (policy and reference) and values, and turn them into whitened
/// advantages and returns. Charges its phases to `times`.
pub fn rollout(
    cfg: &RolloutConfig,
    models: &PpoModels,
    pv: &PolicyValue,
    rng: &mut SeededRng,
    prompts: &[Vec<u32>],
    times: &mut StepTimes,
) -> Result<Rollout> {
    let t0 = Instant::now();
    // Responses from the current policy.
    let current = pv.lm.valid();
    let wait_for = models.profile.then_some(&models.device);
    let (generation, gen_times) =
        generate_timed(&current, prompts, &models.generate, rng, wait_for, None)?;
    if models.profile {
        times.generation_model = gen_times.model;
        times.generation_to_host = gen_times.to_host;
        times.generation_sampling = gen_times.sampling;
    }
    // The policy's weights are shared with these evaluation copies while they live; dropped,
    // Adam can update the weights in place (see ml/training/optim/libtorch.rs).
    drop(current);
    times.generation = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Scores and ensemble variances.
    let rewards = models.reward.score_samples(
        &generation.sequences,
        &generation.prompt_lens,
        &models.generate.stop_ids,
    )?;
    let b = prompts.len();
    let (mut scores, mut variances) = (Vec::with_capacity(b), Vec::with_capacity(b));
    for heads in rewards.rows() {
        let heads: Vec<f64> = heads.iter().map(|&x| x as f64).collect();
        let (s, var) = cfg.score(&heads);
        scores.push(s);
        variances.push(var);
    }
    times.scoring = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Log-probs (policy, reference) and values of the response tokens.
    let seqs = &generation.sequences;
    let full = TokenBatch::from_rows(seqs, models.pad, Padding::Right)?;
    let t = full.len;
    let pv_eval = pv.valid();
    let hidden = pv_eval.lm.hidden_states(&full, None)?;
    let logits = pv_eval.lm.logits(hidden.clone())?;
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
        // Log-prob column `c` predicts token `c + 1`: response token j is column pl + j − 1.
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
        let w = cfg.kl_weight(variances[r]);
        let rewards = token_rewards(&kl, cfg.beta, w, scores[r]);
        let (adv, ret) = gae(&rewards, &old_v, cfg.gamma, cfg.lam);
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

#[cfg(test)]
mod tests {
    //! The rollout's wiring, checked against a recomputation that shares none of its batching:
    //! each response alone through the models, log-softmax on the host in f64, the rewards,
    //! GAE and whitening of docs/algorithms.md §4–5 written out here. An off-by-one between
    //! log-probs, values and tokens, the score on the wrong token, whitening per row, the
    //! KL weight or the stop token in the reward model's input would each show.
    use super::*;
    use crate::ml::inference::sampling::SamplingConfig;
    use crate::ml::models::backbone::Backbone;
    use crate::ml::models::heads::LinearHeads;
    use crate::ml::models::reward_model::RewardModel;
    use crate::ml::models::value_head::ValueHead;
    use crate::ml::models::weights::HostTensors;
    use crate::ml::reward::{without_stop, Scores};
    use crate::ml::Gpt2;
    use crate::rl::loss::{minibatch_loss, LossConfig};

    /// A reward model reading the policy's ids as they are (one vocabulary), without the
    /// stop token that ended a response, as every reward model reads a sample.
    struct SameIds(RewardModel);

    impl SampleScorer for SameIds {
        fn num_heads(&self) -> usize {
            self.0.heads.num_heads()
        }
        fn score_samples(&self, seqs: &[Vec<u32>], lens: &[usize], stop: &[u32]) -> Result<Scores> {
            let rows: Vec<Vec<u32>> = seqs
                .iter()
                .zip(lens)
                .map(|(s, &n)| without_stop(s, n, stop).to_vec())
                .collect();
            let batch = TokenBatch::from_rows(&rows, 0, Padding::Right)?;
            Ok(Scores {
                heads: self.num_heads(),
                values: to_f32_vec(self.0.forward(&batch)?),
            })
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// A copy of `model` on `device` with every weight moved by a deterministic amount (a
    /// policy that differs from its reference, else every KL is 0).
    fn perturbed(model: &Backbone, device: &Device) -> Backbone {
        let mut set = HostTensors::new("");
        for (n, mut t) in model.named_weights() {
            for (i, x) in t.values.iter_mut().enumerate() {
                *x += 0.05 * ((i * 7919 % 13) as f32 / 6.0 - 1.0);
            }
            set.tensors.insert(n, t);
        }
        model.with_weights(set, device).unwrap()
    }

    /// Log-probs (f64, from the logits on the host) of `ids[1..]` given the tokens before.
    fn logprobs_alone(lm: &impl LanguageModel, ids: &[u32]) -> Vec<f64> {
        let batch = TokenBatch::from_rows(&[ids.to_vec()], 0, Padding::Right).unwrap();
        let logits = to_f32_vec(lm.logits_of(&batch, None).unwrap());
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

    /// The rollout of a `family` policy (`gpt2`: a random GPT-2 against the fixture; a
    /// decoder: the fixture against a perturbed copy of it), scored by a random GPT-2.
    fn check(method: Method, family: &str) {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let config = Gpt2::from_hf_dir(&fixture("gpt2-tiny"), &device)
            .unwrap()
            .config()
            .clone();
        let (reference, policy): (Backbone, Backbone) = if family == "gpt2" {
            (
                Gpt2::from_hf_dir(&fixture("gpt2-tiny"), &device)
                    .unwrap()
                    .into(),
                Gpt2::init(&config, 9, &ad).unwrap().into(),
            )
        } else {
            let dir = fixture(&format!("{family}-tiny"));
            let reference = crate::rl::policy::load_policy(&dir, &device).unwrap();
            assert_eq!(reference.model_type(), family);
            let policy = perturbed(&reference, &ad);
            (reference, policy)
        };
        let width = reference.hidden_size();
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
            reward: Box::new(SameIds(rm)),
            pad: 0,
            generate: GenerateConfig {
                max_new_tokens: 6,
                sampling: SamplingConfig::default(),
                stop_ids: stop_ids.clone(),
                pad_id: 0,
            },
            profile: false,
        };
        let cfg = RolloutConfig {
            method,
            beta: 0.3,
            aggregation: Aggregation::Member,
            member: 1,
            lambda: 1.0,
            ddof: 1,
            variance_override: None,
            gamma: 0.9,
            lam: 0.8,
        };
        // The policy differs from the reference (else every KL is 0).
        let pv = PolicyValue {
            lm: policy,
            value: ValueHead::init(width, 3, &ad).unwrap(),
        };
        let prompts: Vec<Vec<u32>> = vec![
            vec![300, 301],
            vec![5, 200, 201, 202],
            vec![160],
            vec![170, 7],
        ];
        let mut rng = SeededRng::new(11);
        let ro = rollout(
            &cfg,
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
            let v: Vec<f64> =
                to_f32_vec(value.forward(policy.hidden_states(&batch, None).unwrap()))
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
            let rm = Gpt2::init(&config, 5, &device).unwrap();
            let rm = RewardModel::new(
                rm,
                LinearHeads::init(config.n_embd, &[21, 22, 23], &device).unwrap(),
            )
            .unwrap();
            let heads: Vec<f64> = to_f32_vec(rm.forward(&rm_batch).unwrap())
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
        let loss_cfg = LossConfig {
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
        };
        let loss = minibatch_loss(&pv, &ro.samples, &rows, 0, &loss_cfg, &ad).unwrap();
        let (pg, vf, ratio) = (loss.policy, loss.value, loss.mean_ratio);
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
        check(Method::Vanilla, "gpt2");
    }

    #[test]
    fn a_variance_aware_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::VarianceAware, "gpt2");
    }

    #[test]
    fn a_qwen2_policy_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::VarianceAware, "qwen2");
    }

    #[test]
    fn a_llama_policy_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::Vanilla, "llama");
    }

    #[test]
    fn a_gemma_policy_rollout_matches_the_method_recomputed_response_by_response() {
        check(Method::Vanilla, "gemma");
    }

    /// A policy's checkpoint weights (a decoder's, with the value head) load back into the
    /// same numbers, and a classifier folder is refused as a policy, naming the folder.
    #[test]
    fn decoder_policy_weights_round_trip_and_a_classifier_is_no_policy() {
        let device = Device::flex();
        for family in ["qwen2", "llama", "gemma"] {
            let dir = fixture(&format!("{family}-tiny"));
            let pv = PolicyValue::new(
                crate::rl::policy::load_policy(&dir, &device).unwrap(),
                4,
                &device,
            )
            .unwrap();
            let set = pv.weights();
            assert!(set.tensors.contains_key("v_head.weight"), "{family}");
            let back = PolicyValue::from_weights(&pv.lm, set.clone(), &device).unwrap();
            assert_eq!(back.weights().tensors, set.tensors, "{family}");
            // A tensor missing from the checkpoint is an error naming it.
            let mut short = set.clone();
            short.tensors.remove("norm.weight");
            let e = PolicyValue::from_weights(&pv.lm, short, &device)
                .unwrap_err()
                .to_string();
            assert!(e.contains("norm.weight"), "{e}");
        }
        let rm = fixture("llama-rm-tiny");
        let e = crate::rl::policy::load_policy(&rm, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("llama-rm-tiny") && e.contains("no LM head"),
            "{e}"
        );
    }
}
