//! Text in and out of a model: [`tokenizer`] (Hugging Face `tokenizer.json`, byte-level BPE
//! training), [`chat`] (chat templates and how their text is tokenised) and [`batch`] (padded
//! token batches with attention masks).

pub mod batch;
pub mod chat;
pub mod tokenizer;
