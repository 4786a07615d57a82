//! Pipelines through the real engine, for the stages' integration tests (`mod
//! engine_support;` in data.rs, judge.rs, reward_bench.rs): run a YAML in a folder, read a
//! node's output back from the cache.
#![allow(dead_code)] // each test crate uses a part

use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
};

use dagrun_cache::{Cache, Metrics, OpenOptions};
use dagrun_engine::{
    plan::Selection,
    run::{run, Observer, Outcome, RunOptions},
    stage::{Progress, ProgressSink},
    Pipeline,
};
use dagrun_stages::registry;

/// An observer that shows nothing.
pub struct Quiet;
impl ProgressSink for Quiet {
    fn progress(&self, _node: &str, _p: &Progress) {}
}
impl Observer for Quiet {
    fn started(&self, _node: &str) {}
    fn finished(&self, _node: &str, _outcome: &Outcome) {}
}

/// Runs `yaml` in `dir`; returns each node's outcome by id.
pub fn run_pipeline(dir: &Path, yaml: &str) -> Vec<(String, Outcome)> {
    let file = dir.join("p.yaml");
    std::fs::write(&file, yaml).unwrap();
    let p = Pipeline::load(&file, dir, &registry()).unwrap_or_else(|e| panic!("{e}"));
    let cache = open(dir);
    let report = run(
        &p,
        &cache,
        &RunOptions {
            jobs: 1,
            gpus: 0,
            selection: Selection::default(),
            command: "test".into(),
            ..Default::default()
        },
        Arc::new(Quiet),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    report
        .outcomes
        .into_iter()
        .map(|(i, o)| (p.nodes[i].id.clone(), o))
        .collect()
}

/// The cache of a test workspace.
pub fn open(dir: &Path) -> Cache {
    Cache::open(
        &dir.join(".dagrun"),
        &OpenOptions {
            wait: true,
            holder: "test".into(),
        },
        &|_| {},
    )
    .unwrap()
}

/// A node's output (materialised from the cache) and its metrics.
pub fn output(dir: &Path, node: &str, name: &str) -> (PathBuf, Metrics) {
    let cache = open(dir);
    let latest = cache.latest(node).unwrap().expect("node ran");
    let rec = cache.record(&latest.key).unwrap().expect("record");
    let path = cache.materialize(&rec.outputs[name]).unwrap();
    (path, rec.metrics)
}

pub fn assert_ran(outcomes: &[(String, Outcome)]) {
    for (id, o) in outcomes {
        assert!(matches!(o, Outcome::Ran { .. }), "{id}: {o:?}");
    }
}
