//! Reward modelling beyond one model's forward pass: an ensemble of K heads on a frozen
//! backbone ([`ensemble`], docs/algorithms.md §3) and a reward model's RewardBench scores
//! ([`bench`], §8). Reading text with a reward model: [`crate::ml::reward`].

pub mod bench;
pub mod ensemble;
