//! Tensor operations with a fast path, one function each (the shape of candle-nn's `ops.rs`):
//! every function returns its result, running libtorch's fused kernel when the input lives on
//! a libtorch device and the operation is switched on ([`FusedOp`], `DAGRUN_FUSED_OPS`), and
//! burn's composed operations otherwise. The composed forms are public too (`*_composed`):
//! they are what every other backend runs, bit for bit as before, and the reference the
//! tests compare the fused kernels with ([`libtorch`]'s tests).
//!
//! | function | switch | fused (libtorch) | composed |
//! |---|---|---|---|
//! | [`layer_norm`] | `layer_norm` | `layer_norm` | mean, centre, variance, scale, shift |
//! | [`gelu_tanh`] | `gelu_tanh` | `gelu(approximate="tanh")` | burn's `gelu_approximate` |
//! | [`log_softmax_gather`] | `log_softmax` | `log_softmax`, then the targets | the targets minus log-sum-exp |
//! | [`softmax`] | `softmax` | `softmax` | burn's `softmax` |
//! | [`rms_norm`] | `rms_norm` | `rms_norm` without weight | `x / sqrt(mean(x²) + eps)` |
//! | [`lm_head`] | `lm_head` | `h Wᵀ`, `W`'s gradient in `W`'s layout | `W hᵀ` (vocabulary-major) |
//! | [`linear`] | `linear` | one `addmm` | matmul, then add |
//! | [`self_attention`] | `attention` | GPT-2's attention from `qkv`, one backward | [`attention`] on slices |
//!
//! `adam`, the ninth switch, is the optimizer's update of all parameters at once
//! (`ml/training/optim/libtorch.rs`). The fused and composed forms agree to float rounding,
//! not bit for bit, so a libtorch node's cache key names the switches in use
//! (`kinds::ml_util::backend_env`).

#[cfg(feature = "tch")]
pub mod libtorch;

use burn::tensor::activation::{gelu_approximate, softmax as burn_softmax};
use burn::tensor::{FloatDType, Int, Tensor};

/// A fused operation that `DAGRUN_FUSED_OPS` switches (all on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedOp {
    LayerNorm,
    GeluTanh,
    LogSoftmax,
    Softmax,
    RmsNorm,
    LmHead,
    Linear,
    Attention,
    /// Adam over all parameters as views of one buffer (`ml/training/optim/libtorch.rs`).
    Adam,
}

impl FusedOp {
    /// Every switch, in the order the cache key lists them.
    pub const ALL: [FusedOp; 9] = [
        FusedOp::LayerNorm,
        FusedOp::GeluTanh,
        FusedOp::LogSoftmax,
        FusedOp::Softmax,
        FusedOp::RmsNorm,
        FusedOp::LmHead,
        FusedOp::Linear,
        FusedOp::Attention,
        FusedOp::Adam,
    ];

    /// The name `DAGRUN_FUSED_OPS` and the cache key use.
    pub fn name(self) -> &'static str {
        match self {
            FusedOp::LayerNorm => "layer_norm",
            FusedOp::GeluTanh => "gelu_tanh",
            FusedOp::LogSoftmax => "log_softmax",
            FusedOp::Softmax => "softmax",
            FusedOp::RmsNorm => "rms_norm",
            FusedOp::LmHead => "lm_head",
            FusedOp::Linear => "linear",
            FusedOp::Attention => "attention",
            FusedOp::Adam => "adam",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// Is this switch on? (An invalid `DAGRUN_FUSED_OPS` counts as none: resolving a libtorch
    /// device reports it first, `DeviceSpec::resolve`.)
    pub fn is_enabled(self) -> bool {
        FusedSet::from_env().is_ok_and(|s| s.contains(self))
    }

    /// Does this operation run fused for `x`: `x` on a libtorch device (with or without
    /// autodiff) and the switch on?
    #[cfg(feature = "tch")]
    fn applies<const D: usize>(self, x: &Tensor<D>) -> bool {
        libtorch::on_libtorch(x) && self.is_enabled()
    }
}

impl std::fmt::Display for FusedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`FusedOp`] switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusedSet(u16);

impl FusedSet {
    /// Every operation.
    pub fn all() -> Self {
        FusedSet(FusedOp::ALL.iter().fold(0, |acc, op| acc | op.bit()))
    }

    /// Does the set hold `op`?
    pub fn contains(self, op: FusedOp) -> bool {
        self.0 & op.bit() != 0
    }

    /// The operations in the set, in [`FusedOp::ALL`]'s order.
    pub fn ops(self) -> impl Iterator<Item = FusedOp> {
        FusedOp::ALL
            .into_iter()
            .filter(move |&op| self.contains(op))
    }

    /// A `DAGRUN_FUSED_OPS` value: names separated by spaces or commas, `none` for none (and
    /// burn's composed operations throughout); an unknown name is an error.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut set = FusedSet(0);
        for name in list
            .split([' ', ','])
            .filter(|n| !n.is_empty() && *n != "none")
        {
            match FusedOp::ALL.iter().find(|op| op.name() == name) {
                Some(op) => set.0 |= op.bit(),
                None => {
                    let known: Vec<&str> = FusedOp::ALL.iter().map(|op| op.name()).collect();
                    return Err(format!(
                        "DAGRUN_FUSED_OPS: unknown operation `{name}` (known: {}, or none)",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(set)
    }

    /// The switches of this process: all, or those `DAGRUN_FUSED_OPS` names (read once).
    pub fn from_env() -> Result<Self, String> {
        static SET: std::sync::OnceLock<Result<FusedSet, String>> = std::sync::OnceLock::new();
        SET.get_or_init(|| match std::env::var("DAGRUN_FUSED_OPS") {
            Err(_) => Ok(FusedSet::all()),
            Ok(list) => FusedSet::parse(&list),
        })
        .clone()
    }

    /// The names, space-separated, or `none` (the cache key's `fused_ops` entry).
    pub fn key(self) -> String {
        let names: Vec<&str> = self.ops().map(FusedOp::name).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(" ")
        }
    }
}

/// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dimension (biased variance, as
/// `torch.nn.LayerNorm`).
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if FusedOp::LayerNorm.applies(&x) {
        return libtorch::layer_norm(x, weight, bias, eps);
    }
    layer_norm_composed(x, weight, bias, eps)
}

/// [`layer_norm`] from burn's operations.
pub fn layer_norm_composed<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let last = D - 1;
    let mean = x.clone().mean_dim(last);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(last);
    let normed = centered / (var + eps).sqrt();
    normed * weight.unsqueeze::<D>() + bias.unsqueeze::<D>()
}

/// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (transformers' `gelu_new`).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if FusedOp::GeluTanh.applies(&x) {
        return libtorch::gelu_tanh(x);
    }
    gelu_tanh_composed(x)
}

/// [`gelu_tanh`] from burn's operations.
pub fn gelu_tanh_composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    gelu_approximate(x)
}

/// The log-softmax of `z` along `dim`, read at `targets` (indices along `dim`, the other
/// dimensions as `z`'s with `dim` of size 1): `z[target] − log Σ exp(z)`.
pub fn log_softmax_gather<const D: usize>(
    z: Tensor<D>,
    dim: usize,
    targets: Tensor<D, Int>,
) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if FusedOp::LogSoftmax.applies(&z) {
        return libtorch::log_softmax(z, dim).gather(dim, targets);
    }
    log_softmax_gather_composed(z, dim, targets)
}

/// [`log_softmax_gather`] from burn's operations: only the targets' entries are computed, the
/// log-sum-exp shifted by the (untracked) maximum.
pub fn log_softmax_gather_composed<const D: usize>(
    z: Tensor<D>,
    dim: usize,
    targets: Tensor<D, Int>,
) -> Tensor<D> {
    let max = z.clone().inner().max_dim(dim);
    let lse = (z.clone() - max.clone()).exp().sum_dim(dim).log() + max;
    z.gather(dim, targets) - lse
}

/// `exp(x) / Σ exp(x)` along `dim`.
pub fn softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if FusedOp::Softmax.applies(&x) {
        return libtorch::softmax(x, dim);
    }
    softmax_composed(x, dim)
}

/// [`softmax`] from burn's operations.
pub fn softmax_composed<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    burn_softmax(x, dim)
}

/// RMS normalisation over the last dimension, without the weight (which Llama and Gemma
/// apply differently): `x / sqrt(mean(x²) + eps)`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    #[cfg(feature = "tch")]
    if FusedOp::RmsNorm.applies(&x) {
        return libtorch::rms_norm(x, eps);
    }
    rms_norm_composed(x, eps)
}

/// [`rms_norm`] from burn's operations.
pub fn rms_norm_composed<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    x / rms
}

/// Logits of an LM head and the dimension that runs over the vocabulary.
#[derive(Debug, Clone)]
pub struct HeadLogits {
    /// `[n, vocab]` (`vocab_dim` 1) or `[vocab, n]` (`vocab_dim` 0).
    pub logits: Tensor<2>,
    /// Which dimension of `logits` is the vocabulary.
    pub vocab_dim: usize,
}

/// The logits of hidden states `h` `[n, e]` under an LM head's weight `w` `[vocab, e]`, laid out
/// so that autodiff gives `w`'s gradient in `w`'s own layout: `h wᵀ` (`[n, vocab]`) through
/// libtorch's kernel with its own backward, else vocabulary-major `w hᵀ` (`[vocab, n]`),
/// whose burn backward has that layout (`h wᵀ`'s would come out transposed and be added to a
/// tied embedding's gradient through a strided read).
pub fn lm_head(h: Tensor<2>, w: Tensor<2>) -> HeadLogits {
    #[cfg(feature = "tch")]
    if FusedOp::LmHead.applies(&h) {
        return HeadLogits {
            logits: libtorch::matmul_nt(h, w),
            vocab_dim: 1,
        };
    }
    lm_head_composed(h, w)
}

/// [`lm_head`] from burn's operations (vocabulary-major).
pub fn lm_head_composed(h: Tensor<2>, w: Tensor<2>) -> HeadLogits {
    HeadLogits {
        logits: w.matmul(h.transpose()),
        vocab_dim: 0,
    }
}

/// `x w + b` for `x` `[n, k]`, `w` `[k, m]` (GPT-2's `Conv1D` layout) and `b` `[m]`.
pub fn linear(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    #[cfg(feature = "tch")]
    if FusedOp::Linear.applies(&x) {
        return libtorch::linear(x, w, b);
    }
    linear_composed(x, w, b)
}

/// [`linear`] from burn's operations.
pub fn linear_composed(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    x.matmul(w) + b.unsqueeze::<2>()
}

/// `softmax(q kᵀ · scale + bias) v` for queries `q` `[b, h, t, dh]`, keys and values
/// `[b, kv, s, dh]` and `bias` `[b, 1, t, s]`, giving `[b, h, t, dh]`.
///
/// Grouped-query attention: `h` is a multiple of `kv` and query head `i` reads key/value head
/// `i / (h / kv)` (transformers' `repeat_kv`), computed by folding each group's queries into
/// one matmul instead of copying keys and values. Scores are scaled in the input dtype, then
/// masked and softmaxed in float32 ([`softmax`]) and cast back, as transformers' eager
/// attention does; for float32 inputs the casts are no-ops.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<4>,
    scale: Option<f64>,
) -> Tensor<4> {
    let [b, h, t, dh] = q.dims();
    let [_, kv, s, _] = k.dims();
    let g = h / kv;
    let dtype = q.dtype();
    let q = q.reshape([b, kv, g * t, dh]);
    let mut scores = q.matmul(k.swap_dims(2, 3));
    if let Some(scale) = scale {
        scores = scores * scale;
    }
    let scores = scores.reshape([b, h, t, s]).cast(FloatDType::F32) + bias;
    let probs = softmax(scores, 3).cast(FloatDType::from(dtype));
    probs
        .reshape([b, kv, g * t, s])
        .matmul(v)
        .reshape([b, h, t, dh])
}

/// GPT-2's attention without a KV cache, from the `c_attn` output `qkv` `[b, t, 3e]` (q, k and
/// v side by side, `n_head` heads each) and the additive mask `bias` `[b, 1, t, t]`, heads
/// merged: `[b, t, e]`. Fused (float32 on libtorch), the backward gives `qkv`'s gradient as one
/// concatenation where burn's three slices give three zero-filled `[b, t, 3e]` tensors.
pub fn self_attention(
    qkv: Tensor<3>,
    bias: Tensor<4>,
    n_head: usize,
    scale: Option<f64>,
) -> Tensor<3> {
    #[cfg(feature = "tch")]
    if FusedOp::Attention.applies(&qkv) && qkv.dtype() == burn::tensor::DType::F32 {
        return libtorch::self_attention(qkv, bias, n_head, scale);
    }
    self_attention_composed(qkv, bias, n_head, scale)
}

/// [`self_attention`] as [`attention`] on q, k and v sliced out of `qkv`.
pub fn self_attention_composed(
    qkv: Tensor<3>,
    bias: Tensor<4>,
    n_head: usize,
    scale: Option<f64>,
) -> Tensor<3> {
    let [b, t, e3] = qkv.dims();
    let e = e3 / 3;
    let dh = e / n_head;
    let split = |i: usize| {
        qkv.clone()
            .slice([0..b, 0..t, i * e..(i + 1) * e])
            .reshape([b, t, n_head, dh])
            .swap_dims(1, 2)
    };
    let (k, v) = (split(1), split(2));
    attention(split(0), k, v, bias, scale)
        .swap_dims(1, 2)
        .reshape([b, t, e])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn the_switch_names_known_operations_only() {
        let names = |s: FusedSet| s.ops().map(FusedOp::name).collect::<Vec<_>>();
        assert!(names(FusedSet::parse("none").unwrap()).is_empty());
        assert!(names(FusedSet::parse("").unwrap()).is_empty());
        assert_eq!(
            names(FusedSet::parse("log_softmax, layer_norm log_softmax").unwrap()),
            ["layer_norm", "log_softmax"]
        );
        let e = FusedSet::parse("layer_norm,flash").unwrap_err();
        assert!(e.contains("`flash`") && e.contains("gelu_tanh"), "{e}");
        assert_eq!(
            FusedSet::all().key(),
            "layer_norm gelu_tanh log_softmax softmax rms_norm lm_head linear attention adam"
        );
        assert_eq!(FusedSet::parse("none").unwrap().key(), "none");
    }

    /// Off libtorch every operation is its composed form, bit for bit.
    #[test]
    fn other_backends_run_the_composed_forms() {
        let device = Device::flex();
        let x = Tensor::<3>::from_data(
            TensorData::new(
                (0..24)
                    .map(|i| (i as f32 * 0.37).sin() * 3.0)
                    .collect::<Vec<_>>(),
                [1, 4, 6],
            ),
            &device,
        );
        let same = |a: Tensor<3>, b: Tensor<3>| assert_eq!(a.into_data(), b.into_data());
        let (w, b) = (
            Tensor::<1>::ones([6], &device) * 1.5,
            Tensor::<1>::ones([6], &device) * 0.25,
        );
        same(
            layer_norm(x.clone(), w.clone(), b.clone(), 1e-5),
            layer_norm_composed(x.clone(), w, b, 1e-5),
        );
        same(gelu_tanh(x.clone()), gelu_tanh_composed(x.clone()));
        same(softmax(x.clone(), 2), softmax_composed(x.clone(), 2));
        same(
            rms_norm(x.clone(), 1e-6),
            rms_norm_composed(x.clone(), 1e-6),
        );
        let qkv = Tensor::<3>::from_data(
            TensorData::new(
                (0..72).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>(),
                [1, 4, 18],
            ),
            &device,
        );
        let bias = Tensor::<4>::zeros([1, 1, 4, 4], &device);
        same(
            self_attention(qkv.clone(), bias.clone(), 2, Some(0.5)),
            self_attention_composed(qkv, bias, 2, Some(0.5)),
        );
    }
}
