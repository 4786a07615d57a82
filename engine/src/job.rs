//! A node as a self-contained job: the files a coordinator writes for a node that runs
//! elsewhere (a Slurm job), and [`run_worker`], which a compute node runs.
//!
//! Each job has a staging folder on the shared filesystem, named by the node's key:
//!
//! ```text
//! STAGING/<key>/job.json        what to run (JobSpec): kind, params with input paths, folders
//!              /submitted.json  the Slurm job id of the current attempt (coordinator)
//!              /out/            the kind's outputs (worker)
//!              /log             the node's log, every attempt appended (worker)
//!              /progress        the latest progress update (worker)
//!              /result.json     written last, atomically (worker): ok / failed / interrupted
//! ```
//!
//! The worker never opens the cache: it reads its inputs through the paths in
//! `job.json` (read-only views of the cache's content-addressed files) and writes only
//! into its staging folder, its scratch folder and the node's workspace `outs`. The
//! coordinator rehashes the outputs and commits them; until then nothing of the job is
//! in the cache.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use dagrun_cache::Metrics;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    invoke::{invoke, Ended, Invocation},
    stage::{Place, Progress, ProgressSink, Registry},
};

pub const JOB_SCHEMA: &str = "dagrun-job-v1";

/// What a job runs: everything the worker needs, with absolute paths.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub schema: String,
    /// The node's key (hex): names the staging and scratch folders.
    pub key: String,
    pub node: String,
    pub stage: String,
    pub kind: String,
    pub kind_version: u32,
    /// Resolved parameters; upstream artifacts are paths of read-only cache views.
    pub params: Value,
    pub matrix: IndexMap<String, Value>,
    pub device: String,
    pub gpus: u32,
    pub workdir: PathBuf,
    /// Workspace outputs (relative to `workdir`), removed before the kind runs.
    pub outs: Vec<String>,
    pub scratch: PathBuf,
    pub staging: PathBuf,
    /// The node's TensorBoard run folder (on the shared filesystem), if asked for.
    #[serde(default)]
    pub tensorboard: Option<PathBuf>,
}

/// How a job ended, as the worker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Ok,
    Failed,
    Interrupted,
}

/// `result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobResult {
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub metrics: Metrics,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
    pub host: String,
}

/// `submitted.json`: the coordinator's note of the Slurm job running a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submitted {
    /// `JOBID_TASK` for an array task, `JOBID` otherwise.
    pub job_id: String,
    pub attempt: u32,
    /// Slurm's own output file of the job (startup errors land there).
    pub slurm_output: PathBuf,
    pub at: DateTime<Utc>,
}

/// The files of one job's staging folder.
#[derive(Clone, Debug)]
pub struct Staged {
    pub dir: PathBuf,
}

impl Staged {
    pub fn new(staging_root: &Path, key_hex: &str) -> Self {
        Staged {
            dir: staging_root.join(key_hex),
        }
    }
    pub fn job(&self) -> PathBuf {
        self.dir.join("job.json")
    }
    pub fn submitted(&self) -> PathBuf {
        self.dir.join("submitted.json")
    }
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    pub fn progress(&self) -> PathBuf {
        self.dir.join("progress")
    }
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }

    /// The result, if the worker finished writing one.
    pub fn read_result(&self) -> Option<JobResult> {
        let bytes = std::fs::read(self.result()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn read_submitted(&self) -> Option<Submitted> {
        let bytes = std::fs::read(self.submitted()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets a previous attempt's result and outputs (not its log).
    pub fn clear_attempt(&self) -> std::io::Result<()> {
        for f in [self.result(), self.progress(), self.submitted()] {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match std::fs::remove_dir_all(self.out()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, fsynced, so
/// a reader sees the whole file or none of it.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value).expect("serialises"))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The Slurm job this process runs in: `ARRAYJOB_TASK` for an array task.
fn slurm_job_id() -> String {
    let var = |k: &str| std::env::var(k).ok();
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(j), Some(t)) => format!("{j}_{t}"),
        _ => var("SLURM_JOB_ID").unwrap_or_else(|| "-".into()),
    }
}

/// Finds the job of an array task: line `index` of a task list (one `job.json` path
/// per line), or the file itself when it is a `job.json`.
pub fn job_path(list_or_job: &Path, index: Option<usize>) -> Result<PathBuf, String> {
    let Some(index) = index else {
        return Ok(list_or_job.to_path_buf());
    };
    let text = std::fs::read_to_string(list_or_job)
        .map_err(|e| format!("cannot read the task list {}: {e}", list_or_job.display()))?;
    text.lines().nth(index).map(PathBuf::from).ok_or_else(|| {
        format!(
            "the task list {} has no task {index}",
            list_or_job.display()
        )
    })
}

/// Writes progress to the staging folder, at most a few times a second.
struct FileProgress {
    path: PathBuf,
    last: Mutex<Option<Instant>>,
}

impl ProgressSink for FileProgress {
    fn progress(&self, _node: &str, p: &Progress) {
        let mut last = self.last.lock().expect("progress lock");
        let now = Instant::now();
        if matches!(*last, Some(t) if now - t < Duration::from_millis(250)) && p.done < p.total {
            return;
        }
        *last = Some(now);
        let v = serde_json::json!({"done": p.done, "total": p.total, "message": p.message});
        let _ = write_json_atomic(&self.path, &v);
    }
}

/// Reads a progress update a worker wrote.
pub fn read_progress(path: &Path) -> Option<Progress> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(Progress {
        done: v.get("done")?.as_u64()?,
        total: v.get("total")?.as_u64()?,
        message: v.get("message")?.as_str()?.to_string(),
    })
}

/// Runs one job on this machine (`dagrun worker`). Writes `result.json` whatever
/// happens once the job file could be read; returns the status for the exit code.
pub fn run_worker(
    job_file: &Path,
    registry: &Registry,
    cancel: Arc<AtomicBool>,
) -> Result<JobStatus, String> {
    let bytes = std::fs::read(job_file)
        .map_err(|e| format!("cannot read the job file {}: {e}", job_file.display()))?;
    let spec: JobSpec = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a dagrun job file: {e}", job_file.display()))?;
    if spec.schema != JOB_SCHEMA {
        return Err(format!(
            "{} is a `{}` job file; this dagrun reads `{JOB_SCHEMA}`",
            job_file.display(),
            spec.schema
        ));
    }
    let staged = Staged {
        dir: spec.staging.clone(),
    };
    // Relative paths in params mean the workspace, as they do for a local run.
    std::env::set_current_dir(&spec.workdir).map_err(|e| {
        format!(
            "the job's workspace {} is not reachable here: {e} (it must be on a filesystem the compute nodes share)",
            spec.workdir.display()
        )
    })?;
    let started = Utc::now();
    let t0 = Instant::now();
    let host = host_name();
    let finish = |status: JobStatus, error: Option<String>, metrics: Metrics| {
        let r = JobResult {
            status,
            error,
            metrics,
            started,
            finished: Utc::now(),
            seconds: t0.elapsed().as_secs_f64(),
            host: host.clone(),
        };
        write_json_atomic(&staged.result(), &r)
            .map_err(|e| format!("cannot write {}: {e}", staged.result().display()))?;
        Ok(status)
    };
    let kind = match registry.get(&spec.kind) {
        Some(k) if k.version() == spec.kind_version => k,
        Some(k) => {
            return finish(
                JobStatus::Failed,
                Some(format!(
                    "this dagrun ({}) has kind `{}` version {}, the job needs version {}: point `slurm.dagrun` at the same build as the coordinator",
                    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
                    spec.kind,
                    k.version(),
                    spec.kind_version
                )),
                Metrics::default(),
            )
        }
        None => {
            return finish(
                JobStatus::Failed,
                Some(format!("this dagrun has no stage kind `{}`", spec.kind)),
                Metrics::default(),
            )
        }
    };
    let open_log = || -> std::io::Result<std::fs::File> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(staged.log())?;
        writeln!(
            log,
            "== dagrun worker on {host} at {} (Slurm job {})",
            started.to_rfc3339(),
            slurm_job_id()
        )?;
        Ok(log)
    };
    let log = match open_log() {
        Ok(f) => f,
        Err(e) => {
            return finish(
                JobStatus::Failed,
                Some(format!("cannot open the job's log: {e}")),
                Metrics::default(),
            )
        }
    };
    let invoked = invoke(
        kind.as_ref(),
        Invocation {
            node: spec.node.clone(),
            stage: spec.stage.clone(),
            params: spec.params.clone(),
            matrix: spec.matrix.clone(),
            workdir: spec.workdir.clone(),
            device: spec.device.clone(),
            // Slurm makes the job's GPUs visible as 0..gpus.
            gpus: (0..spec.gpus).collect(),
            place: Place::Cluster { gpus: spec.gpus },
            out_dir: staged.out(),
            scratch: spec.scratch.clone(),
            outs: spec.outs.clone(),
            log,
            log_path: staged.log(),
            sink: Arc::new(FileProgress {
                path: staged.progress(),
                last: Mutex::new(None),
            }),
            cancel,
            cache_dir: None,
            tensorboard: spec.tensorboard.clone(),
        },
    );
    match invoked.ended {
        Ended::Done => finish(JobStatus::Ok, None, invoked.metrics),
        Ended::Interrupted => finish(JobStatus::Interrupted, None, invoked.metrics),
        Ended::Failed(e) => finish(JobStatus::Failed, Some(e), invoked.metrics),
    }
}
