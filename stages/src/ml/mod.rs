//! The ML core of dagrun's stages, on burn 0.22 (generics-free; the backend is the run-time
//! [`burn::tensor::Device`] that a [`DeviceSpec`] names).
//!
//! Map:
//! - [`device`]: `auto|cpu|libtorch-cpu|cuda[:N]` → burn device, checked before work starts.
//! - [`gpt2`]: [`Gpt2Config`] and the [`Gpt2`] model; [`gpt2_hf`] loads and exports Hugging Face
//!   folders.
//! - [`decoder`]: the Gemma/Llama [`Decoder`](decoder::Decoder); [`decoder_hf`] reads their
//!   Hugging Face configs and (sharded) weights through [`hf_weights`], in f32 or bf16.
//! - [`backbone`]: [`Backbone`](backbone::Backbone) (any of them) and the
//!   [`LanguageModel`](backbone::LanguageModel) trait that log-probs, generation and reward
//!   models use; [`attention`]: the [`KvCache`] and causal attention they share.
//! - [`chat`]: chat templates (`gemma`, `llama3`, `llama3.1`, `plain`) and their tokenisation.
//! - [`batch`]: padded [`TokenBatch`]es with attention masks.
//! - [`weights`]: named host tensors ↔ safetensors files.
//! - [`rng`]: a checkpointable seeded RNG.
mod error;

pub mod attention;
pub mod backbone;
pub mod batch;
pub mod chat;
pub mod checkpoint;
pub mod cli;
pub mod decoder;
pub mod decoder_hf;
pub mod device;
#[cfg(feature = "tch")]
pub mod fused;
pub mod generate;
pub mod gpt2;
pub mod gpt2_hf;
pub mod grads;
pub mod heads;
pub mod hf_weights;
pub mod logprobs;
pub mod optim;
pub mod reward;
pub mod rng;
pub mod sampling;
pub mod schedule;
pub mod tokenizer;
pub mod train_lm;
pub mod value_head;
pub mod weights;

pub use attention::KvCache;
pub use batch::{Padding, TokenBatch};
pub use device::DeviceSpec;
pub use error::{MlError, Result};
pub use gpt2::{Gpt2, Gpt2Config};
