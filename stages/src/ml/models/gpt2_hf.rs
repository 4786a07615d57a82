//! Hugging Face folders ↔ [`Gpt2`]: `config.json` + `model.safetensors` (+ `tokenizer.json`).
//!
//! Loading accepts the layouts found in the wild: names with or without the `transformer.`
//! prefix (`GPT2LMHeadModel` vs `GPT2Model` checkpoints), the old `attn.bias` /
//! `attn.masked_bias` buffers (ignored), and an explicit `lm_head.weight` (used when the config
//! unties it, ignored when tied, as transformers does). F16/BF16 weights are widened to f32.
//! Export writes what `GPT2LMHeadModel.save_pretrained` writes: `transformer.`-prefixed F32
//! tensors, `lm_head.weight` only when untied, and a `config.json` with `model_type: gpt2`.

use std::path::Path;

use burn::tensor::{Device, Tensor};

use crate::ml::error::{MlError, Result};
use crate::ml::models::gpt2::{Gpt2, Gpt2Config, WeightSource};
use crate::ml::models::weights::{HostTensor, HostTensors};

/// File names inside a model folder.
pub const CONFIG_FILE: &str = "config.json";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Tokenizer file name.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Read a GPT-2 `config.json`.
pub fn read_config(path: &Path) -> Result<Gpt2Config> {
    let text = std::fs::read_to_string(path).map_err(|e| MlError::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| MlError::json(path, e))?;
    if let Some(kind) = value.get("model_type").and_then(|v| v.as_str()) {
        if kind != "gpt2" {
            return Err(MlError::Config(format!(
                "{}: model_type `{kind}` is not supported (only `gpt2`)",
                path.display()
            )));
        }
    }
    let config: Gpt2Config = serde_json::from_value(value).map_err(|e| MlError::json(path, e))?;
    config.validate()?;
    Ok(config)
}

/// The JSON of `config.json` for `config`, as transformers writes it for GPT-2.
pub fn config_json(config: &Gpt2Config) -> serde_json::Value {
    let mut v = serde_json::to_value(config).expect("config serialises");
    let obj = v.as_object_mut().expect("config is an object");
    obj.insert("model_type".into(), "gpt2".into());
    obj.insert(
        "architectures".into(),
        serde_json::json!(["GPT2LMHeadModel"]),
    );
    obj.insert("torch_dtype".into(), "float32".into());
    // Dropouts are not part of dagrun's GPT-2 (it trains without dropout); state it so that
    // transformers computes the same function in train mode too.
    for key in [
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "summary_first_dropout",
    ] {
        obj.insert(key.into(), 0.0.into());
    }
    v
}

/// Weights by unprefixed name, on a device.
struct FileWeights<'a> {
    tensors: HostTensors,
    device: &'a Device,
}

impl WeightSource for FileWeights<'_> {
    fn get<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        self.tensors.take_tensor(name, shape, self.device)
    }
}

/// Normalise checkpoint names: strip `transformer.`, drop attention buffers, and drop a tied
/// `lm_head.weight`.
fn normalise(mut tensors: HostTensors, config: &Gpt2Config) -> HostTensors {
    let old = std::mem::take(&mut tensors.tensors);
    for (name, t) in old {
        let name = name
            .strip_prefix("transformer.")
            .unwrap_or(&name)
            .to_string();
        let buffer = name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
        let tied_head = name == "lm_head.weight" && config.tie_word_embeddings;
        if !buffer && !tied_head {
            tensors.tensors.insert(name, t);
        }
    }
    tensors
}

impl Gpt2 {
    /// Load a GPT-2 from a Hugging Face style folder (`config.json` + `model.safetensors`).
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config = read_config(&dir.join(CONFIG_FILE))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        if !weights_path.exists() {
            return Err(MlError::Invalid(format!(
                "{}: no {WEIGHTS_FILE} (dagrun reads safetensors weights only; convert \
                 pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))",
                dir.display()
            )));
        }
        let tensors = HostTensors::read(&weights_path)?;
        Self::from_tensors(&config, tensors, device)
    }

    /// Build from named weights (any of the accepted naming layouts); every weight must be used.
    pub fn from_tensors(
        config: &Gpt2Config,
        tensors: HostTensors,
        device: &Device,
    ) -> Result<Self> {
        let mut src = FileWeights {
            tensors: normalise(tensors, config),
            device,
        };
        let model = Gpt2::build(config, &mut src)?;
        if !src.tensors.tensors.is_empty() {
            return Err(MlError::UnexpectedTensors {
                path: src.tensors.path.clone(),
                names: src.tensors.tensors.keys().cloned().collect(),
            });
        }
        Ok(model)
    }

    /// Every weight under its HF name without prefix (`wte.weight`, `h.0.ln_1.weight`, ...).
    pub fn named_weights(&self) -> Vec<(String, HostTensor)> {
        let mut out = vec![
            (
                "wte.weight".to_string(),
                HostTensor::from_tensor(&self.wte.val()),
            ),
            (
                "wpe.weight".to_string(),
                HostTensor::from_tensor(&self.wpe.val()),
            ),
        ];
        let push1 = |out: &mut Vec<_>, name: String, t: Tensor<1>| {
            out.push((name, HostTensor::from_tensor(&t)));
        };
        for (l, block) in self.h.iter().enumerate() {
            let p = format!("h.{l}");
            push1(
                &mut out,
                format!("{p}.ln_1.weight"),
                block.ln_1.weight.val(),
            );
            push1(&mut out, format!("{p}.ln_1.bias"), block.ln_1.bias.val());
            push1(
                &mut out,
                format!("{p}.ln_2.weight"),
                block.ln_2.weight.val(),
            );
            push1(&mut out, format!("{p}.ln_2.bias"), block.ln_2.bias.val());
            for (name, conv) in [
                ("attn.c_attn", &block.attn.c_attn),
                ("attn.c_proj", &block.attn.c_proj),
                ("mlp.c_fc", &block.mlp.c_fc),
                ("mlp.c_proj", &block.mlp.c_proj),
            ] {
                out.push((
                    format!("{p}.{name}.weight"),
                    HostTensor::from_tensor(&conv.weight.val()),
                ));
                push1(&mut out, format!("{p}.{name}.bias"), conv.bias.val());
            }
        }
        push1(&mut out, "ln_f.weight".into(), self.ln_f.weight.val());
        push1(&mut out, "ln_f.bias".into(), self.ln_f.bias.val());
        if let Some(head) = &self.lm_head {
            out.push((
                "lm_head.weight".into(),
                HostTensor::from_tensor(&head.val()),
            ));
        }
        out
    }

    /// The weights as `GPT2LMHeadModel.save_pretrained` names them (`transformer.` prefix).
    pub fn hf_tensors(&self, path: &Path) -> HostTensors {
        let mut set = HostTensors::new(path);
        for (name, t) in self.named_weights() {
            let name = if name == "lm_head.weight" {
                name
            } else {
                format!("transformer.{name}")
            };
            set.tensors.insert(name, t);
        }
        set
    }

    /// Write `config.json` and `model.safetensors` into `dir` (created if needed), and copy
    /// `tokenizer` there as `tokenizer.json` when given: a folder transformers loads.
    pub fn save_hf_dir(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| MlError::io(dir, e))?;
        let config = serde_json::to_string_pretty(&config_json(self.config())).expect("json");
        let config_path = dir.join(CONFIG_FILE);
        crate::files::write_atomic(&config_path, (config + "\n").as_bytes())
            .map_err(|e| MlError::io(&config_path, e))?;
        let weights = dir.join(WEIGHTS_FILE);
        self.hf_tensors(&weights).write(&weights)?;
        if let Some(tok) = tokenizer {
            crate::ml::io::hf_files::write_tokenizer_files(dir, tok, self.config().n_positions)?;
        }
        Ok(())
    }
}
