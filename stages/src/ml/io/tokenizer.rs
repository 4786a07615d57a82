//! Text ↔ token ids with Hugging Face's `tokenizers`: load a `tokenizer.json`, train a GPT-2
//! style byte-level BPE on a corpus, and encode batches with left padding (generation) or right
//! padding (scoring, training) and attention masks.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::ml::error::{MlError, Result};
use crate::ml::io::batch::{Padding, TokenBatch};

/// GPT-2's end-of-text token, the EOS (and pad) token of tokenizers dagrun trains.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// Settings of [`TextTokenizer::train_bpe`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BpeTrainConfig {
    /// Final vocabulary size, including the 256 byte symbols and the special tokens.
    pub vocab_size: usize,
    /// A pair must occur at least this often to be merged.
    pub min_frequency: u64,
    /// Special tokens added first (ids 0, 1, ...); the first one is the EOS.
    pub special_tokens: Vec<String>,
}

impl Default for BpeTrainConfig {
    fn default() -> Self {
        BpeTrainConfig {
            vocab_size: 1024,
            min_frequency: 2,
            special_tokens: vec![EOS_TOKEN.to_string()],
        }
    }
}

/// A loaded or trained tokenizer, with the EOS and pad ids dagrun uses.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> MlError {
    MlError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    fn wrap(inner: Tokenizer) -> Self {
        let eos_id = inner.token_to_id(EOS_TOKEN);
        TextTokenizer { inner, eos_id }
    }

    /// Load a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| MlError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::wrap(inner))
    }

    /// Train a GPT-2 style byte-level BPE (no prefix space, all 256 byte symbols in the
    /// alphabet, so any text encodes) on `corpus`. Deterministic for a given corpus.
    pub fn train_bpe<I, S>(corpus: I, config: &BpeTrainConfig) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let specials = config
            .special_tokens
            .iter()
            .map(|s| AddedToken::from(s.clone(), true))
            .collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(config.vocab_size)
            .min_frequency(config.min_frequency)
            .special_tokens(specials)
            .initial_alphabet(alphabet)
            .show_progress(false)
            .build();
        let byte_level = ByteLevel::new(false, true, true);
        let mut tokenizer =
            TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
                .with_model(BPE::default())
                .with_normalizer(None)
                .with_pre_tokenizer(Some(byte_level))
                .with_post_processor(Some(byte_level))
                .with_decoder(Some(byte_level))
                .build()
                .map_err(tok_err)?;
        tokenizer.train(&mut trainer, corpus).map_err(tok_err)?;
        let inner: Tokenizer = tokenizer.into();
        Ok(Self::wrap(inner))
    }

    /// Write `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(false)
            .map_err(|e| MlError::Tokenizer(format!("{}: {e}", path.display())))?;
        crate::files::write_atomic(path, json.as_bytes()).map_err(|e| MlError::io(path, e))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The `<|endoftext|>` id, if the vocabulary has it.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id used for padding (EOS, as GPT-2 does, else 0); masked out, so its value is
    /// irrelevant to the results.
    pub fn pad_id(&self) -> u32 {
        self.eos_id.unwrap_or(0)
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` with the special tokens the tokenizer's post-processor adds, as
    /// transformers' `tokenizer(text)` does by default: Gemma's `<bos>`, Llama 3's
    /// `<|begin_of_text|>`; nothing for a GPT-2 byte-level BPE.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Encode `texts` into one padded batch.
    pub fn encode_batch(&self, texts: &[&str], padding: Padding) -> Result<TokenBatch> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        TokenBatch::from_rows(&rows, self.pad_id(), padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        [
            "the cat sat on the mat",
            "the dog sat on the log",
            "a cat and a dog",
            "the end of the story",
        ]
        .iter()
        .cycle()
        .take(40)
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn special_tokens_come_from_the_post_processor_only_when_asked() {
        let config = BpeTrainConfig {
            vocab_size: 300,
            min_frequency: 2,
            special_tokens: vec![EOS_TOKEN.into(), "<bos>".into()],
        };
        let mut tok = TextTokenizer::train_bpe(corpus().iter(), &config).unwrap();
        let plain = tok.encode("the cat").unwrap();
        // Byte-level post-processing (GPT-2) adds nothing.
        assert_eq!(tok.encode_with_special_tokens("the cat").unwrap(), plain);
        let bos = tok.inner.token_to_id("<bos>").unwrap();
        let template = tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("<bos> $A")
            .unwrap()
            .special_tokens(vec![("<bos>", bos)])
            .build()
            .unwrap();
        tok.inner.with_post_processor(Some(template));
        let with = tok.encode_with_special_tokens("the cat").unwrap();
        assert_eq!(with[0], bos);
        assert_eq!(&with[1..], &plain[..]);
        assert_eq!(tok.encode("the cat").unwrap(), plain);
    }

    #[test]
    fn trained_bpe_round_trips_any_text_and_learns_merges() {
        let config = BpeTrainConfig {
            vocab_size: 300,
            min_frequency: 2,
            ..Default::default()
        };
        let tok = TextTokenizer::train_bpe(corpus().iter(), &config).unwrap();
        assert_eq!(tok.eos_id(), Some(0));
        assert!(
            tok.vocab_size() > 257 && tok.vocab_size() <= 300,
            "{}",
            tok.vocab_size()
        );
        // Merges learnt: a frequent word takes fewer tokens than its bytes.
        let ids = tok.encode("the cat sat").unwrap();
        assert!(ids.len() < "the cat sat".len(), "{ids:?}");
        // Unseen bytes (non-ASCII) still encode and decode exactly.
        for text in ["the cat sat", "Zürich 東京 ✓", "  spaced  out "] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        // The EOS string is one token.
        assert_eq!(tok.encode(EOS_TOKEN).unwrap(), vec![0]);
    }

    #[test]
    fn save_and_load_give_the_same_ids() {
        let tok = TextTokenizer::train_bpe(corpus().iter(), &BpeTrainConfig::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let back = TextTokenizer::from_file(&path).unwrap();
        assert_eq!(
            back.encode("the dog and the cat").unwrap(),
            tok.encode("the dog and the cat").unwrap()
        );
        assert_eq!(back.eos_id(), tok.eos_id());
    }

    #[test]
    fn batches_pad_on_the_requested_side() {
        let tok = TextTokenizer::train_bpe(corpus().iter(), &BpeTrainConfig::default()).unwrap();
        let long = tok.encode("the cat sat on the mat").unwrap();
        let short = tok.encode("a dog").unwrap();
        let left = tok
            .encode_batch(&["the cat sat on the mat", "a dog"], Padding::Left)
            .unwrap();
        assert_eq!(left.len, long.len());
        let pad = long.len() - short.len();
        assert_eq!(&left.ids[left.len + pad..], &short[..]);
        assert!(left.mask[left.len..left.len + pad].iter().all(|&m| m == 0));
        let right = tok
            .encode_batch(&["the cat sat on the mat", "a dog"], Padding::Right)
            .unwrap();
        assert_eq!(&right.ids[right.len..right.len + short.len()], &short[..]);
        assert_eq!(right.row_tokens(1), short);
    }
}
