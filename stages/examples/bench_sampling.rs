//! Token sampling over a PPO batch's logits: on the host, one thread — plain sampling (what
//! the `ppo` kind does, `SamplingConfig::pick_with`) against the general path it replaced for
//! plain settings (the full distribution, then the inverse CDF) — and on a device
//! (`SamplingConfig::pick_on_device`, logits already there, ids back on the host: burn-flex,
//! and libtorch-cpu in a `--features tch` build), same rows and draws.
//!
//! ```text
//! cargo run --release -p dagrun-stages --example bench_sampling -- [ROWS] [VOCAB] [ITERS]
//! ```
//! Defaults: 128 rows (the paper's batch), 50,257 logits (GPT-2's vocabulary), 5 iterations.
//! Prints one JSON object: milliseconds per token step (all rows) for each path, and whether
//! each chose the host's tokens (they must).

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use dagrun_stages::ml::inference::sampling::SamplingConfig;
use dagrun_stages::ml::rng::SeededRng;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

/// The general path: the distribution over the vocabulary, then the inverse CDF.
fn general(cfg: &SamplingConfig, row: &[f32], u: f64) -> u32 {
    SamplingConfig::pick_from(cfg.distribution(row), u)
}

fn main() {
    let (rows, vocab, iters) = (arg(1, 128), arg(2, 50_257), arg(3, 5));
    let mut gen = SeededRng::new(3);
    let logits: Vec<Vec<f32>> = (0..rows).map(|_| gen.normal_vec(vocab, 3.0)).collect();
    let draws: Vec<f64> = (0..rows).map(|_| gen.uniform()).collect();
    let cfg = SamplingConfig::default();
    let time = |f: &dyn Fn(&[f32], f64) -> u32| {
        let mut picks = Vec::new();
        let t0 = Instant::now();
        for _ in 0..iters {
            picks = logits.iter().zip(&draws).map(|(r, &u)| f(r, u)).collect();
        }
        (t0.elapsed().as_secs_f64() * 1e3 / iters as f64, picks)
    };
    let (plain_ms, plain) = time(&|r, u| cfg.pick_with(r, Some(u)));
    let (general_ms, reference) = time(&|r, u| general(&cfg, r, u));
    let mut out = serde_json::json!({
        "rows": rows, "vocab": vocab, "iters": iters, "threads": 1,
        "plain_ms_per_step": plain_ms, "general_ms_per_step": general_ms,
        "same_tokens": plain == reference,
    });
    #[allow(unused_mut)]
    let mut devices = vec![("flex", Device::flex())];
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    devices.push(("libtorch_cpu", Device::libtorch()));
    let us: Vec<Option<f64>> = draws.iter().map(|&u| Some(u)).collect();
    for (name, device) in devices {
        let t = Tensor::<2>::from_data(TensorData::new(logits.concat(), [rows, vocab]), &device);
        let mut picks = cfg.pick_on_device(t.clone(), &us).picked().expect("plain"); // warm-up
        let t0 = Instant::now();
        for _ in 0..iters {
            picks = cfg.pick_on_device(t.clone(), &us).picked().expect("plain");
        }
        out[format!("{name}_device_ms_per_step")] =
            (t0.elapsed().as_secs_f64() * 1e3 / iters as f64).into();
        out[format!("{name}_same_tokens")] = (picks == reference).into();
    }
    println!("{out}");
}
