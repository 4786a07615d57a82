//! libtorch's fused kernels behind [`super`]'s operations, forward and backward: layer
//! normalisation, tanh GELU, log-softmax, softmax, RMS normalisation, GPT-2's linear layers
//! as one `addmm`, GPT-2's attention from the q/k/v projection (its gradient as one
//! concatenation), and an LM head `h Wᵀ` whose backward gives `W`'s gradient in `W`'s layout.
//!
//! They are a burn backend extension ([`FusedOps`]) implemented for libtorch and for autodiff
//! over libtorch, with the backward written here (for the two norms, libtorch's own autograd
//! differentiates a recorded forward: tch does not wrap their backward kernels). Why these
//! operations, and what they save: docs/benchmarks.md ("libtorch's fused kernels").
//!
//! Aliasing: burn-tch writes into a tensor in place when its storage is not shared, so the
//! backward state keeps a clone of every saved tensor's burn handle (the shared storage
//! count then says "in use" and burn copies instead of writing over what the backward
//! reads).
//!
//! Lints: burn marks burn-tch deprecated (libtorch is the backend this project names).
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{binary, unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::{backend_extension, tensor::FloatTensor, Backend, Dispatch, LibTorch};
use burn::tensor::Tensor;
use burn_tch::TchTensor;

/// Layer norm, tanh GELU, log-softmax, softmax, RMS normalisation, `x wᵀ` and `x w + b` as
/// libtorch kernels.
#[backend_extension(LibTorch, Autodiff)]
pub trait FusedOps: Backend {
    /// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension (biased
    /// variance, as `torch.nn.LayerNorm`).
    fn layer_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (transformers' `gelu_new`).
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x - log Σ exp(x)` along `dim`.
    fn log_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self>;
    /// `exp(x) / Σ exp(x)` along `dim` (attention's probabilities).
    fn softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self>;
    /// `x / sqrt(mean(x²) + eps)` over the last dimension (RMS norm without its weight).
    fn rms_normalize(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// `x wᵀ` for `x` `[n, k]` and `w` `[m, k]` (an LM head: `w` is the `[vocab, e]`
    /// weight), with `w`'s gradient computed in `w`'s own layout.
    fn matmul_nt(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x w + b` for `x` `[n, k]`, `w` `[k, m]` (GPT-2's `Conv1D` layout) and `b` `[m]`: one
    /// `addmm`, the bias added by the matrix product's kernel (on CUDA, cuBLASLt's bias
    /// epilogue) instead of a second pass over the output.
    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// GPT-2's attention without a KV cache, from the `c_attn` output `qkv` `[b, t, 3e]`
    /// (q, k, v side by side, `n_head` heads each) and the additive mask `bias` `[b, 1, t,
    /// t]`: `softmax(q kᵀ · scale + bias) v` with the heads merged, `[b, t, e]` — what
    /// `attention::attend` computes from q, k and v sliced out of `qkv`. The backward gives
    /// `qkv`'s gradient as one concatenation, where burn's three slices each give a
    /// zero-filled `[b, t, 3e]` tensor with their part copied in, then added up.
    fn self_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        n_head: usize,
        scale: Option<f64>,
    ) -> FloatTensor<Self>;
}

const GELU_TANH: &str = "tanh";

impl FusedOps for LibTorch {
    fn layer_norm(x: TchTensor, weight: TchTensor, bias: TchTensor, eps: f64) -> TchTensor {
        TchTensor::new(tch_layer_norm(&x.tensor, &weight.tensor, &bias.tensor, eps))
    }

    fn gelu_tanh(x: TchTensor) -> TchTensor {
        TchTensor::new(x.tensor.gelu(GELU_TANH))
    }

    fn log_softmax(x: TchTensor, dim: usize) -> TchTensor {
        TchTensor::new(x.tensor.log_softmax(dim as i64, x.tensor.kind()))
    }

    fn softmax(x: TchTensor, dim: usize) -> TchTensor {
        TchTensor::new(x.tensor.softmax(dim as i64, x.tensor.kind()))
    }

    fn rms_normalize(x: TchTensor, eps: f64) -> TchTensor {
        TchTensor::new(tch_rms_normalize(&x.tensor, eps))
    }

    fn matmul_nt(x: TchTensor, w: TchTensor) -> TchTensor {
        TchTensor::new(x.tensor.matmul(&w.tensor.tr()))
    }

    fn linear(x: TchTensor, w: TchTensor, b: TchTensor) -> TchTensor {
        TchTensor::new(b.tensor.addmm(&x.tensor, &w.tensor))
    }

    fn self_attention(
        qkv: TchTensor,
        bias: TchTensor,
        n_head: usize,
        scale: Option<f64>,
    ) -> TchTensor {
        TchTensor::new(tch_self_attention(&qkv.tensor, &bias.tensor, n_head, scale).0)
    }
}

fn tch_layer_norm(
    x: &tch::Tensor,
    weight: &tch::Tensor,
    bias: &tch::Tensor,
    eps: f64,
) -> tch::Tensor {
    let e = *x.size().last().expect("layer norm of a scalar");
    x.layer_norm([e].as_slice(), Some(weight), Some(bias), eps, true)
}

/// q, k and v of `qkv` `[b, t, 3e]` as `[b, h, t, dh]` views (no copy).
fn tch_qkv_heads(qkv: &tch::Tensor, n_head: usize) -> [tch::Tensor; 3] {
    let (b, t, e3) = qkv.size3().expect("qkv is [b, t, 3e]");
    let (e, h) = (e3 / 3, n_head as i64);
    [0, 1, 2].map(|i| {
        qkv.narrow(2, i * e, e)
            .reshape([b, t, h, e / h])
            .transpose(1, 2)
    })
}

/// [`FusedOps::self_attention`]'s output `[b, t, e]` and the attention probabilities
/// `[b, h, t, t]` (kept for the backward), in `attend`'s order of operations.
fn tch_self_attention(
    qkv: &tch::Tensor,
    bias: &tch::Tensor,
    n_head: usize,
    scale: Option<f64>,
) -> (tch::Tensor, tch::Tensor) {
    let (b, t, e3) = qkv.size3().expect("qkv is [b, t, 3e]");
    let [q, k, v] = tch_qkv_heads(qkv, n_head);
    let mut scores = q.matmul(&k.transpose(2, 3));
    if let Some(scale) = scale {
        scores *= scale;
    }
    let p = (scores + bias).softmax(3, qkv.kind());
    let out = p.matmul(&v).transpose(1, 2).reshape([b, t, e3 / 3]);
    (out, p)
}

fn tch_rms_normalize(x: &tch::Tensor, eps: f64) -> tch::Tensor {
    let e = *x.size().last().expect("RMS norm of a scalar");
    x.rms_norm([e].as_slice(), None::<&tch::Tensor>, eps)
}

/// A forward recorded by libtorch's own autograd, for the operations whose backward kernel
/// is not in the C API that tch wraps (`native_layer_norm_backward`, the RMS norm's): the
/// graph is differentiated by libtorch when burn's backward reaches the node.
#[derive(Debug)]
struct Recorded<const N: usize> {
    /// The forward's output as libtorch's autograd sees it (the graph's root).
    output: tch::Tensor,
    /// The inputs as the graph's leaves (they require grad in libtorch's sense).
    leaves: [tch::Tensor; N],
    /// burn handles of the inputs and of the output: the storages the graph saved are not
    /// written over in place while it lives (see the module's note on aliasing).
    _keep: ([TchTensor; N], TchTensor),
}

impl<const N: usize> Clone for Recorded<N> {
    fn clone(&self) -> Self {
        Recorded {
            output: self.output.shallow_clone(),
            leaves: self.leaves.each_ref().map(|t| t.shallow_clone()),
            _keep: self._keep.clone(),
        }
    }
}

impl<const N: usize> Recorded<N> {
    /// Runs `f` on leaf copies of `inputs` (same storage, no copy) with libtorch recording;
    /// returns the state and the output for burn.
    fn forward(
        inputs: [TchTensor; N],
        f: impl FnOnce(&[tch::Tensor; N]) -> tch::Tensor,
    ) -> (Self, TchTensor) {
        let leaves = inputs
            .each_ref()
            .map(|t| t.tensor.detach().set_requires_grad(true));
        let output = f(&leaves);
        let y = TchTensor::new(output.detach());
        let state = Recorded {
            output,
            leaves,
            _keep: (inputs, y.clone()),
        };
        (state, y)
    }

    /// The backward of the node `ops` describes: libtorch differentiates the recorded graph
    /// for the inputs burn wants a gradient of, and they are registered with burn.
    fn backward(ops: Ops<Self, N>, grads: &mut Gradients) {
        let dy = grads.consume::<LibTorch>(&ops.node);
        let s = ops.state;
        // libtorch seeds its backward with ones: differentiate `output * dy` to seed it
        // with `dy` (the product's gradient is `1 * dy`, exact).
        let root = &s.output * &dy.tensor;
        let wanted: Vec<usize> = (0..N).filter(|&i| ops.parents[i].is_some()).collect();
        let inputs: Vec<&tch::Tensor> = wanted.iter().map(|&i| &s.leaves[i]).collect();
        let got = tch::Tensor::run_backward(&[root], &inputs, false, false);
        for (&i, g) in wanted.iter().zip(got) {
            let parent = ops.parents[i].as_ref().expect("filtered on is_some");
            grads.register::<LibTorch>(parent.id, TchTensor::new(g));
        }
    }
}

/// The burn autodiff node of an operation [`Recorded`] by libtorch's autograd.
#[derive(Debug)]
struct RecordedOp;

impl<const N: usize> Backward<LibTorch, N> for RecordedOp {
    type State = Recorded<N>;

    fn backward(self, ops: Ops<Recorded<N>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        Recorded::backward(ops, grads)
    }
}

/// `f` of `inputs` under burn's autodiff, differentiated by libtorch's autograd when a
/// gradient is wanted (else plain).
fn through_libtorch_autograd<C: CheckpointStrategy, const N: usize>(
    inputs: [FloatTensor<Autodiff<LibTorch, C>>; N],
    f: impl FnOnce(&[tch::Tensor; N]) -> tch::Tensor,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let prep = RecordedOp
        .prepare::<C>(inputs.each_ref().map(|t| t.node()))
        .compute_bound()
        .stateful();
    let inputs = inputs.map(|t| t.into_primitive());
    match prep {
        OpsKind::Tracked(prep) => {
            let (state, y) = Recorded::forward(inputs, f);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(TchTensor::new(f(&inputs.map(|t| t.tensor)))),
    }
}

/// libtorch's backward of an operation along a dimension that needs only its output:
/// `(dy, y, dim, input kind) -> dx` (log-softmax's and softmax's).
type FromOutputBackward = fn(&tch::Tensor, &tch::Tensor, i64, tch::Kind) -> tch::Tensor;

/// The burn autodiff node of such an operation.
#[derive(Debug)]
struct AlongDim(FromOutputBackward);

impl Backward<LibTorch, 1> for AlongDim {
    /// The output (its burn handle: see the module's note on aliasing) and the dimension.
    type State = (TchTensor, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (y, dim) = ops.state;
        unary::<LibTorch, _>(ops.parents, ops.node, grads, |dy| {
            TchTensor::new((self.0)(&dy.tensor, &y.tensor, dim as i64, y.tensor.kind()))
        });
    }
}

/// `forward(x, dim)` under burn's autodiff with `backward` as its gradient.
fn along_dim<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<LibTorch, C>>,
    dim: usize,
    forward: fn(TchTensor, usize) -> TchTensor,
    backward: FromOutputBackward,
) -> FloatTensor<Autodiff<LibTorch, C>> {
    let prep = AlongDim(backward)
        .prepare::<C>([x.node()])
        .compute_bound()
        .stateful();
    let y = forward(x.into_primitive(), dim);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((y.clone(), dim), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<LibTorch, C> {
    fn layer_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        through_libtorch_autograd::<C, 3>([x, weight, bias], |[x, w, b]| {
            tch_layer_norm(x, w, b, eps)
        })
    }

    fn rms_normalize(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        through_libtorch_autograd::<C, 1>([x], |[x]| tch_rms_normalize(x, eps))
    }

    fn matmul_nt(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulNt;

        impl Backward<LibTorch, 2> for MatmulNt {
            /// `x` and `w` (burn handles: see the module's note on aliasing).
            type State = (TchTensor, TchTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, w) = ops.state;
                binary::<LibTorch, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |dy| TchTensor::new(dy.tensor.matmul(&w.tensor)),
                    // `dyᵀ x` is `[m, k]`, `w`'s layout: burn's matmul backward would give
                    // `[k, m]` and a transposed (strided) read where it meets another
                    // gradient of `w` (GPT-2's tied embedding).
                    |dy| TchTensor::new(dy.tensor.tr().matmul(&x.tensor)),
                );
            }
        }

        let prep = MatmulNt
            .prepare::<C>([x.node(), w.node()])
            .compute_bound()
            .stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = LibTorch::matmul_nt(x.clone(), w.clone());
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::matmul_nt(x, w)),
        }
    }

    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Linear;

        impl Backward<LibTorch, 3> for Linear {
            /// `x` and `w` (burn handles: see the module's note on aliasing).
            type State = (TchTensor, TchTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let dy = grads.consume::<LibTorch>(&ops.node);
                let (x, w) = ops.state;
                let [px, pw, pb] = ops.parents;
                if let Some(p) = px {
                    grads.register::<LibTorch>(
                        p.id,
                        TchTensor::new(dy.tensor.matmul(&w.tensor.tr())),
                    );
                }
                if let Some(p) = pw {
                    grads.register::<LibTorch>(
                        p.id,
                        TchTensor::new(x.tensor.tr().matmul(&dy.tensor)),
                    );
                }
                if let Some(p) = pb {
                    let db = dy
                        .tensor
                        .sum_dim_intlist([0i64].as_slice(), false, dy.tensor.kind());
                    grads.register::<LibTorch>(p.id, TchTensor::new(db));
                }
            }
        }

        let prep = Linear
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful();
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let y = LibTorch::linear(x.clone(), w.clone(), b);
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::linear(x, w, b)),
        }
    }

    fn self_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        n_head: usize,
        scale: Option<f64>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SelfAttention;

        impl Backward<LibTorch, 2> for SelfAttention {
            /// `qkv` and the probabilities (burn handles: see the module's note on
            /// aliasing), the heads and the scale.
            type State = (TchTensor, TchTensor, usize, Option<f64>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let dy = grads.consume::<LibTorch>(&ops.node);
                let (qkv, p, n_head, scale) = ops.state;
                let [parent, _bias] = ops.parents;
                let Some(parent) = parent else { return };
                let (b, t, e3) = qkv.tensor.size3().expect("qkv is [b, t, 3e]");
                let h = n_head as i64;
                let [q, k, v] = tch_qkv_heads(&qkv.tensor, n_head);
                let p = &p.tensor;
                let d_out = dy.tensor.reshape([b, t, h, e3 / 3 / h]).transpose(1, 2);
                let dv = p.transpose(2, 3).matmul(&d_out);
                let dp = d_out.matmul(&v.transpose(2, 3));
                let mut ds = tch::Tensor::internal_softmax_backward_data(&dp, p, 3, p.kind());
                if let Some(scale) = scale {
                    ds *= scale;
                }
                let dq = ds.matmul(&k);
                let dk = ds.transpose(2, 3).matmul(&q);
                // [b, t, 3h, dh]: q's heads, then k's, then v's, as `qkv` holds them.
                let dqkv = tch::Tensor::cat(&[dq, dk, dv].map(|g| g.transpose(1, 2)), 2)
                    .reshape([b, t, e3]);
                grads.register::<LibTorch>(parent.id, TchTensor::new(dqkv));
            }
        }

        let prep = SelfAttention
            .prepare::<C>([qkv.node(), bias.node()])
            .compute_bound()
            .stateful();
        let (qkv, bias) = (qkv.into_primitive(), bias.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, p) = tch_self_attention(&qkv.tensor, &bias.tensor, n_head, scale);
                prep.finish((qkv, TchTensor::new(p), n_head, scale), TchTensor::new(out))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(LibTorch::self_attention(qkv, bias, n_head, scale))
            }
        }
    }

    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluTanh;

        impl Backward<LibTorch, 1> for GeluTanh {
            /// The input (its burn handle: see the module's note on aliasing).
            type State = TchTensor;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let x = ops.state;
                unary::<LibTorch, _>(ops.parents, ops.node, grads, |dy| {
                    TchTensor::new(x.tensor.gelu_backward(&dy.tensor, GELU_TANH))
                });
            }
        }

        let prep = GeluTanh.prepare::<C>([x.node()]).compute_bound().stateful();
        let x = x.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let y = LibTorch::gelu_tanh(x.clone());
                prep.finish(x, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(LibTorch::gelu_tanh(x)),
        }
    }

    fn log_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        along_dim::<C>(
            x,
            dim,
            <LibTorch as FusedOps>::log_softmax,
            tch::Tensor::internal_log_softmax_backward_data,
        )
    }

    fn softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        // Backward `y (dy - Σ dy y)` along `dim`, one kernel.
        along_dim::<C>(
            x,
            dim,
            <LibTorch as FusedOps>::softmax,
            tch::Tensor::internal_softmax_backward_data,
        )
    }
}

/// Is `x` on a libtorch device (with or without autodiff)?
pub(super) fn on_libtorch<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(
        x.device().inner().as_dispatch(),
        burn_dispatch::DispatchDevice::LibTorch(_)
    )
}

// The kernels for tensors on libtorch ([`super`] decides when they run).

/// [`FusedOps::layer_norm`].
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        eps,
    ))
}

/// [`FusedOps::gelu_tanh`].
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::gelu_tanh(x.into_dispatch()))
}

/// [`FusedOps::log_softmax`].
pub fn log_softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::log_softmax(x.into_dispatch(), dim))
}

/// [`FusedOps::softmax`].
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::softmax(x.into_dispatch(), dim))
}

/// [`FusedOps::rms_normalize`].
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::rms_normalize(
        x.into_dispatch(),
        eps,
    ))
}

/// [`FusedOps::matmul_nt`].
pub fn matmul_nt(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::matmul_nt(
        x.into_dispatch(),
        w.into_dispatch(),
    ))
}

/// [`FusedOps::linear`].
pub fn linear(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::linear(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// [`FusedOps::self_attention`] (float32).
pub fn self_attention(
    qkv: Tensor<3>,
    bias: Tensor<4>,
    n_head: usize,
    scale: Option<f64>,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::self_attention(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        n_head,
        scale,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::ops as composed;
    use burn::tensor::{Device, TensorData};

    fn device() -> Device {
        Device::libtorch().autodiff()
    }

    /// Deterministic values of varied size and sign (some large, so that GELU's tails and the
    /// log-softmax's shift matter).
    fn values<const D: usize>(shape: [usize; D], seed: u32, scale: f32) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
                (h as f32 / 10_007.0 - 0.5) * scale
            })
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &device())
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a.inner() - b.inner()).abs().max().into_scalar::<f32>()
    }

    /// Value and gradients (for every input) of `Σ f(inputs) ⊙ weights`, so that each
    /// gradient entry is exercised with its own weight.
    fn value_and_grads<const D: usize, const N: usize>(
        inputs: [Tensor<D>; N],
        f: impl Fn([Tensor<D>; N]) -> Tensor<D>,
    ) -> (Tensor<D>, [Tensor<D>; N]) {
        let inputs = inputs.map(|t| t.require_grad());
        let y = f(inputs.clone());
        let weights = values(y.dims(), 99, 2.0);
        let grads = (y.clone() * weights).sum().backward();
        let g = inputs.map(|t| t.grad(&grads).expect("the input has a gradient"));
        (y, g)
    }

    fn assert_close<const D: usize>(what: &str, got: Tensor<D>, want: Tensor<D>, tol: f32) {
        let scale = want.clone().inner().abs().max().into_scalar::<f32>();
        let d = max_diff(got, want);
        assert!(
            d <= tol * (1.0 + scale),
            "{what}: differs by {d} (max {scale})"
        );
    }

    #[test]
    fn layer_norm_matches_the_composed_one_in_values_and_gradients() {
        let x = values([2, 5, 16], 1, 6.0) + 3.0; // off-centre rows
        let w = values([16], 2, 2.0) + 1.0;
        let b = values([16], 3, 1.0);
        // Inputs as rank-3 tensors so one helper serves all three: w and b are [1, 1, 16].
        let three = |t: Tensor<1>| t.reshape([1, 1, 16]);
        let ln = |fused: bool| {
            value_and_grads(
                [x.clone(), three(w.clone()), three(b.clone())],
                |[x, w, b]| {
                    let (w, b) = (w.reshape([16]), b.reshape([16]));
                    if fused {
                        layer_norm(x, w, b, 1e-5)
                    } else {
                        super::super::layer_norm_composed(x, w, b, 1e-5)
                    }
                },
            )
        };
        let ((y1, [gx1, gw1, gb1]), (y2, [gx2, gw2, gb2])) = (ln(true), ln(false));
        assert_close("output", y1, y2, 1e-5);
        assert_close("grad x", gx1, gx2, 1e-4);
        assert_close("grad weight", gw1, gw2, 1e-4);
        assert_close("grad bias", gb1, gb2, 1e-5);
    }

    #[test]
    fn gelu_tanh_matches_the_composed_one_in_values_and_gradients() {
        let x = values([3, 7, 11], 4, 12.0);
        let run = |fused: bool| {
            value_and_grads([x.clone()], |[x]| {
                if fused {
                    gelu_tanh(x)
                } else {
                    composed::gelu_tanh_composed(x)
                }
            })
        };
        let ((y1, [g1]), (y2, [g2])) = (run(true), run(false));
        assert_close("output", y1, y2, 1e-6);
        assert_close("grad", g1, g2, 1e-5);
    }

    /// The log-softmax at target indices (what the log-probs read), along either dimension:
    /// libtorch's whole log-softmax then a gather, against the composed targets-minus-LSE.
    #[test]
    fn log_softmax_matches_the_composed_one_along_either_dimension() {
        let x = values([37, 6], 5, 40.0);
        for dim in [0, 1] {
            let (n, shape) = if dim == 0 { (37, [1, 6]) } else { (6, [37, 1]) };
            let idx: Vec<i64> = (0..shape[0] * shape[1])
                .map(|i| ((i * 7 + 3) % n) as i64)
                .collect();
            let targets =
                Tensor::<2, burn::tensor::Int>::from_data(TensorData::new(idx, shape), &device());
            let run = |fused: bool| {
                value_and_grads([x.clone()], |[x]| {
                    let y = if fused {
                        log_softmax(x, dim).gather(dim, targets.clone())
                    } else {
                        composed::log_softmax_gather_composed(x, dim, targets.clone())
                    };
                    // Back to the input's shape for `value_and_grads` (broadcast along dim).
                    y.expand([37, 6])
                })
            };
            let ((y1, [g1]), (y2, [g2])) = (run(true), run(false));
            assert_close(&format!("output, dim {dim}"), y1, y2, 1e-5);
            assert_close(&format!("grad, dim {dim}"), g1, g2, 1e-5);
        }
    }

    /// Attention's probabilities: scores with masked (-1e9) entries, as `attend` builds
    /// them, along the last dimension and along another one.
    #[test]
    fn softmax_matches_the_composed_one_with_masked_entries() {
        let mut mask = vec![0f32; 2 * 3 * 5 * 5];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % 5 > (i / 5) % 5 {
                *m = -1.0e9; // causal: key after query
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(mask, [2, 3, 5, 5]), &device());
        let x = values([2, 3, 5, 5], 6, 8.0);
        for dim in [3, 1] {
            let run = |fused: bool| {
                value_and_grads([x.clone()], |[x]| {
                    let x = x + bias.clone();
                    if fused {
                        softmax(x, dim)
                    } else {
                        composed::softmax_composed(x, dim)
                    }
                })
            };
            let ((y1, [g1]), (y2, [g2])) = (run(true), run(false));
            assert_close(&format!("output, dim {dim}"), y1, y2, 1e-6);
            assert_close(&format!("grad, dim {dim}"), g1, g2, 1e-6);
        }
    }

    #[test]
    fn rms_norm_matches_the_composed_one_in_values_and_gradients() {
        let x = values([2, 5, 16], 10, 6.0) + 1.0;
        let run = |fused: bool| {
            value_and_grads([x.clone()], |[x]| {
                if fused {
                    rms_norm(x, 1e-6)
                } else {
                    composed::rms_norm_composed(x, 1e-6)
                }
            })
        };
        let ((y1, [g1]), (y2, [g2])) = (run(true), run(false));
        assert_close("output", y1, y2, 1e-6);
        assert_close("grad", g1, g2, 1e-5);
    }

    #[test]
    fn matmul_nt_matches_burns_matmul_in_values_and_gradients() {
        let (x, w) = (values([6, 5], 11, 2.0), values([9, 5], 12, 2.0));
        let run = |fused: bool| {
            value_and_grads([x.clone(), w.clone()], |[x, w]| {
                if fused {
                    matmul_nt(x, w)
                } else {
                    x.matmul(w.transpose())
                }
            })
        };
        let ((y1, [gx1, gw1]), (y2, [gx2, gw2])) = (run(true), run(false));
        assert_close("output", y1, y2, 1e-6);
        assert_close("grad x", gx1, gx2, 1e-6);
        assert_close("grad w", gw1, gw2, 1e-6);
    }

    /// `x w + b` as one `addmm` against burn's matmul and broadcast addition, in values and
    /// in the gradients of all three; with and without gradients wanted for the weights (a
    /// frozen layer), and untracked.
    #[test]
    fn linear_matches_burns_matmul_and_add_in_values_and_gradients() {
        let x = values([7, 5], 21, 2.0).require_grad();
        let w = values([5, 9], 22, 2.0);
        let b = Tensor::<1>::from_data(
            TensorData::new(
                (0..9).map(|i| i as f32 * 0.3 - 1.0).collect::<Vec<f32>>(),
                [9],
            ),
            &device(),
        );
        let out_w = values([7, 9], 23, 2.0);
        for train_weights in [true, false] {
            let (w, b) = if train_weights {
                (w.clone().require_grad(), b.clone().require_grad())
            } else {
                (w.clone(), b.clone())
            };
            let run = |fused: bool| {
                let y = if fused {
                    linear(x.clone(), w.clone(), b.clone())
                } else {
                    composed::linear_composed(x.clone(), w.clone(), b.clone())
                };
                let grads = (y.clone() * out_w.clone()).sum().backward();
                let gw = train_weights.then(|| (w.grad(&grads).unwrap(), b.grad(&grads).unwrap()));
                (y, x.grad(&grads).unwrap(), gw)
            };
            let ((y1, gx1, g1), (y2, gx2, g2)) = (run(true), run(false));
            assert_close("output", y1, y2, 1e-6);
            assert_close("grad x", gx1, gx2, 1e-6);
            match (g1, g2) {
                (Some((gw1, gb1)), Some((gw2, gb2))) => {
                    assert_close("grad w", gw1, gw2, 1e-6);
                    assert_close("grad b", gb1, gb2, 1e-6);
                }
                (None, None) => {}
                _ => panic!("gradients wanted on one side only"),
            }
        }
        let plain = linear(x.clone().inner(), w.clone().inner(), b.clone().inner());
        assert_close(
            "untracked",
            plain,
            x.inner().matmul(w.inner()) + b.inner().unsqueeze::<2>(),
            1e-6,
        );
    }

    /// GPT-2's attention from `qkv` against the composed one (`ops::attention` on q, k and v
    /// sliced out of it, what other backends run), with a causal mask that also hides a
    /// padded key of one row: output and `qkv`'s gradient, with and without the scale.
    #[test]
    fn self_attention_matches_attend_on_slices() {
        let (b, t, h, dh) = (2, 5, 3, 4);
        let e = h * dh;
        let mut mask = vec![0f32; b * t * t];
        for (i, m) in mask.iter_mut().enumerate() {
            let (row, q, k) = (i / (t * t), (i / t) % t, i % t);
            if k > q || (row == 1 && k == 0) {
                *m = -1.0e9;
            }
        }
        let bias = Tensor::<4>::from_data(TensorData::new(mask, [b, 1, t, t]), &device());
        let qkv = values([b, t, 3 * e], 31, 3.0);
        for scale in [Some(1.0 / (dh as f64).sqrt()), None] {
            let run = |fused: bool| {
                value_and_grads([qkv.clone()], |[qkv]| {
                    if fused {
                        return self_attention(qkv, bias.clone(), h, scale);
                    }
                    composed::self_attention_composed(qkv, bias.clone(), h, scale)
                })
            };
            let ((y1, [g1]), (y2, [g2])) = (run(true), run(false));
            assert_close(&format!("output, scale {scale:?}"), y1, y2, 1e-6);
            assert_close(&format!("grad, scale {scale:?}"), g1, g2, 1e-6);
        }
    }

    /// burn-tch writes an operation's result into its input's buffer when nothing else holds
    /// it; the saved tensors of the fused ops' backward must not be written over that way.
    /// Here the layer norm's and GELU's inputs are consumed by an addition after the fused op
    /// (a residual connection's shape), and the gradients must stay those of the ops alone.
    #[test]
    fn saved_inputs_survive_later_in_place_arithmetic() {
        let x = values([2, 3, 8], 6, 4.0);
        let (w, b) = (values([8], 7, 1.0) + 1.0, values([8], 8, 1.0));
        let grads_of = |residual: bool| {
            let x = x.clone().require_grad();
            let h = x.clone() * 2.0; // a non-leaf input, free for burn to reuse in place
            let y = layer_norm(h.clone(), w.clone(), b.clone(), 1e-5);
            let g = gelu_tanh(y.clone() * 3.0);
            let mut loss = (g * values([2, 3, 8], 9, 1.0)).sum();
            if residual {
                // `h + 100` may be computed in h's buffer, `y * 0` in y's: neither may
                // change what the backward of the layer norm and GELU read.
                loss = loss + (h + 100.0).sum() * 0.0 + (y * 0.0).sum();
            }
            x.grad(&loss.backward()).unwrap()
        };
        assert_close("grad x", grads_of(true), grads_of(false), 1e-6);
    }
}
