//! Node keys.
//!
//! A node's key is blake3 over the canonical JSON encoding of [`KeyComponents`]:
//!
//! | component      | covers                                                             |
//! |----------------|--------------------------------------------------------------------|
//! | `schema`       | the key format itself (`dagrun-key-v1`)                             |
//! | `kind`, `kind_version` | the stage kind and its implementation version              |
//! | `matrix`       | the node's matrix values                                            |
//! | `params`       | resolved parameters (for `command`: `cmd`); an upstream output appears as `@node.output` |
//! | `outs`         | declared workspace outputs                                          |
//! | `inputs`       | content hashes: every upstream output a reference names, every `deps` file or folder |
//! | `env`          | what of the environment changes results: the kind's backend for the node's device, and the variables listed under `fingerprint.env` |
//!
//! Left out on purpose: the node's id and stage name (renaming a stage keeps its cache),
//! timestamps, absolute paths, the pipeline file's name, `needs` edges (ordering only),
//! `resources`, `desc`, and the dagrun version (a change of results is a kind version
//! bump). Object keys are sorted, so the order of keys in YAML does not matter.

use std::collections::BTreeMap;

use dagrun_cache::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything a key is computed from. Stored with each record so that `dagrun why` can
/// say which component changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub schema: String,
    pub kind: String,
    pub kind_version: u32,
    pub matrix: BTreeMap<String, Value>,
    pub params: Value,
    pub outs: Vec<String>,
    pub inputs: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

pub const KEY_SCHEMA: &str = "dagrun-key-v1";

impl KeyComponents {
    pub fn key(&self) -> Hash {
        let v = serde_json::to_value(self).expect("components serialise");
        let mut s = String::new();
        canonical(&v, &mut s);
        dagrun_cache::hash_bytes(s.as_bytes())
    }
}

/// JSON with object keys sorted and no whitespace, independent of how serde_json was
/// built (its `preserve_order` feature would otherwise change the encoding).
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&o[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comps(params: Value) -> KeyComponents {
        KeyComponents {
            schema: KEY_SCHEMA.into(),
            kind: "command".into(),
            kind_version: 1,
            matrix: BTreeMap::new(),
            params,
            outs: vec![],
            inputs: BTreeMap::new(),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn key_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"x": 1, "y": 2}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": {"y": 2, "x": 1}, "a": 1}"#).unwrap();
        assert_eq!(comps(a.clone()).key(), comps(b).key());
        assert_ne!(
            comps(a).key(),
            comps(json!({"a": 2, "b": {"x": 1, "y": 2}})).key()
        );
    }

    #[test]
    fn canonical_encoding_is_stable() {
        let mut s = String::new();
        canonical(&json!({"b": [1, 2.5, "x"], "a": null}), &mut s);
        assert_eq!(s, r#"{"a":null,"b":[1,2.5,"x"]}"#);
    }
}
