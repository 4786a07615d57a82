//! The `prompts` logic: the paper's rule for IMDB prompts. Rows whose text is longer than
//! `min_chars` characters (Unicode scalar values; default 200) are kept; each kept row's
//! prompt is its first k tokens, k uniform in `[min_tokens, max_tokens]` (default 2..=7),
//! drawn in row order from the split's own stream. With a tokenizer, the first k token ids
//! (no special tokens added) are decoded back to text (special tokens skipped); without
//! one, tokens are whitespace-separated words, joined by single spaces. A text with fewer
//! than k tokens gives all of them; a prompt that comes out blank is dropped.

use std::path::{Path, PathBuf};

use rand::{seq::index::sample, Rng};
use serde::Serialize;

use super::{io::data_files, io::DataError, rng_for, TextRow};

/// How text is cut into tokens.
pub enum Tokens {
    /// Whitespace-separated words.
    Words,
    /// A Hugging Face tokenizer (`tokenizer.json`).
    Tokenizer(Box<tokenizers::Tokenizer>),
}

impl Tokens {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Tokens, DataError> {
        tokenizers::Tokenizer::from_file(path)
            .map(|t| Tokens::Tokenizer(Box::new(t)))
            .map_err(|e| DataError::File {
                path: path.to_path_buf(),
                message: format!("cannot load the tokenizer: {e}"),
            })
    }

    /// The first `k` tokens of `text`, as text.
    pub fn first(&self, text: &str, k: usize) -> Result<String, String> {
        match self {
            Tokens::Words => Ok(text
                .split_whitespace()
                .take(k)
                .collect::<Vec<_>>()
                .join(" ")),
            Tokens::Tokenizer(t) => {
                let enc = t.encode(text, false).map_err(|e| e.to_string())?;
                let ids = &enc.get_ids()[..k.min(enc.get_ids().len())];
                t.decode(ids, true).map_err(|e| e.to_string())
            }
        }
    }
}

/// The paper's rule, as parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRule {
    pub min_chars: usize,
    pub min_tokens: usize,
    pub max_tokens: usize,
}

impl Default for PromptRule {
    fn default() -> Self {
        PromptRule {
            min_chars: 200,
            min_tokens: 2,
            max_tokens: 7,
        }
    }
}

/// One prompt and the index of its row in the split's corpus (from 0, across the split's
/// files in path order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prompt {
    pub prompt: String,
    pub source_row: usize,
}

/// The prompts of one split; `stream` names the split's random stream (`prompts:train`).
pub fn make_prompts(
    rows: &[TextRow],
    rule: &PromptRule,
    tokens: &Tokens,
    seed: u64,
    stream: &str,
) -> Result<Vec<Prompt>, String> {
    let mut rng = rng_for(seed, stream);
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row.text.chars().count() <= rule.min_chars {
            continue;
        }
        let k = rng.random_range(rule.min_tokens..=rule.max_tokens);
        let prompt = tokens
            .first(&row.text, k)
            .map_err(|e| format!("row {i}: {e}"))?;
        if !prompt.trim().is_empty() {
            out.push(Prompt {
                prompt,
                source_row: i,
            });
        }
    }
    Ok(out)
}

/// Keeps a seeded random subset of at most `max` prompts, in their original order.
pub fn subsample(prompts: Vec<Prompt>, max: Option<usize>, seed: u64, stream: &str) -> Vec<Prompt> {
    match max {
        Some(m) if m < prompts.len() => {
            let mut idx = sample(&mut rng_for(seed, stream), prompts.len(), m).into_vec();
            idx.sort_unstable();
            idx.into_iter().map(|i| prompts[i].clone()).collect()
        }
        _ => prompts,
    }
}

/// The files of a corpus: its own `train`/`test` files, or one pool to split.
#[derive(Clone, Debug, PartialEq)]
pub enum CorpusFiles {
    /// Files whose names start with `train` and with `test` (others are ignored).
    Splits {
        train: Vec<PathBuf>,
        test: Vec<PathBuf>,
        ignored: Vec<PathBuf>,
    },
    /// A file, or a folder without both kinds of files.
    Pool(Vec<PathBuf>),
}

/// Finds the files of the corpus at `path` (see [`CorpusFiles`]).
pub fn corpus_files(path: &Path) -> Result<CorpusFiles, DataError> {
    let files = data_files(path)?;
    if path.is_file() {
        return Ok(CorpusFiles::Pool(files));
    }
    let starts = |p: &PathBuf, prefix: &str| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix))
    };
    let (mut train, mut test, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    for f in &files {
        if starts(f, "train") {
            train.push(f.clone());
        } else if starts(f, "test") {
            test.push(f.clone());
        } else {
            ignored.push(f.clone());
        }
    }
    if train.is_empty() || test.is_empty() {
        return Ok(CorpusFiles::Pool(files));
    }
    Ok(CorpusFiles::Splits {
        train,
        test,
        ignored,
    })
}

/// Splits pooled rows: a seeded random `test_fraction` of them (rounded) is the test split;
/// both keep the pool's order.
pub fn split_pool(
    rows: Vec<TextRow>,
    test_fraction: f64,
    seed: u64,
) -> (Vec<TextRow>, Vec<TextRow>) {
    let n_test = (test_fraction * rows.len() as f64).round() as usize;
    let mut is_test = vec![false; rows.len()];
    for i in sample(&mut rng_for(seed, "prompts:pool-split"), rows.len(), n_test) {
        is_test[i] = true;
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (row, t) in rows.into_iter().zip(is_test) {
        if t {
            test.push(row);
        } else {
            train.push(row);
        }
    }
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str) -> TextRow {
        TextRow {
            text: text.into(),
            label: None,
        }
    }

    #[test]
    fn length_rule_and_token_counts() {
        let long = "word ".repeat(50); // 250 chars
        let exact = "x".repeat(200); // not longer than 200
        let rows = vec![row(&long), row(&exact), row("short"), row(&long)];
        let p = make_prompts(&rows, &PromptRule::default(), &Tokens::Words, 0, "t").unwrap();
        assert_eq!(
            p.iter().map(|p| p.source_row).collect::<Vec<_>>(),
            vec![0, 3]
        );
        for q in &p {
            let k = q.prompt.split_whitespace().count();
            assert!((2..=7).contains(&k), "{k}");
        }
        let rule = PromptRule {
            min_chars: 0,
            min_tokens: 3,
            max_tokens: 3,
        };
        let p = make_prompts(&[row("a  b\nc d e")], &rule, &Tokens::Words, 0, "t").unwrap();
        assert_eq!(p[0].prompt, "a b c");
        let p = make_prompts(
            &[row("only two"), row("   ")],
            &rule,
            &Tokens::Words,
            0,
            "t",
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].prompt, "only two");
    }

    #[test]
    fn k_covers_the_range_uniformly_and_is_seeded() {
        let long = (0..60)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        // 6 equally likely lengths: 7000/6 ≈ 1167 each, standard deviation ≈ 31.
        let rows: Vec<TextRow> = (0..7000).map(|_| row(&long)).collect();
        let p = make_prompts(&rows, &PromptRule::default(), &Tokens::Words, 0, "t").unwrap();
        let mut hist = [0usize; 8];
        for q in &p {
            hist[q.prompt.split_whitespace().count()] += 1;
        }
        assert_eq!(hist[0] + hist[1], 0);
        for (k, &h) in hist.iter().enumerate().skip(2) {
            assert!((1050..=1290).contains(&h), "k={k}: {h}");
        }
        let again = make_prompts(&rows, &PromptRule::default(), &Tokens::Words, 0, "t").unwrap();
        assert_eq!(p, again);
        let other = make_prompts(&rows, &PromptRule::default(), &Tokens::Words, 1, "t").unwrap();
        assert_ne!(p, other);
    }

    #[test]
    fn subsample_and_pool_split() {
        let prompts: Vec<Prompt> = (0..100)
            .map(|i| Prompt {
                prompt: format!("p{i}"),
                source_row: i,
            })
            .collect();
        let s = subsample(prompts.clone(), Some(10), 0, "x");
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0].source_row < w[1].source_row));
        assert_eq!(subsample(prompts.clone(), None, 0, "x").len(), 100);
        let rows: Vec<TextRow> = (0..100).map(|i| row(&format!("r{i}"))).collect();
        let (train, test) = split_pool(rows, 0.2, 0);
        assert_eq!((train.len(), test.len()), (80, 20));
        let names: std::collections::HashSet<_> =
            train.iter().chain(&test).map(|r| &r.text).collect();
        assert_eq!(names.len(), 100);
    }

    #[test]
    fn corpus_files_by_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("plain_text")).unwrap();
        for f in [
            "plain_text/train-00000-of-00001.parquet",
            "plain_text/test-00000-of-00001.parquet",
            "plain_text/unsupervised-00000-of-00001.parquet",
        ] {
            std::fs::write(p.join(f), "").unwrap();
        }
        match corpus_files(p).unwrap() {
            CorpusFiles::Splits {
                train,
                test,
                ignored,
            } => {
                assert_eq!((train.len(), test.len(), ignored.len()), (1, 1, 1));
                assert!(train[0].ends_with("plain_text/train-00000-of-00001.parquet"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(p.join("plain_text/test-00000-of-00001.parquet")).unwrap();
        assert!(matches!(corpus_files(p).unwrap(), CorpusFiles::Pool(f) if f.len() == 2));
    }
}
