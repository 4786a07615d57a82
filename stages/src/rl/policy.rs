//! The model PPO trains: a policy and its value head, one module (one optimizer updates
//! both), and its weights as a checkpoint stores them.
//!
//! The policy is any causal LM dagrun runs ([`Backbone`]: GPT-2, or a Gemma/Llama/Qwen2
//! decoder with an LM head); the reference policy shares its architecture. PPO trains in
//! float32: [`load_policy`] loads both that way.
//!
//! How a policy reads its prompts ([`read_prompts`]) is decided here once, for the `ppo` kind
//! (the policy trains on them) and the `judge_eval` kind (the policy answers them): the same
//! template, the same ids, and the same text for the reward model or the judge.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use crate::data::Message;
use crate::ml::io::chat::ChatTemplate;
use crate::ml::io::tokenizer::TextTokenizer;
use crate::ml::models::backbone::{Backbone, LanguageModel};
use crate::ml::models::heads::LinearHeads;
use crate::ml::models::hf_weights::WeightDtype;
use crate::ml::models::value_head::ValueHead;
use crate::ml::models::weights::HostTensors;
use crate::ml::reward::SampleTexts;
use crate::ml::{MlError, Result};

/// The policy architecture PPO trains: GPT-2 or a Gemma/Llama/Qwen2 decoder (the reference
/// policy has the same).
pub type Policy = Backbone;

/// Loads a policy (or the reference) from a Hugging Face folder in float32, detecting the
/// architecture from its `config.json`; a folder without an LM head is an error naming it.
pub fn load_policy(dir: &Path, device: &Device) -> Result<Policy> {
    Backbone::causal_lm_from_hf_dir(dir, device, WeightDtype::F32)
}

/// Prompts as a policy reads them.
#[derive(Debug, Clone)]
pub struct PolicyPrompts {
    /// The template the prompts were rendered with (`plain` unless one was chosen).
    pub template: ChatTemplate,
    /// Each prompt's token ids (an empty prompt is the tokenizer's end-of-text token, or 0).
    pub ids: Vec<Vec<u32>>,
    /// What a reward model or a judge reads of a sample after one of these prompts: the
    /// prompt's own text and the response.
    pub samples: SampleTexts,
}

/// `prompts` as the policy in folder `dir` (tokenizer `tok`) reads them, with the template
/// `chosen` (the `prompt_template` param of `ppo` and `judge_eval`):
///
/// - `plain` (also `None`): the prompt's text as `tokenizer(text)` encodes it, with the BOS
///   its post-processor adds (Gemma's, Llama's) and nothing for GPT-2's byte-level BPE;
/// - a chat template (`model`: the folder's own; or a named one, checked against `tok`): the
///   prompt as a user turn followed by the opening of the assistant's turn, tokenised without
///   added special tokens (the template writes its BOS).
///
/// A prompt read with tokens around its text maps back to that text in
/// [`PolicyPrompts::samples`], so a reward model reads the prompt's own text. An unusable
/// template is an error naming `prompt_template` and the folder.
pub fn read_prompts(
    dir: &Path,
    tok: TextTokenizer,
    chosen: Option<&ChatTemplate>,
    prompts: &[String],
) -> Result<PolicyPrompts> {
    let template = match chosen {
        None | Some(ChatTemplate::Plain) => ChatTemplate::Plain,
        Some(t) => ChatTemplate::for_model(dir, &tok, Some(t.clone())).map_err(|e| {
            MlError::Invalid(format!(
                "`prompt_template` of the policy {}: {e}",
                dir.display()
            ))
        })?,
    };
    let mut own_texts = HashMap::new();
    let ids = prompts
        .iter()
        .map(|t| {
            let mut ids = if template.is_chat() {
                let text = template.render_prompt(&[Message::new("user", t.as_str())], true)?;
                let ids = template.encode_text(&tok, &text)?;
                own_texts.insert(ids.clone(), t.clone());
                ids
            } else {
                let ids = tok.encode_with_special_tokens(t)?;
                if ids != tok.encode(t)? {
                    own_texts.insert(ids.clone(), t.clone());
                }
                ids
            };
            if ids.is_empty() {
                ids.push(tok.eos_id().unwrap_or(0));
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let prompts_are_turns = template.is_chat();
    Ok(PolicyPrompts {
        template,
        ids,
        samples: SampleTexts {
            policy_tokenizer: tok,
            prompt_texts: own_texts,
            prompts_are_turns,
        },
    })
}

/// A policy with its value head.
#[derive(Module, Debug)]
pub struct PolicyValue {
    pub lm: Policy,
    pub value: ValueHead,
}

/// The value head's tensors in a checkpoint are named `v_head.*`.
const VALUE_PREFIX: &str = "v_head.";

impl PolicyValue {
    /// A fresh value head (initialised from `seed`) on `policy`'s final hidden states.
    pub fn new(policy: impl Into<Policy>, seed: u64, device: &Device) -> Result<Self> {
        let policy = policy.into();
        let value = ValueHead::init(policy.hidden_size(), seed, device)?;
        Ok(PolicyValue { lm: policy, value })
    }

    /// All weights, the policy's under their own names and the value head's as `v_head.*`.
    pub fn weights(&self) -> HostTensors {
        let mut set = HostTensors::new("");
        for (n, t) in self.lm.named_weights() {
            set.tensors.insert(n, t);
        }
        for (n, t) in self.value.heads().to_host(std::path::Path::new("")).tensors {
            set.tensors.insert(format!("{VALUE_PREFIX}{n}"), t);
        }
        set
    }

    /// The model back from [`PolicyValue::weights`] on `device`: a policy of `like`'s
    /// architecture, configuration and dtype (its own weights are not used).
    pub fn from_weights(like: &Policy, mut set: HostTensors, device: &Device) -> Result<Self> {
        let mut head = HostTensors::new("v_head");
        let keys: Vec<String> = set
            .tensors
            .keys()
            .filter(|k| k.starts_with(VALUE_PREFIX))
            .cloned()
            .collect();
        for k in keys {
            let t = set.tensors.remove(&k).expect("listed");
            head.tensors.insert(k[VALUE_PREFIX.len()..].to_string(), t);
        }
        let lm = like.with_weights(set, device)?;
        let value = ValueHead::from_heads(LinearHeads::from_host(
            &mut head,
            lm.hidden_size(),
            1,
            device,
        )?);
        Ok(PolicyValue { lm, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's tokenizer adds nothing: a plain prompt is its text's ids, as before
    /// `read_prompts` existed, and a sample is read as decoded (no prompt text to map back).
    #[test]
    fn gpt2_reads_plain_prompts_without_a_bos_and_model_needs_a_template() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
        let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
        let texts = vec!["the movie".to_string(), String::new()];
        let read = read_prompts(&dir, tok.clone(), None, &texts).unwrap();
        assert_eq!(read.template, ChatTemplate::Plain);
        assert_eq!(read.ids[0], tok.encode("the movie").unwrap());
        assert_eq!(read.ids[1], [tok.eos_id().unwrap()]);
        assert!(read.samples.prompt_texts.is_empty());
        assert!(!read.samples.prompts_are_turns);
        let plain = read_prompts(&dir, tok.clone(), Some(&ChatTemplate::Plain), &texts).unwrap();
        assert_eq!(plain.ids, read.ids);
        // `model` on a folder without a chat template: an error naming the param and folder.
        let e = read_prompts(&dir, tok, Some(&ChatTemplate::Model), &texts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prompt_template") && e.contains("gpt2-tiny"),
            "{e}"
        );
    }
}
