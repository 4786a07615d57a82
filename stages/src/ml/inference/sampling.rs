//! Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k
//! and top-p (nucleus), applied in that order as transformers' `generate` does. Computed in
//! f64 from a [`SeededRng`]'s uniform draws, so a seed gives the same choices on every
//! backend that gives the same logits.
//!
//! Where: on the host ([`SamplingConfig::pick_with`]), or, for plain sampling and greedy, on
//! the device that holds the logits ([`SamplingConfig::pick_on_device`]: the same
//! arithmetic as tensor operations, so that a GPU sends back one id per row instead of a
//! vocabulary of logits). [`SamplingPlace`] says which; `DAGRUN_SAMPLING` overrides it.

use burn::tensor::{DType, Device, Int, Tensor, TensorCreationOptions, TensorData};

use crate::ml::device::DeviceSpec;
use crate::ml::error::{MlError, Result};
use crate::ml::rng::SeededRng;

/// Where generation picks its tokens.
///
/// The default (`DAGRUN_SAMPLING` unset or `auto`) is [`Device`](SamplingPlace::Device) for
/// logits on a libtorch CUDA device and [`Host`](SamplingPlace::Host) otherwise: on a GPU
/// the host path copies `rows × vocabulary` floats per token (25 MB for a PPO batch of
/// GPT-2) and then waits for the CPU, while on a CPU backend it is the fastest path and the
/// one every cached `cpu` result was computed with. `DAGRUN_SAMPLING=host` or `device`
/// forces one for every device. Both give the same tokens up to the rounding of a sum of f64
/// probabilities in a different order (a draw within ~1e-13 of a cumulative boundary), and
/// top-k / top-p always run on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingPlace {
    /// Logits copied to the host, tokens chosen there ([`SamplingConfig::pick_with`]).
    Host,
    /// Tokens chosen where the logits are ([`SamplingConfig::pick_on_device`]).
    Device,
}

impl SamplingPlace {
    /// The `DAGRUN_SAMPLING` setting, read once per process: `None` for `auto` or unset.
    pub fn setting() -> std::result::Result<Option<SamplingPlace>, String> {
        static SETTING: std::sync::OnceLock<std::result::Result<Option<SamplingPlace>, String>> =
            std::sync::OnceLock::new();
        SETTING
            .get_or_init(|| match std::env::var("DAGRUN_SAMPLING") {
                Err(_) => Ok(None),
                Ok(v) => Self::parse(&v),
            })
            .clone()
    }

    fn parse(value: &str) -> std::result::Result<Option<SamplingPlace>, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "host" => Ok(Some(SamplingPlace::Host)),
            "device" => Ok(Some(SamplingPlace::Device)),
            other => Err(format!(
                "DAGRUN_SAMPLING: `{other}` is not a place to sample (auto, host or device)"
            )),
        }
    }

    /// Where to sample for a device that is (`on_cuda`) or is not a libtorch CUDA device.
    pub fn resolve(on_cuda: bool) -> std::result::Result<SamplingPlace, String> {
        Ok(Self::setting()?.unwrap_or(if on_cuda {
            SamplingPlace::Device
        } else {
            SamplingPlace::Host
        }))
    }

    /// Where to sample logits that live on `device`.
    pub fn for_device(device: &Device) -> Result<SamplingPlace> {
        Self::resolve(is_libtorch_cuda(device)).map_err(MlError::Invalid)
    }

    /// Where to sample on the device a concrete spec names (`auto` resolved by the caller).
    pub fn for_spec(spec: DeviceSpec) -> std::result::Result<SamplingPlace, String> {
        Self::resolve(matches!(spec, DeviceSpec::Cuda(_)))
    }

    /// `host` or `device`, as `DAGRUN_SAMPLING` spells them.
    pub fn name(self) -> &'static str {
        match self {
            SamplingPlace::Host => "host",
            SamplingPlace::Device => "device",
        }
    }
}

/// Is `device` (or the device it wraps for autodiff) a libtorch CUDA device?
fn is_libtorch_cuda(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    {
        #[allow(deprecated)]
        let cuda = matches!(
            device.clone().inner().as_dispatch(),
            burn_dispatch::DispatchDevice::LibTorch(burn_tch::LibTorchDevice::Cuda(_))
        );
        cuda
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    /// Always take the most likely token (ignores temperature, top-k, top-p and the RNG).
    #[serde(default)]
    pub greedy: bool,
    /// Divide logits by this before sampling (> 0; 1 = unchanged).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[serde(default)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = off).
    #[serde(default = "default_top_p")]
    pub top_p: f64,
}

/// What [`SamplingConfig::pick_on_device`] did: the picks, one per row, or the logits
/// handed back untouched for the host (top-k and top-p are chosen there).
// One value per sampling step, returned at once: boxing the tensor would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum DevicePick {
    /// One token id per row.
    Picked(Vec<u32>),
    /// The logits, for the host to choose from.
    Host(Tensor<2>),
}

impl DevicePick {
    /// The picks, if the device made them.
    pub fn picked(self) -> Option<Vec<u32>> {
        match self {
            DevicePick::Picked(ids) => Some(ids),
            DevicePick::Host(_) => None,
        }
    }
}

fn default_temperature() -> f64 {
    1.0
}
fn default_top_p() -> f64 {
    1.0
}

impl Default for SamplingConfig {
    /// Plain sampling from the model's distribution (temperature 1, no top-k, top-p 1).
    fn default() -> Self {
        SamplingConfig {
            greedy: false,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingConfig {
            greedy: true,
            ..Default::default()
        }
    }

    /// Reject settings that define no distribution.
    pub fn validate(&self) -> Result<()> {
        if self.greedy {
            return Ok(());
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(MlError::Invalid(format!(
                "temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(MlError::Invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }

    /// The probabilities (over the whole vocabulary, zeros for filtered tokens) that sampling
    /// draws from, for one row of logits.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f64> {
        let scaled: Vec<f64> = logits
            .iter()
            .map(|&l| l as f64 / self.temperature)
            .collect();
        let mut keep = vec![true; scaled.len()];
        // Descending by logit; ties broken by lower id first (stable). Only top-k and top-p
        // read the order: plain sampling skips the sort (a vocabulary-sized sort per row and
        // token dominated generation time).
        let mut order: Vec<usize> = Vec::new();
        if (self.top_k > 0 && self.top_k < scaled.len()) || self.top_p < 1.0 {
            order = (0..scaled.len()).collect();
            order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
        }
        if self.top_k > 0 && self.top_k < scaled.len() {
            // Keep every token at least as likely as the k-th (as transformers does on ties).
            let kth = scaled[order[self.top_k - 1]];
            for (i, k) in keep.iter_mut().enumerate() {
                *k = scaled[i] >= kth;
            }
        }
        let softmax = |keep: &[bool]| {
            let max = (0..scaled.len())
                .filter(|&i| keep[i])
                .map(|i| scaled[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let mut p: Vec<f64> = (0..scaled.len())
                .map(|i| {
                    if keep[i] {
                        (scaled[i] - max).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let z: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= z);
            p
        };
        let mut p = softmax(&keep);
        if self.top_p < 1.0 {
            let mut cum = 0.0;
            let mut nucleus = vec![false; scaled.len()];
            for &i in order.iter().filter(|&&i| keep[i]) {
                nucleus[i] = true;
                cum += p[i];
                if cum >= self.top_p {
                    break;
                }
            }
            p = softmax(&nucleus);
        }
        p
    }

    /// Pick the next token for one row of logits.
    pub fn pick(&self, logits: &[f32], rng: &mut SeededRng) -> u32 {
        self.pick_with(logits, self.draw(rng))
    }

    /// The uniform draw [`pick`](Self::pick) takes from the RNG for one row: `None` when
    /// greedy (no draw). Drawing these first, row by row, and then calling
    /// [`pick_with`](Self::pick_with) gives the same tokens as `pick` in row order, with the
    /// rows free to be computed in parallel.
    pub fn draw(&self, rng: &mut SeededRng) -> Option<f64> {
        (!self.greedy).then(|| rng.uniform())
    }

    /// [`pick`](Self::pick) with its uniform draw given (from [`draw`](Self::draw)).
    pub fn pick_with(&self, logits: &[f32], u: Option<f64>) -> u32 {
        match u {
            Some(u) if !self.greedy && self.is_plain(logits.len()) => self.pick_plain(logits, u),
            Some(u) if !self.greedy => Self::pick_from(self.distribution(logits), u),
            _ => argmax(logits),
        }
    }

    /// Neither top-k nor top-p removes a token from a vocabulary of `n`.
    fn is_plain(&self, n: usize) -> bool {
        !(self.top_k > 0 && self.top_k < n) && self.top_p >= 1.0
    }

    /// `pick_from(distribution(logits), u)` for plain sampling, in one buffer instead of four
    /// and three passes instead of six (a PPO batch samples 128 rows of 50,257 logits per
    /// token on the host): the same operations on the same values in the same order, so the
    /// same token bit for bit (tested against the general path).
    fn pick_plain(&self, logits: &[f32], u: f64) -> u32 {
        let t = self.temperature;
        let max = logits
            .iter()
            .map(|&l| l as f64 / t)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t - max).exp()).collect();
        let z: f64 = e.iter().sum();
        Self::pick_from(e.iter().map(|&ei| ei / z), u)
    }

    /// The tokens [`pick_with`](Self::pick_with) would choose for each row of `logits`
    /// (`[rows, vocabulary]`) at the row's draw (`draws[r]`, `None` for a row whose choice
    /// is not wanted: it gets an arbitrary id), computed where the logits are; one id per
    /// row comes back to the host. Greedy is an `argmax`; plain sampling is the host's
    /// arithmetic as tensor operations in f64 — `exp(l/t - max)`, divided by its sum, a
    /// cumulative sum, and the count of entries at or below the draw, which is the index of
    /// the first one above it. A row whose draw is at or above its whole total (rounding
    /// left it below 1) is picked on the host from that row alone, as `pick_with` does.
    /// Top-k and top-p hand the logits back ([`DevicePick::Host`]) for the host.
    pub fn pick_on_device(&self, logits: Tensor<2>, draws: &[Option<f64>]) -> DevicePick {
        let [rows, width] = logits.dims();
        assert_eq!(draws.len(), rows, "one draw (or None) per row");
        if self.greedy {
            return DevicePick::Picked(int_values(logits.argmax(1)));
        }
        if !self.is_plain(width) {
            return DevicePick::Host(logits);
        }
        let device = logits.device();
        let scaled = logits.clone().cast(DType::F64).div_scalar(self.temperature);
        let max = scaled.clone().max_dim(1);
        let e = (scaled - max).exp();
        let z = e.clone().sum_dim(1);
        let cum = (e / z).cumsum(1);
        let us: Vec<f64> = draws.iter().map(|u| u.unwrap_or(0.0)).collect();
        let u = Tensor::<2>::from_data(
            TensorData::new(us.clone(), [rows, 1]),
            TensorCreationOptions::new(device).with_dtype(DType::F64),
        );
        let below = cum.lower_equal(u.expand([rows, width])).int().sum_dim(1);
        let mut picks = int_values(below);
        for (r, pick) in picks.iter_mut().enumerate() {
            if *pick as usize >= width && draws[r].is_some() {
                let row = logits.clone().slice([r..r + 1, 0..width]);
                *pick = self.pick_plain(&crate::ml::models::weights::to_f32_vec(row), us[r]);
            }
        }
        DevicePick::Picked(picks)
    }

    /// Inverse-CDF choice at `u` from probabilities `p` (in token order): the first token
    /// whose cumulative probability exceeds `u`, the last possible one if rounding leaves the
    /// total below it.
    pub fn pick_from(p: impl IntoIterator<Item = f64>, u: f64) -> u32 {
        let mut cum = 0.0;
        let mut last = 0;
        for (i, pi) in p.into_iter().enumerate() {
            if pi > 0.0 {
                cum += pi;
                last = i;
                if u < cum {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

/// The values of an integer tensor of ids, as `u32`.
fn int_values<const D: usize>(t: Tensor<D, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|v| u32::try_from(v).expect("a token id fits in u32"))
        .collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn temperature_top_k_and_top_p_give_the_exact_distributions() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let e: Vec<f64> = (0..4).map(|i| (i as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        let plain = SamplingConfig::default().distribution(&logits);
        assert!(close(&plain, &e.iter().map(|x| x / z).collect::<Vec<_>>()));

        let t2 = SamplingConfig {
            temperature: 2.0,
            ..Default::default()
        };
        let e2: Vec<f64> = (0..4).map(|i| (i as f64 / 2.0).exp()).collect();
        let z2: f64 = e2.iter().sum();
        assert!(close(
            &t2.distribution(&logits),
            &e2.iter().map(|x| x / z2).collect::<Vec<_>>()
        ));

        let k2 = SamplingConfig {
            top_k: 2,
            ..Default::default()
        };
        let zk = e[2] + e[3];
        assert!(close(
            &k2.distribution(&logits),
            &[0.0, 0.0, e[2] / zk, e[3] / zk]
        ));

        // p(3) = 0.6439, p(2) = 0.2369: top_p 0.7 keeps {3, 2}; 0.6 keeps {3} only.
        let p07 = SamplingConfig {
            top_p: 0.7,
            ..Default::default()
        };
        assert!(close(
            &p07.distribution(&logits),
            &[0.0, 0.0, e[2] / zk, e[3] / zk]
        ));
        let p06 = SamplingConfig {
            top_p: 0.6,
            ..Default::default()
        };
        assert!(close(&p06.distribution(&logits), &[0.0, 0.0, 0.0, 1.0]));
    }

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_follows_the_distribution() {
        assert_eq!(argmax(&[1.0, 5.0, 5.0, -1.0]), 1);
        let mut rng = SeededRng::new(3);
        assert_eq!(SamplingConfig::greedy().pick(&[0.0, 2.0, 1.0], &mut rng), 1);
        let cfg = SamplingConfig::default();
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let n = 20_000;
        let ones = (0..n).filter(|_| cfg.pick(&logits, &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.015, "{frac}");
    }

    /// Plain sampling's one-buffer path picks the general path's token for every row and
    /// draw: rows of several sizes and scales, temperatures, masked (-inf) logits, and draws
    /// placed exactly at and next to the cumulative boundaries, where a different rounding of
    /// any probability would move the choice.
    #[test]
    fn plain_sampling_picks_what_the_general_path_picks() {
        let mut gen = SeededRng::new(17);
        let mut checked = 0;
        for (n, scale) in [(2, 1.0), (7, 0.1), (1_000, 3.0), (50_257, 2.0), (300, 40.0)] {
            for t in [1.0, 0.7, 1.3] {
                let cfg = SamplingConfig {
                    temperature: t,
                    top_k: if n > 100 { n } else { 0 }, // k ≥ vocabulary: plain too
                    ..Default::default()
                };
                let mut row = gen.normal_vec(n, scale);
                if n > 5 {
                    row[3] = f32::NEG_INFINITY;
                }
                let p = cfg.distribution(&row);
                let mut cum = 0.0;
                let mut draws: Vec<f64> = (0..20).map(|_| gen.uniform()).collect();
                for &pi in p.iter().take(40) {
                    cum += pi;
                    draws.extend([cum, cum - 1e-16, cum + 1e-16].map(|u| u.clamp(0.0, 0.999_999)));
                }
                for u in draws {
                    let want = SamplingConfig::pick_from(p.iter().copied(), u);
                    assert_eq!(cfg.pick_plain(&row, u), want, "n {n} t {t} u {u}");
                    assert_eq!(cfg.pick_with(&row, Some(u)), want);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000);
        // Top-k below the vocabulary or top-p below 1 take the general path.
        let cfg = |top_k, top_p| SamplingConfig {
            top_k,
            top_p,
            ..Default::default()
        };
        assert!(cfg(0, 1.0).is_plain(10) && cfg(10, 1.0).is_plain(10));
        assert!(!cfg(9, 1.0).is_plain(10) && !cfg(0, 0.9).is_plain(10));
    }

    fn devices() -> Vec<Device> {
        #[allow(unused_mut)]
        let mut out = vec![Device::flex()];
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        out.push(Device::libtorch());
        out
    }

    /// The device path picks the host path's token for every row: random draws (a draw
    /// within ~1e-13 of a boundary could differ; none of these is), several temperatures,
    /// masked (-inf) logits, greedy, rows left out; and a draw at or above the row's total
    /// (1.0, never drawn, reachable only through rounding) takes the host's last possible
    /// token, which the masked tail makes other than the last id.
    #[test]
    fn device_picks_what_the_host_picks() {
        let mut gen = SeededRng::new(5);
        let (rows, width) = (24, 3_001);
        let mut flat = gen.normal_vec(rows * width, 3.0);
        for r in 0..rows {
            flat[r * width + 11] = f32::NEG_INFINITY;
            if r.is_multiple_of(3) {
                flat[r * width + width - 5..(r + 1) * width].fill(f32::NEG_INFINITY);
            }
        }
        for device in devices() {
            let logits =
                Tensor::<2>::from_data(TensorData::new(flat.clone(), [rows, width]), &device);
            for cfg in [
                SamplingConfig::default(),
                SamplingConfig {
                    temperature: 0.6,
                    ..Default::default()
                },
                SamplingConfig {
                    temperature: 1.7,
                    top_k: width,
                    ..Default::default()
                },
                SamplingConfig::greedy(),
            ] {
                for round in 0..5 {
                    let mut draws: Vec<Option<f64>> = (0..rows)
                        .map(|r| (r % 5 != 4).then(|| gen.uniform()))
                        .collect();
                    if round == 4 {
                        draws.iter_mut().step_by(3).for_each(|u| *u = Some(1.0));
                    }
                    let DevicePick::Picked(got) = cfg.pick_on_device(logits.clone(), &draws) else {
                        panic!("plain and greedy sampling pick on the device: {cfg:?}");
                    };
                    for (r, u) in draws.iter().enumerate() {
                        let Some(u) = *u else { continue };
                        let row = &flat[r * width..(r + 1) * width];
                        let want = cfg.pick_with(row, (!cfg.greedy).then_some(u));
                        assert_eq!(got[r], want, "{device:?} {cfg:?} row {r} u {u}");
                    }
                }
            }
            // u = 1.0 on a row with a masked tail: the last finite token, not the last id.
            let cfg = SamplingConfig::default();
            assert_eq!(cfg.pick_with(&flat[..width], Some(1.0)) as usize, width - 6);
            // Top-k and top-p stay on the host.
            for cfg in [
                SamplingConfig {
                    top_k: 40,
                    ..Default::default()
                },
                SamplingConfig {
                    top_p: 0.9,
                    ..Default::default()
                },
            ] {
                assert!(matches!(
                    cfg.pick_on_device(logits.clone(), &vec![Some(0.5); rows]),
                    DevicePick::Host(_)
                ));
            }
        }
    }

    #[test]
    fn the_place_setting_names_auto_host_or_device() {
        assert_eq!(SamplingPlace::parse("auto"), Ok(None));
        assert_eq!(SamplingPlace::parse(""), Ok(None));
        assert_eq!(SamplingPlace::parse(" Host"), Ok(Some(SamplingPlace::Host)));
        assert_eq!(
            SamplingPlace::parse("device"),
            Ok(Some(SamplingPlace::Device))
        );
        let err = SamplingPlace::parse("gpu").unwrap_err();
        assert!(
            err.contains("DAGRUN_SAMPLING") && err.contains("auto, host or device"),
            "{err}"
        );
        assert!(!is_libtorch_cuda(&Device::flex()));
        #[cfg(feature = "tch")]
        #[allow(deprecated)]
        {
            // Naming a CUDA device touches no GPU: this runs on any machine.
            assert!(is_libtorch_cuda(&Device::libtorch_cuda(0)));
            assert!(is_libtorch_cuda(&Device::libtorch_cuda(1).autodiff()));
            assert!(!is_libtorch_cuda(&Device::libtorch()));
            assert!(!is_libtorch_cuda(&Device::libtorch().autodiff()));
        }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for cfg in [
            SamplingConfig {
                temperature: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 0.0,
                ..Default::default()
            },
            SamplingConfig {
                top_p: 1.5,
                ..Default::default()
            },
        ] {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        assert!(SamplingConfig {
            temperature: 0.0,
            greedy: true,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }
}
