//! The ML core of dagrun's stages, on burn 0.22 (generics-free; the backend is the run-time
//! [`burn::tensor::Device`] that a [`DeviceSpec`] names). Grouped by what a reader looks for:
//!
//! - [`models`]: the networks and their files — GPT-2 ([`Gpt2`]), the Gemma/Llama/Qwen2
//!   [`Decoder`](models::decoder::Decoder), the [`Backbone`](models::backbone::Backbone) over
//!   both and the [`LanguageModel`](models::backbone::LanguageModel) trait, attention's KV cache,
//!   linear heads, the value head, the [`RewardModel`](models::reward_model::RewardModel);
//!   safetensors and Hugging Face folders (load and export).
//! - [`training`]: Adam/AdamW, schedules, gradients by parameter path, checkpoints, the
//!   causal-LM trainer, and the guard that stops a training whose numbers stop being finite.
//! - [`inference`]: generation with a KV cache, sampling (on the host or the device), log-probs.
//! - [`io`]: text in and out of a model — tokenizers, chat templates, padded [`TokenBatch`]es.
//! - [`reward`]: the one reward-model reader (prompt + response → template → tokens → batched
//!   scores), used by every kind and command that scores text with a reward model.
//! - [`ops`]: tensor operations with libtorch fast paths, one function each.
//! - [`device`], [`rng`] (a checkpointable seeded RNG), [`cli`] (what `dagrun model` computes).
mod error;

pub mod cli;
pub mod device;
pub mod inference;
pub mod io;
pub mod models;
pub mod ops;
pub mod reward;
pub mod rng;
pub mod training;

pub use device::DeviceSpec;
pub use error::{MlError, Result};
pub use io::batch::{Padding, TokenBatch};
pub use models::attention::KvCache;
pub use models::gpt2::{Gpt2, Gpt2Config};
