//! What the ML kinds share: devices, reading pairs, scoring texts with a reward model.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::tensor::Device;
use dagrun_engine::stage::{Place, StageContext, StageError};

use crate::{
    data::{read_preferences, PreferenceFormat, PreferencePair},
    ml::chat::ChatTemplate,
    ml::tokenizer::TextTokenizer,
    ml::{
        backbone::LanguageModel,
        device::{cuda_device_count, TCH_BUILT},
        reward::last_token_features,
        sampling::SamplingPlace,
        weights::to_f32_vec,
        DeviceSpec, Padding, TokenBatch,
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
        // ones (the same method, other float rounding; ml/fused.rs), and `adam` updates all
        // parameters at once with in-place arithmetic where the per-tensor update falls back
        // to tensor operations for a parameter whose storage is shared (ml/optim): a change
        // to the list makes libtorch results stale, and only those.
        let ops = crate::ml::fused::enabled()?;
        let ops = if ops.is_empty() {
            "none".to_string()
        } else {
            ops.join(" ")
        };
        env.insert("fused_ops".into(), ops);
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

/// A prompt and a response as one text, as dagrun's GPT-2 reward models read them (the
/// `plain` chat template): a space between them unless either side already has whitespace
/// at the join.
pub fn join_text(prompt: &str, response: &str) -> String {
    crate::ml::chat::plain_join(prompt, response)
}

/// The chat template a model reads prompt/response pairs with: the stage's
/// `chat_template` param, else the one its folder implies ([`ChatTemplate::for_model`]).
pub fn model_template(
    dir: &Path,
    chosen: Option<ChatTemplate>,
    tok: &TextTokenizer,
) -> Result<ChatTemplate, StageError> {
    Ok(ChatTemplate::for_model(dir, tok, chosen)?)
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

/// What a reward model reads of a sampled sequence (prompt ⊕ response): the sequence
/// without the stop token that closed the response. Generation cuts a response after its
/// first stop token and keeps it (the policy's log-probs and the KL include it), but reward
/// models are trained on preference text, which has none: scored with it, the reward would
/// be read at a token the model never saw in that place (TRL, where GPT-2's pad is its
/// EOS, reads the reward at the token before it too). `prompt_len` protects the prompt.
pub fn without_stop<'a>(seq: &'a [u32], prompt_len: usize, stop_ids: &[u32]) -> &'a [u32] {
    match seq.split_last() {
        Some((last, rest)) if seq.len() > prompt_len && stop_ids.contains(last) => rest,
        _ => seq,
    }
}

/// Token ids of a text, keeping its last `max_len` tokens (the reward is read at the end).
pub fn encode_tail(
    tok: &TextTokenizer,
    text: &str,
    max_len: usize,
) -> Result<Vec<u32>, StageError> {
    let mut ids = tok.encode(text)?;
    if ids.is_empty() {
        ids.push(tok.eos_id().unwrap_or(0));
    }
    if ids.len() > max_len {
        ids.drain(..ids.len() - max_len);
    }
    Ok(ids)
}

/// Last-token features `[n × n_embd]` (row-major, on the host) of texts, by batches.
pub fn features(
    model: &impl LanguageModel,
    tok: &TextTokenizer,
    texts: &[String],
    batch: usize,
    max_len: usize,
) -> Result<Vec<f32>, StageError> {
    let model = model.valid();
    let mut out = Vec::with_capacity(texts.len() * model.hidden_size());
    for chunk in texts.chunks(batch.max(1)) {
        let rows = chunk
            .iter()
            .map(|t| encode_tail(tok, t, max_len))
            .collect::<Result<Vec<_>, _>>()?;
        let b = TokenBatch::from_rows(&rows, tok.pad_id(), Padding::Right)?;
        out.extend(to_f32_vec(last_token_features(&model, &b)?));
    }
    Ok(out)
}

/// Summary statistics of a sample (for Figure 6 and the judge's distributions).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    pub n: usize,
    pub mean: f64,
    pub variance: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `[(level, value)]` at 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95.
    pub quantiles: Vec<(f64, f64)>,
    pub histogram_edges: Vec<f64>,
    pub histogram_counts: Vec<u64>,
}

impl Distribution {
    pub fn of(values: &[f64], bins: usize) -> Distribution {
        let n = values.len();
        let mut sorted: Vec<f64> = values.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mean = if n > 0 {
            values.iter().sum::<f64>() / n as f64
        } else {
            f64::NAN
        };
        let variance = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let q = |l: f64| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            let pos = l * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        };
        let (min, max) = (
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        let bins = bins.max(1);
        let width = if max > min {
            (max - min) / bins as f64
        } else {
            1.0
        };
        let edges: Vec<f64> = (0..=bins).map(|i| min + width * i as f64).collect();
        let mut counts = vec![0u64; bins];
        for v in values {
            let i = (((v - min) / width) as usize).min(bins - 1);
            counts[i] += 1;
        }
        Distribution {
            n,
            mean,
            variance,
            std: variance.sqrt(),
            min,
            max,
            quantiles: [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
                .iter()
                .map(|&l| (l, q(l)))
                .collect(),
            histogram_edges: edges,
            histogram_counts: counts,
        }
    }

    pub fn median(&self) -> f64 {
        self.quantiles
            .iter()
            .find(|(l, _)| *l == 0.5)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reward_model_reads_a_response_without_its_closing_stop_token() {
        let stop = [50256, 7];
        // prompt [1, 2], response [3, 4, stop]
        assert_eq!(without_stop(&[1, 2, 3, 4, 50256], 2, &stop), &[1, 2, 3, 4]);
        assert_eq!(without_stop(&[1, 2, 3, 7], 2, &stop), &[1, 2, 3]);
        // a response cut by the length limit keeps its last token
        assert_eq!(without_stop(&[1, 2, 3, 4], 2, &stop), &[1, 2, 3, 4]);
        // an empty response: the prompt is never cut, even when it ends in a stop id
        assert_eq!(without_stop(&[1, 7], 2, &stop), &[1, 7]);
        // only the last token goes
        assert_eq!(without_stop(&[1, 7, 7], 1, &stop), &[1, 7]);
        assert_eq!(without_stop(&[], 0, &stop), &[] as &[u32]);
    }

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
