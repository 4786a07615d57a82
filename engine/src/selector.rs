//! Selectors name a stage or part of a sweep: `train`, `train[seed=1]`,
//! `ppo[method=vanilla]`. Node ids are fully specified selectors.

use indexmap::IndexMap;

/// `stage[key=value,...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub stage: String,
    pub filter: Vec<(String, String)>,
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        let (stage, rest) = match s.find('[') {
            None => (s, None),
            Some(i) => (&s[..i], Some(&s[i..])),
        };
        if !valid_stage_name(stage) {
            return Err(format!(
                "`{s}` is not a stage selector (expected `stage` or `stage[key=value,...]`; stage names use letters, digits, `_` and `-`)"
            ));
        }
        let mut filter = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| format!("`{s}`: a filter is written `[key=value,...]`"))?;
            for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{s}`: `{part}` is not `key=value`"))?;
                filter.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Ok(Selector {
            stage: stage.to_string(),
            filter,
        })
    }

    /// Whether a node of `self.stage` with these matrix values is selected.
    pub fn matches(&self, stage: &str, matrix: &IndexMap<String, serde_json::Value>) -> bool {
        self.stage == stage
            && self.filter.iter().all(|(k, v)| {
                matrix
                    .get(k)
                    .map(|mv| scalar_string(mv) == *v)
                    .unwrap_or(false)
            })
    }
}

/// Stage names: letters, digits, `_` and `-` (no dots: `${stages.NAME.OUTPUT}` splits on
/// the first dot after the name).
pub fn valid_stage_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The text of a scalar as it appears in node ids and `${...}` substitutions.
pub fn scalar_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// The id of a node: the stage name, with its matrix values in declaration order.
pub fn node_id(stage: &str, matrix: &IndexMap<String, serde_json::Value>) -> String {
    if matrix.is_empty() {
        return stage.to_string();
    }
    let parts: Vec<String> = matrix
        .iter()
        .map(|(k, v)| format!("{k}={}", scalar_string(v)))
        .collect();
    format!("{stage}[{}]", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let s = Selector::parse("ppo[method=vanilla, seed=3]").unwrap();
        assert_eq!(s.stage, "ppo");
        let mut m = IndexMap::new();
        m.insert("method".to_string(), serde_json::json!("vanilla"));
        m.insert("seed".to_string(), serde_json::json!(3));
        assert!(s.matches("ppo", &m));
        m.insert("seed".to_string(), serde_json::json!(4));
        assert!(!s.matches("ppo", &m));
        assert_eq!(node_id("ppo", &m), "ppo[method=vanilla,seed=4]");
        assert!(Selector::parse("a.b").is_err());
        assert!(Selector::parse("a[seed]").is_err());
        assert!(Selector::parse("a[seed=1").is_err());
    }
}
