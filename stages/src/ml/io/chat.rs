//! Chat templates: a conversation (`[{role, content}]`, roles `system`/`user`/`assistant`)
//! rendered as the text a model was trained on, then tokenised the way Hugging Face's
//! `apply_chat_template(messages, tokenize=True)` does.
//!
//! | template | for `model_type`                         | text |
//! |----------|------------------------------------------|------|
//! | `gemma`  | `gemma`, `gemma2`, `gemma3`, `gemma3_text` | `<bos><start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n…<end_of_turn>\n` |
//! | `llama3` | `llama`                                  | `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>…` |
//! | `llama3.1` | `llama` whose `tokenizer_config.json` template writes a knowledge-cutoff header | `llama3`'s, after a system turn that always comes first: `Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n` + the system message, if any |
//! | `plain`  | `gpt2`                                   | no markup: the texts dagrun's GPT-2 reward models train on |
//!
//! As in the published templates (google/gemma-2b-it, meta-llama/Meta-Llama-3-8B-Instruct,
//! meta-llama/Llama-3.1-8B-Instruct),
//! message contents are trimmed of surrounding whitespace, and nothing follows the last
//! message (no generation prompt: a reward model reads a finished conversation).
//!
//! - **System messages.** Gemma has no system role: the template of Gemma 1 and 2 raises an
//!   error on one. dagrun follows Gemma 3's template instead, for every Gemma: a leading
//!   system message becomes a prefix of the first user turn, followed by a blank line
//!   (`<start_of_turn>user\nSYSTEM\n\nUSER<end_of_turn>`). Llama-3 has a `system` turn;
//!   Llama-3.1's template always writes one, its dated header followed by the (trimmed)
//!   system message or nothing. A system message anywhere but first is an error for all;
//!   `plain` writes it as `System: …`.
//! - **Llama-3.1's date.** Its template writes `Today Date: ` and a `date_string` that
//!   defaults to `26 Jul 2024`; dagrun writes that default (a rendering must not change with
//!   the day it runs: cached results depend on it). Llama-3.2's and 3.3's templates put
//!   today's date there instead when the renderer offers one (`strftime_now`, which
//!   transformers does): `llama3.1` matches them as rendered with `date_string="26 Jul 2024"`.
//! - **Alternation.** Gemma's template requires user/assistant/user/… (after the optional
//!   system message) and so does dagrun's; Llama-3's does not check, nor does dagrun.
//! - **BOS.** `gemma` and `llama3` write the BOS token as text at the start, as Hugging Face's
//!   templates do (`{{ bos_token }}`), and [`ChatTemplate::encode`] then tokenises *without*
//!   adding special tokens, as `apply_chat_template(tokenize=True)` does: exactly one BOS.
//!   (Tokenising the rendered text again with the tokenizer's default post-processor would
//!   add a second one.) The BOS strings are the models' own (`<bos>`, `<|begin_of_text|>`);
//!   a tokenizer without them as single tokens is rejected ([`ChatTemplate::check_tokenizer`]),
//!   which catches a template forced onto the wrong model.
//! - **`plain`** is the text the built-in pipeline trains GPT-2 reward models on: a prompt
//!   and its response joined by one space (none when either side has whitespace at the
//!   join); earlier turns as `data::records::render_conversation` writes them. No BOS.
//!
//! `scripts/make_chat_fixtures.py` writes Hugging Face's own outputs for these templates
//! into `tests/fixtures/chat/`; the tests below compare against them.

use std::path::Path;

use crate::data::{records::render_conversation, Message};
use crate::ml::error::{MlError, Result};
use crate::ml::io::tokenizer::TextTokenizer;

/// A chat template (see the module docs).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// Gemma (1, 2 and 3) instruction-tuned models.
    Gemma,
    /// Llama-3 instruct models.
    Llama3,
    /// Llama-3.1 (and later) instruct models: a dated system turn first.
    #[serde(rename = "llama3.1")]
    Llama31,
    /// No markup (GPT-2 and the built-in task).
    Plain,
}

impl std::fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ChatTemplate {
    type Err = MlError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gemma" => Ok(ChatTemplate::Gemma),
            "llama3" => Ok(ChatTemplate::Llama3),
            "llama3.1" => Ok(ChatTemplate::Llama31),
            "plain" => Ok(ChatTemplate::Plain),
            _ => Err(MlError::Invalid(format!(
                "unknown chat template `{s}` (known: gemma, llama3, llama3.1, plain)"
            ))),
        }
    }
}

impl ChatTemplate {
    /// The template's name (`gemma`, `llama3`, `llama3.1`, `plain`).
    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::Gemma => "gemma",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Llama31 => "llama3.1",
            ChatTemplate::Plain => "plain",
        }
    }

    /// The template of a Hugging Face `model_type`; other model types need the template
    /// named explicitly.
    pub fn for_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "gpt2" => Ok(ChatTemplate::Plain),
            "gemma" | "gemma2" | "gemma3" | "gemma3_text" => Ok(ChatTemplate::Gemma),
            "llama" => Ok(ChatTemplate::Llama3),
            other => Err(MlError::Invalid(format!(
                "no chat template known for model_type `{other}` (known: gpt2 → plain, \
                 gemma/gemma2/gemma3 → gemma, llama → llama3); name one explicitly"
            ))),
        }
    }

    /// The template of a model folder, from the `model_type` of its `config.json`; for
    /// `llama`, `llama3.1` when the folder's `tokenizer_config.json` has a chat template with
    /// Llama-3.1's dated system header.
    pub fn for_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| MlError::json(&path, e))?;
        match v.get("model_type").and_then(serde_json::Value::as_str) {
            Some(t) => match Self::for_model_type(t) {
                Ok(ChatTemplate::Llama3) if dated_llama_template(dir)? => Ok(ChatTemplate::Llama31),
                Ok(t) => Ok(t),
                Err(e) => Err(MlError::Invalid(format!("{}: {e}", path.display()))),
            },
            None => Err(MlError::Invalid(format!(
                "{}: no `model_type`; name the chat template explicitly",
                path.display()
            ))),
        }
    }

    /// The template a model reads pairs with: `chosen` when given (checked against the
    /// tokenizer), else the one its folder's `model_type` implies, or `plain` when the
    /// tokenizer lacks that template's special tokens (a base model, or a test model with a
    /// small vocabulary, has no chat format to follow).
    pub fn for_model(dir: &Path, tok: &TextTokenizer, chosen: Option<Self>) -> Result<Self> {
        if let Some(t) = chosen {
            t.check_tokenizer(tok)?;
            return Ok(t);
        }
        let t = Self::for_model_dir(dir)?;
        Ok(if t.check_tokenizer(tok).is_ok() {
            t
        } else {
            ChatTemplate::Plain
        })
    }

    /// The BOS text the template writes first, if any.
    pub fn bos_token(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::Gemma => Some("<bos>"),
            ChatTemplate::Llama3 | ChatTemplate::Llama31 => Some("<|begin_of_text|>"),
            ChatTemplate::Plain => None,
        }
    }

    /// The special tokens the template writes (each must be one token of the tokenizer).
    pub fn special_tokens(&self) -> &'static [&'static str] {
        match self {
            ChatTemplate::Gemma => &["<bos>", "<start_of_turn>", "<end_of_turn>"],
            ChatTemplate::Llama3 | ChatTemplate::Llama31 => &[
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
            ChatTemplate::Plain => &[],
        }
    }

    /// Renders a conversation as text.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        if messages.is_empty() {
            return Err(MlError::Invalid("an empty conversation".into()));
        }
        for (i, m) in messages.iter().enumerate() {
            match m.role.as_str() {
                "user" | "assistant" => {}
                "system" if i == 0 => {}
                "system" => {
                    return Err(MlError::Invalid(format!(
                        "message {i}: a system message must come first"
                    )))
                }
                other => {
                    return Err(MlError::Invalid(format!(
                        "message {i}: unknown role `{other}` (expected system, user or assistant)"
                    )))
                }
            }
        }
        Ok(match self {
            ChatTemplate::Gemma => {
                let (system, turns) = match messages.split_first() {
                    Some((s, rest)) if s.role == "system" => (Some(s), rest),
                    _ => (None, messages),
                };
                let mut out = String::from("<bos>");
                for (i, m) in turns.iter().enumerate() {
                    let expected = if i.is_multiple_of(2) {
                        "user"
                    } else {
                        "assistant"
                    };
                    if m.role != expected {
                        return Err(MlError::Invalid(format!(
                            "the gemma template needs turns alternating user/assistant/…; \
                             turn {i} is `{}`",
                            m.role
                        )));
                    }
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        "user"
                    };
                    out += "<start_of_turn>";
                    out += role;
                    out += "\n";
                    if let (0, Some(s)) = (i, system) {
                        // Gemma 3: the system text is not trimmed, the user's is.
                        out += &s.content;
                        out += "\n\n";
                    }
                    out += m.content.trim();
                    out += "<end_of_turn>\n";
                }
                out
            }
            ChatTemplate::Llama3 | ChatTemplate::Llama31 => {
                let mut out = String::from("<|begin_of_text|>");
                let mut turns = messages;
                if *self == ChatTemplate::Llama31 {
                    let system = match messages.split_first() {
                        Some((s, rest)) if s.role == "system" => {
                            turns = rest;
                            s.content.trim()
                        }
                        _ => "",
                    };
                    out += "<|start_header_id|>system<|end_header_id|>\n\n";
                    out += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
                    out += system;
                    out += "<|eot_id|>";
                }
                for m in turns {
                    out += "<|start_header_id|>";
                    out += &m.role;
                    out += "<|end_header_id|>\n\n";
                    out += m.content.trim();
                    out += "<|eot_id|>";
                }
                out
            }
            ChatTemplate::Plain => match messages.split_last() {
                Some((last, before)) if last.role == "assistant" && !before.is_empty() => {
                    plain_join(&render_conversation(before), &last.content)
                }
                _ => render_conversation(messages),
            },
        })
    }

    /// Renders a prompt and a response as a user turn and an assistant turn.
    pub fn render_pair(&self, prompt: &str, response: &str) -> Result<String> {
        self.render(&[
            Message::new("user", prompt),
            Message::new("assistant", response),
        ])
    }

    /// Checks that every special token the template writes is one token of `tok`.
    pub fn check_tokenizer(&self, tok: &TextTokenizer) -> Result<()> {
        for &s in self.special_tokens() {
            let ids = tok.encode(s)?;
            let single = ids.len() == 1 && tok.decode(&ids)? == s;
            if !single {
                return Err(MlError::Invalid(format!(
                    "the chat template `{self}` writes `{s}`, which this tokenizer does not \
                     know as one token: is it the model's template?"
                )));
            }
        }
        Ok(())
    }

    /// Token ids of rendered text: no special tokens are added (the template wrote the BOS
    /// itself), as `apply_chat_template(tokenize=True)` does.
    pub fn encode_text(&self, tok: &TextTokenizer, text: &str) -> Result<Vec<u32>> {
        tok.encode(text)
    }

    /// Renders and tokenises a conversation.
    pub fn encode(&self, tok: &TextTokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode_text(tok, &self.render(messages)?)
    }
}

/// Does the folder's `tokenizer_config.json` carry a chat template with Llama-3.1's dated
/// system header? (No file or no template: no.) The template is a string, or a list of
/// named ones of which `default` is the chat template.
fn dated_llama_template(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| MlError::json(&path, e))?;
    let template = match v.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.as_str()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(serde_json::Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(serde_json::Value::as_str),
        _ => None,
    };
    Ok(template.is_some_and(|t| t.contains("Cutting Knowledge Date")))
}

/// A prompt and a response as one text (the rule dagrun's GPT-2 reward models train with).
fn plain_join(prompt: &str, response: &str) -> String {
    if prompt.is_empty()
        || response.is_empty()
        || prompt.ends_with(char::is_whitespace)
        || response.starts_with(char::is_whitespace)
    {
        format!("{prompt}{response}")
    } else {
        format!("{prompt} {response}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat")
    }

    fn conv(pairs: &[(&str, &str)]) -> Vec<Message> {
        pairs.iter().map(|(r, c)| Message::new(r, c)).collect()
    }

    #[test]
    fn templates_render_the_documented_strings() {
        let c = conv(&[("user", "Hi there"), ("assistant", " Hello! ")]);
        assert_eq!(
            ChatTemplate::Gemma.render(&c).unwrap(),
            "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        );
        assert_eq!(
            ChatTemplate::Llama3.render(&c).unwrap(),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        );
        // plain: the training texts of the built-in pipeline (no space added before a
        // response that starts with one).
        assert_eq!(ChatTemplate::Plain.render(&c).unwrap(), "Hi there Hello! ");
        let s = conv(&[("system", "Be brief."), ("user", "Hi"), ("assistant", "Yo")]);
        assert_eq!(
            ChatTemplate::Gemma.render(&s).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>\n"
        );
        assert_eq!(
            ChatTemplate::Plain.render(&s).unwrap(),
            "System: Be brief.\n\nUser: Hi Yo"
        );
        // Llama-3.1: the dated system turn, with the system message or empty.
        let header = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
                      Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
        assert_eq!(
            ChatTemplate::Llama31.render(&s).unwrap(),
            format!(
                "{header}Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi\
                 <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>"
            )
        );
        assert!(ChatTemplate::Llama31
            .render(&c)
            .unwrap()
            .starts_with(&format!("{header}<|eot_id|><|start_header_id|>user")));
        let late = conv(&[("user", "Hi"), ("system", "Be brief.")]);
        assert!(ChatTemplate::Llama31.render(&late).is_err());
    }

    /// `plain` joins a prompt and a response with one space unless either side already has
    /// whitespace at the join (the text dagrun's GPT-2 reward models train on).
    #[test]
    fn plain_joins_with_one_space() {
        for (p, r, want) in [
            ("the movie", "was great", "the movie was great"),
            ("the movie ", "was great", "the movie was great"),
            ("the movie", " was great", "the movie was great"),
            ("", "was great", "was great"),
            ("the movie", "", "the movie"),
        ] {
            assert_eq!(ChatTemplate::Plain.render_pair(p, r).unwrap(), want);
        }
    }

    #[test]
    fn bad_conversations_are_errors() {
        let late_system = conv(&[("user", "a"), ("system", "b")]);
        for t in [
            ChatTemplate::Gemma,
            ChatTemplate::Llama3,
            ChatTemplate::Plain,
        ] {
            let e = t.render(&late_system).unwrap_err().to_string();
            assert!(e.contains("system message must come first"), "{e}");
            let e = t.render(&conv(&[("tool", "x")])).unwrap_err().to_string();
            assert!(e.contains("unknown role `tool`"), "{e}");
            assert!(t.render(&[]).is_err());
        }
        let e = ChatTemplate::Gemma
            .render(&conv(&[("assistant", "a"), ("user", "b")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("alternating"), "{e}");
        // Llama-3's template does not check alternation.
        assert!(ChatTemplate::Llama3
            .render(&conv(&[("assistant", "a"), ("user", "b")]))
            .is_ok());
    }

    #[test]
    fn model_types_choose_templates() {
        assert_eq!(
            ChatTemplate::for_model_type("gpt2").unwrap(),
            ChatTemplate::Plain
        );
        assert_eq!(
            ChatTemplate::for_model_type("gemma2").unwrap(),
            ChatTemplate::Gemma
        );
        assert_eq!(
            ChatTemplate::for_model_type("llama").unwrap(),
            ChatTemplate::Llama3
        );
        let e = ChatTemplate::for_model_type("mistral")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mistral`"), "{e}");
        assert_eq!(
            "llama3".parse::<ChatTemplate>().unwrap(),
            ChatTemplate::Llama3
        );
        assert!("chatml".parse::<ChatTemplate>().is_err());
        assert_eq!(
            "llama3.1".parse::<ChatTemplate>().unwrap(),
            ChatTemplate::Llama31
        );
        assert_eq!(
            serde_json::to_string(&ChatTemplate::Llama31).unwrap(),
            r#""llama3.1""#
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gemma"}"#).unwrap();
        assert_eq!(
            ChatTemplate::for_model_dir(dir.path()).unwrap(),
            ChatTemplate::Gemma
        );
        // Llama: 3.1 when the tokenizer's chat template writes the dated header (as a
        // string, or as the `default` of named templates), else 3.
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
        let config = dir.path().join("tokenizer_config.json");
        let dated = "{{- \"Cutting Knowledge Date: December 2023\\n\" }}";
        for (text, want) in [
            (None, ChatTemplate::Llama3),
            (
                Some(r#"{"chat_template": "{{ bos_token }}"}"#.to_string()),
                ChatTemplate::Llama3,
            ),
            (
                Some(serde_json::json!({"chat_template": dated}).to_string()),
                ChatTemplate::Llama31,
            ),
            (
                Some(
                    serde_json::json!({"chat_template": [
                        {"name": "tool_use", "template": "x"},
                        {"name": "default", "template": dated}
                    ]})
                    .to_string(),
                ),
                ChatTemplate::Llama31,
            ),
        ] {
            match &text {
                Some(t) => std::fs::write(&config, t).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&config);
                }
            }
            assert_eq!(
                ChatTemplate::for_model_dir(dir.path()).unwrap(),
                want,
                "{text:?}"
            );
        }
        std::fs::remove_file(&config).unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"n_embd": 8}"#).unwrap();
        let e = ChatTemplate::for_model_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("model_type"), "{e}");
    }

    /// Text and ids against Hugging Face's `apply_chat_template` (tokenize=False and True),
    /// from `scripts/make_chat_fixtures.py`.
    #[test]
    fn rendering_and_ids_match_hugging_face() {
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("expected.json")).unwrap(),
        )
        .unwrap();
        for (name, t) in [
            ("gemma", ChatTemplate::Gemma),
            ("llama3", ChatTemplate::Llama3),
            ("llama3.1", ChatTemplate::Llama31),
        ] {
            let folder = expected[name]["tokenizer"].as_str().unwrap();
            let tok =
                TextTokenizer::from_file(&fixtures().join(folder).join("tokenizer.json")).unwrap();
            t.check_tokenizer(&tok).unwrap();
            let bos = tok.encode(t.bos_token().unwrap()).unwrap()[0];
            let cases = expected[name]["cases"].as_object().unwrap();
            assert_eq!(cases.len(), 4);
            for (case, v) in cases {
                let messages: Vec<Message> = serde_json::from_value(v["messages"].clone()).unwrap();
                let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
                let doubled: Vec<u32> =
                    serde_json::from_value(v["ids_with_special_tokens"].clone()).unwrap();
                assert_eq!(
                    t.render(&messages).unwrap(),
                    v["text"].as_str().unwrap(),
                    "{name}/{case}"
                );
                let ours = t.encode(&tok, &messages).unwrap();
                assert_eq!(ours, ids, "{name}/{case}");
                assert_eq!(ours.iter().filter(|&&i| i == bos).count(), 1);
                // What tokenising with the default post-processor would have given.
                assert_eq!(doubled[..2], [bos, bos], "{name}/{case}");
            }
        }
    }

    #[test]
    fn a_template_on_the_wrong_tokenizer_is_rejected() {
        let tok =
            TextTokenizer::from_file(&fixtures().join("llama3").join("tokenizer.json")).unwrap();
        let e = ChatTemplate::Gemma
            .check_tokenizer(&tok)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`<bos>`"), "{e}");
        ChatTemplate::Plain.check_tokenizer(&tok).unwrap();
    }

    #[test]
    fn a_model_without_chat_tokens_reads_plain_text_unless_a_template_is_named() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        // A tiny Llama classifier whose 320-token vocabulary has no Llama-3 headers.
        let dir = root.join("llama-rm-tiny");
        let small = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            ChatTemplate::for_model(&dir, &small, None).unwrap(),
            ChatTemplate::Plain
        );
        assert!(ChatTemplate::for_model(&dir, &small, Some(ChatTemplate::Llama3)).is_err());
        // With Llama-3's special tokens, the folder's `model_type` picks llama3.
        let full = TextTokenizer::from_file(&fixtures().join("llama3/tokenizer.json")).unwrap();
        assert_eq!(
            ChatTemplate::for_model(&dir, &full, None).unwrap(),
            ChatTemplate::Llama3
        );
    }
}
