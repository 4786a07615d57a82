//! Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k
//! and top-p (nucleus), applied in that order as transformers' `generate` does. Computed on the
//! host in f64 from a [`SeededRng`], so a seed gives the same choices on every backend that
//! gives the same logits.

use super::error::{MlError, Result};
use super::rng::SeededRng;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    /// Always take the most likely token (ignores temperature, top-k, top-p and the RNG).
    #[serde(default)]
    pub greedy: bool,
    /// Divide logits by this before sampling (> 0; 1 = unchanged).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[serde(default)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = off).
    #[serde(default = "one")]
    pub top_p: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for SamplingConfig {
    /// Plain sampling from the model's distribution (temperature 1, no top-k, top-p 1).
    fn default() -> Self {
        SamplingConfig {
            greedy: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingConfig {
            greedy: true,
            ..Default::default()
        }
    }

    /// Reject settings that define no distribution.
    pub fn validate(&self) -> Result<()> {
        if self.greedy {
            return Ok(());
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(MlError::Invalid(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(MlError::Invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// The probabilities (over the whole vocabulary, zeros for filtered tokens) that sampling
    /// draws from, for one row of logits.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f64> {
        let scaled: Vec<f64> = logits
            .iter()
            .map(|&l| l as f64 / self.temperature)
            .collect();
        let mut keep = vec![true; scaled.len()];
        // Descending by logit; ties broken by lower id first (stable). Only top-k and top-p
        // read the order: plain sampling skips the sort (a vocabulary-sized sort per row and
        // token dominated generation time).
        let mut order: Vec<usize> = Vec::new();
        if (self.top_k > 0 && self.top_k < scaled.len()) || self.top_p < 1.0 {
            order = (0..scaled.len()).collect();
            order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
        }
        if self.top_k > 0 && self.top_k < scaled.len() {
            // Keep every token at least as likely as the k-th (as transformers does on ties).
            let kth = scaled[order[self.top_k - 1]];
            for (i, k) in keep.iter_mut().enumerate() {
                *k = scaled[i] >= kth;
            }
        }
        let softmax = |keep: &[bool]| {
            let max = (0..scaled.len())
                .filter(|&i| keep[i])
                .map(|i| scaled[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut p: Vec<f64> = (0..scaled.len())
                .map(|i| {
                    if keep[i] {
                        (scaled[i] - max).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let z: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= z);
            p
        };
        let mut p = softmax(&keep);
        if self.top_p < 1.0 {
            let mut cum = 0.0;
            let mut nucleus = vec![false; scaled.len()];
            for &i in order.iter().filter(|&&i| keep[i]) {
                nucleus[i] = true;
                cum += p[i];
                if cum >= self.top_p {
                    break;
                }
            }
            p = softmax(&nucleus);
        }
        p
    }

    /// Pick the next token for one row of logits.
    pub fn pick(&self, logits: &[f32], rng: &mut SeededRng) -> u32 {
        self.pick_with(logits, self.draw(rng))
    }

    /// The uniform draw [`pick`](Self::pick) takes from the RNG for one row: `None` when
    /// greedy (no draw). Drawing these first, row by row, and then calling
    /// [`pick_with`](Self::pick_with) gives the same tokens as `pick` in row order, with the
    /// rows free to be computed in parallel.
    pub fn draw(&self, rng: &mut SeededRng) -> Option<f64> {
        (!self.greedy).then(|| rng.uniform())
    }

    /// [`pick`](Self::pick) with its uniform draw given (from [`draw`](Self::draw)).
    pub fn pick_with(&self, logits: &[f32], u: Option<f64>) -> u32 {
        match u {
            Some(u) if !self.greedy && self.is_plain(logits.len()) => self.pick_plain(logits, u),
            Some(u) if !self.greedy => Self::pick_from(self.distribution(logits), u),
            _ => argmax(logits),
        }
    }

    /// Neither top-k nor top-p removes a token from a vocabulary of `n`.
    fn is_plain(&self, n: usize) -> bool {
        !(self.top_k > 0 && self.top_k < n) && self.top_p >= 1.0
    }

    /// `pick_from(distribution(logits), u)` for plain sampling, in one buffer instead of four
    /// and three passes instead of six (a PPO batch samples 128 rows of 50,257 logits per
    /// token on the host): the same operations on the same values in the same order, so the
    /// same token bit for bit (tested against the general path).
    fn pick_plain(&self, logits: &[f32], u: f64) -> u32 {
        let t = self.temperature;
        let max = logits
            .iter()
            .map(|&l| l as f64 / t)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t - max).exp()).collect();
        let z: f64 = e.iter().sum();
        Self::pick_from(e.iter().map(|&ei| ei / z), u)
    }

    /// Inverse-CDF choice at `u` from probabilities `p` (in token order): the first token
    /// whose cumulative probability exceeds `u`, the last possible one if rounding leaves the
    /// total below it.
    pub fn pick_from(p: impl IntoIterator<Item = f64>, u: f64) -> u32 {
        let mut cum = 0.0;
        let mut last = 0;
        for (i, pi) in p.into_iter().enumerate() {
            if pi > 0.0 {
                cum += pi;
                last = i;
                if u < cum {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn temperature_top_k_and_top_p_give_the_exact_distributions() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let e: Vec<f64> = (0..4).map(|i| (i as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        let plain = SamplingConfig::default().distribution(&logits);
        assert!(close(&plain, &e.iter().map(|x| x / z).collect::<Vec<_>>()));

        let t2 = SamplingConfig {
            temperature: 2.0,
            ..Default::default()
        };
        let e2: Vec<f64> = (0..4).map(|i| (i as f64 / 2.0).exp()).collect();
        let z2: f64 = e2.iter().sum();
        assert!(close(
            &t2.distribution(&logits),
            &e2.iter().map(|x| x / z2).collect::<Vec<_>>()
        ));

        let k2 = SamplingConfig {
            top_k: 2,
            ..Default::default()
        };
        let zk = e[2] + e[3];
        assert!(close(
            &k2.distribution(&logits),
            &[0.0, 0.0, e[2] / zk, e[3] / zk]
        ));

        // p(3) = 0.6439, p(2) = 0.2369: top_p 0.7 keeps {3, 2}; 0.6 keeps {3} only.
        let p07 = SamplingConfig {
            top_p: 0.7,
            ..Default::default()
        };
        assert!(close(
            &p07.distribution(&logits),
            &[0.0, 0.0, e[2] / zk, e[3] / zk]
        ));
        let p06 = SamplingConfig {
            top_p: 0.6,
            ..Default::default()
        };
        assert!(close(&p06.distribution(&logits), &[0.0, 0.0, 0.0, 1.0]));
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_follows_the_distribution() {
        assert_eq!(argmax(&[1.0, 5.0, 5.0, -1.0]), 1);
        let mut rng = SeededRng::new(3);
        assert_eq!(SamplingConfig::greedy().pick(&[0.0, 2.0, 1.0], &mut rng), 1);
        let cfg = SamplingConfig::default();
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let n = 20_000;
        let ones = (0..n).filter(|_| cfg.pick(&logits, &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }

    /// Plain sampling's one-buffer path picks the general path's token for every row and
    /// draw: rows of several sizes and scales, temperatures, masked (-inf) logits, and draws
    /// placed exactly at and next to the cumulative boundaries, where a different rounding of
    /// any probability would move the choice.
    #[test]
    fn plain_sampling_picks_what_the_general_path_picks() {
        let mut gen = SeededRng::new(17);
        let mut checked = 0;
        for (n, scale) in [(2, 1.0), (7, 0.1), (1_000, 3.0), (50_257, 2.0), (300, 40.0)] {
            for t in [1.0, 0.7, 1.3] {
                let cfg = SamplingConfig {
                    temperature: t,
                    top_k: if n > 100 { n } else { 0 }, // k ≥ vocabulary: plain too
                    ..Default::default()
                };
                let mut row = gen.normal_vec(n, scale);
                if n > 5 {
                    row[3] = f32::NEG_INFINITY;
                }
                let p = cfg.distribution(&row);
                let mut cum = 0.0;
                let mut draws: Vec<f64> = (0..20).map(|_| gen.uniform()).collect();
                for &pi in p.iter().take(40) {
                    cum += pi;
                    draws.extend([cum, cum - 1e-16, cum + 1e-16].map(|u| u.clamp(0.0, 0.999_999)));
                }
                for u in draws {
                    let want = SamplingConfig::pick_from(p.iter().copied(), u);
                    assert_eq!(cfg.pick_plain(&row, u), want, "n {n} t {t} u {u}");
                    assert_eq!(cfg.pick_with(&row, Some(u)), want);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000);
        // Top-k below the vocabulary or top-p below 1 take the general path.
        let cfg = |top_k, top_p| SamplingConfig {
            top_k,
            top_p,
            ..Default::default()
        };
        assert!(cfg(0, 1.0).is_plain(10) && cfg(10, 1.0).is_plain(10));
        assert!(!cfg(9, 1.0).is_plain(10) && !cfg(0, 0.9).is_plain(10));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for cfg in [
            SamplingConfig {
                temperature: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        assert!(SamplingConfig {
            temperature: 0.0,
            greedy: true,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }
}
