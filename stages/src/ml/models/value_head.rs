//! PPO's value head: `V_t = w · h_t + b` on the policy's final hidden states (TRL's
//! `ValueHead`, run without dropout).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::ml::error::Result;
use crate::ml::models::heads::LinearHeads;

/// A scalar linear head applied at every position.
#[derive(Module, Debug)]
pub struct ValueHead {
    head: LinearHeads,
}

impl ValueHead {
    /// A value head of width `n_embd`, initialised from `seed` (see [`LinearHeads::init`]).
    pub fn init(n_embd: usize, seed: u64, device: &Device) -> Result<Self> {
        Ok(ValueHead {
            head: LinearHeads::init(n_embd, &[seed], device)?,
        })
    }

    /// Wrap an existing single head.
    pub fn from_heads(head: LinearHeads) -> Self {
        ValueHead { head }
    }

    /// The underlying single head.
    pub fn heads(&self) -> &LinearHeads {
        &self.head
    }

    /// `[b, t, n_embd]` hidden states → `[b, t]` values.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        let [b, t, _] = hidden.dims();
        self.head.forward_seq(hidden).reshape([b, t])
    }
}
