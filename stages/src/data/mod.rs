//! Data for the paper pipeline: the built-in toy task and the formats users bring
//! (docs/algorithms.md §9).
//!
//! - [`world`]: the generated text world of the built-in task and its ground-truth reward
//!   [`World::reward`].
//! - [`records`]: the row types ([`PreferencePair`], [`Message`], [`TextRow`]) and how a
//!   JSON row (from JSON Lines or Parquet) becomes one, flat or chat format.
//! - [`io`]: reading rows from `.jsonl` and `.parquet` files or folders of them, and
//!   writing JSON Lines and Parquet. Errors name the file and the line or row.
//! - [`reward_bench`]: RewardBench rows, sections and scoring (docs/algorithms.md §8).
//! - [`mix`]: the `dataset_mix` logic (filters, deduplication, weights and caps, shuffle,
//!   split).
//! - [`prompts`]: the `prompts` logic (the paper's rule: the first 2–7 tokens of reviews
//!   longer than 200 characters).

pub mod io;
pub mod mix;
pub mod prompts;
pub mod records;
pub mod reward_bench;
pub mod toy;
pub mod world;

pub use io::{
    data_files, read_preferences, read_texts, write_jsonl, write_parquet, Column, DataError,
    Location,
};
pub use records::{Message, PreferenceFormat, PreferencePair, TextRow};
pub use world::World;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A ChaCha8 generator for one purpose (`"corpus:train"`, `"source:clean"`) derived from
/// `seed` with blake3, so adding a purpose never shifts the numbers of another.
pub fn rng_for(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"dagrun-data-rng-v1");
    h.update(&seed.to_le_bytes());
    h.update(purpose.as_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// Params as `validate` sees them before anything ran: every `${stages...}` reference
/// (a `{"$artifact": i}` or `{"$concat": [...]}` marker) becomes the text `<artifact>`,
/// so that a path param parses as the string it will be.
pub fn artifact_refs_as_text(params: &serde_json::Value) -> serde_json::Value {
    dagrun_engine::interp::render(params, &|_| {
        serde_json::Value::String("<artifact>".to_string())
    })
}

/// Puts the parameter's name at the front of the message (the engine points at the
/// `params` line when it cannot find a nested one such as `sources[1].weight`).
pub fn named(e: dagrun_engine::stage::ParamError) -> dagrun_engine::stage::ParamError {
    match &e.param {
        Some(p) => dagrun_engine::stage::ParamError {
            message: format!("`{p}`: {}", e.message),
            param: e.param.clone(),
        },
        None => e,
    }
}
