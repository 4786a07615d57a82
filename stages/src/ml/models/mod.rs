//! The networks and their files. One file per model, read bottom-up: [`gpt2`] (and
//! [`gpt2_hf`], its Hugging Face folders), [`decoder`] (Gemma 1 / Llama 3; [`decoder_hf`]),
//! [`attention`] (the KV cache and masks both use), [`backbone`] (either, behind the
//! [`LanguageModel`](backbone::LanguageModel) trait), [`heads`] and [`value_head`] (linear
//! heads on hidden states), [`reward_model`] (a backbone plus K heads; [`seq_cls`]: one head
//! of it as a transformers sequence classifier); [`weights`] and
//! [`hf_weights`] move named tensors between the device and safetensors files.

pub mod attention;
pub mod backbone;
pub mod decoder;
pub mod decoder_hf;
pub mod gpt2;
pub mod gpt2_hf;
pub mod heads;
pub mod hf_weights;
pub mod reward_model;
pub mod seq_cls;
pub mod value_head;
pub mod weights;
