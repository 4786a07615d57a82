//! The `prompts` kind: prompt sets from a text corpus, by the paper's rule (the first
//! 2–7 tokens of reviews longer than 200 characters; [`crate::data::prompts`]).
//!
//! Splits: a corpus folder with files named `train*` and `test*` (`train.jsonl`,
//! `plain_text/train-00000-of-00001.parquet`, ...) gives its own splits (other files, such
//! as IMDB's `unsupervised`, are ignored and logged); a single file, or a folder without
//! both, is pooled and a seeded `test_fraction` of its rows is the test split.
//!
//! Params: [`PromptsParams`]. Output `prompts` (dataset folder): `train.jsonl`,
//! `test.jsonl`, `train.parquet`, `test.parquet`, rows `{prompt, source_row}` where
//! `source_row` is the row's index (from 0) in its split of the corpus. Metrics per split
//! `SPLIT.rows`, `SPLIT.long_enough`, `SPLIT.prompts`, `SPLIT.mean_prompt_chars`.

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{OutputDecl, ParamError, StageContext, StageError, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_params;
use crate::data::{
    artifact_refs_as_text,
    io::{for_each_row, DataError},
    named,
    prompts::{corpus_files, make_prompts, split_pool, subsample, CorpusFiles, PromptRule, Tokens},
    records::parse_text,
    write_jsonl, write_parquet, Column, TextRow,
};

/// The defaults of [`PromptsParams`], by field.
mod defaults {
    pub fn text_column() -> String {
        "text".into()
    }
    pub fn min_chars() -> usize {
        200
    }
    pub fn min_tokens() -> usize {
        2
    }
    pub fn max_tokens() -> usize {
        7
    }
    pub fn test_fraction() -> f64 {
        0.1
    }
}

/// Parameters of `prompts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptsParams {
    /// The corpus: a `.jsonl`/`.parquet` file or a folder of them (relative paths are
    /// relative to the workspace), e.g. `${stages.task.corpus}` or an IMDB download.
    pub corpus: String,
    /// The string column holding the text. Default `text`.
    #[serde(default = "defaults::text_column")]
    pub text_column: String,
    /// Keep rows whose text has more than this many characters. Default 200 (the paper).
    #[serde(default = "defaults::min_chars")]
    pub min_chars: usize,
    /// Fewest tokens of a prompt. Default 2 (the paper).
    #[serde(default = "defaults::min_tokens")]
    pub min_tokens: usize,
    /// Most tokens of a prompt. Default 7 (the paper).
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: usize,
    /// The policy's `tokenizer.json`; without it, tokens are whitespace-separated words
    /// (and the log says so).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Seed of the prompt lengths, the pooled split and the subsets. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Share of a pooled corpus's rows that form the test split, in [0, 1). Default 0.1.
    #[serde(default = "defaults::test_fraction")]
    pub test_fraction: f64,
    /// Keep a seeded random subset of at most this many train prompts. Default: all.
    #[serde(default)]
    pub max_train: Option<usize>,
    /// The same for test prompts. Default: all.
    #[serde(default)]
    pub max_test: Option<usize>,
}

impl PromptsParams {
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.corpus.trim().is_empty() {
            return Err(ParamError::at("corpus", "is empty"));
        }
        if self.text_column.is_empty() {
            return Err(ParamError::at("text_column", "is empty"));
        }
        if self.min_tokens == 0 {
            return Err(ParamError::at("min_tokens", "must be at least 1"));
        }
        if self.max_tokens < self.min_tokens {
            return Err(ParamError::at("max_tokens", "must be ≥ min_tokens"));
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(ParamError::at("test_fraction", "must be in [0, 1)"));
        }
        if self
            .tokenizer
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ParamError::at(
                "tokenizer",
                "is empty (leave it out for words)",
            ));
        }
        Ok(())
    }
}

fn read_rows(files: &[std::path::PathBuf], column: &str) -> Result<Vec<TextRow>, DataError> {
    let mut rows = Vec::new();
    for f in files {
        for_each_row(f, |location, v| {
            rows.push(
                parse_text(&v, column).map_err(|message| DataError::Row { location, message })?,
            );
            Ok(())
        })?;
    }
    Ok(rows)
}

pub struct PromptsKind;

impl StageKind for PromptsKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<PromptsParams>())
    }
    fn name(&self) -> &'static str {
        "prompts"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "prompt sets from a text corpus: the first 2–7 tokens of texts longer than 200 characters"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        parse_params::<PromptsParams>(&artifact_refs_as_text(params))
            .map_err(named)?
            .validate()
            .map_err(named)
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![OutputDecl::new("prompts", ArtifactType::Dataset)]
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: PromptsParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        p.validate().map_err(|e| named(e).message)?;
        let tokens = match &p.tokenizer {
            Some(t) => {
                let path = ctx.workdir.join(t);
                ctx.log(format!("tokens: the tokenizer {}", path.display()));
                Tokens::load(&path)?
            }
            None => {
                ctx.log("tokens: no tokenizer given, so whitespace-separated words");
                Tokens::Words
            }
        };
        let corpus = ctx.workdir.join(&p.corpus);
        let (train, test) = match corpus_files(&corpus)? {
            CorpusFiles::Splits {
                train,
                test,
                ignored,
            } => {
                for f in &ignored {
                    ctx.log(format!("ignored (neither train nor test): {}", f.display()));
                }
                ctx.log(format!(
                    "splits from the corpus: {} train and {} test files",
                    train.len(),
                    test.len()
                ));
                (
                    read_rows(&train, &p.text_column)?,
                    read_rows(&test, &p.text_column)?,
                )
            }
            CorpusFiles::Pool(files) => {
                ctx.log(format!(
                    "no train/test files: pooling {} file(s), test fraction {}",
                    files.len(),
                    p.test_fraction
                ));
                split_pool(read_rows(&files, &p.text_column)?, p.test_fraction, p.seed)
            }
        };
        let rule = PromptRule {
            min_chars: p.min_chars,
            min_tokens: p.min_tokens,
            max_tokens: p.max_tokens,
        };
        let dir = ctx.output_path("prompts");
        for (i, (split, rows, max)) in [("train", train, p.max_train), ("test", test, p.max_test)]
            .into_iter()
            .enumerate()
        {
            ctx.progress(i as u64, 2, format!("{split}: {} rows", rows.len()));
            let long = rows
                .iter()
                .filter(|r| r.text.chars().count() > p.min_chars)
                .count();
            let prompts = make_prompts(&rows, &rule, &tokens, p.seed, &format!("prompts:{split}"))
                .map_err(|e| format!("{split} split: {e}"))?;
            let prompts = subsample(prompts, max, p.seed, &format!("prompts:subset:{split}"));
            if prompts.is_empty() {
                return Err(format!(
                    "the {split} split has no prompts: none of its {} rows is longer than {} characters",
                    rows.len(),
                    p.min_chars
                )
                .into());
            }
            let mean_chars = prompts
                .iter()
                .map(|q| q.prompt.chars().count())
                .sum::<usize>() as f64
                / prompts.len() as f64;
            ctx.metric(&format!("{split}.rows"), rows.len() as f64);
            ctx.metric(&format!("{split}.long_enough"), long as f64);
            ctx.metric(&format!("{split}.prompts"), prompts.len() as f64);
            ctx.metric(&format!("{split}.mean_prompt_chars"), mean_chars);
            ctx.log(format!(
                "{split}: {} rows, {long} longer than {} chars, {} prompts",
                rows.len(),
                p.min_chars,
                prompts.len()
            ));
            write_jsonl(&dir.join(format!("{split}.jsonl")), &prompts)?;
            write_parquet(
                &dir.join(format!("{split}.parquet")),
                &[
                    (
                        "prompt",
                        Column::Str(prompts.iter().map(|q| q.prompt.clone()).collect()),
                    ),
                    (
                        "source_row",
                        Column::Int(prompts.iter().map(|q| q.source_row as i64).collect()),
                    ),
                ],
            )?;
        }
        ctx.progress(2, 2, "done");
        Ok(())
    }
}
