//! `dagrun run --pull/--push`: [`RunSync`] is the executor's [`RemoteHooks`].
//!
//! `--pull`: before a stale node runs, its key is looked up on the remote; when found,
//! the record and its objects are downloaded (verified) into the cache and the node is
//! restored instead of run. `--push`: each node committed during the run is uploaded in
//! the background while the run goes on; [`RunSync::finish`] waits for the uploads.
//! A remote that fails is a warning, never a failed node: after its first failure the
//! remote is not asked again during the run, and the nodes simply run (or stay local).

use std::sync::{atomic::Ordering, Arc, Mutex};

use dagrun_cache::{Cache, Hash, Record, RemoteHooks};

use crate::{
    transfer::{NodeOutcome, Once, PushItem, Stats, TransferReport},
    Error, Remote,
};

/// A check of a record from the remote beyond its manifest: that its key components
/// hash to its key (the engine knows how; this crate does not).
pub type RecordCheck = Arc<dyn Fn(&Record) -> Result<(), String> + Send + Sync>;

/// An upload running in the background, and the record it uploads.
type Upload = tokio::task::JoinHandle<(Record, crate::Result<NodeOutcome>)>;

/// The remote side of one run.
pub struct RunSync {
    remote: Remote,
    pull: bool,
    push: bool,
    check: RecordCheck,
    pub pull_stats: Arc<Stats>,
    pub push_stats: Arc<Stats>,
    once: Arc<Once>,
    pushes: Mutex<Vec<Upload>>,
    pulled: Mutex<TransferReport>,
    /// Said once the run is over (the display owns the terminal meanwhile).
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for RunSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RunSync({}, pull: {}, push: {})",
            self.remote.url(),
            self.pull,
            self.push
        )
    }
}

/// What a run moved, for its summary.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub url: String,
    pub pulled: TransferReport,
    pub pushed: TransferReport,
    /// Lookups that failed and records that were not taken (the node ran instead),
    /// conflicts, failed uploads: one line each.
    pub warnings: Vec<String>,
}

impl RunSync {
    pub fn new(remote: Remote, pull: bool, push: bool, check: RecordCheck) -> RunSync {
        RunSync {
            remote,
            pull,
            push,
            check,
            pull_stats: Default::default(),
            push_stats: Default::default(),
            once: Default::default(),
            pushes: Default::default(),
            pulled: Default::default(),
            warnings: Default::default(),
        }
    }

    pub fn url(&self) -> &str {
        self.remote.url()
    }

    fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.warnings.lock().unwrap().push(w);
    }

    fn stopped(&self) -> bool {
        self.remote.inner.stopped.load(Ordering::Relaxed)
    }

    /// Waits for the uploads still running and reports what the run moved.
    pub fn finish(&self) -> SyncReport {
        let handles: Vec<_> = std::mem::take(&mut *self.pushes.lock().unwrap());
        let url = self.remote.url().to_string();
        let nodes = self.remote.block_on(async {
            let mut out = Vec::new();
            for h in handles {
                match h.await {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!("an upload task failed: {e}"),
                }
            }
            out
        });
        let pushed = TransferReport { nodes };
        for (rec, kept) in pushed.conflicts() {
            self.warn(conflict_line(&rec.node, &rec.key, kept, "remote"));
        }
        let mut stopped = 0;
        for (rec, e) in pushed.errors() {
            if matches!(e, Error::Stopped) {
                stopped += 1;
            } else {
                self.warn(format!("`{}` was not pushed: {e}", rec.node));
            }
        }
        if stopped > 0 {
            self.warn(format!(
                "{stopped} more node(s) were not pushed after the remote failed"
            ));
        }
        SyncReport {
            url,
            pulled: std::mem::take(&mut *self.pulled.lock().unwrap()),
            pushed,
            warnings: std::mem::take(&mut *self.warnings.lock().unwrap()),
        }
    }
}

/// The message for two records of one key whose outputs differ.
pub fn conflict_line(node: &str, key: &Hash, kept: &Record, kept_where: &str) -> String {
    format!(
        "`{node}` (key {}): the {kept_where} record of this key has different outputs \
         (from `{}`, {}); kept it, not replaced. Same inputs, different outputs: the node \
         is not deterministic, or this is a bug",
        key.short(),
        kept.node,
        kept.timing.finished.format("%Y-%m-%d %H:%M UTC")
    )
}

impl RemoteHooks for RunSync {
    fn fetch(&self, cache: &Cache, node: &str, key: &Hash) -> bool {
        if !self.pull || self.stopped() {
            return false;
        }
        let record = match self.remote.get_record(key) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                self.warn(format!(
                    "`{node}` runs: looking it up on the remote failed: {e}"
                ));
                return false;
            }
        };
        if let Err(detail) = (self.check)(&record) {
            self.warn(format!(
                "`{node}` runs: the remote's record of its key is not valid ({detail})"
            ));
            return false;
        }
        let report = self
            .remote
            .pull(cache, vec![record], self.pull_stats.clone());
        let mut ok = false;
        for (rec, r) in &report.nodes {
            match r {
                Ok(NodeOutcome::Moved { .. }) | Ok(NodeOutcome::AlreadyThere) => ok = true,
                Ok(NodeOutcome::Conflict { kept }) => {
                    ok = true;
                    self.warn(conflict_line(node, &rec.key, kept, "local"));
                }
                Err(e) => self.warn(format!("`{node}` runs: pulling it failed: {e}")),
            }
        }
        self.pulled.lock().unwrap().nodes.extend(report.nodes);
        ok
    }

    fn committed(&self, cache: &Cache, record: &Record) {
        if !self.push {
            return;
        }
        match PushItem::from_cache(cache, record.clone()) {
            Ok(item) => {
                let h = self
                    .remote
                    .spawn_push(item, self.push_stats.clone(), self.once.clone());
                self.pushes.lock().unwrap().push(h);
            }
            Err(e) => self.warn(format!("`{}` was not pushed: {e}", record.node)),
        }
    }
}
