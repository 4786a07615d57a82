//! KV-cache decoding and generation.

use burn::tensor::Tensor;
use dagrun_stages::ml::inference::generate::{generate, generate_timed, GenerateConfig};
use dagrun_stages::ml::inference::sampling::{SamplingConfig, SamplingPlace};
use dagrun_stages::ml::models::weights::to_f32_vec;
use dagrun_stages::ml::rng::SeededRng;
use dagrun_stages::ml::{Gpt2, KvCache, Padding, TokenBatch};

use crate::common::{cpu_devices, cuda_device, max_abs_diff, reference, tiny_hf_dir};

fn logits_at(logits: &Tensor<3>, row: usize, col: usize) -> Vec<f32> {
    let [_, _, v] = logits.dims();
    to_f32_vec(logits.clone().slice([row..row + 1, col..col + 1, 0..v]))
}

/// Feeding a left-padded prompt and then one token at a time through the cache gives the
/// logits of one full forward pass over the whole padded sequence.
#[test]
fn cached_decoding_equals_full_recomputation() {
    let rows = vec![vec![5u32, 17, 42, 7, 99, 3], vec![11u32, 250]];
    let extra = [[8u32, 300], [64, 1], [2, 2], [128, 77]];
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        let prompt = TokenBatch::from_rows(&rows, 0, Padding::Left).unwrap();
        let mut cache = KvCache::new();
        let mut step_logits = vec![model.forward(&prompt, Some(&mut cache)).unwrap()];
        for tokens in extra {
            let step = TokenBatch {
                rows: 2,
                len: 1,
                ids: tokens.to_vec(),
                mask: vec![1, 1],
            };
            step_logits.push(model.forward(&step, Some(&mut cache)).unwrap());
        }
        assert_eq!(cache.seen(), prompt.len + extra.len());
        // The same tokens in one pass.
        let full_rows: Vec<Vec<u32>> = (0..2)
            .map(|r| {
                let mut v = rows[r].clone();
                v.extend(extra.iter().map(|t| t[r]));
                v
            })
            .collect();
        let full = TokenBatch::from_rows(&full_rows, 0, Padding::Left).unwrap();
        let all = model.forward(&full, None).unwrap();
        let mut worst = 0.0f32;
        for r in 0..2 {
            for c in 0..prompt.len {
                if prompt.mask[r * prompt.len + c] == 1 {
                    let d = max_abs_diff(&logits_at(&step_logits[0], r, c), &logits_at(&all, r, c));
                    worst = worst.max(d);
                }
            }
            for (s, logits) in step_logits.iter().enumerate().skip(1) {
                let col = prompt.len + s - 1;
                worst = worst.max(max_abs_diff(
                    &logits_at(logits, r, 0),
                    &logits_at(&all, r, col),
                ));
            }
        }
        println!("{spec}: cached vs full max |Δlogit| = {worst:.2e}");
        assert!(worst <= 1e-4, "{spec}: {worst}");
    }
}

/// Greedy decoding reproduces transformers' `generate(do_sample=False)` on the fixture.
#[test]
fn greedy_generation_matches_transformers() {
    let reference = reference();
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        for case in reference["greedy"].as_array().unwrap() {
            let ids = |k: &str| -> Vec<u32> {
                case[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            };
            let (prompt, expected) = (ids("prompt_ids"), ids("ids"));
            let config = GenerateConfig {
                max_new_tokens: expected.len() - prompt.len(),
                sampling: SamplingConfig::greedy(),
                stop_ids: Vec::new(),
                pad_id: 0,
            };
            let out = generate(&model, &[prompt], &config, &mut SeededRng::new(0)).unwrap();
            assert_eq!(out.sequences[0], expected, "{spec}: {}", case["prompt"]);
        }
    }
}

/// Rows of a left-padded batch generate what they generate alone, and a seed reproduces a
/// sampled batch exactly.
#[test]
fn batched_generation_is_independent_of_batching_and_reproducible() {
    let device = dagrun_stages::ml::DeviceSpec::Cpu.resolve().unwrap();
    let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let prompts = vec![vec![5u32, 17, 42, 7, 99], vec![11u32], vec![250u32, 3]];
    let greedy = GenerateConfig {
        max_new_tokens: 8,
        sampling: SamplingConfig::greedy(),
        stop_ids: Vec::new(),
        pad_id: 0,
    };
    let batched = generate(&model, &prompts, &greedy, &mut SeededRng::new(0)).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(
            &model,
            std::slice::from_ref(p),
            &greedy,
            &mut SeededRng::new(0),
        )
        .unwrap();
        assert_eq!(batched.sequences[i], alone.sequences[0], "row {i}");
        assert_eq!(batched.responses[i].len(), 8);
    }

    let sampled = GenerateConfig {
        max_new_tokens: 10,
        sampling: SamplingConfig {
            temperature: 1.3,
            top_k: 50,
            top_p: 0.95,
            greedy: false,
        },
        stop_ids: Vec::new(),
        pad_id: 0,
    };
    let a = generate(&model, &prompts, &sampled, &mut SeededRng::new(42)).unwrap();
    let b = generate(&model, &prompts, &sampled, &mut SeededRng::new(42)).unwrap();
    let c = generate(&model, &prompts, &sampled, &mut SeededRng::new(43)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.responses, c.responses);

    // Timed, waiting for the device after each step's model work, with the tokens chosen on
    // the host or on the device (plain sampling and greedy there; top-k/top-p handed back):
    // the same tokens, rows that stop early included, and the parts add up to no more than
    // the call. On every CPU backend, and on CUDA when asked for.
    for spec in cpu_devices().into_iter().chain(cuda_device()) {
        let device = spec.resolve().unwrap();
        let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        for sampling in [
            sampled.sampling.clone(),
            SamplingConfig::default(),
            SamplingConfig::greedy(),
        ] {
            let free = GenerateConfig {
                sampling,
                ..sampled.clone()
            };
            let free_run = generate(&model, &prompts, &free, &mut SeededRng::new(42)).unwrap();
            // Row 0's second token ends a row: row 0 stops early, the others may go on.
            let config = GenerateConfig {
                stop_ids: vec![free_run.responses[0][1]],
                ..free
            };
            let auto = generate(&model, &prompts, &config, &mut SeededRng::new(42)).unwrap();
            assert!(auto.responses[0].len() <= 2, "{:?}", auto.responses);
            for place in [SamplingPlace::Host, SamplingPlace::Device] {
                let t0 = std::time::Instant::now();
                let (timed, times) = generate_timed(
                    &model,
                    &prompts,
                    &config,
                    &mut SeededRng::new(42),
                    Some(&device),
                    Some(place),
                )
                .unwrap();
                let whole = t0.elapsed().as_secs_f64();
                assert_eq!(timed, auto, "{spec} {place:?} {config:?}");
                let parts = [times.model, times.to_host, times.sampling];
                assert!(
                    parts.iter().all(|&p| p >= 0.0) && times.model > 0.0,
                    "{times:?}"
                );
                assert!(parts.iter().sum::<f64>() <= whole, "{times:?} vs {whole}");
            }
        }
    }
}

/// A row stops right after its EOS (kept); other rows go on.
#[test]
fn eos_stops_a_row_and_is_kept() {
    let device = dagrun_stages::ml::DeviceSpec::Cpu.resolve().unwrap();
    let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let prompts = vec![vec![5u32, 17, 42], vec![11u32, 250]];
    let greedy = GenerateConfig {
        max_new_tokens: 6,
        sampling: SamplingConfig::greedy(),
        stop_ids: Vec::new(),
        pad_id: 0,
    };
    let free = generate(&model, &prompts, &greedy, &mut SeededRng::new(0)).unwrap();
    // Declare row 0's third generated token the EOS: row 0 must stop there.
    let eos = free.responses[0][2];
    let stops_row1_early = free.responses[1].iter().position(|&t| t == eos);
    let with_eos = GenerateConfig {
        stop_ids: vec![eos],
        ..greedy
    };
    let out = generate(&model, &prompts, &with_eos, &mut SeededRng::new(0)).unwrap();
    let first = free.responses[0].iter().position(|&t| t == eos).unwrap();
    assert_eq!(out.responses[0], free.responses[0][..=first].to_vec());
    let expect1 = match stops_row1_early {
        Some(p) => free.responses[1][..=p].to_vec(),
        None => free.responses[1].clone(),
    };
    assert_eq!(out.responses[1], expect1);
    assert_eq!(out.sequences[0][..3], prompts[0][..]);
}
