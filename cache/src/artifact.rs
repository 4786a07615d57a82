use serde::{Deserialize, Serialize};

use crate::Hash;

/// What an artifact holds, so that stages pass typed values rather than ad-hoc paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactType {
    /// A plain file or folder (command stage outputs).
    #[default]
    File,
    /// Model weights in Hugging Face layout (config.json + model.safetensors + ...).
    Model,
    /// A dataset (JSONL or Parquet files).
    Dataset,
    /// JSON metrics.
    Metrics,
    /// Plots (PNG/SVG).
    Plot,
    /// A report (HTML + assets).
    Report,
}

impl ArtifactType {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactType::File => "file",
            ArtifactType::Model => "model",
            ArtifactType::Dataset => "dataset",
            ArtifactType::Metrics => "metrics",
            ArtifactType::Plot => "plot",
            ArtifactType::Report => "report",
        }
    }
}

/// One file of a directory artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// Path relative to the artifact's root, `/`-separated.
    pub path: String,
    pub hash: Hash,
    pub size: u64,
    /// Whether the executable bit was set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

/// The manifest of one output: a single file, or a directory tree of files.
///
/// `hash` identifies the content: for a file, the blake3 of its bytes; for a directory,
/// the blake3 of its sorted entry list (see [`Artifact::tree_hash`]). Two artifacts with
/// equal `hash` are byte-identical, which is what early cutoff relies on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    #[serde(rename = "type", default)]
    pub kind: ArtifactType,
    pub hash: Hash,
    pub size: u64,
    /// `None` for a single file; the entries for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<ArtifactEntry>>,
    /// Whether a single file had its executable bit set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

impl Artifact {
    pub fn is_dir(&self) -> bool {
        self.entries.is_some()
    }

    /// Every object this artifact's bytes live in.
    pub fn objects(&self) -> Vec<Hash> {
        match &self.entries {
            None => vec![self.hash],
            Some(entries) => entries.iter().map(|e| e.hash).collect(),
        }
    }

    /// The content hash of a directory: blake3 over its entries sorted by path.
    pub fn tree_hash(entries: &[ArtifactEntry]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"dagrun-tree-v1\n");
        for e in entries {
            h.update(e.path.as_bytes());
            h.update(b"\0");
            h.update(e.hash.0.as_slice());
            h.update(&e.size.to_le_bytes());
            h.update(&[e.exec as u8]);
        }
        h.finalize().into()
    }
}
