//! Statistics shared by the kinds, each rule in one place: the mean and variance of an
//! ensemble's rewards ([`mean_var`]), the sample quantile ([`quantile_sorted`], type 7) and
//! histogram ([`histogram_edges`], [`histogram`]), the distribution of a sample
//! ([`Distribution`]: Figure 6's histograms, the judge's per-method spreads), and in
//! [`infer`] what the report's findings rest on: bootstrap intervals and two tests.

pub mod infer;

/// The type-7 quantile (linear interpolation between order statistics; numpy's default)
/// of an ascending, non-empty sample at `level` in [0, 1].
pub fn quantile_sorted(sorted: &[f64], level: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * level.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The type-7 quantile of an unsorted sample (NaN when it is empty).
pub fn quantile(values: &[f64], level: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile_sorted(&sorted, level)
}

/// `bins + 1` equally spaced edges covering `[min, max]` (widened by ±0.5 when min = max).
pub fn histogram_edges(min: f64, max: f64, bins: usize) -> Vec<f64> {
    let bins = bins.max(1);
    let (lo, hi) = if max > min {
        (min, max)
    } else {
        (min - 0.5, max + 0.5)
    };
    let width = (hi - lo) / bins as f64;
    (0..=bins)
        .map(|i| if i == bins { hi } else { lo + width * i as f64 })
        .collect()
}

/// Counts of `values` per bin of `edges`; bins are `[eᵢ, eᵢ₊₁)`, the last one closed.
/// Values outside `[e₀, e_last]` are not counted.
pub fn histogram(values: &[f64], edges: &[f64]) -> Vec<u64> {
    if edges.len() < 2 {
        return Vec::new();
    }
    let bins = edges.len() - 1;
    let (lo, hi) = (edges[0], edges[bins]);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u64; bins];
    for &x in values {
        if !(lo..=hi).contains(&x) {
            continue;
        }
        let mut i = (((x - lo) / width) as usize).min(bins - 1);
        // Guard the rounding of the division at bin boundaries.
        while i > 0 && x < edges[i] {
            i -= 1;
        }
        while i + 1 < bins && x >= edges[i + 1] {
            i += 1;
        }
        counts[i] += 1;
    }
    counts
}

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
                f64::NAN
            } else {
                quantile_sorted(&sorted, l)
            }
        };
        let (min, max) = (
            sorted.first().copied().unwrap_or(f64::NAN),
            sorted.last().copied().unwrap_or(f64::NAN),
        );
        let bins = bins.max(1);
        let (edges, counts) = if n == 0 {
            (vec![f64::NAN; bins + 1], vec![0; bins])
        } else {
            let edges = histogram_edges(min, max, bins);
            let counts = histogram(values, &edges);
            (edges, counts)
        };
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
    fn empty_and_degenerate_samples_do_not_panic() {
        let d = Distribution::of(&[], 4);
        assert_eq!((d.histogram_edges.len(), d.histogram_counts.len()), (5, 4));
        assert!(d.mean.is_nan() && d.median().is_nan());
        assert!(quantile_sorted(&[], 0.5).is_nan());
        assert_eq!(histogram(&[1.0], &[]), Vec::<u64>::new());
        assert_eq!(histogram_edges(0.0, 1.0, 0), vec![0.0, 1.0]);
        let one = Distribution::of(&[2.0], 2);
        assert_eq!(one.histogram_counts.iter().sum::<u64>(), 1);
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
