//! The ML core of dagrun's stages, on burn 0.22 (generics-free; the backend is the run-time
//! [`burn::tensor::Device`] that a [`DeviceSpec`] names).
//!
//! Map:
//! - [`device`]: `auto|cpu|libtorch-cpu|cuda[:N]` → burn device, checked before work starts.
//! - [`gpt2`]: [`Gpt2Config`] and the [`Gpt2`] model with its [`KvCache`]; [`gpt2_hf`] loads and
//!   exports Hugging Face folders.
//! - [`chat`]: chat templates (`gemma`, `llama3`, `plain`) and their tokenisation.
//! - [`batch`]: padded [`TokenBatch`]es with attention masks.
//! - [`weights`]: named host tensors ↔ safetensors files.
//! - [`rng`]: a checkpointable seeded RNG.
mod error;

pub mod batch;
pub mod chat;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod generate;
pub mod gpt2;
pub mod gpt2_hf;
pub mod grads;
pub mod heads;
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

pub use batch::{Padding, TokenBatch};
pub use device::DeviceSpec;
pub use error::{MlError, Result};
pub use gpt2::{Gpt2, Gpt2Config, KvCache};
