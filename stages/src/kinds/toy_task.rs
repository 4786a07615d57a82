//! The `toy_task` kind: the built-in task, generated from a seed with nothing to
//! download. A text world of short movie reviews with a known ground-truth reward
//! ([`crate::data::world`]), an IMDB-like prompt corpus, and preference sources labelled by
//! Bradley–Terry sampling from the true reward with per-source noise
//! ([`crate::data::toy`]).
//!
//! Params: [`ToyTaskParams`]. Outputs:
//! - `world` (metrics JSON): the [`World`], loadable with [`World::load`];
//! - `corpus` (dataset folder): `train.jsonl`, `test.jsonl`, `train.parquet`,
//!   `test.parquet`, rows `{text, label}` (label 1 for a positive review);
//! - `preferences` (dataset folder): one file per source, `NAME.jsonl` or `NAME.parquet`;
//!   flat rows `{prompt, chosen, rejected}`, chat rows `{chosen, rejected}` as lists of
//!   `{role, content}` (a user turn with the prompt, then the assistant's response);
//! - `tokenizer` (file): a `tokenizer.json` (byte-level BPE in GPT-2's layout, with
//!   `<|endoftext|>`) trained on the corpus's train split, for the built-in policy;
//! - `reward_bench` (dataset folder): `reward_bench.parquet`, a RewardBench-format test set
//!   (`prompt, chosen, rejected, subset, id`) in ten RewardBench subsets, two per section,
//!   whose difficulty follows the true reward ([`toy::reward_bench`]), for the
//!   `reward_bench` kind.
//!
//! Metrics: `corpus.train`, `corpus.test`, `corpus.mean_chars`, `corpus.positive_fraction`,
//! `world.sentiment_words`, `tokenizer.vocab`, `reward_bench.pairs`, and per source `NAME.pairs`, `NAME.mean_reward_chosen`,
//! `NAME.mean_reward_rejected`, `NAME.agreement` (share of pairs whose chosen response has
//! the higher true reward, ties left out), `NAME.ties`.

use std::collections::HashSet;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::parse_params;
use crate::data::{
    artifact_refs_as_text,
    io::preference_columns,
    named,
    toy::{self, default_sources, PairShape, SourceFile, SourceFormat, SourceSpec},
    world::WorldParams,
    write_jsonl, write_parquet, Column, Message, PreferencePair, World,
};
use crate::memory;
use crate::ml::io::tokenizer::{BpeTrainConfig, TextTokenizer};

/// Parameters of `toy_task`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ToyTaskParams {
    /// Seed of everything (world weights, corpus, pairs). Default 0.
    pub seed: u64,
    /// The world: weights, repeat penalty, grammar probabilities ([`WorldParams`]).
    pub world: WorldParams,
    /// Reviews in the corpus's train split. Default 500.
    pub corpus_train: usize,
    /// Reviews in the corpus's test split. Default 100.
    pub corpus_test: usize,
    /// Fewest words of a pair's prompt. Default 2 (the paper's prompt rule).
    pub prompt_min_words: usize,
    /// Most words of a pair's prompt. Default 7.
    pub prompt_max_words: usize,
    /// Words of each candidate response. Default 10 (the paper's response length).
    pub response_words: usize,
    /// Probability that one candidate of a pair is a repeated word. Default 0.1.
    pub degenerate_prob: f64,
    /// Largest vocabulary of the trained tokenizer (at least 257: the 256 bytes and
    /// `<|endoftext|>`); merges stop earlier when no pair occurs twice. Default 1024 (the
    /// default world then has about 800 tokens: nearly every word is one token).
    pub tokenizer_vocab: usize,
    /// The preference sources (see [`SourceSpec`]); default: `clean` (τ 0.5, 400 pairs),
    /// `noisy` (τ 2, flip 0.15, 400), `chat` (chat format, τ 1, flip 0.05, 400), `medium`
    /// (Parquet, τ 1, flip 0.05, 200).
    pub sources: Vec<SourceSpec>,
    /// Pairs per subset of the RewardBench-format test set (ten subsets). Default 40.
    pub reward_bench_pairs: usize,
}

impl Default for ToyTaskParams {
    fn default() -> Self {
        ToyTaskParams {
            seed: 0,
            world: WorldParams::default(),
            corpus_train: 500,
            corpus_test: 100,
            prompt_min_words: 2,
            prompt_max_words: 7,
            response_words: 10,
            degenerate_prob: 0.1,
            tokenizer_vocab: 1024,
            sources: default_sources(),
            reward_bench_pairs: 40,
        }
    }
}

impl ToyTaskParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        self.world
            .validate()
            .map_err(|(f, m)| ParamError::at(&format!("world.{f}"), m))?;
        if self.prompt_min_words == 0 {
            return Err(ParamError::at("prompt_min_words", "must be at least 1"));
        }
        if self.prompt_max_words < self.prompt_min_words {
            return Err(ParamError::at(
                "prompt_max_words",
                "must be ≥ prompt_min_words",
            ));
        }
        if self.response_words == 0 {
            return Err(ParamError::at("response_words", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.degenerate_prob) {
            return Err(ParamError::at("degenerate_prob", "must be in [0, 1]"));
        }
        if self.tokenizer_vocab < 257 {
            return Err(ParamError::at(
                "tokenizer_vocab",
                "must be at least 257 (256 bytes and <|endoftext|>)",
            ));
        }
        if self.reward_bench_pairs == 0 {
            return Err(ParamError::at("reward_bench_pairs", "must be at least 1"));
        }
        if self.sources.is_empty() {
            return Err(ParamError::at("sources", "needs at least one source"));
        }
        // Sizes the machine cannot hold fail here, named, instead of aborting the process
        // when the rows or the tokenizer's tables are allocated. The estimates are rough
        // upper bounds (f64, so that they cannot overflow): a row holds its words (~16
        // bytes each) and a little bookkeeping, and is held about three times (rows, texts,
        // the Parquet columns); a vocabulary entry costs a few hundred bytes in the trainer.
        let row = 64.0 + 16.0 * (self.prompt_max_words as f64 + self.response_words as f64);
        for (field, words) in [
            ("prompt_max_words", self.prompt_max_words),
            ("response_words", self.response_words),
        ] {
            memory::fits_physical(16.0 * words as f64, &format!("one row of {words} words"))
                .map_err(|m| ParamError::at(field, m))?;
        }
        for (field, rows) in [
            ("corpus_train", self.corpus_train as f64),
            ("corpus_test", self.corpus_test as f64),
            ("reward_bench_pairs", 2.0 * self.reward_bench_pairs as f64),
        ] {
            memory::fits_physical(3.0 * rows * row, &format!("{rows} rows"))
                .map_err(|m| ParamError::at(field, m))?;
        }
        memory::fits_physical(
            256.0 * self.tokenizer_vocab as f64,
            &format!("a vocabulary of {}", self.tokenizer_vocab),
        )
        .map_err(|m| ParamError::at("tokenizer_vocab", m))?;
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = |f: &str| format!("sources[{i}].{f}");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ParamError::at(
                    &at("name"),
                    format!("`{}`: use letters, digits, `_` and `-`", s.name),
                ));
            }
            if !names.insert(&s.name) {
                return Err(ParamError::at(
                    &at("name"),
                    format!("`{}` names two sources", s.name),
                ));
            }
            if !(s.temperature.is_finite() && s.temperature > 0.0) {
                return Err(ParamError::at(&at("temperature"), "must be a number > 0"));
            }
            if !(0.0..1.0).contains(&s.flip) {
                return Err(ParamError::at(&at("flip"), "must be in [0, 1)"));
            }
        }
        Ok(())
    }
}

pub struct ToyTaskKind;

fn chat_messages(prompt: &str, response: &str) -> Vec<Message> {
    vec![
        Message::new("user", prompt),
        Message::new("assistant", response),
    ]
}

fn write_source(
    dir: &std::path::Path,
    spec: &SourceSpec,
    pairs: &[toy::LabelledPair],
) -> Result<(), StageError> {
    let path = dir.join(spec.file_name());
    match (spec.format, spec.file) {
        (SourceFormat::Flat, SourceFile::Jsonl) => {
            let rows: Vec<Value> = pairs
                .iter()
                .map(|p| json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}))
                .collect();
            write_jsonl(&path, &rows)?;
        }
        (SourceFormat::Chat, SourceFile::Jsonl) => {
            let rows: Vec<Value> = pairs
                .iter()
                .map(|p| {
                    json!({
                        "chosen": chat_messages(&p.prompt, &p.chosen),
                        "rejected": chat_messages(&p.prompt, &p.rejected),
                    })
                })
                .collect();
            write_jsonl(&path, &rows)?;
        }
        (SourceFormat::Flat, SourceFile::Parquet) => {
            let flat: Vec<PreferencePair> = pairs
                .iter()
                .map(|p| PreferencePair {
                    prompt: p.prompt.clone(),
                    chosen: p.chosen.clone(),
                    rejected: p.rejected.clone(),
                    prompt_messages: None,
                })
                .collect();
            let mut cols = preference_columns(&flat, None);
            cols.retain(|(name, _)| *name != "prompt_messages");
            write_parquet(&path, &cols)?;
        }
        (SourceFormat::Chat, SourceFile::Parquet) => {
            let side = |f: fn(&toy::LabelledPair) -> &String| {
                Column::Messages(
                    pairs
                        .iter()
                        .map(|p| chat_messages(&p.prompt, f(p)))
                        .collect(),
                )
            };
            write_parquet(
                &path,
                &[
                    ("chosen", side(|p| &p.chosen)),
                    ("rejected", side(|p| &p.rejected)),
                ],
            )?;
        }
    }
    Ok(())
}

impl StageKind for ToyTaskKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<ToyTaskParams>())
    }
    fn name(&self) -> &'static str {
        "toy_task"
    }
    fn version(&self) -> u32 {
        // 2: adds the `reward_bench` output; the tokenizer comes from ml::io::tokenizer's
        // trainer (same ids, other post-processor settings in tokenizer.json).
        2
    }
    fn summary(&self) -> &'static str {
        "the built-in task: a generated review world with a known reward, a prompt corpus and noisy preference sources"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        parse_params::<ToyTaskParams>(&artifact_refs_as_text(params))
            .map_err(named)?
            .validate()
            .map_err(named)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("world", ArtifactType::Metrics),
            OutputDecl::new("corpus", ArtifactType::Dataset),
            OutputDecl::new("preferences", ArtifactType::Dataset),
            OutputDecl::new("tokenizer", ArtifactType::File),
            OutputDecl::new("reward_bench", ArtifactType::Dataset),
        ]
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: ToyTaskParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        p.validate().map_err(|e| named(e).message)?;
        let world = World::generate(p.seed, &p.world);
        world.save(&ctx.output_path("world"))?;
        ctx.metric("world.sentiment_words", world.weights.len() as f64);

        let corpus_dir = ctx.output_path("corpus");
        let mut chars = 0usize;
        let mut positive = 0usize;
        let mut rows_total = 0usize;
        for (split, n) in [("train", p.corpus_train), ("test", p.corpus_test)] {
            let rows = toy::corpus(&world, p.seed, split, n);
            if split == "train" {
                let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
                // A byte-level BPE in GPT-2's layout, `<|endoftext|>` as id 0.
                let tok = TextTokenizer::train_bpe(
                    texts.iter().map(String::as_str),
                    &BpeTrainConfig {
                        vocab_size: p.tokenizer_vocab,
                        ..BpeTrainConfig::default()
                    },
                )?;
                tok.save(&ctx.output_path("tokenizer"))?;
                ctx.metric("tokenizer.vocab", tok.vocab_size() as f64);
            }
            write_jsonl(&corpus_dir.join(format!("{split}.jsonl")), &rows)?;
            write_parquet(
                &corpus_dir.join(format!("{split}.parquet")),
                &[
                    (
                        "text",
                        Column::Str(rows.iter().map(|r| r.text.clone()).collect()),
                    ),
                    (
                        "label",
                        Column::Int(rows.iter().map(|r| r.label.unwrap_or(0)).collect()),
                    ),
                ],
            )?;
            chars += rows.iter().map(|r| r.text.chars().count()).sum::<usize>();
            positive += rows.iter().filter(|r| r.label == Some(1)).count();
            rows_total += rows.len();
            ctx.metric(&format!("corpus.{split}"), n as f64);
        }
        let denom = rows_total.max(1) as f64;
        ctx.metric("corpus.mean_chars", chars as f64 / denom);
        ctx.metric("corpus.positive_fraction", positive as f64 / denom);

        let shape = PairShape {
            prompt_min_words: p.prompt_min_words,
            prompt_max_words: p.prompt_max_words,
            response_words: p.response_words,
            degenerate_prob: p.degenerate_prob,
        };
        let pref_dir = ctx.output_path("preferences");
        std::fs::create_dir_all(&pref_dir)?;
        for (i, spec) in p.sources.iter().enumerate() {
            if ctx.cancelled() {
                return Err(Box::new(dagrun_engine::stage::Cancelled));
            }
            ctx.progress(
                i as u64,
                p.sources.len() as u64,
                format!("source {}", spec.name),
            );
            let pairs = toy::pairs(&world, p.seed, spec, &shape);
            write_source(&pref_dir, spec, &pairs)?;
            let s = toy::stats(&pairs);
            let n = &spec.name;
            ctx.metric(&format!("{n}.pairs"), s.pairs as f64);
            ctx.metric(&format!("{n}.mean_reward_chosen"), s.mean_reward_chosen);
            ctx.metric(&format!("{n}.mean_reward_rejected"), s.mean_reward_rejected);
            ctx.metric(&format!("{n}.agreement"), s.agreement);
            ctx.metric(&format!("{n}.ties"), s.ties as f64);
            ctx.log(format!(
                "{}: {} pairs (τ {}, flip {}), true reward chosen {:.3} vs rejected {:.3}, agreement {:.3}, {} ties",
                spec.file_name(),
                s.pairs,
                spec.temperature,
                spec.flip,
                s.mean_reward_chosen,
                s.mean_reward_rejected,
                s.agreement,
                s.ties
            ));
        }
        let bench = toy::reward_bench(&world, p.seed, &shape, p.reward_bench_pairs);
        let col = |f: fn(&toy::BenchPair) -> &String| {
            Column::Str(bench.iter().map(|b| f(b).clone()).collect())
        };
        write_parquet(
            &ctx.output_path("reward_bench").join("reward_bench.parquet"),
            &[
                ("prompt", col(|b| &b.pair.prompt)),
                ("chosen", col(|b| &b.pair.chosen)),
                ("rejected", col(|b| &b.pair.rejected)),
                ("subset", col(|b| &b.subset)),
                ("id", Column::Int((0..bench.len() as i64).collect())),
            ],
        )?;
        ctx.metric("reward_bench.pairs", bench.len() as f64);
        ctx.progress(p.sources.len() as u64, p.sources.len() as u64, "done");
        Ok(())
    }
}
