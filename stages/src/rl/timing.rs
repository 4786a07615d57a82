//! Where the time of a PPO step goes (`dagrun bench ppo-step` reports it).

use serde::{Deserialize, Serialize};

/// Wall-clock seconds of the phases of one PPO step. Each phase ends by reading results back
/// to the host, so on an asynchronous device (CUDA) its kernels are inside its time, except
/// the last optimizer update's, which the next read (or a `Device::sync`) waits for. The parts
/// marked "with `profile`" are measured only when the run waits for the device after each part
/// ([`super::rollout::PpoModels::profile`]), else 0.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StepTimes {
    /// Sampling the responses (KV-cache decoding).
    pub generation: f64,
    /// Of `generation`, with `profile`: the model's forward passes and LM head.
    #[serde(default)]
    pub generation_model: f64,
    /// Of `generation`, with `profile`: the logits' copies to the host.
    #[serde(default)]
    pub generation_to_host: f64,
    /// Of `generation`, with `profile`: choosing the tokens on the host.
    #[serde(default)]
    pub generation_sampling: f64,
    /// Reward-model input ids and the reward model's forward pass.
    pub scoring: f64,
    /// Policy + value forward (log-probs, values, entropy), the reference forward, and the
    /// per-token rewards, GAE and whitening on the host.
    pub forward: f64,
    /// `ppo_epochs` passes over mini-batches: forward, backward and Adam.
    pub update: f64,
    /// Of `update`, with `profile`: the mini-batches' loss forward (ends by reading the
    /// losses back).
    #[serde(default)]
    pub update_forward: f64,
    /// Of `update`, with `profile`: the backward passes.
    #[serde(default)]
    pub update_backward: f64,
    /// Of `update`, with `profile`: gradient clipping and Adam.
    #[serde(default)]
    pub update_optimizer: f64,
}

impl StepTimes {
    /// The whole step.
    pub fn total(&self) -> f64 {
        self.generation + self.scoring + self.forward + self.update
    }
}
