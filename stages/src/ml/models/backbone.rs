//! Every transformer dagrun runs, behind one type: [`Backbone`] (GPT-2, or the Gemma/Llama/Qwen2
//! [`Decoder`]) and the [`LanguageModel`] trait that log-probs, generation and reward models
//! are written against.
//!
//! [`Backbone::from_hf_dir`] detects the architecture from `config.json` (`model_type`:
//! `gpt2`, `llama`, `gemma`, `qwen2`) and loads the folder in the requested [`WeightDtype`] (GPT-2:
//! float32 only).

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::attention::KvCache;
use crate::ml::models::decoder::{Decoder, LmHead};
use crate::ml::models::decoder_hf::{decoder_config, load_decoder, model_kind};
use crate::ml::models::gpt2::Gpt2;
use crate::ml::models::gpt2_hf::CONFIG_FILE;
use crate::ml::models::hf_weights::{NamedTensor, WeightDtype};
use crate::ml::models::weights::{HostTensor, HostTensors};

/// A causal transformer: hidden states, LM logits, KV-cache decoding.
pub trait LanguageModel: Module {
    /// Final hidden states `[rows, len, hidden]` (see [`Gpt2::hidden`]; same cache contract).
    fn hidden_states(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>>;
    /// Float32 logits `[b, t, vocab]` of hidden states.
    fn logits(&self, hidden: Tensor<3>) -> Result<Tensor<3>>;
    /// Logits of the tokens of `batch`.
    fn logits_of(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        self.logits(self.hidden_states(batch, cache)?)
    }
    /// The device of the weights.
    fn device(&self) -> Device;
    /// Width of the hidden states.
    fn hidden_size(&self) -> usize;
    /// Longest sequence accepted.
    fn max_positions(&self) -> usize;
}

impl LanguageModel for Gpt2 {
    fn hidden_states(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        self.hidden(batch, cache)
    }
    fn logits(&self, hidden: Tensor<3>) -> Result<Tensor<3>> {
        Ok(self.lm_logits(hidden))
    }
    fn device(&self) -> Device {
        Gpt2::device(self)
    }
    fn hidden_size(&self) -> usize {
        self.config().n_embd
    }
    fn max_positions(&self) -> usize {
        self.config().n_positions
    }
}

impl LanguageModel for Decoder {
    fn hidden_states(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        self.hidden(batch, cache)
    }
    fn logits(&self, hidden: Tensor<3>) -> Result<Tensor<3>> {
        self.lm_logits(hidden)
    }
    fn device(&self) -> Device {
        Decoder::device(self)
    }
    fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }
    fn max_positions(&self) -> usize {
        self.config().max_position_embeddings
    }
}

/// GPT-2 or a Gemma/Llama/Qwen2 decoder.
#[derive(Module, Debug)]
pub enum Backbone {
    /// GPT-2 (`gpt2.rs`).
    Gpt2(Gpt2),
    /// Gemma 1 or Llama 3 (`decoder.rs`).
    Decoder(Decoder),
}

impl From<Gpt2> for Backbone {
    fn from(m: Gpt2) -> Self {
        Backbone::Gpt2(m)
    }
}

impl From<Decoder> for Backbone {
    fn from(m: Decoder) -> Self {
        Backbone::Decoder(m)
    }
}

impl Backbone {
    /// Load a Hugging Face folder (`config.json` + safetensors), detecting the architecture.
    /// A sequence classifier's folder loads as its backbone (the `score` head is left to
    /// [`crate::ml::models::reward_model::RewardModel::load`]).
    pub fn from_hf_dir(dir: &Path, device: &Device, dtype: WeightDtype) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let (kind, value) = model_kind(&config_path)?;
        match kind.model_type.as_str() {
            "gpt2" => {
                if dtype != WeightDtype::F32 {
                    return Err(MlError::Config(format!(
                        "{}: GPT-2 loads in f32 only (bf16 is implemented for llama, gemma and qwen2)",
                        dir.display()
                    )));
                }
                Ok(Backbone::Gpt2(Gpt2::from_hf_dir(dir, device)?))
            }
            _ => {
                let config = decoder_config(&value, &config_path)?;
                // Classifiers and headless `*Model` checkpoints carry no (untied) LM head.
                let head = if kind.seq_cls_labels.is_some() || kind.headless {
                    LmHead::None
                } else {
                    LmHead::FromConfig
                };
                // A classifier's score head stays unread here; RewardModel::load reads it.
                let keep: &[&str] = if kind.seq_cls_labels.is_some() {
                    &["score.weight"]
                } else {
                    &[]
                };
                let loaded = load_decoder(dir, &config, head, dtype, device, keep)?;
                Ok(Backbone::Decoder(loaded.model))
            }
        }
    }

    /// A causal LM to generate from and train (a policy): the folder loaded as
    /// [`Backbone::from_hf_dir`] does, refusing one without an LM head (a sequence
    /// classifier, a headless `*Model` with untied embeddings) with an error naming it.
    pub fn causal_lm_from_hf_dir(dir: &Path, device: &Device, dtype: WeightDtype) -> Result<Self> {
        let model = Self::from_hf_dir(dir, device, dtype)?;
        if let Backbone::Decoder(d) = &model {
            if !d.has_lm_head() {
                return Err(MlError::Invalid(format!(
                    "{}: this {} folder has no LM head (a sequence classifier or a headless \
                     model with untied embeddings), so it cannot be a policy: give a \
                     `*ForCausalLM` folder",
                    dir.display(),
                    d.config().model_type
                )));
            }
        }
        Ok(model)
    }

    /// The Hugging Face `model_type` (`gpt2`, `llama`, `gemma`, `qwen2`).
    pub fn model_type(&self) -> &str {
        match self {
            Backbone::Gpt2(_) => "gpt2",
            Backbone::Decoder(d) => &d.config().model_type,
        }
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        match self {
            Backbone::Gpt2(m) => m.config().n_layer,
            Backbone::Decoder(d) => d.config().num_hidden_layers,
        }
    }

    /// Every weight on the host (widened to f32) under its Hugging Face name without the
    /// model prefix: the names a training checkpoint stores.
    pub fn named_weights(&self) -> Vec<(String, HostTensor)> {
        match self {
            Backbone::Gpt2(m) => m.named_weights(),
            Backbone::Decoder(d) => d
                .named_tensors()
                .into_iter()
                .map(|t| match t {
                    NamedTensor::Rank1(n, t) => (n, HostTensor::from_tensor(&t)),
                    NamedTensor::Rank2(n, t) => (n, HostTensor::from_tensor(&t)),
                })
                .collect(),
        }
    }

    /// A model of this one's architecture, configuration and dtype with the weights of `set`
    /// (named as [`Backbone::named_weights`] names them), on `device`.
    pub fn with_weights(&self, set: HostTensors, device: &Device) -> Result<Self> {
        Ok(match self {
            Backbone::Gpt2(m) => Backbone::Gpt2(Gpt2::from_tensors(m.config(), set, device)?),
            Backbone::Decoder(d) => Backbone::Decoder(d.with_host_weights(set, device)?),
        })
    }

    /// The LM head's matrix `[vocab, hidden]` (the token embedding when tied), for the
    /// training path's vocabulary-major log-probs.
    pub fn lm_head_weight(&self) -> Result<Tensor<2>> {
        match self {
            Backbone::Gpt2(m) => Ok(m.lm_head_weight()),
            Backbone::Decoder(d) => d.lm_head_weight(),
        }
    }

    /// Float32 logits `[rows, len, vocab]` of the tokens of `batch` ([`LanguageModel::logits_of`]).
    pub fn forward(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        self.logits_of(batch, cache)
    }

    /// Write the backbone as a Hugging Face folder (GPT-2 in f32; a decoder in its dtype,
    /// as `*ForCausalLM`, or as `*Model` when it has no LM head).
    pub fn save_hf_dir(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
        match self {
            Backbone::Gpt2(m) => m.save_hf_dir(dir, tokenizer),
            Backbone::Decoder(d) => d.save_hf_dir(dir, tokenizer),
        }
    }
}

impl LanguageModel for Backbone {
    fn hidden_states(&self, batch: &TokenBatch, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        match self {
            Backbone::Gpt2(m) => m.hidden(batch, cache),
            Backbone::Decoder(m) => m.hidden(batch, cache),
        }
    }
    fn logits(&self, hidden: Tensor<3>) -> Result<Tensor<3>> {
        match self {
            Backbone::Gpt2(m) => Ok(m.lm_logits(hidden)),
            Backbone::Decoder(m) => m.lm_logits(hidden),
        }
    }
    fn device(&self) -> Device {
        match self {
            Backbone::Gpt2(m) => Gpt2::device(m),
            Backbone::Decoder(m) => Decoder::device(m),
        }
    }
    fn hidden_size(&self) -> usize {
        match self {
            Backbone::Gpt2(m) => LanguageModel::hidden_size(m),
            Backbone::Decoder(m) => LanguageModel::hidden_size(m),
        }
    }
    fn max_positions(&self) -> usize {
        match self {
            Backbone::Gpt2(m) => LanguageModel::max_positions(m),
            Backbone::Decoder(m) => LanguageModel::max_positions(m),
        }
    }
}
