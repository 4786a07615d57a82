//! `dagrun kinds KIND`: a kind's params, read from the JSON schema of its params type
//! (field names, types, defaults and doc comments; `StageKind::params_schema`).

use std::fmt::Write;

use serde_json::{Map, Value};

/// The params of a schema as text: one entry per param (name, type, default or
/// `required`), then its description, indented.
pub fn params_text(schema: &Value) -> String {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let defs = schema.get("$defs").and_then(Value::as_object);
    let mut out = String::new();
    if props.is_empty() {
        out.push_str("\nNo params.\n");
        return out;
    }
    let _ = writeln!(out, "\nparams ({}):", props.len());
    for (name, p) in props {
        let ty = type_text(p, defs);
        let tail = if required.contains(&name.as_str()) {
            "required".to_string()
        } else {
            match p.get("default") {
                Some(Value::Null) | None => "optional".to_string(),
                Some(d) => format!("default {}", compact(d)),
            }
        };
        let _ = writeln!(out, "  {name}: {ty}  [{tail}]");
        let desc = description(p, defs);
        for line in wrap(&desc, 88) {
            let _ = writeln!(out, "      {line}");
        }
    }
    out
}

/// A param's description: its own, else that of the type it refers to.
fn description(p: &Value, defs: Option<&Map<String, Value>>) -> String {
    let own = p.get("description").and_then(Value::as_str);
    let referred = || {
        target(p, defs)
            .and_then(|d| d.get("description"))
            .and_then(Value::as_str)
    };
    own.or_else(referred).unwrap_or("").replace('\n', " ")
}

/// The definition a param refers to (`$ref`, possibly inside `anyOf` with `null`).
fn target<'a>(p: &'a Value, defs: Option<&'a Map<String, Value>>) -> Option<&'a Value> {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        return defs?.get(r.rsplit('/').next()?);
    }
    p.get("anyOf")?
        .as_array()?
        .iter()
        .find_map(|v| target(v, defs))
}

/// A short type: `number`, `string | null`, `vanilla | variance_aware`, `list of ...`.
fn type_text(p: &Value, defs: Option<&Map<String, Value>>) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return match defs.and_then(|d| d.get(name)) {
            Some(d) => match choices(d) {
                Some(c) => c,
                None => format!("{name} (object)"),
            },
            None => name.to_string(),
        };
    }
    if let Some(c) = choices(p) {
        return c;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = p.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = alts.iter().map(|a| type_text(a, defs)).collect();
            return parts.join(" | ");
        }
    }
    match p.get("type") {
        Some(Value::String(t)) if t == "array" => match p.get("items") {
            Some(items) => format!("list of {}", type_text(items, defs)),
            None => "list".into(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}

/// The values of an enumeration (`enum`, or `oneOf` of constants), as `a | b | c`.
fn choices(d: &Value) -> Option<String> {
    if let Some(e) = d.get("enum").and_then(Value::as_array) {
        return Some(e.iter().map(compact).collect::<Vec<_>>().join(" | "));
    }
    let alts = d.get("oneOf")?.as_array()?;
    let mut out = Vec::new();
    for a in alts {
        if let Some(c) = a.get("const") {
            out.push(compact(c));
        } else if let Some(e) = a.get("enum").and_then(Value::as_array) {
            out.extend(e.iter().map(compact));
        } else {
            return None;
        }
    }
    Some(out.join(" | "))
}

/// A value as it would be written in a pipeline: strings bare, the rest as JSON.
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_read_from_a_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "policy": {"type": "string", "description": "The policy folder."},
                "beta": {"type": "number", "default": 0.2, "description": "KL coefficient."},
                "method": {"$ref": "#/$defs/Method", "default": "vanilla"},
                "template": {"anyOf": [{"$ref": "#/$defs/Method"}, {"type": "null"}]},
                "seeds": {"type": "array", "items": {"type": "integer"}, "default": [1, 2]}
            },
            "required": ["policy"],
            "$defs": {"Method": {
                "description": "Vanilla or variance-aware.",
                "oneOf": [{"const": "vanilla"}, {"const": "variance_aware"}]
            }}
        });
        let t = params_text(&schema);
        assert!(t.contains("params (5):"), "{t}");
        assert!(
            t.contains("  policy: string  [required]\n      The policy folder."),
            "{t}"
        );
        assert!(t.contains("  beta: number  [default 0.2]"), "{t}");
        assert!(
            t.contains("  method: vanilla | variance_aware  [default vanilla]\n      Vanilla or"),
            "{t}"
        );
        assert!(
            t.contains("  template: vanilla | variance_aware | null  [optional]"),
            "{t}"
        );
        assert!(
            t.contains("  seeds: list of integer  [default [1,2]]"),
            "{t}"
        );
    }
}
