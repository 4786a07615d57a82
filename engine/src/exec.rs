//! One node, from its evaluation to a record ready to commit: its parameters rendered
//! with upstream paths, the stage run here ([`invoke`]) or as a Slurm job (whose worker
//! calls the same [`invoke`]), its outputs ingested into the cache. Committing the
//! record is the caller's (group commit, [`crate::commit`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use dagrun_cache::{Artifact, Cache, Hash, Metrics, Record, Timing};

use crate::{
    invoke::{invoke, Ended, Invocation},
    job::{write_json_atomic, JobSpec, Staged, JOB_SCHEMA},
    plan::{runtime_params, Evaluation},
    sched::Outcome,
    slurm::{RemoteOutcome, Slurm, Submission},
    stage::{tensorboard_run_dir, Place, ProgressSink},
    Pipeline,
};

/// The settled outputs of every node (`None` while unknown), shared with running nodes.
pub type Outputs = Mutex<Vec<Option<BTreeMap<String, Artifact>>>>;

/// What a node's run left for the commit: where its outputs and log are.
struct Ran {
    out_dir: PathBuf,
    log_path: PathBuf,
    metrics: Metrics,
    timing: Timing,
}

/// Runs node `i` (here, or as a Slurm job when `slurm` is given) and ingests its
/// outputs: the record it returns names only objects already in the cache. On failure
/// the node's log is kept under `<cache>/logs/` and its scratch folder is kept for the
/// next attempt.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    p: &Pipeline,
    i: usize,
    e: Evaluation,
    cache: &Cache,
    outputs: &Outputs,
    gpus: Vec<u32>,
    sink: Arc<dyn ProgressSink>,
    cancel: Arc<AtomicBool>,
    slurm: Option<&Slurm>,
) -> Result<Record, Outcome> {
    let node = &p.nodes[i];
    let fail = |error: String, log: Option<PathBuf>| Outcome::Failed { error, log };
    let key = e.key.expect("runnable nodes have a key");
    let components = e.components.expect("runnable nodes have components");
    let keep_log = |log: &Path| keep_failure_log(cache, &node.id, log);
    let path_of = |t: usize, o: &str| -> Result<Option<String>, String> {
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
    let ran = match slurm {
        Some(slurm) => run_remote(p, i, &key, params, cache, slurm)?,
        None => run_here(p, i, &key, params, cache, gpus, sink, cancel.clone())?,
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
    // Ingest outputs: durable files for large ones, index entries (durable with the
    // commit's flush) for small ones.
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
        // A workspace output is read through `ingest_output`: no symbolic link on the way.
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
    if slurm.is_none() {
        if let Some(tmp) = out_dir.parent() {
            cache.recycle_node_dir(tmp.to_path_buf());
        }
    }
    Ok(Record {
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
        param_refs: node.param_refs.clone(),
    })
}

/// What is left of a node once its record is durable: its scratch folder, the Slurm
/// staging folder, a failed attempt's log.
pub fn after_commit(cache: &Cache, node: &str, key: &Hash, staging: Option<&Path>) {
    let _ = cache.remove_scratch(key);
    if let Some(root) = staging {
        let _ = std::fs::remove_dir_all(Staged::new(root, &key.to_hex()).dir);
    }
    let _ = std::fs::remove_file(cache.failure_log_path(node));
}

/// Copies a failed node's log to where `dagrun` points users (`<cache>/logs/`).
pub fn keep_failure_log(cache: &Cache, node: &str, log: &Path) -> Option<PathBuf> {
    let dest = cache.failure_log_path(node);
    std::fs::create_dir_all(dest.parent()?).ok()?;
    std::fs::copy(log, &dest).ok()?;
    Some(dest)
}

/// Runs a node in this process, in a node folder under the cache's `tmp/` (emptied; reused
/// from an earlier node of this run when one was given back).
#[allow(clippy::too_many_arguments)]
fn run_here(
    p: &Pipeline,
    i: usize,
    key: &Hash,
    params: serde_json::Value,
    cache: &Cache,
    gpus: Vec<u32>,
    sink: Arc<dyn ProgressSink>,
    cancel: Arc<AtomicBool>,
) -> Result<Ran, Outcome> {
    let node = &p.nodes[i];
    let fail = |error: String, log: Option<PathBuf>| Outcome::Failed { error, log };
    let tmp = cache
        .node_dir()
        .map_err(|err| fail(err.to_string(), None))?;
    let out_dir = tmp.join("out");
    let log_path = tmp.join("log");
    let log = std::fs::File::create(&log_path)
        .map_err(|err| fail(format!("cannot prepare the node: {err}"), None))?;
    let invoked = invoke(
        node.kind.as_ref(),
        Invocation {
            node: node.id.clone(),
            stage: node.stage.clone(),
            params,
            matrix: node.matrix.clone(),
            workdir: p.workdir.clone(),
            device: node.device.clone(),
            gpus,
            place: Place::Here,
            out_dir: out_dir.clone(),
            scratch: cache
                .make_scratch(key)
                .map_err(|err| fail(format!("cannot prepare the node: {err}"), None))?,
            outs: node.outs.clone(),
            log,
            log_path: log_path.clone(),
            sink,
            cancel,
            cache_dir: Some(cache.dir().to_path_buf()),
            tensorboard: p
                .tensorboard
                .as_ref()
                .map(|d| tensorboard_run_dir(d, &node.id)),
        },
    );
    match invoked.ended {
        Ended::Done => Ok(Ran {
            out_dir,
            log_path,
            metrics: invoked.metrics,
            timing: Timing {
                started: invoked.started,
                finished: invoked.finished,
                seconds: invoked.seconds,
            },
        }),
        Ended::Interrupted => Err(Outcome::Interrupted),
        Ended::Failed(error) => Err(fail(error, keep_failure_log(cache, &node.id, &log_path))),
    }
}

/// Runs a node as a Slurm job: writes its job file into its staging folder, hands it
/// to the Slurm thread and waits. The worker removes the workspace outputs itself, so
/// that a job adopted from an earlier run keeps what it wrote.
fn run_remote(
    p: &Pipeline,
    i: usize,
    key: &Hash,
    params: serde_json::Value,
    cache: &Cache,
    slurm: &Slurm,
) -> Result<Ran, Outcome> {
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
        tensorboard: p
            .tensorboard
            .as_ref()
            .map(|d| tensorboard_run_dir(d, &node.id)),
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
