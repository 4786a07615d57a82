//! A seeded random number generator whose whole state is two numbers, so that it can be
//! checkpointed and restored exactly (ChaCha8: the seed and the word position).

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ChaCha8 seeded from a `u64`; [`SeededRng::state`] / [`SeededRng::from_state`] round-trip it.
#[derive(Debug, Clone)]
pub struct SeededRng {
    seed: u64,
    inner: ChaCha8Rng,
}

/// The serialisable state of a [`SeededRng`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngState {
    /// The seed the generator was created from.
    pub seed: u64,
    /// How many 32-bit words it has produced (ChaCha's word position), as a decimal string in
    /// JSON because it is a u128.
    #[serde(with = "u128_string")]
    pub word_pos: u128,
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng {
            seed,
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Its state now.
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            word_pos: self.inner.get_word_pos(),
        }
    }

    /// The generator in exactly the given state.
    pub fn from_state(state: RngState) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(state.seed);
        inner.set_word_pos(state.word_pos);
        SeededRng {
            seed: state.seed,
            inner,
        }
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// A derived seed (for a child generator), advancing this one.
    pub fn fork_seed(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// `n` draws of N(0, std²) as f32 (Box–Muller).
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = 1.0 - self.uniform(); // (0, 1]
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            out.push((r * t.cos()) as f32 * std);
            out.push((r * t.sin()) as f32 * std);
        }
        out.truncate(n);
        out
    }

    /// Shuffle a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_continues_the_same_stream() {
        let mut a = SeededRng::new(7);
        for _ in 0..13 {
            a.uniform();
        }
        let state = a.state();
        let json = serde_json::to_string(&state).unwrap();
        let mut b = SeededRng::from_state(serde_json::from_str(&json).unwrap());
        let xs: Vec<f64> = (0..5).map(|_| a.uniform()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.uniform()).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn normal_draws_have_the_requested_spread() {
        let mut r = SeededRng::new(1);
        let v = r.normal_vec(20_000, 2.0);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "std {}", var.sqrt());
    }
}
