//! The error type of the ML core.

use std::path::PathBuf;

/// Everything that can go wrong in `dagrun_stages::ml`, with the values that explain it.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// A device string that is not one of `auto`, `cpu`, `libtorch-cpu`, `cuda`, `cuda:N`.
    #[error("unknown device `{0}` (expected `auto`, `cpu`, `libtorch-cpu`, `cuda` or `cuda:N`)")]
    UnknownDevice(String),
    /// A libtorch device was asked of a binary built without the `tch` feature.
    #[error(
        "device `{0}` needs libtorch, but this dagrun was built without the `tch` feature \
         (rebuild with `--features tch`; scripts/torch-venv.sh provides libtorch)"
    )]
    TchNotBuilt(String),
    /// CUDA was asked for and libtorch sees no (or not that many) GPUs.
    #[error("device `{requested}` asked for, but libtorch sees {available} CUDA device(s)")]
    CudaUnavailable {
        /// The device string as given.
        requested: String,
        /// How many CUDA devices libtorch reports.
        available: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file did not parse or did not have the expected fields.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A safetensors file did not parse.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// What the safetensors crate reported.
        message: String,
    },
    /// A weight the model needs is absent from the weights file.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name looked for (without any `transformer.` prefix).
        name: String,
    },
    /// A weight has the wrong shape for the configuration.
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape found in the file.
        actual: Vec<usize>,
    },
    /// A weight has a dtype dagrun cannot read.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A weights file holds tensors that the model does not use.
    #[error("{path}: unexpected tensor(s) {names:?} (not part of a GPT-2 of this configuration)")]
    UnexpectedTensors {
        /// The weights file.
        path: PathBuf,
        /// The names left over.
        names: Vec<String>,
    },
    /// A model configuration that dagrun's GPT-2 does not implement or that is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The tokenizers crate failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A training's loss or parameters stopped being finite (it diverged).
    #[error(
        "the training diverged at step {step}: {what}; nothing is kept (a smaller learning \
         rate, or gradient clipping with `max_grad_norm`, usually helps)"
    )]
    NonFinite {
        /// The step (counted from 1) whose numbers were not finite.
        step: usize,
        /// What was not finite.
        what: String,
    },
    /// The work was asked to stop (Ctrl-C) and stopped between two steps.
    #[error("interrupted")]
    Cancelled,
    /// Invalid arguments to a function of this module (sampling options, shapes, ...).
    #[error("{0}")]
    Invalid(String),
}

impl MlError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MlError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        MlError::Json {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the ML core.
pub type Result<T, E = MlError> = std::result::Result<T, E>;
