//! Adam on libtorch tensors, in place, two ways with the same arithmetic:
//!
//! - **Flat** ([`flat_step`], the usual path): every trained parameter's moments live in one
//!   buffer each, and after the first step the module's parameters are views of one buffer
//!   too, in the gradients' path order. A step is then one `cat` of the gradients and seven
//!   elementwise kernels over all parameters, whatever their number — GPT-2 small has ~150
//!   tensors, so per tensor that would be ~1,050 kernel launches a step, which on a GPU cost
//!   more in launch overhead than the arithmetic. This is what `torch.optim.Adam`'s
//!   multi-tensor (`foreach`) path buys PyTorch on CUDA; tch wraps no `_foreach_*` kernel,
//!   so the tensors are made contiguous instead.
//! - **Per tensor** ([`update`]): each parameter updated in its own storage, for the steps
//!   the flat path declines (a parameter set that changed between steps, moments restored
//!   with unequal step counts, a shared parameter storage).
//!
//! Both are PyTorch's single-tensor arithmetic: `m.lerp_(g, 1-β1)`, `v.lerp_(g², 1-β2)`,
//! `p.addcdiv_(m, denom)` with the step size folded into `denom`; elementwise, so the flat
//! update gives the per-tensor one's values bit for bit.
//!
//! Nothing is written over that anyone else can see: a parameter is updated in place only
//! when burn-tch's storage counts say the module holds its tensor alone (a clone of the module
//! kept across the step makes the step write fresh buffers instead), which is also how
//! burn-tch decides its own in-place arithmetic.
//!
//! Lint: burn marks burn-tch deprecated (libtorch is the backend this project names).
#![allow(deprecated)]

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;
use burn_tch::{LibTorch, Storage, TchTensor};

use super::{bias_corrections, map_plain, Adam, AdamConfig, Moments};
use crate::ml::training::grads::{join_path, path_segment, ParamGrads};

/// What [`update`] hands back when it cannot work in place (another backend, or a tensor
/// whose storage is shared): the inputs, untouched.
type Back = (Tensor<1>, Tensor<1>, Option<Moments>);

/// The outcome of an in-place attempt: done, or declined with the caller's own values
/// handed back untouched (not an error: the caller then takes the general path).
pub(super) enum InPlace<T, B> {
    Done(T),
    Declined(B),
}
use InPlace::{Declined, Done};

fn on_libtorch<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(
        t.device().as_dispatch(),
        burn_dispatch::DispatchDevice::LibTorch(_)
    )
}

fn primitive<const D: usize>(t: Tensor<D>) -> TchTensor {
    match t.try_into_primitive::<LibTorch>() {
        Ok(prim) => prim,
        Err(e) => unreachable!("a libtorch device's tensor is a libtorch tensor: {e:?}"),
    }
}

/// The tensor's libtorch primitive when this code may write over it, else the tensor back.
fn unique(t: Tensor<1>) -> InPlace<TchTensor, Tensor<1>> {
    if !on_libtorch(&t) {
        return Declined(t);
    }
    let prim = primitive(t);
    if prim.can_mut() {
        Done(prim)
    } else {
        // Shared storage (another tensor views it): not ours to write over.
        Declined(wrap(prim))
    }
}

fn wrap<const D: usize>(t: TchTensor) -> Tensor<D> {
    Tensor::from_primitive::<LibTorch>(t)
}

/// One Adam step in place: `p`, `m`, `v` updated, `g` used as scratch.
fn kernels(
    c: &AdamConfig,
    [p, g, m, v]: [&mut tch::Tensor; 4],
    step: u64,
    lr: f64,
) -> Result<(), tch::TchError> {
    let (bc1, bc2) = bias_corrections(c, step);
    // denom · k with k = -bc1/lr, so that p += m / (denom · k) is p -= lr/bc1 · m / denom.
    let k = -bc1 / lr;
    // In-place ops return a second handle to their tensor; it is dropped at once.
    if c.weight_decay != 0.0 {
        let _ = p.f_mul_scalar_(1.0 - lr * c.weight_decay)?;
    }
    let _ = m.f_lerp_(g, 1.0 - c.beta1)?;
    let _ = g.f_square_()?;
    let _ = v.f_lerp_(g, 1.0 - c.beta2)?;
    let _ = v.f_sqrt_out(g)?;
    let _ = g.f_mul_scalar_(k / bc2.sqrt())?;
    let _ = g.f_add_scalar_(c.eps * k)?;
    let _ = p.f_addcdiv_(m, g)?;
    Ok(())
}

/// Can this configuration and learning rate be applied in place? (`lr = 0` would divide by
/// zero in the folded step size; coupled weight decay needs `p` inside the gradient.)
fn in_place_ok(c: &AdamConfig, lr: f64) -> bool {
    lr != 0.0 && (c.weight_decay == 0.0 || c.decoupled_weight_decay)
}

fn run(what: &str, r: Result<(), tch::TchError>) {
    if let Err(e) = r {
        // Same shapes, dtypes and device by construction: only a broken libtorch fails.
        panic!("libtorch's in-place Adam update ({what}) failed: {e}");
    }
}

/// The per-tensor update of one parameter: `(p, m, v)` after the step.
pub(super) fn update(
    c: &AdamConfig,
    p: Tensor<1>,
    g: Tensor<1>,
    state: Option<Moments>,
    step: u64,
    lr: f64,
) -> InPlace<(Tensor<1>, Tensor<1>, Tensor<1>), Back> {
    if !in_place_ok(c, lr) {
        return Declined((p, g, state));
    }
    let p = match unique(p) {
        Done(p) => p,
        Declined(p) => return Declined((p, g, state)),
    };
    let g = match unique(g) {
        Done(g) => g,
        Declined(g) => return Declined((wrap(p), g, state)),
    };
    let (m, v) = match state {
        Some(s) => match (unique(s.m), unique(s.v)) {
            (Done(m), Done(v)) => (m, v),
            (m, v) => {
                let back = |r: InPlace<TchTensor, Tensor<1>>| match r {
                    Done(t) => wrap(t),
                    Declined(t) => t,
                };
                let s = Moments {
                    step: s.step,
                    m: back(m),
                    v: back(v),
                };
                return Declined((wrap(p), wrap(g), Some(s)));
            }
        },
        None => {
            let zeros = || TchTensor::new(p.tensor.zeros_like());
            (zeros(), zeros())
        }
    };
    // The results keep their storage handles: burn-tch tracks who shares a buffer through
    // them, and its own in-place checks (`can_mut`) read that.
    let (mut p, mut g, mut m, mut v) = (p, g, m, v);
    run(
        "per tensor",
        kernels(
            c,
            [&mut p.tensor, &mut g.tensor, &mut m.tensor, &mut v.tensor],
            step,
            lr,
        ),
    );
    Done((wrap(p), wrap(m), wrap(v)))
}

/// The flat path's state.
pub(super) struct Flat {
    /// (path, number of elements) of every trained parameter, in path order: where each one
    /// lies in the buffers.
    layout: Vec<(String, usize)>,
    /// Steps taken (all parameters together).
    step: u64,
    m: tch::Tensor,
    v: tch::Tensor,
    /// The gradients' buffer, reused from step to step: a fresh one each step would cost
    /// more than the copy on a CPU (the allocator hands large blocks back to the system, and
    /// every page of the next one faults in again).
    scratch: tch::Tensor,
    /// The buffer the module's parameters are views of since the last step.
    params: Option<TchTensor>,
}

impl Clone for Flat {
    /// A copy of the moments; the copy does not claim the module's parameter buffer (its
    /// first step makes a buffer of its own), so the original can still update in place.
    fn clone(&self) -> Self {
        Flat {
            layout: self.layout.clone(),
            step: self.step,
            m: self.m.copy(),
            v: self.v.copy(),
            scratch: self.scratch.empty_like(),
            params: None,
        }
    }
}

impl std::fmt::Debug for Flat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flat")
            .field("parameters", &self.layout.len())
            .field("elements", &self.m.numel())
            .field("step", &self.step)
            .finish()
    }
}

fn offsets(layout: &[(String, usize)]) -> impl Iterator<Item = (&str, i64, i64)> {
    layout.iter().scan(0i64, |off, (path, n)| {
        let at = *off;
        *off += *n as i64;
        Some((path.as_str(), at, *n as i64))
    })
}

impl Flat {
    /// Each parameter's moments, as tensors of their own.
    pub(super) fn moments(&self) -> Vec<(String, Moments)> {
        let own =
            |t: &tch::Tensor, at: i64, n: i64| wrap(TchTensor::new(t.narrow(0, at, n).copy()));
        offsets(&self.layout)
            .map(|(path, at, n)| {
                let m = Moments {
                    step: self.step,
                    m: own(&self.m, at, n),
                    v: own(&self.v, at, n),
                };
                (path.to_string(), m)
            })
            .collect()
    }
}

/// Hands each parameter named in `index` (path → position in the layout) to `f` as its
/// libtorch tensor and puts back the tensor `f` returns (of the same shape).
struct EachParam<'a, F> {
    stack: Vec<String>,
    index: &'a BTreeMap<String, usize>,
    f: F,
}

impl<F: FnMut(usize, TchTensor) -> TchTensor> ModuleMapper for EachParam<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push(path_segment(name, container_type));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(&i) = self.index.get(&join_path(&self.stack)) else {
            return param;
        };
        let f = &mut self.f;
        map_plain(param, |tensor| {
            if on_libtorch(&tensor) {
                wrap(f(i, primitive(tensor)))
            } else {
                tensor
            }
        })
    }
}

/// One step over all parameters in `grads` at once, the gradients first clipped to a global
/// L2 norm of `max_norm` if given; `Declined` hands module and gradients back untouched when the
/// flat path does not apply (see the module's doc), and the caller updates per tensor.
pub(super) fn flat_step<M: Module>(
    opt: &mut Adam,
    module: M,
    grads: ParamGrads,
    lr: f64,
    max_norm: Option<f64>,
) -> InPlace<M, (M, ParamGrads)> {
    if !crate::ml::ops::FusedOp::Adam.is_enabled()
        || !in_place_ok(&opt.config, lr)
        || grads.grads.is_empty()
    {
        return Declined((module, grads));
    }
    // The gradients, in path order.
    let mut g_parts = Vec::with_capacity(grads.grads.len());
    let mut layout = Vec::with_capacity(grads.grads.len());
    for (path, g) in &grads.grads {
        if !on_libtorch(g) {
            return Declined((module, grads));
        }
        let t = primitive(g.clone()).tensor;
        layout.push((path.clone(), t.numel()));
        g_parts.push(t);
    }
    let (kind, device) = (g_parts[0].kind(), g_parts[0].device());
    if g_parts
        .iter()
        .any(|t| t.kind() != kind || t.device() != device)
    {
        return Declined((module, grads));
    }
    let index: BTreeMap<String, usize> = layout
        .iter()
        .enumerate()
        .map(|(i, (path, _))| (path.clone(), i))
        .collect();
    let at: Vec<(i64, i64)> = offsets(&layout).map(|(_, a, n)| (a, n)).collect();

    // The parameters' tensors (shallow handles), and whether each is still the view of the
    // buffer the last flat step made, in its place and held by the module alone.
    let ours = opt
        .flat
        .as_ref()
        .filter(|f| f.layout == layout)
        .and_then(|f| f.params.as_ref())
        .map(|b| {
            (
                Arc::as_ptr(b.storage.buffer_ref()),
                b.tensor.data_ptr() as usize,
            )
        });
    let mut handles: Vec<Option<tch::Tensor>> = (0..layout.len()).map(|_| None).collect();
    let mut views_ours = 0usize;
    let module = module.map(&mut EachParam {
        stack: Vec::new(),
        index: &index,
        f: |i: usize, p: TchTensor| {
            let (off, n) = at[i];
            if let (
                Some((buffer, base)),
                Storage::View {
                    buffer_ref,
                    view_ref,
                },
            ) = (ours, &p.storage)
            {
                let elt = p.tensor.kind().elt_size_in_bytes();
                if Arc::as_ptr(buffer_ref) == buffer
                    && Arc::strong_count(view_ref) == 1
                    && p.tensor.data_ptr() as usize == base + off as usize * elt
                    && p.tensor.is_contiguous()
                {
                    views_ours += 1;
                }
            }
            if p.tensor.numel() as i64 == n
                && p.tensor.kind() == kind
                && p.tensor.device() == device
            {
                handles[i] = Some(p.tensor.shallow_clone());
            }
            p
        },
    });
    let Some(handles) = handles.into_iter().collect::<Option<Vec<_>>>() else {
        // A gradient without its parameter, or one of another size, dtype or device.
        return Declined((module, grads));
    };

    // The moments: carried on, gathered from per-parameter state, or new.
    let flat = match opt.flat.take() {
        Some(f) if f.layout == layout => f,
        other => {
            if let Some(f) = other {
                opt.state.extend(f.moments());
            }
            let have: Vec<&Moments> = layout
                .iter()
                .filter_map(|(path, _)| opt.state.get(path))
                .collect();
            let (step, m, v) = if have.is_empty() {
                let zeros = || tch::Tensor::zeros([at_end(&at)], (kind, device));
                (0, zeros(), zeros())
            } else if have.len() == layout.len()
                && have.iter().all(|s| s.step == have[0].step)
                && have.iter().all(|s| on_libtorch(&s.m) && on_libtorch(&s.v))
            {
                let cat = |pick: fn(&Moments) -> &Tensor<1>| {
                    let parts: Vec<tch::Tensor> = have
                        .iter()
                        .map(|s| primitive(pick(s).clone()).tensor)
                        .collect();
                    tch::Tensor::cat(&parts, 0)
                };
                let (m, v) = (cat(|s| &s.m), cat(|s| &s.v));
                if m.kind() != kind || m.device() != device {
                    return Declined((module, grads));
                }
                (have[0].step, m, v)
            } else {
                // Parameters with different histories: per tensor.
                return Declined((module, grads));
            };
            for (path, _) in &layout {
                opt.state.remove(path);
            }
            let scratch = m.empty_like();
            Flat {
                layout,
                step,
                m,
                v,
                scratch,
                params: None,
            }
        }
    };
    let Flat {
        layout,
        step,
        mut m,
        mut v,
        scratch: mut g,
        params,
    } = flat;
    let step = step + 1;
    // In place when every parameter is still our view and nobody else holds the buffer
    // (the views hold one reference each, we the last).
    let in_place = params.filter(|b| {
        views_ours == layout.len() && Arc::strong_count(b.storage.buffer_ref()) == 1 + layout.len()
    });
    let fresh = in_place.is_none();
    let mut buffer = in_place.unwrap_or_else(|| {
        let flat: Vec<tch::Tensor> = handles.iter().map(|h| h.view([-1])).collect();
        TchTensor::new(tch::Tensor::cat(&flat, 0))
    });
    drop(handles);
    run(
        "gathering the gradients",
        tch::Tensor::f_cat_out(&g, &g_parts, 0).map(drop),
    );
    drop(g_parts);
    drop(grads);
    if let Some(max_norm) = max_norm {
        // PyTorch's `clip_grad_norm_`: scale by max_norm / (norm + 1e-6) when that is below 1.
        // One reduction over all gradients (per tensor it would be two kernels each).
        let norm = g.norm().double_value(&[]);
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            run("clipping", g.f_mul_scalar_(coef).map(drop));
        }
    }
    run(
        "flat",
        kernels(
            &opt.config,
            [&mut buffer.tensor, &mut g, &mut m, &mut v],
            step,
            lr,
        ),
    );
    let module = if fresh {
        // The module's parameters become views of the new buffer.
        module.map(&mut EachParam {
            stack: Vec::new(),
            index: &index,
            f: |i: usize, p: TchTensor| {
                let (off, n) = at[i];
                let view = buffer
                    .tensor
                    .narrow(0, off, n)
                    .view(p.tensor.size().as_slice());
                TchTensor::partial(view, buffer.storage.clone())
            },
        })
    } else {
        module
    };
    opt.flat = Some(Flat {
        layout,
        step,
        m,
        v,
        scratch: g,
        params: Some(buffer),
    });
    Done(module)
}

/// Total elements of a layout given its offsets.
fn at_end(at: &[(i64, i64)]) -> i64 {
    at.last().map_or(0, |(a, n)| a + n)
}
