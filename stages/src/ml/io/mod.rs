//! Text in and out of a model: [`tokenizer`] (Hugging Face `tokenizer.json`, byte-level BPE
//! training), [`chat`] (chat templates and how their text is tokenised) and [`batch`] (padded
//! token batches with attention masks); [`hf_files`] writes the tokenizer side of a model
//! folder (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`).

pub mod batch;
pub mod chat;
pub mod hf_files;
pub mod tokenizer;
