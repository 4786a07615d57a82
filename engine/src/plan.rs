//! The planner: what state each node is in and why. The dry run prints its result; the
//! executor calls the same [`Evaluator::evaluate`] on each node once its upstream is
//! settled, so the plan cannot disagree with what runs.

use std::collections::{BTreeMap, BTreeSet};

use dagrun_cache::{Artifact, Cache, Hash, RecordHead};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    fingerprint::{KeyComponents, KEY_SCHEMA},
    interp,
    pipeline::{DepSource, Node, Pipeline},
    reason::{diff, Reason},
    selector::scalar_string,
    workspace::{sub_hash, Workspace},
};

/// A node's state before it runs.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// A record with this key exists; `restore` lists workspace outputs to put back.
    Cached { restore: Vec<String> },
    /// It must run.
    Stale { reasons: Vec<Reason> },
    /// `--rerun` asked for it.
    Forced { reasons: Vec<Reason> },
    /// Upstream must run first; it runs unless their outputs come out identical.
    Blocked { reasons: Vec<Reason> },
    /// Inputs are missing: it cannot run.
    Missing { reasons: Vec<Reason> },
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Cached { .. } => "cached",
            State::Stale { .. } => "stale",
            State::Forced { .. } => "forced",
            State::Blocked { .. } => "blocked",
            State::Missing { .. } => "missing",
        }
    }

    pub fn reasons(&self) -> &[Reason] {
        match self {
            State::Cached { .. } => &[],
            State::Stale { reasons }
            | State::Forced { reasons }
            | State::Blocked { reasons }
            | State::Missing { reasons } => reasons,
        }
    }

    /// Whether the node runs for sure (Blocked nodes may be cut off).
    pub fn will_run(&self) -> bool {
        matches!(self, State::Stale { .. } | State::Forced { .. })
    }
}

/// The result of evaluating one node.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub state: State,
    /// Known when every upstream output is known.
    pub components: Option<KeyComponents>,
    pub key: Option<Hash>,
    /// The record's outputs and timing, when cached.
    pub record: Option<RecordHead>,
}

/// Which nodes take part, and which are forced.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `None`: every node.
    pub nodes: Option<BTreeSet<usize>>,
    pub forced: BTreeSet<usize>,
    /// Node → the forced node it is downstream of (`--downstream`).
    pub forced_downstream: BTreeMap<usize, String>,
}

impl Selection {
    pub fn includes(&self, i: usize) -> bool {
        self.nodes.as_ref().map(|s| s.contains(&i)).unwrap_or(true)
    }
}

/// Evaluates nodes against the cache and the workspace.
pub struct Evaluator<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: Option<&'a Cache>,
    pub ws: Workspace<'a>,
    env_vars: BTreeMap<String, String>,
    /// GPUs this machine offers for `resources.gpus` of local nodes; `None`: not checked.
    gpus: Option<u32>,
}

impl<'a> Evaluator<'a> {
    pub fn new(pipeline: &'a Pipeline, cache: Option<&'a Cache>, write_stats: bool) -> Self {
        let env_vars = pipeline
            .env_keys
            .iter()
            .map(|k| (format!("env:{k}"), std::env::var(k).unwrap_or_default()))
            .collect();
        Evaluator {
            pipeline,
            cache,
            ws: Workspace::new(&pipeline.workdir, cache, write_stats)
                .skipping(dagrun_folders(pipeline, cache)),
            env_vars,
            gpus: None,
        }
    }

    /// Checks `resources.gpus` of local nodes against the `gpus` this machine has: a node
    /// asking for more is `Missing` (like a device this build lacks).
    pub fn with_gpus(mut self, gpus: u32) -> Self {
        self.gpus = Some(gpus);
        self
    }

    /// Evaluates node `i`. `outputs(u)` gives the outputs of upstream node `u` when they
    /// are known (it is cached or has run), `None` while it is pending. A node is
    /// `Missing` when running it, or restoring its outputs when it is cached, would
    /// replace a workspace file that dagrun did not write and could not restore
    /// ([`Reason::WouldDelete`]), or write through a symbolic link
    /// ([`Reason::ThroughLink`]).
    pub fn evaluate(
        &self,
        i: usize,
        sel: &Selection,
        outputs: &dyn Fn(usize) -> Option<BTreeMap<String, Artifact>>,
    ) -> Result<Evaluation> {
        let mut e = self.evaluate_inputs(i, sel, outputs)?;
        // Running removes every out; restoring replaces those it puts back. Either way a
        // workspace file dagrun did not write and cannot restore is left alone.
        let replaced: &[String] = match &e.state {
            State::Cached { restore } => restore,
            _ => &self.pipeline.nodes[i].outs,
        };
        let mut in_the_way = Vec::new();
        let node = &self.pipeline.nodes[i];
        for o in replaced {
            in_the_way.extend(self.ws.in_the_way(o).map_err(at_output(node, o))?);
        }
        mark_missing(&mut e.state, in_the_way);
        Ok(e)
    }

    fn evaluate_inputs(
        &self,
        i: usize,
        sel: &Selection,
        outputs: &dyn Fn(usize) -> Option<BTreeMap<String, Artifact>>,
    ) -> Result<Evaluation> {
        let node = &self.pipeline.nodes[i];
        let forced_reason = if sel.forced.contains(&i) {
            Some(Reason::Forced)
        } else {
            sel.forced_downstream
                .get(&i)
                .map(|of| Reason::ForcedDownstream { of: of.clone() })
        };
        // What can be known without upstream: inputs from outside the graph, and what
        // the node needs of this machine.
        let mut missing = Vec::new();
        for d in &node.deps {
            if matches!(&d.source, DepSource::Workspace { contains } if contains.is_empty())
                && self.ws.hash(&d.path).map_err(at_dep(node, d))?.is_none()
            {
                missing.push(Reason::MissingInput {
                    path: d.path.clone(),
                });
            }
        }
        let env = match node.kind.environment(&node.device, node.place()) {
            Ok(env) => Some(env),
            Err(message) => {
                missing.push(Reason::Unavailable { message });
                None
            }
        };
        if let Some(have) = self.gpus {
            let want = node.resources.gpus;
            if node.executor == crate::spec::Executor::Local && want > have {
                missing.push(Reason::Unavailable {
                    message: format!(
                        "needs {want} GPU(s) but {have} available (pass --gpus N if this machine has more)"
                    ),
                });
            }
        }
        if !missing.is_empty() {
            return Ok(Evaluation {
                state: State::Missing { reasons: missing },
                components: None,
                key: None,
                record: None,
            });
        }
        let own = self.own_components(node, env.expect("checked above"));
        let pending: Vec<String> = node
            .upstream
            .iter()
            .filter(|&&u| outputs(u).is_none())
            .map(|&u| self.pipeline.nodes[u].id.clone())
            .collect();
        if !pending.is_empty() {
            let waits = |cutoff| Reason::WaitsOn {
                nodes: pending.clone(),
                cutoff,
            };
            let state = match forced_reason {
                Some(r) => State::Forced {
                    reasons: vec![r, waits(false)],
                },
                None if self.latest_key(&node.id)?.is_none() => State::Stale {
                    reasons: {
                        let mut r = self.failed_reason(&node.id)?;
                        if r.is_empty() {
                            r.push(Reason::NeverRun);
                        }
                        r.push(waits(false));
                        r
                    },
                },
                // A change of its own (its command, a param, an environment variable)
                // makes it run whatever its upstream produces: stale, not blocked.
                None => match self.own_changes(node, &own)? {
                    mut r if !r.is_empty() => {
                        r.push(waits(false));
                        State::Stale { reasons: r }
                    }
                    _ => State::Blocked {
                        reasons: vec![waits(true)],
                    },
                },
            };
            return Ok(Evaluation {
                state,
                components: None,
                key: None,
                record: None,
            });
        }

        let ups: BTreeMap<usize, BTreeMap<String, Artifact>> = node
            .upstream
            .iter()
            .map(|&u| (u, outputs(u).expect("checked above")))
            .collect();
        let mut inputs = BTreeMap::new();
        let mut missing = Vec::new();
        for b in &node.bindings {
            for (t, out) in &b.targets {
                let art = ups.get(t).and_then(|m| m.get(out));
                let name = format!("{}.{out}", self.pipeline.nodes[*t].id);
                match art {
                    Some(a) => {
                        inputs.insert(name, a.hash.to_hex());
                    }
                    None => missing.push(Reason::MissingInput { path: name }),
                }
            }
        }
        for d in &node.deps {
            let h = match &d.source {
                DepSource::Produced {
                    node: p,
                    output,
                    sub,
                } => ups
                    .get(p)
                    .and_then(|m| m.get(output))
                    .and_then(|a| match sub {
                        None => Some(a.hash),
                        Some(s) => sub_hash(a, s),
                    }),
                // A folder holding other nodes' outputs is hashed as it will be once
                // they are in place (restored from the cache or just written), not as
                // the workspace has it before they are restored.
                DepSource::Workspace { contains } => {
                    let mut overlays = Vec::new();
                    for c in contains {
                        for o in &self.pipeline.nodes[*c].outs {
                            let inner = if d.path == "." {
                                Some(o.as_str())
                            } else {
                                o.strip_prefix(&format!("{}/", d.path))
                            };
                            if let (Some(inner), Some(a)) =
                                (inner, ups.get(c).and_then(|m| m.get(o)))
                            {
                                overlays.push((inner.to_string(), a));
                            }
                        }
                    }
                    self.ws
                        .hash_with(&d.path, &overlays)
                        .map_err(at_dep(node, d))?
                }
            };
            match h {
                Some(h) => {
                    inputs.insert(format!("file:{}", d.path), h.to_hex());
                }
                None => missing.push(Reason::MissingInput {
                    path: d.path.clone(),
                }),
            }
        }
        if !missing.is_empty() {
            return Ok(Evaluation {
                state: State::Missing { reasons: missing },
                components: None,
                key: None,
                record: None,
            });
        }
        let components = KeyComponents { inputs, ..own };
        let key = components.key();
        let record = match self.cache {
            Some(c) => c.record_head(&key)?,
            None => None,
        };
        let state = if let Some(r) = forced_reason {
            State::Forced { reasons: vec![r] }
        } else if let Some(rec) = &record {
            let mut restore = Vec::new();
            for o in &node.outs {
                let want = rec.outputs.get(o).map(|a| a.hash);
                if self.ws.hash(o).map_err(at_output(node, o))? != want {
                    restore.push(o.clone());
                }
            }
            State::Cached { restore }
        } else {
            State::Stale {
                reasons: self.stale_reasons(&node.id, &components)?,
            }
        };
        Ok(Evaluation {
            state,
            components: Some(components),
            key: Some(key),
            record,
        })
    }

    /// A node's key components that do not depend on its upstream: everything but the
    /// `inputs` (a reference to an upstream output is keyed by its name here; its content
    /// goes into `inputs`).
    fn own_components(&self, node: &Node, mut env: BTreeMap<String, String>) -> KeyComponents {
        env.extend(self.env_vars.clone());
        let params = interp::render(&node.params, &|bi| {
            let b = &node.bindings[bi];
            let names: Vec<Value> = b
                .targets
                .iter()
                .map(|(t, o)| Value::String(format!("@{}.{o}", self.pipeline.nodes[*t].id)))
                .collect();
            if b.many {
                Value::Array(names)
            } else {
                names.into_iter().next().unwrap_or(Value::Null)
            }
        });
        KeyComponents {
            schema: KEY_SCHEMA.to_string(),
            kind: node.kind.name().to_string(),
            kind_version: node.kind.version(),
            matrix: node
                .matrix
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            params,
            // Declared outputs are a set: their order is not part of the key.
            outs: {
                let mut o = node.outs.clone();
                o.sort();
                o
            },
            inputs: BTreeMap::new(),
            env,
        }
    }

    /// What changed in a node itself since its last successful run, while its upstream
    /// is still pending: its own components against the last record's, and the inputs
    /// that come from outside the graph. Empty when nothing of its own changed (it runs
    /// only if its upstream's outputs change); `RecordGone` when the last record is gone.
    fn own_changes(&self, node: &Node, own: &KeyComponents) -> Result<Vec<Reason>> {
        let (Some(cache), Some(key)) = (self.cache, self.latest_key(&node.id)?) else {
            return Ok(Vec::new());
        };
        let Some(rec) = cache.record(&key)? else {
            return Ok(vec![Reason::RecordGone]);
        };
        let refs = param_ref_changes(&rec.param_refs, &node.param_refs);
        let Ok(mut old) = serde_json::from_value::<KeyComponents>(rec.components) else {
            return Ok(vec![Reason::RecordGone]);
        };
        let mut new = own.clone();
        // Inputs known now: workspace files no node writes into.
        for d in &node.deps {
            if let DepSource::Workspace { contains } = &d.source {
                if contains.is_empty() {
                    if let Some(h) = self.ws.hash(&d.path).map_err(at_dep(node, d))? {
                        new.inputs.insert(format!("file:{}", d.path), h.to_hex());
                    }
                }
            }
        }
        old.inputs.retain(|k, _| new.inputs.contains_key(k));
        let mut d = diff(&old, &new);
        if !d.is_empty() {
            d.splice(0..0, refs);
        }
        for r in &mut d {
            if let Reason::InputChanged { name, folder, .. } = r {
                if let Some(path) = name.strip_prefix("file:") {
                    *folder = self.ws.abs(path).is_dir();
                }
            }
        }
        Ok(d)
    }

    fn latest_key(&self, node: &str) -> Result<Option<Hash>> {
        Ok(match self.cache {
            Some(c) => c.latest(node)?.map(|l| l.key),
            None => None,
        })
    }

    /// `LastRunFailed` when the node's last execution failed (and it has not succeeded
    /// since), else nothing.
    fn failed_reason(&self, node: &str) -> Result<Vec<Reason>> {
        let Some(f) = self.cache.map(|c| c.failure(node)).transpose()?.flatten() else {
            return Ok(Vec::new());
        };
        let log = f.log.map(|l| {
            l.strip_prefix(&self.pipeline.workdir)
                .unwrap_or(&l)
                .display()
                .to_string()
        });
        Ok(vec![Reason::LastRunFailed {
            at: f.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            error: f.error,
            log,
        }])
    }

    /// Why a node with these components is not cached, compared with its last run (and
    /// first, that its last execution failed, when it did).
    pub fn stale_reasons(&self, node: &str, components: &KeyComponents) -> Result<Vec<Reason>> {
        let mut r = self.failed_reason(node)?;
        let since = self.stale_reasons_since_success(node, components)?;
        // It has run, and failed: not "never run".
        if r.is_empty() || since != [Reason::NeverRun] {
            r.extend(since);
        }
        Ok(r)
    }

    fn stale_reasons_since_success(
        &self,
        node: &str,
        components: &KeyComponents,
    ) -> Result<Vec<Reason>> {
        let Some(key) = self.latest_key(node)? else {
            return Ok(vec![Reason::NeverRun]);
        };
        let cache = self.cache.expect("a latest key implies a cache");
        let Some(rec) = cache.record(&key)? else {
            return Ok(vec![Reason::RecordGone]);
        };
        let old: KeyComponents = match serde_json::from_value(rec.components.clone()) {
            Ok(c) => c,
            Err(_) => return Ok(vec![Reason::RecordGone]),
        };
        let mut d = diff(&old, components);
        if let Some(n) = self
            .pipeline
            .by_id
            .get(node)
            .map(|&i| &self.pipeline.nodes[i])
        {
            if !d.is_empty() {
                d.splice(0..0, param_ref_changes(&rec.param_refs, &n.param_refs));
            }
        }
        for r in &mut d {
            if let Reason::InputChanged { name, folder, .. } = r {
                if let Some(path) = name.strip_prefix("file:") {
                    *folder = self.ws.abs(path).is_dir();
                }
            }
        }
        Ok(if d.is_empty() {
            vec![Reason::RecordGone]
        } else {
            d
        })
    }

    /// Plans the whole pipeline from the cache alone (the dry run).
    pub fn plan(&self, sel: &Selection) -> Result<Vec<Option<Evaluation>>> {
        let n = self.pipeline.nodes.len();
        let mut evals: Vec<Option<Evaluation>> = vec![None; n];
        // Nodes outside the selection still need evaluating when a selected node reads
        // them (their cached outputs feed its key).
        let needed = sel.nodes.as_ref().map(|s| {
            self.pipeline
                .ancestors(&s.iter().copied().collect::<Vec<_>>())
        });
        for &i in &self.pipeline.order {
            if !needed.as_ref().map(|s| s.contains(&i)).unwrap_or(true) {
                continue;
            }
            let known = |u: usize| -> Option<BTreeMap<String, Artifact>> {
                evals[u].as_ref().and_then(|e| match (&e.state, &e.record) {
                    (State::Cached { .. }, Some(r)) => Some(r.outputs.clone()),
                    _ => None,
                })
            };
            let mut e = self.evaluate(i, sel, &known)?;
            // A selected node whose upstream is left out and not cached cannot run.
            if sel.nodes.is_some() && sel.includes(i) {
                let outside: Vec<Reason> = self.pipeline.nodes[i]
                    .upstream
                    .iter()
                    .filter(|&&u| {
                        !sel.includes(u)
                            && !matches!(
                                evals[u].as_ref().map(|x| &x.state),
                                Some(State::Cached { .. })
                            )
                    })
                    .map(|&u| Reason::OutsideSelection {
                        node: self.pipeline.nodes[u].id.clone(),
                    })
                    .collect();
                mark_missing(&mut e.state, outside);
            }
            evals[i] = Some(e);
        }
        Ok(evals)
    }
}

/// Locates a workspace error met while hashing input `d` of `node` (a FIFO, a symlink
/// loop, a name too long): the user's input is wrong, so it says where it is declared.
fn at_dep<'n>(
    node: &'n crate::pipeline::Node,
    d: &'n crate::pipeline::Dep,
) -> impl FnOnce(Error) -> Error + 'n {
    move |e| match e {
        Error::Io { .. } => Error::Usage(format!(
            "{}: input `{}` of `{}`: {e}",
            d.loc, d.path, node.id
        )),
        e => e,
    }
}

/// The same for output `o` of `node`, at the place it is declared.
fn at_output<'n>(node: &'n crate::pipeline::Node, o: &'n str) -> impl FnOnce(Error) -> Error + 'n {
    move |e| match e {
        Error::Io { .. } => {
            let loc = node
                .outs
                .iter()
                .position(|x| x == o)
                .and_then(|k| node.out_locs.get(k))
                .unwrap_or(&node.loc);
            Error::Usage(format!("{loc}: output `{o}` of `{}`: {e}", node.id))
        }
        e => e,
    }
}

/// Makes `state` `Missing` for `first` (its reasons, then any a `Missing` state already
/// had); nothing when `first` is empty.
fn mark_missing(state: &mut State, mut first: Vec<Reason>) {
    if first.is_empty() {
        return;
    }
    if let State::Missing { reasons } = state {
        first.append(reasons);
    }
    *state = State::Missing { reasons: first };
}

/// Folders dagrun itself writes that may lie inside the workspace (the cache, the Slurm
/// staging folder): a folder input never includes them.
pub fn dagrun_folders(p: &Pipeline, cache: Option<&Cache>) -> Vec<std::path::PathBuf> {
    let mut v = vec![p.cache_dir.clone()];
    if let Some(c) = cache {
        v.push(c.dir().to_path_buf());
    }
    v.push(crate::slurm::SlurmSettings::new(&p.slurm, &p.workdir, &p.cache_dir).staging);
    v
}

/// Where node `t`'s output `o` is for a running node: `Ok(None)` when not known yet.
pub type PathOf<'a> = dyn Fn(usize, &str) -> std::result::Result<Option<String>, String> + 'a;

/// Renders a node's parameters for running: each reference becomes its artifact's path
/// (a list of `{node, matrix, path}` for a sweep). The first error of `path_of` (an
/// artifact that cannot be handed over) is returned rather than rendered as `null`.
pub fn runtime_params(
    pipeline: &Pipeline,
    i: usize,
    path_of: &PathOf,
) -> std::result::Result<Value, String> {
    let node = &pipeline.nodes[i];
    let error: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let rendered = interp::render(&node.params, &|bi| {
        let b = &node.bindings[bi];
        let items: Vec<Value> = b
            .targets
            .iter()
            .map(|(t, o)| {
                let path = match path_of(*t, o) {
                    Ok(p) => p.map(Value::String).unwrap_or(Value::Null),
                    Err(e) => {
                        error.borrow_mut().get_or_insert(e);
                        Value::Null
                    }
                };
                if b.many {
                    let n = &pipeline.nodes[*t];
                    let matrix: serde_json::Map<String, Value> =
                        n.matrix.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    serde_json::json!({"node": n.id, "matrix": matrix, "path": path, "label": n.matrix.values().map(scalar_string).collect::<Vec<_>>().join(",")})
                } else {
                    path
                }
            })
            .collect();
        if b.many {
            Value::Array(items)
        } else {
            items.into_iter().next().unwrap_or(Value::Null)
        }
    });
    match error.into_inner() {
        Some(e) => Err(e),
        None => Ok(rendered),
    }
}

/// For a `command` stage: the pipeline params its fields read whose values changed since
/// the record (`cmd` changed says that the text did, not which param made it). Nothing
/// when the record predates `param_refs`.
fn param_ref_changes(
    old: &BTreeMap<String, serde_json::Value>,
    new: &BTreeMap<String, serde_json::Value>,
) -> Vec<Reason> {
    if old.is_empty() {
        return Vec::new();
    }
    old.keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Reason::ParamChanged {
            name: format!("params.{k}"),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}
