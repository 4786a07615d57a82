//! What the ML kinds share: a node's device and its key component, and reading dataset
//! splits.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::tensor::Device;
use dagrun_engine::stage::{Place, StageContext, StageError};

use crate::{
    data::{read_preferences, PreferenceFormat, PreferencePair},
    ml::{
        device::{cuda_device_count, TCH_BUILT},
        inference::sampling::SamplingPlace,
        DeviceSpec,
    },
};

/// The burn device of a node: its `device` string, with `auto`/`cuda` pinned to the GPU
/// the scheduler assigned when it assigned one.
pub fn node_device(ctx: &StageContext) -> Result<Device, StageError> {
    let spec: DeviceSpec = ctx.device.parse()?;
    let spec = match (concrete_at(spec, ctx.place), ctx.gpus.first()) {
        (DeviceSpec::Cuda(_), Some(&g)) => DeviceSpec::Cuda(g as usize),
        (s, _) => s,
    };
    ctx.log(format!("device: {spec}"));
    Ok(spec.resolve()?)
}

/// The device a node's `device` string means where it runs.
fn concrete_at(spec: DeviceSpec, place: Place) -> DeviceSpec {
    match (spec, place) {
        (DeviceSpec::Auto, Place::Cluster { gpus }) if gpus > 0 => DeviceSpec::Cuda(0),
        (DeviceSpec::Auto, Place::Cluster { .. }) => DeviceSpec::Cpu,
        (s, _) => s.concrete(),
    }
}

/// The key component of an ML node's environment: the backend its device resolves to (and,
/// on libtorch, which operations run as fused kernels; and whether generation samples on
/// the device).
/// Fails (before any work) when the device cannot be had in this build or machine.
///
/// For a Slurm job (`Place::Cluster`) nothing of this machine is probed: `auto` means
/// `cuda` when the job asks for GPUs and `cpu` otherwise, on the coordinator (for the
/// key) and in the job (for the run) alike.
pub fn backend_env(device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
    let spec: DeviceSpec = device
        .parse()
        .map_err(|e: crate::ml::MlError| e.to_string())?;
    let concrete = concrete_at(spec, place);
    let backend = match concrete {
        DeviceSpec::Cpu => "flex-cpu",
        DeviceSpec::LibtorchCpu => "libtorch-cpu",
        DeviceSpec::Cuda(_) => "libtorch-cuda",
        DeviceSpec::Auto => unreachable!("concrete() resolves auto"),
    };
    if matches!(concrete, DeviceSpec::LibtorchCpu | DeviceSpec::Cuda(_)) && !TCH_BUILT {
        return Err(format!(
            "device `{device}` needs libtorch, but this dagrun was built without the `tch` feature (rebuild with `--features tch`; see scripts/torch-venv.sh)"
        ));
    }
    if let (DeviceSpec::Cuda(n), Place::Here) = (concrete, place) {
        let have = cuda_device_count();
        if n >= have {
            return Err(format!(
                "device `{device}` asked for, but this machine has {have} CUDA device(s)"
            ));
        }
    }
    #[cfg_attr(not(feature = "tch"), allow(unused_mut))]
    let mut env: BTreeMap<String, String> = [("backend".to_string(), backend.to_string())].into();
    #[cfg(feature = "tch")]
    if backend.starts_with("libtorch") {
        // The operations in use run as libtorch's fused kernels rather than burn's composed
        // ones (the same method, other float rounding; ml/ops), and `adam` updates all
        // parameters at once with in-place arithmetic where the per-tensor update falls back
        // to tensor operations for a parameter whose storage is shared (ml/training/optim): a change
        // to the list makes libtorch results stale, and only those.
        env.insert(
            "fused_ops".into(),
            crate::ml::ops::FusedSet::from_env()?.key(),
        );
    }
    // Generation's tokens chosen on the device (the default on CUDA, `DAGRUN_SAMPLING`
    // otherwise; ml/sampling.rs): the host's tokens up to the rounding of a sum of f64
    // probabilities taken in another order, recorded so that the key says how a result was
    // made. Absent for the host, so that `cpu` and `libtorch-cpu` keys are unchanged.
    let sampling = SamplingPlace::for_spec(concrete)?;
    if sampling == SamplingPlace::Device {
        env.insert("sampling".into(), sampling.name().into());
    }
    Ok(env)
}

/// The file of one split in a dataset folder (`train`, `eval`, `test`): Parquet if
/// present, else JSON Lines; or the path itself when it is a file.
pub fn split_file(dir: &Path, split: &str) -> Result<PathBuf, StageError> {
    if dir.is_file() {
        return Ok(dir.to_path_buf());
    }
    for ext in ["parquet", "jsonl"] {
        let p = dir.join(format!("{split}.{ext}"));
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!(
        "`{}` has no `{split}.parquet` or `{split}.jsonl`",
        dir.display()
    )
    .into())
}

/// Reads the pairs of one split.
pub fn read_split(dir: &Path, split: &str) -> Result<Vec<PreferencePair>, StageError> {
    Ok(read_preferences(
        &split_file(dir, split)?,
        PreferenceFormat::Auto,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_backend_and_on_libtorch_its_fused_ops() {
        let cpu = backend_env("cpu", Place::Here).unwrap();
        assert_eq!(
            cpu,
            [("backend".to_string(), "flex-cpu".to_string())].into()
        );
        let lt = backend_env("libtorch-cpu", Place::Here);
        if TCH_BUILT {
            let lt = lt.unwrap();
            assert_eq!(lt["backend"], "libtorch-cpu");
            // Tests run without DAGRUN_FUSED_OPS: all of them.
            assert_eq!(
                lt["fused_ops"],
                "layer_norm gelu_tanh log_softmax softmax rms_norm lm_head linear attention adam"
            );
            assert!(
                !lt.contains_key("sampling"),
                "libtorch-cpu samples on the host"
            );
            // A Slurm job with GPUs: `auto` is CUDA there, which samples on the device.
            let job = backend_env("auto", Place::Cluster { gpus: 1 }).unwrap();
            assert_eq!(job["backend"], "libtorch-cuda");
            assert_eq!(job["sampling"], "device");
        } else {
            assert!(lt.unwrap_err().contains("--features tch"));
        }
    }
}
