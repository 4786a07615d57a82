//! Why a node must run: one enum, rendered in one place, used by the dry run, `status`,
//! `why` and `--json`.

use std::{collections::BTreeMap, fmt};

use serde::Serialize;
use serde_json::Value;

use crate::fingerprint::KeyComponents;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No record of this node exists.
    NeverRun,
    /// Its last execution failed (no record: failed nodes leave none).
    LastRunFailed {
        /// When, as `YYYY-MM-DD HH:MM:SS UTC`.
        at: String,
        error: String,
        /// The kept log, relative to the workspace when inside it.
        log: Option<String>,
    },
    /// `--rerun` named it.
    Forced,
    /// `--rerun ... --downstream`: downstream of a forced node.
    ForcedDownstream {
        of: String,
    },
    /// The node's last record was removed (by `cache gc` or `cache verify`, or dropped
    /// because an object it names turned out missing or damaged).
    RecordGone,
    KindChanged {
        old: String,
        new: String,
    },
    VersionChanged {
        old: u32,
        new: u32,
    },
    ParamChanged {
        name: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    OutsChanged {
        old: Vec<String>,
        new: Vec<String>,
    },
    InputChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
        /// A workspace input (`file:` name) that is a folder.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        folder: bool,
    },
    EnvChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// Upstream nodes must run first; the key is known only then. `cutoff`: the node
    /// has run before, so identical upstream outputs would leave it cached.
    WaitsOn {
        nodes: Vec<String>,
        cutoff: bool,
    },
    /// An input file is missing.
    MissingInput {
        path: String,
    },
    /// What the node needs of this machine or build is not there (a GPU, libtorch).
    Unavailable {
        message: String,
    },
    /// A workspace output is already there, dagrun did not write it and the cache does
    /// not hold its content: running the node, or restoring its cached output, would
    /// replace it.
    WouldDelete {
        path: String,
    },
    /// A folder on the way to a workspace output is a symbolic link: dagrun never writes
    /// or deletes through one.
    ThroughLink {
        path: String,
        /// The link, relative to the workspace, and where it points.
        link: String,
        target: String,
    },
    /// `--only` left out an upstream node that is not cached.
    OutsideSelection {
        node: String,
    },
    /// Upstream failed.
    UpstreamFailed {
        node: String,
    },
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(unset)".to_string(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 60 {
                format!("{}…", &s[..60])
            } else {
                s
            }
        }
    }
}

/// An environment value of a key: a variable of `fingerprint.env` that is unset is the
/// empty string there, as one set to nothing is.
fn env_value(v: &Option<String>) -> String {
    match v.as_deref() {
        None => "(unset)".to_string(),
        Some("") => "(unset or empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

fn short_hash(h: &Option<String>) -> String {
    match h {
        None => "(none)".to_string(),
        Some(h) => h.chars().take(12).collect(),
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NeverRun => write!(f, "never run"),
            Reason::LastRunFailed { at, error, log } => {
                write!(f, "its last run failed ({at}): {error}")?;
                if let Some(l) = log {
                    write!(f, "; log: {l}")?;
                }
                Ok(())
            }
            Reason::Forced => write!(f, "forced by --rerun"),
            Reason::ForcedDownstream { of } => {
                write!(f, "forced: downstream of `{of}` (--downstream)")
            }
            Reason::RecordGone => write!(
                f,
                "its last record was removed from the cache (by `cache gc` or `cache verify`, \
                 or because an object it names was missing or damaged)"
            ),
            Reason::KindChanged { old, new } => write!(f, "kind changed: {old} → {new}"),
            Reason::VersionChanged { old, new } => write!(f, "kind version changed: {old} → {new}"),
            Reason::ParamChanged { name, old, new } => {
                write!(f, "param `{name}` changed: {} → {}", short(old), short(new))
            }
            Reason::OutsChanged { old, new } => write!(f, "outs changed: {old:?} → {new:?}"),
            Reason::InputChanged {
                name,
                old,
                new,
                folder,
            } => {
                let what = match name.strip_prefix("file:") {
                    Some(p) if *folder => format!("input folder `{p}`"),
                    Some(p) => format!("input file `{p}`"),
                    None => format!("upstream output `{name}`"),
                };
                match (old, new) {
                    (None, Some(_)) => write!(f, "new {what}"),
                    (Some(_), None) => write!(f, "{what} no longer used"),
                    _ => write!(
                        f,
                        "{what} changed: {} → {}",
                        short_hash(old),
                        short_hash(new)
                    ),
                }
            }
            Reason::EnvChanged { name, old, new } => write!(
                f,
                "environment `{name}` changed: {} → {}",
                env_value(old),
                env_value(new)
            ),
            Reason::WaitsOn { nodes, cutoff } => {
                let n: Vec<String> = nodes.iter().take(3).map(|s| format!("`{s}`")).collect();
                let more = if nodes.len() > 3 {
                    format!(" and {} more", nodes.len() - 3)
                } else {
                    String::new()
                };
                write!(f, "after {}{more}", n.join(", "))?;
                if *cutoff {
                    write!(f, "; runs unless their outputs come out identical")?;
                }
                Ok(())
            }
            Reason::MissingInput { path } => write!(f, "input `{path}` is missing"),
            Reason::Unavailable { message } => write!(f, "{message}"),
            Reason::WouldDelete { path } => write!(
                f,
                "output `{path}` exists and dagrun did not write it: running or restoring the \
                 node would replace it (move it away or delete it, then run again)"
            ),
            Reason::ThroughLink { path, link, target } => write!(
                f,
                "output `{path}` lies behind the symbolic link `{link}` (to `{target}`): dagrun \
                 never writes, replaces or deletes through a link (replace the link with a \
                 folder, then run again)"
            ),
            Reason::OutsideSelection { node } => write!(
                f,
                "needs `{node}`, which is outside the selection and not cached (use --until, or run it first)"
            ),
            Reason::UpstreamFailed { node } => write!(f, "upstream `{node}` failed"),
        }
    }
}

/// The differences between the components of the last run and the current ones.
pub fn diff(old: &KeyComponents, new: &KeyComponents) -> Vec<Reason> {
    let mut out = Vec::new();
    if old.kind != new.kind {
        out.push(Reason::KindChanged {
            old: old.kind.clone(),
            new: new.kind.clone(),
        });
    }
    if old.kind_version != new.kind_version {
        out.push(Reason::VersionChanged {
            old: old.kind_version,
            new: new.kind_version,
        });
    }
    let mut po = BTreeMap::new();
    let mut pn = BTreeMap::new();
    flatten("", &old.params, &mut po);
    flatten("", &new.params, &mut pn);
    for (k, v) in &old.matrix {
        po.insert(format!("matrix.{k}"), v.clone());
    }
    for (k, v) in &new.matrix {
        pn.insert(format!("matrix.{k}"), v.clone());
    }
    for name in po
        .keys()
        .chain(pn.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (po.get(name), pn.get(name));
        if a != b {
            out.push(Reason::ParamChanged {
                name: name.clone(),
                old: a.cloned(),
                new: b.cloned(),
            });
        }
    }
    if old.outs != new.outs {
        out.push(Reason::OutsChanged {
            old: old.outs.clone(),
            new: new.outs.clone(),
        });
    }
    diff_maps(&old.inputs, &new.inputs, |name, old, new| {
        out.push(Reason::InputChanged {
            name,
            old,
            new,
            folder: false,
        })
    });
    diff_maps(&old.env, &new.env, |name, old, new| {
        out.push(Reason::EnvChanged { name, old, new })
    });
    if out.is_empty() && old.schema != new.schema {
        out.push(Reason::ParamChanged {
            name: "(key schema)".into(),
            old: Some(Value::String(old.schema.clone())),
            new: Some(Value::String(new.schema.clone())),
        });
    }
    out
}

fn diff_maps(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    mut push: impl FnMut(String, Option<String>, Option<String>),
) {
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            push(k.clone(), x.cloned(), y.cloned());
        }
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, x) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_the_changed_component() {
        let base = KeyComponents {
            schema: crate::fingerprint::KEY_SCHEMA.into(),
            kind: "command".into(),
            kind_version: 1,
            matrix: BTreeMap::new(),
            params: json!({"cmd": "echo a", "opt": {"lr": 0.1}}),
            outs: vec!["a".into()],
            inputs: [("file:data.txt".to_string(), "aaaa".to_string())].into(),
            env: BTreeMap::new(),
        };
        let mut new = base.clone();
        new.params = json!({"cmd": "echo a", "opt": {"lr": 0.2}});
        new.inputs.insert("file:data.txt".into(), "bbbb".into());
        new.kind_version = 2;
        let r = diff(&base, &new);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].to_string(), "kind version changed: 1 → 2");
        assert_eq!(r[1].to_string(), "param `opt.lr` changed: 0.1 → 0.2");
        assert_eq!(
            r[2].to_string(),
            "input file `data.txt` changed: aaaa → bbbb"
        );
        assert!(diff(&base, &base).is_empty());
        let mut env = base.clone();
        env.env.insert("env:SEED".into(), "".into());
        let mut env2 = env.clone();
        env2.env.insert("env:SEED".into(), "3".into());
        assert_eq!(
            diff(&env, &env2)[0].to_string(),
            "environment `env:SEED` changed: (unset or empty) → 3"
        );
        let folder = Reason::InputChanged {
            name: "file:data".into(),
            old: Some("aaaa".into()),
            new: Some("bbbb".into()),
            folder: true,
        };
        assert_eq!(
            folder.to_string(),
            "input folder `data` changed: aaaa → bbbb"
        );
    }
}
