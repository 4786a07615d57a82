//! Causal language-model training of a [`Gpt2`], or of any [`Backbone`] with an LM head (a
//! Gemma/Llama/Qwen2 decoder fine-tuned from its folder), on a token stream: Adam/AdamW, a
//! learning-rate schedule, global-norm gradient clipping, gradient accumulation, and
//! resumable checkpoints.
//!
//! The loop is a plain function over explicit state ([`LmTrainer`]: model, optimizer, RNG,
//! data order, step). Everything that influences the next step is in a checkpoint, so a run
//! killed after any step and resumed from its last checkpoint ends with bit-identical weights
//! on a deterministic device (`cpu`).

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::ml::error::{MlError, Result};
use crate::ml::inference::logprobs::token_logprobs_from_logits;
use crate::ml::io::batch::TokenBatch;
use crate::ml::models::backbone::{Backbone, LanguageModel};
use crate::ml::models::gpt2::Gpt2;
use crate::ml::models::weights::HostTensors;
use crate::ml::rng::{RngState, SeededRng};
use crate::ml::training::checkpoint;
use crate::ml::training::grads::ParamGrads;
use crate::ml::training::guard::{check_loss, check_params};
use crate::ml::training::optim::{Adam, AdamConfig};
use crate::ml::training::schedule::LrSchedule;

/// Settings of a language-model training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmTrainConfig {
    /// Tokens per training sequence (the stream is cut into blocks of this length).
    pub seq_len: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    #[serde(default = "default_grad_accum_steps")]
    pub grad_accum_steps: usize,
    /// Optimizer steps to take in total.
    pub max_steps: usize,
    /// Learning rate as a function of the step.
    pub schedule: LrSchedule,
    /// Adam / AdamW settings.
    #[serde(default)]
    pub optimizer: AdamConfig,
    /// Clip the global gradient norm to this (None = no clipping).
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// Seed of the data order.
    #[serde(default)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (0 = only at the end).
    #[serde(default)]
    pub checkpoint_every: usize,
}

fn default_grad_accum_steps() -> usize {
    1
}

/// A causal LM that [`LmTrainer`] trains: [`Gpt2`], or a [`Backbone`] (GPT-2 or a
/// Gemma/Llama/Qwen2 decoder with an LM head).
pub trait TrainableLm: Module + Sized {
    /// Float32 logits `[rows, len, vocab]` of the tokens of `batch`.
    fn logits_of_batch(&self, batch: &TokenBatch) -> Result<Tensor<3>>;
    /// Longest sequence accepted.
    fn positions(&self) -> usize;
    /// Every weight on the host, under the names [`TrainableLm::with_host_weights`] reads.
    fn host_weights(&self) -> HostTensors;
    /// A model of this one's architecture and configuration with the weights of `set`, on
    /// `device` (a checkpoint's weights: this model's own are not used).
    fn with_host_weights(&self, set: HostTensors, device: &Device) -> Result<Self>;
    /// The architecture, for a message (`gpt2`, `llama`, ...).
    fn architecture(&self) -> String;
    /// Writes the model as a Hugging Face folder of its architecture, with the tokenizer at
    /// `tokenizer` and the configuration files of its folder.
    fn save_hf(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()>;
}

impl TrainableLm for Gpt2 {
    fn logits_of_batch(&self, batch: &TokenBatch) -> Result<Tensor<3>> {
        self.forward(batch, None)
    }
    fn positions(&self) -> usize {
        self.config().n_positions
    }
    fn host_weights(&self) -> HostTensors {
        let mut set = HostTensors::new("");
        for (name, t) in self.named_weights() {
            set.tensors.insert(name, t);
        }
        set
    }
    fn with_host_weights(&self, set: HostTensors, device: &Device) -> Result<Self> {
        Gpt2::from_tensors(self.config(), set, device)
    }
    fn architecture(&self) -> String {
        "gpt2".into()
    }
    fn save_hf(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
        self.save_hf_dir(dir, tokenizer)
    }
}

impl TrainableLm for Backbone {
    fn logits_of_batch(&self, batch: &TokenBatch) -> Result<Tensor<3>> {
        self.forward(batch, None)
    }
    fn positions(&self) -> usize {
        self.max_positions()
    }
    fn host_weights(&self) -> HostTensors {
        let mut set = HostTensors::new("");
        for (name, t) in self.named_weights() {
            set.tensors.insert(name, t);
        }
        set
    }
    fn with_host_weights(&self, set: HostTensors, device: &Device) -> Result<Self> {
        self.with_weights(set, device)
    }
    fn architecture(&self) -> String {
        self.model_type().to_string()
    }
    fn save_hf(&self, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
        self.save_hf_dir(dir, tokenizer)
    }
}

/// The trainer's JSON state inside a checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    config: LmTrainConfig,
    /// The architecture trained (`gpt2`, `llama`, ...); its configuration is the starting
    /// model's, which a resumed run is given again.
    #[serde(default)]
    architecture: Option<String>,
    rng: RngState,
    order: Vec<usize>,
    cursor: usize,
    losses: Vec<f32>,
}

/// A language-model training run in progress.
#[derive(Debug)]
pub struct LmTrainer<M: TrainableLm = Gpt2> {
    /// The model being trained (on an autodiff device): always `Some` between calls; taken
    /// out for the optimizer step, so that the optimizer holds the only handle to its
    /// weights and can update them in place (a clone kept alive would make it copy them).
    model: Option<M>,
    /// Optimizer steps completed.
    pub step: usize,
    /// Mean training loss of each completed step.
    pub losses: Vec<f32>,
    config: LmTrainConfig,
    optim: Adam,
    rng: SeededRng,
    blocks: Vec<Vec<u32>>,
    order: Vec<usize>,
    cursor: usize,
    device: Device,
}

impl<M: TrainableLm> LmTrainer<M> {
    /// Start training `model` on `tokens` on `device` (autodiff is enabled here), or resume
    /// from the latest checkpoint in `checkpoint_dir` when there is one (its weights in a
    /// model of `model`'s architecture and configuration).
    pub fn new(
        model: &M,
        tokens: &[u32],
        config: LmTrainConfig,
        device: &Device,
        checkpoint_dir: Option<&Path>,
    ) -> Result<Self> {
        if config.seq_len < 2 || config.batch_size == 0 || config.grad_accum_steps == 0 {
            return Err(MlError::Invalid(
                "seq_len must be ≥ 2 and batch_size, grad_accum_steps ≥ 1".into(),
            ));
        }
        if config.seq_len > model.positions() {
            return Err(MlError::Invalid(format!(
                "seq_len {} exceeds the model's {} positions",
                config.seq_len,
                model.positions()
            )));
        }
        let blocks: Vec<Vec<u32>> = tokens
            .chunks_exact(config.seq_len)
            .map(<[u32]>::to_vec)
            .collect();
        if blocks.len() < config.batch_size {
            return Err(MlError::Invalid(format!(
                "{} tokens make {} blocks of {}, fewer than one batch of {}",
                tokens.len(),
                blocks.len(),
                config.seq_len,
                config.batch_size
            )));
        }
        let ad = device.clone().autodiff();
        let mut optim = Adam::new(config.optimizer.clone());
        if let Some(dir) = checkpoint_dir {
            if let Some(ck) = checkpoint::load_latest(dir, &mut optim, device)? {
                let state: TrainerState =
                    serde_json::from_value(ck.trainer).map_err(|e| MlError::json(&ck.path, e))?;
                if state.config != config {
                    return Err(MlError::Invalid(format!(
                        "{}: checkpoint was written with a different training config",
                        ck.path.display()
                    )));
                }
                let arch = model.architecture();
                if state.architecture.as_ref().is_some_and(|a| *a != arch) {
                    return Err(MlError::Invalid(format!(
                        "{}: checkpoint of a {} model, but this run trains a {arch}",
                        ck.path.display(),
                        state.architecture.unwrap_or_default()
                    )));
                }
                let model = model.with_host_weights(ck.weights, &ad)?;
                return Ok(LmTrainer {
                    model: Some(model),
                    step: ck.step,
                    losses: state.losses,
                    config,
                    optim,
                    rng: SeededRng::from_state(state.rng),
                    blocks,
                    order: state.order,
                    cursor: state.cursor,
                    device: device.clone(),
                });
            }
        }
        let model = model.with_host_weights(model.host_weights(), &ad)?;
        let rng = SeededRng::new(config.seed);
        Ok(LmTrainer {
            model: Some(model),
            step: 0,
            losses: Vec::new(),
            config,
            optim,
            rng,
            blocks,
            order: Vec::new(),
            cursor: 0,
            device: device.clone(),
        })
    }

    /// The next micro-batch of blocks (a new shuffled epoch when the current one runs out).
    fn next_batch(&mut self) -> Result<TokenBatch> {
        let bs = self.config.batch_size;
        if self.cursor + bs > self.order.len() {
            self.order = (0..self.blocks.len()).collect();
            self.rng.shuffle(&mut self.order);
            self.cursor = 0;
        }
        let rows: Vec<Vec<u32>> = self.order[self.cursor..self.cursor + bs]
            .iter()
            .map(|&i| self.blocks[i].clone())
            .collect();
        self.cursor += bs;
        TokenBatch::unpadded(&rows)
    }

    /// Mean next-token cross-entropy of `model` on `batch` (a tracked scalar on autodiff).
    pub fn loss(model: &M, batch: &TokenBatch) -> Result<Tensor<1>> {
        let logits = model.logits_of_batch(batch)?;
        Ok(token_logprobs_from_logits(logits, batch).mean().neg())
    }

    /// One optimizer step (over `grad_accum_steps` micro-batches); returns its mean loss.
    pub fn train_step(&mut self) -> Result<f32> {
        let accum = self.config.grad_accum_steps;
        let mut grads = ParamGrads::default();
        let mut loss_sum = 0.0f32;
        for _ in 0..accum {
            let batch = self.next_batch()?;
            let loss = Self::loss(self.model(), &batch)? / accum as f64;
            loss_sum += loss.clone().into_scalar::<f32>();
            grads.accumulate(ParamGrads::from_loss(loss, self.model()));
        }
        let lr = self.config.schedule.lr(self.step);
        let model = self
            .model
            .take()
            .expect("the model is back after every step");
        let max_norm = self.config.max_grad_norm;
        self.model = Some(self.optim.step_clipped(model, grads, lr, max_norm));
        self.step += 1;
        check_loss(self.step, "loss", loss_sum as f64)?;
        self.losses.push(loss_sum);
        Ok(loss_sum)
    }

    /// Fails when a parameter is no longer finite (see [`crate::ml::training::guard`]).
    pub fn check_params(&self) -> Result<()> {
        check_params(self.step, self.model())
    }

    /// Write a checkpoint of the current state into `dir` (never of non-finite weights).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.check_params()?;
        let state = TrainerState {
            config: self.config.clone(),
            architecture: Some(self.model().architecture()),
            rng: self.rng.state(),
            order: self.order.clone(),
            cursor: self.cursor,
            losses: self.losses.clone(),
        };
        let trainer = serde_json::to_value(state).expect("json");
        checkpoint::save(
            dir,
            self.step,
            &self.model().host_weights(),
            &self.optim,
            trainer,
        )?;
        Ok(())
    }

    /// Train until `max_steps`, or until `stop_after` more steps have run (a simulated kill:
    /// the in-memory state is then dropped by the caller). Checkpoints go to `checkpoint_dir`
    /// every `checkpoint_every` steps and at the end.
    pub fn run(&mut self, checkpoint_dir: Option<&Path>, stop_after: Option<usize>) -> Result<()> {
        let mut ran = 0;
        while self.step < self.config.max_steps {
            if stop_after.is_some_and(|n| ran >= n) {
                return Ok(());
            }
            self.train_step()?;
            ran += 1;
            let every = self.config.checkpoint_every;
            if let Some(dir) = checkpoint_dir {
                if (every > 0 && self.step.is_multiple_of(every))
                    || self.step == self.config.max_steps
                {
                    self.save_checkpoint(dir)?;
                }
            }
        }
        Ok(())
    }

    /// The model being trained (on an autodiff device).
    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is back after every step")
    }

    /// The trained model without autodiff (for inference or export).
    pub fn into_model(self) -> M {
        self.model().valid()
    }

    /// The device training runs on (without autodiff).
    pub fn device(&self) -> &Device {
        &self.device
    }
}
