//! Figures 2 and 5 as SVG or PNG (chosen by the output path's extension), drawn with `plotters`.
//!
//! Fonts: `plotters` is built without its `ttf` feature (which links the system's
//! fontconfig/freetype through `font-kit`) and with `ab_glyph` (pure Rust). `ab_glyph` needs a
//! TrueType font at run time for both backends (plotters measures text to lay out axes, even
//! for SVG), and no font file is shipped: [`ensure_font`] loads the file named by
//! `DAGRUN_FONT`, else the first of [`FONT_CANDIDATES`] that exists (on Debian:
//! `fonts-dejavu-core`), and registers it once as `sans-serif`. Without one, plotting fails
//! with [`TheoryError::NoFont`] saying what to install; the numbers never depend on fonts.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::{BanditResult, SimulationResult, TheoryError, Variability};

/// Font files tried, in order, after `DAGRUN_FONT`.
pub const FONT_CANDIDATES: [&str; 8] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

const FONT: &str = "sans-serif";
const GREY: RGBColor = RGBColor(150, 150, 150);
const VANILLA: RGBColor = RGBColor(31, 119, 180);
const AWARE: RGBColor = RGBColor(214, 39, 40);
const TRUE_GREEN: RGBColor = RGBColor(44, 160, 44);

/// The registered font: its path and the blake3 hash of its bytes (hex).
static REGISTERED: Mutex<Option<(PathBuf, String)>> = Mutex::new(None);

/// Registers a TrueType font for plot text (once per process); returns its path.
pub fn ensure_font() -> Result<PathBuf, TheoryError> {
    registered_font().map(|(path, _)| path)
}

/// The font plot text is laid out with, named by the hash of its bytes (the first 16 hex
/// digits of blake3): the same font gives the same name on every machine, wherever its file
/// lives (a `report` node's cache key holds it).
pub fn font_id() -> Result<String, TheoryError> {
    registered_font().map(|(_, hash)| hash)
}

fn registered_font() -> Result<(PathBuf, String), TheoryError> {
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = registered.as_ref() {
        return Ok(found.clone());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(env) = std::env::var_os("DAGRUN_FONT") {
        candidates.push(PathBuf::from(env));
    }
    candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let searched: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(TheoryError::NoFont {
            searched: searched.join(", "),
        });
    };
    let bytes = std::fs::read(path).map_err(|e| TheoryError::BadFont {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let hash = blake3::hash(&bytes).to_hex()[..16].to_string();
    // plotters keeps fonts for the whole process and wants `&'static` bytes: leak this one copy.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FONT, FontStyle::Normal, bytes).map_err(|_| TheoryError::BadFont {
        path: path.clone(),
        reason: "not a TrueType/OpenType font".into(),
    })?;
    *registered = Some((path.clone(), hash.clone()));
    Ok((path.clone(), hash))
}

/// Draws Figure 2 for `result` to `path` (`.svg` or `.png`, 1100×450).
pub fn plot_bandit(result: &BanditResult, path: &Path) -> Result<(), TheoryError> {
    render(path, (1100, 450), |area| draw_bandit(area, result))
}

/// Draws Figure 5 to `path` (`.svg` or `.png`): one panel per result (e.g. high and low
/// variability), each overlaying the histograms of both methods' true returns.
pub fn plot_simulation(results: &[&SimulationResult], path: &Path) -> Result<(), TheoryError> {
    if results.is_empty() {
        return Err(TheoryError::param("results", "nothing to plot"));
    }
    let width = 560 * results.len() as u32;
    render(path, (width, 450), |area| draw_simulation(area, results))
}

type DrawResult = Result<(), Box<dyn Error>>;

/// Opens the backend named by the extension and runs `draw` on it.
fn render<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), TheoryError>
where
    F: Fn(&mut dyn AreaSink) -> DrawResult,
{
    ensure_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let outcome = match ext.as_deref() {
        Some("svg") => {
            let mut sink = SvgSink(SVGBackend::new(path, size).into_drawing_area());
            draw(&mut sink)
        }
        Some("png") => {
            let mut sink = PngSink(BitMapBackend::new(path, size).into_drawing_area());
            draw(&mut sink)
        }
        _ => {
            return Err(TheoryError::PlotFormat {
                path: path.to_path_buf(),
            })
        }
    };
    outcome.map_err(|e| TheoryError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Object-safe wrapper over the two backends so the figure code is written once.
trait AreaSink {
    fn bandit(&mut self, result: &BanditResult) -> DrawResult;
    fn simulation(&mut self, results: &[&SimulationResult]) -> DrawResult;
}

struct SvgSink<'a>(DrawingArea<SVGBackend<'a>, Shift>);
struct PngSink<'a>(DrawingArea<BitMapBackend<'a>, Shift>);

macro_rules! impl_sink {
    ($t:ident) => {
        impl AreaSink for $t<'_> {
            fn bandit(&mut self, result: &BanditResult) -> DrawResult {
                bandit_figure(&self.0, result)?;
                self.0.present()?;
                Ok(())
            }
            fn simulation(&mut self, results: &[&SimulationResult]) -> DrawResult {
                simulation_figure(&self.0, results)?;
                self.0.present()?;
                Ok(())
            }
        }
    };
}
impl_sink!(SvgSink);
impl_sink!(PngSink);

fn draw_bandit(area: &mut dyn AreaSink, result: &BanditResult) -> DrawResult {
    area.bandit(result)
}

fn draw_simulation(area: &mut dyn AreaSink, results: &[&SimulationResult]) -> DrawResult {
    area.simulation(results)
}

fn arm_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 && *x >= 0.0 {
        format!("arm {}", x.round() as i64 + 1)
    } else {
        String::new()
    }
}

fn bandit_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &BanditResult) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let n = r.true_rewards.len();
    let x_range = -0.5..(n as f64 - 0.5);

    // Left: true rewards, estimates and their uncertainty intervals.
    let lows: Vec<f64> = (0..n)
        .map(|i| r.estimated_rewards[i] - r.interval_z * r.std_devs[i])
        .collect();
    let highs: Vec<f64> = (0..n)
        .map(|i| r.estimated_rewards[i] + r.interval_z * r.std_devs[i])
        .collect();
    let y_lo = lows
        .iter()
        .chain(&r.true_rewards)
        .copied()
        .fold(f64::INFINITY, f64::min);
    let y_hi = highs
        .iter()
        .chain(&r.true_rewards)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = 0.08 * (y_hi - y_lo).max(1e-9);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("Rewards per arm", (FONT, 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range.clone(), (y_lo - pad)..(y_hi + pad))?;
    chart
        .configure_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&arm_label)
        .y_desc("reward")
        .draw()?;
    chart
        .draw_series((0..n).map(|i| {
            ErrorBar::new_vertical(
                i as f64 + 0.08,
                lows[i],
                r.estimated_rewards[i],
                highs[i],
                AWARE.stroke_width(2),
                12,
            )
        }))?
        .label(format!("r̂ ± {:.2}σ", r.interval_z))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], AWARE.stroke_width(2)));
    chart
        .draw_series((0..n).map(|i| {
            Circle::new(
                (i as f64 + 0.08, r.estimated_rewards[i]),
                5,
                VANILLA.filled(),
            )
        }))?
        .label("estimated r̂")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, VANILLA.filled()));
    chart
        .draw_series(
            (0..n)
                .map(|i| Circle::new((i as f64 - 0.08, r.true_rewards[i]), 5, TRUE_GREEN.filled())),
        )?
        .label("true r*")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, TRUE_GREEN.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    // Right: the three policies per arm.
    let policies = [
        (&r.reference_policy, GREY, "π0", r.reference.true_return),
        (&r.vanilla_policy, VANILLA, "vanilla", r.vanilla.true_return),
        (
            &r.variance_aware_policy,
            AWARE,
            "variance-aware",
            r.variance_aware.true_return,
        ),
    ];
    let p_max = policies
        .iter()
        .flat_map(|(p, ..)| p.iter())
        .copied()
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("Policies (legend: true return πᵀr*)", (FONT, 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range, 0.0..(p_max * 1.15).clamp(0.05, 1.0))?;
    chart
        .configure_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&arm_label)
        .y_desc("probability")
        .draw()?;
    let width = 0.26;
    for (k, (pi, color, name, ret)) in policies.iter().enumerate() {
        let offset = (k as f64 - 1.0) * width;
        let color = *color;
        chart
            .draw_series((0..n).map(|i| {
                let x0 = i as f64 + offset - width / 2.0 + 0.01;
                Rectangle::new([(x0, 0.0), (x0 + width - 0.02, pi[i])], color.filled())
            }))?
            .label(format!("{name}: {ret:.3}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn simulation_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    results: &[&SimulationResult],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, results.len()));
    for (panel, res) in panels.iter().zip(results) {
        let edges = &res.histogram_edges;
        let (x0, x1) = (edges[0], edges[edges.len() - 1]);
        let c_max = res
            .vanilla
            .histogram
            .iter()
            .chain(&res.variance_aware.histogram)
            .copied()
            .max()
            .unwrap_or(1)
            .max(1);
        let title = if res.custom_variances {
            format!(
                "given Σ (σ² in [{:.3}, {:.3}])",
                res.lambda_min, res.lambda_max
            )
        } else {
            let v = match res.variability {
                Variability::High => "High",
                Variability::Low => "Low",
            };
            format!(
                "{v} variability (σ² in [{:.3}, {:.3}])",
                res.lambda_min, res.lambda_max
            )
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, 0.0..(c_max as f64 * 1.1))?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_desc(format!(
                "true return wᵀr*  (d = {}, M = {})",
                res.d, res.draws
            ))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("draws")
            .draw()?;
        for (stats, color, name) in [
            (&res.vanilla, VANILLA, "vanilla"),
            (&res.variance_aware, AWARE, "variance-aware"),
        ] {
            let up = &stats.underperformance;
            chart
                .draw_series(stats.histogram.iter().enumerate().map(|(i, c)| {
                    Rectangle::new(
                        [(edges[i], 0.0), (edges[i + 1], *c as f64)],
                        color.mix(0.45).filled(),
                    )
                }))?
                .label(format!(
                    "{name}: sd {:.2e}, P(≤0) {:.3}±{:.3} (Thm 3.3: {:.3})",
                    stats.summary.std, up.monte_carlo, up.standard_error, up.closed_form
                ))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.mix(0.6).filled())
                });
        }
        if x0 < 0.0 && x1 > 0.0 {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (0.0, c_max as f64 * 1.1)],
                BLACK.stroke_width(1),
            )))?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}
