//! Building the pipeline: the `Builder` that reads the spec, resolves params, checks
//! what can be checked and collects every error with its place; then the nodes
//! ([`super::node`]), their matrix ([`super::matrix`]), edges ([`super::edges`]) and
//! order ([`super::graph`]).

use super::*;

/// Builds a [`Pipeline`] from a spec, collecting errors with their places.
pub(super) struct Builder<'a> {
    pub(super) file: PathBuf,
    /// The workspace and the cache folder, absolute and without `.`/`..`.
    pub(super) workdir: PathBuf,
    pub(super) cache_dir: PathBuf,
    /// The cache folder relative to the workspace, when it is inside it.
    pub(super) cache_rel: Option<String>,
    pub(super) pos: Positions,
    pub(super) registry: &'a Registry,
    pub(super) errors: Vec<SpecError>,
    /// `-S`/`--params` overrides: errors at or under their keys point at them.
    pub(super) overrides: super::Overrides,
}

impl<'a> Builder<'a> {
    pub(super) fn new(src: &str, file: &Path, registry: &'a Registry) -> Result<Self, SpecErrors> {
        let mut b = Builder {
            file: file.to_path_buf(),
            workdir: PathBuf::new(),
            cache_dir: PathBuf::new(),
            cache_rel: None,
            pos: Positions::default(),
            registry,
            errors: Vec::new(),
            overrides: Default::default(),
        };
        match Positions::read(src) {
            Ok(Positions {
                refused: Some(((line, col), msg)),
                ..
            }) => {
                let file = b.file.clone();
                return Err(SpecError::new(Location { file, line, col }, msg).into());
            }
            Ok(p) => b.pos = p,
            Err(((line, col), msg)) => {
                // Let serde_yaml describe the syntax error where it can place it; some
                // of its errors carry no position ("more than one document" for a second
                // root without `---`, "repetition limit exceeded"), and then the
                // position reader's error, which always has one, is the better report.
                if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(src) {
                    if e.location().is_some() {
                        return Err(b.yaml_error(e));
                    }
                    let file = b.file.clone();
                    let msg = if msg.contains("expected <document start>") {
                        "text after the end of the pipeline's top-level mapping: a pipeline \
                         file holds one YAML document (is this line indented as it should be?)"
                            .to_string()
                    } else {
                        msg
                    };
                    return Err(SpecError::new(Location { file, line, col }, msg).into());
                }
                // serde_yaml (libyaml) reads it, the position reader (yaml-rust2) does
                // not: a construct the two read differently (a bare `-` in a flow map,
                // `#` right after a flow sequence, a CR inside a quoted scalar). Every
                // later error's place would be guessed, so refuse it here.
                let file = b.file.clone();
                return Err(SpecError::new(
                    Location { file, line, col },
                    format!(
                        "ambiguous YAML ({msg}): YAML parsers disagree on what this means; \
                         write it plainly (quote the value, put a space before `#`, \
                         no carriage return inside quotes)"
                    ),
                )
                .into());
            }
        }
        Ok(b)
    }

    pub(super) fn yaml_error(&self, e: serde_yaml::Error) -> SpecErrors {
        let mut msg = interp::unprotect(&e.to_string()).into_owned();
        // serde_yaml places most errors; where it does not, an alias limit is reported at
        // the first alias, anything else at the top of the file.
        let (line, col) = match e.location() {
            Some(l) => (l.line(), l.column()),
            None if msg.contains("repetition limit") => self.pos.first_alias.unwrap_or((1, 1)),
            None => (1, 1),
        };
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

    pub(super) fn loc(&self, path: &[Seg]) -> Location {
        if let Some(o) = self.overrides.origin_of(path) {
            return o.clone();
        }
        let (line, col) = self.pos.find(path).unwrap_or((0, 0));
        Location {
            file: self.file.clone(),
            line,
            col,
        }
    }

    pub(super) fn err(&mut self, path: &[Seg], msg: impl Into<String>) {
        let mut msg = msg.into();
        // A reference to an overridden param, refused where it is written: say where the
        // value came from.
        if let Some(o) = self.overrides.referenced_in(&msg) {
            msg.push_str(&format!(" (`{}` is set by `{}`)", o.key_text(), o.origin));
        }
        let e = SpecError::new(self.loc(path), msg);
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    pub(super) fn check_duplicates(&mut self) -> Result<(), SpecErrors> {
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

    pub(super) fn finish_errors(&mut self) -> Result<(), SpecErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by(|a, b| {
                (a.location.line, a.location.col).cmp(&(b.location.line, b.location.col))
            });
            Err(SpecErrors(std::mem::take(&mut self.errors)))
        }
    }

    pub(super) fn build(
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
                Err(e) => {
                    // A reference to a param defined later (or to itself) is an ordering
                    // problem, not an unknown name.
                    let later = match &e {
                        interp::InterpError::Undefined {
                            what: "params",
                            name,
                            ..
                        } if !params.contains_key(name) && spec.params.contains_key(name) => {
                            Some(name.as_str())
                        }
                        _ => None,
                    };
                    let m = match later {
                        Some(name) if name == k => format!(
                            "param `{k}` refers to itself (`${{params.{name}}}`)"
                        ),
                        Some(name) => format!(
                            "`${{params.{name}}}` refers to param `{name}`, which is defined after `{k}`: a param may only refer to params defined before it"
                        ),
                        None => e.to_string(),
                    };
                    self.err(&ypath(&["params", k]), m)
                }
            }
        }
        if spec.stages.is_empty() {
            self.err(&ypath(&["stages"]), "the pipeline has no stages");
        }
        if spec
            .defaults
            .tensorboard
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            self.err(
                &ypath(&["defaults", "tensorboard"]),
                "`tensorboard` is empty: name the folder for training curves, or leave it out",
            );
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
        let (graph, order) = self.graph(&nodes)?;
        let name = relative_name(file, workdir);
        tracing::debug!(pipeline = %name, stages = stages.len(), nodes = nodes.len(), "pipeline loaded");
        Ok(Pipeline {
            file: file.to_path_buf(),
            name,
            workdir: workdir.to_path_buf(),
            nodes,
            stages,
            order,
            graph,
            env_keys: spec.fingerprint.env.clone(),
            by_id,
            slurm: spec.slurm.clone(),
            remote: spec.remote.clone(),
            cache_dir: self.cache_dir.clone(),
            overrides: self.overrides.describe(),
            tensorboard: spec.defaults.tensorboard.as_ref().map(|d| workdir.join(d)),
        })
    }
}
