//! The executor: runs stale nodes in dependency order, `--jobs` at a time within their
//! `resources`, and commits each result to the cache. Cached nodes go through the same
//! queue (they complete at once), and every node is evaluated by the planner's
//! [`Evaluator::evaluate`] once its upstream is settled: a node whose upstream reran
//! with byte-identical outputs stays cached (early cutoff).
//!
//! [`run`] is the drain loop: the bookkeeping is a [`Schedule`] (ready → start →
//! finished → release → commit), nodes run on threads ([`execute`]), and records are
//! made durable by the group committer ([`commit::committer`]) while downstream nodes
//! already run. The loop only moves events between them. A remote cache
//! ([`RunOptions::remote`]) comes in at two steps: a stale node is looked up on it
//! before it is queued ([`Drain::pull`]), a durable record is handed to it ([`Drain::push`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
};

use chrono::Utc;
use dagrun_cache::{Artifact, Cache, Latest, NodeFailure, Record, RunCounts, RunSummary};

use crate::{
    commit::{self, Committed},
    error::{Error, Result},
    exec::{after_commit, execute, Outputs},
    plan::{Evaluation, Evaluator, Selection, State},
    reason::Reason,
    sched::{Schedule, Start, Task},
    slurm::{OnInterrupt, Slurm, SlurmSettings},
    spec::Executor,
    stage::ProgressSink,
    Pipeline,
};

pub use crate::sched::Outcome;

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
    /// A remote cache (`--pull`/`--push`): asked for each stale node's key before it
    /// runs ([`Drain::pull`]), told of each node made durable ([`Drain::push`]).
    pub remote: Option<Arc<dyn dagrun_cache::RemoteHooks>>,
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
    ev: &Evaluator<'_>,
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

/// What the drain loop waits for.
enum Event {
    /// A node's thread ended: its record (objects in the cache, not committed) or why not.
    Finished(usize, Box<std::result::Result<Record, Outcome>>),
    /// The committer answered for a record.
    Commit(Committed),
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
    let ev = Evaluator::new(p, Some(cache), true).with_gpus(opts.gpus);
    let plan = ev.plan(&opts.selection)?;
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
    let may_run = |i: &usize| {
        plan[*i]
            .as_ref()
            .is_some_and(|e| !matches!(e.state, State::Cached { .. } | State::Missing { .. }))
    };
    observer.planned(
        included.len(),
        included
            .iter()
            .filter(|&&i| {
                plan[i]
                    .as_ref()
                    .is_some_and(|e| !matches!(e.state, State::Cached { .. }))
            })
            .count(),
    );
    // From here on, whatever is at the workspace outputs of a node that may run is
    // dagrun's (the node removes them and writes them), even if it fails or is killed
    // before committing: claimed for all of them at once, with one flush.
    let claimed: std::collections::HashSet<usize> =
        included.iter().copied().filter(may_run).collect();
    let claims: Vec<(std::path::PathBuf, &str)> = included
        .iter()
        .filter(|i| claimed.contains(i))
        .flat_map(|&i| {
            let n = &p.nodes[i];
            n.outs.iter().map(|o| (p.workdir.join(o), n.id.as_str()))
        })
        .collect();
    cache.claim_outputs(claims.iter().map(|(path, node)| (path.as_path(), *node)))?;

    // Outputs of settled nodes. Outside the selection: their cached outputs.
    let n = p.nodes.len();
    let outputs: Outputs = Mutex::new(vec![None; n]);
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
    let tasks = p
        .nodes
        .iter()
        .map(|node| {
            let remote = node.executor == Executor::Slurm;
            Task {
                id: node.id.clone(),
                upstream: node.upstream.clone(),
                downstream: node.downstream.clone(),
                cpus: if remote { 0 } else { node.resources.cpus },
                gpus: if remote { 0 } else { node.resources.gpus },
                remote,
            }
        })
        .collect();
    let max_remote = slurm.as_ref().map(|s| s.settings.max_jobs).unwrap_or(0);
    let mut drain = Drain {
        p,
        cache,
        ev: &ev,
        opts,
        plan,
        sched: Schedule::new(
            tasks,
            &included,
            opts.jobs.max(1) as u32,
            opts.gpus,
            max_remote,
        ),
        runnable: HashMap::new(),
        claimed,
        outputs: &outputs,
        observer: observer.as_ref(),
        executed: Vec::new(),
    };
    let (tx, rx) = mpsc::channel::<Event>();
    let (jobs_tx, jobs_rx) = mpsc::channel::<commit::Job>();
    let scoped = std::thread::scope(|scope| -> Result<()> {
        {
            let tx = tx.clone();
            scope.spawn(move || commit::committer(cache, jobs_rx, tx, Event::Commit));
        }
        loop {
            if cancel.load(Ordering::Relaxed) {
                drain.sched.cancel();
            }
            while let Some(i) = drain.sched.next_ready() {
                drain.evaluate_ready(i)?;
            }
            while let Some(Start { node: i, gpus }) = drain.sched.start() {
                let node = &p.nodes[i];
                let e = drain
                    .runnable
                    .remove(&i)
                    .expect("runnable nodes are evaluated");
                tracing::info!(node = %node.id, gpus = ?gpus, "starting");
                observer.started(&node.id);
                drain.executed.push(node.id.clone());
                let tx = tx.clone();
                let outputs = &outputs;
                let sink: Arc<dyn ProgressSink> = observer.clone();
                let cancel = cancel.clone();
                let slurm = slurm.as_ref().filter(|_| node.executor == Executor::Slurm);
                scope.spawn(move || {
                    let res = execute(p, i, e, cache, outputs, gpus, sink, cancel, slurm);
                    let _ = tx.send(Event::Finished(i, Box::new(res)));
                });
            }
            drain.notify();
            if drain.sched.is_done() {
                break;
            }
            if !drain.sched.has_work_in_flight() && !drain.sched.has_ready() {
                // Nothing runs and nothing can start: the schedule would wait forever.
                return Err(Error::Usage(
                    "no node can start: the runnable nodes need more slots than this run has"
                        .into(),
                ));
            }
            if drain.sched.has_ready() {
                continue;
            }
            match rx.recv().expect("a node or the committer is at work") {
                Event::Finished(i, res) => drain.finished(i, *res, &jobs_tx)?,
                Event::Commit(c) => drain.committed(c, slurm.as_ref())?,
            }
        }
        drop(jobs_tx);
        Ok(())
    });
    let detached = slurm.as_ref().map(|s| s.stop()).unwrap_or_default();
    scoped?;
    drain.notify();
    let Drain {
        sched, executed, ..
    } = drain;
    let report = RunReport {
        outcomes: sched.into_outcomes(),
        interrupted: cancel.load(Ordering::Relaxed),
        detached,
    };
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
        overrides: p.overrides.clone(),
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

/// The drain loop's state: the schedule, and what the loop needs to act on its steps.
struct Drain<'a> {
    p: &'a Pipeline,
    cache: &'a Cache,
    ev: &'a Evaluator<'a>,
    opts: &'a RunOptions,
    /// The plan's evaluations, taken as nodes become ready.
    plan: Vec<Option<Evaluation>>,
    sched: Schedule,
    /// Evaluations of nodes waiting for slots.
    runnable: HashMap<usize, Evaluation>,
    /// Nodes whose workspace outputs were claimed before the run started.
    claimed: std::collections::HashSet<usize>,
    outputs: &'a Outputs,
    observer: &'a dyn Observer,
    /// Node ids in the order they started (the run log).
    executed: Vec<String>,
}

impl Drain<'_> {
    /// A ready node: evaluated (the plan's evaluation when its upstream came from the
    /// cache as planned), then settled from the cache, queued to run, or failed.
    fn evaluate_ready(&mut self, i: usize) -> Result<()> {
        let (p, cache, ev) = (self.p, self.cache, self.ev);
        let node = &p.nodes[i];
        let was_blocked = matches!(
            self.plan[i].as_ref().map(|x| &x.state),
            Some(State::Blocked { .. })
        );
        // When every upstream came from the cache, the plan's evaluation still holds:
        // reuse it instead of hashing and looking up again.
        let upstream_as_planned = node.upstream.iter().all(|&u| {
            !self.opts.selection.includes(u)
                || matches!(self.sched.outcome(u), Some(Outcome::Cached { .. }))
        });
        let mut planned = self.plan[i]
            .take()
            .filter(|e| upstream_as_planned && e.key.is_some());
        // A cached node whose objects turn out missing or damaged loses its record while
        // it is settled: evaluated again, it runs.
        let mut attempts = 0u8;
        let e = loop {
            attempts += 1;
            let e = match planned.take() {
                Some(e) => e,
                None => self.evaluate(i)?,
            };
            let e = self.pull(i, e)?;
            tracing::debug!(node = %node.id, state = e.state.label(), key = ?e.key, "evaluated");
            if let (State::Cached { restore }, Some(rec)) = (&e.state, &e.record) {
                if !settle_cached(ev, cache, i, restore, rec, &self.plan)? {
                    if attempts == 2 {
                        return Err(Error::Usage(format!(
                            "`{}`: its record was dropped for a damaged object, yet it is \
                             still cached",
                            node.id
                        )));
                    }
                    continue;
                }
            }
            break e;
        };
        match &e.state {
            State::Cached { restore } => {
                let rec = e.record.as_ref().expect("cached has a record");
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
                self.outputs.lock().unwrap()[i] = Some(rec.outputs.clone());
                self.sched.cached(i, restore.clone(), was_blocked);
            }
            State::Stale { .. } | State::Forced { .. } => {
                // The plan did not expect it to run (it cannot happen, but a workspace
                // output must never be written unclaimed): claim its outputs now.
                if !self.claimed.contains(&i) {
                    for o in &node.outs {
                        cache.claim_output(&p.workdir.join(o), &node.id)?;
                    }
                }
                self.runnable.insert(i, e);
                self.sched.runnable(i);
            }
            State::Missing { reasons } | State::Blocked { reasons } => {
                let error = reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.sched.unrunnable(i, error);
            }
        }
        Ok(())
    }

    /// Evaluates node `i` against the outputs settled so far.
    fn evaluate(&self, i: usize) -> Result<Evaluation> {
        let outputs = self.outputs;
        let known = |u: usize| outputs.lock().unwrap()[u].clone();
        self.ev.evaluate(i, &self.opts.selection, &known)
    }

    /// `--pull`: a stale node whose key the remote cache holds is downloaded (verified)
    /// instead of run, then evaluated again: cached like any other. A forced node
    /// (`--rerun`) runs, and a remote that fails leaves the node to run.
    fn pull(&self, i: usize, e: Evaluation) -> Result<Evaluation> {
        let (Some(remote), State::Stale { .. }, Some(key)) = (&self.opts.remote, &e.state, e.key)
        else {
            return Ok(e);
        };
        if remote.fetch(self.cache, &self.p.nodes[i].id, &key) {
            self.evaluate(i)
        } else {
            Ok(e)
        }
    }

    /// `--push`: hands a durable record to the remote cache, which uploads it in the
    /// background (the caller waits for the uploads after the run).
    fn push(&self, record: &Record) {
        if let Some(remote) = &self.opts.remote {
            remote.committed(self.cache, record);
        }
    }

    /// A node's thread ended. Its outputs are in place: downstream may start now, while
    /// its record waits for the committer (behind the records it was computed from).
    fn finished(
        &mut self,
        i: usize,
        res: std::result::Result<Record, Outcome>,
        jobs: &mpsc::Sender<commit::Job>,
    ) -> Result<()> {
        let node = &self.p.nodes[i];
        match res {
            Ok(record) => {
                for o in &node.outs {
                    self.ev.ws.remember_artifact(o, &record.outputs[o])?;
                }
                self.outputs.lock().unwrap()[i] = Some(record.outputs.clone());
                crate::failpoint::hit("node-finished");
                let after = self.sched.commit_after(i);
                self.sched.finished(i, Ok(()));
                jobs.send(commit::Job {
                    node: i,
                    record,
                    after,
                })
                .expect("the committer runs until the loop ends");
            }
            Err(out) => {
                for o in &node.outs {
                    self.ev.ws.invalidate(o);
                }
                self.note_failure(i, &out)?;
                self.sched.finished(i, Err(out));
            }
        }
        Ok(())
    }

    /// The committer answered: the node is done, or failed after all.
    fn committed(&mut self, c: Committed, slurm: Option<&Slurm>) -> Result<()> {
        match c {
            Committed::Durable { node: i, record } => {
                let node = &self.p.nodes[i];
                self.cache.clear_failure(&node.id)?;
                let staging = slurm
                    .filter(|_| node.executor == Executor::Slurm)
                    .map(|s| s.settings.staging.as_path());
                after_commit(self.cache, &node.id, &record.key, staging);
                self.push(&record);
                self.sched.committed(i, record.timing.seconds);
            }
            Committed::Failed { node: i, error } => {
                for o in &self.p.nodes[i].outs {
                    self.ev.ws.invalidate(o);
                }
                let out = Outcome::Failed { error, log: None };
                self.note_failure(i, &out)?;
                let Outcome::Failed { error, .. } = out else {
                    unreachable!()
                };
                self.sched.commit_failed(i, error);
            }
        }
        Ok(())
    }

    /// Records a failed execution, for `why` and the next plan.
    fn note_failure(&self, i: usize, out: &Outcome) -> Result<()> {
        if let Outcome::Failed { error, log } = out {
            self.cache.record_failure(
                &self.p.nodes[i].id,
                &NodeFailure {
                    at: Utc::now(),
                    error: error.clone(),
                    log: log.clone(),
                    pipeline: self.p.name.clone(),
                },
            )?;
        }
        Ok(())
    }

    /// Tells the observer about every node settled since the last call.
    fn notify(&mut self) {
        for i in self.sched.take_settled() {
            if let Some(o) = self.sched.outcome(i) {
                self.observer.finished(&self.p.nodes[i].id, o);
            }
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
