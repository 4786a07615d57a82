//! The tokenizer side of a Hugging Face model folder: `tokenizer.json`, and the two small
//! files transformers reads beside it — `tokenizer_config.json` (what `AutoTokenizer` needs
//! for its special tokens, length limit and chat template) and `generation_config.json`
//! (what `generate` stops at).
//!
//! A model saved from a folder that has them (a Hugging Face download, a dagrun model) gets
//! copies, so a chat template or a list of EOS ids survives training. A model whose
//! tokenizer dagrun trained (the built-in task) gets files written from the tokenizer: its
//! `<|endoftext|>` as BOS, EOS and padding, as GPT-2 uses it.

use std::path::Path;

use serde_json::{json, Value};

use super::tokenizer::{TextTokenizer, EOS_TOKEN};
use crate::ml::{MlError, Result};

/// `tokenizer_config.json`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// `generation_config.json`.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// Copies `tokenizer` (a `tokenizer.json`) into model folder `dir` as `tokenizer.json`, with
/// the `tokenizer_config.json` and `generation_config.json` of its folder when it has them;
/// otherwise writes both from the tokenizer (`max_len`: the model's positions).
pub fn write_tokenizer_files(dir: &Path, tokenizer: &Path, max_len: usize) -> Result<()> {
    let dest = dir.join(crate::ml::models::gpt2_hf::TOKENIZER_FILE);
    if tokenizer != dest {
        crate::files::copy_atomic(tokenizer, &dest).map_err(|e| MlError::io(tokenizer, e))?;
    }
    let source = tokenizer.parent().unwrap_or(Path::new("."));
    let mut tok: Option<TextTokenizer> = None;
    for name in [TOKENIZER_CONFIG_FILE, GENERATION_CONFIG_FILE] {
        let (from, to) = (source.join(name), dir.join(name));
        if from == to && to.is_file() {
            continue;
        }
        if from.is_file() {
            crate::files::copy_atomic(&from, &to).map_err(|e| MlError::io(&from, e))?;
            continue;
        }
        if tok.is_none() {
            tok = Some(TextTokenizer::from_file(&dest)?);
        }
        let t = tok.as_ref().expect("loaded above");
        let value = if name == TOKENIZER_CONFIG_FILE {
            tokenizer_config(t, max_len)
        } else {
            generation_config(t)
        };
        let text = serde_json::to_string_pretty(&value).expect("json") + "\n";
        crate::files::write_atomic(&to, text.as_bytes()).map_err(|e| MlError::io(&to, e))?;
    }
    Ok(())
}

/// `tokenizer_config.json` for a tokenizer without one: a fast tokenizer whose special tokens
/// are its `<|endoftext|>` (when it has it), as GPT-2's are.
fn tokenizer_config(tok: &TextTokenizer, max_len: usize) -> Value {
    let mut v = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
        "add_prefix_space": false,
    });
    if tok.eos_id().is_some() {
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            v[key] = json!(EOS_TOKEN);
        }
    }
    v
}

/// `generation_config.json` for a model without one: stop and pad at `<|endoftext|>`.
fn generation_config(tok: &TextTokenizer) -> Value {
    match tok.eos_id() {
        Some(eos) => json!({"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::io::tokenizer::BpeTrainConfig;

    fn trained(dir: &Path) -> std::path::PathBuf {
        let corpus = ["the movie was good", "the film was bad", "a good film"];
        let tok = TextTokenizer::train_bpe(
            corpus.iter(),
            &BpeTrainConfig {
                vocab_size: 300,
                ..BpeTrainConfig::default()
            },
        )
        .unwrap();
        let path = dir.join("tok/tokenizer.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        tok.save(&path).unwrap();
        path
    }

    fn read(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_trained_tokenizer_gets_both_files_written_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let tok_path = trained(dir.path());
        let eos = TextTokenizer::from_file(&tok_path)
            .unwrap()
            .eos_id()
            .unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        write_tokenizer_files(&model, &tok_path, 64).unwrap();
        assert!(model.join("tokenizer.json").is_file());
        let tc = read(&model.join(TOKENIZER_CONFIG_FILE));
        assert_eq!(tc["eos_token"], EOS_TOKEN);
        assert_eq!(tc["pad_token"], EOS_TOKEN);
        assert_eq!(tc["model_max_length"], 64);
        let gc = read(&model.join(GENERATION_CONFIG_FILE));
        assert_eq!(gc["eos_token_id"], eos);
        assert_eq!(gc["pad_token_id"], eos);
    }

    #[test]
    fn files_beside_the_source_tokenizer_are_copied_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let tok_path = trained(dir.path());
        let src = tok_path.parent().unwrap();
        let own_tc = "{\"chat_template\": \"{{ messages }}\", \"eos_token\": \"<|endoftext|>\"}\n";
        let own_gc = "{\"eos_token_id\": [1, 2]}\n";
        std::fs::write(src.join(TOKENIZER_CONFIG_FILE), own_tc).unwrap();
        std::fs::write(src.join(GENERATION_CONFIG_FILE), own_gc).unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir_all(&model).unwrap();
        write_tokenizer_files(&model, &tok_path, 64).unwrap();
        let text = |n: &str| std::fs::read_to_string(model.join(n)).unwrap();
        assert_eq!(text(TOKENIZER_CONFIG_FILE), own_tc);
        assert_eq!(text(GENERATION_CONFIG_FILE), own_gc);
        // Saving into the folder the tokenizer already lives in keeps its files.
        write_tokenizer_files(src, &tok_path, 64).unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join(GENERATION_CONFIG_FILE)).unwrap(),
            own_gc
        );
    }
}
