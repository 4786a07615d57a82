//! Learning-rate schedules, as functions of the number of optimizer steps already taken.

/// A learning-rate schedule (serialises as `{"kind": "constant", "lr": ...}` etc.).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then half a cosine down to
    /// `min_lr` at `total_steps` (transformers' `get_cosine_schedule_with_warmup` when
    /// `min_lr` = 0), and `min_lr` after.
    CosineWarmup {
        /// Rate at the end of warm-up.
        peak_lr: f64,
        /// Steps of linear warm-up.
        warmup_steps: usize,
        /// Step at which the cosine reaches `min_lr`.
        total_steps: usize,
        /// Floor of the decay.
        #[serde(default)]
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The rate for the optimizer step that follows `step` completed steps.
    pub fn lr(&self, step: usize) -> f64 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::CosineWarmup {
                peak_lr,
                warmup_steps,
                total_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    return peak_lr * step as f64 / warmup_steps.max(1) as f64;
                }
                let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let progress = ((step - warmup_steps) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                min_lr + (peak_lr - min_lr) * cosine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_warmup_matches_the_closed_form() {
        let s = LrSchedule::CosineWarmup {
            peak_lr: 1.0,
            warmup_steps: 4,
            total_steps: 12,
            min_lr: 0.0,
        };
        let expect = [
            (0, 0.0),
            (2, 0.5),
            (4, 1.0),
            (6, 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos())), // 0.853553
            (8, 0.5),
            (12, 0.0),
            (20, 0.0),
        ];
        for (step, lr) in expect {
            assert!(
                (s.lr(step) - lr).abs() < 1e-12,
                "step {step}: {}",
                s.lr(step)
            );
        }
        assert!((s.lr(6) - 0.8535533905932737).abs() < 1e-12);
        let floor = LrSchedule::CosineWarmup {
            peak_lr: 1.0,
            warmup_steps: 0,
            total_steps: 10,
            min_lr: 0.1,
        };
        assert!((floor.lr(0) - 1.0).abs() < 1e-12);
        assert!((floor.lr(5) - 0.55).abs() < 1e-12);
        assert!((floor.lr(10) - 0.1).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant { lr: 3e-4 }.lr(1000), 3e-4);
    }

    #[test]
    fn serialises_with_a_kind_tag() {
        let s = LrSchedule::Constant { lr: 0.5 };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"kind":"constant","lr":0.5}"#);
        let back: LrSchedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
