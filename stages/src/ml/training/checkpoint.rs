//! Training checkpoints: model weights, optimizer moments, and a JSON of everything else
//! (step, schedule, RNG state, data order, losses), written so that a crash never leaves a
//! half-written checkpoint as the latest one.
//!
//! Layout of a checkpoint folder:
//! ```text
//! <dir>/step-000120/model.safetensors      weights (names chosen by the trainer)
//! <dir>/step-000120/optimizer.safetensors  Adam moments m.<path>, v.<path>
//! <dir>/step-000120/state.json             {"step", "optimizer_steps", "trainer": {...}}
//! <dir>/latest                             "step-000120" (replaced atomically, last)
//! ```
//! Older `step-*` folders are removed after `latest` moves on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::ml::error::{MlError, Result};
use crate::ml::models::weights::HostTensors;
use crate::ml::training::optim::Adam;

const LATEST: &str = "latest";
const MODEL: &str = "model.safetensors";
const OPTIM: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    format: String,
    step: usize,
    optimizer_steps: BTreeMap<String, u64>,
    trainer: serde_json::Value,
}

/// What [`load_latest`] returns.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Optimizer steps completed when it was written.
    pub step: usize,
    /// The model weights.
    pub weights: HostTensors,
    /// The trainer's own JSON state.
    pub trainer: serde_json::Value,
    /// Path of the checkpoint folder.
    pub path: PathBuf,
}

/// Write a checkpoint of `step` into `dir` and make it the latest.
pub fn save(
    dir: &Path,
    step: usize,
    weights: &HostTensors,
    optim: &Adam,
    trainer: serde_json::Value,
) -> Result<PathBuf> {
    let name = format!("step-{step:06}");
    let folder = dir.join(&name);
    std::fs::create_dir_all(&folder).map_err(|e| MlError::io(&folder, e))?;
    weights.write(&folder.join(MODEL))?;
    let (moments, optimizer_steps) = optim.state_tensors(&folder.join(OPTIM));
    moments.write(&folder.join(OPTIM))?;
    let state = StateFile {
        format: "dagrun-checkpoint-v1".into(),
        step,
        optimizer_steps,
        trainer,
    };
    let state_path = folder.join(STATE);
    let json = serde_json::to_vec_pretty(&state).expect("json");
    write_atomic(&state_path, &json)?;
    write_atomic(&dir.join(LATEST), name.as_bytes())?;
    // Older checkpoints are no longer needed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let n = entry.file_name().to_string_lossy().to_string();
            if n.starts_with("step-") && n != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(folder)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, bytes).map_err(|e| MlError::io(path, e))
}

/// The latest checkpoint in `dir`, restoring `optim`'s state onto `device`; `None` when there
/// is none.
pub fn load_latest(
    dir: &Path,
    optim: &mut Adam,
    device: &Device,
) -> Result<Option<LoadedCheckpoint>> {
    let latest = dir.join(LATEST);
    if !latest.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(|e| MlError::io(&latest, e))?;
    let folder = dir.join(name.trim());
    let state_path = folder.join(STATE);
    let text = std::fs::read(&state_path).map_err(|e| MlError::io(&state_path, e))?;
    let state: StateFile =
        serde_json::from_slice(&text).map_err(|e| MlError::json(&state_path, e))?;
    let weights = HostTensors::read(&folder.join(MODEL))?;
    let moments = HostTensors::read(&folder.join(OPTIM))?;
    optim.load_state(moments, &state.optimizer_steps, device)?;
    Ok(Some(LoadedCheckpoint {
        step: state.step,
        weights,
        trainer: state.trainer,
        path: folder,
    }))
}
