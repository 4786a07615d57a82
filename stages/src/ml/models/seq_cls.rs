//! A reward model written as a transformers `*ForSequenceClassification` folder, the format
//! `AutoModelForSequenceClassification.from_pretrained` (and TRL) load: the backbone under
//! the class's names (`model.*` for Gemma/Llama/Qwen2, `transformer.*` for GPT-2), one
//! `score.weight` `[1, hidden]`, a `config.json` naming `XForSequenceClassification` with
//! `num_labels: 1` and a `pad_token_id`, and the tokenizer files (`tokenizer.json`,
//! `tokenizer_config.json` with the chat template the reward model reads with,
//! `generation_config.json`).
//!
//! The one head is chosen by [`ScoreHead`]: the model's only head, one member of an
//! ensemble, or the ensemble mean (the mean of K linear heads is the linear head of their
//! mean weights and bias, so this is exact).
//!
//! transformers' `score` has no bias, so the head's bias is dropped: the exported model's
//! reward is dagrun's minus that constant (returned in [`SeqClsExport::dropped_bias`]).
//! Bradley–Terry rewards are defined up to a shift, so preferences, rankings and reward
//! differences are unchanged; only the absolute value moves by the bias.
//!
//! Pooling: transformers scores the hidden state of the rightmost token that is not
//! `pad_token_id`; dagrun's heads score the last real token. They agree whenever a scored
//! text does not end in the pad token: the pad id written is the model's own (a classifier
//! that dagrun loaded keeps its `pad_token_id`), else the config's, else its first EOS id,
//! else the tokenizer's `<|endoftext|>`; a reward model's input never ends in an EOS (the
//! reader drops the one that closed a response), except an empty text read as EOS alone.

use std::path::Path;

use serde_json::{json, Value};

use crate::ml::error::{MlError, Result};
use crate::ml::io::chat::ChatTemplate;
use crate::ml::io::hf_files::{write_tokenizer_files, TOKENIZER_CONFIG_FILE};
use crate::ml::io::tokenizer::TextTokenizer;
use crate::ml::models::backbone::Backbone;
use crate::ml::models::decoder_hf;
use crate::ml::models::gpt2_hf::{self, CONFIG_FILE, TOKENIZER_FILE};
use crate::ml::models::hf_weights::{write_streaming, NamedTensor, WEIGHTS_FILE};
use crate::ml::models::reward_model::{Pooling, RewardModel};
use crate::ml::models::weights::{to_f32_vec, HostTensor};

/// Which single head the exported classifier scores with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreHead {
    /// The model's only head (an error when it has several).
    Only,
    /// Head `k` of the ensemble (counted from 0).
    Member(usize),
    /// The mean of all heads, as one linear head.
    Mean,
}

impl std::fmt::Display for ScoreHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScoreHead::Only => f.write_str("the only head"),
            ScoreHead::Member(k) => write!(f, "head {k}"),
            ScoreHead::Mean => f.write_str("the mean of the heads"),
        }
    }
}

/// What [`save_seq_cls`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqClsExport {
    /// `architectures[0]` of the written `config.json`.
    pub architecture: String,
    /// The `pad_token_id` written (transformers pools at the last token that is not it).
    pub pad_token_id: u32,
    /// The bias of the chosen head, left out (the exported reward is dagrun's minus it).
    pub dropped_bias: f32,
    /// The chat template written into `tokenizer_config.json` (`plain` writes none).
    pub chat_template: String,
}

/// The chosen head of `model` as `(weights [hidden], bias)`.
pub fn single_head(model: &RewardModel, head: ScoreHead) -> Result<(Vec<f32>, f32)> {
    let k = model.heads.num_heads();
    let e = model.heads.n_embd();
    // `weight` is [hidden, K]: column k is head k.
    let w = to_f32_vec(model.heads.weight.val());
    let b = to_f32_vec(model.heads.bias.val());
    let column = |j: usize| -> Vec<f32> { (0..e).map(|i| w[i * k + j]).collect() };
    match head {
        ScoreHead::Only if k == 1 => Ok((column(0), b[0])),
        ScoreHead::Only => Err(MlError::Invalid(format!(
            "the reward model has {k} heads: choose one (a member, 0..{k}) or their mean"
        ))),
        ScoreHead::Member(j) if j < k => Ok((column(j), b[j])),
        ScoreHead::Member(j) => Err(MlError::Invalid(format!(
            "head {j} does not exist: the reward model has {k} head(s), 0..{k}"
        ))),
        ScoreHead::Mean => {
            let weights = (0..e)
                .map(|i| {
                    let row = &w[i * k..(i + 1) * k];
                    (row.iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
                })
                .collect();
            let bias = (b.iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32;
            Ok((weights, bias))
        }
    }
}

/// Writes the reward model loaded from `source` (a dagrun reward-model folder or a
/// classifier, read with `template`) as a `*ForSequenceClassification` folder `dir` scoring
/// with `head`. The backbone keeps its dtype.
pub fn save_seq_cls(
    model: &RewardModel,
    source: &Path,
    template: &ChatTemplate,
    dir: &Path,
    head: ScoreHead,
) -> Result<SeqClsExport> {
    let (weights, bias) = single_head(model, head)?;
    let tok_path = source.join(TOKENIZER_FILE);
    let tok = TextTokenizer::from_file(&tok_path)?;
    std::fs::create_dir_all(dir).map_err(|e| MlError::io(dir, e))?;
    let hidden = weights.len();
    let (architecture, pad, max_len) = match &model.backbone {
        Backbone::Decoder(d) => {
            let config = d.config();
            let family = match config.model_type.as_str() {
                "gemma" => "Gemma",
                "qwen2" => "Qwen2",
                "llama" => "Llama",
                other => {
                    return Err(MlError::Invalid(format!(
                        "{}: no sequence-classifier export for model_type `{other}`",
                        source.display()
                    )))
                }
            };
            let pad = pad_id(
                model.pooling(),
                config.pad_token_id,
                &config.eos_token_ids,
                &tok,
            );
            let arch = format!("{family}ForSequenceClassification");
            let mut json = decoder_hf::config_json(config, false, d.dtype());
            classifier_config(&mut json, &arch, pad);
            write_json(&dir.join(CONFIG_FILE), &json)?;
            // The backbone under `model.`, no LM head, then the score row in the model's dtype.
            let device = d.device();
            let score = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(weights, [1, hidden]),
                &device,
            )
            .cast(burn::tensor::FloatDType::from(d.dtype().dtype()));
            let mut tensors: Vec<NamedTensor> = d
                .named_tensors()
                .into_iter()
                .filter_map(|t| match t {
                    NamedTensor::Rank2(n, _) if n == "lm_head.weight" => None,
                    NamedTensor::Rank1(n, t) => Some(NamedTensor::Rank1(format!("model.{n}"), t)),
                    NamedTensor::Rank2(n, t) => Some(NamedTensor::Rank2(format!("model.{n}"), t)),
                })
                .collect();
            tensors.push(NamedTensor::Rank2("score.weight".into(), score));
            write_streaming(&dir.join(WEIGHTS_FILE), &tensors, d.dtype())?;
            (arch, pad, config.max_position_embeddings)
        }
        Backbone::Gpt2(g) => {
            let pad = pad_id(model.pooling(), None, &[], &tok);
            let arch = "GPT2ForSequenceClassification".to_string();
            let mut json = gpt2_hf::config_json(g.config());
            classifier_config(&mut json, &arch, pad);
            write_json(&dir.join(CONFIG_FILE), &json)?;
            let path = dir.join(WEIGHTS_FILE);
            let mut set = g.hf_tensors(&path);
            set.tensors.remove("lm_head.weight");
            set.tensors.insert(
                "score.weight".into(),
                HostTensor {
                    shape: vec![1, hidden],
                    values: weights,
                },
            );
            set.write(&path)?;
            (arch, pad, g.config().n_positions)
        }
    };
    write_tokenizer_files(dir, &tok_path, max_len)?;
    // The chat template the reward model reads with, for `apply_chat_template`.
    let tc_path = dir.join(TOKENIZER_CONFIG_FILE);
    let text = std::fs::read_to_string(&tc_path).map_err(|e| MlError::io(&tc_path, e))?;
    let mut tc: Value = serde_json::from_str(&text).map_err(|e| MlError::json(&tc_path, e))?;
    if let (Some(src), Some(obj)) = (template.source(), tc.as_object_mut()) {
        obj.insert("chat_template".into(), src.into());
    }
    if let (Ok(pad_text), Some(obj)) = (tok.decode(&[pad]), tc.as_object_mut()) {
        obj.entry("pad_token").or_insert(pad_text.into());
    }
    write_json(&tc_path, &tc)?;
    Ok(SeqClsExport {
        architecture,
        pad_token_id: pad,
        dropped_bias: bias,
        chat_template: template.to_string(),
    })
}

/// The pad id the classifier's config declares (see the module docs for the order).
fn pad_id(pooling: Pooling, config_pad: Option<u32>, eos: &[u32], tok: &TextTokenizer) -> u32 {
    match pooling {
        Pooling::LastNonPad(Some(p)) => p,
        _ => config_pad
            .or_else(|| eos.first().copied())
            .unwrap_or_else(|| tok.pad_id()),
    }
}

/// A causal-LM config turned into a one-label classifier's.
fn classifier_config(json: &mut Value, arch: &str, pad: u32) {
    let obj = json.as_object_mut().expect("a config is an object");
    obj.insert("architectures".into(), json!([arch]));
    obj.insert("num_labels".into(), 1.into());
    obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
    obj.insert("label2id".into(), json!({"LABEL_0": 0}));
    obj.insert("pad_token_id".into(), pad.into());
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("json") + "\n";
    crate::files::write_atomic(path, text.as_bytes()).map_err(|e| MlError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::models::heads::LinearHeads;
    use burn::tensor::{Device, Tensor, TensorData};

    fn model(k: usize) -> RewardModel {
        let device = Device::flex();
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
        let backbone = crate::ml::Gpt2::from_hf_dir(&dir, &device).unwrap();
        let e = backbone.config().n_embd;
        let w: Vec<f32> = (0..e * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k).map(|j| j as f32 + 0.5).collect();
        let heads = LinearHeads::from_tensors(
            Tensor::from_data(TensorData::new(w, [e, k]), &device),
            Tensor::from_data(TensorData::new(b, [k]), &device),
        );
        RewardModel::new(backbone, heads).unwrap()
    }

    #[test]
    fn a_single_head_is_a_column_a_member_or_the_mean() {
        let one = model(1);
        let (w, b) = single_head(&one, ScoreHead::Only).unwrap();
        assert_eq!(b, 0.5);
        assert_eq!(w[..3], [-3.0, -2.0, -1.0]);
        let three = model(3);
        let e = single_head(&three, ScoreHead::Only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 heads"), "{e}");
        let e = single_head(&three, ScoreHead::Member(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("head 3 does not exist"), "{e}");
        // weight [e, 3], row i = (3i, 3i+1, 3i+2) mod 7 − 3.
        let (w1, b1) = single_head(&three, ScoreHead::Member(1)).unwrap();
        assert_eq!((w1[0], w1[1], b1), (-2.0, 1.0, 1.5));
        let (wm, bm) = single_head(&three, ScoreHead::Mean).unwrap();
        assert_eq!(bm, 1.5);
        assert!((wm[0] - (-3.0 + -2.0 + -1.0) / 3.0).abs() < 1e-6);
        assert!((wm[1] - (0.0 + 1.0 + 2.0) / 3.0).abs() < 1e-6);
    }
}
