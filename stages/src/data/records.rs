//! Row types and their JSON forms.
//!
//! A preference row comes in one of two formats (docs/algorithms.md §9):
//!
//! - **flat**: `{"prompt": str, "chosen": str, "rejected": str}` (RewardBench style). An
//!   optional `prompt_messages` list of `{role, content}` is read too (the normalised rows
//!   `dataset_mix` writes carry it for rows that came from chat data).
//! - **chat**: `chosen` and `rejected` are lists of `{role, content}` messages that share
//!   the conversation before a final `assistant` message (the format of the paper's
//!   `preference_dataset_mix2`). Other fields (a `prompt` string, scores) are ignored.
//!
//! Both become a [`PreferencePair`]. For chat rows, `prompt` is the shared conversation
//! rendered by [`render_conversation`], `chosen`/`rejected` are the final assistant
//! messages, and `prompt_messages` keeps the shared messages so that a chat template can be
//! applied later. A `null` string field reads as empty (the `dataset_mix` empty filter
//! then drops the row); a missing field, or one of the wrong type, is an error.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// One preference pair, whatever format it was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// For chat data: the conversation before the final assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_messages: Option<Vec<Message>>,
}

/// How to read the `chosen`/`rejected` fields of a preference row.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PreferenceFormat {
    /// Per row: chat if `chosen` is a list, flat if it is a string.
    #[default]
    Auto,
    Flat,
    Chat,
}

/// One row of a text corpus (IMDB: `text`, `label`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextRow {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
}

/// Renders the shared part of a conversation as the prompt text: a single `user` message
/// is its content as it is; anything else is each message as `Role: content` (role with
/// a capital first letter) joined by blank lines.
pub fn render_conversation(messages: &[Message]) -> String {
    if let [only] = messages {
        if only.role == "user" {
            return only.content.clone();
        }
    }
    messages
        .iter()
        .map(|m| {
            let mut role = m.role.clone();
            if let Some(first) = role.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!("{role}: {}", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("expected an object, found {}", type_name(v)))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A required string field (`null` reads as empty).
pub(crate) fn string_field(row: &Map<String, Value>, name: &str) -> Result<String, String> {
    match row.get(name) {
        None => Err(format!("missing field \"{name}\"")),
        Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!(
            "field \"{name}\" must be a string, found {}",
            type_name(v)
        )),
    }
}

fn messages(v: &Value, field: &str) -> Result<Vec<Message>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("field \"{field}\" must be a list of messages"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let o = object(m).map_err(|e| format!("{field}[{i}]: {e}"))?;
            Ok(Message {
                role: string_field(o, "role").map_err(|e| format!("{field}[{i}]: {e}"))?,
                content: string_field(o, "content").map_err(|e| format!("{field}[{i}]: {e}"))?,
            })
        })
        .collect()
}

/// Parses one preference row. The error is the message without the location.
pub fn parse_preference(v: &Value, format: PreferenceFormat) -> Result<PreferencePair, String> {
    let row = object(v)?;
    let chosen = row
        .get("chosen")
        .ok_or_else(|| "missing field \"chosen\"".to_string())?;
    let chat = match format {
        PreferenceFormat::Auto => chosen.is_array(),
        PreferenceFormat::Chat => true,
        PreferenceFormat::Flat => false,
    };
    if chat {
        parse_chat(row)
    } else {
        parse_flat(row)
    }
}

fn parse_flat(row: &Map<String, Value>) -> Result<PreferencePair, String> {
    if row.get("chosen").is_some_and(Value::is_array) {
        return Err(
            "field \"chosen\" is a list of messages (chat format), but the format is flat".into(),
        );
    }
    let prompt_messages = match row.get("prompt_messages") {
        None | Some(Value::Null) => None,
        Some(v) => Some(messages(v, "prompt_messages")?).filter(|m| !m.is_empty()),
    };
    Ok(PreferencePair {
        prompt: string_field(row, "prompt")?,
        chosen: string_field(row, "chosen")?,
        rejected: string_field(row, "rejected")?,
        prompt_messages,
    })
}

fn parse_chat(row: &Map<String, Value>) -> Result<PreferencePair, String> {
    let get = |name: &str| {
        row.get(name)
            .ok_or_else(|| format!("missing field \"{name}\""))
    };
    let chosen = messages(get("chosen")?, "chosen")?;
    let rejected = messages(get("rejected")?, "rejected")?;
    let split = |msgs: Vec<Message>, field: &str| -> Result<(Vec<Message>, String), String> {
        let mut msgs = msgs;
        match msgs.pop() {
            Some(last) if last.role == "assistant" => Ok((msgs, last.content)),
            Some(last) => Err(format!(
                "field \"{field}\": the last message must be from \"assistant\", found \"{}\"",
                last.role
            )),
            None => Err(format!("field \"{field}\" is an empty list of messages")),
        }
    };
    let (prefix, chosen) = split(chosen, "chosen")?;
    let (prefix_rejected, rejected) = split(rejected, "rejected")?;
    if prefix != prefix_rejected {
        return Err(
            "\"chosen\" and \"rejected\" differ before their final assistant message".into(),
        );
    }
    if prefix.is_empty() {
        return Err("field \"chosen\": no message before the final assistant message".into());
    }
    Ok(PreferencePair {
        prompt: render_conversation(&prefix),
        chosen,
        rejected,
        prompt_messages: Some(prefix),
    })
}

/// Parses one corpus row: the string column `column` and an optional integer `label`.
pub fn parse_text(v: &Value, column: &str) -> Result<TextRow, String> {
    let row = object(v)?;
    let label = match row.get("label") {
        None | Some(Value::Null) => None,
        Some(l) => Some(l.as_i64().ok_or_else(|| {
            format!("field \"label\" must be an integer, found {}", type_name(l))
        })?),
    };
    Ok(TextRow {
        text: string_field(row, column)?,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_row() {
        let p = parse_preference(
            &json!({"prompt": "p", "chosen": "a", "rejected": "b", "extra": 1}),
            PreferenceFormat::Auto,
        )
        .unwrap();
        assert_eq!((p.prompt.as_str(), p.chosen.as_str()), ("p", "a"));
        assert_eq!(p.rejected, "b");
        assert_eq!(p.prompt_messages, None);
    }

    #[test]
    fn chat_row_single_turn_and_multi_turn() {
        let row = json!({
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bad"}],
        });
        let p = parse_preference(&row, PreferenceFormat::Auto).unwrap();
        assert_eq!(p.prompt, "hi");
        assert_eq!((p.chosen.as_str(), p.rejected.as_str()), ("good", "bad"));
        assert_eq!(p.prompt_messages, Some(vec![Message::new("user", "hi")]));

        let turns = vec![
            json!({"role": "user", "content": "a"}),
            json!({"role": "assistant", "content": "b"}),
            json!({"role": "user", "content": "c"}),
        ];
        let mut c = turns.clone();
        c.push(json!({"role": "assistant", "content": "yes"}));
        let mut r = turns;
        r.push(json!({"role": "assistant", "content": "no"}));
        let p =
            parse_preference(&json!({"chosen": c, "rejected": r}), PreferenceFormat::Chat).unwrap();
        assert_eq!(p.prompt, "User: a\n\nAssistant: b\n\nUser: c");
        assert_eq!(p.prompt_messages.as_ref().map(Vec::len), Some(3));
        assert_eq!(p.chosen, "yes");
    }

    #[test]
    fn chat_errors() {
        let u = json!({"role": "user", "content": "hi"});
        let a = json!({"role": "assistant", "content": "x"});
        let e = parse_preference(
            &json!({"chosen": [u, u], "rejected": [u, a]}),
            PreferenceFormat::Auto,
        )
        .unwrap_err();
        assert!(e.contains("last message must be from \"assistant\""), "{e}");
        let u2 = json!({"role": "user", "content": "other"});
        let e = parse_preference(
            &json!({"chosen": [u, a], "rejected": [u2, a]}),
            PreferenceFormat::Auto,
        )
        .unwrap_err();
        assert!(e.contains("differ before"), "{e}");
        let e = parse_preference(
            &json!({"chosen": [u, {"role": "assistant"}], "rejected": [u, a]}),
            PreferenceFormat::Auto,
        )
        .unwrap_err();
        assert_eq!(e, "chosen[1]: missing field \"content\"");
        let e = parse_preference(&json!({"chosen": [u, a]}), PreferenceFormat::Auto).unwrap_err();
        assert_eq!(e, "missing field \"rejected\"");
        let e = parse_preference(
            &json!({"chosen": [u, a], "rejected": [u, a]}),
            PreferenceFormat::Flat,
        )
        .unwrap_err();
        assert!(e.contains("but the format is flat"), "{e}");
        let e = parse_preference(
            &json!({"prompt": "p", "chosen": "a", "rejected": "b"}),
            PreferenceFormat::Chat,
        )
        .unwrap_err();
        assert_eq!(e, "field \"chosen\" must be a list of messages");
    }

    #[test]
    fn flat_errors_and_nulls() {
        let e = parse_preference(
            &json!({"prompt": "p", "rejected": "b"}),
            PreferenceFormat::Auto,
        )
        .unwrap_err();
        assert_eq!(e, "missing field \"chosen\"");
        let e = parse_preference(
            &json!({"prompt": 3, "chosen": "a", "rejected": "b"}),
            PreferenceFormat::Auto,
        )
        .unwrap_err();
        assert_eq!(e, "field \"prompt\" must be a string, found a number");
        let p = parse_preference(
            &json!({"prompt": null, "chosen": "a", "rejected": "b"}),
            PreferenceFormat::Auto,
        )
        .unwrap();
        assert_eq!(p.prompt, "");
        assert_eq!(
            parse_preference(&json!([1]), PreferenceFormat::Auto).unwrap_err(),
            "expected an object, found a list"
        );
    }

    #[test]
    fn text_rows() {
        let t = parse_text(&json!({"text": "abc", "label": 1}), "text").unwrap();
        assert_eq!(t.label, Some(1));
        let t = parse_text(&json!({"review": "abc"}), "review").unwrap();
        assert_eq!((t.text.as_str(), t.label), ("abc", None));
        assert_eq!(
            parse_text(&json!({"review": "abc"}), "text").unwrap_err(),
            "missing field \"text\""
        );
        assert!(parse_text(&json!({"text": "a", "label": "pos"}), "text").is_err());
    }

    #[test]
    fn render_system_and_user() {
        let m = [
            Message::new("system", "be nice"),
            Message::new("user", "hi"),
        ];
        assert_eq!(render_conversation(&m), "System: be nice\n\nUser: hi");
        assert_eq!(
            render_conversation(&[Message::new("system", "s")]),
            "System: s"
        );
    }
}
