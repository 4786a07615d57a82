//! Batched autoregressive generation with a KV cache.
//!
//! Prompts are left-padded so that every row's next token comes from the last column; each
//! step feeds one new token per row through the cached model. A row stops after it emits EOS
//! (the EOS is kept); finished rows are fed padding (masked out) until every row is done or
//! `max_new_tokens` is reached. For a given seed the result is reproducible.

use std::time::Instant;

use burn::tensor::{Device, Tensor};

use crate::ml::error::{MlError, Result};
use crate::ml::inference::sampling::{DevicePick, SamplingConfig, SamplingPlace};
use crate::ml::io::batch::{Padding, TokenBatch};
use crate::ml::models::attention::KvCache;
use crate::ml::models::backbone::LanguageModel;
use crate::ml::models::weights::to_f32_vec;
use crate::ml::rng::SeededRng;

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateConfig {
    /// At most this many tokens are appended to each prompt.
    pub max_new_tokens: usize,
    /// How each token is chosen.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Stop a row after any of these tokens (kept in the output); empty never stops early.
    /// Instruction-tuned models end a turn with a token of their own besides EOS
    /// (Llama-3-Instruct's `<|eot_id|>`), listed in their `generation_config.json`.
    #[serde(default)]
    pub stop_ids: Vec<u32>,
    /// Id fed for finished rows and used for padding (masked, so it does not matter).
    #[serde(default)]
    pub pad_id: u32,
}

/// The generated sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Per row: the prompt's ids followed by the generated ones.
    pub sequences: Vec<Vec<u32>>,
    /// Per row: the generated ids only (cut after the first EOS, which is kept).
    pub responses: Vec<Vec<u32>>,
    /// Per row: the length of the prompt.
    pub prompt_lens: Vec<usize>,
}

/// The logits of the last column only, `[b, vocabulary]` (the LM head is applied to
/// `[b, 1, hidden]`, not to every prompt position: with a 256k vocabulary that is most of a
/// prefill's memory).
fn last_logits(model: &impl LanguageModel, hidden: Tensor<3>) -> Result<Tensor<2>> {
    let [b, t, e] = hidden.dims();
    let logits = model.logits(hidden.slice([0..b, t - 1..t, 0..e]))?;
    let v = logits.dims()[2];
    Ok(logits.reshape([b, v]))
}

/// The next token of each row that is not `done` (0 for done rows), chosen at `place`: on
/// the host ([`pick_rows`]), or where the logits are ([`SamplingConfig::pick_on_device`],
/// which hands top-k / top-p back to the host). Returns the picks and the seconds spent
/// copying logits to the host (0 when they stayed on the device).
fn pick_step(
    sampling: &SamplingConfig,
    logits: Tensor<2>,
    done: &[bool],
    rng: &mut SeededRng,
    place: SamplingPlace,
) -> (Vec<u32>, f64) {
    let drawn = draws(sampling, done, rng);
    let logits = match place {
        SamplingPlace::Device => {
            let us: Vec<Option<f64>> = drawn.iter().map(|d| d.flatten()).collect();
            match sampling.pick_on_device(logits, &us) {
                DevicePick::Picked(mut picks) => {
                    picks
                        .iter_mut()
                        .zip(done)
                        .filter(|(_, &d)| d)
                        .for_each(|(p, _)| *p = 0);
                    return (picks, 0.0);
                }
                DevicePick::Host(logits) => *logits,
            }
        }
        SamplingPlace::Host => logits,
    };
    let t0 = Instant::now();
    let width = logits.dims()[1];
    let logits = to_f32_vec(logits);
    let copy = t0.elapsed().as_secs_f64();
    (pick_rows(sampling, &logits, width, &drawn), copy)
}

/// The RNG draws for one token step, taken in row order: `None` for a done row (no draw),
/// `Some(None)` for a greedy one.
fn draws(
    sampling: &SamplingConfig,
    done: &[bool],
    rng: &mut SeededRng,
) -> Vec<Option<Option<f64>>> {
    done.iter()
        .map(|&d| (!d).then(|| sampling.draw(rng)))
        .collect()
}

/// The next token of each row with a draw (0 for done rows), as `SamplingConfig::pick` row
/// by row would choose them: the draws are taken in row order first ([`draws`]), then large
/// batches (a full vocabulary per row) are computed on several threads. `logits` holds one
/// row of `width` values per draw.
fn pick_rows(
    sampling: &SamplingConfig,
    logits: &[f32],
    width: usize,
    draws: &[Option<Option<f64>>],
) -> Vec<u32> {
    let rows = draws.len();
    let one = |(row, u): (&[f32], &Option<Option<f64>>)| match u {
        Some(u) => sampling.pick_with(row, *u),
        None => 0,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || rows < 2 || logits.len() < (1 << 20) {
        return logits.chunks(width).zip(draws).map(one).collect();
    }
    let rows_per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = logits
            .chunks(rows_per * width)
            .zip(draws.chunks(rows_per))
            .map(|(r, d)| s.spawn(move || r.chunks(width).zip(d).map(one).collect::<Vec<u32>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sampling thread"))
            .collect()
    })
}

/// Where [`generate_timed`]'s time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerateTimes {
    /// The model: each step's forward pass and the LM head on the last column (measured to
    /// the device's completion only when a device to wait for is given).
    pub model: f64,
    /// Copying each step's last-column logits to the host (0 when the tokens are chosen on
    /// the device: [`SamplingPlace`]).
    pub to_host: f64,
    /// Choosing the tokens — on the host, or on the device including the copy of the ids
    /// back — and the step's bookkeeping.
    pub sampling: f64,
}

/// Generate continuations of `prompts` (token ids, each non-empty) with `model` (GPT-2, Gemma,
/// Llama: any [`LanguageModel`]).
pub fn generate(
    model: &impl LanguageModel,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    rng: &mut SeededRng,
) -> Result<Generation> {
    Ok(generate_timed(model, prompts, config, rng, None, None)?.0)
}

/// [`generate`], and where its time went. With `wait_for`, each step waits for that device
/// after the model's work, so that the model's time is its own rather than part of the copy
/// to the host that would otherwise wait for it (profiling only: a wait per step). `place`
/// says where to choose the tokens; `None` is [`SamplingPlace::for_device`] (the device for
/// logits on a GPU, `DAGRUN_SAMPLING` to override).
pub fn generate_timed(
    model: &impl LanguageModel,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    rng: &mut SeededRng,
    wait_for: Option<&Device>,
    place: Option<SamplingPlace>,
) -> Result<(Generation, GenerateTimes)> {
    config.sampling.validate()?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(MlError::Invalid(
            "generation needs non-empty prompts".into(),
        ));
    }
    let model = model.valid();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let limit = model.max_positions();
    if longest + config.max_new_tokens > limit {
        return Err(MlError::Invalid(format!(
            "prompt ({longest} tokens) + max_new_tokens ({}) exceeds the model's {limit} positions",
            config.max_new_tokens
        )));
    }
    let b = prompts.len();
    let mut responses: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut cache = KvCache::new();
    let mut batch = TokenBatch::from_rows(prompts, config.pad_id, Padding::Left)?;
    let mut times = GenerateTimes::default();
    let mut place = place;
    for _ in 0..config.max_new_tokens {
        let t0 = Instant::now();
        let hidden = model.hidden_states(&batch, Some(&mut cache))?;
        let logits = last_logits(&model, hidden)?;
        if let Some(device) = wait_for {
            device
                .sync()
                .map_err(|e| MlError::Invalid(format!("waiting for the device: {e:?}")))?;
        }
        let t1 = Instant::now();
        let place = match place {
            Some(p) => p,
            None => *place.insert(SamplingPlace::for_device(&logits.device())?),
        };
        let (picks, copy) = pick_step(&config.sampling, logits, &done, rng, place);
        let mut ids = Vec::with_capacity(b);
        let mut mask = Vec::with_capacity(b);
        for (r, next) in picks.into_iter().enumerate() {
            if done[r] {
                ids.push(config.pad_id);
                mask.push(0);
                continue;
            }
            responses[r].push(next);
            done[r] = config.stop_ids.contains(&next);
            ids.push(next);
            mask.push(1);
        }
        times.model += (t1 - t0).as_secs_f64();
        times.to_host += copy;
        times.sampling += t1.elapsed().as_secs_f64() - copy;
        if done.iter().all(|&d| d) {
            break;
        }
        batch = TokenBatch {
            rows: b,
            len: 1,
            ids,
            mask,
        };
    }
    let sequences = prompts
        .iter()
        .zip(&responses)
        .map(|(p, r)| p.iter().chain(r).copied().collect())
        .collect();
    let generation = Generation {
        sequences,
        responses,
        prompt_lens: prompts.iter().map(Vec::len).collect(),
    };
    Ok((generation, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threaded path (a batch above the threshold) picks what `pick` picks row by row,
    /// and leaves the RNG where row-by-row picking leaves it.
    #[test]
    fn pick_rows_equals_picking_row_by_row() {
        let mut gen = SeededRng::new(3);
        let rows: Vec<Vec<f32>> = (0..48).map(|_| gen.normal_vec(30_000, 2.0)).collect();
        let done: Vec<bool> = (0..48).map(|r| r % 7 == 3).collect();
        for sampling in [
            SamplingConfig::default(),
            SamplingConfig {
                top_k: 50,
                top_p: 0.9,
                temperature: 0.7,
                ..SamplingConfig::default()
            },
            SamplingConfig::greedy(),
        ] {
            let (mut a, mut b) = (SeededRng::new(11), SeededRng::new(11));
            let flat: Vec<f32> = rows.concat();
            let got = pick_rows(&sampling, &flat, 30_000, &draws(&sampling, &done, &mut a));
            let want: Vec<u32> = rows
                .iter()
                .zip(&done)
                .map(|(row, &d)| if d { 0 } else { sampling.pick(row, &mut b) })
                .collect();
            assert_eq!(got, want, "{sampling:?}");
            assert_eq!(a.uniform(), b.uniform());
        }
    }
}
