//! Command-line interface (clap types only; the work is in the `cmd_*` modules).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Run experiment pipelines as content-hashed DAGs, incrementally.";

const LONG_ABOUT: &str = "\
Run experiment pipelines as content-hashed DAGs, incrementally.

A pipeline is a YAML file of stages (shell commands or native ML stages). dagrun expands
matrix sweeps into nodes, fingerprints every node (kind, version, params, input contents,
environment), and runs only the nodes whose fingerprint has no record in the cache
(.dagrun/ in the workspace). A node that reruns and reproduces byte-identical outputs
leaves everything downstream cached (early cutoff).";

const AFTER_HELP: &str = "\
Examples:
  dagrun pipelines/quickstart.yaml          run what is stale (same as `dagrun run ...`)
  dagrun plan pipelines/quickstart.yaml     show what would run, and why; runs nothing
  dagrun graph pipelines/paper.yaml --format mermaid
  dagrun run p.yaml --rerun train           force `train`; downstream reruns only if its outputs change
  dagrun why 'train[seed=1]'                which key components changed since the last run
  dagrun show report                        params, outputs, metrics and log of a node
  dagrun run p.yaml -S params.lr=3e-5       try another value without editing the file
  dagrun metrics p.yaml --all               every cached variant's params and metrics
  dagrun run p.yaml --executor slurm        submit the nodes as Slurm jobs (sweeps as job arrays)
  dagrun cache push p.yaml --remote s3://bucket/team    share the cached nodes (`cache pull` fetches)

Exit codes: 0 success; 1 a stage failed; 2 bad pipeline or usage; 3 the cache is in use by
another dagrun (see --wait); 130 interrupted.";

#[derive(Parser, Debug)]
#[command(
    name = "dagrun",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    subcommand_negates_reqs = true,
    override_usage = "dagrun PIPELINE [OPTIONS]\n       dagrun [GLOBAL OPTIONS] <COMMAND> [ARGS]",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `dagrun PIPELINE` is short for `dagrun run PIPELINE`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The workspace: command stages run here and `outs` are written here [default: the
    /// current directory].
    #[arg(long, global = true, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The cache folder [default: WORKDIR/.dagrun].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// If another dagrun holds the cache, wait for it instead of failing.
    #[arg(long, global = true)]
    pub wait: bool,
    /// More logging (-v: info, -vv: debug, -vvv: trace; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print only errors and the final summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the stale nodes of a pipeline (the default command).
    Run(RunArgs),
    /// Show what a run would do, node by node, with reasons; runs and writes nothing.
    Plan(PlanArgs),
    /// Print the pipeline's graph (sweeps collapsed unless --expand).
    Graph(GraphArgs),
    /// Summarise each stage's state (cached / stale / ...) for a pipeline.
    Status(StatusArgs),
    /// Show a node's last run: params, key components, outputs, metrics, log tail.
    Show(ShowArgs),
    /// Explain why a node is stale: the key components that differ from its last run.
    Why(WhyArgs),
    /// List past runs in this workspace.
    Log(LogArgs),
    /// Compare results: one row per node (its matrix values, the params that differ
    /// between the rows, every scalar metric), or with --all every variant the cache holds.
    #[command(after_help = METRICS_HELP)]
    Metrics(MetricsArgs),
    /// Copy a node's outputs out of the cache into a folder (merged into what is there;
    /// a file that differs is replaced only with --force).
    Export(ExportArgs),
    /// List the stage kinds this build provides, or one kind's params.
    Kinds(KindsArgs),
    /// Maintain the cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect a language or reward model: log-probs, generation, rewards. The model
    /// is a Hugging Face style folder, or a node whose output is a model (`lm`,
    /// `head_ensemble`, `ppo[method=vanilla,member=0,seed=1]`; `NODE:OUTPUT` picks an output).
    #[command(subcommand)]
    Model(crate::model_cmd::ModelCommand),
    /// Run one job of a Slurm array on this machine (what dagrun submits; not for people).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Benchmark the ML stages' code on a device: one PPO step, reward-model scoring (JSON).
    #[command(subcommand, hide = true)]
    Bench(crate::cmd_bench::BenchCommand),
}

/// Which nodes to run or force.
#[derive(Args, Debug, Clone, Default)]
pub struct SelectArgs {
    /// Force these stages or nodes to run (`train`, `train[seed=1]`, `ppo[method=vanilla]`).
    /// Downstream nodes rerun only where their inputs actually change.
    #[arg(long, value_name = "STAGE|NODE", num_args = 1..)]
    pub rerun: Vec<String>,
    /// With --rerun: force everything downstream of the forced nodes too.
    #[arg(long, requires = "rerun")]
    pub downstream: bool,
    /// Run only these stages or nodes; their upstream must be cached already.
    #[arg(long, value_name = "STAGE|NODE", num_args = 1..)]
    pub only: Vec<String>,
    /// Run these stages or nodes and everything they depend on, nothing else.
    #[arg(long, value_name = "STAGE|NODE", num_args = 1..)]
    pub until: Vec<String>,
}

/// Params changed for one command, without editing the pipeline file.
#[derive(Args, Debug, Clone, Default)]
pub struct OverrideArgs {
    /// Set a param for this command: `params.NAME=VALUE` (a pipeline param; `params.a.b`
    /// reaches into a map, `params.seeds.0` into a list) or `stages.STAGE.params.NAME=VALUE`
    /// (a native stage's param, written in the pipeline or not). VALUE is YAML:
    /// `-S params.lr=3e-5`, `-S params.seeds=[1,2,3]`. Repeatable; a later one wins. The
    /// key must exist. An overridden node is an ordinary variant with its own key: setting
    /// the value back finds the earlier variant cached.
    #[arg(short = 'S', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A YAML map of pipeline params merged over the pipeline's `params` (nested maps key
    /// by key), applied before any -S.
    #[arg(long = "params", value_name = "FILE")]
    pub params_file: Option<PathBuf>,
}

impl OverrideArgs {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.params_file.is_none()
    }
}

#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The pipeline file (YAML).
    #[arg(value_name = "PIPELINE")]
    pub pipeline: Option<PathBuf>,
    /// Print the plan instead of running (same as `dagrun plan`).
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run up to N independent nodes at once (a node takes `resources.cpus` slots).
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1,
          value_parser = at_least_one)]
    pub jobs: usize,
    /// GPUs the scheduler may hand out for `resources.gpus` [default: the NVIDIA GPUs
    /// found in /dev, or CUDA_VISIBLE_DEVICES].
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Where nodes run, for stages that do not name an `executor` themselves (overrides
    /// `defaults.executor`). `slurm` submits them as Slurm jobs; see README "Slurm".
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorArg>,
    /// What Ctrl-C does to submitted Slurm jobs: `cancel` them (scancel), or `keep` them
    /// running so that the next run collects their results [default: slurm.on_interrupt,
    /// else cancel].
    #[arg(long, value_enum, value_name = "WHAT")]
    pub on_interrupt: Option<OnInterruptArg>,
    /// Before running a stale node, look its key up on the remote cache and download it
    /// instead when the remote has it (verified, then restored like a cached node).
    #[arg(long)]
    pub pull: bool,
    /// Upload each node to the remote cache as it commits (in the background; the run
    /// waits for the uploads at the end).
    #[arg(long)]
    pub push: bool,
    /// The remote cache of --pull and --push: a folder, file:///path,
    /// s3://bucket/prefix, gs://bucket/prefix or az://container/prefix [default:
    /// $DAGRUN_REMOTE, else the pipeline's `remote:`].
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Write the training curves (per-step loss, KL, score, ...) of the nodes that run, and
    /// command stages' `dagrun:metric NAME VALUE STEP` series, as TensorBoard event files
    /// under DIR, one run folder per node id, while they train (`tensorboard --logdir
    /// DIR`). Part of no key: switching it on reruns nothing [default:
    /// defaults.tensorboard].
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// A count that must be at least 1 (`--jobs`).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

impl RunArgs {
    /// Nothing of `dagrun PIPELINE [options]` was given.
    pub fn is_unset(&self) -> bool {
        self.pipeline.is_none()
            && !self.dry_run
            && self.jobs == 1
            && self.gpus.is_none()
            && !self.json
            && self.executor.is_none()
            && self.on_interrupt.is_none()
            && !self.pull
            && !self.push
            && self.remote.is_none()
            && self.tensorboard.is_none()
            && self.select.rerun.is_empty()
            && !self.select.downstream
            && self.select.only.is_empty()
            && self.select.until.is_empty()
            && self.overrides.is_empty()
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OnInterruptArg {
    Cancel,
    Keep,
}

/// `dagrun worker`: what a Slurm job runs (not for people).
#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// A job file (`job.json`), or with --index a task list of job files.
    #[arg(long, value_name = "FILE")]
    pub tasks: PathBuf,
    /// The line of the task list to run (Slurm's array task id).
    #[arg(long)]
    pub index: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The pipeline file (YAML).
    pub pipeline: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Plan as if stages without their own `executor` ran here (`local`) or on Slurm.
    #[arg(long, value_enum, value_name = "EXECUTOR")]
    pub executor: Option<ExecutorArg>,
    /// GPUs a run would have for `resources.gpus` [default: the NVIDIA GPUs found in
    /// /dev, or CUDA_VISIBLE_DEVICES]; a node needing more is shown `missing`.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// The pipeline file (YAML).
    pub pipeline: PathBuf,
    /// `text` (stages and their edges, for reading), `dot` (Graphviz: `| dot -Tsvg`) or
    /// `mermaid` (renders in GitHub markdown).
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
    /// Show every node of a sweep instead of one box per stage.
    #[arg(long)]
    pub expand: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The pipeline file [default: the pipeline of the last run here].
    pub pipeline: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A node id (`train[seed=1]`) or a stage without a matrix.
    pub node: String,
    /// Print the record as JSON.
    #[arg(long)]
    pub json: bool,
    /// Lines of the log to show.
    #[arg(long, default_value_t = 20)]
    pub log_lines: usize,
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// A node id (`train[seed=1]`) or a stage.
    pub node: String,
    /// The pipeline file [default: the one the node last ran from].
    #[arg(long, short = 'p')]
    pub pipeline: Option<PathBuf>,
    /// Compare as if the pipeline were loaded with these overrides: `why` then names the
    /// params they change.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

const METRICS_HELP: &str = "\
Examples:
  dagrun metrics p.yaml                          the current variant of every node
  dagrun metrics p.yaml --stage train --all      every cached variant of `train`'s nodes
  dagrun run p.yaml -S params.lr=0.01 && dagrun metrics p.yaml --all --sort loss
  dagrun metrics p.yaml --stage ppo --group-by method     mean, sd, min, max per method
  dagrun metrics p.yaml --format json | jq '.[] | select(.current)'

A node's params are a native kind's resolved params, or the pipeline params a command
stage's fields refer to (`${params.lr}` shows as `lr`). A command stage reports metrics
through its `metrics:` JSON files and `dagrun:metric NAME VALUE [STEP]` lines.";

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum MetricsFormat {
    /// Aligned columns, numbers shortened to 4 significant digits.
    Table,
    /// A Markdown table.
    Md,
    /// CSV with full values (and every key in full).
    Csv,
    /// A list of `{node, stage, key, current, matrix, params, metrics}`.
    Json,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// The pipeline file [default: the pipeline of the last run here].
    pub pipeline: Option<PathBuf>,
    /// Only these stages' nodes (or nodes: `train[seed=1]`). Repeatable.
    #[arg(long, value_name = "STAGE|NODE")]
    pub stage: Vec<String>,
    /// Every variant the cache holds for each node (earlier params, other overrides), not
    /// only the one the pipeline gives it now; the current ones are marked `*`.
    #[arg(long)]
    pub all: bool,
    /// Sort the rows by this metric (or param, or matrix key), smallest first; rows
    /// without it go last.
    #[arg(long, value_name = "METRIC")]
    pub sort: Option<String>,
    /// With --sort: largest first.
    #[arg(long, requires = "sort")]
    pub desc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = MetricsFormat::Table)]
    pub format: MetricsFormat,
    /// Aggregate each numeric metric over the rows sharing a value of KEY (a matrix key
    /// or a param): n, mean, sample sd, min and max per value.
    #[arg(long, value_name = "KEY")]
    pub group_by: Option<String>,
    /// Compare two variants param by param and metric by metric: each of A and B is a
    /// node id (its current variant) or a cache key (a hex prefix of at least 4 digits, as
    /// `--all` shows them). Prints what differs, with both values and, for numbers, the
    /// change B − A.
    #[arg(long, num_args = 2, value_names = ["A", "B"],
          conflicts_with_all = ["stage", "all", "sort", "group_by"])]
    pub diff: Option<Vec<String>>,
    /// The current variants are those of the pipeline as loaded with these overrides.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

#[derive(Args, Debug)]
pub struct KindsArgs {
    /// A kind (`ppo`, `head_ensemble`, ...): list its params with their types, defaults and
    /// what they mean.
    pub kind: Option<String>,
    /// Print JSON: with a kind, its params as a JSON schema; without, every kind with its
    /// version, summary and params schema (`null` for kinds without params).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// How many runs to list (newest last).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub count: usize,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The node whose outputs to copy.
    pub node: String,
    /// Destination folder (created if needed); each output goes to DIR/<output name>. A
    /// folder output is merged into DIR/<output name>: files of yours there that the
    /// output does not have stay. Files already there with the same bytes are left as
    /// they are; if any file differs, nothing is written (all of them are listed) unless
    /// --force. Every byte is checked against the cache's hashes on the way.
    pub dir: PathBuf,
    /// Replace files (and symbolic links) in DIR whose content differs from the output's.
    /// A folder where the output has a file is never replaced.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Delete records and artifacts the given pipelines do not reference.
    Gc {
        /// Pipelines whose nodes to keep (their current keys and last runs).
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// Only report what would be freed.
        #[arg(long)]
        dry_run: bool,
        /// Keep the nodes of the pipelines as loaded with these overrides (every
        /// pipeline gets the same ones).
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Rehash every artifact; drop corrupt ones and the records that use them.
    Verify,
    /// Upload the records and objects of the pipelines' cached nodes that the remote
    /// cache lacks (objects first, each checked against its hash; records last).
    #[command(after_help = REMOTE_HELP)]
    Push(RemoteArgs),
    /// Download what the remote cache has for the pipelines' current keys (checked
    /// against their hashes), so that `dagrun plan` says cached and a run restores
    /// instead of computing.
    #[command(after_help = REMOTE_HELP)]
    Pull(RemoteArgs),
}

const REMOTE_HELP: &str = "\
The remote is --remote URL, else $DAGRUN_REMOTE, else the pipeline's `remote:` key:
  /shared/dagrun-cache  or  file:///shared/dagrun-cache   a folder (a shared filesystem)
  s3://bucket/prefix    S3 or an S3-compatible server: the endpoint from AWS_ENDPOINT_URL,
                        credentials and region from the AWS_* variables or the profile
                        (AWS_PROFILE) of ~/.aws/credentials and ~/.aws/config
  gs://bucket/prefix, az://container/prefix   GCS and Azure (their usual variables)

Examples:
  dagrun cache push pipelines/quickstart.yaml --remote s3://team-cache/dagrun
  dagrun cache pull pipelines/quickstart.yaml && dagrun plan pipelines/quickstart.yaml
  dagrun run p.yaml --pull --push        # share as you go";

/// `dagrun cache push` and `dagrun cache pull`.
#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// Pipelines whose nodes to move (their current keys).
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// The remote cache [default: $DAGRUN_REMOTE, else each pipeline's `remote:`].
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Transfers in flight at once.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8, value_parser = at_least_one)]
    pub jobs: usize,
    /// The nodes of the pipelines as loaded with these overrides.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}
