//! The `head_ensemble` kind (ALGORITHMS.md §3): K linear heads on a frozen backbone.
//!
//! The backbone is frozen, so the last-token features of every pair are computed once
//! and every head trains on them: K heads cost little more than one backbone pass over
//! the data. Under the Bradley–Terry loss a head's bias cancels (`r⁺ − r⁻ = w·(h⁺ − h⁻)`),
//! so each head learns `w` by logistic regression on feature differences, with Adam. The
//! bias, which Bradley–Terry does not identify, is then set so that the head's mean reward
//! over the training responses is 0: a head's random offset would otherwise add a
//! text-independent spread to the ensemble variance and hide real disagreement. Heads differ
//! by their initialisation seed (and, if asked, by data order or a bootstrap resample); each
//! stops when its running loss reaches its target.
//!
//! The optimiser differs from the paper's Table 4 (AdamW, learning rate 1e-5, weight decay
//! 0.001, cosine schedule, 0.5 epochs), on purpose: that recipe trains through the model
//! stack, while here a head is a logistic regression on fixed features, which plain Adam at
//! 1e-2 brings to the paper's stopping point (running loss ≈ 0.2, the part ALGORITHMS.md §3
//! specifies) in a few epochs. `lr`, `max_epochs` and `target_loss` are params.
//!
//! Outputs: `model` (the K-head reward model) and `stats` (JSON: per-head accuracy and
//! loss curves, and the Figure 6 variance statistics with histograms).

use std::collections::BTreeMap;

use dagrun_cache::ArtifactType;
use dagrun_engine::stage::{
    Cancelled, OutputDecl, ParamError, Place, StageContext, StageError, StageKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    ml_util::{backend_env, features, model_template, node_device, read_split, Distribution},
    parse_params, write_json,
};
use crate::{
    ml::chat::ChatTemplate,
    ml::{heads::LinearHeads, reward::RewardModel, rng::SeededRng, tokenizer::TextTokenizer},
    rl::math::{bt_loss, mean_var},
};

/// Params of `head_ensemble` (defaults: the paper's K = 10 and target loss 0.2).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadEnsembleParams {
    /// The reward model whose backbone is frozen (the `backbone_pretrain` output).
    pub backbone: String,
    /// How pairs are rendered (`plain`, `gemma`, `llama3`, `llama3.1`); default: from the backbone's
    /// `config.json`.
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
    /// Preference data with `train` and `eval` splits.
    pub data: String,
    /// Number of heads K.
    #[serde(default = "ten")]
    pub heads: usize,
    /// Adam learning rate of the heads.
    #[serde(default = "lr")]
    pub lr: f64,
    /// Pairs per step.
    #[serde(default = "b32")]
    pub batch_size: usize,
    /// Passes over the data at most, per head.
    #[serde(default = "epochs")]
    pub max_epochs: usize,
    /// A head stops once its running loss is at most this (the paper: about 0.2).
    #[serde(default = "target")]
    pub target_loss: f64,
    /// Steps the running loss averages over.
    #[serde(default = "window")]
    pub running_window: usize,
    /// Give each head its own data order (default: heads differ by initialisation only).
    #[serde(default)]
    pub vary_data_order: bool,
    /// Train each head on a bootstrap resample of the training pairs.
    #[serde(default)]
    pub bootstrap: bool,
    /// Delta degrees of freedom of the ensemble variance (1: sample variance).
    #[serde(default = "one")]
    pub ddof: usize,
    /// Tokens of prompt + response kept (the last ones).
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Histogram bins of the variance statistics.
    #[serde(default = "bins")]
    pub bins: usize,
    /// Seed of the heads' initialisation and data order.
    #[serde(default)]
    pub seed: u64,
}

fn ten() -> usize {
    10
}
fn lr() -> f64 {
    1e-2
}
fn b32() -> usize {
    32
}
fn epochs() -> usize {
    30
}
fn target() -> f64 {
    0.2
}
fn window() -> usize {
    20
}
fn one() -> usize {
    1
}
fn max_len() -> usize {
    128
}
fn bins() -> usize {
    30
}

/// Everything `head_ensemble` measured (the `stats` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleStats {
    pub heads: usize,
    /// Per head: accuracy on the eval pairs.
    pub head_accuracy: Vec<f64>,
    /// Per head: steps trained and the running loss it stopped at.
    pub head_steps: Vec<usize>,
    pub head_final_loss: Vec<f64>,
    /// Per head: the loss curve (running loss per step).
    pub head_loss_curves: Vec<Vec<f64>>,
    /// Accuracy of the ensemble mean reward.
    pub ensemble_accuracy: f64,
    /// Figure 6, top: the variance across heads of the chosen responses' rewards.
    pub chosen_variance: Distribution,
    /// Figure 6, bottom: the variance across heads of `r_k(x,y⁺) − r_k(x,y⁻)`.
    pub difference_variance: Distribution,
    pub eval_pairs: usize,
}

pub struct HeadEnsembleKind;

impl StageKind for HeadEnsembleKind {
    fn params_schema(&self) -> Option<Value> {
        Some(super::params_schema::<HeadEnsembleParams>())
    }
    fn name(&self) -> &'static str {
        "head_ensemble"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "K reward heads on a frozen backbone, trained on features computed once; Figure 6 statistics"
    }
    fn validate(&self, params: &Value) -> Result<(), ParamError> {
        let p: HeadEnsembleParams = parse_params(&crate::data::artifact_refs_as_text(params))?;
        if p.heads == 0 {
            return Err(ParamError::at("heads", "must be at least 1"));
        }
        if p.heads <= p.ddof {
            return Err(ParamError::at(
                "ddof",
                format!("must be below the number of heads ({})", p.heads),
            ));
        }
        Ok(())
    }
    fn outputs(&self, _params: &Value) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("model", ArtifactType::Model),
            OutputDecl::new("stats", ArtifactType::Metrics),
        ]
    }
    fn environment(&self, device: &str, place: Place) -> Result<BTreeMap<String, String>, String> {
        backend_env(device, place)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: HeadEnsembleParams = parse_params(&ctx.params).map_err(|e| e.message)?;
        let device = node_device(ctx)?;
        let dir = std::path::Path::new(&p.backbone);
        let tok_path = dir.join("tokenizer.json");
        let tok = TextTokenizer::from_file(&tok_path)?;
        let base = RewardModel::load(dir, &device)?;
        let d = base.heads.n_embd();
        let data = std::path::Path::new(&p.data);
        let train = read_split(data, "train")?;
        let eval = read_split(data, "eval")?;
        ctx.log(format!(
            "features of {} train and {} eval pairs, computed once",
            train.len(),
            eval.len()
        ));
        let template = model_template(dir, p.chat_template, &tok)?;
        ctx.log(format!("chat template: {template}"));
        let texts = |pairs: &[crate::data::PreferencePair],
                     chosen: bool|
         -> Result<Vec<String>, StageError> {
            pairs
                .iter()
                .map(|q| {
                    let response = if chosen { &q.chosen } else { &q.rejected };
                    Ok(template.render_pair(&q.prompt, response)?)
                })
                .collect()
        };
        let feat = |pairs: &[crate::data::PreferencePair],
                    chosen: bool,
                    what: &str|
         -> Result<Vec<f32>, StageError> {
            ctx.progress(0, 1, format!("backbone features: {what}"));
            features(&base.backbone, &tok, &texts(pairs, chosen)?, 64, p.max_len)
        };
        let (tc, tr) = (
            feat(&train, true, "train chosen")?,
            feat(&train, false, "train rejected")?,
        );
        let (ec, er) = (
            feat(&eval, true, "eval chosen")?,
            feat(&eval, false, "eval rejected")?,
        );
        // Feature differences h⁺ − h⁻ (the bias cancels under Bradley–Terry).
        let diff: Vec<f32> = tc.iter().zip(&tr).map(|(a, b)| a - b).collect();
        let n = train.len();
        let mut weights = vec![0.0f32; d * p.heads];
        let mut stats_steps = Vec::new();
        let mut stats_loss = Vec::new();
        let mut curves = Vec::new();
        let mut master = SeededRng::new(ctx.derive_seed("heads"));
        let head_seeds: Vec<u64> = (0..p.heads).map(|_| master.fork_seed()).collect();
        for k in 0..p.heads {
            if ctx.cancelled() {
                return Err(Box::new(Cancelled));
            }
            let std = 1.0 / ((d + 1) as f32).sqrt();
            let mut w: Vec<f64> = SeededRng::new(head_seeds[k])
                .normal_vec(d, std)
                .into_iter()
                .map(f64::from)
                .collect();
            let mut rng = SeededRng::new(if p.vary_data_order || p.bootstrap {
                head_seeds[k] ^ 0x5eed
            } else {
                ctx.derive_seed("order")
            });
            let sample: Vec<usize> = if p.bootstrap {
                (0..n).map(|_| rng.below(n)).collect()
            } else {
                (0..n).collect()
            };
            let (steps, last, curve) = train_head(&mut w, &diff, d, &sample, &p, &mut rng);
            ctx.log(format!("head {k}: {steps} steps, running loss {last:.4}"));
            ctx.progress(
                (k + 1) as u64,
                p.heads as u64,
                format!("head {k}: loss {last:.3}"),
            );
            for i in 0..d {
                weights[i * p.heads + k] = w[i] as f32;
            }
            stats_steps.push(steps);
            stats_loss.push(last);
            curves.push(curve);
        }
        // Biases: each head's mean reward over the training responses is 0.
        let mut mean_feature = vec![0.0f64; d];
        for h in tc.chunks(d).chain(tr.chunks(d)) {
            for (m, x) in mean_feature.iter_mut().zip(h) {
                *m += *x as f64;
            }
        }
        mean_feature.iter_mut().for_each(|m| *m /= (2 * n) as f64);
        let bias: Vec<f64> = (0..p.heads)
            .map(|k| {
                -(0..d)
                    .map(|i| mean_feature[i] * weights[i * p.heads + k] as f64)
                    .sum::<f64>()
            })
            .collect();
        // Rewards of the eval pairs under each head.
        let rewards = |f: &[f32]| -> Vec<Vec<f64>> {
            f.chunks(d)
                .map(|h| {
                    (0..p.heads)
                        .map(|k| {
                            bias[k]
                                + (0..d)
                                    .map(|i| h[i] as f64 * weights[i * p.heads + k] as f64)
                                    .sum::<f64>()
                        })
                        .collect()
                })
                .collect()
        };
        let (rc, rr) = (rewards(&ec), rewards(&er));
        let m = rc.len();
        let head_accuracy: Vec<f64> = (0..p.heads)
            .map(|k| (0..m).filter(|&i| rc[i][k] > rr[i][k]).count() as f64 / m.max(1) as f64)
            .collect();
        let ensemble_accuracy = (0..m)
            .filter(|&i| mean_var(&rc[i], p.ddof).0 > mean_var(&rr[i], p.ddof).0)
            .count() as f64
            / m.max(1) as f64;
        let chosen_var: Vec<f64> = rc.iter().map(|r| mean_var(r, p.ddof).1).collect();
        let diff_var: Vec<f64> = rc
            .iter()
            .zip(&rr)
            .map(|(a, b)| {
                mean_var(
                    &a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>(),
                    p.ddof,
                )
                .1
            })
            .collect();
        let stats = EnsembleStats {
            heads: p.heads,
            head_accuracy: head_accuracy.clone(),
            head_steps: stats_steps,
            head_final_loss: stats_loss,
            head_loss_curves: curves,
            ensemble_accuracy,
            chosen_variance: Distribution::of(&chosen_var, p.bins),
            difference_variance: Distribution::of(&diff_var, p.bins),
            eval_pairs: m,
        };
        for (k, a) in head_accuracy.iter().enumerate() {
            ctx.metric(&format!("head_{k}.eval_accuracy"), *a);
        }
        ctx.metric(
            "mean_head_accuracy",
            head_accuracy.iter().sum::<f64>() / p.heads as f64,
        );
        ctx.metric("ensemble_accuracy", ensemble_accuracy);
        ctx.metric("chosen_variance.mean", stats.chosen_variance.mean);
        ctx.metric("chosen_variance.median", stats.chosen_variance.median());
        ctx.metric("difference_variance.mean", stats.difference_variance.mean);
        ctx.metric(
            "difference_variance.median",
            stats.difference_variance.median(),
        );
        write_json(&ctx.output_path("stats"), &stats)?;
        let w = burn::tensor::Tensor::<2>::from_data(
            burn::tensor::TensorData::new(weights, [d, p.heads]),
            &device,
        );
        let bias: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
        let b = burn::tensor::Tensor::<1>::from_data(
            burn::tensor::TensorData::new(bias, [p.heads]),
            &device,
        );
        let rm = RewardModel::new(base.backbone, LinearHeads::from_tensors(w, b))?;
        rm.save(&ctx.output_path("model"), Some(&tok_path))?;
        Ok(())
    }
}

/// Trains one head's `w` on feature differences with Adam until its running loss reaches
/// the target or the epochs run out. Returns (steps, final running loss, running curve).
fn train_head(
    w: &mut [f64],
    diff: &[f32],
    d: usize,
    sample: &[usize],
    p: &HeadEnsembleParams,
    rng: &mut SeededRng,
) -> (usize, f64, Vec<f64>) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut m = vec![0.0; d];
    let mut v = vec![0.0; d];
    let mut g = vec![0.0; d];
    let mut losses: Vec<f64> = Vec::new();
    let mut curve = Vec::new();
    let mut t = 0i32;
    let bs = p.batch_size.min(sample.len()).max(1);
    for _ in 0..p.max_epochs {
        let mut order = sample.to_vec();
        rng.shuffle(&mut order);
        for batch in order.chunks(bs) {
            g.iter_mut().for_each(|x| *x = 0.0);
            let mut loss = 0.0;
            for &i in batch {
                let h = &diff[i * d..(i + 1) * d];
                let margin: f64 = h.iter().zip(w.iter()).map(|(x, wi)| *x as f64 * wi).sum();
                loss += bt_loss(margin);
                // d/dw −log σ(m) = −(1 − σ(m))·h
                let coef = -1.0 / (1.0 + margin.exp());
                for (gi, x) in g.iter_mut().zip(h) {
                    *gi += coef * *x as f64;
                }
            }
            let nb = batch.len() as f64;
            t += 1;
            for j in 0..d {
                let gj = g[j] / nb;
                m[j] = b1 * m[j] + (1.0 - b1) * gj;
                v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
                let mh = m[j] / (1.0 - b1.powi(t));
                let vh = v[j] / (1.0 - b2.powi(t));
                w[j] -= p.lr * mh / (vh.sqrt() + eps);
            }
            losses.push(loss / nb);
            let win = &losses[losses.len().saturating_sub(p.running_window)..];
            let running = win.iter().sum::<f64>() / win.len() as f64;
            curve.push(running);
            if losses.len() >= p.running_window && running <= p.target_loss {
                return (losses.len(), running, curve);
            }
        }
    }
    let last = curve.last().copied().unwrap_or(f64::NAN);
    (losses.len(), last, curve)
}
