//! The theory of paper §2–3 and App. 6 (docs/algorithms.md §7) as plain numerical code,
//! for the `bandit` and `simulate` stage kinds and the report.
//!
//! | module | what |
//! | --- | --- |
//! | [`normal`] | `erfc`, Φ, φ to ~1e-13 relative |
//! | [`rng`] | ChaCha8 from a `u64` seed, one stream per purpose; standard normals |
//! | [`solutions`] | Definitions 3.1/3.2, Sharpe ratio, Theorem 3.3 closed forms, Theorem 2.2's β_δ |
//! | [`summary`] | mean, std, quantiles, histograms |
//! | [`bandit`] | Figure 2: vanilla vs variance-aware KL-regularised bandit policies |
//! | [`simulate`] | Figure 5: Monte-Carlo over `r̂ = r* + N(0, Σ)` with closed forms beside |
//! | [`plot`] | SVG/PNG figures of both results |
//!
//! Entry points: [`run_bandit`] on [`BanditParams`] → [`BanditResult`];
//! [`run_simulation`] on [`SimulateParams`] → [`SimulationResult`]; [`plot_bandit`] and
//! [`plot_simulation`] draw them. Params deserialise with defaults for every field and
//! reject unknown fields; results serialise to JSON.

pub mod bandit;
mod error;
pub mod normal;
pub mod plot;
pub mod rng;
pub mod simulate;
pub mod solutions;
pub mod summary;

pub use bandit::{run_bandit, BanditParams, BanditResult, PolicyReturn, VarianceAwareForm};
pub use error::TheoryError;
pub use plot::{plot_bandit, plot_simulation};
pub use simulate::{
    run_simulation, MethodStats, SimulateParams, SimulationResult, Underperformance, Variability,
};
