//! Matrix expansion: a stage's `matrix` (with `include` / `exclude`) into combinations.
use super::*;

impl Builder<'_> {
    /// Expands a stage's matrix into combinations (one empty combination without one).
    pub(super) fn matrix(
        &mut self,
        name: &str,
        st: &StageSpec,
        params: &IndexMap<String, Value>,
    ) -> Result<Vec<IndexMap<String, Value>>, ()> {
        let mpath = ypath(&["stages", name, "matrix"]);
        let Some(m) = &st.matrix else {
            return Ok(vec![IndexMap::new()]);
        };
        let serde_yaml::Value::Mapping(map) = m else {
            self.err(&mpath, "malformed matrix: expected a map from names to lists of values, e.g. `matrix: {seed: [0, 1, 2]}`");
            return Err(());
        };
        let empty = IndexMap::new();
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                self.err(&mpath, "malformed matrix: names must be strings");
                return Err(());
            };
            let mut kpath = mpath.clone();
            kpath.push(Seg::Key(key.to_string()));
            let mut refs = Vec::new();
            let resolved = interp::resolve(
                v,
                &mut Scope {
                    params,
                    matrix: &empty,
                    refs: &mut refs,
                },
            );
            let resolved = match resolved {
                Ok(r) if refs.is_empty() => r,
                Ok(_) => {
                    self.err(&kpath, "malformed matrix: values cannot refer to stages");
                    return Err(());
                }
                Err(e) => {
                    self.err(&kpath, e);
                    return Err(());
                }
            };
            if key == "include" || key == "exclude" {
                let Value::Array(items) = resolved else {
                    self.err(
                        &kpath,
                        format!("malformed matrix: `{key}` must be a list of maps"),
                    );
                    return Err(());
                };
                for it in items {
                    let Value::Object(o) = it else {
                        self.err(
                            &kpath,
                            format!("malformed matrix: `{key}` must be a list of maps"),
                        );
                        return Err(());
                    };
                    if key == "include" {
                        include.push(o)
                    } else {
                        exclude.push(o)
                    }
                }
                continue;
            }
            if !valid_stage_name(key) {
                self.err(
                    &kpath,
                    format!(
                        "malformed matrix: invalid name `{key}` (use letters, digits, `_`, `-`)"
                    ),
                );
                return Err(());
            }
            match resolved {
                Value::Array(vals) if !vals.is_empty() => {
                    if let Some(bad) = vals.iter().position(|x| x.is_array() || x.is_object()) {
                        let mut ipath = kpath.clone();
                        ipath.push(Seg::Index(bad));
                        self.err(&ipath, format!("malformed matrix: values of `{key}` must be scalars (text, numbers, booleans)"));
                        return Err(());
                    }
                    axes.push((key.to_string(), vals));
                }
                Value::Array(_) => {
                    self.err(&kpath, format!("malformed matrix: `{key}` has no values"));
                    return Err(());
                }
                _ => {
                    self.err(&kpath, format!("malformed matrix: `{key}` must be a list of values, e.g. `{key}: [0, 1]`"));
                    return Err(());
                }
            }
        }
        let mut combos: Vec<IndexMap<String, Value>> = vec![IndexMap::new()];
        for (k, vals) in &axes {
            let mut next = Vec::new();
            for c in &combos {
                for v in vals {
                    let mut c2 = c.clone();
                    c2.insert(k.clone(), v.clone());
                    next.push(c2);
                }
            }
            combos = next;
        }
        let names: Vec<&String> = axes.iter().map(|(k, _)| k).collect();
        for (what, list) in [("exclude", &exclude), ("include", &include)] {
            for o in list {
                if let Some(bad) = o.keys().find(|k| !names.contains(k)) {
                    self.err(
                        &mpath,
                        format!(
                            "malformed matrix: `{what}` names `{bad}`, which is not a matrix key"
                        ),
                    );
                    return Err(());
                }
            }
        }
        let matches = |o: &serde_json::Map<String, Value>, c: &IndexMap<String, Value>| {
            o.iter().all(|(k, v)| {
                c.get(k)
                    .map(|cv| scalar_string(cv) == scalar_string(v))
                    .unwrap_or(false)
            })
        };
        // An `exclude` entry that matches nothing is most likely a typo of a value.
        if let Some(n) = exclude
            .iter()
            .position(|o| !combos.iter().any(|c| matches(o, c)))
        {
            let mut epath = mpath.clone();
            epath.push(Seg::Key("exclude".into()));
            epath.push(Seg::Index(n));
            let shown: Vec<String> = exclude[n]
                .iter()
                .map(|(k, v)| format!("{k}: {}", scalar_string(v)))
                .collect();
            self.err(
                &epath,
                format!(
                    "malformed matrix: `exclude` entry {{{}}} matches no combination (a typo of a value?)",
                    shown.join(", ")
                ),
            );
            return Err(());
        }
        combos.retain(|c| !exclude.iter().any(|o| matches(o, c)));
        for o in include {
            if o.len() != names.len() {
                self.err(
                    &mpath,
                    "malformed matrix: each `include` entry must give every matrix key",
                );
                return Err(());
            }
            let c: IndexMap<String, Value> = names
                .iter()
                .map(|k| ((*k).clone(), o[k.as_str()].clone()))
                .collect();
            if !combos.contains(&c) {
                combos.push(c);
            }
        }
        if combos.is_empty() {
            self.err(&mpath, "malformed matrix: every combination is excluded");
            return Err(());
        }
        Ok(combos)
    }
}
