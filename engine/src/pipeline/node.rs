//! One node from a stage and one matrix combination: params, `cmd`, `deps`, `outs`,
//! resources, device and executor; and the `slurm:` section's checks.
use super::*;

/// The pipeline params that `${params...}` references in `texts` name, with their
/// values (a reference that does not resolve is reported elsewhere and left out here).
fn referenced_params<'s>(
    texts: impl Iterator<Item = &'s String>,
    params: &IndexMap<String, Value>,
) -> std::collections::BTreeMap<String, Value> {
    const MARK: &str = "${params.";
    let mut out = std::collections::BTreeMap::new();
    for t in texts {
        let t = interp::unprotect(t);
        let mut from = 0;
        while let Some(at) = t[from..].find(MARK).map(|a| a + from) {
            from = at + MARK.len();
            // `$${` is a literal `${`.
            if t[..at].ends_with('$') {
                continue;
            }
            let Some(end) = t[from..].find('}').map(|e| e + from) else {
                break;
            };
            let name = &t[from..end];
            let mut parts = name.split('.');
            let mut v = parts.next().and_then(|first| params.get(first));
            for part in parts {
                v = v.and_then(|x| match x {
                    Value::Object(m) => m.get(part),
                    Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            if let Some(v) = v {
                out.insert(name.to_string(), v.clone());
            }
        }
    }
    out
}

impl Builder<'_> {
    #[allow(clippy::type_complexity)]
    pub(super) fn node(
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
        if !kind.takes_cmd() && !matrix.is_empty() {
            // A matrix value is also the param of the same name, when the kind has one (by
            // its params schema; a kind without a schema gets every matrix value). Other
            // matrix keys only name the nodes and feed `${matrix.…}` (a sweep over task
            // seeds whose stages take the seed under other names).
            let schema = kind.params_schema();
            let known = schema
                .as_ref()
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            for (k, v) in &matrix {
                if known.is_none_or(|props| props.contains_key(k)) {
                    node_params.entry(k.clone()).or_insert_with(|| v.clone());
                }
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
        if !kind.takes_cmd() && !st.metrics.is_empty() {
            self.err(
                &field("metrics"),
                format!(
                    "`metrics` files are only for `command` stages; `{}` records its own metrics (`dagrun show NODE`)",
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
        let metrics_raw = text_list("metrics", &st.metrics, self);
        let needs_raw = text_list("needs", &st.needs, self);
        let mut outs = Vec::new();
        let mut out_locs = Vec::new();
        // A metrics file is an output like `outs` (cached, restored), which the command
        // kind also reads into the record's metrics once the command has succeeded.
        let mut metric_files = Vec::new();
        let written = outs_raw
            .iter()
            .enumerate()
            .map(|(i, o)| ("outs", i, o))
            .chain(
                metrics_raw
                    .iter()
                    .enumerate()
                    .map(|(i, o)| ("metrics", i, o)),
            );
        for (f, i, (o, loc)) in written {
            let item = |_: &str, i: usize| item(f, i);
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
                    if f == "metrics" {
                        metric_files.push(Value::String(p.clone()));
                    }
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
        if !metric_files.is_empty() {
            node_params.insert("metrics".into(), Value::Array(metric_files));
        }
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
                param_refs: if kind.takes_cmd() {
                    referenced_params(
                        st.cmd
                            .iter()
                            .chain(&st.deps)
                            .chain(&st.outs)
                            .chain(&st.metrics),
                        params,
                    )
                } else {
                    Default::default()
                },
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

    pub(super) fn check_slurm(&mut self, s: &SlurmSpec) {
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
            if matches!(v, Some(x) if !(0.0..=MAX_SLURM_SECONDS).contains(&x)) {
                self.err(
                    &at(f),
                    format!(
                        "`slurm.{f}` must be a number of seconds from 0 to {MAX_SLURM_SECONDS} (a day)"
                    ),
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
    pub(super) fn resources(
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
}
