//! Group commit, off the critical path: a thread that makes finished nodes' records
//! durable, many per flush of the index, while their downstream already runs.
//!
//! Durability is what it was with one flush per node:
//! - a record is inserted only after a flush that followed the node's arrival here, so
//!   the objects it names (small ones live in the same index, unflushed until then) are
//!   durable before it;
//! - a record is inserted only once the records it must follow ([`Job::after`]: the
//!   upstream nodes that were still committing when it finished) are durable;
//! - a node is reported [`Committed`] only after the flush that made its record durable.
//!
//! None of this leans on the index recovering a prefix of its writes after a crash: each
//! ordering is a flush that completed before the later insert was made. A chain whose
//! nodes finish faster than a flush commits one record per flush; nodes that finish
//! together (a fan-out) share one.

use std::{
    collections::{HashMap, HashSet},
    sync::mpsc::{Receiver, Sender},
};

use dagrun_cache::{Cache, Record};

/// A finished node's record, to commit.
pub struct Job {
    pub node: usize,
    pub record: Record,
    /// Nodes whose records must be durable first.
    pub after: Vec<usize>,
}

/// What became of a [`Job`].
pub enum Committed {
    /// The record is durable.
    Durable { node: usize, record: Box<Record> },
    /// It could not be committed (nothing of it is visible after a restart).
    Failed { node: usize, error: String },
}

/// Runs the committer until `jobs` is closed and every job is answered on `done`
/// (wrapped by `wrap`, so the answers can share the run's event channel).
pub fn committer<E>(
    cache: &Cache,
    jobs: Receiver<Job>,
    done: Sender<E>,
    wrap: impl Fn(Committed) -> E,
) {
    let mut pending: Vec<(Job, u64)> = Vec::new();
    let mut durable: HashSet<usize> = HashSet::new();
    // Failed nodes, and their ids for the message of what follows them.
    let mut failed: HashMap<usize, String> = HashMap::new();
    // Flushes made so far; a job that arrived during round r has its objects durable
    // once flush r is done, so it may be inserted from round r + 1 on.
    let mut round: u64 = 0;
    let mut open = true;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match jobs.recv() {
                Ok(j) => pending.push((j, round)),
                Err(_) => return,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(j) => pending.push((j, round)),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut batch = Vec::new();
        let mut k = 0;
        while k < pending.len() {
            let (job, arrived) = &pending[k];
            let failed_upstream = job.after.iter().find_map(|u| failed.get(u).cloned());
            let eligible = *arrived < round && job.after.iter().all(|u| durable.contains(u));
            if let Some(u) = failed_upstream {
                let (job, _) = pending.remove(k);
                failed.insert(job.node, job.record.node.clone());
                let _ = done.send(wrap(Committed::Failed {
                    node: job.node,
                    error: format!(
                        "not committed: the record of `{u}`, which it was computed from, could not be"
                    ),
                }));
                continue;
            }
            if eligible {
                batch.push(pending.remove(k).0);
                continue;
            }
            k += 1;
        }
        let mut inserted = Vec::new();
        for job in batch {
            crate::failpoint::hit("commit-insert");
            match cache.insert_record(&job.record) {
                Ok(()) => inserted.push(job),
                Err(e) => {
                    failed.insert(job.node, job.record.node.clone());
                    let _ = done.send(wrap(Committed::Failed {
                        node: job.node,
                        error: format!("cannot commit the record: {e}"),
                    }));
                }
            }
        }
        crate::failpoint::hit("commit-before-flush");
        let flushed = cache.flush();
        round += 1;
        for job in inserted {
            match &flushed {
                Ok(()) => {
                    durable.insert(job.node);
                    let _ = done.send(wrap(Committed::Durable {
                        node: job.node,
                        record: Box::new(job.record),
                    }));
                }
                Err(e) => {
                    failed.insert(job.node, job.record.node.clone());
                    let _ = done.send(wrap(Committed::Failed {
                        node: job.node,
                        error: format!("cannot flush the cache index: {e}"),
                    }));
                }
            }
        }
        // Fault tests: stop dead between two flushes, as a kill -9 would.
        crate::failpoint::hit("commit-after-flush");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record(node: &str, key: &[u8]) -> Record {
        let now = chrono::Utc::now();
        Record {
            key: dagrun_cache::hash_bytes(key),
            node: node.into(),
            kind: "command".into(),
            kind_version: 1,
            components: serde_json::json!({}),
            outputs: BTreeMap::new(),
            metrics: Default::default(),
            timing: dagrun_cache::Timing {
                started: now,
                finished: now,
                seconds: 0.0,
            },
            log: None,
            engine_version: "test".into(),
            pipeline: "p.yaml".into(),
            param_refs: BTreeMap::new(),
        }
    }

    #[test]
    fn records_become_durable_after_the_records_they_follow() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &Default::default(), &|_| {}).unwrap();
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A chain 0 → 1 → 2 sent at once, plus an independent node 3.
        for (n, after) in [(0, vec![]), (1, vec![0]), (2, vec![1]), (3, vec![])] {
            jobs_tx
                .send(Job {
                    node: n,
                    record: record(&format!("n{n}"), &[n as u8]),
                    after,
                })
                .unwrap();
        }
        drop(jobs_tx);
        std::thread::scope(|s| {
            s.spawn(|| committer(&cache, jobs_rx, done_tx, |c| c));
        });
        let order: Vec<usize> = done_rx
            .iter()
            .map(|c| match c {
                Committed::Durable { node, .. } => node,
                Committed::Failed { error, .. } => panic!("{error}"),
            })
            .collect();
        let pos = |n| order.iter().position(|&x| x == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(pos(0) < pos(1) && pos(1) < pos(2), "{order:?}");
        for n in 0..4u8 {
            assert!(cache
                .record(&dagrun_cache::hash_bytes(&[n]))
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn a_record_after_one_that_failed_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &Default::default(), &|_| {}).unwrap();
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Node 0's record names an object the cache does not have: it fails.
        let mut bad = record("n0", b"0");
        bad.log = Some(dagrun_cache::hash_bytes(b"never stored"));
        jobs_tx
            .send(Job {
                node: 0,
                record: bad,
                after: vec![],
            })
            .unwrap();
        jobs_tx
            .send(Job {
                node: 1,
                record: record("n1", b"1"),
                after: vec![0],
            })
            .unwrap();
        drop(jobs_tx);
        std::thread::scope(|s| {
            s.spawn(|| committer(&cache, jobs_rx, done_tx, |c| c));
        });
        let failed: Vec<usize> = done_rx
            .iter()
            .filter_map(|c| match c {
                Committed::Failed { node, .. } => Some(node),
                Committed::Durable { .. } => None,
            })
            .collect();
        assert_eq!(failed, vec![0, 1]);
        assert!(cache
            .record(&dagrun_cache::hash_bytes(b"1"))
            .unwrap()
            .is_none());
    }
}
