//! The one reward-model reader: a prompt and a response → text (the chat template) → token
//! ids → right-padded batches → per-head scores. Every kind and command that shows text to a
//! reward model goes through here: `ppo` (the rollout's scores), `judge_eval` (a model judge),
//! `reward_bench`, `head_ensemble` (the frozen backbone's features), `backbone_pretrain` (its
//! training batches, [`RewardInput`] alone) and `dagrun model reward`.
//!
//! What a reward model reads, decided once (docs/algorithms.md §1; checked against
//! transformers by `stages/tests/ml/reward.rs` with `tests/fixtures/reward-reader.json`, written
//! by `scripts/make_reward_reader_fixtures.py`):
//!
//! - **Text.** A chat template renders a user turn and an assistant turn
//!   ([`ChatTemplate::render_pair`]). `plain` (dagrun's GPT-2 reward models) joins a prompt and
//!   a response given as two texts with one space, unless either side has whitespace at the
//!   join ([`Exchange::Pair`]); a response a policy sampled continues its prompt and is read as
//!   generated: the whole sequence decoded at once ([`Exchange::Sampled`]).
//! - **Special tokens.** A chat template writes its BOS as text, and the text is tokenised
//!   without adding special tokens (transformers' `apply_chat_template(tokenize=True)`);
//!   `plain` text is tokenised as `tokenizer(text)` does, with what the tokenizer's
//!   post-processor adds (nothing for GPT-2; the BOS of Gemma's and Llama's tokenizers).
//! - **EOS.** Nothing is appended. A sampled response loses the stop token that ended it
//!   ([`without_stop`]): preference text has none, and the reward would otherwise be read at a
//!   token the model never saw in that place.
//! - **Length.** At most `max_len` tokens, the last ones (the reward is read at the end), and a
//!   leading BOS stays: BOS + the last `max_len − 1` tokens, as transformers truncates on the
//!   left before adding special tokens.
//! - **Empty.** A text of no tokens (`plain`, empty prompt and response) is read as the
//!   tokenizer's `<|endoftext|>` alone (GPT-2's document boundary); a tokenizer without one
//!   cannot read it, which is an error.
//! - **Batches** are right-padded with the tokenizer's pad id, which the attention mask hides;
//!   the reward is read where the [`RewardModel`]'s pooling says (the last real token, or
//!   where transformers' sequence classifiers read it).

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use super::error::{MlError, Result};
use super::io::chat::ChatTemplate;
use super::io::tokenizer::TextTokenizer;
use super::models::gpt2_hf::TOKENIZER_FILE;
use super::models::hf_weights::WeightDtype;
use super::models::reward_model::RewardModel;
use super::models::weights::to_f32_vec;
use super::{Padding, TokenBatch};

/// A prompt and a response, as a reward model is asked about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// Two texts given apart (preference data, RewardBench rows, `dagrun model reward`).
    Pair { prompt: String, response: String },
    /// A response a policy sampled after its prompt: `text` is the whole sequence decoded at
    /// once (what `plain` reads: the policy's text as generated); a chat template reads the
    /// prompt and the response as two turns.
    Sampled {
        prompt: String,
        response: String,
        text: String,
    },
}

impl Exchange {
    /// A prompt and a response given as two texts.
    pub fn pair(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Exchange::Pair {
            prompt: prompt.into(),
            response: response.into(),
        }
    }

    /// A sequence a policy sampled (its token ids: the prompt's `prompt_len`, then the
    /// response), decoded with the policy's tokenizer, without the stop token that ended the
    /// response ([`without_stop`]).
    pub fn sampled(
        policy: &TextTokenizer,
        seq: &[u32],
        prompt_len: usize,
        stop_ids: &[u32],
    ) -> Result<Self> {
        let seq = without_stop(seq, prompt_len, stop_ids);
        let cut = prompt_len.min(seq.len());
        Ok(Exchange::Sampled {
            prompt: policy.decode(&seq[..cut])?,
            response: policy.decode(&seq[cut..])?,
            text: policy.decode(seq)?,
        })
    }

    /// The prompt.
    pub fn prompt(&self) -> &str {
        match self {
            Exchange::Pair { prompt, .. } | Exchange::Sampled { prompt, .. } => prompt,
        }
    }

    /// The response.
    pub fn response(&self) -> &str {
        match self {
            Exchange::Pair { response, .. } | Exchange::Sampled { response, .. } => response,
        }
    }
}

/// What a reward model reads of a sampled sequence (prompt ⊕ response): the sequence without
/// the stop token that closed the response. Generation cuts a response after its first stop
/// token and keeps it (the policy's log-probs and the KL include it), but reward models are
/// trained on preference text, which has none (TRL, where GPT-2's pad is its EOS, reads the
/// reward at the token before it too). `prompt_len` protects the prompt.
pub fn without_stop<'a>(seq: &'a [u32], prompt_len: usize, stop_ids: &[u32]) -> &'a [u32] {
    match seq.split_last() {
        Some((last, rest)) if seq.len() > prompt_len && stop_ids.contains(last) => rest,
        _ => seq,
    }
}

/// The token ids of one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Tokens were cut from the front to fit `max_len`.
    pub truncated: bool,
}

/// How a reward model's tokenizer and chat template turn exchanges into token ids (the text
/// half of the reader; `backbone_pretrain` trains on its batches).
#[derive(Debug, Clone)]
pub struct RewardInput {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    max_len: usize,
    /// The id a truncation keeps in front, if the tokenised text starts with it.
    bos: Option<u32>,
}

impl RewardInput {
    /// `tokenizer` and `template` (checked against each other), keeping at most `max_len` ≥ 1
    /// tokens per sequence.
    pub fn new(tokenizer: TextTokenizer, template: ChatTemplate, max_len: usize) -> Result<Self> {
        if max_len == 0 {
            return Err(MlError::Invalid(
                "a reward model reads at least 1 token (max_len 0)".into(),
            ));
        }
        template.check_tokenizer(&tokenizer)?;
        let bos = match template.bos_token() {
            Some(text) => tokenizer.encode(text)?.first().copied(),
            // A chat template without a BOS (Qwen2.5's) writes none, and none is added.
            None if template.is_chat() => None,
            // What the post-processor puts before a text (Gemma's, Llama's BOS; GPT-2: none).
            None => tokenizer.encode_with_special_tokens("")?.first().copied(),
        };
        Ok(RewardInput {
            tokenizer,
            template,
            max_len,
            bos,
        })
    }

    /// The input of the reward model in folder `dir`: its `tokenizer.json`, and `chosen` or the
    /// chat template its folder implies ([`ChatTemplate::for_model`]).
    pub fn for_model(dir: &Path, chosen: Option<ChatTemplate>, max_len: usize) -> Result<Self> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Err(MlError::Invalid(format!(
                "{}: no {TOKENIZER_FILE} (a reward model folder needs its tokenizer)",
                dir.display()
            )));
        }
        let tokenizer = TextTokenizer::from_file(&path)?;
        let template = ChatTemplate::for_model(dir, &tokenizer, chosen)?;
        Self::new(tokenizer, template, max_len)
    }

    /// The chat template in use.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The reward model's tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The most tokens a sequence keeps.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The text the reward model reads.
    pub fn text(&self, exchange: &Exchange) -> Result<String> {
        match (&self.template, exchange) {
            (ChatTemplate::Plain, Exchange::Sampled { text, .. }) => Ok(text.clone()),
            (t, e) => t.render_pair(e.prompt(), e.response()),
        }
    }

    /// The token ids the reward model reads (see the module docs).
    pub fn encode(&self, exchange: &Exchange) -> Result<Encoded> {
        let text = self.text(exchange)?;
        let mut ids = if self.template.is_chat() {
            self.tokenizer.encode(&text)?
        } else {
            self.tokenizer.encode_with_special_tokens(&text)?
        };
        if ids.is_empty() {
            ids.push(self.tokenizer.eos_id().ok_or_else(|| {
                MlError::Invalid(
                    "an empty prompt and response make no tokens, and the reward model's \
                     tokenizer has no `<|endoftext|>` to read instead"
                        .into(),
                )
            })?);
        }
        let truncated = ids.len() > self.max_len;
        if truncated {
            let keep_bos = self.max_len > 1 && self.bos.is_some_and(|b| ids[0] == b);
            let front = usize::from(keep_bos);
            ids.drain(front..ids.len() - (self.max_len - front));
        }
        Ok(Encoded { ids, truncated })
    }

    /// Token rows as one right-padded batch (pad: the tokenizer's, masked out).
    pub fn batch(&self, rows: &[Vec<u32>]) -> Result<TokenBatch> {
        TokenBatch::from_rows(rows, self.tokenizer.pad_id(), Padding::Right)
    }
}

/// Per-head rewards of `n` sequences: `[n × heads]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub heads: usize,
    pub values: Vec<f32>,
}

impl Scores {
    /// Sequences scored.
    pub fn len(&self) -> usize {
        self.values.len() / self.heads.max(1)
    }

    /// Were no sequences scored?
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The heads' rewards of sequence `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.heads..(i + 1) * self.heads]
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks(self.heads.max(1))
    }

    /// The ensemble mean reward `(1/K) Σ_k r_k` of sequence `i`.
    pub fn mean(&self, i: usize) -> f64 {
        self.row(i).iter().map(|&x| x as f64).sum::<f64>() / self.heads as f64
    }

    /// Head `h`'s reward of sequence `i`.
    pub fn head(&self, i: usize, h: usize) -> f64 {
        self.row(i)[h] as f64
    }
}

/// A reward model with its input: exchanges in, scores out, by batches.
#[derive(Debug)]
pub struct RewardReader {
    input: RewardInput,
    model: RewardModel,
    batch_size: usize,
}

impl RewardReader {
    /// A reader of `model` through `input`, `batch_size` ≥ 1 sequences per forward pass.
    pub fn new(model: RewardModel, input: RewardInput, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(MlError::Invalid(
                "reward batches need at least 1 sequence".into(),
            ));
        }
        Ok(RewardReader {
            input,
            model,
            batch_size,
        })
    }

    /// The reward model folder `dir` loaded on `device` in `dtype` (see
    /// [`RewardModel::load_as`]), read with `template` (default: its folder's).
    pub fn load(
        dir: &Path,
        device: &Device,
        dtype: WeightDtype,
        template: Option<ChatTemplate>,
        max_len: usize,
        batch_size: usize,
    ) -> Result<Self> {
        let input = RewardInput::for_model(dir, template, max_len)?;
        let model = RewardModel::load_as(dir, device, dtype)?;
        Self::new(model, input, batch_size)
    }

    /// The input half.
    pub fn input(&self) -> &RewardInput {
        &self.input
    }

    /// The reward model.
    pub fn model(&self) -> &RewardModel {
        &self.model
    }

    /// The reward model, given back.
    pub fn into_model(self) -> RewardModel {
        self.model
    }

    /// Number of heads K.
    pub fn num_heads(&self) -> usize {
        self.model.heads.num_heads()
    }

    /// Token ids of `exchanges`.
    pub fn encode(&self, exchanges: &[Exchange]) -> Result<Vec<Encoded>> {
        exchanges.iter().map(|e| self.input.encode(e)).collect()
    }

    /// Scores of `exchanges`.
    pub fn score(&self, exchanges: &[Exchange]) -> Result<Scores> {
        let rows: Vec<Vec<u32>> = self.encode(exchanges)?.into_iter().map(|e| e.ids).collect();
        self.score_ids(&rows, &mut |_| Ok(()))
    }

    /// Scores of token rows (from [`RewardReader::encode`]), by batches; `after_batch` sees
    /// the number of rows scored so far (progress, cancellation: an error stops the reading).
    pub fn score_ids(
        &self,
        rows: &[Vec<u32>],
        after_batch: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Scores> {
        let heads = self.num_heads();
        let mut values = Vec::with_capacity(rows.len() * heads);
        for chunk in rows.chunks(self.batch_size) {
            let batch = self.input.batch(chunk)?;
            values.extend(to_f32_vec(self.model.forward(&batch)?));
            after_batch(values.len() / heads)?;
        }
        Ok(Scores { heads, values })
    }

    /// The pooled final hidden states `[n × hidden]` (row-major, on the host) that the heads
    /// read, of `exchanges` (`head_ensemble` trains its heads on them).
    pub fn features(&self, exchanges: &[Exchange]) -> Result<Vec<f32>> {
        let model = self.model.valid();
        let mut out = Vec::new();
        for chunk in exchanges.chunks(self.batch_size) {
            let rows: Vec<Vec<u32>> = self.encode(chunk)?.into_iter().map(|e| e.ids).collect();
            out.extend(to_f32_vec(model.features(&self.input.batch(&rows)?)?));
        }
        Ok(out)
    }
}

/// Scores of sequences a policy sampled (prompt ⊕ response, the policy's token ids): what PPO's
/// rollout asks of its reward model.
pub trait SampleScorer {
    /// Number of heads K.
    fn num_heads(&self) -> usize;
    /// Scores of `seqs` (`prompt_lens[i]` prompt tokens each), whose responses end at one of
    /// `stop_ids` or at the length limit.
    fn score_samples(
        &self,
        seqs: &[Vec<u32>],
        prompt_lens: &[usize],
        stop_ids: &[u32],
    ) -> Result<Scores>;
}

/// What a reward model or a judge reads of a sequence a policy sampled: the sequence decoded
/// with the policy's tokenizer ([`Exchange::sampled`]), unless its prompt ids are a key of
/// `prompt_texts` (a prompt the policy read with tokens around its text: a chat template's
/// markup, a BOS its tokenizer adds). Such a prompt is read as its own text, without the
/// policy's tokens: as a pair with the decoded response when `prompts_are_turns` (chat turns),
/// else as a sample whose text is the prompt's followed by the response as generated.
/// `rl::policy::read_prompts` builds it with the prompts' ids, for PPO and the judge alike.
#[derive(Debug, Clone)]
pub struct SampleTexts {
    pub policy_tokenizer: TextTokenizer,
    pub prompt_texts: std::collections::HashMap<Vec<u32>, String>,
    pub prompts_are_turns: bool,
}

impl SampleTexts {
    /// The exchange a reward model reads of `seq` (`prompt_len` prompt tokens, then a
    /// response that ends at one of `stop_ids` or at the length limit).
    pub fn exchange(&self, seq: &[u32], prompt_len: usize, stop_ids: &[u32]) -> Result<Exchange> {
        let sampled = Exchange::sampled(&self.policy_tokenizer, seq, prompt_len, stop_ids)?;
        Ok(
            match self.prompt_texts.get(&seq[..prompt_len.min(seq.len())]) {
                Some(own) if self.prompts_are_turns => {
                    Exchange::pair(own.clone(), sampled.response())
                }
                Some(own) => Exchange::Sampled {
                    prompt: own.clone(),
                    response: sampled.response().to_string(),
                    text: format!("{own}{}", sampled.response()),
                },
                None => sampled,
            },
        )
    }
}

/// A [`RewardReader`] reading a policy's samples as text, as [`SampleTexts`] says.
#[derive(Debug)]
pub struct ReadSamples {
    pub reader: RewardReader,
    pub samples: SampleTexts,
}

impl SampleScorer for ReadSamples {
    fn num_heads(&self) -> usize {
        self.reader.num_heads()
    }

    fn score_samples(
        &self,
        seqs: &[Vec<u32>],
        prompt_lens: &[usize],
        stop_ids: &[u32],
    ) -> Result<Scores> {
        let exchanges = seqs
            .iter()
            .zip(prompt_lens)
            .map(|(s, &n)| self.samples.exchange(s, n, stop_ids))
            .collect::<Result<Vec<_>>>()?;
        self.reader.score(&exchanges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::io::tokenizer::{BpeTrainConfig, EOS_TOKEN};

    fn gpt2_tokenizer() -> TextTokenizer {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
        TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap()
    }

    #[test]
    fn the_reward_model_reads_a_response_without_its_closing_stop_token() {
        let stop = [50256, 7];
        // prompt [1, 2], response [3, 4, stop]
        assert_eq!(without_stop(&[1, 2, 3, 4, 50256], 2, &stop), &[1, 2, 3, 4]);
        assert_eq!(without_stop(&[1, 2, 3, 7], 2, &stop), &[1, 2, 3]);
        // a response cut by the length limit keeps its last token
        assert_eq!(without_stop(&[1, 2, 3, 4], 2, &stop), &[1, 2, 3, 4]);
        // an empty response: the prompt is never cut, even when it ends in a stop id
        assert_eq!(without_stop(&[1, 7], 2, &stop), &[1, 7]);
        // only the last token goes
        assert_eq!(without_stop(&[1, 7, 7], 1, &stop), &[1, 7]);
        assert_eq!(without_stop(&[], 0, &stop), &[] as &[u32]);
    }

    /// `plain` reads a sampled continuation as generated (no space added inside a word that
    /// the response continues), and a pair of texts with one space at the join.
    #[test]
    fn plain_reads_samples_as_generated_and_pairs_joined() {
        let tok = gpt2_tokenizer();
        let input = RewardInput::new(tok.clone(), ChatTemplate::Plain, 64).unwrap();
        let prompt = tok.encode("the mo").unwrap();
        let response = tok.encode("vie was good").unwrap();
        let eos = tok.eos_id().unwrap();
        let seq: Vec<u32> = [&prompt[..], &response[..], &[eos]].concat();
        let sampled = Exchange::sampled(&tok, &seq, prompt.len(), &[eos]).unwrap();
        assert_eq!(sampled.response(), "vie was good");
        assert_eq!(input.text(&sampled).unwrap(), "the movie was good");
        let pair = Exchange::pair("the movie", "was good");
        assert_eq!(input.text(&pair).unwrap(), "the movie was good");
        // The stop token is not read; the ids are the text's.
        assert_eq!(
            input.encode(&sampled).unwrap().ids,
            tok.encode("the movie was good").unwrap()
        );
    }

    #[test]
    fn an_empty_text_is_read_as_end_of_text_and_long_ones_keep_their_end() {
        let tok = gpt2_tokenizer();
        let input = RewardInput::new(tok.clone(), ChatTemplate::Plain, 3).unwrap();
        let empty = input.encode(&Exchange::pair("", "")).unwrap();
        assert_eq!(empty.ids, [tok.eos_id().unwrap()]);
        let long = input.encode(&Exchange::pair("a b c d e", "f g h")).unwrap();
        let all = tok.encode("a b c d e f g h").unwrap();
        assert!(long.truncated);
        assert_eq!(long.ids, all[all.len() - 3..]);
        // Without an `<|endoftext|>`, an empty text cannot be read.
        let config = BpeTrainConfig {
            vocab_size: 300,
            min_frequency: 1,
            special_tokens: vec!["<pad>".into()],
        };
        let no_eos =
            TextTokenizer::train_bpe(["some text here"].iter().cycle().take(5), &config).unwrap();
        assert!(no_eos.eos_id().is_none() && EOS_TOKEN != "<pad>");
        let input = RewardInput::new(no_eos, ChatTemplate::Plain, 8).unwrap();
        let e = input
            .encode(&Exchange::pair("", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `<|endoftext|>`"), "{e}");
        assert!(RewardInput::new(tok, ChatTemplate::Plain, 0).is_err());
    }
}
