//! Linear heads on a transformer's hidden states: K parallel scalar heads stored as one
//! `[n_embd, K]` matrix (head k is column k), used for reward ensembles (K ≥ 1) and, with
//! K = 1, for PPO's value head.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::ml::error::{MlError, Result};
use crate::ml::models::weights::HostTensors;
use crate::ml::rng::SeededRng;

/// K scalar linear heads `r_k(h) = w_k · h + b_k`.
#[derive(Module, Debug)]
pub struct LinearHeads {
    /// `[n_embd, K]`: column k is head k's weight.
    pub(crate) weight: Param<Tensor<2>>,
    /// `[K]`: head k's bias.
    pub(crate) bias: Param<Tensor<1>>,
}

impl LinearHeads {
    /// K heads of width `n_embd`; head k's weights are N(0, 1/(n_embd+1)) drawn from
    /// `SeededRng::new(seeds[k])` (so heads differ exactly by their seeds), biases zero.
    pub fn init(n_embd: usize, seeds: &[u64], device: &Device) -> Result<Self> {
        if seeds.is_empty() {
            return Err(MlError::Invalid(
                "a head set needs at least one head".into(),
            ));
        }
        let k = seeds.len();
        let std = 1.0 / ((n_embd + 1) as f32).sqrt();
        let columns: Vec<Vec<f32>> = seeds
            .iter()
            .map(|&s| SeededRng::new(s).normal_vec(n_embd, std))
            .collect();
        let mut w = vec![0.0f32; n_embd * k];
        for (j, col) in columns.iter().enumerate() {
            for (i, &x) in col.iter().enumerate() {
                w[i * k + j] = x;
            }
        }
        Ok(Self::from_tensors(
            Tensor::from_data(TensorData::new(w, [n_embd, k]), device),
            Tensor::zeros([k], device),
        ))
    }

    /// Heads from a weight `[n_embd, K]` and bias `[K]`.
    pub fn from_tensors(weight: Tensor<2>, bias: Tensor<1>) -> Self {
        LinearHeads {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
        }
    }

    /// Number of heads K.
    pub fn num_heads(&self) -> usize {
        self.weight.val().dims()[1]
    }

    /// Input width.
    pub fn n_embd(&self) -> usize {
        self.weight.val().dims()[0]
    }

    /// `[b, n_embd]` features → `[b, K]` scores.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        features.matmul(self.weight.val()) + self.bias.val().unsqueeze::<2>()
    }

    /// `[b, t, n_embd]` hidden states → `[b, t, K]` scores at every position.
    pub fn forward_seq(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, e] = hidden.dims();
        self.forward(hidden.reshape([b * t, e]))
            .reshape([b, t, self.num_heads()])
    }

    /// The tensors `weight` and `bias` for a safetensors file.
    pub fn to_host(&self, path: &std::path::Path) -> HostTensors {
        let mut set = HostTensors::new(path);
        set.insert("weight", &self.weight.val());
        set.insert("bias", &self.bias.val());
        set
    }

    /// Heads from `weight` `[n_embd, K]` and `bias` `[K]` in `set`.
    pub fn from_host(
        set: &mut HostTensors,
        n_embd: usize,
        k: usize,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self::from_tensors(
            set.take_tensor("weight", [n_embd, k], device)?,
            set.take_tensor("bias", [k], device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_compute_w_dot_h_plus_b_per_column() {
        let device = Device::flex();
        let heads = LinearHeads::from_tensors(
            Tensor::from_data(
                TensorData::new(vec![1.0f32, 0.0, 2.0, -1.0], [2, 2]),
                &device,
            ),
            Tensor::from_data(TensorData::new(vec![0.5f32, -0.5], [2]), &device),
        );
        let h = Tensor::from_data(TensorData::new(vec![3.0f32, 4.0], [1, 2]), &device);
        let out = heads.forward(h).into_data().try_to_vec::<f32>().unwrap();
        // head 0: 1*3 + 2*4 + 0.5 = 11.5; head 1: 0*3 - 1*4 - 0.5 = -4.5
        assert_eq!(out, vec![11.5, -4.5]);
    }

    #[test]
    fn heads_differ_by_seed_and_repeat_for_the_same_seed() {
        let device = Device::flex();
        let a = LinearHeads::init(8, &[1, 2], &device).unwrap();
        let b = LinearHeads::init(8, &[1, 2], &device).unwrap();
        let wa = a.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let wb = b.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(wa, wb);
        let col0: Vec<f32> = wa.iter().step_by(2).copied().collect();
        let col1: Vec<f32> = wa.iter().skip(1).step_by(2).copied().collect();
        assert_ne!(col0, col1);
        assert!(LinearHeads::init(8, &[], &device).is_err());
    }
}
