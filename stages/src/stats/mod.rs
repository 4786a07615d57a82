//! Summary statistics shared by the kinds: the mean and variance of an ensemble's rewards
//! ([`mean_var`]), and the distribution of a sample ([`Distribution`]: Figure 6's histograms,
//! the judge's per-method spreads).

/// Mean and variance (with `ddof`: 1 for the sample variance) of ensemble rewards.
pub fn mean_var(xs: &[f64], ddof: usize) -> (f64, f64) {
    let k = xs.len();
    if k == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / k as f64;
    if k <= ddof {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - ddof) as f64;
    (mean, var)
}

/// Summary statistics of a sample (for Figure 6 and the judge's distributions).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    pub n: usize,
    pub mean: f64,
    pub variance: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `[(level, value)]` at 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95.
    pub quantiles: Vec<(f64, f64)>,
    pub histogram_edges: Vec<f64>,
    pub histogram_counts: Vec<u64>,
}

impl Distribution {
    pub fn of(values: &[f64], bins: usize) -> Distribution {
        let n = values.len();
        let mut sorted: Vec<f64> = values.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mean = if n > 0 {
            values.iter().sum::<f64>() / n as f64
        } else {
            f64::NAN
        };
        let variance = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let q = |l: f64| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            let pos = l * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        };
        let (min, max) = (
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        let bins = bins.max(1);
        let width = if max > min {
            (max - min) / bins as f64
        } else {
            1.0
        };
        let edges: Vec<f64> = (0..=bins).map(|i| min + width * i as f64).collect();
        let mut counts = vec![0u64; bins];
        for v in values {
            let i = (((v - min) / width) as usize).min(bins - 1);
            counts[i] += 1;
        }
        Distribution {
            n,
            mean,
            variance,
            std: variance.sqrt(),
            min,
            max,
            quantiles: [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
                .iter()
                .map(|&l| (l, q(l)))
                .collect(),
            histogram_edges: edges,
            histogram_counts: counts,
        }
    }

    pub fn median(&self) -> f64 {
        self.quantiles
            .iter()
            .find(|(l, _)| *l == 0.5)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_variance_uses_ddof() {
        let (m, v) = mean_var(&[1.0, 2.0, 3.0, 4.0], 1);
        assert_eq!(m, 2.5);
        assert!((v - 5.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean_var(&[1.0, 2.0, 3.0, 4.0], 0).1, 1.25);
        // deviations -2, -1, 0, 3 → ss 14 → /3
        let (m, v) = mean_var(&[1.0, 2.0, 3.0, 6.0], 1);
        assert!((m - 3.0).abs() < 1e-12 && (v - 14.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean_var(&[5.0], 1), (5.0, 0.0));
        assert!(mean_var(&[], 1).0.is_nan());
    }

    #[test]
    fn a_distribution_has_quantiles_and_a_histogram() {
        let d = Distribution::of(&[1.0, 2.0, 3.0, 4.0, 5.0], 4);
        assert_eq!((d.n, d.mean, d.min, d.max), (5, 3.0, 1.0, 5.0));
        assert_eq!(d.median(), 3.0);
        assert_eq!(d.histogram_counts, [1, 1, 1, 2]);
        assert!((d.variance - 2.5).abs() < 1e-12);
    }
}
