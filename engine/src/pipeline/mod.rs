//! From a pipeline file to a graph of nodes: parsing, matrix expansion, `${...}`
//! resolution, edges, and every check that can be made before anything runs.
//!
//! | file        | what                                                             |
//! |-------------|------------------------------------------------------------------|
//! | `mod.rs`    | [`Pipeline`], [`Node`] and their parts; loading; selection; walks |
//! | `build.rs`  | the `Builder`: params, stages, errors with their places           |
//! | `matrix.rs` | a stage's `matrix` (`include`, `exclude`) into combinations        |
//! | `node.rs`   | one node: params, `cmd`, `deps`, `outs`, resources, executor      |
//! | `edges.rs`  | edges from files, `needs` and `${stages...}` references           |
//! | `graph.rs`  | the petgraph graph: topological order, walks, cycles             |
//! | `paths.rs`  | workspace paths: normalising, enclosing outputs, absolute paths   |
//! | `overrides.rs` | `-S KEY=VALUE` and `--params FILE` applied to the YAML tree     |

mod build;
mod edges;
mod graph;
mod matrix;
mod node;
mod overrides;
mod paths;

pub use graph::Graph;
pub use overrides::{Override, Overrides};
pub use paths::{absolute_clean, is_inside, normalize};

use build::Builder;
use paths::{enclosing_output, relative_name};

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
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

/// The longest `slurm.poll_seconds` / `submit_interval_seconds` accepted: a day.
const MAX_SLURM_SECONDS: f64 = 86_400.0;

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
    /// For a `command` stage: the pipeline params its fields refer to, by name
    /// (`a.b` for `${params.a.b}`), with their values (see `Record::param_refs`).
    pub param_refs: std::collections::BTreeMap<String, Value>,
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
    /// The dependency graph (walks up and down).
    pub graph: Graph,
    pub env_keys: Vec<String>,
    pub by_id: HashMap<String, usize>,
    /// The `slurm:` section (checked).
    pub slurm: SlurmSpec,
    /// The `remote:` key: a remote cache's URL or folder, as written.
    pub remote: Option<String>,
    /// The cache folder (absolute); outputs may not contain it and folder inputs skip it.
    pub cache_dir: PathBuf,
    /// The overrides applied (`-S`, `--params`), as `KEY=VALUE`, for the run history.
    pub overrides: Vec<String>,
    /// Where nodes write TensorBoard event files (`defaults.tensorboard` against the
    /// workspace, or `run --tensorboard`): each node in [`crate::stage::tensorboard_run_dir`]. Part of
    /// no key.
    pub tensorboard: Option<PathBuf>,
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
        Self::load_with_overrides(file, workdir, cache_dir, registry, &Overrides::default())
    }

    /// [`Pipeline::load_with_cache`], with `overrides` applied to the file's params.
    pub fn load_with_overrides(
        file: &Path,
        workdir: &Path,
        cache_dir: &Path,
        registry: &Registry,
        overrides: &Overrides,
    ) -> Result<Pipeline, SpecErrors> {
        let bytes = std::fs::read(file).map_err(|e| {
            SpecError::new(
                Location {
                    file: file.to_path_buf(),
                    ..Default::default()
                },
                format!("cannot read pipeline: {e}"),
            )
        })?;
        let src =
            String::from_utf8(bytes).map_err(|e| not_utf8(file, e.as_bytes(), e.utf8_error()))?;
        Self::parse_with_overrides(&src, file, workdir, cache_dir, registry, overrides)
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
        Self::parse_with_overrides(
            src,
            file,
            workdir,
            cache_dir,
            registry,
            &Overrides::default(),
        )
    }

    /// Parses and checks a pipeline with `overrides` applied. The file is read as it is
    /// first (so that its own mistakes point at its lines), then the overrides change
    /// its value tree, and the result is built as if it had been written so; errors at
    /// or under an overridden key point at the override.
    pub fn parse_with_overrides(
        src: &str,
        file: &Path,
        workdir: &Path,
        cache_dir: &Path,
        registry: &Registry,
        overrides: &Overrides,
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
        let mut spec: PipelineFile = serde_yaml::from_str(src).map_err(|e| b.yaml_error(e))?;
        b.check_duplicates()?;
        if !overrides.is_empty() {
            let mut doc: serde_yaml::Value =
                serde_yaml::from_str(src).map_err(|e| b.yaml_error(e))?;
            overrides.apply(&mut doc, registry)?;
            // Only `params` maps changed, whose values may be anything: this cannot fail
            // where the file itself deserialised; if it does, say which overrides.
            spec = serde_yaml::from_value(doc).map_err(|e| {
                SpecErrors::from(SpecError::new(
                    overrides.0[0].origin.clone(),
                    format!("the overrides make the pipeline unreadable: {e}"),
                ))
            })?;
            b.overrides = overrides.clone();
        }
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
        self.graph.ancestors(roots)
    }

    /// Every node downstream of `roots`, the roots included.
    pub fn descendants(&self, roots: &[usize]) -> BTreeSet<usize> {
        self.graph.descendants(roots)
    }
}

/// The error for a pipeline file that is not UTF-8: the line and column (in characters)
/// of the first byte that is not, and that byte.
fn not_utf8(file: &Path, bytes: &[u8], e: std::str::Utf8Error) -> SpecError {
    let good = &bytes[..e.valid_up_to()];
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
    // `good` is valid UTF-8 up to here, so its tail since the line's start is too.
    let col = 1 + std::str::from_utf8(&good[line_start..]).map_or(0, |s| s.chars().count());
    let byte = bytes[e.valid_up_to()];
    SpecError::new(
        Location {
            file: file.to_path_buf(),
            line,
            col,
        },
        format!("the pipeline is not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"),
    )
}
