//! Reinforcement learning from a reward model: the PPO arithmetic of ALGORITHMS.md §4–5.
//!
//! [`math`] holds the per-token arithmetic on plain numbers (rewards with the KL penalty,
//! GAE, whitening, the clipped losses) with the test vectors of ALGORITHMS.md; the PPO
//! loop calls it on the rollout batch, which lives on the host.

pub mod math;
