//! The executor: runs stale nodes in dependency order, `--jobs` at a time within their
//! `resources`, and commits each result to the cache. Cached nodes go through the same
//! queue (they complete at once), and every node is evaluated by the planner's
//! [`Evaluator::evaluate`] once its upstream is settled: a node whose upstream reran
//! with byte-identical outputs stays cached (early cutoff).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
};

use chrono::Utc;
use dagrun_cache::{
    Artifact, Cache, Latest, Metrics, NodeFailure, Record, RunCounts, RunSummary, Timing,
};

use crate::{
    error::{Error, Result},
    job::{write_json_atomic, JobSpec, Staged, JOB_SCHEMA},
    plan::{runtime_params, Evaluation, Evaluator, Selection, State},
    reason::Reason,
    slurm::{OnInterrupt, RemoteOutcome, Slurm, SlurmSettings, Submission},
    spec::Executor,
    stage::{Cancelled, Place, ProgressSink, StageContext},
    Pipeline,
};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Job slots: a node takes `resources.cpus` of them.
    pub jobs: usize,
    /// GPUs available for `resources.gpus`.
    pub gpus: u32,
    pub selection: Selection,
    /// The command line, for `dagrun log`.
    pub command: String,
    /// Overrides `slurm.on_interrupt`.
    pub on_interrupt: Option<OnInterrupt>,
}

/// What happened to a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Taken from the cache; `restored` workspace outputs were put back.
    Cached {
        restored: Vec<String>,
        cut_off: bool,
    },
    /// Ran and committed.
    Ran { seconds: f64 },
    /// Ran and failed; nothing was cached.
    Failed { error: String, log: Option<PathBuf> },
    /// Not run because of upstream.
    Skipped { reason: Reason },
    /// Stopped by Ctrl-C, or never started because of it.
    Interrupted,
}

/// Lifecycle events, for the progress display.
pub trait Observer: ProgressSink {
    fn planned(&self, _nodes: usize, _to_run: usize) {}
    fn started(&self, node: &str);
    fn finished(&self, node: &str, outcome: &Outcome);
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct RunReport {
    pub outcomes: BTreeMap<usize, Outcome>,
    pub interrupted: bool,
    /// Slurm jobs left running after Ctrl-C (`on_interrupt: keep`); the next run adopts
    /// their results.
    pub detached: Vec<String>,
}

impl RunReport {
    pub fn failed(&self) -> Vec<usize> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed { .. }))
            .map(|(i, _)| *i)
            .collect()
    }
    /// How many nodes ended each way (`cut_off`: cached after their upstream reran).
    pub fn counts(&self) -> RunCounts {
        let mut c = RunCounts::default();
        for o in self.outcomes.values() {
            match o {
                Outcome::Ran { .. } => c.ran += 1,
                Outcome::Cached { cut_off, .. } => {
                    c.cached += 1;
                    c.cut_off += usize::from(*cut_off);
                }
                Outcome::Failed { .. } => c.failed += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
                Outcome::Interrupted => c.interrupted += 1,
            }
        }
        c
    }

    pub fn ran(&self) -> Vec<usize> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Ran { .. }))
            .map(|(i, _)| *i)
            .collect()
    }
}

enum Msg {
    Done(usize, std::result::Result<Record, Outcome>),
}

/// Checks what can be checked before any work: missing inputs, GPUs, `--only`.
fn preflight(p: &Pipeline, plan: &[Option<Evaluation>], opts: &RunOptions) -> Result<()> {
    let mut problems = Vec::new();
    // Upstream nodes outside the selection (`--only`) that a selected node needs but that
    // are not cached: what keeps them from it (a file in the way, a missing input) is said
    // too, not only that they are not cached.
    let needed: std::collections::HashSet<&str> = p
        .order
        .iter()
        .filter(|&&i| opts.selection.includes(i))
        .filter_map(|&i| match &plan[i] {
            Some(Evaluation {
                state: State::Missing { reasons },
                ..
            }) => Some(reasons),
            _ => None,
        })
        .flatten()
        .filter_map(|r| match r {
            Reason::OutsideSelection { node } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    for &i in &p.order {
        let node = &p.nodes[i];
        let selected = opts.selection.includes(i);
        if !selected && !needed.contains(node.id.as_str()) {
            continue;
        }
        if let Some(Evaluation {
            state: State::Missing { reasons },
            ..
        }) = &plan[i]
        {
            for r in reasons {
                if let Reason::Unavailable { message } = r {
                    problems.push(format!("{}: `{}`: {message}", node.loc, node.id));
                }
                if let Reason::OutsideSelection { .. } = r {
                    problems.push(format!("`{}` {r}", node.id));
                }
                if let Reason::ThroughLink { .. } = r {
                    problems.push(format!("{}: `{}`: {r}", node.loc, node.id));
                }
                if let Reason::WouldDelete { path } = r {
                    let loc = node
                        .outs
                        .iter()
                        .position(|o| o == path)
                        .and_then(|k| node.out_locs.get(k))
                        .unwrap_or(&node.loc);
                    problems.push(format!(
                        "{loc}: output `{path}` of `{}` exists and dagrun did not write it \
                         (the cache does not hold its content): running or restoring the node \
                         would replace it; move it away or delete it, then run again",
                        node.id
                    ));
                }
                if let Reason::MissingInput { path } = r {
                    let loc = node
                        .deps
                        .iter()
                        .find(|d| &d.path == path)
                        .map(|d| d.loc.clone())
                        .unwrap_or(node.loc.clone());
                    problems.push(format!(
                        "{loc}: missing input file `{path}` (needed by `{}`)",
                        node.id
                    ));
                }
            }
        }
        if selected && node.executor == Executor::Local && node.resources.gpus > opts.gpus {
            problems.push(format!(
                "{}: `{}` needs {} GPU(s) but {} available (pass --gpus N if this machine has more)",
                node.loc, node.id, node.resources.gpus, opts.gpus
            ));
        }
    }
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(problems.join("\n")))
    }
}

/// Puts workspace output `o` of node `node` back from the cache. The path is claimed
/// first (as a node claims its outs before it runs): what is there afterwards is
/// dagrun's, so a later run may replace it even if the user edited it meanwhile.
/// `Ok(false)`: an object of it was missing or damaged, so the cache dropped the record
/// (it said so in a warning) and the node is not cached any more.
fn restore_output(
    ev: &Evaluator,
    cache: &Cache,
    node: &str,
    o: &str,
    artifact: &Artifact,
) -> Result<bool> {
    let dest = ev.ws.abs(o);
    cache.claim_output(&dest, node)?;
    match cache.restore_output(artifact, &ev.ws.root, o) {
        Err(e) if e.damaged_object().is_some() => {
            ev.ws.invalidate(o);
            Ok(false)
        }
        r => {
            r?;
            ev.ws.remember_artifact(o, artifact)?;
            Ok(true)
        }
    }
}

/// Settles cached node `i`: puts back the workspace outputs `restore` lists, and when a
/// node downstream of it will run, checks the outputs it keeps in the cache (the views
/// that node will read; verified once per run). `Ok(false)`: something of it turned out
/// missing or damaged; its record is gone and it must be evaluated again (it runs).
/// On a no-op run (nothing downstream runs, nothing to restore) no object is read.
fn settle_cached(
    ev: &Evaluator,
    cache: &Cache,
    i: usize,
    restore: &[String],
    rec: &dagrun_cache::RecordHead,
    plan: &[Option<Evaluation>],
) -> Result<bool> {
    let node = &ev.pipeline.nodes[i];
    for o in restore {
        if !restore_output(ev, cache, &node.id, o, &rec.outputs[o])? {
            return Ok(false);
        }
    }
    let downstream_runs = node.downstream.iter().any(|&d| {
        plan[d]
            .as_ref()
            .is_some_and(|e| !matches!(e.state, State::Cached { .. }))
    });
    if downstream_runs {
        for (name, art) in &rec.outputs {
            if node.is_workspace_out(name) {
                continue;
            }
            match cache.materialize(art) {
                Err(e) if e.damaged_object().is_some() => return Ok(false),
                r => {
                    r?;
                }
            }
        }
    }
    Ok(true)
}

/// Runs the pipeline.
pub fn run(
    p: &Pipeline,
    cache: &Cache,
    opts: &RunOptions,
    observer: Arc<dyn Observer>,
    cancel: Arc<AtomicBool>,
) -> Result<RunReport> {
    let started = Utc::now();
    let ev = Evaluator::new(p, Some(cache), true);
    let mut plan = ev.plan(&opts.selection)?;
    preflight(p, &plan, opts)?;
    let slurm = start_slurm(p, &plan, cache, opts, &observer, &cancel)?;
    // Cached nodes outside the selection (`--only`) that selected nodes read: put their
    // missing or modified workspace outputs back first, as a run of everything would,
    // so that what the selected nodes read is what their keys say.
    for &i in &p.order {
        if opts.selection.includes(i) {
            continue;
        }
        if let Some(Evaluation {
            state: State::Cached { restore },
            record: Some(rec),
            ..
        }) = &plan[i]
        {
            for o in restore {
                tracing::info!(node = %p.nodes[i].id, output = %o, "restoring an upstream output");
                if !restore_output(&ev, cache, &p.nodes[i].id, o, &rec.outputs[o])? {
                    return Err(Error::Usage(format!(
                        "`{}` is outside the selection, and its cached output `{o}` turned out \
                         missing or damaged in the cache (its record is dropped): select it too, \
                         or run without --only",
                        p.nodes[i].id
                    )));
                }
            }
        }
    }
    let included: Vec<usize> = p
        .order
        .iter()
        .copied()
        .filter(|&i| opts.selection.includes(i))
        .collect();
    let to_run = included
        .iter()
        .filter(|&&i| {
            plan[i]
                .as_ref()
                .map(|e| !matches!(e.state, State::Cached { .. }))
                .unwrap_or(false)
        })
        .count();
    observer.planned(included.len(), to_run);

    let n = p.nodes.len();
    // Outputs of settled nodes. Outside the selection: their cached outputs.
    let outputs: Mutex<Vec<Option<BTreeMap<String, Artifact>>>> = Mutex::new(vec![None; n]);
    {
        let mut o = outputs.lock().unwrap();
        for i in 0..n {
            if !opts.selection.includes(i) {
                if let Some(Evaluation {
                    state: State::Cached { .. },
                    record: Some(r),
                    ..
                }) = &plan[i]
                {
                    o[i] = Some(r.outputs.clone());
                }
            }
        }
    }
    let inc: BTreeSet<usize> = included.iter().copied().collect();
    let mut waiting: Vec<usize> = (0..n)
        .map(|i| {
            p.nodes[i]
                .upstream
                .iter()
                .filter(|u| inc.contains(u))
                .count()
        })
        .collect();
    let mut report = RunReport::default();
    let mut ready: VecDeque<usize> = included
        .iter()
        .copied()
        .filter(|&i| waiting[i] == 0)
        .collect();
    let mut runnable: VecDeque<(usize, Evaluation)> = VecDeque::new();
    let jobs = opts.jobs.max(1) as u32;
    let mut free_cpus = jobs;
    let mut free_gpus: BTreeSet<u32> = (0..opts.gpus).collect();
    let mut held: BTreeMap<usize, (u32, Vec<u32>)> = BTreeMap::new();
    let max_remote = slurm.as_ref().map(|s| s.settings.max_jobs).unwrap_or(0);
    let mut remote_running = 0usize;
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut executed = Vec::new();

    let scoped = std::thread::scope(|scope| -> Result<()> {
        loop {
            // Settle every node whose upstream is done: cached nodes complete here.
            while let Some(i) = ready.pop_front() {
                if cancel.load(Ordering::Relaxed) {
                    report.outcomes.insert(i, Outcome::Interrupted);
                    continue;
                }
                let node = &p.nodes[i];
                let was_blocked = matches!(
                    plan[i].as_ref().map(|x| &x.state),
                    Some(State::Blocked { .. })
                );
                // When every upstream came from the cache, the plan's evaluation still
                // holds: reuse it instead of hashing and looking up again.
                let upstream_as_planned = node.upstream.iter().all(|u| {
                    !inc.contains(u)
                        || matches!(report.outcomes.get(u), Some(Outcome::Cached { .. }))
                });
                let e = match plan[i].take() {
                    Some(e) if upstream_as_planned && e.key.is_some() => e,
                    _ => {
                        let known = |u: usize| outputs.lock().unwrap()[u].clone();
                        ev.evaluate(i, &opts.selection, &known)?
                    }
                };
                tracing::debug!(node = %node.id, state = e.state.label(), key = ?e.key, "evaluated");
                match &e.state {
                    State::Cached { restore } => {
                        let rec = e.record.as_ref().expect("cached has a record");
                        if !settle_cached(&ev, cache, i, restore, rec, &plan)? {
                            // Missing or damaged in the cache: no longer cached.
                            ready.push_front(i);
                            continue;
                        }
                        if cache.failure(&node.id)?.is_some() {
                            cache.clear_failure(&node.id)?;
                        }
                        if cache.latest(&node.id)?.map(|l| l.key) != Some(rec.key) {
                            cache.set_latest(
                                &node.id,
                                &Latest {
                                    key: rec.key,
                                    pipeline: p.name.clone(),
                                    at: Utc::now(),
                                },
                            )?;
                        }
                        let out = Outcome::Cached {
                            restored: restore.clone(),
                            cut_off: was_blocked,
                        };
                        observer.finished(&node.id, &out);
                        report.outcomes.insert(i, out);
                        outputs.lock().unwrap()[i] = Some(rec.outputs.clone());
                        for &d in &node.downstream {
                            if inc.contains(&d) {
                                waiting[d] -= 1;
                                if waiting[d] == 0 {
                                    ready.push_back(d);
                                }
                            }
                        }
                    }
                    State::Stale { .. } | State::Forced { .. } => runnable.push_back((i, e)),
                    State::Missing { reasons } | State::Blocked { reasons } => {
                        let out = Outcome::Failed {
                            error: reasons
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join("; "),
                            log: None,
                        };
                        observer.finished(&node.id, &out);
                        report.outcomes.insert(i, out);
                        skip_downstream(p, i, &inc, &mut report, observer.as_ref());
                    }
                }
            }
            // Start what fits.
            if !cancel.load(Ordering::Relaxed) {
                let mut k = 0;
                while k < runnable.len() {
                    let node = &p.nodes[runnable[k].0];
                    let r = &node.resources;
                    // A Slurm node holds no local slots; the cluster is bounded by max_jobs.
                    let remote = node.executor == Executor::Slurm;
                    let cpus = if remote { 0 } else { r.cpus.min(jobs) };
                    let fits = if remote {
                        remote_running < max_remote
                    } else {
                        cpus <= free_cpus && (r.gpus as usize) <= free_gpus.len()
                    };
                    if !fits {
                        k += 1;
                        continue;
                    }
                    let (i, e) = runnable.remove(k).expect("in range");
                    let gpus: Vec<u32> = if remote {
                        Vec::new()
                    } else {
                        free_gpus.iter().copied().take(r.gpus as usize).collect()
                    };
                    for g in &gpus {
                        free_gpus.remove(g);
                    }
                    free_cpus -= cpus;
                    remote_running += usize::from(remote);
                    tracing::info!(node = %node.id, cpus, gpus = ?gpus, remote, "starting");
                    held.insert(i, (cpus, gpus.clone()));
                    observer.started(&node.id);
                    executed.push(node.id.clone());
                    let tx = tx.clone();
                    let outputs = &outputs;
                    let obs = observer.clone();
                    let cancel = cancel.clone();
                    let slurm = if remote { slurm.as_ref() } else { None };
                    scope.spawn(move || {
                        let res = execute(p, i, e, cache, outputs, gpus, obs, cancel, slurm);
                        let _ = tx.send(Msg::Done(i, res));
                    });
                }
            } else {
                for (i, _) in runnable.drain(..) {
                    report.outcomes.insert(i, Outcome::Interrupted);
                }
            }
            if held.is_empty() {
                if ready.is_empty() && runnable.is_empty() {
                    break;
                }
                if !ready.is_empty() {
                    continue;
                }
            }
            let Msg::Done(i, res) = rx.recv().expect("a worker is running");
            let (cpus, gpus) = held.remove(&i).expect("was running");
            if p.nodes[i].executor == Executor::Slurm {
                remote_running -= 1;
            }
            free_cpus += cpus;
            free_gpus.extend(gpus);
            let node = &p.nodes[i];
            match res {
                Ok(rec) => {
                    for o in &node.outs {
                        ev.ws.remember_artifact(o, &rec.outputs[o])?;
                    }
                    cache.clear_failure(&node.id)?;
                    let out = Outcome::Ran {
                        seconds: rec.timing.seconds,
                    };
                    observer.finished(&node.id, &out);
                    report.outcomes.insert(i, out);
                    outputs.lock().unwrap()[i] = Some(rec.outputs);
                    for &d in &node.downstream {
                        if inc.contains(&d) {
                            waiting[d] -= 1;
                            if waiting[d] == 0 {
                                ready.push_back(d);
                            }
                        }
                    }
                }
                Err(out) => {
                    for o in &node.outs {
                        ev.ws.invalidate(o);
                    }
                    if let Outcome::Failed { error, log } = &out {
                        cache.record_failure(
                            &node.id,
                            &NodeFailure {
                                at: Utc::now(),
                                error: error.clone(),
                                log: log.clone(),
                                pipeline: p.name.clone(),
                            },
                        )?;
                    }
                    observer.finished(&node.id, &out);
                    report.outcomes.insert(i, out);
                    skip_downstream(p, i, &inc, &mut report, observer.as_ref());
                }
            }
        }
        Ok(())
    });
    if let Some(s) = &slurm {
        report.detached = s.stop();
    }
    scoped?;
    report.interrupted = cancel.load(Ordering::Relaxed);
    for &i in &included {
        report.outcomes.entry(i).or_insert(Outcome::Interrupted);
    }
    let failed: Vec<String> = report
        .failed()
        .iter()
        .map(|&i| p.nodes[i].id.clone())
        .collect();
    let counts = report.counts();
    cache.log_run(&RunSummary {
        started,
        finished: Utc::now(),
        pipeline: p.name.clone(),
        command: opts.command.clone(),
        executed,
        cached: counts.cached,
        cut_off: counts.cut_off,
        counts: Some(counts),
        outcome: if report.interrupted {
            "interrupted".into()
        } else if failed.is_empty() {
            "success".into()
        } else {
            "failed".into()
        },
        failed,
    })?;
    Ok(report)
}

fn skip_downstream(
    p: &Pipeline,
    i: usize,
    inc: &BTreeSet<usize>,
    report: &mut RunReport,
    obs: &dyn Observer,
) {
    for d in p.descendants(&[i]) {
        if d != i && inc.contains(&d) && !report.outcomes.contains_key(&d) {
            let out = Outcome::Skipped {
                reason: Reason::UpstreamFailed {
                    node: p.nodes[i].id.clone(),
                },
            };
            obs.finished(&p.nodes[d].id, &out);
            report.outcomes.insert(d, out);
        }
    }
}

/// Starts the Slurm executor when a node that will run has `executor: slurm`.
fn start_slurm(
    p: &Pipeline,
    plan: &[Option<Evaluation>],
    cache: &Cache,
    opts: &RunOptions,
    observer: &Arc<dyn Observer>,
    cancel: &Arc<AtomicBool>,
) -> Result<Option<Slurm>> {
    let needed = p.nodes.iter().enumerate().any(|(i, n)| {
        n.executor == Executor::Slurm
            && opts.selection.includes(i)
            && !matches!(
                plan[i].as_ref().map(|e| &e.state),
                Some(State::Cached { .. })
            )
    });
    if !needed {
        return Ok(None);
    }
    let mut settings = SlurmSettings::new(&p.slurm, &p.workdir, cache.dir());
    if let Some(o) = opts.on_interrupt {
        settings.on_interrupt = o;
    }
    let sink: Arc<dyn ProgressSink> = observer.clone();
    Slurm::start(settings, sink, cancel.clone())
        .map(Some)
        .map_err(Error::Usage)
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// What a node's run left for the commit: where its outputs and log are.
struct Ran {
    out_dir: PathBuf,
    log_path: PathBuf,
    metrics: Metrics,
    timing: Timing,
}

/// Runs one node (here, or as a Slurm job) and commits its record. On failure the
/// node's log is kept under `<cache>/logs/` and its scratch folder is kept for the next
/// attempt.
#[allow(clippy::too_many_arguments)]
fn execute(
    p: &Pipeline,
    i: usize,
    e: Evaluation,
    cache: &Cache,
    outputs: &Mutex<Vec<Option<BTreeMap<String, Artifact>>>>,
    gpus: Vec<u32>,
    observer: Arc<dyn Observer>,
    cancel: Arc<AtomicBool>,
    slurm: Option<&Slurm>,
) -> std::result::Result<Record, Outcome> {
    let node = &p.nodes[i];
    let fail = |error: String, log: Option<PathBuf>| Outcome::Failed { error, log };
    let key = e.key.expect("runnable nodes have a key");
    let components = e.components.expect("runnable nodes have components");
    let keep_log = |log: &std::path::Path| keep_failure_log(cache, &node.id, log);
    let path_of = |t: usize, o: &str| -> std::result::Result<Option<String>, String> {
        if p.nodes[t].is_workspace_out(o) {
            return Ok(Some(p.workdir.join(o).to_string_lossy().into_owned()));
        }
        let Some(art) = outputs.lock().unwrap()[t]
            .as_ref()
            .and_then(|m| m.get(o))
            .cloned()
        else {
            return Ok(None);
        };
        cache
            .materialize(&art)
            .map(|pb| Some(pb.to_string_lossy().into_owned()))
            .map_err(|e| format!("cannot hand over `{}.{o}`: {e}", p.nodes[t].id))
    };
    let params = runtime_params(p, i, &path_of).map_err(|e| fail(e, None))?;
    // From here on, whatever is at the node's workspace outputs is dagrun's (the node
    // removes them and writes them), even if it fails or is killed before committing.
    for o in &node.outs {
        cache
            .claim_output(&p.workdir.join(o), &node.id)
            .map_err(|e| fail(format!("cannot prepare the node: {e}"), None))?;
    }
    let ran = match slurm {
        Some(slurm) => run_remote(p, i, &key, params, cache, slurm)?,
        None => run_here(p, i, &key, params, cache, gpus, observer, cancel.clone())?,
    };
    let Ran {
        out_dir,
        log_path,
        metrics,
        timing,
    } = ran;
    if cancel.load(Ordering::Relaxed) {
        return Err(Outcome::Interrupted);
    }
    // Ingest outputs; the record is committed only once all of them are durable.
    let mut arts = BTreeMap::new();
    for decl in &node.outputs {
        let src = if node.is_workspace_out(&decl.name) {
            p.workdir.join(&decl.name)
        } else {
            out_dir.join(&decl.name)
        };
        if !src.exists() {
            return Err(fail(
                format!("the stage did not write its output `{}`", decl.name),
                keep_log(&log_path),
            ));
        }
        let ingested = if node.is_workspace_out(&decl.name) {
            cache.ingest_output(&p.workdir, &decl.name, decl.kind)
        } else {
            cache.ingest(&src, decl.kind)
        };
        match ingested {
            Ok(a) => {
                arts.insert(decl.name.clone(), a);
            }
            Err(err) => return Err(fail(err.to_string(), keep_log(&log_path))),
        }
    }
    let log = std::fs::read(&log_path)
        .ok()
        .and_then(|b| cache.put_bytes(&b).ok());
    let record = Record {
        key,
        node: node.id.clone(),
        kind: node.kind.name().to_string(),
        kind_version: node.kind.version(),
        components: serde_json::to_value(&components).expect("serialises"),
        outputs: arts,
        metrics,
        timing,
        log,
        engine_version: crate::ENGINE_VERSION.to_string(),
        pipeline: p.name.clone(),
    };
    cache
        .commit(&record)
        .map_err(|err| fail(err.to_string(), keep_log(&log_path)))?;
    let _ = cache.remove_scratch(&key);
    if let Some(tmp) = out_dir.parent() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    let _ = std::fs::remove_file(cache.failure_log_path(&node.id));
    Ok(record)
}

/// Copies a failed node's log to where `dagrun` points users (`<cache>/logs/`).
fn keep_failure_log(cache: &Cache, node: &str, log: &std::path::Path) -> Option<PathBuf> {
    let dest = cache.failure_log_path(node);
    std::fs::create_dir_all(dest.parent()?).ok()?;
    std::fs::copy(log, &dest).ok()?;
    Some(dest)
}

/// Runs a node in this process, in a fresh folder under the cache's `tmp/`.
#[allow(clippy::too_many_arguments)]
fn run_here(
    p: &Pipeline,
    i: usize,
    key: &dagrun_cache::Hash,
    params: serde_json::Value,
    cache: &Cache,
    gpus: Vec<u32>,
    observer: Arc<dyn Observer>,
    cancel: Arc<AtomicBool>,
) -> std::result::Result<Ran, Outcome> {
    let node = &p.nodes[i];
    let fail = |error: String, log: Option<PathBuf>| Outcome::Failed { error, log };
    let tmp = cache
        .temp_dir()
        .map_err(|err| fail(err.to_string(), None))?;
    let out_dir = tmp.join("out");
    let log_path = tmp.join("log");
    let keep_log = |log: &std::path::Path| keep_failure_log(cache, &node.id, log);
    let prepare = || -> std::io::Result<std::fs::File> {
        std::fs::create_dir_all(&out_dir)?;
        std::fs::create_dir_all(cache.scratch_dir(key))?;
        remove_outs(&p.workdir, &node.outs)?;
        std::fs::File::create(&log_path)
    };
    let log_file =
        prepare().map_err(|err| fail(format!("cannot prepare the node: {err}"), None))?;
    let mut ctx = StageContext {
        node: node.id.clone(),
        stage: node.stage.clone(),
        params,
        matrix: node.matrix.clone(),
        workdir: p.workdir.clone(),
        device: node.device.clone(),
        gpus,
        place: Place::Here,
        out_dir: out_dir.clone(),
        scratch: cache.scratch_dir(key),
        log: Arc::new(Mutex::new(log_file)),
        log_path: log_path.clone(),
        metrics: Metrics::default(),
        sink: observer.clone(),
        cancel: cancel.clone(),
        cache_dir: Some(cache.dir().to_path_buf()),
    };
    let t0 = std::time::Instant::now();
    let start = Utc::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.kind.run(&mut ctx)));
    let seconds = t0.elapsed().as_secs_f64();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            if err.is::<Cancelled>() || cancel.load(Ordering::Relaxed) {
                return Err(Outcome::Interrupted);
            }
            return Err(fail(err.to_string(), keep_log(&log_path)));
        }
        Err(panic) => {
            return Err(fail(
                format!("the stage panicked: {}", panic_message(panic.as_ref())),
                keep_log(&log_path),
            ));
        }
    }
    let metrics = std::mem::take(&mut ctx.metrics);
    Ok(Ran {
        out_dir,
        log_path,
        metrics,
        timing: Timing {
            started: start,
            finished: Utc::now(),
            seconds,
        },
    })
}

/// Removes a node's workspace outputs (and makes their parent folders) before it runs;
/// a Slurm job's worker does the same on its compute node. Never through a symbolic link
/// (a link at an output is removed itself).
pub(crate) fn remove_outs(workdir: &std::path::Path, outs: &[String]) -> std::io::Result<()> {
    let ws = dagrun_cache::Confined::open(workdir).map_err(std::io::Error::other)?;
    for o in outs {
        // The pipeline refuses these; never remove the workspace itself.
        if o.is_empty() || o == "." || o.starts_with('/') || o.split('/').any(|c| c == "..") {
            return Err(std::io::Error::other(format!(
                "refusing to remove output `{o}`: not a path inside the workspace"
            )));
        }
        ws.remove(o).map_err(std::io::Error::other)?;
        ws.create_parents(o).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Runs a node as a Slurm job: writes its job file into its staging folder, hands it
/// to the Slurm thread and waits. The worker removes the workspace outputs itself, so
/// that a job adopted from an earlier run keeps what it wrote.
fn run_remote(
    p: &Pipeline,
    i: usize,
    key: &dagrun_cache::Hash,
    params: serde_json::Value,
    cache: &Cache,
    slurm: &Slurm,
) -> std::result::Result<Ran, Outcome> {
    let node = &p.nodes[i];
    let fail = |error: String| Outcome::Failed { error, log: None };
    let staged = Staged::new(&slurm.settings.staging, &key.to_hex());
    let spec = JobSpec {
        schema: JOB_SCHEMA.to_string(),
        key: key.to_hex(),
        node: node.id.clone(),
        stage: node.stage.clone(),
        kind: node.kind.name().to_string(),
        kind_version: node.kind.version(),
        params,
        matrix: node.matrix.clone(),
        device: node.device.clone(),
        gpus: node.resources.gpus,
        workdir: p.workdir.clone(),
        outs: node.outs.clone(),
        scratch: cache.scratch_dir(key),
        staging: staged.dir.clone(),
    };
    std::fs::create_dir_all(&staged.dir)
        .and_then(|_| write_json_atomic(&staged.job(), &spec))
        .map_err(|e| {
            fail(format!(
                "cannot write the job file into {}: {e}",
                staged.dir.display()
            ))
        })?;
    let outcome = slurm.run(Submission {
        node: node.id.clone(),
        stage: node.stage.clone(),
        staged: staged.clone(),
        resources: node.resources.clone(),
    });
    match outcome {
        RemoteOutcome::Done { result, adopted } => {
            if adopted {
                tracing::info!(node = %node.id, host = %result.host, "adopted a finished Slurm job");
            }
            Ok(Ran {
                out_dir: staged.out(),
                log_path: staged.log(),
                metrics: result.metrics,
                timing: Timing {
                    started: result.started,
                    finished: result.finished,
                    seconds: result.seconds,
                },
            })
        }
        RemoteOutcome::Failed { error, log } => {
            let kept = log.and_then(|l| keep_failure_log(cache, &node.id, &l));
            Err(Outcome::Failed { error, log: kept })
        }
        RemoteOutcome::Interrupted => Err(Outcome::Interrupted),
    }
}
