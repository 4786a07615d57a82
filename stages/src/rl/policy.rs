//! The model PPO trains: a policy and its value head, one module (one optimizer updates
//! both), and its weights as a checkpoint stores them.
//!
//! The policy is any causal LM dagrun runs ([`Backbone`]: GPT-2, or a Gemma/Llama/Qwen2
//! decoder with an LM head); the reference policy shares its architecture. PPO trains in
//! float32: [`load_policy`] loads both that way.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use crate::ml::models::backbone::{Backbone, LanguageModel};
use crate::ml::models::heads::LinearHeads;
use crate::ml::models::hf_weights::WeightDtype;
use crate::ml::models::value_head::ValueHead;
use crate::ml::models::weights::HostTensors;
use crate::ml::Result;

/// The policy architecture PPO trains: GPT-2 or a Gemma/Llama/Qwen2 decoder (the reference
/// policy has the same).
pub type Policy = Backbone;

/// Loads a policy (or the reference) from a Hugging Face folder in float32, detecting the
/// architecture from its `config.json`; a folder without an LM head is an error naming it.
pub fn load_policy(dir: &Path, device: &Device) -> Result<Policy> {
    Backbone::causal_lm_from_hf_dir(dir, device, WeightDtype::F32)
}

/// A policy with its value head.
#[derive(Module, Debug)]
pub struct PolicyValue {
    pub lm: Policy,
    pub value: ValueHead,
}

/// The value head's tensors in a checkpoint are named `v_head.*`.
const VALUE_PREFIX: &str = "v_head.";

impl PolicyValue {
    /// A fresh value head (initialised from `seed`) on `policy`'s final hidden states.
    pub fn new(policy: impl Into<Policy>, seed: u64, device: &Device) -> Result<Self> {
        let policy = policy.into();
        let value = ValueHead::init(policy.hidden_size(), seed, device)?;
        Ok(PolicyValue { lm: policy, value })
    }

    /// All weights, the policy's under their own names and the value head's as `v_head.*`.
    pub fn weights(&self) -> HostTensors {
        let mut set = HostTensors::new("");
        for (n, t) in self.lm.named_weights() {
            set.tensors.insert(n, t);
        }
        for (n, t) in self.value.heads().to_host(std::path::Path::new("")).tensors {
            set.tensors.insert(format!("{VALUE_PREFIX}{n}"), t);
        }
        set
    }

    /// The model back from [`PolicyValue::weights`] on `device`: a policy of `like`'s
    /// architecture, configuration and dtype (its own weights are not used).
    pub fn from_weights(like: &Policy, mut set: HostTensors, device: &Device) -> Result<Self> {
        let mut head = HostTensors::new("v_head");
        let keys: Vec<String> = set
            .tensors
            .keys()
            .filter(|k| k.starts_with(VALUE_PREFIX))
            .cloned()
            .collect();
        for k in keys {
            let t = set.tensors.remove(&k).expect("listed");
            head.tensors.insert(k[VALUE_PREFIX.len()..].to_string(), t);
        }
        let lm = like.with_weights(set, device)?;
        let value = ValueHead::from_heads(LinearHeads::from_host(
            &mut head,
            lm.hidden_size(),
            1,
            device,
        )?);
        Ok(PolicyValue { lm, value })
    }
}
