//! Overrides: `-S KEY=VALUE` and `--params FILE`, applied to the pipeline's YAML value
//! tree before anything is resolved, so that an override is an ordinary change of the
//! resolved params (its own keys, `why` names it, switching back finds the earlier
//! variant cached).
//!
//! A KEY is `params.NAME[.SUB...]` (a pipeline param, or a part of one) or
//! `stages.STAGE.params.NAME[.SUB...]` (a native kind's param, written in the pipeline or
//! not). A numeric segment picks an item of a list (`params.seeds.0`). VALUE is YAML
//! (`3e-5`, `[1, 2]`, `{n_layer: 4}`). A key that the pipeline (or the stage's kind)
//! does not have is refused: a typo must not silently run the unchanged pipeline.
//!
//! Every override keeps its origin (the `-S` text, or the `--params` file and the key's
//! line), and errors found later at or under an overridden key point there instead of
//! at the line of the pipeline file the value no longer comes from.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value as Yaml};

use crate::{
    error::{Location, SpecError, SpecErrors},
    locate::{Positions, Seg},
    stage::Registry,
};

/// One override: where it writes, what, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The dotted key, split (`["params", "lr"]`).
    pub key: Vec<String>,
    pub value: Yaml,
    /// Where errors about it point: the `-S` argument, or the key in a `--params` file.
    pub origin: Location,
    /// `KEY=VALUE` for the run history: a `-S` as the user wrote it, a `--params` leaf
    /// with its value on one line.
    pub shown: String,
}

/// The overrides of one command line, applied in order (a later one wins).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides(pub Vec<Override>);

impl Override {
    /// Reads `KEY=VALUE` as given to `-S`/`--set`. The error says what is wrong with it,
    /// the argument included.
    pub fn parse_set(text: &str) -> Result<Override, String> {
        let origin = Location {
            file: PathBuf::from(format!("-S {text}")),
            line: 0,
            col: 0,
        };
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!(
                "-S {text}: an override is KEY=VALUE (`-S params.lr=3e-5`, \
                 `-S stages.train.params.epochs=2`)"
            ));
        };
        let key = split_key(key.trim()).map_err(|e| format!("-S {text}: {e}"))?;
        if value.trim().is_empty() {
            return Err(format!(
                "-S {text}: no value after `=` (write `''` for an empty string, `null` for null)"
            ));
        }
        let parsed: Yaml = serde_yaml::from_str(value)
            .map_err(|e| format!("-S {text}: the value is not YAML: {e}"))?;
        Ok(Override {
            shown: format!("{}={}", key.join("."), value.trim()),
            key,
            value: parsed,
            origin,
        })
    }

    /// The key as written (`params.lr`).
    pub fn key_text(&self) -> String {
        self.key.join(".")
    }

    /// `KEY=VALUE`, for the run history.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// The key as a path into the document, for locating errors (a numeric segment
    /// also matches a list index, see [`Overrides::origin_of`]).
    fn segs(&self) -> Vec<Seg> {
        self.key.iter().map(|k| Seg::Key(k.clone())).collect()
    }
}

/// A value on one line (`[1, 2]`, `{a: 1}`, `3e-05`).
fn inline(v: &Yaml) -> String {
    match serde_json::to_value(v) {
        Ok(j) => j.to_string(),
        Err(_) => serde_yaml::to_string(v)
            .unwrap_or_default()
            .trim_end()
            .replace('\n', " "),
    }
}

/// `params.a.b` → `["params", "a", "b"]`; refuses keys outside the two namespaces.
fn split_key(key: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = key.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{key}` has an empty segment"));
    }
    match parts.first().map(String::as_str) {
        Some("params") if parts.len() >= 2 => Ok(parts),
        Some("stages") if parts.len() >= 4 && parts[2] == "params" => Ok(parts),
        _ => Err(format!(
            "`{key}` cannot be set: a KEY is `params.NAME` (a pipeline param) or \
             `stages.STAGE.params.NAME` (a native stage's param)"
        )),
    }
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads `-S` arguments.
    pub fn from_sets(sets: &[String]) -> Result<Overrides, String> {
        sets.iter()
            .map(|s| Override::parse_set(s))
            .collect::<Result<_, _>>()
            .map(Overrides)
    }

    /// Reads a `--params` file: a YAML map merged over the pipeline's `params` (nested
    /// maps key by key; anything else replaces the value). Each leaf becomes an
    /// override located at its line in the file.
    pub fn from_params_file(file: &Path, src: &str) -> Result<Overrides, SpecErrors> {
        let at = |line, col| Location {
            file: file.to_path_buf(),
            line,
            col,
        };
        let doc: Yaml = serde_yaml::from_str(src).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            SpecError::new(at(line, col), format!("not a YAML file of params: {e}"))
        })?;
        let pos = Positions::read(src).unwrap_or_default();
        let Yaml::Mapping(map) = doc else {
            return Err(SpecError::new(
                at(1, 1),
                "a params file is a YAML map of pipeline params (`lr: 3e-5`)",
            )
            .into());
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut stack: Vec<(Vec<String>, Mapping)> = vec![(vec![], map)];
        while let Some((prefix, map)) = stack.pop() {
            // Reversed so that the overrides keep the file's order.
            let mut items: Vec<(Yaml, Yaml)> = map.into_iter().collect();
            items.reverse();
            for (k, v) in items {
                let Some(name) = scalar_key(&k) else {
                    let segs: Vec<Seg> = prefix.iter().map(|p| Seg::Key(p.clone())).collect();
                    let (line, col) = pos.find(&segs).unwrap_or((1, 1));
                    errors.push(SpecError::new(
                        at(line, col),
                        "a param name must be a string or a number",
                    ));
                    continue;
                };
                let mut key = prefix.clone();
                key.push(name);
                match v {
                    Yaml::Mapping(m) if !m.is_empty() => stack.push((key, m)),
                    v => {
                        let segs: Vec<Seg> = key.iter().map(|p| Seg::Key(p.clone())).collect();
                        let (line, col) = pos.find(&segs).unwrap_or((0, 0));
                        let mut full = vec!["params".to_string()];
                        full.extend(key);
                        out.push(Override {
                            shown: format!("{}={}", full.join("."), inline(&v)),
                            key: full,
                            value: v,
                            origin: at(line, col),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        // The stack visits nested maps after their siblings: restore the file's order.
        out.sort_by_key(|o| (o.origin.line, o.origin.col));
        Ok(Overrides(out))
    }

    /// Every override as `KEY=VALUE`, in order.
    pub fn describe(&self) -> Vec<String> {
        self.0.iter().map(Override::describe).collect()
    }

    /// Applies the overrides to a pipeline document. Checks that each key exists (in the
    /// document, or for a stage's param among its kind's params).
    pub fn apply(&self, doc: &mut Yaml, registry: &Registry) -> Result<(), SpecErrors> {
        let mut errors = Vec::new();
        for o in &self.0 {
            if let Err(m) = apply_one(doc, o, registry) {
                errors.push(SpecError::new(o.origin.clone(), m));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errors))
        }
    }

    /// The last override of a pipeline param that a message's `${params...}` reference
    /// names (the param itself, or a part of it).
    pub fn referenced_in(&self, msg: &str) -> Option<&Override> {
        self.0.iter().rev().find(|o| {
            if o.key[0] != "params" {
                return false;
            }
            let needle = format!("${{{}", o.key_text());
            msg.match_indices(&needle).any(|(at, _)| {
                matches!(
                    msg[at + needle.len()..].chars().next(),
                    Some('}') | Some('.')
                )
            })
        })
    }

    /// Where an error at `path` (a key path of the pipeline document) should point: the
    /// last override whose key is `path` or encloses it.
    pub fn origin_of(&self, path: &[Seg]) -> Option<&Location> {
        self.0
            .iter()
            .rev()
            .find(|o| {
                let segs = o.segs();
                segs.len() <= path.len()
                    && segs.iter().zip(path).all(|(a, b)| match (a, b) {
                        (Seg::Key(x), Seg::Key(y)) => x == y,
                        (Seg::Key(x), Seg::Index(i)) => x.parse::<usize>().ok() == Some(*i),
                        _ => false,
                    })
            })
            .map(|o| &o.origin)
    }
}

fn scalar_key(k: &Yaml) -> Option<String> {
    match k {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a value is, for messages.
fn what(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// The names of a map's keys, for messages (`a, b`).
fn names(m: &Mapping) -> String {
    let v: Vec<String> = m.keys().filter_map(scalar_key).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn apply_one(doc: &mut Yaml, o: &Override, registry: &Registry) -> Result<(), String> {
    let root = doc
        .as_mapping_mut()
        .ok_or("the pipeline is not a YAML map")?;
    let key_text = o.key_text();
    if o.key[0] == "params" {
        let Some(Yaml::Mapping(params)) = root.get_mut("params") else {
            return Err(format!(
                "no param `{}`: the pipeline has no `params`",
                o.key[1]
            ));
        };
        if !params.contains_key(o.key[1].as_str()) {
            return Err(format!(
                "no param `{}` (params: {})",
                o.key[1],
                names(params)
            ));
        }
        return set_in(params, &o.key[1..], "params", o.value.clone(), &key_text);
    }
    // stages.STAGE.params.NAME...
    let stage = &o.key[1];
    let Some(Yaml::Mapping(stages)) = root.get_mut("stages") else {
        return Err("the pipeline has no `stages`".to_string());
    };
    let known = names(stages);
    let Some(Yaml::Mapping(st)) = stages.get_mut(stage.as_str()) else {
        return Err(format!("no stage `{stage}` (stages: {known})"));
    };
    let kind_name = st
        .get("kind")
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(kind) = registry.get(&kind_name) else {
        return Err(format!(
            "stage `{stage}` has no known kind (`{kind_name}`), so no params to set"
        ));
    };
    if kind.takes_cmd() {
        return Err(format!(
            "stage `{stage}` is a `{kind_name}` stage, which has no params: set the \
             pipeline params its `cmd` reads (`-S params.NAME=VALUE`)"
        ));
    }
    let name = &o.key[3];
    let params = match st.entry(Yaml::String("params".into())) {
        serde_yaml::mapping::Entry::Occupied(e) => e.into_mut(),
        serde_yaml::mapping::Entry::Vacant(e) => e.insert(Yaml::Mapping(Mapping::new())),
    };
    let Yaml::Mapping(params) = params else {
        return Err(format!("`stages.{stage}.params` is not a map"));
    };
    if !params.contains_key(name.as_str()) {
        // Not written in the pipeline: one of the kind's params with a default.
        let schema = kind.params_schema();
        let props = schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(serde_json::Value::as_object);
        match props {
            Some(p) if p.contains_key(name.as_str()) => {
                if o.key.len() > 4 {
                    // A part of a param left at its default: the maps down to the value
                    // (the kind fills in the rest of it, or says what it lacks).
                    let mut v = o.value.clone();
                    for k in o.key[4..].iter().rev() {
                        let mut m = Mapping::new();
                        m.insert(Yaml::String(k.clone()), v);
                        v = Yaml::Mapping(m);
                    }
                    params.insert(Yaml::String(name.clone()), v);
                    return Ok(());
                }
            }
            _ => {
                let list = props
                    .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| "none".into());
                return Err(format!(
                    "stage `{stage}` ({kind_name}) has no param `{name}` (params: {list})"
                ));
            }
        }
    }
    let at = format!("stages.{stage}.params");
    set_in(params, &o.key[3..], &at, o.value.clone(), &key_text)
}

/// Sets `key` (at least one segment) inside `map`, whose own key path is `at`.
fn set_in(
    map: &mut Mapping,
    key: &[String],
    at: &str,
    value: Yaml,
    full: &str,
) -> Result<(), String> {
    let here = format!("{at}.{}", key[0]);
    if key.len() == 1 {
        map.insert(Yaml::String(key[0].clone()), value);
        return Ok(());
    }
    let Some(next) = map.get_mut(key[0].as_str()) else {
        return Err(format!(
            "`{at}` has no `{}` (it has: {}), so `{full}` cannot be set",
            key[0],
            names(map)
        ));
    };
    set_in_value(next, &key[1..], &here, value, full)
}

fn set_in_value(
    v: &mut Yaml,
    key: &[String],
    at: &str,
    value: Yaml,
    full: &str,
) -> Result<(), String> {
    match v {
        Yaml::Mapping(m) => {
            if !m.contains_key(key[0].as_str()) {
                return Err(format!("`{at}` has no `{}` (it has: {})", key[0], names(m)));
            }
            set_in(m, key, at, value, full)
        }
        Yaml::Sequence(items) => {
            let len = items.len();
            let i = key[0]
                .parse::<usize>()
                .ok()
                .filter(|&i| i < len)
                .ok_or_else(|| {
                    format!(
                        "`{at}` is a list of {len} item(s): `{}` is not an index of it (0 to {})",
                        key[0],
                        len.saturating_sub(1)
                    )
                })?;
            if key.len() == 1 {
                items[i] = value;
                Ok(())
            } else {
                set_in_value(&mut items[i], &key[1..], &format!("{at}.{i}"), value, full)
            }
        }
        other => Err(format!(
            "`{at}` is {}, not a map: `{full}` cannot be set",
            what(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Yaml {
        serde_yaml::from_str(
            "params:\n  lr: 0.1\n  seeds: [1, 2]\n  opt: {beta: 0.9}\nstages:\n  a:\n    kind: command\n    cmd: echo\n",
        )
        .unwrap()
    }

    fn set(doc: &mut Yaml, s: &str) -> Result<(), String> {
        let o = Overrides(vec![Override::parse_set(s)?]);
        o.apply(doc, &Registry::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_yaml() {
        let o = Override::parse_set("params.seeds=[1, 2, 3]").unwrap();
        assert_eq!(o.key, ["params", "seeds"]);
        assert_eq!(o.value, serde_yaml::from_str::<Yaml>("[1, 2, 3]").unwrap());
        let o = Override::parse_set("params.lr=3e-5").unwrap();
        assert_eq!(o.value.as_f64(), Some(3e-5));
        assert_eq!(o.describe(), "params.lr=3e-5");
        let o = Override::parse_set("params.name=a=b").unwrap();
        assert_eq!(o.value.as_str(), Some("a=b"));
        assert!(Override::parse_set("params.lr")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(Override::parse_set("params.lr=")
            .unwrap_err()
            .contains("no value"));
        assert!(Override::parse_set("params.lr=[1,")
            .unwrap_err()
            .contains("not YAML"));
        assert!(Override::parse_set("params..x=1")
            .unwrap_err()
            .contains("empty segment"));
        assert!(Override::parse_set("defaults.device=cpu")
            .unwrap_err()
            .contains("cannot be set"));
        assert!(Override::parse_set("stages.a.cmd=x")
            .unwrap_err()
            .contains("cannot be set"));
    }

    #[test]
    fn existing_keys_are_set_and_others_refused() {
        let mut d = doc();
        set(&mut d, "params.lr=0.5").unwrap();
        set(&mut d, "params.seeds.1=7").unwrap();
        set(&mut d, "params.opt.beta=0.99").unwrap();
        assert_eq!(d["params"]["lr"].as_f64(), Some(0.5));
        assert_eq!(d["params"]["seeds"][1].as_u64(), Some(7));
        assert_eq!(d["params"]["opt"]["beta"].as_f64(), Some(0.99));
        let e = set(&mut d, "params.lrr=1").unwrap_err();
        assert_eq!(
            e,
            "-S params.lrr=1: no param `lrr` (params: lr, seeds, opt)"
        );
        let e = set(&mut d, "params.opt.gamma=1").unwrap_err();
        assert!(
            e.contains("`params.opt` has no `gamma` (it has: beta)"),
            "{e}"
        );
        let e = set(&mut d, "params.seeds.5=1").unwrap_err();
        assert!(e.contains("list of 2 item(s)"), "{e}");
        let e = set(&mut d, "params.lr.x=1").unwrap_err();
        assert!(e.contains("`params.lr` is a number, not a map"), "{e}");
        let e = set(&mut d, "stages.b.params.x=1").unwrap_err();
        assert!(e.contains("no stage `b` (stages: a)"), "{e}");
    }

    struct Fake;

    impl crate::stage::StageKind for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "a kind with params `lr` and `opt`"
        }
        fn params_schema(&self) -> Option<serde_json::Value> {
            Some(serde_json::json!({"properties": {"lr": {}, "opt": {}}}))
        }
        fn run(
            &self,
            _ctx: &mut crate::stage::StageContext,
        ) -> Result<(), crate::stage::StageError> {
            Ok(())
        }
    }

    #[test]
    fn a_native_stage_takes_its_kinds_params_written_or_not() {
        let mut reg = Registry::new();
        reg.register(std::sync::Arc::new(Fake));
        let mut d: Yaml = serde_yaml::from_str(
            "stages:\n  t:\n    kind: fake\n    params: {lr: 1}\n  c:\n    kind: command\n    cmd: x\n",
        )
        .unwrap();
        let set = |d: &mut Yaml, s: &str| {
            Overrides(vec![Override::parse_set(s).unwrap()])
                .apply(d, &reg)
                .map_err(|e| e.to_string())
        };
        set(&mut d, "stages.t.params.lr=2").unwrap();
        set(&mut d, "stages.t.params.opt.beta=3").unwrap();
        assert_eq!(d["stages"]["t"]["params"]["lr"].as_u64(), Some(2));
        assert_eq!(d["stages"]["t"]["params"]["opt"]["beta"].as_u64(), Some(3));
        let e = set(&mut d, "stages.t.params.nope=1").unwrap_err();
        assert!(
            e.ends_with("stage `t` (fake) has no param `nope` (params: lr, opt)"),
            "{e}"
        );
        // (This registry has no `command` kind; tests/cli/experiments.rs checks that one.)
        let e = set(&mut d, "stages.c.params.x=1").unwrap_err();
        assert!(e.contains("no known kind (`command`)"), "{e}");
    }

    #[test]
    fn a_params_file_is_merged_leaf_by_leaf() {
        let src = "lr: 0.2\nopt:\n  beta: 0.5\n";
        let o = Overrides::from_params_file(Path::new("p.yaml"), src).unwrap();
        assert_eq!(o.describe(), ["params.lr=0.2", "params.opt.beta=0.5"]);
        assert_eq!(o.0[1].origin.to_string(), "p.yaml:3:9");
        let mut d = doc();
        o.apply(&mut d, &Registry::new()).unwrap();
        assert_eq!(d["params"]["opt"]["beta"].as_f64(), Some(0.5));
        let bad = Overrides::from_params_file(Path::new("p.yaml"), "- 1\n").unwrap_err();
        assert!(
            bad.to_string().starts_with("p.yaml:1:1: a params file"),
            "{bad}"
        );
        let o = Overrides::from_params_file(Path::new("p.yaml"), "nope: 1\n").unwrap();
        let e = o.apply(&mut doc(), &Registry::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.yaml:1:7: no param `nope` (params: lr, seeds, opt)"
        );
    }

    #[test]
    fn errors_under_an_overridden_key_point_at_the_override() {
        let o = Overrides::from_sets(&["params.opt=1".into(), "params.seeds.0=3".into()]).unwrap();
        let k = |s: &[&str]| {
            s.iter()
                .map(|x| Seg::Key(x.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            o.origin_of(&k(&["params", "opt", "beta"]))
                .unwrap()
                .to_string(),
            "-S params.opt=1"
        );
        let mut p = k(&["params", "seeds"]);
        p.push(Seg::Index(0));
        assert_eq!(o.origin_of(&p).unwrap().to_string(), "-S params.seeds.0=3");
        assert!(o.origin_of(&k(&["params", "lr"])).is_none());
        assert!(o.origin_of(&k(&["params"])).is_none());
        let m = "`${params.opt.beta}` is a list or map and cannot be placed inside text";
        assert_eq!(o.referenced_in(m).unwrap().key_text(), "params.opt");
        assert!(o.referenced_in("`${params.optimizer}` is a list").is_none());
    }
}
