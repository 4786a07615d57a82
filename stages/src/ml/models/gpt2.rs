//! GPT-2 (Radford et al. 2019), the architecture of Hugging Face's `GPT2LMHeadModel`, of any size.
//!
//! Read bottom-up: [`Gpt2Config`] (the fields of HF's `config.json`), the private blocks
//! [`LayerNorm`], [`Conv1D`], [`Attention`], [`Mlp`], [`Block`], then the public [`Gpt2`]. Weights
//! keep Hugging Face's names and layouts (`Conv1D` weights are `[d_in, d_out]`), so loading and
//! exporting (`gpt2_hf.rs`) is a rename-free copy.
//!
//! Attention is written with explicit matmuls and an additive mask (not a fused kernel), so that
//! every backend computes the same function, with or without a [`KvCache`] (`attention.rs`).

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::attention::{extend, KvCache, LayerKv};
use crate::ml::ops;
use crate::ml::rng::SeededRng;

/// GPT-2 hyper-parameters, with Hugging Face's `config.json` names: the same struct reads and
/// writes that file, and serves as a stage's params and fingerprint input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Maximum sequence length (rows of the position embedding).
    pub n_positions: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (`n_embd` must be divisible by it).
    pub n_head: usize,
    /// Width of the MLP's hidden layer; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// MLP activation: `gelu_new` / `gelu_pytorch_tanh` (tanh approximation, GPT-2's), `gelu`
    /// (exact erf), or `relu`.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Whether the LM head is the transposed token embedding (GPT-2 always ties it).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the normal initialisation of weights.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Beginning-of-sequence token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id (stops generation).
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Divide attention scores by sqrt(head_dim) (GPT-2: true).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// HF option that scales attention by 1/(layer+1); only `false` is implemented.
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// HF option for mixed-precision attention; only `false` is implemented.
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}
fn default_init_range() -> f64 {
    0.02
}

impl Gpt2Config {
    /// GPT-2 small (124M parameters), as `gpt2` on the Hugging Face hub.
    pub fn small() -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: default_activation(),
            tie_word_embeddings: true,
            initializer_range: 0.02,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
        }
    }

    /// A tiny GPT-2 for tests: 2 layers, 4 heads, width 32, 64 positions.
    pub fn tiny(vocab_size: usize) -> Self {
        Gpt2Config {
            vocab_size,
            n_positions: 64,
            n_embd: 32,
            n_layer: 2,
            n_head: 4,
            bos_token_id: None,
            eos_token_id: None,
            ..Self::small()
        }
    }

    /// Width of the MLP's hidden layer.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Check the configuration is one this implementation computes faithfully.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MlError::Config(m));
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_layer == 0 {
            return bad("vocab_size, n_positions and n_layer must be positive".into());
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu" | "relu"
        ) {
            return bad(format!(
                "activation_function `{}` is not supported (gelu_new, gelu_pytorch_tanh, gelu, relu)",
                self.activation_function
            ));
        }
        if self.scale_attn_by_inverse_layer_idx || self.reorder_and_upcast_attn {
            return bad(
                "scale_attn_by_inverse_layer_idx and reorder_and_upcast_attn are not supported"
                    .into(),
            );
        }
        Ok(())
    }

    /// Number of parameters of the model this configuration describes.
    pub fn num_params(&self) -> usize {
        let (e, i) = (self.n_embd, self.inner_dim());
        let block = 2 * 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * i + i) + (i * e + e);
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * e
        };
        self.vocab_size * e + self.n_positions * e + self.n_layer * block + 2 * e + head
    }
}

/// Layer normalisation over the last dimension (HF names: `weight`, `bias`).
#[derive(Module, Debug)]
pub(crate) struct LayerNorm {
    pub(crate) weight: Param<Tensor<1>>,
    pub(crate) bias: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl LayerNorm {
    fn new(weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Self {
        LayerNorm {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            eps,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        ops::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// GPT-2's `Conv1D`: `y = x W + b` with `W` stored `[d_in, d_out]`.
#[derive(Module, Debug)]
pub(crate) struct Conv1D {
    pub(crate) weight: Param<Tensor<2>>,
    pub(crate) bias: Param<Tensor<1>>,
}

impl Conv1D {
    fn new(weight: Tensor<2>, bias: Tensor<1>) -> Self {
        Conv1D {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
        }
    }

    pub(crate) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d_in] = x.dims();
        let w = self.weight.val();
        let d_out = w.dims()[1];
        let x = x.reshape([b * t, d_in]);
        ops::linear(x, w, self.bias.val()).reshape([b, t, d_out])
    }
}

/// Causal multi-head self-attention with GPT-2's fused `c_attn` (q, k, v) projection.
#[derive(Module, Debug)]
pub(crate) struct Attention {
    pub(crate) c_attn: Conv1D,
    pub(crate) c_proj: Conv1D,
    #[module(skip)]
    n_head: usize,
    #[module(skip)]
    scale: bool,
}

impl Attention {
    /// `x`: `[b, t, e]`; `bias`: additive mask `[b, 1, t, past + t]`; `slot`: this layer's
    /// keys and values in a KV cache, `None` without one.
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>, slot: Option<&mut LayerKv>) -> Tensor<3> {
        let [b, t, e] = x.dims();
        let (h, dh) = (self.n_head, e / self.n_head);
        let qkv = self.c_attn.forward(x);
        let scale = self.scale.then(|| 1.0 / (dh as f64).sqrt());
        let Some(slot) = slot else {
            // Straight from `qkv` (one fused kernel and backward on libtorch).
            return self
                .c_proj
                .forward(ops::self_attention(qkv, bias, h, scale));
        };
        let split = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, i * e..(i + 1) * e])
                .reshape([b, t, h, dh])
                .swap_dims(1, 2)
        };
        let (k, v) = extend(slot, split(1), split(2));
        let out = ops::attention(split(0), k, v, bias, scale)
            .swap_dims(1, 2)
            .reshape([b, t, e]);
        self.c_proj.forward(out)
    }
}

/// The position-wise feed-forward network.
#[derive(Module, Debug)]
pub(crate) struct Mlp {
    pub(crate) c_fc: Conv1D,
    pub(crate) c_proj: Conv1D,
    #[module(skip)]
    activation: Activation,
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluTanh,
    GeluErf,
    Relu,
}

impl Activation {
    fn from_name(name: &str) -> Self {
        match name {
            "gelu" => Activation::GeluErf,
            "relu" => Activation::Relu,
            _ => Activation::GeluTanh,
        }
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = self.c_fc.forward(x);
        let hidden = match self.activation {
            Activation::GeluTanh => ops::gelu_tanh(hidden),
            Activation::GeluErf => gelu(hidden),
            Activation::Relu => relu(hidden),
        };
        self.c_proj.forward(hidden)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub(crate) struct Block {
    pub(crate) ln_1: LayerNorm,
    pub(crate) attn: Attention,
    pub(crate) ln_2: LayerNorm,
    pub(crate) mlp: Mlp,
}

impl Block {
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>, slot: Option<&mut LayerKv>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), bias, slot);
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// GPT-2 with its language-model head. Parameter names follow Hugging Face
/// (`wte`, `wpe`, `h.N.ln_1.weight`, ..., `ln_f`, optional untied `lm_head`).
#[derive(Module, Debug)]
pub struct Gpt2 {
    pub(crate) wte: Param<Tensor<2>>,
    pub(crate) wpe: Param<Tensor<2>>,
    pub(crate) h: Vec<Block>,
    pub(crate) ln_f: LayerNorm,
    /// Untied LM head `[vocab, n_embd]` (HF layout); `None` when tied to `wte`.
    pub(crate) lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    config: Gpt2Config,
}

/// Source of the initial values of each named weight (random init, or a weights file).
pub(crate) trait WeightSource {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>>;
}

/// GPT-2's initialisation: N(0, initializer_range²) weights, residual projections scaled by
/// 1/sqrt(2·n_layer), zero biases, unit LayerNorm gains; drawn on the host from a seeded
/// ChaCha8 so that every backend starts from identical weights.
struct RandomInit<'a> {
    rng: SeededRng,
    config: &'a Gpt2Config,
    device: &'a Device,
}

impl WeightSource for RandomInit<'_> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let n: usize = shape.iter().product();
        let values = if name.ends_with("ln_1.weight")
            || name.ends_with("ln_2.weight")
            || name.ends_with("ln_f.weight")
        {
            vec![1.0; n]
        } else if D == 1 {
            vec![0.0; n]
        } else {
            let mut std = self.config.initializer_range as f32;
            if name.ends_with("c_proj.weight") {
                std /= (2.0 * self.config.n_layer as f32).sqrt();
            }
            self.rng.normal_vec(n, std)
        };
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }
}

fn layer_norm(src: &mut impl WeightSource, name: &str, e: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        src.get(&format!("{name}.weight"), [e])?,
        src.get(&format!("{name}.bias"), [e])?,
        eps,
    ))
}

fn conv1d(src: &mut impl WeightSource, name: &str, d_in: usize, d_out: usize) -> Result<Conv1D> {
    Ok(Conv1D::new(
        src.get(&format!("{name}.weight"), [d_in, d_out])?,
        src.get(&format!("{name}.bias"), [d_out])?,
    ))
}

impl Gpt2 {
    /// A randomly initialised GPT-2 (see [`RandomInit`]) on `device`.
    pub fn init(config: &Gpt2Config, seed: u64, device: &Device) -> Result<Self> {
        let mut src = RandomInit {
            rng: SeededRng::new(seed),
            config,
            device,
        };
        Self::build(config, &mut src)
    }

    /// Build the module, asking `src` for every weight by its HF name (without prefix).
    pub(crate) fn build(config: &Gpt2Config, src: &mut impl WeightSource) -> Result<Self> {
        config.validate()?;
        let (e, i, v, p) = (
            config.n_embd,
            config.inner_dim(),
            config.vocab_size,
            config.n_positions,
        );
        let eps = config.layer_norm_epsilon;
        let wte = src.get("wte.weight", [v, e])?;
        let wpe = src.get("wpe.weight", [p, e])?;
        let mut h = Vec::with_capacity(config.n_layer);
        for l in 0..config.n_layer {
            let pre = format!("h.{l}");
            h.push(Block {
                ln_1: layer_norm(src, &format!("{pre}.ln_1"), e, eps)?,
                attn: Attention {
                    c_attn: conv1d(src, &format!("{pre}.attn.c_attn"), e, 3 * e)?,
                    c_proj: conv1d(src, &format!("{pre}.attn.c_proj"), e, e)?,
                    n_head: config.n_head,
                    scale: config.scale_attn_weights,
                },
                ln_2: layer_norm(src, &format!("{pre}.ln_2"), e, eps)?,
                mlp: Mlp {
                    c_fc: conv1d(src, &format!("{pre}.mlp.c_fc"), e, i)?,
                    c_proj: conv1d(src, &format!("{pre}.mlp.c_proj"), i, e)?,
                    activation: Activation::from_name(&config.activation_function),
                },
            });
        }
        let ln_f = layer_norm(src, "ln_f", e, eps)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Param::from_tensor(src.get("lm_head.weight", [v, e])?))
        };
        Ok(Gpt2 {
            wte: Param::from_tensor(wte),
            wpe: Param::from_tensor(wpe),
            h,
            ln_f,
            lm_head,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The token embedding `[vocab, n_embd]` (also the tied LM head).
    pub fn token_embedding(&self) -> Tensor<2> {
        self.wte.val()
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.wte.val().device()
    }

    /// Final hidden states (after `ln_f`), `[rows, len, n_embd]`, for the tokens of `batch`.
    ///
    /// With a `cache`, `batch` holds only the new tokens (its mask is appended to the cache's)
    /// and the keys/values of earlier calls are reused; the outputs equal those of one call on
    /// the concatenated tokens.
    pub fn hidden(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        let device = self.device();
        let (b, t) = (batch.rows, batch.len);
        let cached = cache.is_some();
        let mut own = KvCache::new();
        let cache = cache.unwrap_or(&mut own);
        let step = cache.begin(batch, self.h.len(), self.config.n_positions, &device)?;
        let ids = batch.ids_tensor(&device).reshape([b * t]);
        let pos: Tensor<1, Int> =
            Tensor::from_data(TensorData::new(step.positions, [b * t]), &device);
        let e = self.config.n_embd;
        let x = self.wte.val().select(0, ids) + self.wpe.val().select(0, pos);
        let mut x = x.reshape([b, t, e]);
        for (block, slot) in self.h.iter().zip(cache.layers_mut()) {
            x = block.forward(x, step.bias.clone(), cached.then_some(slot));
        }
        Ok(self.ln_f.forward(x))
    }

    /// The LM head's weight `[vocab, e]`: the token embeddings when tied.
    pub fn lm_head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.wte.val(),
        }
    }

    /// Logits over the vocabulary for hidden states `[b, t, e]` → `[b, t, vocab]`.
    pub fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, e] = hidden.dims();
        let head = self.lm_head_weight();
        let v = head.dims()[0];
        hidden
            .reshape([b * t, e])
            .matmul(head.transpose())
            .reshape([b, t, v])
    }

    /// Logits `[rows, len, vocab]` for the tokens of `batch` (see [`Gpt2::hidden`]).
    pub fn forward(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        Ok(self.lm_logits(self.hidden(batch, cache)?))
    }
}
