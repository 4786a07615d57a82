//! K reward heads on a frozen backbone (docs/algorithms.md §3, the paper's "Parallel Reward
//! Heads"), trained on features computed once.
//!
//! The backbone is frozen, so the last-token features of every pair are computed once
//! ([`crate::ml::reward::RewardReader::features`]) and every head trains on them: K heads cost
//! little more than one backbone pass over the data. Under the Bradley–Terry loss a head's
//! bias cancels (`r⁺ − r⁻ = w·(h⁺ − h⁻)`), so each head learns `w` by logistic regression on
//! feature differences, with Adam on the host, and stops when its running loss reaches its
//! target. The bias, which Bradley–Terry does not identify, is then set so that the head's mean
//! reward over the training responses is 0: a head's random offset would otherwise add a
//! text-independent spread to the ensemble variance and hide real disagreement. Heads differ
//! by their initialisation seed (and, if asked, by data order or a bootstrap resample).
//!
//! The optimiser differs from the paper's Table 4 (AdamW, learning rate 1e-5, weight decay
//! 0.001, cosine schedule, 0.5 epochs), on purpose: that recipe trains through the model
//! stack, while here a head is a logistic regression on fixed features, which plain Adam at
//! 1e-2 brings to the paper's stopping point (running loss ≈ 0.2) in a few epochs.

use serde::{Deserialize, Serialize};

use crate::ml::rng::SeededRng;
use crate::ml::training::guard::{check_loss, check_values};
use crate::ml::{MlError, Result};
use crate::rl::math::bt_loss;
use crate::stats::{mean_var, Distribution};

/// How the heads train (the `head_ensemble` kind's params; defaults there).
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleConfig {
    /// Number of heads K.
    pub heads: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Pairs per step.
    pub batch_size: usize,
    /// Passes over the data at most, per head.
    pub max_epochs: usize,
    /// A head stops once its running loss is at most this.
    pub target_loss: f64,
    /// Steps the running loss averages over (≥ 1).
    pub running_window: usize,
    /// Each head gets its own data order.
    pub vary_data_order: bool,
    /// Each head trains on a bootstrap resample of the pairs.
    pub bootstrap: bool,
    /// Delta degrees of freedom of the ensemble variance.
    pub ddof: usize,
    /// Histogram bins of the variance statistics.
    pub bins: usize,
    /// Seed of the heads' initialisations (and own data orders).
    pub heads_seed: u64,
    /// Seed of the data order the heads share.
    pub order_seed: u64,
}

/// Final hidden states of the chosen and the rejected responses of pairs, `[n × d]` each
/// (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct PairFeatures {
    pub d: usize,
    pub chosen: Vec<f32>,
    pub rejected: Vec<f32>,
}

impl PairFeatures {
    /// Pairs.
    pub fn len(&self) -> usize {
        self.chosen.len() / self.d.max(1)
    }

    /// No pairs?
    pub fn is_empty(&self) -> bool {
        self.chosen.is_empty()
    }
}

/// How one head trained.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadFit {
    /// Adam steps taken.
    pub steps: usize,
    /// The running loss it stopped at.
    pub final_loss: f64,
    /// The running loss after each step.
    pub curve: Vec<f64>,
}

/// The trained heads: `weights` `[d × K]` (row-major: column k is head k) and biases `[K]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Heads {
    pub d: usize,
    pub k: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f64>,
    pub fits: Vec<HeadFit>,
}

impl Heads {
    /// Rewards `[n][K]` of features `[n × d]`.
    pub fn rewards(&self, features: &[f32]) -> Vec<Vec<f64>> {
        features
            .chunks(self.d)
            .map(|h| {
                (0..self.k)
                    .map(|k| {
                        self.bias[k]
                            + (0..self.d)
                                .map(|i| h[i] as f64 * self.weights[i * self.k + k] as f64)
                                .sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    }
}

/// Trains the K heads on `train` features; `after_head(k, fit)` sees each head as it finishes
/// (an error stops the training: cancellation).
pub fn fit_heads(
    cfg: &EnsembleConfig,
    train: &PairFeatures,
    after_head: &mut dyn FnMut(usize, &HeadFit) -> Result<()>,
) -> Result<Heads> {
    let (d, n, k_heads) = (train.d, train.len(), cfg.heads);
    if n == 0 {
        return Err(MlError::Invalid("no training pairs".into()));
    }
    // Feature differences h⁺ − h⁻ (the bias cancels under Bradley–Terry).
    let diff: Vec<f32> = train
        .chosen
        .iter()
        .zip(&train.rejected)
        .map(|(a, b)| a - b)
        .collect();
    let mut weights = vec![0.0f32; d * k_heads];
    let mut fits = Vec::with_capacity(k_heads);
    let mut master = SeededRng::new(cfg.heads_seed);
    let head_seeds: Vec<u64> = (0..k_heads).map(|_| master.fork_seed()).collect();
    for (k, &seed) in head_seeds.iter().enumerate() {
        let std = 1.0 / ((d + 1) as f32).sqrt();
        let mut w: Vec<f64> = SeededRng::new(seed)
            .normal_vec(d, std)
            .into_iter()
            .map(f64::from)
            .collect();
        let mut rng = SeededRng::new(if cfg.vary_data_order || cfg.bootstrap {
            seed ^ 0x5eed
        } else {
            cfg.order_seed
        });
        let sample: Vec<usize> = if cfg.bootstrap {
            (0..n).map(|_| rng.below(n)).collect()
        } else {
            (0..n).collect()
        };
        let fit = train_head(&mut w, &diff, d, &sample, cfg, &mut rng)?;
        for i in 0..d {
            weights[i * k_heads + k] = w[i] as f32;
        }
        // As stored (f32): a weight beyond f32's range is infinite there.
        let stored: Vec<f64> = (0..d).map(|i| weights[i * k_heads + k] as f64).collect();
        check_values(fit.steps, &format!("head {k}'s weights"), &stored)?;
        after_head(k, &fit)?;
        fits.push(fit);
    }
    // Biases: each head's mean reward over the training responses is 0.
    let mut mean_feature = vec![0.0f64; d];
    for h in train.chosen.chunks(d).chain(train.rejected.chunks(d)) {
        for (m, x) in mean_feature.iter_mut().zip(h) {
            *m += *x as f64;
        }
    }
    mean_feature.iter_mut().for_each(|m| *m /= (2 * n) as f64);
    let bias: Vec<f64> = (0..k_heads)
        .map(|k| {
            -(0..d)
                .map(|i| mean_feature[i] * weights[i * k_heads + k] as f64)
                .sum::<f64>()
        })
        .collect();
    let steps = fits.iter().map(|f: &HeadFit| f.steps).max().unwrap_or(0);
    check_values(steps, "heads' biases", &bias)?;
    Ok(Heads {
        d,
        k: k_heads,
        weights,
        bias,
        fits,
    })
}

/// Trains one head's `w` on feature differences with Adam until its running loss reaches the
/// target or the epochs run out; a non-finite loss fails at its step.
fn train_head(
    w: &mut [f64],
    diff: &[f32],
    d: usize,
    sample: &[usize],
    cfg: &EnsembleConfig,
    rng: &mut SeededRng,
) -> Result<HeadFit> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut m = vec![0.0; d];
    let mut v = vec![0.0; d];
    let mut g = vec![0.0; d];
    let mut losses: Vec<f64> = Vec::new();
    let mut curve = Vec::new();
    let mut t = 0i32;
    let bs = cfg.batch_size.min(sample.len()).max(1);
    for _ in 0..cfg.max_epochs {
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
                w[j] -= cfg.lr * mh / (vh.sqrt() + eps);
            }
            losses.push(loss / nb);
            check_loss(losses.len(), "head's loss", loss / nb)?;
            let win = &losses[losses.len().saturating_sub(cfg.running_window)..];
            let running = win.iter().sum::<f64>() / win.len() as f64;
            curve.push(running);
            if losses.len() >= cfg.running_window && running <= cfg.target_loss {
                return Ok(HeadFit {
                    steps: losses.len(),
                    final_loss: running,
                    curve,
                });
            }
        }
    }
    let final_loss = curve.last().copied().unwrap_or(f64::NAN);
    Ok(HeadFit {
        steps: losses.len(),
        final_loss,
        curve,
    })
}

/// Everything `head_ensemble` measured (its `stats` output).
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

/// The heads on `eval` pairs: accuracies (strict `>`), and Figure 6's variance statistics.
pub fn evaluate(cfg: &EnsembleConfig, heads: &Heads, eval: &PairFeatures) -> EnsembleStats {
    let (rc, rr) = (heads.rewards(&eval.chosen), heads.rewards(&eval.rejected));
    let m = rc.len();
    let head_accuracy: Vec<f64> = (0..heads.k)
        .map(|k| (0..m).filter(|&i| rc[i][k] > rr[i][k]).count() as f64 / m.max(1) as f64)
        .collect();
    let ensemble_accuracy = (0..m)
        .filter(|&i| mean_var(&rc[i], cfg.ddof).0 > mean_var(&rr[i], cfg.ddof).0)
        .count() as f64
        / m.max(1) as f64;
    let chosen_var: Vec<f64> = rc.iter().map(|r| mean_var(r, cfg.ddof).1).collect();
    let diff_var: Vec<f64> = rc
        .iter()
        .zip(&rr)
        .map(|(a, b)| {
            mean_var(
                &a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>(),
                cfg.ddof,
            )
            .1
        })
        .collect();
    EnsembleStats {
        heads: heads.k,
        head_accuracy,
        head_steps: heads.fits.iter().map(|f| f.steps).collect(),
        head_final_loss: heads.fits.iter().map(|f| f.final_loss).collect(),
        head_loss_curves: heads.fits.iter().map(|f| f.curve.clone()).collect(),
        ensemble_accuracy,
        chosen_variance: Distribution::of(&chosen_var, cfg.bins),
        difference_variance: Distribution::of(&diff_var, cfg.bins),
        eval_pairs: m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(heads: usize) -> EnsembleConfig {
        EnsembleConfig {
            heads,
            lr: 0.05,
            batch_size: 8,
            max_epochs: 40,
            target_loss: 0.2,
            running_window: 5,
            vary_data_order: false,
            bootstrap: true,
            ddof: 1,
            bins: 5,
            heads_seed: 3,
            order_seed: 4,
        }
    }

    /// Separable pairs: the chosen response's first feature is larger. Every head learns to
    /// rank them, its bias centres the training rewards at 0, and the statistics count pairs.
    #[test]
    fn heads_learn_separable_pairs_and_their_rewards_are_centred() {
        let (n, d) = (40, 3);
        let feat = |i: usize, up: f32| -> Vec<f32> {
            vec![
                up + (i as f32 * 0.37).sin() * 0.1,
                (i as f32 * 1.3).cos(),
                0.5,
            ]
        };
        let make = |n: usize| PairFeatures {
            d,
            chosen: (0..n).flat_map(|i| feat(i, 1.0)).collect(),
            rejected: (0..n).flat_map(|i| feat(i, -1.0)).collect(),
        };
        let train = make(n);
        let mut seen = Vec::new();
        let heads = fit_heads(&config(3), &train, &mut |k, fit| {
            seen.push((k, fit.steps));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        for f in &heads.fits {
            assert!(f.final_loss <= 0.2 && f.steps >= 5, "{f:?}");
        }
        let all: Vec<f32> = [train.chosen.clone(), train.rejected.clone()].concat();
        for k in 0..3 {
            let mean = heads.rewards(&all).iter().map(|r| r[k]).sum::<f64>() / (2 * n) as f64;
            assert!(mean.abs() < 1e-6, "head {k}: mean reward {mean}");
        }
        let stats = evaluate(&config(3), &heads, &make(10));
        assert_eq!(stats.eval_pairs, 10);
        assert_eq!(stats.head_accuracy, vec![1.0; 3]);
        assert_eq!(stats.ensemble_accuracy, 1.0);
    }

    /// A learning rate that makes the loss overflow fails the training at that step.
    #[test]
    fn a_diverging_head_fails_at_its_step() {
        let train = PairFeatures {
            d: 1,
            chosen: vec![f32::MAX, 1.0],
            rejected: vec![-f32::MAX, 0.0],
        };
        let mut cfg = config(1);
        cfg.lr = 1e300;
        let e = fit_heads(&cfg, &train, &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("diverged at step"), "{e}");
    }
}
