//! The run's bookkeeping as one state object, driven by named steps and free of
//! processes, files and threads (cargo's `job_queue` `DrainState` is the model):
//!
//! ```text
//!            ready ──evaluated──► cached ─────────────────────────────┐
//!              │                  runnable ──start──► running          │
//!              │                                        │ finished     │
//!              └─► failed (missing inputs)              ▼              ▼
//!                                                   committing ──► release ──► downstream ready
//!                                                       │ committed
//!                                                       ▼
//!                                                      ran
//! ```
//!
//! - [`Schedule::next_ready`]: a node whose upstream in the run has all settled; the
//!   caller evaluates it and answers with [`Schedule::cached`], [`Schedule::runnable`] or
//!   [`Schedule::unrunnable`].
//! - [`Schedule::start`]: the next runnable node that fits the free job slots and GPUs
//!   (a Slurm node takes no local slot; `max_jobs` bound those).
//! - [`Schedule::finished`]: the node's outputs are on disk; its slots are free and its
//!   downstream is released at once, while its record is committed (`committing`).
//! - [`Schedule::committed`]: its record is durable: only now is it done (`Ran`).
//! - [`Schedule::release`]: the one place a node's downstream is released.
//!
//! [`Schedule::commit_after`] says which upstream records must be durable before a
//! node's own: those still `committing` when it finished (a record is never durable
//! before the records of the inputs it was computed from).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::reason::Reason;

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
    Failed {
        error: String,
        log: Option<std::path::PathBuf>,
    },
    /// Not run because of upstream.
    Skipped { reason: Reason },
    /// Stopped by Ctrl-C, or never started because of it.
    Interrupted,
}

/// What the schedule needs to know of a node.
#[derive(Clone, Debug, Default)]
pub struct Task {
    /// Its id, for skip reasons.
    pub id: String,
    pub upstream: Vec<usize>,
    pub downstream: Vec<usize>,
    /// Job slots it takes (`resources.cpus`, at most `--jobs`).
    pub cpus: u32,
    pub gpus: u32,
    /// Runs as a Slurm job: no local slot, counted against `max_remote`.
    pub remote: bool,
}

/// A node to start now, with the GPUs it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    pub node: usize,
    pub gpus: Vec<u32>,
}

/// The state of a run: which nodes wait, which are ready, which run, which commit.
#[derive(Debug)]
pub struct Schedule {
    tasks: Vec<Task>,
    /// Nodes that take part in this run.
    included: Vec<bool>,
    /// Per node: upstream nodes in the run that have not been released yet.
    waiting: Vec<usize>,
    ready: VecDeque<usize>,
    runnable: VecDeque<usize>,
    jobs: u32,
    free_cpus: u32,
    free_gpus: BTreeSet<u32>,
    max_remote: usize,
    remote_running: usize,
    /// Running nodes and the slots they hold.
    running: BTreeMap<usize, (u32, Vec<u32>)>,
    /// Finished nodes whose record is not durable yet.
    committing: BTreeSet<usize>,
    outcomes: BTreeMap<usize, Outcome>,
    /// Nodes whose outcome was decided since the last [`Schedule::take_settled`].
    settled: Vec<usize>,
    cancelled: bool,
}

impl Schedule {
    /// A schedule of `tasks` where the nodes in `included` take part (in this order of
    /// preference among ready nodes), with `jobs` job slots, GPUs `0..gpus` and at most
    /// `max_remote` Slurm jobs at once.
    pub fn new(
        tasks: Vec<Task>,
        included: &[usize],
        jobs: u32,
        gpus: u32,
        max_remote: usize,
    ) -> Self {
        let n = tasks.len();
        let mut inc = vec![false; n];
        for &i in included {
            inc[i] = true;
        }
        let waiting: Vec<usize> = (0..n)
            .map(|i| tasks[i].upstream.iter().filter(|&&u| inc[u]).count())
            .collect();
        let ready = included
            .iter()
            .copied()
            .filter(|&i| waiting[i] == 0)
            .collect();
        let jobs = jobs.max(1);
        Schedule {
            tasks,
            included: inc,
            waiting,
            ready,
            runnable: VecDeque::new(),
            jobs,
            free_cpus: jobs,
            free_gpus: (0..gpus).collect(),
            max_remote,
            remote_running: 0,
            running: BTreeMap::new(),
            committing: BTreeSet::new(),
            outcomes: BTreeMap::new(),
            settled: Vec::new(),
            cancelled: false,
        }
    }

    /// Step 1: a node whose upstream in the run has settled, to evaluate. After Ctrl-C
    /// ([`Schedule::cancel`]) nothing more is handed out.
    pub fn next_ready(&mut self) -> Option<usize> {
        if self.cancelled {
            return None;
        }
        self.ready.pop_front()
    }

    /// The evaluated node came from the cache: it is done, and releases its downstream.
    pub fn cached(&mut self, i: usize, restored: Vec<String>, cut_off: bool) {
        self.settle(i, Outcome::Cached { restored, cut_off });
        self.release(i);
    }

    /// The evaluated node must run: it waits for slots.
    pub fn runnable(&mut self, i: usize) {
        self.runnable.push_back(i);
    }

    /// The evaluated node cannot run (missing inputs): it fails, its downstream is
    /// skipped.
    pub fn unrunnable(&mut self, i: usize, error: String) {
        self.fail(i, Outcome::Failed { error, log: None });
    }

    /// Step 2: the first runnable node that fits the free slots, which it now holds.
    pub fn start(&mut self) -> Option<Start> {
        if self.cancelled {
            return None;
        }
        let k = self.runnable.iter().position(|&i| self.fits(i))?;
        let i = self.runnable.remove(k).expect("in range");
        let t = &self.tasks[i];
        let (cpus, gpus) = if t.remote {
            self.remote_running += 1;
            (0, Vec::new())
        } else {
            let cpus = t.cpus.min(self.jobs);
            let gpus: Vec<u32> = self
                .free_gpus
                .iter()
                .copied()
                .take(t.gpus as usize)
                .collect();
            for g in &gpus {
                self.free_gpus.remove(g);
            }
            self.free_cpus -= cpus;
            (cpus, gpus)
        };
        self.running.insert(i, (cpus, gpus.clone()));
        Some(Start { node: i, gpus })
    }

    fn fits(&self, i: usize) -> bool {
        let t = &self.tasks[i];
        if t.remote {
            self.remote_running < self.max_remote
        } else {
            t.cpus.min(self.jobs) <= self.free_cpus && t.gpus as usize <= self.free_gpus.len()
        }
    }

    /// Step 3: a running node ended. `Ok`: its outputs are in place; it frees its slots,
    /// releases its downstream and waits for its record to be committed. `Err`: it failed
    /// or was interrupted, and its downstream is skipped.
    pub fn finished(&mut self, i: usize, result: Result<(), Outcome>) {
        let (cpus, gpus) = self.running.remove(&i).expect("the node was running");
        if self.tasks[i].remote {
            self.remote_running -= 1;
        }
        self.free_cpus += cpus;
        self.free_gpus.extend(gpus);
        match result {
            Ok(()) => {
                self.committing.insert(i);
                self.release(i);
            }
            Err(out) => self.fail(i, out),
        }
    }

    /// The records that must be durable before node `i`'s: its upstream still being
    /// committed. Ask when `i` finishes.
    pub fn commit_after(&self, i: usize) -> Vec<usize> {
        self.tasks[i]
            .upstream
            .iter()
            .copied()
            .filter(|u| self.committing.contains(u))
            .collect()
    }

    /// Step 4: node `i`'s record is durable: it ran.
    pub fn committed(&mut self, i: usize, seconds: f64) {
        assert!(self.committing.remove(&i), "the node was committing");
        self.settle(i, Outcome::Ran { seconds });
    }

    /// Node `i`'s record could not be committed: it failed. Downstream that has not
    /// started yet is skipped (a downstream already running cannot commit either: its
    /// record would have to follow this one).
    pub fn commit_failed(&mut self, i: usize, error: String) {
        assert!(self.committing.remove(&i), "the node was committing");
        self.fail(i, Outcome::Failed { error, log: None });
    }

    /// The one place a node's downstream is released: each downstream node in the run
    /// whose upstream has now all settled becomes ready.
    fn release(&mut self, i: usize) {
        for k in 0..self.tasks[i].downstream.len() {
            let d = self.tasks[i].downstream[k];
            if !self.included[d] || self.outcomes.contains_key(&d) {
                continue;
            }
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.push_back(d);
            }
        }
    }

    /// Ctrl-C: nothing more starts; ready and runnable nodes are interrupted. Running
    /// and committing nodes still end and report.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        let waiting: Vec<usize> = self
            .ready
            .drain(..)
            .chain(self.runnable.drain(..))
            .collect();
        for i in waiting {
            self.settle(i, Outcome::Interrupted);
        }
    }

    /// Whether nothing is left to do: nothing ready, runnable (unless cancelled), running
    /// or committing.
    pub fn is_done(&self) -> bool {
        self.running.is_empty()
            && self.committing.is_empty()
            && (self.cancelled || (self.ready.is_empty() && self.runnable.is_empty()))
    }

    /// Whether a node is running or committing (an event will come).
    pub fn has_work_in_flight(&self) -> bool {
        !self.running.is_empty() || !self.committing.is_empty()
    }

    /// Whether evaluation can go on without waiting for an event.
    pub fn has_ready(&self) -> bool {
        !self.cancelled && !self.ready.is_empty()
    }

    /// The nodes whose outcome was decided since the last call, in that order.
    pub fn take_settled(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.settled)
    }

    pub fn outcome(&self, i: usize) -> Option<&Outcome> {
        self.outcomes.get(&i)
    }

    /// Every node's outcome; nodes of the run that never got one were interrupted.
    pub fn into_outcomes(mut self) -> BTreeMap<usize, Outcome> {
        for i in 0..self.tasks.len() {
            if self.included[i] {
                self.outcomes.entry(i).or_insert(Outcome::Interrupted);
            }
        }
        self.outcomes
    }

    fn settle(&mut self, i: usize, out: Outcome) {
        if self.outcomes.insert(i, out).is_none() {
            self.settled.push(i);
        }
    }

    /// Node `i` fails with `out`; every descendant in the run that has not started is
    /// skipped.
    fn fail(&mut self, i: usize, out: Outcome) {
        self.settle(i, out);
        let mut stack = self.tasks[i].downstream.clone();
        let mut seen = BTreeSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) || !self.included[d] {
                continue;
            }
            stack.extend(self.tasks[d].downstream.iter().copied());
            if self.outcomes.contains_key(&d)
                || self.running.contains_key(&d)
                || self.committing.contains(&d)
            {
                continue;
            }
            self.ready.retain(|&x| x != d);
            self.runnable.retain(|&x| x != d);
            self.settle(
                d,
                Outcome::Skipped {
                    reason: Reason::UpstreamFailed {
                        node: self.tasks[i].id.clone(),
                    },
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks from edges `(from, to)` over `n` nodes, one slot each.
    fn graph(n: usize, edges: &[(usize, usize)]) -> Vec<Task> {
        let mut t: Vec<Task> = (0..n)
            .map(|i| Task {
                id: format!("n{i}"),
                cpus: 1,
                ..Task::default()
            })
            .collect();
        for &(a, b) in edges {
            t[a].downstream.push(b);
            t[b].upstream.push(a);
        }
        t
    }

    fn all(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn a_chain_runs_in_order_and_downstream_starts_before_the_upstream_commit() {
        let mut s = Schedule::new(graph(3, &[(0, 1), (1, 2)]), &all(3), 1, 0, 0);
        assert_eq!(s.next_ready(), Some(0));
        assert_eq!(s.next_ready(), None, "1 waits on 0");
        s.runnable(0);
        assert_eq!(s.start().map(|x| x.node), Some(0));
        s.finished(0, Ok(()));
        // 0's outputs are on disk: 1 may start while 0's record is still committing.
        assert_eq!(s.next_ready(), Some(1));
        s.runnable(1);
        assert_eq!(s.start().map(|x| x.node), Some(1));
        s.finished(1, Ok(()));
        assert_eq!(s.commit_after(1), vec![0], "1's record follows 0's");
        assert!(!s.is_done());
        s.committed(0, 0.1);
        assert_eq!(s.commit_after(1), Vec::<usize>::new());
        s.committed(1, 0.1);
        assert_eq!(s.take_settled(), vec![0, 1]);
        assert_eq!(s.next_ready(), Some(2));
        s.cached(2, vec![], true);
        assert!(s.is_done());
        let o = s.into_outcomes();
        assert_eq!(o[&0], Outcome::Ran { seconds: 0.1 });
        assert_eq!(
            o[&2],
            Outcome::Cached {
                restored: vec![],
                cut_off: true
            }
        );
    }

    #[test]
    fn slots_bound_what_starts_and_are_given_back() {
        let mut t = graph(3, &[]);
        t[0].cpus = 2;
        t[1].gpus = 1;
        t[2].gpus = 1;
        let mut s = Schedule::new(t, &all(3), 2, 1, 0);
        for _ in 0..3 {
            let i = s.next_ready().unwrap();
            s.runnable(i);
        }
        assert_eq!(
            s.start(),
            Some(Start {
                node: 0,
                gpus: vec![]
            })
        );
        assert_eq!(s.start(), None, "0 holds both slots");
        s.finished(0, Ok(()));
        assert_eq!(
            s.start(),
            Some(Start {
                node: 1,
                gpus: vec![0]
            })
        );
        assert_eq!(s.start(), None, "one GPU, held by 1");
        s.finished(1, Err(Outcome::Interrupted));
        assert_eq!(
            s.start(),
            Some(Start {
                node: 2,
                gpus: vec![0]
            })
        );
    }

    #[test]
    fn slurm_nodes_take_no_local_slot_but_count_against_max_jobs() {
        let mut t = graph(3, &[]);
        t[0].remote = true;
        t[1].remote = true;
        let mut s = Schedule::new(t, &all(3), 1, 0, 1);
        for _ in 0..3 {
            let i = s.next_ready().unwrap();
            s.runnable(i);
        }
        assert_eq!(s.start().map(|x| x.node), Some(0));
        assert_eq!(s.start().map(|x| x.node), Some(2), "1 waits: max_jobs 1");
        assert_eq!(s.start(), None);
        s.finished(0, Ok(()));
        assert_eq!(s.start().map(|x| x.node), Some(1));
    }

    #[test]
    fn a_failure_skips_what_has_not_started_and_nothing_else() {
        // 0 → 1 → 2, and 3 independent.
        let mut s = Schedule::new(graph(4, &[(0, 1), (1, 2)]), &all(4), 2, 0, 0);
        assert_eq!(s.next_ready(), Some(0));
        s.runnable(0);
        assert_eq!(s.next_ready(), Some(3));
        s.runnable(3);
        s.start();
        s.start();
        s.finished(
            0,
            Err(Outcome::Failed {
                error: "boom".into(),
                log: None,
            }),
        );
        s.finished(3, Ok(()));
        s.committed(3, 1.0);
        assert!(s.is_done());
        let o = s.into_outcomes();
        assert!(matches!(o[&0], Outcome::Failed { .. }));
        for d in [1, 2] {
            assert_eq!(
                o[&d],
                Outcome::Skipped {
                    reason: Reason::UpstreamFailed { node: "n0".into() }
                }
            );
        }
        assert_eq!(o[&3], Outcome::Ran { seconds: 1.0 });
    }

    #[test]
    fn a_failed_commit_fails_the_node_and_skips_its_waiting_downstream() {
        let mut s = Schedule::new(graph(3, &[(0, 1), (1, 2)]), &all(3), 1, 0, 0);
        s.next_ready();
        s.runnable(0);
        s.start();
        s.finished(0, Ok(()));
        assert_eq!(s.next_ready(), Some(1));
        s.runnable(1);
        s.commit_failed(0, "disk full".into());
        // 1 was runnable, not started: skipped, and so is 2.
        assert_eq!(s.start(), None);
        assert!(s.is_done());
        let o = s.into_outcomes();
        assert!(matches!(o[&1], Outcome::Skipped { .. }));
        assert!(matches!(o[&2], Outcome::Skipped { .. }));
    }

    #[test]
    fn a_diamond_releases_its_join_once_both_sides_settled() {
        // 0 → {1, 2} → 3
        let mut s = Schedule::new(
            graph(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]),
            &all(4),
            2,
            0,
            0,
        );
        s.next_ready();
        s.cached(0, vec![], false);
        assert_eq!(s.next_ready(), Some(1));
        assert_eq!(s.next_ready(), Some(2));
        s.cached(1, vec![], false);
        assert_eq!(s.next_ready(), None, "3 waits for 2");
        s.runnable(2);
        s.start();
        s.finished(2, Ok(()));
        assert_eq!(s.next_ready(), Some(3));
        assert_eq!(s.next_ready(), None, "released once");
    }

    #[test]
    fn nodes_outside_the_run_are_neither_waited_for_nor_released() {
        // 0 → 1 → 2 with only 1 and 2 in the run (`--only`).
        let mut s = Schedule::new(graph(3, &[(0, 1), (1, 2)]), &[1, 2], 1, 0, 0);
        assert_eq!(s.next_ready(), Some(1));
        s.cached(1, vec![], false);
        assert_eq!(s.next_ready(), Some(2));
        s.cached(2, vec![], false);
        assert!(s.is_done());
        let o = s.into_outcomes();
        assert!(!o.contains_key(&0));
    }

    #[test]
    fn cancel_interrupts_what_waits_and_lets_running_nodes_end() {
        let mut s = Schedule::new(graph(3, &[(0, 2)]), &all(3), 1, 0, 0);
        s.next_ready();
        s.runnable(0);
        s.next_ready();
        s.runnable(1);
        s.start();
        s.cancel();
        assert_eq!(s.start(), None);
        assert!(!s.is_done(), "0 still runs");
        s.finished(0, Err(Outcome::Interrupted));
        assert!(s.is_done());
        let o = s.into_outcomes();
        assert_eq!(o[&0], Outcome::Interrupted);
        assert_eq!(o[&1], Outcome::Interrupted);
        assert!(matches!(
            o[&2],
            Outcome::Skipped { .. } | Outcome::Interrupted
        ));
    }
}
