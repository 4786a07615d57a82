//! Benchmarks of the ML stages' real code paths (`dagrun bench ...`): one PPO step of the
//! library the `ppo` kind runs ([`crate::rl::ppo::ppo_step`]) and reward-model scoring
//! throughput.
//!
//! Models are GPT-2 of random init (`small`: 124M, or `tiny` for smoke tests); the reward
//! model is a GPT-2 backbone with K linear heads, as `head_ensemble` makes. Prompts are
//! deterministic token ids (row `i`: length `min + i mod (max − min + 1)`, token `j`:
//! `(7919·i + 104729·j + 13) mod (vocab − 1)`), the same ones `scripts/bench_ppo_torch.py`
//! builds, so both sides see the same shapes. Every timed section ends with its results on
//! the host (or a `Device::sync`), so asynchronous CUDA work is counted where it happens.
//!
//! Output: one JSON object per benchmark (see [`bench_ppo_step`] and [`bench_rm_score`]).

use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    kinds::ppo::PpoParams,
    ml::{
        inference::{generate::GenerateConfig, sampling::SamplingConfig},
        models::{heads::LinearHeads, reward_model::RewardModel, weights::to_f32_vec},
        reward::{SampleScorer, Scores},
        rng::SeededRng,
        DeviceSpec, Gpt2, Gpt2Config, Padding, TokenBatch,
    },
    rl::{
        policy::PolicyValue,
        ppo::{ppo_step, PpoConfig},
        rollout::PpoModels,
        timing::StepTimes,
    },
};

/// The error type of the benchmarks (any failure is reported as text).
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `small` (GPT-2 124M) or `tiny` (2 layers, width 32, vocabulary 1000).
pub fn model_config(name: &str) -> BenchResult<Gpt2Config> {
    match name {
        "small" => Ok(Gpt2Config::small()),
        "tiny" => Ok(Gpt2Config::tiny(1000)),
        other => Err(format!("unknown model `{other}` (small, tiny)").into()),
    }
}

/// The benchmark prompts: `n` rows starting at row `first` (see the module docs).
pub fn prompt_ids(
    first: usize,
    n: usize,
    min_len: usize,
    max_len: usize,
    vocab: usize,
) -> Vec<Vec<u32>> {
    (first..first + n)
        .map(|i| {
            let len = min_len + i % (max_len - min_len + 1);
            (0..len)
                .map(|j| ((7919 * i + 104_729 * j + 13) % (vocab - 1)) as u32)
                .collect()
        })
        .collect()
}

/// Settings of `dagrun bench ppo-step`.
#[derive(Debug, Clone, Serialize)]
pub struct PpoBench {
    pub model: String,
    pub batch: usize,
    pub mini_batch: usize,
    pub ppo_epochs: usize,
    pub min_prompt: usize,
    pub max_prompt: usize,
    pub new_tokens: usize,
    pub heads: usize,
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
    /// Split `update` into loss forward, backward and Adam (a device wait after each).
    pub profile: bool,
}

/// Median of a non-empty list.
fn median(v: Vec<f64>) -> f64 {
    crate::stats::quantile(&v, 0.5)
}

/// The benchmark's reward model reads the policy's token ids as they are (policy and reward
/// model share the vocabulary): the stage decodes and re-encodes text there
/// ([`crate::ml::reward::ReadSamples`]), a host-side cost these random-init models, which come
/// without a tokenizer, cannot have. The last `max_len` ids, right-padded with `pad`.
struct SameVocabulary {
    model: RewardModel,
    max_len: usize,
    pad: u32,
}

impl SampleScorer for SameVocabulary {
    fn num_heads(&self) -> usize {
        self.model.heads.num_heads()
    }

    fn score_samples(
        &self,
        seqs: &[Vec<u32>],
        _prompt_lens: &[usize],
        _stop_ids: &[u32],
    ) -> crate::ml::Result<Scores> {
        let rows: Vec<Vec<u32>> = seqs
            .iter()
            .map(|s| s[s.len().saturating_sub(self.max_len)..].to_vec())
            .collect();
        let batch = TokenBatch::from_rows(&rows, self.pad, Padding::Right)?;
        Ok(Scores {
            heads: self.num_heads(),
            values: to_f32_vec(self.model.forward(&batch)?),
        })
    }
}

fn phases(t: &StepTimes) -> Value {
    json!({
        "generation": t.generation, "generation_model": t.generation_model,
        "generation_to_host": t.generation_to_host,
        "generation_sampling": t.generation_sampling,
        "scoring": t.scoring, "forward": t.forward,
        "update": t.update,
        "update_forward": t.update_forward, "update_backward": t.update_backward,
        "update_optimizer": t.update_optimizer,
        "total": t.total(),
    })
}

fn device_info(spec: DeviceSpec) -> BenchResult<Value> {
    let concrete = spec.concrete();
    // libtorch's fused kernels in use (ml/ops; `DAGRUN_FUSED_OPS` chooses).
    #[cfg(feature = "tch")]
    let fused = match concrete {
        DeviceSpec::Cpu => Value::Null,
        _ => json!(crate::ml::ops::FusedSet::from_env()?
            .ops()
            .map(|op| op.name())
            .collect::<Vec<_>>()),
    };
    #[cfg(not(feature = "tch"))]
    let fused = Value::Null;
    // Where generation picks its tokens (ml/sampling.rs; `DAGRUN_SAMPLING` chooses).
    let sampling = crate::ml::inference::sampling::SamplingPlace::for_spec(concrete)?;
    Ok(json!({
        "device": concrete.to_string(),
        "tch_built": crate::ml::device::TCH_BUILT,
        "cuda_devices": crate::ml::device::cuda_device_count(),
        "fused_ops": fused,
        "sampling": sampling.name(),
    }))
}

/// One PPO step of the library the `ppo` kind runs ([`ppo_step`]), `warmup` untimed then `steps`
/// timed, on models of random init. Returns `{"impl": "dagrun", "what": "ppo-step", ...,
/// "steps": [{generation, scoring, forward, update, total}], "median": {...}}` (seconds).
/// `update` includes waiting for the device to finish the last optimizer step.
pub fn bench_ppo_step(spec: DeviceSpec, b: &PpoBench) -> BenchResult<Value> {
    if b.min_prompt == 0 || b.max_prompt < b.min_prompt {
        return Err("prompt lengths: need 1 ≤ min ≤ max".into());
    }
    let device = spec.resolve()?;
    let device_json = device_info(spec)?;
    let ad = device.clone().autodiff();
    let config = model_config(&b.model)?;
    let vocab = config.vocab_size;
    let eos = (vocab - 1) as u32;
    let t_setup = Instant::now();
    let p: PpoParams = serde_json::from_value(json!({
        "policy": "", "reward_model": "", "prompts": "",
        "batch_size": b.batch, "mini_batch_size": b.mini_batch, "ppo_epochs": b.ppo_epochs,
        "max_new_tokens": b.new_tokens, "steps": b.warmup + b.steps, "seed": b.seed,
    }))?;
    let n_embd = config.n_embd;
    let seeds: Vec<u64> = (0..b.heads as u64).map(|h| b.seed + 100 + h).collect();
    let rm = RewardModel::new(
        Gpt2::init(&config, b.seed + 1, &device)?,
        LinearHeads::init(n_embd, &seeds, &device)?,
    )?;
    let models = PpoModels {
        device: device.clone(),
        reference: Gpt2::init(&config, b.seed, &device)?.into(),
        reward: Box::new(SameVocabulary {
            model: rm,
            max_len: p.rm_max_len,
            pad: eos,
        }),
        pad: eos,
        generate: GenerateConfig {
            max_new_tokens: b.new_tokens,
            sampling: SamplingConfig::default(),
            stop_ids: vec![eos],
            pad_id: eos,
        },
        profile: b.profile,
    };
    let cfg = p.config();
    let mut pv = PolicyValue::new(
        Gpt2::init(&config, b.seed, &ad)?,
        cfg.value_head_seed(),
        &ad,
    )?;
    let mut adam = PpoConfig::optimizer();
    let mut rng = SeededRng::new(b.seed);
    device.sync()?;
    let setup = t_setup.elapsed().as_secs_f64();
    let mut timed = Vec::new();
    let mut warm = Vec::new();
    let mut stats = Vec::new();
    for step in 0..b.warmup + b.steps {
        let prompts = prompt_ids(step * b.batch, b.batch, b.min_prompt, b.max_prompt, vocab);
        let (next, st, mut times) =
            ppo_step(&cfg, &models, pv, &mut adam, &mut rng, &prompts, step)?;
        pv = next;
        let t0 = Instant::now();
        device.sync()?;
        times.update += t0.elapsed().as_secs_f64();
        if step < b.warmup {
            warm.push(phases(&times));
        } else {
            timed.push(times);
        }
        stats.push(json!({"step": st.step, "kl": st.kl, "score": st.score,
            "response_length": st.response_length, "mean_ratio": st.mean_ratio,
            "skipped": st.skipped}));
    }
    let med = |f: fn(&StepTimes) -> f64| median(timed.iter().map(f).collect());
    let total = |t: &StepTimes| t.total();
    Ok(json!({
        "impl": "dagrun", "what": "ppo-step", "device": device_json, "bench": b,
        "params": config.num_params(), "setup_s": setup,
        "warmup_steps": warm,
        "steps": timed.iter().map(phases).collect::<Vec<_>>(),
        "median": {
            "generation": med(|t| t.generation),
            "generation_model": med(|t| t.generation_model),
            "generation_to_host": med(|t| t.generation_to_host),
            "generation_sampling": med(|t| t.generation_sampling),
            "scoring": med(|t| t.scoring),
            "forward": med(|t| t.forward), "update": med(|t| t.update), "total": med(total),
            "update_forward": med(|t| t.update_forward),
            "update_backward": med(|t| t.update_backward),
            "update_optimizer": med(|t| t.update_optimizer),
        },
        "stats": stats,
    }))
}

/// Settings of `dagrun bench rm-score`.
#[derive(Debug, Clone, Serialize)]
pub struct RmBench {
    pub model: String,
    pub heads: usize,
    pub batch: usize,
    pub len: usize,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
}

/// Reward-model scoring throughput: `iters` forward passes (no autodiff) of `batch` sequences
/// of `len` tokens through the backbone and K heads, rewards read back to the host each time.
/// Returns `{"impl": "dagrun", "what": "rm-score", ..., "seconds", "sequences_per_s",
/// "tokens_per_s"}`.
pub fn bench_rm_score(spec: DeviceSpec, b: &RmBench) -> BenchResult<Value> {
    let device: Device = spec.resolve()?;
    let device_json = device_info(spec)?;
    let config = model_config(&b.model)?;
    if b.len == 0 || b.len > config.n_positions {
        return Err(format!("--len must be in 1..={}", config.n_positions).into());
    }
    let seeds: Vec<u64> = (0..b.heads as u64).map(|h| b.seed + 100 + h).collect();
    let rm = RewardModel::new(
        Gpt2::init(&config, b.seed + 1, &device)?,
        LinearHeads::init(config.n_embd, &seeds, &device)?,
    )?;
    let rows: Vec<Vec<u32>> = (0..b.batch)
        .map(|i| {
            (0..b.len)
                .map(|j| ((7919 * i + 104_729 * j + 13) % (config.vocab_size - 1)) as u32)
                .collect()
        })
        .collect();
    let batch = TokenBatch::from_rows(&rows, 0, Padding::Right)?;
    let mut checksum = 0.0f64;
    for _ in 0..b.warmup {
        checksum += to_f32_vec(rm.forward(&batch)?)[0] as f64;
    }
    let t0 = Instant::now();
    for _ in 0..b.iters {
        let r = to_f32_vec(rm.forward(&batch)?);
        checksum += r[0] as f64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = (b.batch * b.iters) as f64;
    Ok(json!({
        "impl": "dagrun", "what": "rm-score", "device": device_json, "bench": b,
        "params": config.num_params(), "seconds": secs, "sequences_per_s": n / secs,
        "tokens_per_s": n * b.len as f64 / secs, "checksum": checksum,
    }))
}
