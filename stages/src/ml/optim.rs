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

use super::error::{MlError, Result};
use super::grads::ParamGrads;
use super::weights::HostTensors;

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
    #[serde(default = "yes")]
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
fn yes() -> bool {
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
    state: BTreeMap<String, Moments>,
}

struct Apply<'a> {
    stack: Vec<String>,
    grads: &'a mut BTreeMap<String, Tensor<1>>,
    optim: &'a mut Adam,
    lr: f64,
}

impl ModuleMapper for Apply<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push(super::grads::path_segment(name, container_type));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = super::grads::join_path(&self.stack);
        let Some(grad) = self.grads.remove(&path) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let autodiff = tensor.is_autodiff();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        let n = tensor.shape().num_elements();
        let flat = tensor.inner().reshape([n]);
        let updated = self.optim.update(&path, flat, grad, self.lr).reshape(shape);
        let mut updated = if autodiff {
            Tensor::from_inner(updated)
        } else {
            updated
        };
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

impl Adam {
    /// A fresh optimizer.
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            state: BTreeMap::new(),
        }
    }

    fn update(&mut self, path: &str, p: Tensor<1>, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let state = self.state.remove(path);
        let step = state.as_ref().map_or(1, |s| s.step + 1);
        #[cfg(feature = "tch")]
        let (p, g, state) = match libtorch::update(&self.config, p, g, state, step, lr) {
            Ok((p, m, v)) => {
                self.state.insert(path.to_string(), Moments { step, m, v });
                return p;
            }
            Err(back) => back,
        };
        let (p, m, v) = update_tensors(&self.config, p, g, state, step, lr);
        self.state.insert(path.to_string(), Moments { step, m, v });
        p
    }

    /// Apply one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`; returns the updated module.
    pub fn step<M: Module>(&mut self, module: M, mut grads: ParamGrads, lr: f64) -> M {
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
        for (name, s) in &self.state {
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

/// The update on libtorch tensors, in place: seven elementwise kernels per parameter and no
/// allocation after the first step (the tensor-op version above allocates and makes a dozen
/// passes; over GPT-2 small's 124M parameters the in-place update takes 45 % less time on
/// the CPU, see docs/benchmarks.md). The arithmetic is PyTorch's `Adam` single-tensor
/// path: `m.lerp_(g, 1-β1)`, `v.lerp_(g², 1-β2)`, `p.addcdiv_(m, denom)` with the step size
/// folded into `denom`.
///
/// Lints: burn marks burn-tch deprecated (libtorch is the backend this project names), and
/// the `Err`s hand the caller's own tensors back untouched on the rare path, where boxing
/// them would only add an allocation.
#[cfg(feature = "tch")]
#[allow(deprecated, clippy::result_large_err)]
mod libtorch {
    use burn::tensor::Tensor;
    use burn_tch::{LibTorch, TchTensor};

    use super::{bias_corrections, AdamConfig, Moments};

    /// What [`update`] hands back when it cannot work in place (another backend, or a
    /// tensor whose storage is shared): the inputs, untouched.
    type Back = (Tensor<1>, Tensor<1>, Option<Moments>);

    fn unique(t: Tensor<1>) -> Result<TchTensor, Tensor<1>> {
        if !matches!(
            t.device().as_dispatch(),
            burn_dispatch::DispatchDevice::LibTorch(_)
        ) {
            return Err(t);
        }
        match t.try_into_primitive::<LibTorch>() {
            Ok(prim) if prim.can_mut() => Ok(prim),
            // Shared storage (another tensor views it): not ours to write over.
            Ok(prim) => Err(wrap(prim)),
            Err(e) => unreachable!("a libtorch device's tensor is a libtorch tensor: {e:?}"),
        }
    }

    fn wrap(t: TchTensor) -> Tensor<1> {
        Tensor::from_primitive::<LibTorch>(t)
    }

    pub(super) fn update(
        c: &AdamConfig,
        p: Tensor<1>,
        g: Tensor<1>,
        state: Option<Moments>,
        step: u64,
        lr: f64,
    ) -> Result<(Tensor<1>, Tensor<1>, Tensor<1>), Back> {
        if lr == 0.0 || (c.weight_decay != 0.0 && !c.decoupled_weight_decay) {
            return Err((p, g, state));
        }
        let p = match unique(p) {
            Ok(p) => p,
            Err(p) => return Err((p, g, state)),
        };
        let g = match unique(g) {
            Ok(g) => g,
            Err(g) => return Err((wrap(p), g, state)),
        };
        let (m, v) = match state {
            Some(s) => match (unique(s.m), unique(s.v)) {
                (Ok(m), Ok(v)) => (m, v),
                (m, v) => {
                    let back = |r: Result<TchTensor, Tensor<1>>| r.map_or_else(|t| t, wrap);
                    let s = Moments {
                        step: s.step,
                        m: back(m),
                        v: back(v),
                    };
                    return Err((wrap(p), wrap(g), Some(s)));
                }
            },
            None => {
                let zeros = || TchTensor::new(p.tensor.zeros_like());
                (zeros(), zeros())
            }
        };
        // The results keep their storage handles: burn-tch tracks who shares a buffer through
        // them, and its own in-place checks (`can_mut`) read that.
        let (
            TchTensor {
                tensor: mut pt,
                storage: ps,
            },
            mut gt,
        ) = (p, g.tensor);
        let (
            TchTensor {
                tensor: mut mt,
                storage: ms,
            },
            TchTensor {
                tensor: mut vt,
                storage: vs,
            },
        ) = (m, v);
        let (bc1, bc2) = bias_corrections(c, step);
        // denom · k with k = -bc1/lr, so that p += m / (denom · k) is p -= lr/bc1 · m / denom.
        let k = -bc1 / lr;
        // In-place ops return a second handle to their tensor; it is dropped at once.
        let mut run = || -> Result<(), tch::TchError> {
            if c.weight_decay != 0.0 {
                let _ = pt.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
            }
            let _ = mt.f_lerp_(&gt, 1.0 - c.beta1)?;
            let _ = gt.f_square_()?;
            let _ = vt.f_lerp_(&gt, 1.0 - c.beta2)?;
            let _ = vt.f_sqrt_out(&gt)?;
            let _ = gt.f_mul_scalar_(k / bc2.sqrt())?;
            let _ = gt.f_add_scalar_(c.eps * k)?;
            let _ = pt.f_addcdiv_(&mt, &gt)?;
            Ok(())
        };
        if let Err(e) = run() {
            // Same shapes, dtypes and device by construction: only a broken libtorch fails.
            panic!("libtorch's in-place Adam update failed: {e}");
        }
        Ok((
            wrap(TchTensor::from_existing(pt, ps)),
            wrap(TchTensor::from_existing(mt, ms)),
            wrap(TchTensor::from_existing(vt, vs)),
        ))
    }
}

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
}
