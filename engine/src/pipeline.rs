//! From a pipeline file to a graph of nodes: parsing, matrix expansion, `${...}`
//! resolution, edges, and every check that can be made before anything runs.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use dagrun_cache::ArtifactType;
use indexmap::IndexMap;
use serde_json::Value;

use crate::{
    error::{Location, SpecError, SpecErrors},
    interp::{self, Scope, StageRef},
    locate::{path as ypath, Positions, Seg},
    selector::{node_id, scalar_string, valid_stage_name, Selector},
    spec::{
        parse_mem, parse_time, Executor, PipelineFile, Resources, ResourcesSpec, SlurmSpec,
        StageSpec,
    },
    stage::{OutputDecl, Registry, StageKind},
};

/// Where a dependency's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepSource {
    /// The output of another node (`sub` is a path inside a folder output).
    Produced {
        node: usize,
        output: String,
        sub: Option<String>,
    },
    /// A workspace file or folder; `contains` lists nodes writing inside it.
    Workspace { contains: Vec<usize> },
}

/// A file or folder a node reads from the workspace.
#[derive(Clone, Debug)]
pub struct Dep {
    pub path: String,
    pub source: DepSource,
    pub loc: Location,
}

/// A `${stages...}` reference resolved to nodes.
#[derive(Clone, Debug)]
pub struct Binding {
    pub text: String,
    pub targets: Vec<(usize, String)>,
    /// A reference to a sweep (or part of one) is a list even when one node matches.
    pub many: bool,
}

/// One node of the graph: a stage, or one combination of a stage's matrix.
pub struct Node {
    pub id: String,
    pub stage: String,
    pub kind: Arc<dyn StageKind>,
    pub matrix: IndexMap<String, Value>,
    /// Resolved parameters with `{"$artifact": i}` markers for `bindings[i]`.
    pub params: Value,
    pub bindings: Vec<Binding>,
    pub deps: Vec<Dep>,
    /// Workspace outputs (normalised relative paths).
    pub outs: Vec<String>,
    /// Where each of `outs` is declared.
    pub out_locs: Vec<Location>,
    /// Every output: workspace `outs` first, then the kind's own.
    pub outputs: Vec<OutputDecl>,
    /// Nodes this one waits for (sorted, unique).
    pub upstream: Vec<usize>,
    pub downstream: Vec<usize>,
    pub resources: Resources,
    pub device: String,
    /// Where the node runs.
    pub executor: Executor,
    /// Whether the stage itself named its executor (`--executor` does not override it).
    pub executor_pinned: bool,
    pub loc: Location,
}

impl Node {
    /// Where the node's work happens, as its kind sees it.
    pub fn place(&self) -> crate::stage::Place {
        match self.executor {
            Executor::Local => crate::stage::Place::Here,
            Executor::Slurm => crate::stage::Place::Cluster {
                gpus: self.resources.gpus,
            },
        }
    }

    pub fn is_workspace_out(&self, name: &str) -> bool {
        self.outs.iter().any(|o| o == name)
    }
}

/// A stage as declared, and the nodes it expanded to.
pub struct StageInfo {
    pub name: String,
    pub kind: String,
    pub nodes: Vec<usize>,
    pub matrix_keys: Vec<String>,
    pub loc: Location,
}

/// A loaded, checked pipeline.
pub struct Pipeline {
    /// The file, as given.
    pub file: PathBuf,
    /// The file relative to the workspace (how records name it).
    pub name: String,
    pub workdir: PathBuf,
    pub nodes: Vec<Node>,
    pub stages: IndexMap<String, StageInfo>,
    /// Node indices in a topological order (upstream first, stable by declaration).
    pub order: Vec<usize>,
    pub env_keys: Vec<String>,
    pub by_id: HashMap<String, usize>,
    /// The `slurm:` section (checked).
    pub slurm: SlurmSpec,
    /// The `remote:` key: a remote cache's URL or folder, as written.
    pub remote: Option<String>,
    /// The cache folder (absolute); outputs may not contain it and folder inputs skip it.
    pub cache_dir: PathBuf,
}

impl Pipeline {
    /// Sets the executor of every node whose stage does not name its own
    /// (`--executor`).
    pub fn set_default_executor(&mut self, e: Executor) {
        for n in self.nodes.iter_mut().filter(|n| !n.executor_pinned) {
            n.executor = e;
        }
    }

    /// Reads and checks a pipeline whose cache is the workspace's `.dagrun/`.
    pub fn load(file: &Path, workdir: &Path, registry: &Registry) -> Result<Pipeline, SpecErrors> {
        Self::load_with_cache(file, workdir, &workdir.join(".dagrun"), registry)
    }

    /// Reads and checks a pipeline. `workdir` is the workspace; no output may be, hold
    /// or lie inside `cache_dir`.
    pub fn load_with_cache(
        file: &Path,
        workdir: &Path,
        cache_dir: &Path,
        registry: &Registry,
    ) -> Result<Pipeline, SpecErrors> {
        let src = std::fs::read_to_string(file).map_err(|e| {
            SpecError::new(
                Location {
                    file: file.to_path_buf(),
                    ..Default::default()
                },
                format!("cannot read pipeline: {e}"),
            )
        })?;
        Self::parse_with_cache(&src, file, workdir, cache_dir, registry)
    }

    pub fn parse(
        src: &str,
        file: &Path,
        workdir: &Path,
        registry: &Registry,
    ) -> Result<Pipeline, SpecErrors> {
        Self::parse_with_cache(src, file, workdir, &workdir.join(".dagrun"), registry)
    }

    pub fn parse_with_cache(
        src: &str,
        file: &Path,
        workdir: &Path,
        cache_dir: &Path,
        registry: &Registry,
    ) -> Result<Pipeline, SpecErrors> {
        let src = &interp::protect(src);
        let mut b = Builder::new(src, file, registry)?;
        b.workdir = absolute_clean(workdir);
        b.cache_dir = absolute_clean(cache_dir);
        b.cache_rel = b
            .cache_dir
            .strip_prefix(&b.workdir)
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
            .filter(|r| !r.is_empty());
        let spec: PipelineFile = serde_yaml::from_str(src).map_err(|e| b.yaml_error(e))?;
        b.check_duplicates()?;
        b.build(spec, file, workdir)
    }

    /// Resolves a selector (`stage`, `stage[k=v]` or a node id) to nodes.
    pub fn select(&self, text: &str) -> Result<Vec<usize>, String> {
        if let Some(&i) = self.by_id.get(text) {
            return Ok(vec![i]);
        }
        let sel = Selector::parse(text)?;
        let info = self.stages.get(&sel.stage).ok_or_else(|| {
            format!(
                "no stage `{}` in {} (stages: {})",
                sel.stage,
                self.name,
                self.stage_names()
            )
        })?;
        let hits: Vec<usize> = info
            .nodes
            .iter()
            .copied()
            .filter(|&i| sel.matches(&sel.stage, &self.nodes[i].matrix))
            .collect();
        if hits.is_empty() {
            return Err(format!("no node of stage `{}` matches `{text}`", sel.stage));
        }
        Ok(hits)
    }

    pub fn stage_names(&self) -> String {
        self.stages
            .keys()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Workspace inputs that no node writes and that do not exist, as
    /// `file:line:col: missing input file ...` lines (checked before a run opens the
    /// cache, so that a run that cannot start writes nothing).
    pub fn missing_inputs(&self, include: &dyn Fn(usize) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !include(i) {
                continue;
            }
            for d in &n.deps {
                if matches!(&d.source, DepSource::Workspace { contains } if contains.is_empty())
                    && std::fs::symlink_metadata(self.workdir.join(&d.path)).is_err()
                {
                    out.push(format!(
                        "{}: missing input file `{}` (needed by `{}`)",
                        d.loc, d.path, n.id
                    ));
                }
            }
        }
        out
    }

    /// Every node upstream of `roots`, the roots included.
    pub fn ancestors(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.nodes[n].upstream.iter().copied());
            }
        }
        seen
    }

    /// Every node downstream of `roots`, the roots included.
    pub fn descendants(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.nodes[n].downstream.iter().copied());
            }
        }
        seen
    }
}

struct Builder<'a> {
    file: PathBuf,
    /// The workspace and the cache folder, absolute and without `.`/`..`.
    workdir: PathBuf,
    cache_dir: PathBuf,
    /// The cache folder relative to the workspace, when it is inside it.
    cache_rel: Option<String>,
    pos: Positions,
    registry: &'a Registry,
    errors: Vec<SpecError>,
}

impl<'a> Builder<'a> {
    fn new(src: &str, file: &Path, registry: &'a Registry) -> Result<Self, SpecErrors> {
        let mut b = Builder {
            file: file.to_path_buf(),
            workdir: PathBuf::new(),
            cache_dir: PathBuf::new(),
            cache_rel: None,
            pos: Positions::default(),
            registry,
            errors: Vec::new(),
        };
        match Positions::read(src) {
            Some(p) => b.pos = p,
            None => {
                // Let serde_yaml describe the syntax error.
                if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(src) {
                    return Err(b.yaml_error(e));
                }
            }
        }
        Ok(b)
    }

    fn yaml_error(&self, e: serde_yaml::Error) -> SpecErrors {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut msg = interp::unprotect(&e.to_string()).into_owned();
        // serde_yaml repeats the position in the text: drop " at line L column C".
        if let Some(i) = msg.find(" at line ") {
            let rest = &msg[i + " at line ".len()..];
            let after_col = rest
                .find(" column ")
                .map(|j| j + " column ".len())
                .and_then(|j| {
                    let digits = rest[j..].chars().take_while(|c| c.is_ascii_digit()).count();
                    (digits > 0).then_some(j + digits)
                });
            if let Some(end) = after_col {
                msg = format!("{}{}", &msg[..i], &rest[end..]);
            }
        }
        if msg.contains("missing field `stages`") || msg == "EOF while parsing a value" {
            msg = "a pipeline needs a `stages:` map".to_string();
        }
        SpecError::new(
            Location {
                file: self.file.clone(),
                line,
                col,
            },
            msg,
        )
        .into()
    }

    fn loc(&self, path: &[Seg]) -> Location {
        let (line, col) = self.pos.find(path).unwrap_or((0, 0));
        Location {
            file: self.file.clone(),
            line,
            col,
        }
    }

    fn err(&mut self, path: &[Seg], msg: impl Into<String>) {
        let e = SpecError::new(self.loc(path), msg);
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    fn check_duplicates(&mut self) -> Result<(), SpecErrors> {
        let dups = std::mem::take(&mut self.pos.duplicates);
        for (path, (line, col)) in dups {
            let name = match path.last() {
                Some(Seg::Key(k)) => k.clone(),
                _ => "?".to_string(),
            };
            let what = if path.len() == 2 && path[0] == Seg::Key("stages".into()) {
                "stage"
            } else {
                "key"
            };
            self.errors.push(SpecError::new(
                Location {
                    file: self.file.clone(),
                    line,
                    col,
                },
                format!("duplicate {what} `{name}`"),
            ));
        }
        self.finish_errors()
    }

    fn finish_errors(&mut self) -> Result<(), SpecErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by(|a, b| {
                (a.location.line, a.location.col).cmp(&(b.location.line, b.location.col))
            });
            Err(SpecErrors(std::mem::take(&mut self.errors)))
        }
    }

    fn build(
        mut self,
        spec: PipelineFile,
        file: &Path,
        workdir: &Path,
    ) -> Result<Pipeline, SpecErrors> {
        // Pipeline parameters: each may refer to the ones before it.
        let mut params: IndexMap<String, Value> = IndexMap::new();
        for (k, v) in &spec.params {
            let empty = IndexMap::new();
            let mut refs = Vec::new();
            let mut scope = Scope {
                params: &params,
                matrix: &empty,
                refs: &mut refs,
            };
            match interp::resolve(v, &mut scope) {
                Ok(_) if !refs.is_empty() => self.err(
                    &ypath(&["params", k]),
                    "pipeline params cannot refer to stages",
                ),
                Ok(val) => {
                    params.insert(k.clone(), val);
                }
                Err(m) => {
                    // A reference to a param defined later (or to itself) is an ordering
                    // problem, not an unknown name.
                    let later = m
                        .strip_prefix("undefined reference `${params.")
                        .and_then(|r| r.split(['.', '}']).next())
                        .filter(|name| {
                            !params.contains_key(*name) && spec.params.contains_key(*name)
                        });
                    let m = match later {
                        Some(name) if name == k => format!(
                            "param `{k}` refers to itself (`${{params.{name}}}`)"
                        ),
                        Some(name) => format!(
                            "`${{params.{name}}}` refers to param `{name}`, which is defined after `{k}`: a param may only refer to params defined before it"
                        ),
                        None => m,
                    };
                    self.err(&ypath(&["params", k]), m)
                }
            }
        }
        if spec.stages.is_empty() {
            self.err(&ypath(&["stages"]), "the pipeline has no stages");
        }
        self.check_slurm(&spec.slurm);

        let mut nodes: Vec<Node> = Vec::new();
        let mut raw_refs: Vec<Vec<StageRef>> = Vec::new();
        let mut raw_needs: Vec<Vec<(String, Vec<Seg>)>> = Vec::new();
        let mut stages: IndexMap<String, StageInfo> = IndexMap::new();
        for (name, st) in &spec.stages {
            let spath = ypath(&["stages", name]);
            if !valid_stage_name(name) {
                self.err(
                    &spath,
                    format!("invalid stage name `{name}`: use letters, digits, `_` and `-`"),
                );
                continue;
            }
            let Some(kind) = self.registry.get(&st.kind) else {
                let known = self.registry.names().join(", ");
                self.err(
                    &ypath(&["stages", name, "kind"]),
                    format!(
                        "unknown stage kind `{}` (known: {known})",
                        interp::unprotect(&st.kind)
                    ),
                );
                continue;
            };
            let combos = match self.matrix(name, st, &params) {
                Ok(c) => c,
                Err(()) => continue,
            };
            let mut info = StageInfo {
                name: name.clone(),
                kind: st.kind.clone(),
                nodes: Vec::new(),
                matrix_keys: combos
                    .first()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default(),
                loc: self.loc(&spath),
            };
            for matrix in combos {
                if let Some((node, refs, needs)) =
                    self.node(name, st, &kind, matrix, &params, &spec)
                {
                    info.nodes.push(nodes.len());
                    nodes.push(node);
                    raw_refs.push(refs);
                    raw_needs.push(needs);
                }
            }
            stages.insert(name.clone(), info);
        }
        self.finish_errors()?;

        let by_id: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        self.edges(&mut nodes, &stages, raw_refs, raw_needs);
        self.finish_errors()?;
        let order = self.order(&mut nodes)?;
        let name = relative_name(file, workdir);
        tracing::debug!(pipeline = %name, stages = stages.len(), nodes = nodes.len(), "pipeline loaded");
        Ok(Pipeline {
            file: file.to_path_buf(),
            name,
            workdir: workdir.to_path_buf(),
            nodes,
            stages,
            order,
            env_keys: spec.fingerprint.env.clone(),
            by_id,
            slurm: spec.slurm.clone(),
            remote: spec.remote.clone(),
            cache_dir: self.cache_dir.clone(),
        })
    }

    /// Expands a stage's matrix into combinations (one empty combination without one).
    fn matrix(
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

    #[allow(clippy::type_complexity)]
    fn node(
        &mut self,
        name: &str,
        st: &StageSpec,
        kind: &Arc<dyn StageKind>,
        matrix: IndexMap<String, Value>,
        params: &IndexMap<String, Value>,
        spec: &PipelineFile,
    ) -> Option<(Node, Vec<StageRef>, Vec<(String, Vec<Seg>)>)> {
        let base = ypath(&["stages", name]);
        let field = |f: &str| {
            let mut p = base.clone();
            p.push(Seg::Key(f.to_string()));
            p
        };
        let item = |f: &str, i: usize| {
            let mut p = field(f);
            p.push(Seg::Index(i));
            p
        };
        let n_before = self.errors.len();
        let mut refs = Vec::new();
        let mut node_params = serde_json::Map::new();
        for (k, v) in &st.params {
            let mut p = field("params");
            p.push(Seg::Key(k.clone()));
            match interp::resolve(
                v,
                &mut Scope {
                    params,
                    matrix: &matrix,
                    refs: &mut refs,
                },
            ) {
                Ok(val) => {
                    node_params.insert(k.clone(), val);
                }
                Err(e) => self.err(&p, e),
            }
        }
        if !kind.takes_cmd() {
            for (k, v) in &matrix {
                node_params.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        match (&st.cmd, kind.takes_cmd()) {
            (Some(cmd), true) => match interp::resolve_str(
                cmd,
                &mut Scope {
                    params,
                    matrix: &matrix,
                    refs: &mut refs,
                },
            ) {
                Ok(v) => {
                    node_params.insert("cmd".into(), v);
                }
                Err(e) => self.err(&field("cmd"), e),
            },
            (None, true) => self.err(
                &base,
                format!("stage `{name}` of kind `{}` needs a `cmd`", kind.name()),
            ),
            (Some(_), false) => self.err(
                &field("cmd"),
                format!(
                    "`cmd` is only for `command` stages; `{}` takes `params`",
                    kind.name()
                ),
            ),
            (None, false) => {}
        }
        // `outs` are the workspace paths of a shell command; a native kind writes its own
        // outputs. Stage `params` are a native kind's; a command reads pipeline params.
        if !kind.takes_cmd() && !st.outs.is_empty() {
            self.err(
                &field("outs"),
                format!(
                    "`outs` is only for `command` stages; `{}` writes its own outputs (see `dagrun kinds`), referenced as `${{stages.{name}.OUTPUT}}`",
                    kind.name()
                ),
            );
        }
        if kind.takes_cmd() && !st.params.is_empty() {
            self.err(
                &field("params"),
                "stage `params` are only for native kinds; in a `command` stage's `cmd`, use pipeline `params` (`${params.NAME}`) or a `matrix` (`${matrix.KEY}`)",
            );
        }
        let text_list = |f: &str, list: &[String], this: &mut Self| -> Vec<(String, Location)> {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let p = item(f, i);
                let mut local = Vec::new();
                match interp::resolve_str(s, &mut Scope { params, matrix: &matrix, refs: &mut local }) {
                    Ok(Value::String(t)) if local.is_empty() => out.push((t, this.loc(&p))),
                    Ok(Value::String(_)) | Ok(Value::Object(_)) => this.err(&p, format!("`{f}` entries cannot refer to stages; use `needs` or a `${{stages...}}` reference in `cmd`/`params`")),
                    Ok(other) => out.push((scalar_string(&other), this.loc(&p))),
                    Err(e) => this.err(&p, e),
                }
            }
            out
        };
        let deps_raw = text_list("deps", &st.deps, self);
        let outs_raw = text_list("outs", &st.outs, self);
        let needs_raw = text_list("needs", &st.needs, self);
        let mut outs = Vec::new();
        let mut out_locs = Vec::new();
        for (i, (o, loc)) in outs_raw.iter().enumerate() {
            match normalize(o) {
                // Removed before the stage runs: the workspace itself, the cache folder or
                // a folder holding it would be deleted with everything in it.
                Ok(p) if p == "." => self.err(
                    &item("outs", i),
                    format!("output path `{o}` is the whole workspace"),
                ),
                Ok(p)
                    if self
                        .cache_rel
                        .as_deref()
                        .is_some_and(|c| p == c || is_inside(&p, c)) =>
                {
                    self.err(
                        &item("outs", i),
                        format!("output `{o}` is inside the cache folder"),
                    )
                }
                Ok(p) if self.cache_rel.as_deref().is_some_and(|c| is_inside(c, &p)) => self.err(
                    &item("outs", i),
                    format!(
                        "output `{o}` contains the cache folder `{}`",
                        self.cache_rel.as_deref().unwrap_or_default()
                    ),
                ),
                Ok(p) => {
                    outs.push(p);
                    out_locs.push(loc.clone());
                }
                Err(why) => self.errors.push(SpecError::new(
                    loc.clone(),
                    format!("output path `{o}` {why}"),
                )),
            }
        }
        let mut deps = Vec::new();
        for (i, (d, loc)) in deps_raw.iter().enumerate() {
            // Inputs may live anywhere (model weights, datasets): absolute paths are kept,
            // unless they point into the workspace (then they are workspace paths, and
            // one another stage writes makes an edge).
            let inside = Path::new(d)
                .is_absolute()
                .then(|| absolute_clean(Path::new(d)))
                .and_then(|a| {
                    a.strip_prefix(&self.workdir)
                        .ok()
                        .map(|r| r.to_string_lossy().into_owned())
                });
            let d = &match inside {
                Some(r) if r.is_empty() => ".".to_string(),
                Some(r) => r,
                None => d.clone(),
            };
            if Path::new(d).is_absolute() {
                deps.push(Dep {
                    path: d.clone(),
                    source: DepSource::Workspace { contains: vec![] },
                    loc: loc.clone(),
                });
                continue;
            }
            match normalize(d) {
                Ok(p) => deps.push(Dep {
                    path: p,
                    source: DepSource::Workspace { contains: vec![] },
                    loc: loc.clone(),
                }),
                Err(why) => self.err(&item("deps", i), format!("input path `{d}` {why}")),
            }
        }
        let device_raw = st
            .device
            .clone()
            .or_else(|| spec.defaults.device.clone())
            .unwrap_or_else(|| "auto".into());
        let device = match interp::resolve_str(
            &device_raw,
            &mut Scope {
                params,
                matrix: &matrix,
                refs: &mut Vec::new(),
            },
        ) {
            Ok(v) => scalar_string(&v),
            Err(e) => {
                self.err(&field("device"), e);
                String::new()
            }
        };
        let resources = self.resources(
            name,
            st.resources.as_ref(),
            spec.defaults.resources.as_ref(),
        );
        let executor = st.executor.or(spec.defaults.executor).unwrap_or_default();
        let params_v = Value::Object(node_params);
        if self.errors.len() == n_before {
            if let Err(pe) = kind.validate(&params_v) {
                let path = match &pe.param {
                    Some(p) => {
                        let mut path = field("params");
                        path.extend(p.split('.').map(|s| Seg::Key(s.to_string())));
                        path
                    }
                    None => base.clone(),
                };
                self.err(
                    &path,
                    format!("stage `{name}` ({}): {}", kind.name(), pe.message),
                );
            }
        }
        if self.errors.len() != n_before {
            return None;
        }
        let mut outputs: Vec<OutputDecl> = outs
            .iter()
            .map(|o| OutputDecl::new(o, ArtifactType::File))
            .collect();
        outputs.extend(kind.outputs(&params_v));
        let id = node_id(name, &matrix);
        let needs = needs_raw
            .into_iter()
            .enumerate()
            .map(|(i, (t, _))| (t, item("needs", i)))
            .collect();
        Some((
            Node {
                id,
                stage: name.to_string(),
                kind: kind.clone(),
                matrix,
                params: params_v,
                bindings: Vec::new(),
                deps,
                outs,
                out_locs,
                outputs,
                upstream: Vec::new(),
                downstream: Vec::new(),
                resources,
                device,
                executor,
                executor_pinned: st.executor.is_some(),
                loc: self.loc(&base),
            },
            refs,
            needs,
        ))
    }

    fn check_slurm(&mut self, s: &SlurmSpec) {
        let at = |f: &str| ypath(&["slurm", f]);
        if let Some(v) = &s.on_interrupt {
            if v != "cancel" && v != "keep" {
                self.err(
                    &at("on_interrupt"),
                    format!("`slurm.on_interrupt` is `cancel` or `keep`, not `{v}`"),
                );
            }
        }
        for (f, v) in [
            ("poll_seconds", s.poll_seconds),
            ("submit_interval_seconds", s.submit_interval_seconds),
        ] {
            if matches!(v, Some(x) if !(x >= 0.0 && x.is_finite())) {
                self.err(
                    &at(f),
                    format!("`slurm.{f}` must be a number of seconds ≥ 0"),
                );
            }
        }
        for (f, v) in [("max_array", s.max_array), ("max_jobs", s.max_jobs)] {
            if v == Some(0) {
                self.err(&at(f), format!("`slurm.{f}` must be at least 1"));
            }
        }
    }

    /// A stage's resources: each field from the stage, else from `defaults.resources`;
    /// errors point at the field where it was written.
    fn resources(
        &mut self,
        stage: &str,
        own: Option<&ResourcesSpec>,
        dflt: Option<&ResourcesSpec>,
    ) -> Resources {
        let none = ResourcesSpec::default();
        let (own, dflt) = (own.unwrap_or(&none), dflt.unwrap_or(&none));
        // Where a field was written, for errors.
        let at = |field: &str, from_stage: bool| {
            if from_stage {
                ypath(&["stages", stage, "resources", field])
            } else {
                ypath(&["defaults", "resources", field])
            }
        };
        let mut r = Resources::default();
        macro_rules! pick {
            ($f:ident) => {
                own.$f
                    .clone()
                    .map(|v| (v, true))
                    .or_else(|| dflt.$f.clone().map(|v| (v, false)))
            };
        }
        if let Some((cpus, from)) = pick!(cpus) {
            if cpus == 0 {
                self.err(&at("cpus", from), "`resources.cpus` must be at least 1");
            }
            r.cpus = cpus;
        }
        if let Some((gpus, _)) = pick!(gpus) {
            r.gpus = gpus;
        }
        if let Some((mem, from)) = pick!(mem) {
            match parse_mem(&mem) {
                Ok(mb) => r.mem_mb = Some(mb),
                Err(e) => self.err(&at("mem", from), format!("`resources.mem`: {e}")),
            }
        }
        if let Some((time, from)) = pick!(time) {
            match parse_time(&time) {
                Ok(m) => r.time_minutes = Some(m),
                Err(e) => self.err(&at("time", from), format!("`resources.time`: {e}")),
            }
        }
        r.partition = pick!(partition).map(|v| v.0);
        r.account = pick!(account).map(|v| v.0);
        r.sbatch = pick!(sbatch).map(|v| v.0).unwrap_or_default();
        r.retries = pick!(retries).map(|v| v.0).unwrap_or(0);
        if let Some((scale, from)) = pick!(on_retry) {
            if !(scale.mem >= 1.0 && scale.time >= 1.0) {
                self.err(
                    &at("on_retry", from),
                    "`resources.on_retry` factors must be at least 1 (`{mem: 2, time: 1.5}`)",
                );
            }
            r.on_retry = Some(scale);
        }
        r
    }

    fn edges(
        &mut self,
        nodes: &mut [Node],
        stages: &IndexMap<String, StageInfo>,
        raw_refs: Vec<Vec<StageRef>>,
        raw_needs: Vec<Vec<(String, Vec<Seg>)>>,
    ) {
        // Who writes which workspace path.
        let mut producers: HashMap<String, usize> = HashMap::new();
        let mut out_errors = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            for o in &n.outs {
                if let Some(&j) = producers.get(o.as_str()) {
                    out_errors.push((
                        n.loc.clone(),
                        format!(
                            "`{o}` is an output of both `{}` and `{}`",
                            nodes[j].id, n.id
                        ),
                    ));
                } else {
                    producers.insert(o.clone(), i);
                }
            }
        }
        let mut all_outs: Vec<(String, usize)> =
            producers.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all_outs.sort();
        // An output inside another: look each output's ancestors up (O(depth)). Sorted
        // neighbours are not enough: `d`, `d.txt`, `d/f` sort in that order.
        for (o, i) in &all_outs {
            if let Some((outer, _)) = enclosing_output(o, &producers) {
                out_errors.push((
                    nodes[*i].loc.clone(),
                    format!("output `{o}` is inside output `{outer}`"),
                ));
            }
        }
        for (loc, m) in out_errors {
            self.errors.push(SpecError::new(loc, m));
        }

        let mut ups: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); nodes.len()];
        for i in 0..nodes.len() {
            // deps → producers
            let mut deps = std::mem::take(&mut nodes[i].deps);
            for d in &mut deps {
                if let Some(&p) = producers.get(d.path.as_str()) {
                    d.source = DepSource::Produced {
                        node: p,
                        output: d.path.clone(),
                        sub: None,
                    };
                    ups[i].insert(p);
                    continue;
                }
                // A dep inside an output folder.
                let inside = enclosing_output(&d.path, &producers).map(|(o, p)| (o.to_string(), p));
                if let Some((out, p)) = inside {
                    let sub = d.path[out.len() + 1..].to_string();
                    d.source = DepSource::Produced {
                        node: p,
                        output: out,
                        sub: Some(sub),
                    };
                    ups[i].insert(p);
                    continue;
                }
                // A dep folder holding outputs: the sorted outputs under `dep/` are a range.
                let contains: Vec<usize> = if d.path == "." {
                    all_outs.iter().map(|(_, p)| *p).collect()
                } else {
                    let prefix = format!("{}/", d.path);
                    let start = all_outs.partition_point(|(o, _)| o.as_str() < prefix.as_str());
                    all_outs[start..]
                        .iter()
                        .take_while(|(o, _)| o.starts_with(&prefix))
                        .map(|(_, p)| *p)
                        .collect()
                };
                ups[i].extend(contains.iter().copied());
                d.source = DepSource::Workspace { contains };
            }
            nodes[i].deps = deps;
        }
        for (i, needs) in raw_needs.into_iter().enumerate() {
            for (text, path) in needs {
                match select_in(&text, stages, nodes) {
                    Ok(hits) => ups[i].extend(hits),
                    Err(m) => self.err(&path, format!("`needs`: {m}")),
                }
            }
        }
        for (i, refs) in raw_refs.into_iter().enumerate() {
            let mut bindings = Vec::new();
            for r in refs {
                let stage_has_matrix = stages
                    .get(&r.selector.stage)
                    .map(|s| !s.matrix_keys.is_empty())
                    .unwrap_or(false);
                let hits = match select_in(&node_id_or_sel(&r), stages, nodes) {
                    Ok(h) => h,
                    Err(m) => {
                        self.errors.push(SpecError::new(
                            nodes[i].loc.clone(),
                            format!("`${{{}}}`: {m}", r.text),
                        ));
                        continue;
                    }
                };
                let fully = stages
                    .get(&r.selector.stage)
                    .map(|s| {
                        s.matrix_keys
                            .iter()
                            .all(|k| r.selector.filter.iter().any(|(fk, _)| fk == k))
                    })
                    .unwrap_or(true);
                let mut targets = Vec::new();
                for &h in &hits {
                    if nodes[h].outputs.iter().any(|o| o.name == r.output) {
                        targets.push((h, r.output.clone()));
                    } else {
                        let known: Vec<String> = nodes[h]
                            .outputs
                            .iter()
                            .map(|o| format!("`{}`", o.name))
                            .collect();
                        self.errors.push(SpecError::new(
                            nodes[i].loc.clone(),
                            format!(
                                "`${{{}}}`: `{}` has no output `{}` (outputs: {})",
                                r.text,
                                nodes[h].id,
                                r.output,
                                if known.is_empty() {
                                    "none".into()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        ));
                        break;
                    }
                    ups[i].insert(h);
                }
                bindings.push(Binding {
                    text: r.text.clone(),
                    targets,
                    many: stage_has_matrix && !fully,
                });
            }
            // A reference placed inside text must name exactly one node.
            let mut used = Vec::new();
            interp::used_refs(&nodes[i].params, false, &mut used);
            for (bi, in_text) in used {
                if in_text && bindings.get(bi).map(|b| b.many).unwrap_or(false) {
                    self.errors.push(SpecError::new(
                        nodes[i].loc.clone(),
                        format!("`${{{}}}` names a sweep of several nodes and cannot be placed inside text; filter it to one node, e.g. `[key=value]`", bindings[bi].text),
                    ));
                }
            }
            nodes[i].bindings = bindings;
        }
        for (i, u) in ups.into_iter().enumerate() {
            nodes[i].upstream = u.into_iter().collect();
        }
        for i in 0..nodes.len() {
            for u in nodes[i].upstream.clone() {
                nodes[u].downstream.push(i);
            }
        }
    }

    /// A topological order, or the cycle.
    fn order(&mut self, nodes: &mut [Node]) -> Result<Vec<usize>, SpecErrors> {
        let mut g = petgraph::graph::DiGraph::<usize, ()>::new();
        let idx: Vec<_> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
        for (i, n) in nodes.iter().enumerate() {
            for &u in &n.upstream {
                g.add_edge(idx[u], idx[i], ());
            }
        }
        match petgraph::algo::toposort(&g, None) {
            Ok(order) => {
                // Stable: Kahn's order by declaration index among ready nodes.
                let mut indeg: Vec<usize> = nodes.iter().map(|n| n.upstream.len()).collect();
                let mut ready: BTreeSet<usize> =
                    (0..nodes.len()).filter(|&i| indeg[i] == 0).collect();
                let mut out = Vec::with_capacity(order.len());
                while let Some(&i) = ready.iter().next() {
                    ready.remove(&i);
                    out.push(i);
                    for &d in &nodes[i].downstream {
                        indeg[d] -= 1;
                        if indeg[d] == 0 {
                            ready.insert(d);
                        }
                    }
                }
                Ok(out)
            }
            Err(_) => {
                let scc = petgraph::algo::tarjan_scc(&g);
                let cyc = scc
                    .into_iter()
                    .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
                    .expect("toposort failed, so a cycle exists");
                let members: BTreeSet<usize> = cyc.iter().map(|n| g[*n]).collect();
                // Walk the cycle from its first member.
                let start = *members.iter().next().expect("non-empty");
                let mut path = vec![start];
                let mut cur = start;
                loop {
                    let next = nodes[cur]
                        .downstream
                        .iter()
                        .copied()
                        .find(|d| members.contains(d))
                        .expect("in cycle");
                    if next == start || path.contains(&next) {
                        path.push(next);
                        break;
                    }
                    path.push(next);
                    cur = next;
                }
                let text: Vec<&str> = path.iter().map(|&i| nodes[i].id.as_str()).collect();
                Err(SpecError::new(
                    nodes[start].loc.clone(),
                    format!("dependency cycle: {}", text.join(" → ")),
                )
                .into())
            }
        }
    }
}

fn node_id_or_sel(r: &StageRef) -> String {
    if r.selector.filter.is_empty() {
        r.selector.stage.clone()
    } else {
        let f: Vec<String> = r
            .selector
            .filter
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}[{}]", r.selector.stage, f.join(","))
    }
}

fn select_in(
    text: &str,
    stages: &IndexMap<String, StageInfo>,
    nodes: &[Node],
) -> Result<Vec<usize>, String> {
    let sel = Selector::parse(text)?;
    let info = stages.get(&sel.stage).ok_or_else(|| {
        let known: Vec<String> = stages.keys().map(|s| format!("`{s}`")).collect();
        format!("no stage `{}` (stages: {})", sel.stage, known.join(", "))
    })?;
    for (k, _) in &sel.filter {
        if !info.matrix_keys.contains(k) {
            return Err(format!("stage `{}` has no matrix key `{k}`", sel.stage));
        }
    }
    let hits: Vec<usize> = info
        .nodes
        .iter()
        .copied()
        .filter(|&i| sel.matches(&sel.stage, &nodes[i].matrix))
        .collect();
    if hits.is_empty() {
        return Err(format!("no node of `{}` matches `{text}`", sel.stage));
    }
    Ok(hits)
}

/// Normalises a workspace path lexically; refuses paths that leave the workspace.
pub fn normalize(p: &str) -> Result<String, &'static str> {
    if p.trim().is_empty() {
        return Err("is empty");
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err("is outside the workspace (absolute paths are not allowed)");
    }
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("is outside the workspace");
                }
            }
            _ => return Err("is outside the workspace"),
        }
    }
    if parts.is_empty() {
        return Ok(".".to_string());
    }
    Ok(parts.join("/"))
}

/// The nearest output folder that holds `path` (not `path` itself), with its producing
/// node: `path`'s ancestors looked up one by one (O(depth)).
fn enclosing_output<'a>(
    path: &'a str,
    producers: &HashMap<String, usize>,
) -> Option<(&'a str, usize)> {
    let mut cut = path;
    while let Some(k) = cut.rfind('/') {
        cut = &cut[..k];
        if let Some(&p) = producers.get(cut) {
            return Some((cut, p));
        }
    }
    None
}

/// Whether `inner` is strictly inside folder `outer`.
pub fn is_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

/// `p` made absolute (against the current directory) and cleaned of `.`/`..`
/// lexically, with the symlinks of its longest existing ancestor resolved.
pub fn absolute_clean(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut lexical = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::Normal(s) => lexical.push(s),
            _ => {}
        }
    }
    let mut base = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut c) = std::fs::canonicalize(&base) {
            c.extend(rest.iter().rev());
            return c;
        }
        match (base.file_name().map(|n| n.to_os_string()), base.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                base = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

fn relative_name(file: &Path, workdir: &Path) -> String {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let f = abs(file);
    let w = abs(workdir);
    f.strip_prefix(&w)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| f.to_string_lossy().into_owned())
}
