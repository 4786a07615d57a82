//! RLHF against a reward model: PPO, vanilla and variance-aware (docs/algorithms.md §4–5),
//! and the judge evaluation of the policies it trains (§6).
//!
//! Read in this order:
//! - [`ppo`]: [`PpoConfig`](ppo::PpoConfig), the training loop ([`ppo::train`], checkpointed)
//!   and one step ([`ppo::ppo_step`]);
//! - [`rollout`]: the experience of a step — sample, score ([`rollout::RolloutConfig`]: the
//!   method, the aggregation of the K heads), log-probs, values;
//! - [`advantages`]: per-token rewards with the KL penalty, GAE, returns, whitening;
//! - [`loss`]: [`PpoLoss`](loss::PpoLoss), the clipped policy and value losses of a
//!   mini-batch;
//! - [`policy`]: the policy and its value head as one module; [`timing`]: a step's phases;
//! - [`math`]: the losses one token at a time, the reference the tensor losses are tested
//!   against;
//! - [`calibrate`]: β for a target final KL from PPO probes (the `kl_calibrate` kind);
//! - [`judge`]: policies answer held-out prompts, a judge scores the answers.

pub mod advantages;
pub mod calibrate;
pub mod judge;
pub mod loss;
pub mod math;
pub mod policy;
pub mod ppo;
pub mod rollout;
pub mod timing;
