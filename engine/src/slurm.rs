//! The Slurm executor: nodes whose `executor` is `slurm` become Slurm jobs.
//!
//! The executor ([`crate::run`]) hands each such node to [`Slurm::run`], which blocks
//! until the node's job ends. Behind it one thread talks to Slurm:
//!
//! - **Submission in arrays.** Nodes handed over within `GATHER` of each other with the
//!   same stage and resources go out as one job array (`sbatch --array=0-N`), at most
//!   `slurm.max_array` tasks per call, and `sbatch` is called at most once per
//!   `slurm.submit_interval_seconds`.
//! - **Bulk polling.** One `squeue` call per `slurm.poll_seconds` covers every job this
//!   run submitted or adopted.
//! - **Results.** A job's worker (`dagrun worker`, see [`crate::job`]) writes outputs and
//!   `result.json` into the node's staging folder; the executor rehashes and commits them.
//! - **Retries.** A failed job is submitted again up to `resources.retries` times, its
//!   `mem` and `time` multiplied by `resources.on_retry` each time. Its scratch folder
//!   (checkpoints) is on the shared filesystem and carries over. A job someone cancelled
//!   is not retried.
//! - **Ctrl-C** cancels every job of the run (`scancel`), or leaves them running with
//!   `slurm.on_interrupt: keep`.
//! - **Adoption.** A node whose staging folder holds a successful result (its job
//!   finished after the coordinator went away), or the id of a job Slurm still runs, is
//!   taken over instead of submitted again.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use chrono::Utc;

use crate::{
    job::{read_progress, write_json_atomic, JobResult, JobStatus, Staged, Submitted},
    spec::{format_time, Resources, SlurmSpec},
    stage::{Progress, ProgressSink},
};

/// How long the first node of a batch waits for siblings before `sbatch`.
const GATHER: Duration = Duration::from_millis(300);

/// What Ctrl-C does to submitted jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInterrupt {
    Cancel,
    Keep,
}

/// The `slurm:` section with defaults filled in and paths made absolute.
#[derive(Clone, Debug)]
pub struct SlurmSettings {
    pub staging: PathBuf,
    pub dagrun: PathBuf,
    pub poll: Duration,
    pub submit_interval: Duration,
    pub max_array: usize,
    pub max_jobs: usize,
    pub sbatch: Vec<String>,
    pub on_interrupt: OnInterrupt,
}

/// A duration from a number of seconds the pipeline checked (0 to a day); never panics,
/// whatever the number.
fn seconds(v: Option<f64>, default: f64) -> Duration {
    Duration::try_from_secs_f64(v.unwrap_or(default)).unwrap_or(Duration::from_secs_f64(default))
}

impl SlurmSettings {
    /// Relative paths are relative to the workspace; staging defaults to CACHE/slurm.
    pub fn new(spec: &SlurmSpec, workdir: &Path, cache_dir: &Path) -> Self {
        let abs = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                workdir.join(p)
            }
        };
        SlurmSettings {
            staging: spec
                .staging
                .as_deref()
                .map(abs)
                .unwrap_or_else(|| cache_dir.join("slurm")),
            dagrun: spec
                .dagrun
                .as_deref()
                .map(abs)
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("dagrun")),
            poll: seconds(spec.poll_seconds, 5.0),
            submit_interval: seconds(spec.submit_interval_seconds, 1.0),
            max_array: spec.max_array.unwrap_or(1000),
            max_jobs: spec.max_jobs.unwrap_or(2000),
            sbatch: spec.sbatch.clone(),
            on_interrupt: match spec.on_interrupt.as_deref() {
                Some("keep") => OnInterrupt::Keep,
                _ => OnInterrupt::Cancel,
            },
        }
    }
}

/// How a node's job ended, for the executor.
#[derive(Debug)]
pub enum RemoteOutcome {
    /// The worker finished; outputs are in the staging folder. `adopted`: the job was
    /// submitted by an earlier dagrun.
    Done {
        result: JobResult,
        adopted: bool,
    },
    Failed {
        error: String,
        log: Option<PathBuf>,
    },
    Interrupted,
}

/// A node handed to the Slurm thread.
pub struct Submission {
    pub node: String,
    pub stage: String,
    pub staged: Staged,
    pub resources: Resources,
}

enum Msg {
    Run(Box<Submission>, mpsc::Sender<RemoteOutcome>),
    Stop,
}

/// The handle the executor's threads share.
pub struct Slurm {
    tx: Mutex<mpsc::Sender<Msg>>,
    thread: Mutex<Option<std::thread::JoinHandle<Vec<String>>>>,
    pub settings: SlurmSettings,
}

impl Slurm {
    /// Checks that Slurm's commands are here and starts the thread that talks to Slurm.
    pub fn start(
        settings: SlurmSettings,
        sink: Arc<dyn ProgressSink>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Slurm, String> {
        for tool in ["sbatch", "squeue", "scancel"] {
            if which(tool).is_none() {
                return Err(format!(
                    "nodes use `executor: slurm` but `{tool}` is not on PATH (run dagrun on a Slurm login node, or use --executor local)"
                ));
            }
        }
        std::fs::create_dir_all(settings.staging.join("arrays")).map_err(|e| {
            format!(
                "cannot create the Slurm staging folder {}: {e}",
                settings.staging.display()
            )
        })?;
        let (tx, rx) = mpsc::channel();
        let s = settings.clone();
        let thread = std::thread::Builder::new()
            .name("dagrun-slurm".into())
            .spawn(move || Loop::new(s, sink, cancel).run(rx))
            .map_err(|e| format!("cannot start the Slurm thread: {e}"))?;
        Ok(Slurm {
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
            settings,
        })
    }

    /// Submits (or adopts) a node's job and waits for it to end.
    pub fn run(&self, sub: Submission) -> RemoteOutcome {
        let (tx, rx) = mpsc::channel();
        if self
            .tx
            .lock()
            .expect("slurm sender")
            .send(Msg::Run(Box::new(sub), tx))
            .is_err()
        {
            return RemoteOutcome::Interrupted;
        }
        rx.recv().unwrap_or(RemoteOutcome::Interrupted)
    }

    /// Stops the thread; returns the ids of jobs left running (Ctrl-C with `keep`).
    pub fn stop(&self) -> Vec<String> {
        let _ = self.tx.lock().expect("slurm sender").send(Msg::Stop);
        self.thread
            .lock()
            .expect("slurm thread")
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// One node's job as the thread tracks it.
struct Task {
    sub: Submission,
    reply: mpsc::Sender<RemoteOutcome>,
    attempt: u32,
    /// `JOBID_TASK` once submitted or adopted.
    job_id: Option<String>,
    slurm_output: Option<PathBuf>,
    adopted: bool,
    /// Polls that did not list the job (it may have left squeue's memory).
    unseen: u32,
    last_state: String,
    progress_mtime: Option<std::time::SystemTime>,
    /// The array folder of the current attempt.
    batch: Option<PathBuf>,
}

struct Loop {
    s: SlurmSettings,
    sink: Arc<dyn ProgressSink>,
    cancel: Arc<AtomicBool>,
    queued: VecDeque<Task>,
    active: Vec<Task>,
    first_queued: Option<Instant>,
    next_submit: Instant,
    next_poll: Instant,
    batches: u64,
    /// Array folders → tasks not yet settled; removed when all succeeded (a failed
    /// task's folder stays for its Slurm output).
    open_batches: HashMap<PathBuf, (usize, bool)>,
}

/// Slurm job states in which the job has not ended.
const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "SUSPENDED",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
];

impl Loop {
    fn new(s: SlurmSettings, sink: Arc<dyn ProgressSink>, cancel: Arc<AtomicBool>) -> Self {
        let now = Instant::now();
        Loop {
            s,
            sink,
            cancel,
            queued: VecDeque::new(),
            active: Vec::new(),
            first_queued: None,
            next_submit: now,
            next_poll: now,
            batches: 0,
            open_batches: HashMap::new(),
        }
    }

    fn say(&self, node: &str, message: String) {
        self.sink.progress(
            node,
            &Progress {
                done: 0,
                total: 0,
                message,
            },
        );
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) -> Vec<String> {
        let tick = Duration::from_millis(50);
        let mut stopping = false;
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    None
                }
            };
            for m in first
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()))
            {
                match m {
                    Msg::Run(sub, reply) => self.intake(*sub, reply),
                    Msg::Stop => stopping = true,
                }
            }
            if self.cancel.load(Ordering::Relaxed) {
                return self.interrupt();
            }
            let now = Instant::now();
            if !self.queued.is_empty()
                && now >= self.next_submit
                && self.first_queued.is_some_and(|t| now - t >= GATHER)
            {
                self.submit_batch();
                self.next_submit = Instant::now() + self.s.submit_interval;
                if self.queued.is_empty() {
                    self.first_queued = None;
                }
            }
            if !self.active.is_empty() && Instant::now() >= self.next_poll {
                self.poll();
                self.next_poll = Instant::now() + self.s.poll;
            }
            if stopping && self.queued.is_empty() && self.active.is_empty() {
                return Vec::new();
            }
        }
    }

    /// A node arrives: adopt an earlier job's result or running job, else queue it.
    fn intake(&mut self, sub: Submission, reply: mpsc::Sender<RemoteOutcome>) {
        let mut task = Task {
            sub,
            reply,
            attempt: 1,
            job_id: None,
            slurm_output: None,
            adopted: false,
            unseen: 0,
            last_state: String::new(),
            progress_mtime: None,
            batch: None,
        };
        match task.sub.staged.read_result() {
            Some(r) if r.status == JobStatus::Ok && task.sub.staged.out().is_dir() => {
                tracing::info!(node = %task.sub.node, "adopting the result of an earlier Slurm job");
                let _ = task.reply.send(RemoteOutcome::Done {
                    result: r,
                    adopted: true,
                });
                return;
            }
            Some(_) => {} // an earlier attempt that did not succeed: submit afresh
            None => {
                if let Some(prev) = task.sub.staged.read_submitted() {
                    // Possibly still running: watch it; the poll decides.
                    self.say(
                        &task.sub.node,
                        format!("watching Slurm job {} from an earlier run", prev.job_id),
                    );
                    task.job_id = Some(prev.job_id);
                    task.slurm_output = Some(prev.slurm_output);
                    task.attempt = prev.attempt;
                    task.adopted = true;
                    self.active.push(task);
                    return;
                }
            }
        }
        self.enqueue(task);
    }

    fn enqueue(&mut self, task: Task) {
        if self.first_queued.is_none() {
            self.first_queued = Some(Instant::now());
        }
        self.queued.push_back(task);
    }

    /// `sbatch` options of a task (everything but the array and output).
    fn options(&self, t: &Task) -> Vec<String> {
        let r = &t.sub.resources;
        let mut o = vec![
            format!("--job-name=dagrun:{}", t.sub.stage),
            format!("--cpus-per-task={}", r.cpus),
        ];
        if r.gpus > 0 {
            o.push(format!("--gpus={}", r.gpus));
        }
        if let Some(mb) = r.mem_mb {
            o.push(format!("--mem={mb}M"));
        }
        if let Some(m) = r.time_minutes {
            o.push(format!("--time={}", format_time(m)));
        }
        if let Some(p) = &r.partition {
            o.push(format!("--partition={p}"));
        }
        if let Some(a) = &r.account {
            o.push(format!("--account={a}"));
        }
        o.extend(self.s.sbatch.iter().cloned());
        o.extend(r.sbatch.iter().cloned());
        o
    }

    /// Submits the oldest group of alike tasks as one job array.
    fn submit_batch(&mut self) {
        let Some(front) = self.queued.front() else {
            return;
        };
        let opts = self.options(front);
        let mut batch = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(t) = self.queued.pop_front() {
            if batch.len() < self.s.max_array && self.options(&t) == opts {
                batch.push(t);
            } else {
                rest.push_back(t);
            }
        }
        self.queued = rest;
        self.batches += 1;
        let dir = self.s.staging.join("arrays").join(format!(
            "{}-{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id(),
            self.batches
        ));
        match self.sbatch(&dir, &opts, &batch) {
            Ok(job) => {
                self.open_batches.insert(dir.clone(), (batch.len(), false));
                for (i, mut t) in batch.into_iter().enumerate() {
                    let id = format!("{job}_{i}");
                    let out = dir.join(format!("task-{i}.out"));
                    let note = Submitted {
                        job_id: id.clone(),
                        attempt: t.attempt,
                        slurm_output: out.clone(),
                        at: Utc::now(),
                    };
                    if let Err(e) = write_json_atomic(&t.sub.staged.submitted(), &note) {
                        tracing::warn!(node = %t.sub.node, "cannot note the Slurm job id: {e}");
                    }
                    self.say(&t.sub.node, format!("submitted as Slurm job {id}"));
                    t.job_id = Some(id);
                    t.slurm_output = Some(out);
                    t.batch = Some(dir.clone());
                    t.unseen = 0;
                    self.active.push(t);
                }
                // See the new jobs soon, whatever the poll interval.
                self.next_poll = self
                    .next_poll
                    .min(Instant::now() + Duration::from_millis(500));
            }
            Err(e) => {
                for t in batch {
                    let _ = t.reply.send(RemoteOutcome::Failed {
                        error: format!("sbatch failed: {e}"),
                        log: None,
                    });
                }
            }
        }
    }

    /// Writes the array's task list and script and calls `sbatch`; returns the job id.
    fn sbatch(&self, dir: &Path, opts: &[String], batch: &[Task]) -> Result<String, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut list = String::new();
        for t in batch {
            t.sub
                .staged
                .clear_attempt()
                .map_err(|e| format!("cannot clear {}: {e}", t.sub.staged.dir.display()))?;
            list.push_str(&t.sub.staged.job().to_string_lossy());
            list.push('\n');
        }
        let tasks = dir.join("tasks");
        std::fs::write(&tasks, list)
            .map_err(|e| format!("cannot write {}: {e}", tasks.display()))?;
        let script = dir.join("job.sh");
        let nodes: Vec<&str> = batch.iter().map(|t| t.sub.node.as_str()).collect();
        let text = format!(
            "#!/bin/sh\n# dagrun: {} node(s) of stage `{}`: {}\nexec {} worker --tasks {} --index \"${{SLURM_ARRAY_TASK_ID:-0}}\"\n",
            batch.len(),
            batch[0].sub.stage,
            nodes.join(" "),
            shell_quote(&self.s.dagrun.to_string_lossy()),
            shell_quote(&tasks.to_string_lossy()),
        );
        std::fs::write(&script, text)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--array=0-{}", batch.len() - 1))
            .arg(format!("--output={}", dir.join("task-%a.out").display()))
            .args(opts)
            .arg(&script);
        tracing::info!(?cmd, "submitting");
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run sbatch: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("unexpected sbatch output: {}", text.trim()));
        }
        Ok(id)
    }

    /// One `squeue` for every job; settles the jobs that ended.
    fn poll(&mut self) {
        let ids: BTreeSet<String> = self
            .active
            .iter()
            .filter_map(|t| t.job_id.as_deref())
            .map(|id| id.split('_').next().unwrap_or(id).to_string())
            .collect();
        let states = match squeue(&ids) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("squeue failed (will retry): {e}");
                return;
            }
        };
        let active = std::mem::take(&mut self.active);
        for mut t in active {
            let id = t.job_id.clone().unwrap_or_default();
            match states.get(&id) {
                Some((state, reason)) if ACTIVE.contains(&state.as_str()) => {
                    t.unseen = 0;
                    self.report_progress(&mut t, state, reason);
                    self.active.push(t);
                }
                seen => {
                    let state = seen.map(|(s, _)| s.clone());
                    let result = t.sub.staged.read_result();
                    if state.is_none() && result.is_none() && t.unseen < 2 {
                        // Not listed yet or any more: give squeue another look.
                        t.unseen += 1;
                        self.active.push(t);
                        continue;
                    }
                    self.settle(t, state, result);
                }
            }
        }
    }

    fn report_progress(&self, t: &mut Task, state: &str, reason: &str) {
        let id = t.job_id.as_deref().unwrap_or("?");
        if state == "RUNNING" {
            let p = t.sub.staged.progress();
            let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            if mtime.is_some() && mtime != t.progress_mtime {
                t.progress_mtime = mtime;
                if let Some(mut pr) = read_progress(&p) {
                    pr.message = format!("{} (Slurm {id})", pr.message);
                    self.sink.progress(&t.sub.node, &pr);
                }
                t.last_state = state.to_string();
                return;
            }
        }
        if t.last_state != state {
            t.last_state = state.to_string();
            let why = if reason.is_empty() || reason == "None" {
                String::new()
            } else {
                format!(" ({reason})")
            };
            self.say(
                &t.sub.node,
                format!("Slurm job {id} {}{why}", state.to_lowercase()),
            );
        }
    }

    /// Counts a settled task against its array folder; removes the folder when every
    /// task of it succeeded.
    fn close_task(&mut self, batch: Option<PathBuf>, ok: bool) {
        let Some(dir) = batch else { return };
        let Some(entry) = self.open_batches.get_mut(&dir) else {
            return;
        };
        entry.0 -= 1;
        entry.1 |= !ok;
        if entry.0 == 0 {
            let failed = entry.1;
            self.open_batches.remove(&dir);
            if !failed {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    /// A job ended (`state`: Slurm's last word on it, if squeue still knew it).
    fn settle(&mut self, mut t: Task, state: Option<String>, result: Option<JobResult>) {
        let id = t.job_id.clone().unwrap_or_default();
        let ok = matches!(&result, Some(r) if r.status == JobStatus::Ok);
        self.close_task(t.batch.take(), ok);
        let error = match &result {
            Some(r) if r.status == JobStatus::Ok => {
                let adopted = t.adopted;
                let _ = t.reply.send(RemoteOutcome::Done {
                    result: r.clone(),
                    adopted,
                });
                return;
            }
            Some(r) if r.status == JobStatus::Failed => r.error.clone().unwrap_or_default(),
            _ => match state.as_deref() {
                Some(s) => format!(
                    "Slurm job {id} ended {s} without a result (killed by Slurm, out of time or memory, or its node failed)"
                ),
                None => format!("Slurm job {id} is gone without a result"),
            },
        };
        if t.adopted {
            // A job of an earlier run that did not succeed: this run starts afresh
            // (with the same scratch folder), without counting it as a retry.
            tracing::info!("{}: {error}; submitting it again", t.sub.node);
            t.adopted = false;
            t.job_id = None;
            t.attempt = 1;
            t.last_state.clear();
            self.enqueue(t);
            return;
        }
        let cancelled = state.as_deref() == Some("CANCELLED")
            && result
                .as_ref()
                .is_none_or(|r| r.status != JobStatus::Failed);
        if t.attempt <= t.sub.resources.retries && !cancelled {
            let r = &mut t.sub.resources;
            if let Some(scale) = &r.on_retry {
                r.mem_mb = r.mem_mb.map(|m| (m as f64 * scale.mem).ceil() as u64);
                r.time_minutes = r
                    .time_minutes
                    .map(|m| (m as f64 * scale.time).ceil() as u64);
            }
            t.attempt += 1;
            t.job_id = None;
            t.adopted = false;
            t.last_state.clear();
            let msg = format!(
                "{error}; retrying (attempt {} of {})",
                t.attempt,
                t.sub.resources.retries + 1
            );
            tracing::warn!("{}: {msg}", t.sub.node);
            self.sink.log_line(&t.sub.node, &msg);
            self.say(
                &t.sub.node,
                format!(
                    "retrying (attempt {} of {})",
                    t.attempt,
                    t.sub.resources.retries + 1
                ),
            );
            self.enqueue(t);
            return;
        }
        let log = [Some(t.sub.staged.log()), t.slurm_output.clone()]
            .into_iter()
            .flatten()
            .find(|p| p.metadata().map(|m| m.len() > 0).unwrap_or(false));
        let mut error = error;
        if let Some(out) = &t.slurm_output {
            if out.exists() {
                error.push_str(&format!(" [Slurm output: {}]", out.display()));
            }
        }
        // The job is over: the next run submits afresh instead of watching it.
        let _ = std::fs::remove_file(t.sub.staged.submitted());
        let _ = t.reply.send(RemoteOutcome::Failed { error, log });
    }

    /// Ctrl-C: cancel (or leave) the jobs and answer every waiting node.
    fn interrupt(mut self) -> Vec<String> {
        let ids: Vec<String> = self
            .active
            .iter()
            .filter_map(|t| t.job_id.clone())
            .collect();
        let mut left = Vec::new();
        if !ids.is_empty() {
            match self.s.on_interrupt {
                OnInterrupt::Cancel => {
                    let out = Command::new("scancel").args(&ids).output();
                    match out {
                        Ok(o) if o.status.success() => {
                            tracing::info!(jobs = ids.len(), "cancelled the run's Slurm jobs")
                        }
                        Ok(o) => {
                            tracing::warn!("scancel: {}", String::from_utf8_lossy(&o.stderr).trim())
                        }
                        Err(e) => tracing::warn!("cannot run scancel: {e}"),
                    }
                }
                OnInterrupt::Keep => left = ids,
            }
        }
        for t in self.active.drain(..).chain(self.queued.drain(..)) {
            let _ = t.reply.send(RemoteOutcome::Interrupted);
        }
        left
    }
}

/// `squeue` for the given jobs (array master ids): task id → (state, reason), with
/// pending array ranges (`12_[3-5,8%2]`) expanded.
fn squeue(ids: &BTreeSet<String>) -> Result<HashMap<String, (String, String)>, String> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<&str> = ids.iter().map(String::as_str).collect();
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j"])
        .arg(list.join(","))
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Every id forgotten by the controller: nothing to report.
        if stderr.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(stderr.trim().to_string());
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `%i|%T|%r` lines.
pub fn parse_squeue(text: &str) -> HashMap<String, (String, String)> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut parts = line.trim().splitn(3, '|');
        let (Some(id), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        let reason = parts.next().unwrap_or("").to_string();
        let state = state.trim().to_string();
        for task in expand_array_id(id.trim()) {
            m.insert(task, (state.clone(), reason.clone()));
        }
    }
    m
}

/// `12_3` → [`12_3`]; `12_[3-5,8%2]` → [`12_3`, `12_4`, `12_5`, `12_8`]; `12` → [`12`].
pub fn expand_array_id(id: &str) -> Vec<String> {
    let Some((job, rest)) = id.split_once('_') else {
        return vec![id.to_string()];
    };
    let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return vec![id.to_string()];
    };
    let inner = inner.split('%').next().unwrap_or("");
    let mut v = Vec::new();
    for part in inner.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
            v.extend((a..=b.min(a + 1_000_000)).map(|i| format!("{job}_{i}")));
        }
    }
    v
}

/// Single-quotes a word for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Folders of a staging area that no run can use any more: a node's folder when
/// `adoptable(key)` is false (its key is committed, or no node has it now) and no job may
/// still be writing into it (no submitted job without a result), and an array folder
/// whose nodes' folders are all gone.
pub fn stale_staging(staging: &Path, adoptable: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut stale = Vec::new();
    let Ok(rd) = std::fs::read_dir(staging) else {
        return stale;
    };
    let mut gone = BTreeSet::new();
    for e in rd.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let staged = Staged { dir: path.clone() };
        let maybe_running = staged.submitted().exists() && !staged.result().exists();
        if !adoptable(name) && !maybe_running {
            gone.insert(staged.job());
            stale.push(path);
        }
    }
    if let Ok(rd) = std::fs::read_dir(staging.join("arrays")) {
        for e in rd.flatten() {
            let tasks = std::fs::read_to_string(e.path().join("tasks")).unwrap_or_default();
            let all_gone = tasks.lines().all(|job| {
                let job = PathBuf::from(job);
                gone.contains(&job) || !job.exists()
            });
            if all_gone {
                stale.push(e.path());
            }
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ids() {
        assert_eq!(expand_array_id("12_3"), vec!["12_3"]);
        assert_eq!(expand_array_id("12"), vec!["12"]);
        assert_eq!(
            expand_array_id("12_[3-5,8%2]"),
            vec!["12_3", "12_4", "12_5", "12_8"]
        );
        assert_eq!(expand_array_id("7_[0]"), vec!["7_0"]);
    }

    #[test]
    fn squeue_lines() {
        let m = parse_squeue("1_[2-3]|PENDING|Resources\n1_1|RUNNING|None\n1_0|COMPLETED|None\n");
        assert_eq!(m.len(), 4);
        assert_eq!(m["1_2"], ("PENDING".into(), "Resources".into()));
        assert_eq!(m["1_3"].0, "PENDING");
        assert_eq!(m["1_1"].0, "RUNNING");
        assert_eq!(m["1_0"].0, "COMPLETED");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
