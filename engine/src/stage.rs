//! The interface between the engine and stage kinds.
//!
//! A kind (the `command` kind, or a native ML kind) implements [`StageKind`]. The engine
//! expands the pipeline into nodes, decides which must run, and calls [`StageKind::run`]
//! with a [`StageContext`] that gives the node its parameters (with upstream artifacts
//! as read-only paths), a folder for its outputs, a scratch folder that survives an
//! interruption, its device, its seed, and ways to report progress and metrics.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use dagrun_cache::{ArtifactType, Metrics};
use indexmap::IndexMap;
use serde_json::Value;

/// An output a kind produces: the stage writes it at `ctx.output_path(name)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDecl {
    pub name: String,
    pub kind: ArtifactType,
}

impl OutputDecl {
    pub fn new(name: &str, kind: ArtifactType) -> Self {
        OutputDecl {
            name: name.to_string(),
            kind,
        }
    }
}

/// A parameter problem found before anything runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError {
    /// The parameter at fault (`lr`, `model.n_layer`), to point at its line.
    pub param: Option<String>,
    pub message: String,
}

impl ParamError {
    pub fn at(param: &str, message: impl Into<String>) -> Self {
        ParamError {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }
    pub fn general(message: impl Into<String>) -> Self {
        ParamError {
            param: None,
            message: message.into(),
        }
    }
}

/// Where a node's work happens: on this machine, or on a cluster node that the
/// coordinator cannot inspect (so a kind must not probe this machine's devices for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "at", rename_all = "lowercase")]
pub enum Place {
    /// This process, on this machine.
    Here,
    /// A Slurm job that was given `gpus` GPUs.
    Cluster { gpus: u32 },
}

/// The error a stage returns.
pub type StageError = Box<dyn std::error::Error + Send + Sync>;

/// A stage kind: what a `kind:` name in a pipeline refers to.
pub trait StageKind: Send + Sync {
    /// The name used in pipelines (`command`, `ppo`, ...).
    fn name(&self) -> &'static str;
    /// The implementation version: part of every key. Bump it when results would change.
    fn version(&self) -> u32;
    /// One line for `--help` and error messages.
    fn summary(&self) -> &'static str;
    /// Checks parameters before anything runs.
    fn validate(&self, _params: &Value) -> Result<(), ParamError> {
        Ok(())
    }
    /// The artifacts a node of this kind produces (workspace `outs` come on top).
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        Vec::new()
    }
    /// Facts of the environment that change this kind's results, for the key
    /// (for example the compute backend a device string resolves to). An `Err` says the
    /// node cannot run at `place` (reported before any work).
    fn environment(
        &self,
        _device: &str,
        _place: Place,
    ) -> Result<BTreeMap<String, String>, String> {
        Ok(BTreeMap::new())
    }
    /// Whether the node's workspace `cmd` field is meaningful (the `command` kind).
    fn takes_cmd(&self) -> bool {
        false
    }
    /// The kind's `params` as a JSON schema (names, types, defaults, descriptions), for
    /// `dagrun kinds KIND`; `None` for a kind without params.
    fn params_schema(&self) -> Option<Value> {
        None
    }
    /// Runs one node.
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError>;
}

/// A progress update from inside a stage.
#[derive(Clone, Debug)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub message: String,
}

/// Receives progress from running stages (the CLI draws it).
pub trait ProgressSink: Send + Sync {
    fn progress(&self, node: &str, p: &Progress);
    fn log_line(&self, _node: &str, _line: &str) {}
}

/// Everything a running node gets from the engine.
pub struct StageContext {
    /// The node id, e.g. `ppo[method=vanilla,seed=3]`.
    pub node: String,
    pub stage: String,
    /// Resolved parameters. A `${stages...}` reference is the artifact's path; a
    /// reference to a sweep is a list of `{"node", "matrix", "path"}` objects. Matrix
    /// values are merged in as parameters unless the stage sets them.
    pub params: Value,
    pub matrix: IndexMap<String, Value>,
    /// The workspace (where command stages run and `outs` live).
    pub workdir: PathBuf,
    /// The device string of the node (`auto`, `cpu`, `libtorch-cpu`, `cuda:N`).
    pub device: String,
    /// GPU indices the scheduler assigned (as many as `resources.gpus`).
    pub gpus: Vec<u32>,
    /// Where this runs (a Slurm job, or here).
    pub place: Place,
    pub(crate) out_dir: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) log: Arc<Mutex<File>>,
    pub(crate) log_path: PathBuf,
    pub(crate) metrics: Metrics,
    pub(crate) sink: Arc<dyn ProgressSink>,
    pub(crate) cancel: Arc<AtomicBool>,
    /// The cache folder, where running process groups are recorded (not in a Slurm job).
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) tensorboard: Option<PathBuf>,
}

impl StageContext {
    /// Where to write the output `name` (a file or a folder).
    pub fn output_path(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }

    /// A folder kept when the node is interrupted and handed back when the same key
    /// runs again (for checkpoints), removed once the node commits.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// Records a process group the stage started (its leader `pgid`, whose processes
    /// carry `token` in [`dagrun_cache::procs::GROUP_ENV`]) while it runs, so that if
    /// dagrun dies (`kill -9`) the next dagrun kills it before anything reruns. The
    /// record is made idle when the returned guard is dropped (its file is reused by the
    /// next group, [`dagrun_cache::procs`]). `None` where nothing records it (a
    /// Slurm job: Slurm ends the job's processes).
    pub fn track_group(&self, pgid: i32, token: &str) -> Option<dagrun_cache::procs::TrackedGroup> {
        let dir = self.cache_dir.as_ref()?;
        match dagrun_cache::procs::track(dir, pgid, token) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "cannot record a process group");
                None
            }
        }
    }

    /// The node's own TensorBoard run folder (not made yet), when the run asked for
    /// training curves (`--tensorboard`, `defaults.tensorboard`); `None` otherwise. What is
    /// written there is part of no key and of no record.
    pub fn tensorboard_dir(&self) -> Option<&Path> {
        self.tensorboard.as_deref()
    }

    /// The seed: the `seed` parameter (0 if absent).
    pub fn seed(&self) -> u64 {
        self.params.get("seed").and_then(Value::as_u64).unwrap_or(0)
    }

    /// A seed for one purpose (`"init"`, `"data"`) derived from [`Self::seed`].
    pub fn derive_seed(&self, purpose: &str) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.seed().to_le_bytes());
        h.update(purpose.as_bytes());
        u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
    }

    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        self.sink.progress(
            &self.node,
            &Progress {
                done,
                total,
                message: message.into(),
            },
        );
    }

    /// Appends a line to the node's log (kept in the cache).
    pub fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{line}");
        }
        self.sink.log_line(&self.node, line);
    }

    /// The log file, for a child process's stdout and stderr.
    pub fn log_file(&self) -> std::io::Result<File> {
        self.log.lock().expect("log lock").try_clone()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.scalars.insert(name.to_string(), value);
    }

    /// A metric that is not a number (a boolean, a string).
    pub fn other_metric(&mut self, name: &str, value: Value) {
        self.metrics.other.insert(name.to_string(), value);
    }

    pub fn series(&mut self, name: &str, step: f64, value: f64) {
        self.metrics
            .series
            .entry(name.to_string())
            .or_default()
            .push((step, value));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether the user asked to stop (Ctrl-C). Long stages check this between steps.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The shared cancellation flag (for stages that hand it to child threads).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }
}

/// The TensorBoard run folder of node `node` under `root`: one folder per node id, named
/// by the id where it is a plain file name. Characters outside `A-Z a-z 0-9 . _ - = , [ ] +`
/// (a `/` or a space in a matrix value), a leading `.`, or a name above 200 bytes make it
/// the id with those characters as `_`, cut to 200 bytes, then `~` and 16 hex digits of the
/// id's hash: `~` is never kept, so such a name cannot equal an untouched id, and two ids
/// that clean up alike differ in their hashes.
pub fn tensorboard_run_dir(root: &Path, node: &str) -> PathBuf {
    root.join(tensorboard_run_name(node))
}

fn tensorboard_run_name(node: &str) -> String {
    const MAX: usize = 200;
    let kept = |c: char| c.is_ascii_alphanumeric() || "._-=,[]+".contains(c);
    if !node.is_empty() && node.len() <= MAX && !node.starts_with('.') && node.chars().all(kept) {
        return node.to_string();
    }
    let mut clean: String = node
        .chars()
        .map(|c| if kept(c) { c } else { '_' })
        .collect();
    if clean.starts_with('.') {
        clean.replace_range(..1, "_");
    }
    let mut cut = MAX.min(clean.len());
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    clean.truncate(cut);
    let hash = blake3::hash(node.as_bytes()).to_hex();
    format!("{clean}~{}", &hash[..16])
}

/// The error returned by a stage that noticed cancellation.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Cancelled {}

/// The kinds a pipeline may use, by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: Arc<dyn StageKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn StageKind>> {
        self.kinds.get(name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> {
        self.kinds.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorboard_run_names_are_plain_and_unique() {
        let name = tensorboard_run_name;
        assert_eq!(name("train"), "train");
        assert_eq!(name("ppo[method=mean,seed=3]"), "ppo[method=mean,seed=3]");
        let a = name("sweep[data=a/b,x=1 2]");
        assert!(a.starts_with("sweep[data=a_b,x=1_2]~"), "{a}");
        assert_eq!(a.len(), "sweep[data=a_b,x=1_2]~".len() + 16);
        // Cleaned up alike, told apart by the hash; never equal to an untouched id.
        assert_ne!(name("s[x=a/b]"), name("s[x=a b]"));
        assert!(!name("s[x=a/b]").contains('/'));
        assert!(name("..").starts_with("_.~"));
        let long = format!("s[x={}]", "é".repeat(300));
        let n = name(&long);
        assert!(n.len() <= 200 + 17 && !n.contains('é'), "{n}");
        assert_eq!(
            tensorboard_run_dir(Path::new("/tb"), "train"),
            Path::new("/tb/train")
        );
    }
}
