//! Adam and AdamW with their state kept by parameter path, so it can be checkpointed to a
//! safetensors file and restored onto a model reloaded from disk.
//!
//! Update for a parameter `p` with gradient `g` at its step `t` (PyTorch's `Adam`/`AdamW`):
//! `m = β1 m + (1-β1) g`, `v = β2 v + (1-β2) g²`,
//! `p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + ε)`; weight decay is decoupled
//! (`p *= 1 - lr·wd` first) for AdamW, and added to the gradient (`g += wd·p`) for Adam.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};

use crate::ml::error::{MlError, Result};
use crate::ml::models::weights::HostTensors;
use crate::ml::training::grads::ParamGrads;

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    /// Exponential decay of the first moment.
    #[serde(default = "b1")]
    pub beta1: f64,
    /// Exponential decay of the second moment.
    #[serde(default = "b2")]
    pub beta2: f64,
    /// Added to the denominator.
    #[serde(default = "eps")]
    pub eps: f64,
    /// Weight-decay coefficient (0 = none).
    #[serde(default)]
    pub weight_decay: f64,
    /// `true`: AdamW (decoupled decay); `false`: Adam (L2 term in the gradient).
    #[serde(default = "default_decoupled_weight_decay")]
    pub decoupled_weight_decay: bool,
}

fn b1() -> f64 {
    0.9
}
fn b2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn default_decoupled_weight_decay() -> bool {
    true
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: true,
        }
    }
}

impl AdamConfig {
    /// AdamW with the given weight decay.
    pub fn adamw(weight_decay: f64) -> Self {
        AdamConfig {
            weight_decay,
            ..Default::default()
        }
    }
}

/// Per-parameter moments.
#[derive(Debug, Clone)]
struct Moments {
    step: u64,
    m: Tensor<1>,
    v: Tensor<1>,
}

/// Adam/AdamW with path-keyed state.
#[derive(Debug, Clone)]
pub struct Adam {
    /// The hyper-parameters.
    pub config: AdamConfig,
    /// Moments kept per parameter.
    state: BTreeMap<String, Moments>,
    /// On libtorch: the moments of all parameters in one buffer each (no path in both).
    #[cfg(feature = "tch")]
    flat: Option<libtorch::Flat>,
}

struct Apply<'a> {
    stack: Vec<String>,
    grads: &'a mut BTreeMap<String, Tensor<1>>,
    optim: &'a mut Adam,
    lr: f64,
}

impl ModuleMapper for Apply<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push(crate::ml::training::grads::path_segment(
            name,
            container_type,
        ));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = crate::ml::training::grads::join_path(&self.stack);
        let Some(grad) = self.grads.remove(&path) else {
            return param;
        };
        let (optim, lr) = (&mut *self.optim, self.lr);
        map_plain(param, |tensor| {
            let shape = tensor.dims();
            let n = tensor.shape().num_elements();
            optim
                .update(&path, tensor.reshape([n]), grad, lr)
                .reshape(shape)
        })
    }
}

/// A parameter with its value replaced by `f` of its plain (non-autodiff) tensor, keeping its
/// id, its autodiff wrapping and whether it requires a gradient.
fn map_plain<const D: usize>(
    param: Param<Tensor<D>>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Param<Tensor<D>> {
    let (id, tensor, mapper) = param.consume();
    let autodiff = tensor.is_autodiff();
    let require_grad = tensor.is_require_grad();
    let out = f(if autodiff { tensor.inner() } else { tensor });
    let mut out = if autodiff {
        Tensor::from_inner(out)
    } else {
        out
    };
    if require_grad {
        out = out.require_grad();
    }
    Param::from_mapped_value(id, out, mapper)
}

impl Adam {
    /// A fresh optimizer.
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            state: BTreeMap::new(),
            #[cfg(feature = "tch")]
            flat: None,
        }
    }

    /// Every parameter's moments kept per parameter again (after a flat step).
    fn unflatten(&mut self) {
        let flat = self.flat_moments();
        #[cfg(feature = "tch")]
        {
            self.flat = None;
        }
        self.state.extend(flat);
    }

    /// The moments the flat buffers hold, per parameter (copies).
    fn flat_moments(&self) -> Vec<(String, Moments)> {
        #[cfg(feature = "tch")]
        if let Some(flat) = &self.flat {
            return flat.moments();
        }
        Vec::new()
    }

    fn update(&mut self, path: &str, p: Tensor<1>, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let state = self.state.remove(path);
        let step = state.as_ref().map_or(1, |s| s.step + 1);
        #[cfg(feature = "tch")]
        let (p, g, state) = match libtorch::update(&self.config, p, g, state, step, lr) {
            libtorch::InPlace::Done((p, m, v)) => {
                self.state.insert(path.to_string(), Moments { step, m, v });
                return p;
            }
            libtorch::InPlace::Declined(back) => back,
        };
        let (p, m, v) = update_tensors(&self.config, p, g, state, step, lr);
        self.state.insert(path.to_string(), Moments { step, m, v });
        p
    }

    /// Apply one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`; returns the updated module. On libtorch all parameters are
    /// updated together in one flat buffer (see `optim/libtorch.rs`).
    pub fn step<M: Module>(&mut self, module: M, grads: ParamGrads, lr: f64) -> M {
        self.step_clipped(module, grads, lr, None)
    }

    /// [`Adam::step`] with the gradients first scaled to a global L2 norm of at most
    /// `max_norm` when one is given (PyTorch's `clip_grad_norm_`,
    /// [`ParamGrads::clip_global_norm`]). On libtorch's flat path the norm is one reduction
    /// over all gradients.
    pub fn step_clipped<M: Module>(
        &mut self,
        module: M,
        grads: ParamGrads,
        lr: f64,
        max_norm: Option<f64>,
    ) -> M {
        #[cfg(feature = "tch")]
        let (module, grads) = match libtorch::flat_step(self, module, grads, lr, max_norm) {
            libtorch::InPlace::Done(module) => return module,
            libtorch::InPlace::Declined(back) => back,
        };
        let mut grads = grads;
        if let Some(max_norm) = max_norm {
            grads.clip_global_norm(max_norm);
        }
        self.step_each(module, grads, lr)
    }

    /// [`Adam::step`] one parameter at a time.
    fn step_each<M: Module>(&mut self, module: M, mut grads: ParamGrads, lr: f64) -> M {
        self.unflatten();
        module.map(&mut Apply {
            stack: Vec::new(),
            grads: &mut grads.grads,
            optim: self,
            lr,
        })
    }

    /// The moments as tensors `m.<path>`, `v.<path>` and the step counts by path.
    pub fn state_tensors(&self, path: &std::path::Path) -> (HostTensors, BTreeMap<String, u64>) {
        let mut set = HostTensors::new(path);
        let mut steps = BTreeMap::new();
        let flat = self.flat_moments();
        for (name, s) in self.state.iter().chain(flat.iter().map(|(n, s)| (n, s))) {
            set.insert(format!("m.{name}"), &s.m);
            set.insert(format!("v.{name}"), &s.v);
            steps.insert(name.clone(), s.step);
        }
        (set, steps)
    }

    /// Restore state written by [`Adam::state_tensors`].
    pub fn load_state(
        &mut self,
        mut set: HostTensors,
        steps: &BTreeMap<String, u64>,
        device: &Device,
    ) -> Result<()> {
        self.state.clear();
        #[cfg(feature = "tch")]
        {
            self.flat = None;
        }
        for (name, &step) in steps {
            let m = set.tensors.remove(&format!("m.{name}"));
            let v = set.tensors.remove(&format!("v.{name}"));
            let (Some(m), Some(v)) = (m, v) else {
                return Err(MlError::MissingTensor {
                    path: set.path.clone(),
                    name: format!("m.{name} / v.{name}"),
                });
            };
            self.state.insert(
                name.clone(),
                Moments {
                    step,
                    m: m.to_tensor(device),
                    v: v.to_tensor(device),
                },
            );
        }
        Ok(())
    }
}

/// The update with tensor operations (any backend): returns `(p, m, v)`.
fn update_tensors(
    c: &AdamConfig,
    mut p: Tensor<1>,
    mut g: Tensor<1>,
    state: Option<Moments>,
    step: u64,
    lr: f64,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    if c.weight_decay != 0.0 {
        if c.decoupled_weight_decay {
            p = p * (1.0 - lr * c.weight_decay);
        } else {
            g = g + p.clone() * c.weight_decay;
        }
    }
    let (m, v) = match state {
        Some(s) => (
            s.m * c.beta1 + g.clone() * (1.0 - c.beta1),
            s.v * c.beta2 + g.square() * (1.0 - c.beta2),
        ),
        None => (g.clone() * (1.0 - c.beta1), g.square() * (1.0 - c.beta2)),
    };
    let (bc1, bc2) = bias_corrections(c, step);
    let denom = v.clone().sqrt() * (1.0 / bc2.sqrt()) + c.eps;
    let p = p - m.clone() / denom * (lr / bc1);
    (p, m, v)
}

/// `1 - β1^t`, `1 - β2^t`.
fn bias_corrections(c: &AdamConfig, step: u64) -> (f64, f64) {
    let t = step.min(i32::MAX as u64) as i32;
    (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t))
}

#[cfg(feature = "tch")]
mod libtorch;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Two Adam steps on p = [1, -2] with g = [0.5, -1] then [0.1, 0.2], lr 0.1, against the
    /// values torch.optim.AdamW / Adam produce (computed by hand from the update rule).
    #[test]
    fn matches_the_pytorch_update_rule() {
        let device = Device::flex();
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [2]), &device);
        for (wd, decoupled) in [(0.0, true), (0.1, true), (0.1, false)] {
            let mut opt = Adam::new(AdamConfig {
                weight_decay: wd,
                decoupled_weight_decay: decoupled,
                ..Default::default()
            });
            let mut p = t(vec![1.0, -2.0]);
            for g in [vec![0.5f32, -1.0], vec![0.1, 0.2]] {
                p = opt.update("w", p, t(g), 0.1);
            }
            // Reference in f64.
            let (b1, b2, e, lr) = (0.9f64, 0.999f64, 1e-8f64, 0.1f64);
            let mut pr = [1.0f64, -2.0];
            let mut m = [0.0f64; 2];
            let mut v = [0.0f64; 2];
            for (step, g) in [[0.5f64, -1.0], [0.1, 0.2]].iter().enumerate() {
                let t = step as i32 + 1;
                for i in 0..2 {
                    let mut gi = g[i];
                    if decoupled {
                        pr[i] *= 1.0 - lr * wd;
                    } else {
                        gi += wd * pr[i];
                    }
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + e;
                    pr[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
                }
            }
            let got = p.into_data().try_to_vec::<f32>().unwrap();
            for i in 0..2 {
                assert!(
                    (got[i] as f64 - pr[i]).abs() < 1e-6,
                    "wd {wd} decoupled {decoupled}: {got:?} vs {pr:?}"
                );
            }
        }
        // The first step of Adam moves each coordinate by ≈ lr against its gradient's sign.
        let mut opt = Adam::new(AdamConfig::default());
        let p = opt.update("w", t(vec![0.0, 0.0]), t(vec![3.0, -0.01]), 0.1);
        let got = p.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            (got[0] + 0.1).abs() < 1e-5 && (got[1] - 0.1).abs() < 1e-4,
            "{got:?}"
        );
    }

    /// libtorch's in-place update (the path the PPO and training stages take on
    /// `libtorch-cpu`/`cuda`) gives the tensor-op update's parameters and moments, and never
    /// writes over a tensor whose storage another tensor shares.
    #[cfg(feature = "tch")]
    #[test]
    #[allow(deprecated)] // Device::libtorch: burn marks burn-tch deprecated
    fn libtorch_in_place_update_matches_and_spares_shared_storage() {
        let device = Device::libtorch();
        let t = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), &device);
        let host = |x: &Tensor<1>| x.clone().into_data().try_to_vec::<f32>().unwrap();
        let data_ptr = |x: &Tensor<1>| {
            let prim = x
                .clone()
                .try_into_primitive::<burn_tch::LibTorch>()
                .unwrap();
            prim.tensor.data_ptr() as usize
        };
        let grads: [[f32; 3]; 3] = [[0.5, -1.0, 0.0], [0.1, 0.2, -0.3], [1.0, 1.0, 1.0]];
        for wd in [0.0, 0.1] {
            let config = AdamConfig::adamw(wd);
            let mut fast = Adam::new(config.clone());
            let mut p = t(&[1.0, -2.0, 0.5]);
            let mut reference = (t(&[1.0, -2.0, 0.5]), None::<Moments>);
            for (i, g) in grads.iter().enumerate() {
                let step = i as u64 + 1;
                let before = data_ptr(&p);
                p = fast.update("w", p, t(g), 0.1);
                assert_eq!(data_ptr(&p), before, "step {step} was not in place");
                let (rp, rm, rv) =
                    update_tensors(&config, reference.0, t(g), reference.1, step, 0.1);
                let s = &fast.state["w"];
                assert_eq!(s.step, step);
                for (a, b) in [(&p, &rp), (&s.m, &rm), (&s.v, &rv)] {
                    let (a, b) = (host(a), host(b));
                    for k in 0..3 {
                        assert!(
                            (a[k] - b[k]).abs() < 1e-6,
                            "wd {wd} step {step}: {a:?} vs {b:?}"
                        );
                    }
                }
                reference = (rp, Some(Moments { step, m: rm, v: rv }));
            }
        }
        let mut opt = Adam::new(AdamConfig::default());
        let p = t(&[1.0, 2.0, 3.0]);
        let keep = p.clone();
        let moved = opt.update("w", p, t(&[1.0, 1.0, 1.0]), 0.1);
        assert_eq!(
            host(&keep),
            vec![1.0, 2.0, 3.0],
            "a shared parameter was written over"
        );
        assert!(host(&moved)[0] < 1.0);
    }

    /// The flat libtorch path against the per-tensor one: same values bit for bit, one buffer
    /// updated in place from the second step on, nothing written over a clone someone
    /// holds, checkpoints that resume exactly, and a fall back when the parameter set changes.
    #[cfg(feature = "tch")]
    #[allow(deprecated)] // Device::libtorch: burn marks burn-tch deprecated
    mod flat {
        use super::*;
        use burn::module::Param;
        use std::collections::BTreeSet;

        #[derive(Module, Debug)]
        struct Toy {
            a: Param<Tensor<2>>,
            b: Param<Tensor<1>>,
            c: Param<Tensor<3>>,
        }

        fn device() -> Device {
            Device::libtorch().autodiff()
        }

        fn values(n: usize, seed: u32) -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
                    h as f32 / 10_007.0 - 0.5
                })
                .collect()
        }

        fn param<const D: usize>(shape: [usize; D], seed: u32) -> Param<Tensor<D>> {
            let n = shape.iter().product();
            let t = Tensor::from_data(TensorData::new(values(n, seed), shape), &device());
            Param::from_tensor(t)
        }

        fn toy() -> Toy {
            Toy {
                a: param([3, 4], 1),
                b: param([5], 2),
                c: param([2, 3, 2], 3),
            }
        }

        /// Gradients for step `k` of the parameters named in `which`.
        fn grads(k: u32, which: &[&str]) -> ParamGrads {
            let plain = Device::libtorch();
            let sizes = BTreeMap::from([("a", 12), ("b", 5), ("c", 12)]);
            let mut g = ParamGrads::default();
            for name in which {
                let n = sizes[name];
                let v = values(n, 100 * k + n as u32);
                let t = Tensor::from_data(TensorData::new(v, [n]), &plain);
                g.grads.insert(name.to_string(), t);
            }
            g
        }

        fn host(m: &Toy) -> Vec<Vec<f32>> {
            let v = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            vec![
                v(m.a.val().inner().reshape([12])),
                v(m.b.val().inner()),
                v(m.c.val().inner().reshape([12])),
            ]
        }

        fn ptrs(m: &Toy) -> [usize; 3] {
            fn ptr<const D: usize>(p: &Param<Tensor<D>>) -> usize {
                let prim = p.val().inner().try_into_primitive::<burn_tch::LibTorch>();
                prim.unwrap().tensor.data_ptr() as usize
            }
            [ptr(&m.a), ptr(&m.b), ptr(&m.c)]
        }

        fn moments(opt: &Adam) -> (BTreeMap<String, Vec<f32>>, BTreeMap<String, u64>) {
            let (set, steps) = opt.state_tensors(std::path::Path::new("mem"));
            let values = set
                .tensors
                .into_iter()
                .map(|(k, t)| (k, t.values))
                .collect();
            (values, steps)
        }

        const ALL: &[&str] = &["a", "b", "c"];

        #[test]
        fn matches_the_per_tensor_update_bit_for_bit_in_one_buffer_in_place() {
            let config = AdamConfig::adamw(0.1);
            let (mut fast, mut each) = (Adam::new(config.clone()), Adam::new(config));
            let (mut x, mut y) = (toy(), toy());
            let mut seen = BTreeSet::new();
            for k in 1..=4 {
                let before = ptrs(&x);
                x = fast.step(x, grads(k, ALL), 0.05);
                y = each.step_each(y, grads(k, ALL), 0.05);
                assert_eq!(host(&x), host(&y), "step {k}");
                assert_eq!(moments(&fast), moments(&each), "step {k}");
                assert!(fast.state.is_empty() && fast.flat.is_some(), "step {k}");
                let after = ptrs(&x);
                // One buffer, in path order.
                assert_eq!(after[1], after[0] + 12 * 4);
                assert_eq!(after[2], after[1] + 5 * 4);
                if k > 1 {
                    assert_eq!(after, before, "step {k} was not in place");
                }
                seen.insert(after[0]);
            }
            assert_eq!(seen.len(), 1, "a new buffer after the first step");
        }

        #[test]
        fn never_writes_over_a_clone_and_resumes_from_a_checkpoint() {
            let mut fast = Adam::new(AdamConfig::default());
            let mut each = Adam::new(AdamConfig::default());
            let (mut x, mut y) = (toy(), toy());
            for k in 1..=2 {
                x = fast.step(x, grads(k, ALL), 0.1);
                y = each.step_each(y, grads(k, ALL), 0.1);
            }
            // Someone keeps the module: the step must leave their copy alone.
            let kept = x.clone();
            let kept_values = host(&kept);
            let before = ptrs(&x);
            x = fast.step(x, grads(3, ALL), 0.1);
            y = each.step_each(y, grads(3, ALL), 0.1);
            assert_eq!(host(&kept), kept_values, "a kept clone was written over");
            assert_ne!(ptrs(&x), before, "a shared buffer was updated in place");
            assert_eq!(host(&x), host(&y));
            drop(kept);

            // Through a checkpoint into a fresh optimizer: continues exactly.
            let (set, steps) = fast.state_tensors(std::path::Path::new("mem"));
            let mut resumed = Adam::new(AdamConfig::default());
            resumed
                .load_state(set, &steps, &Device::libtorch())
                .unwrap();
            assert_eq!(steps["a"], 3);
            let z = resumed.step(x.clone(), grads(4, ALL), 0.1);
            x = fast.step(x, grads(4, ALL), 0.1);
            y = each.step_each(y, grads(4, ALL), 0.1);
            assert_eq!(host(&z), host(&x));
            assert_eq!(host(&x), host(&y));
            assert_eq!(moments(&resumed), moments(&each));
        }

        /// Clipping on the flat path (one norm over the buffer) gives the per-tensor clip's
        /// update to float rounding, and a bound above the norm leaves the step bit for bit
        /// what it is without one.
        #[test]
        fn clipping_on_the_flat_path_matches_the_per_tensor_clip() {
            let config = AdamConfig::adamw(0.1);
            // The test gradients' norm is about 2: 0.5 clips, 100 does not.
            let norm = grads(1, ALL).global_norm();
            assert!(norm > 1.0 && norm < 3.0, "{norm}");
            for max_norm in [0.5, 100.0] {
                let (mut fast, mut each) = (Adam::new(config.clone()), Adam::new(config.clone()));
                let mut unclipped = Adam::new(config.clone());
                let (mut x, mut y, mut z) = (toy(), toy(), toy());
                for k in 1..=3 {
                    x = fast.step_clipped(x, grads(k, ALL), 0.05, Some(max_norm));
                    let mut g = grads(k, ALL);
                    g.clip_global_norm(max_norm);
                    y = each.step_each(y, g, 0.05);
                    z = unclipped.step(z, grads(k, ALL), 0.05);
                    assert!(fast.flat.is_some());
                    for (p, q) in host(&x).iter().zip(host(&y)) {
                        for (u, w) in p.iter().zip(&q) {
                            assert!((u - w).abs() < 1e-6, "max {max_norm} step {k}: {u} vs {w}");
                        }
                    }
                    if max_norm > norm {
                        assert_eq!(host(&x), host(&z), "step {k}: a bound above the norm");
                    }
                    // The first moments carry the gradients' scale (Adam's step nearly does
                    // not): equal to the per-tensor clip's, and after the first step the
                    // unclipped ones times max_norm / norm when clipping.
                    let (mf, me, mu) = (moments(&fast).0, moments(&each).0, moments(&unclipped).0);
                    for (name, a) in &mf {
                        for (u, w) in a.iter().zip(&me[name]) {
                            assert!(
                                (u - w).abs() <= 1e-6 * w.abs().max(1e-3),
                                "{name}: {u} vs {w}"
                            );
                        }
                        if k == 1 && name.starts_with("m.") {
                            let scale = (max_norm / (norm + 1e-6)).min(1.0) as f32;
                            for (u, w) in a.iter().zip(&mu[name]) {
                                assert!(
                                    (u - w * scale).abs() <= 1e-6,
                                    "{name}: {u} vs {w} x {scale}"
                                );
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn a_changed_parameter_set_falls_back_per_tensor() {
            let mut fast = Adam::new(AdamConfig::default());
            let mut each = Adam::new(AdamConfig::default());
            let (mut x, mut y) = (toy(), toy());
            // b has no gradient at step 2 (a and c go on in a buffer of their own), so at
            // step 3 a and c are at their third step and b at its second: per tensor.
            for (k, which) in [(1, ALL), (2, &["a", "c"][..]), (3, ALL), (4, ALL)] {
                x = fast.step(x, grads(k, which), 0.1);
                y = each.step_each(y, grads(k, which), 0.1);
                for (p, q) in host(&x).iter().zip(host(&y)) {
                    for (u, w) in p.iter().zip(&q) {
                        assert!((u - w).abs() < 1e-6, "step {k}: {p:?} vs {q:?}");
                    }
                }
                assert_eq!(fast.flat.is_some(), k <= 2, "step {k}");
            }
            let (_, steps) = moments(&fast);
            assert_eq!(
                steps,
                BTreeMap::from([("a".into(), 4), ("b".into(), 3), ("c".into(), 4)])
            );
        }
    }
}
