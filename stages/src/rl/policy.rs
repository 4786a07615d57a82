//! The model PPO trains: a policy and its value head, one module (one optimizer updates
//! both), and its weights as a checkpoint stores them.

use burn::module::Module;
use burn::tensor::Device;

use crate::ml::models::heads::LinearHeads;
use crate::ml::models::value_head::ValueHead;
use crate::ml::models::weights::HostTensors;
use crate::ml::{Gpt2, Gpt2Config, Result};

/// The policy architecture PPO trains (GPT-2; the reference policy has the same).
pub type Policy = Gpt2;

/// A policy with its value head.
#[derive(Module, Debug)]
pub struct PolicyValue {
    pub lm: Policy,
    pub value: ValueHead,
}

/// The value head's tensors in a checkpoint are named `v_head.*`.
const VALUE_PREFIX: &str = "v_head.";

impl PolicyValue {
    /// A fresh value head (initialised from `seed`) on `policy`.
    pub fn new(policy: Policy, seed: u64, device: &Device) -> Result<Self> {
        let value = ValueHead::init(policy.config().n_embd, seed, device)?;
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

    /// The model back from [`PolicyValue::weights`] (a policy of `config`) on `device`.
    pub fn from_weights(
        config: &Gpt2Config,
        mut set: HostTensors,
        device: &Device,
    ) -> Result<Self> {
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
        let lm = Policy::from_tensors(config, set, device)?;
        let value =
            ValueHead::from_heads(LinearHeads::from_host(&mut head, config.n_embd, 1, device)?);
        Ok(PolicyValue { lm, value })
    }
}
