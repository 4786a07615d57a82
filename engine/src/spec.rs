//! The pipeline file as written: serde types for `pipeline.yaml`.
//!
//! ```yaml
//! params:            # free-form values, referenced as ${params.NAME}
//!   greeting: hello
//! defaults:          # per-stage fields applied to every stage that does not set them
//!   device: cpu
//!   tensorboard: runs/   # training curves as TensorBoard event files (part of no key)
//! fingerprint:
//!   env: [CUDA_VERSION]   # environment variables whose values are part of every key
//! slurm:             # how nodes whose executor is `slurm` are submitted (see slurm.rs)
//!   staging: /shared/dagrun-staging
//! remote: s3://bucket/prefix   # the shared cache of `dagrun cache push/pull`
//! stages:
//!   NAME:
//!     kind: command          # or a native kind: see `dagrun kinds`
//!     desc: one line for humans
//!     needs: [other, "sweep[seed=1]"]
//!     params: {...}          # the kind's parameters
//!     matrix: {seed: [0, 1, 2]}
//!     resources: {cpus: 1, gpus: 0}   # + mem, time, partition, account, sbatch, retries (Slurm)
//!     executor: local        # or slurm (default: `defaults.executor`, else local)
//!     device: auto
//!     cmd: ...               # command kind
//!     deps: [file, dir/]     # files and folders read from the workspace
//!     outs: [file]           # files and folders written into the workspace
//!     metrics: [m.json]      # command kind: JSON files of metrics the command writes
//! ```

use indexmap::IndexMap;
use serde::Deserialize;

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub fingerprint: FingerprintSpec,
    #[serde(default)]
    pub slurm: SlurmSpec,
    /// A remote cache shared with others (`s3://bucket/prefix`, a folder): where
    /// `dagrun cache push/pull` and `run --push/--pull` go unless `--remote` or
    /// `DAGRUN_REMOTE` names another. Part of no key.
    #[serde(default)]
    pub remote: Option<String>,
    pub stages: IndexMap<String, StageSpec>,
}

/// Where a node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// In this process, within `--jobs` and `--gpus`.
    #[default]
    Local,
    /// As a Slurm job (array tasks for sweeps) that runs `dagrun worker`.
    Slurm,
}

impl Executor {
    pub fn name(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}

/// The pipeline's `slurm:` section: how jobs are submitted and watched.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    /// Folder on the shared filesystem for job files and outputs before they are
    /// committed [default: CACHE/slurm].
    pub staging: Option<String>,
    /// The dagrun executable the compute nodes run [default: this executable].
    pub dagrun: Option<String>,
    /// Seconds between two status polls (one `squeue` call for every job).
    pub poll_seconds: Option<f64>,
    /// Seconds at least between two `sbatch` calls.
    pub submit_interval_seconds: Option<f64>,
    /// Largest job array per `sbatch` call.
    pub max_array: Option<usize>,
    /// Most nodes submitted and not finished at once.
    pub max_jobs: Option<usize>,
    /// `sbatch` arguments added to every job (`--qos=high`, `--constraint=a100`).
    #[serde(default)]
    pub sbatch: Vec<String>,
    /// What Ctrl-C does to submitted jobs: `cancel` (scancel them) or `keep`.
    pub on_interrupt: Option<String>,
}

/// Fields every stage inherits unless it sets them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub device: Option<String>,
    pub resources: Option<ResourcesSpec>,
    pub executor: Option<Executor>,
    /// A folder for TensorBoard event files of training curves (relative to the
    /// workspace), one run folder per node; `run --tensorboard DIR` overrides it. Part of
    /// no key.
    pub tensorboard: Option<String>,
}

/// What of the environment goes into every node's key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintSpec {
    /// Environment variables whose values are key components.
    #[serde(default)]
    pub env: Vec<String>,
}

/// One stage as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub kind: String,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub matrix: Option<serde_yaml::Value>,
    #[serde(default)]
    pub resources: Option<ResourcesSpec>,
    #[serde(default)]
    pub executor: Option<Executor>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default)]
    pub outs: Vec<String>,
    /// Command stages: JSON files the command writes whose values become the node's
    /// metrics (stored and restored like `outs`).
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// `resources:` as written; every field falls back to `defaults.resources`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    /// Memory for Slurm's `--mem`: `500M`, `16G`, `1T` (a plain number is megabytes).
    pub mem: Option<String>,
    /// Time limit for Slurm's `--time`: `MM`, `HH:MM:SS`, `D-HH:MM`, ...
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// More `sbatch` arguments for this stage's jobs.
    pub sbatch: Option<Vec<String>>,
    /// Slurm jobs only: how many times a failed job is submitted again.
    pub retries: Option<u32>,
    /// Slurm jobs only: factors applied to `mem` and `time` at each retry.
    pub on_retry: Option<RetryScale>,
}

/// How a retried job grows.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryScale {
    #[serde(default = "one_f")]
    pub mem: f64,
    #[serde(default = "one_f")]
    pub time: f64,
}

fn one_f() -> f64 {
    1.0
}

/// What a node holds while it runs; the local scheduler never oversubscribes `cpus`
/// and `gpus`; the rest are for Slurm.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Resources {
    /// Job slots (`--jobs`) the node takes; `--cpus-per-task` on Slurm.
    pub cpus: u32,
    /// GPUs the node takes; the scheduler hands it specific GPU indices.
    pub gpus: u32,
    /// Megabytes.
    pub mem_mb: Option<u64>,
    /// Minutes.
    pub time_minutes: Option<u64>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub sbatch: Vec<String>,
    pub retries: u32,
    pub on_retry: Option<RetryScale>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1,
            gpus: 0,
            mem_mb: None,
            time_minutes: None,
            partition: None,
            account: None,
            sbatch: Vec::new(),
            retries: 0,
            on_retry: None,
        }
    }
}

/// `500M`, `16G`, `2T`, `1024` (megabytes) → megabytes.
pub fn parse_mem(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a memory size (like 500M, 16G)"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" => 1.0,
        "K" | "KB" => 1.0 / 1024.0,
        "G" | "GB" => 1024.0,
        "T" | "TB" => 1024.0 * 1024.0,
        _ => return Err(format!("`{s}`: the unit must be K, M, G or T")),
    };
    if v.is_nan() || v <= 0.0 {
        return Err(format!("`{s}`: memory must be positive"));
    }
    Ok((v * mult).ceil() as u64)
}

/// Slurm's time formats (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)
/// → minutes, rounded up.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a Slurm time (MM, HH:MM:SS, D-HH:MM, ...)");
    let t = s.trim();
    let num = |x: &str| -> Result<u64, String> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let secs = if let Some((d, rest)) = t.split_once('-') {
        let days = num(d)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (h, m, sec) = match parts.as_slice() {
            [h] => (num(h)?, 0, 0),
            [h, m] => (num(h)?, num(m)?, 0),
            [h, m, s] => (num(h)?, num(m)?, num(s)?),
            _ => return Err(bad()),
        };
        ((days * 24 + h) * 60 + m) * 60 + sec
    } else {
        let parts: Vec<&str> = t.split(':').collect();
        match parts.as_slice() {
            [m] => num(m)? * 60,
            [m, s] => num(m)? * 60 + num(s)?,
            [h, m, s] => (num(h)? * 60 + num(m)?) * 60 + num(s)?,
            _ => return Err(bad()),
        }
    };
    if secs == 0 {
        return Err(format!("`{s}`: the time limit must be positive"));
    }
    Ok(secs.div_ceil(60))
}

/// Minutes → `D-HH:MM:00`, which every Slurm accepts.
pub fn format_time(minutes: u64) -> String {
    format!(
        "{}-{:02}:{:02}:00",
        minutes / (24 * 60),
        (minutes / 60) % 24,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem("500M"), Ok(500));
        assert_eq!(parse_mem("16G"), Ok(16384));
        assert_eq!(parse_mem("1.5g"), Ok(1536));
        assert_eq!(parse_mem("2T"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_mem("2048"), Ok(2048));
        assert!(parse_mem("16X").is_err());
        assert_eq!(parse_mem("4GB"), Ok(4096));
        assert!(parse_mem("lots").unwrap_err().contains("not a memory size"));
        assert!(parse_mem("0G").is_err());
    }

    #[test]
    fn slurm_times() {
        assert_eq!(parse_time("30"), Ok(30));
        assert_eq!(parse_time("30:30"), Ok(31));
        assert_eq!(parse_time("2:00:00"), Ok(120));
        assert_eq!(parse_time("1-0"), Ok(24 * 60));
        assert_eq!(parse_time("1-2:30"), Ok(26 * 60 + 30));
        assert_eq!(parse_time("1-02:30:01"), Ok(26 * 60 + 31));
        assert!(parse_time("1:2:3:4").is_err());
        assert!(parse_time("soon").is_err());
        assert!(parse_time("0").is_err());
        assert_eq!(format_time(26 * 60 + 31), "1-02:31:00");
        assert_eq!(parse_time(&format_time(12345)), Ok(12345));
    }
}
