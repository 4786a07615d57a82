//! A pre-norm decoder-only transformer with RMSNorm, a gated MLP, rotary embeddings and
//! grouped-query attention: the architecture of Hugging Face's `LlamaForCausalLM` (Llama 3),
//! `GemmaForCausalLM` (Gemma 1) and `Qwen2ForCausalLM` (Qwen2, Qwen2.5), which differ only in
//! the switches of [`DecoderConfig`]:
//!
//! | switch                 | Llama 3                 | Gemma 1                              | Qwen2 / Qwen2.5          |
//! |------------------------|-------------------------|--------------------------------------|--------------------------|
//! | `norm_weight_offset`   | false: `w · x̂`          | true: `(1 + w) · x̂` (float32 product) | false                    |
//! | `hidden_act`           | `silu` (SwiGLU)         | `gelu_pytorch_tanh` (GeGLU)          | `silu`                   |
//! | `scale_embeddings`     | false                   | true: `× √hidden_size` (in the dtype) | false                    |
//! | `tie_word_embeddings`  | per config (8B: false)  | true                                 | per config (≤3B: true)   |
//! | `qkv_bias`             | false                   | false                                | true (o_proj: no bias)   |
//! | `rope_theta`           | 500000                  | 10000                                | 1000000 (Qwen2.5)        |
//! | `rope_scaling`         | `llama3` (3.1+), or none| none                                 | none                     |
//! | `sliding_window`       | none                    | none                                 | none unless `use_sliding_window` |
//! | `num_key_value_heads`  | 8 of 32 (GQA)           | 1 (MQA, 2B)                          | 2 of 14 (0.5B)           |
//!
//! Sliding-window attention (Qwen2 with `use_sliding_window: true`: layers from
//! `max_window_layers` on attend to the last `sliding_window` positions only) is not
//! implemented: such a model runs while a sequence (cached tokens included, padding counted)
//! is no longer than the window, where the windowed mask equals the full causal one, and a
//! longer sequence is refused with an error naming the window. Released Qwen2.5 configs set
//! `use_sliding_window: false`.
//!
//! Read bottom-up: [`DecoderConfig`], [`Rope`], the private blocks [`RmsNorm`], [`Linear`],
//! [`Attention`], [`Mlp`], [`Block`], then the public [`Decoder`]. Parameter names and layouts
//! are Hugging Face's (`model.layers.N.self_attn.q_proj.weight` `[out, in]`, ...); loading from
//! a folder is in `decoder_hf.rs`.
//!
//! Precision: weights are float32 or bfloat16 ([`WeightDtype`]). In bfloat16 the matmuls and
//! residual stream are bfloat16 while RMSNorm, the softmax of attention and the MLP activation
//! are computed in float32 and rounded back, where transformers does so; logits are returned as
//! float32. Attention is explicit matmuls with an additive mask (`attention.rs`).

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::attention::{extend, KvCache, LayerKv};
use crate::ml::models::hf_weights::{NamedTensor, WeightDtype};
use crate::ml::models::weights::HostTensors;
use crate::ml::ops::attention as attend;

/// Llama 3.1's frequency-dependent rope scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3RopeScaling {
    /// Divisor of the low frequencies (8 for Llama 3.1).
    pub factor: f64,
    /// Wavelengths above `original / low_freq_factor` are divided by `factor` (1).
    pub low_freq_factor: f64,
    /// Wavelengths below `original / high_freq_factor` are kept (4).
    pub high_freq_factor: f64,
    /// Context length of pre-training (8192).
    pub original_max_position_embeddings: f64,
}

/// Hyper-parameters of a [`Decoder`], normalised from a Gemma, Llama or Qwen2 `config.json`
/// (`decoder_hf.rs`); the same struct is serialised as dagrun's description of the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecoderConfig {
    /// `model_type` of the source config (`llama`, `gemma`, `qwen2`).
    pub model_type: String,
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the gated MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads per block.
    pub num_attention_heads: usize,
    /// Key/value heads per block (divides `num_attention_heads`; 1 = multi-query).
    pub num_key_value_heads: usize,
    /// Width of one head (Gemma-2B: 256 with hidden 2048 and 8 heads).
    pub head_dim: usize,
    /// Longest sequence accepted.
    pub max_position_embeddings: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Llama 3.1 rope scaling; `None` for plain rotary embeddings.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// MLP gate activation: `silu` or `gelu_pytorch_tanh`.
    pub hidden_act: String,
    /// RMSNorm gains are stored as offsets from 1 (Gemma).
    pub norm_weight_offset: bool,
    /// Token embeddings are multiplied by √hidden_size, rounded to the weights' dtype (Gemma).
    pub scale_embeddings: bool,
    /// The LM head is the token embedding.
    pub tie_word_embeddings: bool,
    /// q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// q/k/v projections have biases even when `attention_bias` is false (Qwen2).
    #[serde(default)]
    pub qkv_bias: bool,
    /// The attention window of the layers that use one (Qwen2 with `use_sliding_window`);
    /// `None` when every layer attends to the whole sequence. Sequences longer than the window
    /// are refused (see the module docs).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// The layers that use `sliding_window` (Qwen2: from `max_window_layers` on, or those
    /// `layer_types` names `sliding_attention`); empty when it is `None`.
    #[serde(default)]
    pub sliding_layers: Vec<usize>,
    /// MLP projections have biases.
    pub mlp_bias: bool,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (the first one stops generation).
    pub eos_token_ids: Vec<u32>,
    /// Padding token id (sequence classifiers pool at the last token that is not it).
    pub pad_token_id: Option<u32>,
}

impl DecoderConfig {
    /// Check the configuration is one this implementation computes faithfully.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::Config(format!("{} config: {m}", self.model_type)));
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.max_position_embeddings,
        ];
        if sizes.contains(&0) {
            return bad("sizes, layer and head counts must be positive".into());
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window must be positive".into());
        }
        if self.sliding_window.is_some() == self.sliding_layers.is_empty()
            || self
                .sliding_layers
                .iter()
                .any(|&l| l >= self.num_hidden_layers)
        {
            return bad(format!(
                "sliding window {:?} on layers {:?} of {}",
                self.sliding_window, self.sliding_layers, self.num_hidden_layers
            ));
        }
        if !matches!(self.hidden_act.as_str(), "silu" | "gelu_pytorch_tanh") {
            return bad(format!(
                "hidden_act `{}` is not supported (silu, gelu_pytorch_tanh)",
                self.hidden_act
            ));
        }
        Ok(())
    }

    /// The rotary inverse frequencies, `head_dim / 2` of them, as transformers computes them
    /// in float32 (`1 / θ^(2i/d)`, then Llama 3.1's scaling).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        (0..d / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / d as f32;
                let f = 1.0 / (self.rope_theta as f32).powf(exponent);
                match &self.rope_scaling {
                    None => f,
                    Some(s) => llama3_scale(f as f64, s) as f32,
                }
            })
            .collect()
    }

    /// Number of parameters of the model this configuration describes (without a score head).
    pub fn num_params(&self) -> usize {
        let (e, i) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let ab = match (self.attention_bias, self.qkv_bias) {
            (true, _) => q + 2 * kv + e,
            (false, true) => q + 2 * kv,
            (false, false) => 0,
        };
        let mb = if self.mlp_bias { 2 * i + e } else { 0 };
        let block = 2 * e + e * q + 2 * e * kv + q * e + ab + 3 * e * i + mb;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * e
        };
        self.vocab_size * e + self.num_hidden_layers * block + e + head
    }
}

/// transformers' `_compute_llama3_parameters` for one inverse frequency.
fn llama3_scale(f: f64, s: &Llama3RopeScaling) -> f64 {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let wavelen = 2.0 * std::f64::consts::PI / f;
    if wavelen < high_wavelen {
        f
    } else if wavelen > low_wavelen {
        f / s.factor
    } else {
        let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
            / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * f / s.factor + smooth * f
    }
}

/// Rotary tables for the tokens of one forward pass: `cos`, `sin` `[b, 1, t, head_dim]`.
struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// Tables for `positions` (row-major `[b, t]`), computed as transformers does: angle
    /// `pos · inv_freq` in float32, duplicated over both halves, then cast to `dtype`.
    fn new(
        inv_freq: &[f32],
        positions: &[i64],
        [b, t]: [usize; 2],
        dtype: WeightDtype,
        device: &Device,
    ) -> Self {
        let d = 2 * inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * d);
        let mut sin = Vec::with_capacity(b * t * d);
        for &p in positions {
            for _half in 0..2 {
                for &f in inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let table = |v: Vec<f32>| {
            Tensor::from_data(TensorData::new(v, [b, 1, t, d]), (device, dtype.dtype()))
        };
        Rope {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// `x · cos + rotate_half(x) · sin` for `x` `[b, heads, t, head_dim]`.
    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// Root-mean-square normalisation over the last dimension, computed in float32.
#[derive(Module, Debug)]
pub(crate) struct RmsNorm {
    pub(crate) weight: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
    #[module(skip)]
    offset: bool,
}

impl RmsNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let dtype = FloatDType::from(x.dtype());
        let x = x.cast(FloatDType::F32);
        self.weigh(crate::ml::ops::rms_norm(x, self.eps), dtype)
    }

    /// The normalised float32 `normed` times the weight, in the input's `dtype`.
    fn weigh(&self, normed: Tensor<3>, dtype: FloatDType) -> Tensor<3> {
        let w = self.weight.val().unsqueeze::<3>();
        if self.offset {
            // Gemma: (x̂ · (1 + w)) in float32, then rounded.
            (normed * (w.cast(FloatDType::F32) + 1.0)).cast(dtype)
        } else {
            // Llama: x̂ rounded first, then multiplied by w in the weights' dtype.
            normed.cast(dtype) * w
        }
    }
}

/// `y = x Wᵀ (+ b)` with `W` stored `[out, in]` (PyTorch's `nn.Linear`).
#[derive(Module, Debug)]
pub(crate) struct Linear {
    pub(crate) weight: Param<Tensor<2>>,
    pub(crate) bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let w = self.weight.val();
        let d_out = w.dims()[0];
        let mut y = x.reshape([b * t, d_in]).matmul(w.transpose());
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<2>();
        }
        y.reshape([b, t, d_out])
    }
}

/// Causal grouped-query self-attention with rotary embeddings on queries and keys.
#[derive(Module, Debug)]
pub(crate) struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    kv_heads: usize,
    #[module(skip)]
    head_dim: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>, rope: &Rope, slot: &mut LayerKv) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let dh = self.head_dim;
        let split = |y: Tensor<3>, h: usize| y.reshape([b, t, h, dh]).swap_dims(1, 2);
        let q = rope.apply(split(self.q_proj.forward(x.clone()), self.heads));
        let k = rope.apply(split(self.k_proj.forward(x.clone()), self.kv_heads));
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let (k, v) = extend(slot, k, v);
        let out = attend(q, k, v, bias, Some(1.0 / (dh as f64).sqrt()));
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, self.heads * dh]))
    }
}

/// The gated MLP: `down(act(gate(x)) · up(x))`, the activation in float32.
#[derive(Module, Debug)]
pub(crate) struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
    #[module(skip)]
    gelu: bool,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone());
        let dtype = FloatDType::from(gate.dtype());
        let gate = gate.cast(FloatDType::F32);
        let act = if self.gelu {
            crate::ml::ops::gelu_tanh(gate)
        } else {
            silu(gate)
        };
        self.down_proj
            .forward(act.cast(dtype) * self.up_proj.forward(x))
    }
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub(crate) struct Block {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: Attention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
}

impl Block {
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>, rope: &Rope, slot: &mut LayerKv) -> Tensor<3> {
        let h = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), bias, rope, slot);
        let x = x + h;
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// Source of each named weight (HF names without the `model.` prefix, e.g.
/// `layers.0.self_attn.q_proj.weight`, plus `lm_head.weight`).
pub(crate) trait DecoderWeights {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>>;
}

/// Which output head the decoder carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmHead {
    /// The LM head per `tie_word_embeddings` (tied, or `lm_head.weight`).
    FromConfig,
    /// No untied LM head (a sequence classifier's backbone); a tied one is still available.
    None,
}

/// A Gemma/Llama/Qwen2 decoder. Parameter names follow Hugging Face (`embed_tokens`, `layers`,
/// `norm`, optional untied `lm_head`).
#[derive(Module, Debug)]
pub struct Decoder {
    pub(crate) embed_tokens: Param<Tensor<2>>,
    pub(crate) layers: Vec<Block>,
    pub(crate) norm: RmsNorm,
    /// Untied LM head `[vocab, hidden]`; `None` when tied or absent.
    pub(crate) lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    config: DecoderConfig,
    #[module(skip)]
    inv_freq: Vec<f32>,
    #[module(skip)]
    dtype: WeightDtype,
}

impl Decoder {
    /// Build the module, asking `src` for every weight by its HF name (no `model.` prefix).
    pub(crate) fn build(
        config: &DecoderConfig,
        head: LmHead,
        dtype: WeightDtype,
        src: &mut impl DecoderWeights,
    ) -> Result<Self> {
        config.validate()?;
        let (e, i, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let (q, kv) = (
            config.num_attention_heads * config.head_dim,
            config.num_key_value_heads * config.head_dim,
        );
        let norm = |src: &mut dyn FnMut(&str) -> Result<Tensor<1>>, name: &str| {
            Ok::<_, MlError>(RmsNorm {
                weight: Param::from_tensor(src(&format!("{name}.weight"))?),
                eps: config.rms_norm_eps,
                offset: config.norm_weight_offset,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("layers.{l}");
            let mut get1 = |name: &str| src.get(name, [e]);
            let input_layernorm = norm(&mut get1, &format!("{p}.input_layernorm"))?;
            let post_attention_layernorm =
                norm(&mut get1, &format!("{p}.post_attention_layernorm"))?;
            let mut linear = |name: &str, d_in: usize, d_out: usize, with_bias: bool| {
                Ok::<_, MlError>(Linear {
                    weight: Param::from_tensor(
                        src.get(&format!("{p}.{name}.weight"), [d_out, d_in])?,
                    ),
                    bias: if with_bias {
                        Some(Param::from_tensor(
                            src.get(&format!("{p}.{name}.bias"), [d_out])?,
                        ))
                    } else {
                        None
                    },
                })
            };
            let ab = config.attention_bias;
            let qkvb = ab || config.qkv_bias;
            let mb = config.mlp_bias;
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", e, q, qkvb)?,
                k_proj: linear("self_attn.k_proj", e, kv, qkvb)?,
                v_proj: linear("self_attn.v_proj", e, kv, qkvb)?,
                o_proj: linear("self_attn.o_proj", q, e, ab)?,
                heads: config.num_attention_heads,
                kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", e, i, mb)?,
                up_proj: linear("mlp.up_proj", e, i, mb)?,
                down_proj: linear("mlp.down_proj", i, e, mb)?,
                gelu: config.hidden_act == "gelu_pytorch_tanh",
            };
            layers.push(Block {
                input_layernorm,
                self_attn,
                post_attention_layernorm,
                mlp,
            });
        }
        let embed_tokens = Param::from_tensor(src.get("embed_tokens.weight", [v, e])?);
        let norm = norm(&mut |name| src.get(name, [e]), "norm")?;
        let lm_head = match head {
            LmHead::FromConfig if !config.tie_word_embeddings => {
                Some(Param::from_tensor(src.get("lm_head.weight", [v, e])?))
            }
            _ => None,
        };
        Ok(Decoder {
            embed_tokens,
            layers,
            norm,
            lm_head,
            config: config.clone(),
            inv_freq: config.inv_freq(),
            dtype,
        })
    }

    /// Every weight under its HF name without the `model.` prefix (`embed_tokens.weight`,
    /// `layers.0.self_attn.q_proj.weight`, ..., `norm.weight`, and `lm_head.weight` if untied).
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = vec![NamedTensor::Rank2(
            "embed_tokens.weight".into(),
            self.embed_tokens.val(),
        )];
        let linear = |out: &mut Vec<NamedTensor>, name: String, l: &Linear| {
            out.push(NamedTensor::Rank2(format!("{name}.weight"), l.weight.val()));
            if let Some(b) = &l.bias {
                out.push(NamedTensor::Rank1(format!("{name}.bias"), b.val()));
            }
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("layers.{i}");
            for (name, norm) in [
                ("input_layernorm", &layer.input_layernorm),
                ("post_attention_layernorm", &layer.post_attention_layernorm),
            ] {
                out.push(NamedTensor::Rank1(
                    format!("{p}.{name}.weight"),
                    norm.weight.val(),
                ));
            }
            let a = &layer.self_attn;
            let m = &layer.mlp;
            for (name, l) in [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ] {
                linear(&mut out, format!("{p}.{name}"), l);
            }
        }
        out.push(NamedTensor::Rank1(
            "norm.weight".into(),
            self.norm.weight.val(),
        ));
        if let Some(head) = &self.lm_head {
            out.push(NamedTensor::Rank2("lm_head.weight".into(), head.val()));
        }
        out
    }

    /// A decoder of this one's configuration, head and dtype with the weights of `set` (named
    /// as [`Decoder::named_tensors`] names them: a training checkpoint), on `device`. A
    /// missing or misshapen tensor, or one left unused, is an error naming it.
    pub fn with_host_weights(&self, set: HostTensors, device: &Device) -> Result<Self> {
        struct Host<'a> {
            set: HostTensors,
            dtype: WeightDtype,
            device: &'a Device,
        }
        impl DecoderWeights for Host<'_> {
            fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
                let t = self.set.take_tensor(name, shape, self.device)?;
                Ok(match self.dtype {
                    WeightDtype::F32 => t,
                    WeightDtype::Bf16 => t.cast(FloatDType::BF16),
                })
            }
        }
        let head = if self.lm_head.is_some() {
            LmHead::FromConfig
        } else {
            LmHead::None
        };
        let mut src = Host {
            set,
            dtype: self.dtype,
            device,
        };
        let model = Decoder::build(&self.config, head, self.dtype, &mut src)?;
        if !src.set.tensors.is_empty() {
            return Err(MlError::UnexpectedTensors {
                path: src.set.path.clone(),
                names: src.set.tensors.keys().cloned().collect(),
            });
        }
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The dtype of the weights and of the computation.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed_tokens.val().device()
    }

    /// Whether [`Decoder::lm_logits`] is available (tied, or an untied head was loaded).
    pub fn has_lm_head(&self) -> bool {
        self.config.tie_word_embeddings || self.lm_head.is_some()
    }

    /// Final hidden states (after the last norm), `[rows, len, hidden]`, in the weights' dtype.
    ///
    /// With a `cache`, `batch` holds only the new tokens and the keys/values of earlier calls
    /// are reused; the outputs equal those of one call on the concatenated tokens.
    pub fn hidden(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        let device = self.device();
        let (b, t) = (batch.rows, batch.len);
        let mut own = KvCache::new();
        let cache = cache.unwrap_or(&mut own);
        if let Some(window) = self.config.sliding_window {
            let total = cache.seen() + t;
            if total > window {
                return Err(MlError::Invalid(format!(
                    "this {} model uses sliding-window attention (window {window}, \
                     `use_sliding_window: true`), which dagrun does not implement: a sequence \
                     of {total} tokens (padding and cached tokens included) exceeds the window",
                    self.config.model_type
                )));
            }
        }
        let step = cache.begin(
            batch,
            self.layers.len(),
            self.config.max_position_embeddings,
            &device,
        )?;
        let rope = Rope::new(&self.inv_freq, &step.positions, [b, t], self.dtype, &device);
        let e = self.config.hidden_size;
        let ids = batch.ids_tensor(&device).reshape([b * t]);
        let mut x = self.embed_tokens.val().select(0, ids).reshape([b, t, e]);
        if self.config.scale_embeddings {
            // transformers multiplies by √hidden_size cast to the weights' dtype.
            x = x * self.dtype.round((e as f32).sqrt());
        }
        for (layer, slot) in self.layers.iter().zip(cache.layers_mut()) {
            x = layer.forward(x, step.bias.clone(), &rope, slot);
        }
        Ok(self.norm.forward(x))
    }

    /// The LM head's matrix `[vocab, hidden]`: the untied head, or the token embedding when
    /// tied; an error when the model has none.
    pub fn lm_head_weight(&self) -> Result<Tensor<2>> {
        Ok(match (&self.lm_head, self.config.tie_word_embeddings) {
            (Some(w), _) => w.val(),
            (None, true) => self.embed_tokens.val(),
            (None, false) => {
                return Err(MlError::Invalid(format!(
                    "this {} model has no LM head (a sequence classifier's backbone, untied \
                     embeddings): it cannot compute token log-probs",
                    self.config.model_type
                )))
            }
        })
    }

    /// Float32 logits over the vocabulary for hidden states `[b, t, hidden]`.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Result<Tensor<3>> {
        let head = self.lm_head_weight()?;
        let [b, t, e] = hidden.dims();
        let v = head.dims()[0];
        Ok(hidden
            .reshape([b * t, e])
            .matmul(head.transpose())
            .reshape([b, t, v])
            .cast(FloatDType::F32))
    }

    /// Logits `[rows, len, vocab]` (float32) for the tokens of `batch`.
    pub fn forward(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        self.lm_logits(self.hidden(batch, cache)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_smooths_between() {
        let s = Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let two_pi = 2.0 * std::f64::consts::PI;
        // wavelength 1000 < 8192/4: unchanged; 10000 > 8192: divided by 8.
        assert_eq!(llama3_scale(two_pi / 1000.0, &s), two_pi / 1000.0);
        assert_eq!(llama3_scale(two_pi / 10000.0, &s), two_pi / 10000.0 / 8.0);
        // wavelength 4096: smooth = (8192/4096 - 1)/3 = 1/3 → (2/3)/8 + 1/3 of f.
        let f = two_pi / 4096.0;
        let got = llama3_scale(f, &s);
        assert!((got - f * (2.0 / 3.0 / 8.0 + 1.0 / 3.0)).abs() < 1e-15);
    }
}
