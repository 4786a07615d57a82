//! Chat templates: a conversation (`[{role, content}]`, roles `system`/`user`/`assistant`)
//! rendered as the text a model was trained on, then tokenised the way Hugging Face's
//! `apply_chat_template(messages, tokenize=True)` does.
//!
//! A template is Jinja, rendered with [minijinja] the way transformers renders it
//! (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, a `tojson` that writes
//! what Python's `json.dumps(ensure_ascii=False)` writes, Python's string and dict methods such
//! as `.strip()`, `.startswith()`, `.items()` from minijinja-contrib's `pycompat`, and `None`,
//! `True`, `False` printed as Python prints them). The template comes from:
//!
//! | template   | what                                                                    | default for `model_type` |
//! |------------|-------------------------------------------------------------------------|-------------------|
//! | the model's own | the `chat_template` of the folder's `tokenizer_config.json` (a string, or the `default` of a list of named ones), with the `bos_token`/`eos_token`/`pad_token`/`unk_token` strings it names | any, when the folder has one |
//! | `model`    | asks for the model's own, and is an error when the folder has none     | — |
//! | `gemma`    | Gemma 3's published template (google/gemma-3-*-it): a leading system message becomes a prefix of the first user turn, followed by a blank line; Gemma 1 and 2 (google/gemma-2b-it) render the same text for user/assistant turns but raise on a system message | `gemma`, `gemma2`, `gemma3`, `gemma3_text` |
//! | `llama3`   | meta-llama/Meta-Llama-3-8B-Instruct's                                   | `llama` |
//! | `llama3.1` | meta-llama/Llama-3.1-8B-Instruct's: a dated system turn first (`Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n`, then the system message, if any) | — |
//! | `qwen2.5`  | Qwen/Qwen2.5-*-Instruct's: `<|im_start|>role\n…<|im_end|>\n` turns after a system turn (the default system prompt when there is no system message) | `qwen2` |
//! | `plain`    | no markup: the texts dagrun's GPT-2 reward models train on (not Jinja)  | `gpt2` |
//!
//! The named templates are the published texts, carried here verbatim; the tests check them
//! byte for byte against the fixtures of `scripts/make_chat_fixtures.py`, which also holds
//! transformers' renderings of every template (and of the folders' own) for each fixture
//! conversation, with and without the generation prompt.
//!
//! - **Without a named template**, a folder's own `chat_template` is used when it has one (as
//!   transformers does); otherwise the named template its `model_type` implies, or `plain` when
//!   the tokenizer lacks that template's special tokens (a base model, or a test model with a
//!   small vocabulary, has no chat format to follow).
//! - **Errors, never a fall-back.** A template that fails to compile or to render (a syntax
//!   minijinja does not have, such as transformers' `{% generation %}` tag, an unknown filter,
//!   function or method, a `raise_exception` of the template itself, such as Gemma 1/2's
//!   `System role not supported`) is an error naming the template, the construct and the
//!   line; dagrun never renders plain text instead.
//! - **`strftime_now` is not provided.** transformers offers it, and Llama-3.2's and 3.3's
//!   templates write today's date with it when it is defined; a rendering must not change
//!   with the day it runs (cached results depend on it), so such templates take their own
//!   fallback (`26 Jul 2024`), and a template that calls it unconditionally is an error naming
//!   `strftime_now`.
//! - **Messages.** dagrun's conversations have `system`, `user` and `assistant` messages, a
//!   system message only first; anything else is an error before the template runs.
//! - **Generation prompt.** [`ChatTemplate::render_prompt`] with `add_generation_prompt`
//!   appends what the template writes to open the assistant's turn (a policy's prompt);
//!   [`ChatTemplate::render`] renders a finished conversation (what a reward model reads).
//! - **BOS.** Templates that write the BOS token as text (`{{ bos_token }}`: Gemma, Llama-3)
//!   are tokenised *without* adding special tokens, as `apply_chat_template(tokenize=True)`
//!   does: exactly one BOS. (Tokenising the rendered text again with the tokenizer's default
//!   post-processor would add a second one.) A named template's special tokens must each be
//!   one token of the tokenizer ([`ChatTemplate::check_tokenizer`]), which catches a template
//!   forced onto the wrong model; for a folder's own template, the special-token strings its
//!   `tokenizer_config.json` names and the template uses.
//! - **`plain`** is the text the built-in pipeline trains GPT-2 reward models on: a prompt
//!   and its response joined by one space (none when either side has whitespace at the
//!   join); earlier turns as `data::records::render_conversation` writes them. No BOS.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind};

use crate::data::{records::render_conversation, Message};
use crate::ml::error::{MlError, Result};
use crate::ml::io::tokenizer::TextTokenizer;

/// The file a Hugging Face folder keeps its chat template in.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// A chat template (see the module docs).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// Gemma (1, 2 and 3) instruction-tuned models: Gemma 3's template.
    Gemma,
    /// Llama-3 instruct models.
    Llama3,
    /// Llama-3.1 (and later) instruct models: a dated system turn first.
    #[serde(rename = "llama3.1")]
    Llama31,
    /// Qwen2.5 instruct models (ChatML with Qwen's default system prompt).
    #[serde(rename = "qwen2.5")]
    Qwen25,
    /// No markup (GPT-2 and the built-in task).
    Plain,
    /// The model folder's own `chat_template` (`tokenizer_config.json`); an error without one.
    Model,
    /// A Jinja template read from a folder (what `model`, or no choice, resolves to).
    #[serde(skip)]
    Own(Arc<JinjaTemplate>),
}

impl std::fmt::Display for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatTemplate::Own(t) => write!(f, "the model's own ({})", t.origin),
            other => f.write_str(other.name()),
        }
    }
}

impl std::str::FromStr for ChatTemplate {
    type Err = MlError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gemma" => Ok(ChatTemplate::Gemma),
            "llama3" => Ok(ChatTemplate::Llama3),
            "llama3.1" => Ok(ChatTemplate::Llama31),
            "qwen2.5" => Ok(ChatTemplate::Qwen25),
            "plain" => Ok(ChatTemplate::Plain),
            "model" => Ok(ChatTemplate::Model),
            _ => Err(MlError::Invalid(format!(
                "unknown chat template `{s}` (known: gemma, llama3, llama3.1, qwen2.5, plain, model)"
            ))),
        }
    }
}

/// The named templates' sources, BOS/EOS strings and special tokens.
struct Named {
    source: &'static str,
    bos: Option<&'static str>,
    eos: &'static str,
    specials: &'static [&'static str],
}

impl ChatTemplate {
    /// The template's name (`gemma`, `llama3`, `llama3.1`, `qwen2.5`, `plain`, `model`;
    /// `own` for a folder's template).
    pub fn name(&self) -> &'static str {
        match self {
            ChatTemplate::Gemma => "gemma",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Llama31 => "llama3.1",
            ChatTemplate::Qwen25 => "qwen2.5",
            ChatTemplate::Plain => "plain",
            ChatTemplate::Model => "model",
            ChatTemplate::Own(_) => "own",
        }
    }

    fn named(&self) -> Option<Named> {
        const LLAMA: &[&str] = &[
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ];
        Some(match self {
            ChatTemplate::Gemma => Named {
                source: GEMMA3_SOURCE,
                bos: Some("<bos>"),
                eos: "<eos>",
                specials: &["<bos>", "<start_of_turn>", "<end_of_turn>"],
            },
            ChatTemplate::Llama3 => Named {
                source: LLAMA3_SOURCE,
                bos: Some("<|begin_of_text|>"),
                eos: "<|eot_id|>",
                specials: LLAMA,
            },
            ChatTemplate::Llama31 => Named {
                source: LLAMA31_SOURCE,
                bos: Some("<|begin_of_text|>"),
                eos: "<|eot_id|>",
                specials: LLAMA,
            },
            ChatTemplate::Qwen25 => Named {
                source: QWEN25_SOURCE,
                bos: None,
                eos: "<|im_end|>",
                specials: &["<|im_start|>", "<|im_end|>"],
            },
            _ => return None,
        })
    }

    /// The Jinja source of a named template (the published text), or of a folder's own.
    pub fn source(&self) -> Option<&str> {
        match self {
            ChatTemplate::Own(t) => Some(&t.source),
            other => other.named().map(|n| n.source),
        }
    }

    /// The compiled template (named ones are compiled once per process).
    fn jinja(&self) -> Result<Option<&JinjaTemplate>> {
        static NAMED: OnceLock<std::result::Result<Vec<JinjaTemplate>, String>> = OnceLock::new();
        let index = match self {
            ChatTemplate::Own(t) => return Ok(Some(t)),
            ChatTemplate::Model => {
                return Err(MlError::Invalid(
                    "the chat template `model` is the model folder's own: load it with \
                     ChatTemplate::for_model"
                        .into(),
                ))
            }
            ChatTemplate::Plain => return Ok(None),
            ChatTemplate::Gemma => 0,
            ChatTemplate::Llama3 => 1,
            ChatTemplate::Llama31 => 2,
            ChatTemplate::Qwen25 => 3,
        };
        let all = NAMED.get_or_init(|| {
            [
                ChatTemplate::Gemma,
                ChatTemplate::Llama3,
                ChatTemplate::Llama31,
                ChatTemplate::Qwen25,
            ]
            .iter()
            .map(|t| {
                let n = t.named().expect("a named template");
                let mut tokens = vec![("eos_token".to_string(), n.eos.to_string())];
                if let Some(b) = n.bos {
                    tokens.push(("bos_token".to_string(), b.to_string()));
                }
                JinjaTemplate::new(n.source.to_string(), tokens, format!("`{}`", t.name()))
                    .map_err(|e| e.to_string())
            })
            .collect()
        });
        match all {
            Ok(v) => Ok(Some(&v[index])),
            Err(e) => Err(MlError::Invalid(e.clone())),
        }
    }

    /// The named template of a Hugging Face `model_type`; other model types need the template
    /// named explicitly (or their folder's own).
    pub fn for_model_type(model_type: &str) -> Result<Self> {
        match model_type {
            "gpt2" => Ok(ChatTemplate::Plain),
            "gemma" | "gemma2" | "gemma3" | "gemma3_text" => Ok(ChatTemplate::Gemma),
            "llama" => Ok(ChatTemplate::Llama3),
            "qwen2" => Ok(ChatTemplate::Qwen25),
            other => Err(MlError::Invalid(format!(
                "no chat template known for model_type `{other}` (known: gpt2 → plain, \
                 gemma/gemma2/gemma3 → gemma, llama → llama3, qwen2 → qwen2.5); name one \
                 explicitly, or give the folder a tokenizer_config.json with its chat_template"
            ))),
        }
    }

    /// The named template of a model folder, from the `model_type` of its `config.json`.
    pub fn for_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| MlError::io(&path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| MlError::json(&path, e))?;
        match v.get("model_type").and_then(serde_json::Value::as_str) {
            Some(t) => Self::for_model_type(t)
                .map_err(|e| MlError::Invalid(format!("{}: {e}", path.display()))),
            None => Err(MlError::Invalid(format!(
                "{}: no `model_type`; name the chat template explicitly",
                path.display()
            ))),
        }
    }

    /// The template a model reads pairs with: `chosen` when given (checked against the
    /// tokenizer; `model` loads the folder's own), else the folder's own `chat_template` when
    /// it has one, else the one its `model_type` implies, or `plain` when the tokenizer lacks
    /// that template's special tokens.
    pub fn for_model(dir: &Path, tok: &TextTokenizer, chosen: Option<Self>) -> Result<Self> {
        let own = || -> Result<Option<Self>> {
            Ok(JinjaTemplate::from_model_dir(dir)?.map(|t| ChatTemplate::Own(Arc::new(t))))
        };
        let t = match chosen {
            Some(ChatTemplate::Model) => own()?.ok_or_else(|| {
                MlError::Invalid(format!(
                    "{}: the chat template `model` needs the folder's {TOKENIZER_CONFIG_FILE} \
                     with a `chat_template`, and there is none",
                    dir.display()
                ))
            })?,
            Some(t) => t,
            None => match own()? {
                Some(t) => t,
                None => {
                    let t = Self::for_model_dir(dir)?;
                    return Ok(if t.check_tokenizer(tok).is_ok() {
                        t
                    } else {
                        ChatTemplate::Plain
                    });
                }
            },
        };
        t.check_tokenizer(tok)?;
        Ok(t)
    }

    /// The BOS text the template writes first, if any.
    pub fn bos_token(&self) -> Option<&str> {
        match self {
            ChatTemplate::Own(t) if t.source.contains("bos_token") => t.token("bos_token"),
            ChatTemplate::Own(_) => None,
            other => other.named().and_then(|n| n.bos),
        }
    }

    /// The special tokens the template writes (each must be one token of the tokenizer): a
    /// named template's markup, or the special-token strings a folder's own template uses.
    pub fn special_tokens(&self) -> Vec<&str> {
        match self {
            ChatTemplate::Own(t) => t
                .tokens
                .iter()
                .filter(|(k, _)| t.source.contains(k.as_str()))
                .map(|(_, v)| v.as_str())
                .collect(),
            other => other
                .named()
                .map(|n| n.specials.to_vec())
                .unwrap_or_default(),
        }
    }

    /// Whether the template writes markup (all but `plain`): its text is tokenised without
    /// adding special tokens, as `apply_chat_template` does.
    pub fn is_chat(&self) -> bool {
        *self != ChatTemplate::Plain
    }

    /// Renders a finished conversation as text (no generation prompt).
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.render_prompt(messages, false)
    }

    /// Renders a conversation as text; with `add_generation_prompt`, followed by what opens
    /// the assistant's turn (as `apply_chat_template(add_generation_prompt=True)`).
    pub fn render_prompt(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
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
        match self.jinja()? {
            Some(t) => t.render(messages, add_generation_prompt),
            None => Ok(match messages.split_last() {
                Some((last, before)) if last.role == "assistant" && !before.is_empty() => {
                    plain_join(&render_conversation(before), &last.content)
                }
                _ => render_conversation(messages),
            }),
        }
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
        let name = match self {
            ChatTemplate::Own(_) => self.to_string(),
            named => format!("`{named}`"),
        };
        for s in self.special_tokens() {
            let ids = tok.encode(s)?;
            let single = ids.len() == 1 && tok.decode(&ids)? == s;
            if !single {
                return Err(MlError::Invalid(format!(
                    "the chat template {name} writes `{s}`, which this tokenizer does not \
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

/// A compiled Jinja chat template with the special-token strings it is rendered with.
pub struct JinjaTemplate {
    source: String,
    /// `(bos_token, "<bos>")`, ...: the special-token variables of the render context.
    tokens: Vec<(String, String)>,
    /// Where the template came from, for messages (`gemma`, `DIR/tokenizer_config.json`).
    origin: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("origin", &self.origin)
            .field("tokens", &self.tokens)
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl PartialEq for JinjaTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.tokens == other.tokens
    }
}

impl Eq for JinjaTemplate {}

/// The name the template is compiled under (minijinja's messages say `in chat:LINE`).
const TEMPLATE_NAME: &str = "chat";

impl JinjaTemplate {
    /// Compile `source`, rendered with the special-token variables `tokens`; `origin` names
    /// it in errors. A syntax error names the construct and the line.
    pub fn new(source: String, tokens: Vec<(String, String)>, origin: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| MlError::Invalid(format!("chat template syntax: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| template_error(&origin, "does not compile", &e))?;
        Ok(JinjaTemplate {
            source,
            tokens,
            origin,
            env,
        })
    }

    /// The template of a folder's `tokenizer_config.json`, if it has one: `chat_template` as a
    /// string, or the `default` entry of a list of named templates; with the special-token
    /// strings the file names (a string, or an AddedToken `{"content": ...}`).
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MlError::io(&path, e)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| MlError::json(&path, e))?;
        let source = match v.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(t)) => t.clone(),
            Some(serde_json::Value::Array(named)) => {
                let default = named
                    .iter()
                    .find(|t| t.get("name").and_then(serde_json::Value::as_str) == Some("default"));
                match default
                    .and_then(|t| t.get("template"))
                    .and_then(serde_json::Value::as_str)
                {
                    Some(t) => t.to_string(),
                    None => {
                        return Err(MlError::Invalid(format!(
                            "{}: `chat_template` is a list without a `default` template",
                            path.display()
                        )))
                    }
                }
            }
            Some(_) => {
                return Err(MlError::Invalid(format!(
                    "{}: `chat_template` is neither a string nor a list of named templates",
                    path.display()
                )))
            }
        };
        let mut tokens = Vec::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            let value = match v.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            if let Some(value) = value {
                tokens.push((key.to_string(), value));
            }
        }
        Self::new(source, tokens, path.display().to_string()).map(Some)
    }

    /// The string of a special-token variable (`bos_token`, ...), if the file names it.
    fn token(&self, key: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Render `messages` with `add_generation_prompt`, the special-token strings, and `tools`
    /// and `documents` as `None` (as transformers passes them without tools).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&self.origin, "is missing", &e))?;
        // Each message a dict `{"role", "content"}` in that order (as Python builds it).
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| Value::from(minijinja::value::Serde(m)))
            .collect();
        let mut ctx: std::collections::BTreeMap<String, Value> = [
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in &self.tokens {
            ctx.insert(k.clone(), Value::from(v.as_str()));
        }
        template
            .render(Value::from(ctx))
            .map_err(|e| template_error(&self.origin, "cannot be rendered", &e))
    }
}

/// An error of the template from `origin`, with minijinja's construct and line.
fn template_error(origin: &str, what: &str, e: &JinjaError) -> MlError {
    let mut msg = format!("the chat template {origin} {what}: {}", e.kind());
    if let Some(detail) = e.detail() {
        msg += &format!(": {detail}");
    }
    if let Some(line) = e.line() {
        msg += &format!(" (line {line})");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        msg += &format!("; {inner}");
        source = inner.source();
    }
    MlError::Invalid(msg)
}

/// transformers' `raise_exception(message)`: the template's own error.
fn raise_exception(message: String) -> std::result::Result<Value, JinjaError> {
    Err(JinjaError::new(
        ErrorKind::InvalidOperation,
        format!("raise_exception: {message}"),
    ))
}

/// Values printed as Jinja2 prints them in Python: `None`, `True`, `False`; the rest as
/// minijinja does (no auto-escaping for chat templates).
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> std::result::Result<(), JinjaError> {
    let text = match value.kind() {
        ValueKind::None => "None",
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(text)
        .map_err(|e| JinjaError::new(ErrorKind::WriteFailure, e.to_string()))
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)` (keys in insertion order unless sorted).
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, JinjaError> {
    let indent: Option<usize> = match indent.or(kwargs.get::<Option<Value>>("indent")?) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v).map_err(|_| {
            JinjaError::new(ErrorKind::InvalidOperation, "tojson: indent is not a count")
        })?),
    };
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii: bool = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        Some(_) => {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        indent,
        sort_keys,
        ensure_ascii,
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    write_json(value, &opts, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
    item_sep: String,
    key_sep: String,
}

fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(
    v: &Value,
    o: &JsonOpts,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), JinjaError> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = o.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                // Integers of any width print as Python prints them.
                out.push_str(&v.to_string());
                return Ok(());
            }
            let f = f64::try_from(v.clone()).map_err(|_| {
                JinjaError::new(ErrorKind::BadSerialization, "tojson: a number out of range")
            })?;
            out.push_str(&python_float(f));
        }
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                write_json(item, o, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                match key.as_str() {
                    Some(k) => json_string(k, o.ensure_ascii, out),
                    None => json_string(&key.to_string(), o.ensure_ascii, out),
                }
                out.push_str(&o.key_sep);
                write_json(&v.get_item(key)?, o, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        other => {
            return Err(JinjaError::new(
                ErrorKind::BadSerialization,
                format!("tojson: cannot write a {other} value"),
            ))
        }
    }
    Ok(())
}

/// A float as Python's `repr` writes it (`1.0`, `0.1`, `1e+20`, `NaN`, `Infinity` as json).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Python: shortest round-trip digits in exponent form, exponent with a sign and at
        // least two digits.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
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

// The published templates (see the module docs; the same texts as
// scripts/make_chat_fixtures.py, checked by the tests).

/// google/gemma-3-*-it's template (string contents only).
const GEMMA3_SOURCE: &str = r#"{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + '

' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif -%}{%- if (message['role'] == 'assistant') -%}{%- set role = "model" -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}{{ message['content'] | trim }}{{ '<end_of_turn>
' }}{%- endfor -%}{%- if add_generation_prompt -%}{{'<start_of_turn>model
'}}{%- endif -%}"#;
/// meta-llama/Meta-Llama-3-8B-Instruct's template.
const LLAMA3_SOURCE: &str = r#"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"#;
/// meta-llama/Llama-3.1-8B-Instruct's template.
const LLAMA31_SOURCE: &str = r#"{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>

" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython
" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "

"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023
" }}
{{- "Today Date: " + date_string + "

" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.

" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "

" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>

' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.

" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.

" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "

" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>

' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>

' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>

" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>

' }}
{%- endif %}
"#;
/// Qwen/Qwen2.5-*-Instruct's template.
const QWEN25_SOURCE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

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

    /// A template compiled from source, with a BOS and an EOS.
    fn jinja(source: &str) -> ChatTemplate {
        ChatTemplate::Own(Arc::new(
            JinjaTemplate::new(
                source.to_string(),
                vec![
                    ("bos_token".into(), "<s>".into()),
                    ("eos_token".into(), "</s>".into()),
                ],
                "test".into(),
            )
            .unwrap(),
        ))
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
        // Qwen2.5 does not trim, and writes its default system turn.
        assert_eq!(
            ChatTemplate::Qwen25.render_prompt(&c[..1], true).unwrap(),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful \
             assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
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
            ChatTemplate::Qwen25,
            ChatTemplate::Plain,
        ] {
            let e = t.render(&late_system).unwrap_err().to_string();
            assert!(e.contains("system message must come first"), "{e}");
            let e = t.render(&conv(&[("tool", "x")])).unwrap_err().to_string();
            assert!(e.contains("unknown role `tool`"), "{e}");
            assert!(t.render(&[]).is_err());
        }
        // Gemma's template raises on turns that do not alternate: the error is its own.
        let e = ChatTemplate::Gemma
            .render(&conv(&[("assistant", "a"), ("user", "b")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("raise_exception: Conversation roles must alternate")
                && e.contains("`gemma`"),
            "{e}"
        );
        // Llama-3's template does not check alternation.
        assert!(ChatTemplate::Llama3
            .render(&conv(&[("assistant", "a"), ("user", "b")]))
            .is_ok());
        // `model` must be resolved against a folder first.
        let e = ChatTemplate::Model
            .render(&conv(&[("user", "a")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("for_model"), "{e}");
    }

    #[test]
    fn model_types_choose_templates() {
        for (model_type, want) in [
            ("gpt2", ChatTemplate::Plain),
            ("gemma2", ChatTemplate::Gemma),
            ("llama", ChatTemplate::Llama3),
            ("qwen2", ChatTemplate::Qwen25),
        ] {
            assert_eq!(ChatTemplate::for_model_type(model_type).unwrap(), want);
        }
        let e = ChatTemplate::for_model_type("mistral")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mistral`"), "{e}");
        for (name, want) in [
            ("llama3", ChatTemplate::Llama3),
            ("llama3.1", ChatTemplate::Llama31),
            ("qwen2.5", ChatTemplate::Qwen25),
            ("model", ChatTemplate::Model),
        ] {
            let parsed: ChatTemplate = name.parse().unwrap();
            assert_eq!(parsed, want);
            assert_eq!(serde_json::to_string(&want).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<ChatTemplate>(&format!("\"{name}\"")).unwrap(),
                want
            );
        }
        assert!("chatml".parse::<ChatTemplate>().is_err());
        assert!(serde_json::from_str::<ChatTemplate>("\"own\"").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gemma"}"#).unwrap();
        assert_eq!(
            ChatTemplate::for_model_dir(dir.path()).unwrap(),
            ChatTemplate::Gemma
        );
        std::fs::write(dir.path().join("config.json"), r#"{"n_embd": 8}"#).unwrap();
        let e = ChatTemplate::for_model_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("model_type"), "{e}");
    }

    /// Every fixture template (the folders' own, and dagrun's named ones, whose sources must be
    /// the published texts byte for byte) against transformers' `apply_chat_template`: text
    /// without and with the generation prompt, ids, and the errors the templates raise.
    #[test]
    fn rendering_and_ids_match_hugging_face() {
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("expected.json")).unwrap(),
        )
        .unwrap();
        let named = [
            ("gemma3", ChatTemplate::Gemma),
            ("llama3", ChatTemplate::Llama3),
            ("llama3.1", ChatTemplate::Llama31),
            ("qwen2.5", ChatTemplate::Qwen25),
        ];
        let mut checked = 0;
        for (name, entry) in expected.as_object().unwrap() {
            let folder = fixtures().join(entry["folder"].as_str().unwrap());
            let tok = TextTokenizer::from_file(&folder.join("tokenizer.json")).unwrap();
            let own = ChatTemplate::for_model(&folder, &tok, None).unwrap();
            assert!(matches!(own, ChatTemplate::Own(_)), "{name}: {own}");
            assert_eq!(
                ChatTemplate::for_model(&folder, &tok, Some(ChatTemplate::Model)).unwrap(),
                own
            );
            assert_eq!(own.source(), entry["template"].as_str(), "{name}");
            let mut templates = vec![own];
            if let Some((_, t)) = named.iter().find(|(n, _)| n == name) {
                assert_eq!(
                    t.source(),
                    entry["template"].as_str(),
                    "{name}: not the published text"
                );
                t.check_tokenizer(&tok).unwrap();
                templates.push(t.clone());
            }
            for t in &templates {
                assert_eq!(t.bos_token(), entry["bos_token"].as_str(), "{name}");
                let bos = t.bos_token().map(|b| tok.encode(b).unwrap()[0]);
                let cases = entry["cases"].as_object().unwrap();
                assert_eq!(cases.len(), 6);
                for (case, v) in cases {
                    let messages: Vec<Message> =
                        serde_json::from_value(v["messages"].clone()).unwrap();
                    if let Some(error) = v["error"].as_str() {
                        let e = t.render(&messages).unwrap_err().to_string();
                        assert!(e.contains(error), "{name}/{case} {t}: {e}");
                        continue;
                    }
                    assert_eq!(
                        t.render(&messages).unwrap(),
                        v["text"].as_str().unwrap(),
                        "{name}/{case} {t}"
                    );
                    assert_eq!(
                        t.render_prompt(&messages, true).unwrap(),
                        v["text_with_generation_prompt"].as_str().unwrap(),
                        "{name}/{case} {t}"
                    );
                    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
                    let ours = t.encode(&tok, &messages).unwrap();
                    assert_eq!(ours, ids, "{name}/{case} {t}");
                    if let Some(bos) = bos {
                        assert_eq!(ours.iter().filter(|&&i| i == bos).count(), 1);
                        // What tokenising with the default post-processor would have given.
                        let doubled: Vec<u32> =
                            serde_json::from_value(v["ids_with_special_tokens"].clone()).unwrap();
                        assert_eq!(doubled[..2], [bos, bos], "{name}/{case}");
                    }
                    checked += 1;
                }
            }
        }
        // 5 folders' own templates + 4 named ones, 6 conversations each, Gemma 1/2's two
        // system conversations raising.
        assert_eq!(checked, 9 * 6 - 2);
    }

    #[test]
    fn a_template_on_the_wrong_tokenizer_is_rejected() {
        let tok =
            TextTokenizer::from_file(&fixtures().join("llama3").join("tokenizer.json")).unwrap();
        for t in [ChatTemplate::Gemma, ChatTemplate::Qwen25] {
            let e = t.check_tokenizer(&tok).unwrap_err().to_string();
            assert!(e.contains("<bos>") || e.contains("<|im_start|>"), "{e}");
        }
        ChatTemplate::Plain.check_tokenizer(&tok).unwrap();
        // A folder's own template whose BOS string the tokenizer lacks.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixtures().join("gemma/tokenizer.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG_FILE),
            r#"{"bos_token": "<|begin_of_text|>", "chat_template": "{{ bos_token }}{{ messages[0].content }}"}"#,
        )
        .unwrap();
        let gemma_tok = TextTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
        let e = ChatTemplate::for_model(dir.path(), &gemma_tok, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("<|begin_of_text|>") && e.contains("model's own"),
            "{e}"
        );
    }

    #[test]
    fn a_model_without_chat_tokens_reads_plain_text_unless_a_template_is_named() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        // A tiny Llama classifier whose 320-token vocabulary has no Llama-3 headers, and no
        // tokenizer_config.json.
        let dir = root.join("llama-rm-tiny");
        let small = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            ChatTemplate::for_model(&dir, &small, None).unwrap(),
            ChatTemplate::Plain
        );
        assert!(ChatTemplate::for_model(&dir, &small, Some(ChatTemplate::Llama3)).is_err());
        let e = ChatTemplate::for_model(&dir, &small, Some(ChatTemplate::Model))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("none"),
            "{e}"
        );
        // With Llama-3's special tokens, the folder's `model_type` picks llama3.
        let full = TextTokenizer::from_file(&fixtures().join("llama3/tokenizer.json")).unwrap();
        assert_eq!(
            ChatTemplate::for_model(&dir, &full, None).unwrap(),
            ChatTemplate::Llama3
        );
    }

    /// What transformers' templates use beyond plain Jinja: Python's methods, loop controls,
    /// `raise_exception`, its `tojson`, Python's printing of None and booleans, named template
    /// lists; and what is refused, by name.
    #[test]
    fn jinja_features_of_transformers_templates() {
        let m = conv(&[("user", "  Hello, World  "), ("assistant", "ok")]);
        let render = |src: &str| jinja(src).render_prompt(&m, true);
        assert_eq!(
            render("{{ messages[0].content.strip().lower() }}|{{ messages[0]['content'].startswith('  H') }}|{{ messages[0].content.split(',')[1].strip() }}").unwrap(),
            "hello, world|True|World"
        );
        assert_eq!(
            render("{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}").unwrap(),
            "user"
        );
        assert_eq!(
            render("{% for m in messages %}{% if m.role == 'user' %}{% continue %}{% endif %}{{ m.content }}{% endfor %}").unwrap(),
            "ok"
        );
        assert_eq!(
            render("{{ tools }} {{ add_generation_prompt }} {{ not add_generation_prompt }} {{ bos_token }}{{ eos_token }}").unwrap(),
            "None True False <s></s>"
        );
        // tojson as Python's json.dumps(ensure_ascii=False): ", " and ": ", no HTML escaping,
        // insertion order; indent with "," and ": ".
        assert_eq!(
            render(r#"{{ {"b": [1, 2.5, none, true], "a": "<é\"\n>"} | tojson }}"#).unwrap(),
            r#"{"b": [1, 2.5, null, true], "a": "<é\"\n>"}"#
        );
        assert_eq!(
            render(r#"{{ {"x": {"y": []}, "z": 1.0} | tojson(indent=2) }}"#).unwrap(),
            "{\n  \"x\": {\n    \"y\": []\n  },\n  \"z\": 1.0\n}"
        );
        assert_eq!(
            render(r#"{{ {"b": 1, "a": 2} | tojson(sort_keys=true) }}"#).unwrap(),
            r#"{"a": 2, "b": 1}"#
        );
        for (f, want) in [
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (3.0, "3.0"),
        ] {
            assert_eq!(python_float(f), want);
        }
        // trim_blocks and lstrip_blocks, as transformers sets them.
        assert_eq!(
            render("a\n  {% if true %}\nb\n  {% endif %}\nc").unwrap(),
            "a\nb\nc"
        );
        // The template's own errors, and constructs minijinja lacks, are errors naming them.
        for (src, want) in [
            (
                "{{ raise_exception('no system role') }}",
                "raise_exception: no system role",
            ),
            ("{{ strftime_now('%d %b %Y') }}", "strftime_now"),
            ("{{ messages | shuffle_all }}", "shuffle_all"),
            ("{{ messages[0].content.casefold() }}", "casefold"),
        ] {
            let e = render(src).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("cannot be rendered"),
                "{src}: {e}"
            );
        }
        let e = JinjaTemplate::new(
            "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
                .into(),
            vec![],
            "test".into(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("generation") && e.contains("does not compile") && e.contains("line 1"),
            "{e}"
        );
        // `strftime_now is defined` is false: Llama-3.2's fallback date.
        assert_eq!(
            render("{% if strftime_now is defined %}{{ strftime_now('%d %b %Y') }}{% else %}26 Jul 2024{% endif %}").unwrap(),
            "26 Jul 2024"
        );
    }

    /// `tokenizer_config.json`: a template list's `default`, AddedToken special tokens, and the
    /// malformed cases as errors naming the file.
    #[test]
    fn tokenizer_config_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENIZER_CONFIG_FILE);
        assert!(JinjaTemplate::from_model_dir(dir.path()).unwrap().is_none());
        std::fs::write(
            &path,
            serde_json::json!({
                "bos_token": {"content": "<b>", "lstrip": false},
                "eos_token": "<e>",
                "chat_template": [
                    {"name": "tool_use", "template": "tools"},
                    {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let t = ChatTemplate::Own(Arc::new(
            JinjaTemplate::from_model_dir(dir.path()).unwrap().unwrap(),
        ));
        assert_eq!(t.render(&conv(&[("user", "hi")])).unwrap(), "<b>hi<e>");
        assert_eq!(t.bos_token(), Some("<b>"));
        for (text, want) in [
            (
                r#"{"chat_template": [{"name": "x", "template": "y"}]}"#,
                "without a `default`",
            ),
            (r#"{"chat_template": 3}"#, "neither a string"),
            (r#"{"chat_template": "{% if %}"}"#, "does not compile"),
            ("{", "tokenizer_config.json"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = JinjaTemplate::from_model_dir(dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        std::fs::write(&path, r#"{"chat_template": null}"#).unwrap();
        assert!(JinjaTemplate::from_model_dir(dir.path()).unwrap().is_none());
    }
}
