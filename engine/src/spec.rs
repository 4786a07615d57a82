//! The pipeline file as written: serde types for `pipeline.yaml`.
//!
//! ```yaml
//! params:            # free-form values, referenced as ${params.NAME}
//!   greeting: hello
//! defaults:          # per-stage fields applied to every stage that does not set them
//!   device: cpu
//! fingerprint:
//!   env: [CUDA_VERSION]   # environment variables whose values are part of every key
//! stages:
//!   NAME:
//!     kind: command          # or a native kind: see `dagrun kinds`
//!     desc: one line for humans
//!     needs: [other, "sweep[seed=1]"]
//!     params: {...}          # the kind's parameters
//!     matrix: {seed: [0, 1, 2]}
//!     resources: {cpus: 1, gpus: 0}
//!     device: auto
//!     cmd: ...               # command kind
//!     deps: [file, dir/]     # files and folders read from the workspace
//!     outs: [file]           # files and folders written into the workspace
//! ```

use indexmap::IndexMap;
use serde::Deserialize;

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub fingerprint: FingerprintSpec,
    pub stages: IndexMap<String, StageSpec>,
}

/// Fields every stage inherits unless it sets them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub device: Option<String>,
    pub resources: Option<Resources>,
}

/// What of the environment goes into every node's key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintSpec {
    /// Environment variables whose values are key components.
    #[serde(default)]
    pub env: Vec<String>,
}

/// One stage as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub kind: String,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub params: IndexMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub matrix: Option<serde_yaml::Value>,
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default)]
    pub outs: Vec<String>,
}

/// What a node holds while it runs; the scheduler never oversubscribes these.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Job slots (`--jobs`) the node takes.
    #[serde(default = "one")]
    pub cpus: u32,
    /// GPUs the node takes; the scheduler hands it specific GPU indices.
    #[serde(default)]
    pub gpus: u32,
}

fn one() -> u32 {
    1
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpus: 1, gpus: 0 }
    }
}
