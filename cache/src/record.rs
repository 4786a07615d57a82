use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Artifact, Hash};

/// Scalar and series metrics a node reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scalars: BTreeMap<String, f64>,
    /// Series of `(step, value)` points, e.g. a loss curve.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Metrics {
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.series.is_empty()
    }
}

/// When a node ran and how long it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub seconds: f64,
}

/// The committed result of one execution of a node, stored under the node's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: Hash,
    /// The node id, e.g. `train[seed=1]`.
    pub node: String,
    /// The stage kind and its implementation version.
    pub kind: String,
    pub kind_version: u32,
    /// Everything the key was computed from, as JSON; `dagrun why` diffs these.
    pub components: serde_json::Value,
    /// Outputs by name.
    pub outputs: BTreeMap<String, Artifact>,
    #[serde(default)]
    pub metrics: Metrics,
    pub timing: Timing,
    /// The captured log (stdout + stderr, or the stage's own log), as an object.
    pub log: Option<Hash>,
    /// The dagrun version that wrote this record.
    pub engine_version: String,
    /// The pipeline file the node came from, relative to the workspace.
    pub pipeline: String,
}

impl Record {
    /// Every object the record refers to.
    pub fn objects(&self) -> Vec<Hash> {
        let mut v: Vec<Hash> = self.outputs.values().flat_map(|a| a.objects()).collect();
        v.extend(self.log);
        v
    }
}

/// The last committed key of a node id: what `why` compares against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latest {
    pub key: Hash,
    pub pipeline: String,
    pub at: DateTime<Utc>,
}

/// One invocation of `dagrun run`, for `dagrun log`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub pipeline: String,
    pub command: String,
    pub executed: Vec<String>,
    pub cached: usize,
    pub cut_off: usize,
    pub failed: Vec<String>,
    /// `success`, `failed` or `interrupted`.
    pub outcome: String,
}

/// The part of a record the planner needs: decoding only this is much cheaper than the
/// whole record (key components, metrics, log) on a no-op run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RecordHead {
    pub key: Hash,
    pub outputs: BTreeMap<String, Artifact>,
    pub timing: Timing,
}
