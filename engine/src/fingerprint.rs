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
    /// blake3 over the canonical JSON of the components, streamed into the hasher
    /// (the same bytes as `canonical(serde_json::to_value(self))`).
    pub fn key(&self) -> Hash {
        let mut h = dagrun_cache::Hasher::new();
        let w = &mut h;
        let str_map = |w: &mut dagrun_cache::Hasher, m: &BTreeMap<String, String>| {
            w.update(b"{");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    w.update(b",");
                }
                json_str(w, k);
                w.update(b":");
                json_str(w, v);
            }
            w.update(b"}");
        };
        w.update(b"{\"env\":");
        str_map(w, &self.env);
        w.update(b",\"inputs\":");
        str_map(w, &self.inputs);
        w.update(b",\"kind\":");
        json_str(w, &self.kind);
        w.update(format!(",\"kind_version\":{},\"matrix\":{{", self.kind_version).as_bytes());
        for (i, (k, v)) in self.matrix.iter().enumerate() {
            if i > 0 {
                w.update(b",");
            }
            json_str(w, k);
            w.update(b":");
            canonical_into(v, w);
        }
        w.update(b"},\"outs\":[");
        for (i, o) in self.outs.iter().enumerate() {
            if i > 0 {
                w.update(b",");
            }
            json_str(w, o);
        }
        w.update(b"],\"params\":");
        canonical_into(&self.params, w);
        w.update(b",\"schema\":");
        json_str(w, &self.schema);
        w.update(b"}");
        h.finalize().into()
    }
}

fn json_str(h: &mut dagrun_cache::Hasher, s: &str) {
    serde_json::to_writer(&mut *h, s).expect("hashing does not fail");
}

/// [`canonical`], written straight into a hasher.
fn canonical_into(v: &Value, h: &mut dagrun_cache::Hasher) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            h.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                json_str(h, k);
                h.update(b":");
                canonical_into(&o[k], h);
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                canonical_into(x, h);
            }
            h.update(b"]");
        }
        Value::String(s) => json_str(h, s),
        other => {
            serde_json::to_writer(&mut *h, other).expect("hashing does not fail");
        }
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
    fn streamed_key_equals_the_canonical_encoding() {
        let mut c = comps(json!({"z": [1, {"b": "x\"y", "a": null}], "a": 1.5}));
        c.matrix.insert("seed".into(), json!(3));
        c.inputs.insert("file:a".into(), "abc".into());
        c.env.insert("backend".into(), "flex-cpu".into());
        c.outs.push("out.txt".into());
        let mut s = String::new();
        canonical(&serde_json::to_value(&c).unwrap(), &mut s);
        assert_eq!(c.key(), dagrun_cache::hash_bytes(s.as_bytes()));
    }

    #[test]
    fn canonical_encoding_is_stable() {
        let mut s = String::new();
        canonical(&json!({"b": [1, 2.5, "x"], "a": null}), &mut s);
        assert_eq!(s, r#"{"a":null,"b":[1,2.5,"x"]}"#);
    }
}
