//! Running one stage, wherever it runs: the local executor and the Slurm worker
//! (`dagrun worker`) both call [`invoke`], which prepares the node's folders, runs the
//! kind under `catch_unwind`, and classifies how it ended in one place.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use chrono::{DateTime, Utc};
use dagrun_cache::Metrics;
use indexmap::IndexMap;
use serde_json::Value;

use crate::stage::{Cancelled, Place, ProgressSink, StageContext, StageKind};

/// Everything a stage needs to run, wherever it runs.
pub struct Invocation {
    pub node: String,
    pub stage: String,
    /// Rendered parameters: upstream artifacts as paths.
    pub params: Value,
    pub matrix: IndexMap<String, Value>,
    pub workdir: PathBuf,
    pub device: String,
    pub gpus: Vec<u32>,
    pub place: Place,
    /// Emptied (made fresh) before the stage runs; not made at all when the kind declares
    /// no artifacts of its own.
    pub out_dir: PathBuf,
    /// Created if missing; kept across interruptions.
    pub scratch: PathBuf,
    /// Workspace outputs (relative to `workdir`), removed before the stage runs.
    pub outs: Vec<String>,
    pub log: File,
    pub log_path: PathBuf,
    pub sink: Arc<dyn ProgressSink>,
    pub cancel: Arc<AtomicBool>,
    /// Where running process groups are recorded (`None` in a Slurm job).
    pub cache_dir: Option<PathBuf>,
    /// The node's TensorBoard run folder, if curves are asked for.
    pub tensorboard: Option<PathBuf>,
}

/// How a stage ended.
#[derive(Debug)]
pub enum Ended {
    /// It succeeded: its outputs are in `out_dir` and the workspace.
    Done,
    /// It failed (an error, a panic, or its folders could not be prepared).
    Failed(String),
    /// Ctrl-C, or the job was signalled.
    Interrupted,
}

/// What [`invoke`] reports.
#[derive(Debug)]
pub struct Invoked {
    pub ended: Ended,
    pub metrics: Metrics,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
}

/// Runs `kind` for one node: makes `out_dir` fresh (absent for a kind without artifacts of
/// its own) and `scratch` exist, removes the
/// node's workspace outputs, runs the kind, and says how it ended (an error or a panic
/// is also written to the node's log).
pub fn invoke(kind: &dyn StageKind, inv: Invocation) -> Invoked {
    let started = Utc::now();
    let t0 = Instant::now();
    let done = |ended: Ended, metrics: Metrics| Invoked {
        ended,
        metrics,
        started,
        finished: Utc::now(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    let prepare = || -> std::io::Result<()> {
        match std::fs::remove_dir_all(&inv.out_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Here, only a kind with artifacts of its own writes there (a `command` node
        // writes workspace files): one directory fewer to make and remove per node. A
        // Slurm job always has one: the coordinator adopts a finished job by its folder.
        if !matches!(inv.place, Place::Here) || !kind.outputs(&inv.params).is_empty() {
            std::fs::create_dir_all(&inv.out_dir)?;
        }
        std::fs::create_dir_all(&inv.scratch)?;
        remove_outs(&inv.workdir, &inv.outs)
    };
    if let Err(e) = prepare() {
        return done(
            Ended::Failed(format!("cannot prepare the node: {e}")),
            Metrics::default(),
        );
    }
    let cancel = inv.cancel.clone();
    let mut ctx = StageContext {
        node: inv.node,
        stage: inv.stage,
        params: inv.params,
        matrix: inv.matrix,
        workdir: inv.workdir,
        device: inv.device,
        gpus: inv.gpus,
        place: inv.place,
        out_dir: inv.out_dir,
        scratch: inv.scratch,
        log: Arc::new(Mutex::new(inv.log)),
        log_path: inv.log_path,
        metrics: Metrics::default(),
        sink: inv.sink,
        cancel: inv.cancel,
        cache_dir: inv.cache_dir,
        tensorboard: inv.tensorboard,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(&mut ctx)));
    let metrics = std::mem::take(&mut ctx.metrics);
    let interrupted = cancel.load(Ordering::Relaxed);
    let ended = match result {
        Ok(Ok(())) if !interrupted => Ended::Done,
        Ok(Ok(())) => Ended::Interrupted,
        Ok(Err(e)) if e.is::<Cancelled>() || interrupted => {
            ctx.log("interrupted");
            Ended::Interrupted
        }
        Ok(Err(e)) => {
            ctx.log(format!("error: {e}"));
            Ended::Failed(e.to_string())
        }
        Err(panic) => {
            let msg = panic_message(panic.as_ref());
            ctx.log(format!("panic: {msg}"));
            Ended::Failed(format!("the stage panicked: {msg}"))
        }
    };
    done(ended, metrics)
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Removes a node's workspace outputs (and makes their parent folders) before it runs,
/// never through a symbolic link and never outside `workdir` (a link at an output is
/// removed itself; a link on the way to one is refused).
pub fn remove_outs(workdir: &Path, outs: &[String]) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::remove_outs;

    #[test]
    fn removing_outputs_never_goes_through_a_link_or_leaves_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("o"), "the user's").unwrap();
        // A folder on the way is a link to a folder outside: refused, nothing deleted.
        std::os::unix::fs::symlink(outside.path(), ws.path().join("sub")).unwrap();
        let err = remove_outs(ws.path(), &["sub/o".into()]).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");
        assert!(outside.path().join("o").exists());
        // A link at the output itself is removed, not what it points to.
        std::os::unix::fs::symlink(outside.path().join("o"), ws.path().join("o")).unwrap();
        remove_outs(ws.path(), &["o".into()]).unwrap();
        assert!(std::fs::symlink_metadata(ws.path().join("o")).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("o")).unwrap(),
            "the user's"
        );
        // A folder output goes with everything in it, links inside unfollowed.
        std::fs::create_dir_all(ws.path().join("d/e")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("d/e/l")).unwrap();
        remove_outs(ws.path(), &["d".into()]).unwrap();
        assert!(!ws.path().join("d").exists());
        assert!(outside.path().join("o").exists());
        assert!(remove_outs(ws.path(), &["../x".into()]).is_err());
    }
}
