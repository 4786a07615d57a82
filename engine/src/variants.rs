//! The variants of a pipeline's nodes that the cache holds, with their matrix values,
//! params and metrics: the data of `dagrun metrics` (the binary renders it).
//!
//! A node's *current* variant is the record under the key the pipeline (as loaded, with
//! its overrides) gives it now; with `all`, every other record the cache holds for the
//! same node id comes too (earlier params, other overrides), marked not current.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use dagrun_cache::{Cache, Hash, Record};
use serde::Serialize;
use serde_json::Value;

use crate::{
    plan::{Evaluator, Selection},
    Pipeline, Result,
};

/// One cached variant of a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Variant {
    pub node: String,
    pub stage: String,
    /// The key, in hex.
    pub key: String,
    /// Whether this is the variant the pipeline gives the node now.
    pub current: bool,
    pub matrix: BTreeMap<String, Value>,
    /// A native kind's resolved params (nested maps flattened with dots, matrix values
    /// left out: they are in `matrix`); for a `command` stage, the pipeline params its
    /// fields refer to.
    pub params: BTreeMap<String, Value>,
    /// Scalar metrics (numbers; NaN and ±inf as the strings `NaN`, `inf`, `-inf`), and
    /// the boolean and string ones.
    pub metrics: BTreeMap<String, Value>,
    #[serde(skip)]
    pub finished: DateTime<Utc>,
}

/// What [`variants`] found.
#[derive(Debug, Default)]
pub struct Variants {
    pub rows: Vec<Variant>,
    /// Nodes asked for whose current variant is not cached (not run yet, or stale).
    pub not_cached: Vec<String>,
}

/// The variants of `nodes` (indices into `p.nodes`), in the pipeline's order; with
/// `all`, each node's other cached variants follow its current one, newest first.
pub fn variants(p: &Pipeline, cache: &Cache, nodes: &[usize], all: bool) -> Result<Variants> {
    let ev = Evaluator::new(p, Some(cache), false);
    let plan = ev.plan(&Selection::default())?;
    let mut others: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    if all {
        let ids: HashSet<&str> = nodes.iter().map(|&i| p.nodes[i].id.as_str()).collect();
        for r in cache.records_of(&ids)? {
            others.entry(r.node.clone()).or_default().push(r);
        }
    }
    let mut out = Variants::default();
    for &i in p.order.iter().filter(|i| nodes.contains(i)) {
        let n = &p.nodes[i];
        let key: Option<Hash> = plan[i].as_ref().and_then(|e| e.key);
        let current = match key {
            Some(k) if plan[i].as_ref().is_some_and(|e| e.record.is_some()) => cache.record(&k)?,
            _ => None,
        };
        match &current {
            Some(r) => out.rows.push(variant(&n.stage, r, true)),
            None => out.not_cached.push(n.id.clone()),
        }
        if let Some(mut rest) = others.remove(&n.id) {
            rest.retain(|r| Some(r.key) != key);
            rest.sort_by_key(|r| std::cmp::Reverse(r.timing.finished));
            out.rows
                .extend(rest.iter().map(|r| variant(&n.stage, r, false)));
        }
    }
    Ok(out)
}

/// A record as a row.
pub fn variant(stage: &str, r: &Record, current: bool) -> Variant {
    let comps = &r.components;
    let matrix: BTreeMap<String, Value> = comps
        .get("matrix")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut params = BTreeMap::new();
    if r.kind == "command" {
        params = r.param_refs.clone();
    } else if let Some(v) = comps.get("params") {
        flatten("", v, &mut params);
        // Matrix values are merged into a native kind's params: shown once, as matrix.
        params.retain(|k, v| matrix.get(k) != Some(v));
    }
    let mut metrics = BTreeMap::new();
    for (k, &v) in &r.metrics.scalars {
        metrics.insert(k.clone(), number(v));
    }
    for (k, v) in &r.metrics.other {
        metrics.insert(k.clone(), v.clone());
    }
    Variant {
        node: r.node.clone(),
        stage: stage.to_string(),
        key: r.key.to_hex(),
        current,
        matrix,
        params,
        metrics,
        finished: r.timing.finished,
    }
}

/// A metric as JSON: finite numbers as numbers, the others as strings.
fn number(v: f64) -> Value {
    if v.is_finite() {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    } else if v.is_nan() {
        Value::String("NaN".into())
    } else if v > 0.0 {
        Value::String("inf".into())
    } else {
        Value::String("-inf".into())
    }
}

/// Nested objects into dotted names; anything else (lists included) is a leaf.
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, x, out);
            }
        }
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_becomes_a_row() {
        let now = Utc::now();
        let mut r = Record {
            key: dagrun_cache::hash_bytes(b"k"),
            node: "ppo[seed=1]".into(),
            kind: "ppo".into(),
            kind_version: 1,
            components: json!({"matrix": {"seed": 1}, "params": {"seed": 1, "lr": 0.1, "opt": {"beta": 0.9}}}),
            outputs: Default::default(),
            metrics: Default::default(),
            timing: dagrun_cache::Timing {
                started: now,
                finished: now,
                seconds: 0.0,
            },
            log: None,
            engine_version: "test".into(),
            pipeline: "p.yaml".into(),
            param_refs: Default::default(),
        };
        r.metrics.scalars.insert("loss".into(), 0.5);
        r.metrics.scalars.insert("kl".into(), f64::NAN);
        r.metrics.other.insert("ok".into(), json!(true));
        let v = variant("ppo", &r, true);
        assert_eq!(v.matrix, BTreeMap::from([("seed".to_string(), json!(1))]));
        assert_eq!(
            v.params,
            BTreeMap::from([
                ("lr".to_string(), json!(0.1)),
                ("opt.beta".to_string(), json!(0.9))
            ])
        );
        assert_eq!(v.metrics["loss"], json!(0.5));
        assert_eq!(v.metrics["kl"], json!("NaN"));
        assert_eq!(v.metrics["ok"], json!(true));
        // A command stage shows the pipeline params its fields read.
        r.kind = "command".into();
        r.components = json!({"matrix": {}, "params": {"cmd": "train --lr 0.1"}});
        r.param_refs.insert("lr".into(), json!(0.1));
        let v = variant("train", &r, false);
        assert_eq!(v.params, BTreeMap::from([("lr".to_string(), json!(0.1))]));
        assert!(!v.current);
    }
}
