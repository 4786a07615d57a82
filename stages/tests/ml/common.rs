//! Helpers shared by the ML integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dagrun_stages::ml::DeviceSpec;

/// `tests/fixtures` at the repository root, or `DAGRUN_FIXTURES` when set (a test executable
/// run on another machine, see scripts/build-for-torch.sh).
pub fn fixtures() -> PathBuf {
    if let Some(dir) = std::env::var_os("DAGRUN_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// The tiny Hugging Face GPT-2 written by scripts/make_hf_fixtures.py.
pub fn tiny_hf_dir() -> PathBuf {
    fixtures().join("gpt2-tiny")
}

/// The reference outputs transformers computed on it.
pub fn reference() -> serde_json::Value {
    let path = fixtures().join("gpt2-tiny-reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference json")).unwrap()
}

/// The CPU devices every backend-sensitive test runs on: `cpu`, plus `libtorch-cpu` in a
/// build with the `tch` feature.
pub fn cpu_devices() -> Vec<DeviceSpec> {
    let mut v = vec![DeviceSpec::Cpu];
    if cfg!(feature = "tch") {
        v.push(DeviceSpec::LibtorchCpu);
    }
    v
}

/// The CUDA device of the GPU cases: `Some(cuda:0)` when `DAGRUN_TEST_CUDA=1`, else `None`
/// after printing that the case is skipped. Asking for CUDA in a build without `tch` fails.
pub fn cuda_device() -> Option<DeviceSpec> {
    if std::env::var("DAGRUN_TEST_CUDA").as_deref() != Ok("1") {
        eprintln!("SKIPPED: the CUDA case (set DAGRUN_TEST_CUDA=1 on a GPU machine, tch build)");
        return None;
    }
    if !cfg!(feature = "tch") {
        panic!("DAGRUN_TEST_CUDA=1 needs a build with --features tch");
    }
    Some(DeviceSpec::Cuda(0))
}

/// Python with torch and transformers importable: `DAGRUN_PYTHON` or `python3`; `None` (after
/// printing why) when unavailable.
pub fn python_with_transformers() -> Option<String> {
    let py = std::env::var("DAGRUN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = std::process::Command::new(&py)
        .args(["-c", "import transformers, torch, tokenizers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(py)
    } else {
        eprintln!(
            "SKIPPED: `{py}` cannot import transformers + torch + tokenizers \
             (set DAGRUN_PYTHON, e.g. to the venv of scripts/torch-venv.sh)"
        );
        None
    }
}

/// Max absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
