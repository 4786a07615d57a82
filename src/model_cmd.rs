//! `dagrun model ...`: inspect a language or reward model from the command line.
//!
//! The work is done by `dagrun_stages::ml::cli`; this file only parses flags and prints
//! (JSON with `--json`, a readable summary without).

use std::path::PathBuf;

use anyhow::Context;
use dagrun_stages::ml::cli::{self, GenerateOptions};
use dagrun_stages::ml::inference::sampling::SamplingConfig;
use dagrun_stages::ml::models::hf_weights::WeightDtype;
use dagrun_stages::ml::models::seq_cls::ScoreHead;
use dagrun_stages::ml::DeviceSpec;

/// Inspect models: per-token log-probs, generation, reward scores.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Print the log-probability of each token of a text given the tokens before it.
    ///
    /// JSON: {"ids": [...], "token_logprobs": [...], "sum_logprob": x}; token_logprobs has one
    /// entry per token after the first.
    Logprobs {
        /// Model folder (Hugging Face layout: config.json, model.safetensors or sharded
        /// model-*.safetensors with model.safetensors.index.json, tokenizer.json); GPT-2,
        /// Gemma, Llama or Qwen2.
        #[arg(long, value_name = "M")]
        model: PathBuf,
        /// The text to score.
        #[arg(long, value_name = "T")]
        text: String,
        #[command(flatten)]
        compute: Compute,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Continue a prompt with the model (stops at an EOS id of generation_config.json or
    /// config.json, e.g. Llama-3-Instruct's <|eot_id|>, or at <|endoftext|>; kept).
    ///
    /// JSON: {"ids": [...], "text": "..."}; ids include the prompt's.
    Generate {
        /// Model folder (Hugging Face GPT-2, Gemma, Llama or Qwen2 layout, with tokenizer.json).
        #[arg(long, value_name = "M")]
        model: PathBuf,
        /// The prompt to continue.
        #[arg(long, value_name = "T")]
        prompt: String,
        /// Generate at most this many tokens (transformers' `generate` stops at 20 tokens
        /// in all when it is given no length either).
        #[arg(long, value_name = "N", default_value_t = 20)]
        max_new_tokens: usize,
        /// Always take the most likely token (no sampling).
        #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
        greedy: bool,
        /// Sampling temperature (> 0).
        #[arg(long, value_name = "X", default_value_t = 1.0)]
        temperature: f64,
        /// Sample only among the K most likely tokens (0 = all).
        #[arg(long, value_name = "K", default_value_t = 0)]
        top_k: usize,
        /// Sample only among the most likely tokens whose probabilities add up to P.
        #[arg(long, value_name = "P", default_value_t = 1.0)]
        top_p: f64,
        /// Seed of the sampler: the same seed gives the same text.
        #[arg(long, value_name = "S", default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        compute: Compute,
        /// Print JSON instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// Score a response to a prompt with a reward model (every head, their mean and variance).
    ///
    /// JSON: {"rewards": [...], "mean": x, "variance": y} (sample variance over heads).
    Reward {
        /// Reward model folder: a model folder plus reward_heads.safetensors and
        /// reward_model.json, or a Hugging Face Llama/Gemma/Qwen2 *ForSequenceClassification
        /// folder.
        #[arg(long, value_name = "M")]
        model: PathBuf,
        /// The prompt.
        #[arg(long, value_name = "P")]
        prompt: String,
        /// The response to score (after the prompt, in the model's chat template).
        #[arg(long, value_name = "R")]
        response: String,
        #[command(flatten)]
        compute: Compute,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Write a reward model as a Hugging Face *ForSequenceClassification folder (one head),
    /// which transformers' AutoModelForSequenceClassification and TRL load.
    ///
    /// The folder has config.json (architectures [XForSequenceClassification], num_labels 1,
    /// pad_token_id), model.safetensors with the backbone and score.weight, tokenizer.json,
    /// tokenizer_config.json (with the chat template the reward model reads with) and
    /// generation_config.json. GPT-2, Gemma, Llama and Qwen2 backbones.
    ///
    /// The head: the model's only one; of an ensemble, one member (--head K) or the mean of
    /// all heads (--mean; exact: the mean of linear heads is one linear head).
    ///
    /// transformers' score layer has no bias, so the head's bias is dropped: the exported
    /// reward is dagrun's minus that bias (printed). Bradley–Terry rewards are defined up to
    /// a shift, so preferences, rankings and reward differences are unchanged.
    ///
    /// transformers scores the last token that is not pad_token_id, dagrun the last real
    /// token: they agree unless a scored text ends in the pad token (an EOS; a reward
    /// model's input ends with none).
    ///
    /// JSON: {"out", "architecture", "head", "pad_token_id", "dropped_bias", "chat_template"}.
    ExportClassifier {
        /// Reward model folder (dagrun's heads beside a backbone, or a classifier folder),
        /// or a node whose output is one (`head_ensemble`, `backbone`).
        #[arg(long, value_name = "M")]
        model: PathBuf,
        /// The folder to write (created; files in it are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Export head K of the ensemble (from 0).
        #[arg(long, value_name = "K", conflicts_with = "mean")]
        head: Option<usize>,
        /// Export the mean of all heads as one head.
        #[arg(long)]
        mean: bool,
        #[command(flatten)]
        compute: Compute,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// Where and in what dtype a model runs (every `dagrun model` subcommand takes these).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Compute {
    /// Where to run: auto, cpu, libtorch-cpu, cuda, cuda:N.
    #[arg(long, value_name = "D", default_value = "auto")]
    device: DeviceSpec,
    /// Weights and compute dtype: f32, or bf16 (Gemma/Llama/Qwen2).
    #[arg(long, value_name = "T", default_value = "f32")]
    dtype: WeightDtype,
}

/// Run a `dagrun model` subcommand, printing its result on stdout.
impl ModelCommand {
    /// The `--model` argument, to resolve a node id into a folder.
    pub fn model_mut(&mut self) -> &mut PathBuf {
        match self {
            ModelCommand::Logprobs { model, .. }
            | ModelCommand::Generate { model, .. }
            | ModelCommand::Reward { model, .. }
            | ModelCommand::ExportClassifier { model, .. } => model,
        }
    }
}

pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    let (value, json, text) = match cmd {
        ModelCommand::Logprobs {
            model,
            text,
            compute: Compute { device, dtype },
            json,
        } => {
            let v = cli::logprobs(&model, &text, device, dtype)
                .with_context(|| format!("scoring with {}", model.display()))?;
            let human = if json {
                String::new()
            } else {
                logprobs_table(&model, &v)?
            };
            (v, json, human)
        }
        ModelCommand::Generate {
            model,
            prompt,
            max_new_tokens,
            greedy,
            temperature,
            top_k,
            top_p,
            seed,
            compute: Compute { device, dtype },
            json,
        } => {
            let opts = GenerateOptions {
                max_new_tokens,
                sampling: SamplingConfig {
                    greedy,
                    temperature,
                    top_k,
                    top_p,
                },
                seed,
                device,
                stop_at_eos: true,
                dtype,
            };
            let v = cli::generate(&model, &prompt, &opts)
                .with_context(|| format!("generating with {}", model.display()))?;
            let human = v["text"].as_str().unwrap_or_default().to_string();
            (v, json, human)
        }
        ModelCommand::Reward {
            model,
            prompt,
            response,
            compute: Compute { device, dtype },
            json,
        } => {
            let v = cli::reward(&model, &prompt, &response, device, dtype)
                .with_context(|| format!("scoring with {}", model.display()))?;
            let rewards: Vec<String> = v["rewards"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| format!("{:.4}", r.as_f64().unwrap_or(f64::NAN)))
                        .collect()
                })
                .unwrap_or_default();
            let human = format!(
                "rewards:  {}\nmean:     {:.4}\nvariance: {:.4}",
                rewards.join(" "),
                v["mean"].as_f64().unwrap_or(f64::NAN),
                v["variance"].as_f64().unwrap_or(f64::NAN)
            );
            (v, json, human)
        }
        ModelCommand::ExportClassifier {
            model,
            out,
            head,
            mean,
            compute: Compute { device, dtype },
            json,
        } => {
            let choice = match (head, mean) {
                (Some(k), _) => ScoreHead::Member(k),
                (None, true) => ScoreHead::Mean,
                (None, false) => ScoreHead::Only,
            };
            let v = cli::export_classifier(&model, &out, choice, device, dtype)
                .with_context(|| format!("exporting {} as a classifier", model.display()))?;
            let human = format!(
                "wrote {} ({}, {}; pad_token_id {}, chat template {})\n\
                 dropped the head's bias {:.6}: the exported reward is dagrun's minus it \
                 (preferences and rankings are unchanged)",
                out.display(),
                v["architecture"].as_str().unwrap_or_default(),
                v["head"].as_str().unwrap_or_default(),
                v["pad_token_id"],
                v["chat_template"].as_str().unwrap_or_default(),
                v["dropped_bias"].as_f64().unwrap_or(f64::NAN)
            );
            (v, json, human)
        }
    };
    if json {
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

/// One line per token: position, id, text, log-prob; then the sum.
fn logprobs_table(model: &std::path::Path, v: &serde_json::Value) -> anyhow::Result<String> {
    let ids: Vec<u32> = v["ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    let lps = v["token_logprobs"].as_array().cloned().unwrap_or_default();
    let tokens = cli::token_strings(model, &ids)?;
    let mut out = format!(
        "{:>4}  {:>7}  {:<16}  {:>10}\n",
        "pos", "id", "token", "logprob"
    );
    for (i, (id, tok)) in ids.iter().zip(&tokens).enumerate() {
        let lp = if i == 0 {
            "-".to_string()
        } else {
            format!("{:.4}", lps[i - 1].as_f64().unwrap_or(f64::NAN))
        };
        out += &format!("{i:>4}  {id:>7}  {:<16}  {lp:>10}\n", format!("{tok:?}"));
    }
    out += &format!(
        "sum of log-probs: {:.4}",
        v["sum_logprob"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ModelCommand,
    }

    fn parse(args: &[&str]) -> Result<ModelCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("model").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn flags_parse_as_documented() {
        let cmd = parse(&[
            "logprobs", "--model", "m", "--text", "hi", "--device", "cpu", "--json",
        ])
        .unwrap();
        assert!(matches!(
            cmd,
            ModelCommand::Logprobs {
                json: true,
                compute: Compute {
                    device: DeviceSpec::Cpu,
                    ..
                },
                ..
            }
        ));
        let cmd = parse(&[
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.7",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--seed",
            "3",
            "--json",
        ])
        .unwrap();
        match cmd {
            ModelCommand::Generate {
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
                greedy,
                ..
            } => {
                assert_eq!((max_new_tokens, top_k, seed, greedy), (5, 40, 3, false));
                assert_eq!((temperature, top_p), (0.7, 0.9));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&[
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--max-new-tokens",
            "5",
            "--greedy",
            "--seed",
            "1"
        ])
        .is_err());
        assert!(parse(&["logprobs", "--model", "m", "--text", "t", "--device", "tpu"]).is_err());
        let cmd = parse(&[
            "reward",
            "--model",
            "m",
            "--prompt",
            "p",
            "--response",
            "r",
            "--json",
        ])
        .unwrap();
        assert!(matches!(
            cmd,
            ModelCommand::Reward {
                json: true,
                compute: Compute {
                    device: DeviceSpec::Auto,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn commands_run_on_the_tiny_fixture() {
        let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny");
        for args in [
            vec!["logprobs", "--text", "Hello there", "--device", "cpu"],
            vec![
                "logprobs",
                "--text",
                "Hello there",
                "--device",
                "cpu",
                "--json",
            ],
            vec![
                "generate",
                "--prompt",
                "The movie",
                "--max-new-tokens",
                "4",
                "--greedy",
                "--device",
                "cpu",
            ],
        ] {
            let mut full = vec![args[0], "--model", model.to_str().unwrap()];
            full.extend(&args[1..]);
            run(parse(&full).unwrap()).unwrap();
        }
        let err = run(parse(&[
            "reward",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a",
            "--response",
            "b",
            "--device",
            "cpu",
        ])
        .unwrap())
        .unwrap_err();
        assert!(format!("{err:#}").contains("not a reward model"), "{err:#}");
    }
}
