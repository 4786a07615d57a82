//! Gradients by parameter path (`h.0.attn.c_attn.weight`), flattened to rank 1 on the plain
//! (non-autodiff) device: what gradient accumulation, global-norm clipping and the optimizer
//! work on. Keyed by path rather than burn's `ParamId`, so that a model reloaded from a
//! checkpoint (with new ids) finds its optimizer state again.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// The path segment a module level contributes: its field name, or nothing for an enum's
/// variant (so that a [`crate::ml::models::backbone::Backbone::Gpt2`] keeps GPT-2's paths,
/// `backbone.h.0...` rather than `backbone.Gpt2.h.0...`).
pub(crate) fn path_segment(name: &str, container_type: &str) -> String {
    if container_type.starts_with("Enum:") {
        String::new()
    } else {
        name.to_string()
    }
}

/// `stack` joined with dots, skipping empty segments.
pub(crate) fn join_path(stack: &[String]) -> String {
    stack
        .iter()
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(".")
}

/// Gradients of the trainable parameters, by path, flattened.
#[derive(Debug, Clone, Default)]
pub struct ParamGrads {
    /// path → flattened gradient on the plain device.
    pub grads: BTreeMap<String, Tensor<1>>,
}

struct GradTaker<'a> {
    stack: Vec<String>,
    params: &'a mut GradientsParams,
    out: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for GradTaker<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push(path_segment(name, container_type));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.params.remove::<D>(param.id) {
            let n = g.shape().num_elements();
            self.out.insert(join_path(&self.stack), g.reshape([n]));
        }
    }
}

impl ParamGrads {
    /// Back-propagate `loss` (a tracked scalar) and collect the gradients of `module`'s
    /// parameters (frozen ones have none).
    pub fn from_loss<M: Module>(loss: Tensor<1>, module: &M) -> Self {
        let grads = loss.backward();
        let mut params = GradientsParams::from_grads(grads, module);
        let mut out = BTreeMap::new();
        module.visit(&mut GradTaker {
            stack: Vec::new(),
            params: &mut params,
            out: &mut out,
        });
        ParamGrads { grads: out }
    }

    /// Add `other` into `self` (gradient accumulation).
    pub fn accumulate(&mut self, other: ParamGrads) {
        for (path, g) in other.grads {
            match self.grads.remove(&path) {
                Some(acc) => self.grads.insert(path, acc + g),
                None => self.grads.insert(path, g),
            };
        }
    }

    /// Multiply every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) {
        let grads = std::mem::take(&mut self.grads);
        self.grads = grads.into_iter().map(|(p, g)| (p, g * factor)).collect();
    }

    /// The global L2 norm `sqrt(Σ_params Σ g²)` (as PyTorch's `clip_grad_norm_`).
    pub fn global_norm(&self) -> f64 {
        // One read back for all tensors (a read per tensor is a device sync each on CUDA).
        let sums: Vec<Tensor<1>> = self
            .grads
            .values()
            .map(|g| g.clone().square().sum())
            .collect();
        if sums.is_empty() {
            return 0.0;
        }
        let sums = crate::ml::models::weights::to_f32_vec(Tensor::cat(sums, 0));
        sums.iter().map(|&s| s as f64).sum::<f64>().sqrt()
    }

    /// Scale all gradients by `max_norm / (norm + 1e-6)` when the global norm exceeds
    /// `max_norm` (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            self.scale(coef);
        }
        norm
    }

    /// Is there no gradient at all?
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: Vec<f32>) -> Tensor<1> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &Device::flex())
    }

    #[test]
    fn global_norm_clipping_scales_all_tensors_together() {
        let mut g = ParamGrads::default();
        g.grads.insert("a".into(), t(vec![3.0, 0.0]));
        g.grads.insert("b".into(), t(vec![0.0, 4.0]));
        assert!((g.global_norm() - 5.0).abs() < 1e-6);
        let before = g.clip_global_norm(1.0);
        assert!((before - 5.0).abs() < 1e-6);
        let a = g.grads["a"]
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = g.grads["b"]
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // One common factor 1/5 (not per-tensor: a per-tensor clip would give [1, 0], [0, 1]).
        assert!(
            (a[0] - 0.6).abs() < 1e-5 && (b[1] - 0.8).abs() < 1e-5,
            "{a:?} {b:?}"
        );
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
        // Below the threshold nothing changes.
        let before = g.clip_global_norm(10.0);
        assert!((before - 1.0).abs() < 1e-5);
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn accumulation_adds_by_path() {
        let mut g = ParamGrads::default();
        g.grads.insert("a".into(), t(vec![1.0, 2.0]));
        let mut h = ParamGrads::default();
        h.grads.insert("a".into(), t(vec![0.5, 0.5]));
        h.grads.insert("b".into(), t(vec![7.0]));
        g.accumulate(h);
        g.scale(2.0);
        let a = g.grads["a"]
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a, vec![3.0, 5.0]);
        assert_eq!(
            g.grads["b"]
                .clone()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            vec![14.0]
        );
    }
}
