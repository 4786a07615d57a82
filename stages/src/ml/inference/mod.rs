//! Running a trained model: [`generate`] (KV-cache decoding), [`sampling`] (temperature,
//! top-k, top-p; on the host or as tensor operations on a CUDA device) and [`logprobs`]
//! (per-token log-probabilities, and the training path's vocabulary-major form).

pub mod generate;
pub mod logprobs;
pub mod sampling;
