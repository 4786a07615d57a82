//! What `dagrun model ...` computes, as pure functions returning JSON: the binary parses
//! flags and prints; these load a model folder, run it, and build the answer.
//!
//! - [`logprobs`]: `{"ids": [...], "token_logprobs": [...], "sum_logprob": x}` — the log-prob
//!   of every token after the first, given its prefix. The text is tokenized as transformers'
//!   `tokenizer(text)` does, with the special tokens its post-processor adds (Gemma's `<bos>`,
//!   Llama 3's `<|begin_of_text|>`; none for GPT-2); so is a prompt for [`generate`].
//! - [`generate`]: `{"ids": [...], "text": "..."}` — the prompt's ids followed by the generated
//!   ones, and the decoded text of all of them.
//! - [`reward`]: `{"rewards": [...], "mean": x, "variance": y}` — per-head rewards of a
//!   prompt and a response, read as every kind reads them ([`super::reward`]: the chat
//!   template its folder implies, no truncation), their mean and sample variance (ddof 1).
//! - [`export_classifier`]: a reward model written as a transformers
//!   `*ForSequenceClassification` folder (one head: a member or the mean;
//!   [`super::models::seq_cls`]).
//!
//! A model folder is a Hugging Face folder with a `tokenizer.json`: GPT-2, Gemma, Llama or
//! Qwen2 (detected from `config.json`, weights single-file or sharded, loaded in the given
//! [`WeightDtype`]). A reward model folder is one of those plus dagrun's heads, or a Gemma/Llama/Qwen2
//! `*ForSequenceClassification` folder (see [`super::models::reward_model`]).

use std::path::Path;

use serde_json::{json, Value};

use super::device::DeviceSpec;
use super::error::{MlError, Result};
use super::inference::generate::{generate as generate_ids, GenerateConfig};
use super::inference::logprobs::token_logprobs_rows;
use super::inference::sampling::SamplingConfig;
use super::io::tokenizer::TextTokenizer;
use super::models::backbone::Backbone;
use super::models::decoder_hf::stop_ids;
use super::models::gpt2_hf::TOKENIZER_FILE;
use super::models::hf_weights::WeightDtype;
use super::reward::{Exchange, RewardReader};
use super::rng::SeededRng;
use super::TokenBatch;
use crate::stats::mean_var;

/// Options of [`generate`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// Greedy or sampling settings.
    pub sampling: SamplingConfig,
    /// Seed of the sampler (irrelevant for greedy).
    pub seed: u64,
    /// Device to run on.
    pub device: DeviceSpec,
    /// Stop at any `eos_token_id` of the folder's `generation_config.json` or `config.json`
    /// (Llama-3-Instruct: `<|end_of_text|>` and `<|eot_id|>`) or the tokenizer's
    /// `<|endoftext|>` (kept in the output).
    pub stop_at_eos: bool,
    /// Dtype of the weights and the computation.
    #[serde(default)]
    pub dtype: WeightDtype,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: SamplingConfig::default(),
            seed: 0,
            device: DeviceSpec::Auto,
            stop_at_eos: true,
            dtype: WeightDtype::F32,
        }
    }
}

/// The tokenizer of a model folder.
pub fn load_tokenizer(model_dir: &Path) -> Result<TextTokenizer> {
    let path = model_dir.join(TOKENIZER_FILE);
    if !path.exists() {
        return Err(MlError::Invalid(format!(
            "{}: no {TOKENIZER_FILE} (the model folder needs its tokenizer)",
            model_dir.display()
        )));
    }
    TextTokenizer::from_file(&path)
}

/// Per-token log-probs of `text` under the model in `model_dir`.
pub fn logprobs(
    model_dir: &Path,
    text: &str,
    device: DeviceSpec,
    dtype: WeightDtype,
) -> Result<Value> {
    let device = device.resolve()?;
    let tok = load_tokenizer(model_dir)?;
    let ids = tok.encode_with_special_tokens(text)?;
    if ids.is_empty() {
        return Err(MlError::Invalid("the text encodes to no tokens".into()));
    }
    let model = Backbone::from_hf_dir(model_dir, &device, dtype)?;
    let lp =
        token_logprobs_rows(&model, &TokenBatch::unpadded(std::slice::from_ref(&ids))?)?.remove(0);
    let sum: f64 = lp.iter().map(|&x| x as f64).sum();
    Ok(json!({"ids": ids, "token_logprobs": lp, "sum_logprob": sum}))
}

/// Continue `prompt` with the model in `model_dir`.
pub fn generate(model_dir: &Path, prompt: &str, opts: &GenerateOptions) -> Result<Value> {
    opts.sampling.validate()?;
    let device = opts.device.resolve()?;
    let tok = load_tokenizer(model_dir)?;
    let ids = tok.encode_with_special_tokens(prompt)?;
    if ids.is_empty() {
        return Err(MlError::Invalid("the prompt encodes to no tokens".into()));
    }
    let model = Backbone::from_hf_dir(model_dir, &device, opts.dtype)?;
    let stop_ids = stop_ids(model_dir, &tok)?;
    let config = GenerateConfig {
        max_new_tokens: opts.max_new_tokens,
        sampling: opts.sampling.clone(),
        stop_ids: if opts.stop_at_eos {
            stop_ids
        } else {
            Vec::new()
        },
        pad_id: tok.pad_id(),
    };
    let out = generate_ids(&model, &[ids], &config, &mut SeededRng::new(opts.seed))?;
    let all = &out.sequences[0];
    Ok(json!({"ids": all, "text": tok.decode(all)?}))
}

/// Per-head rewards of `prompt` ⊕ `response` under the reward model in `model_dir`.
pub fn reward(
    model_dir: &Path,
    prompt: &str,
    response: &str,
    device: DeviceSpec,
    dtype: WeightDtype,
) -> Result<Value> {
    let device = device.resolve()?;
    let reader = RewardReader::load(model_dir, &device, dtype, None, usize::MAX, 1)?;
    let scores = reader.score(&[Exchange::pair(prompt, response)])?;
    let heads: Vec<f64> = scores.row(0).iter().map(|&x| x as f64).collect();
    let (mean, variance) = mean_var(&heads, 1);
    Ok(json!({"rewards": scores.row(0), "mean": mean, "variance": variance}))
}

/// Writes the reward model `model_dir` as a transformers `*ForSequenceClassification` folder
/// `out` scoring with `head` ([`super::models::seq_cls`]). JSON: `{"out", "architecture",
/// "head", "pad_token_id", "dropped_bias", "chat_template"}`.
pub fn export_classifier(
    model_dir: &Path,
    out: &Path,
    head: super::models::seq_cls::ScoreHead,
    device: DeviceSpec,
    dtype: WeightDtype,
) -> Result<Value> {
    let device = device.resolve()?;
    let reader = RewardReader::load(model_dir, &device, dtype, None, usize::MAX, 1)?;
    let e = super::models::seq_cls::save_seq_cls(
        reader.model(),
        model_dir,
        reader.input().template(),
        out,
        head,
    )?;
    Ok(json!({
        "out": out.display().to_string(),
        "architecture": e.architecture,
        "head": head.to_string(),
        "pad_token_id": e.pad_token_id,
        "dropped_bias": e.dropped_bias,
        "chat_template": e.chat_template,
    }))
}

/// The text of each token id (for human-readable output).
pub fn token_strings(model_dir: &Path, ids: &[u32]) -> Result<Vec<String>> {
    let tok = load_tokenizer(model_dir)?;
    ids.iter().map(|&id| tok.decode(&[id])).collect()
}
