//! Distribution summaries of a sample: moments, quantiles and histograms.

use serde::{Deserialize, Serialize};

/// Quantile levels reported by [`Summary::of`].
pub const QUANTILE_LEVELS: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

/// One quantile of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    /// The level in (0, 1).
    pub level: f64,
    /// The sample quantile (linear interpolation between order statistics, "type 7").
    pub value: f64,
}

/// Moments, extremes and quantiles of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n - 1).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Quantiles at [`QUANTILE_LEVELS`].
    pub quantiles: Vec<Quantile>,
}

impl Summary {
    /// Summarises `values` (at least one, all finite). Sorts a copy.
    pub fn of(values: &[f64]) -> Summary {
        let n = values.len();
        assert!(n > 0, "summary of an empty sample");
        let mean = values.iter().sum::<f64>() / n as f64;
        let ss: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
        let std = if n > 1 {
            (ss / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            count: n,
            mean,
            std,
            min: sorted[0],
            max: sorted[n - 1],
            quantiles: QUANTILE_LEVELS
                .iter()
                .map(|&level| Quantile {
                    level,
                    value: quantile_sorted(&sorted, level),
                })
                .collect(),
        }
    }
}

pub use crate::stats::{histogram, histogram_edges, quantile_sorted};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_small_sample() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!(s.mean, 3.0);
        assert!((s.std - 2.5f64.sqrt()).abs() < 1e-15);
        assert_eq!((s.min, s.max), (1.0, 5.0));
        let median = s.quantiles.iter().find(|q| q.level == 0.5).unwrap();
        assert_eq!(median.value, 3.0);
        // Type 7 at 0.25 on 5 points: h = 1.0 → second order statistic.
        assert_eq!(s.quantiles[2].value, 2.0);
        // At 0.05: h = 0.2 → 1 + 0.2·(2 - 1).
        assert!((s.quantiles[1].value - 1.2).abs() < 1e-15);
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let values = [0.0, 0.1, 0.25, 0.5, 0.99, 1.0, 2.0];
        let edges = histogram_edges(0.0, 1.0, 4);
        assert_eq!(edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let counts = histogram(&values, &edges);
        assert_eq!(counts, vec![2, 1, 1, 2]);
        assert_eq!(histogram_edges(2.0, 2.0, 2), vec![1.5, 2.0, 2.5]);
    }
}
