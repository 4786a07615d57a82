//! The paper-pipeline figures (6, 7, 9, 10–11) as SVG or PNG, drawn with plotters.
//! Text uses the font that [`crate::theory::plot::ensure_font`] registers.

use std::{error::Error, path::Path};

use plotters::{coord::Shift, prelude::*};

const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const REFERENCE: RGBColor = RGBColor(75, 0, 130);

pub type DrawResult = Result<(), Box<dyn Error>>;

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Draws `fig` to `path` (`.svg` or `.png`).
pub fn render(fig: &impl Figure, path: &Path) -> Result<(), String> {
    crate::theory::plot::ensure_font().map_err(|e| e.to_string())?;
    let size = fig.size();
    let res = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            fig.draw(&root)
                .and_then(|_| root.present().map_err(|e| e.into()))
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            fig.draw(&root)
                .and_then(|_| root.present().map_err(|e| e.into()))
        }
        _ => {
            return Err(format!(
                "cannot plot to `{}`: use .svg or .png",
                path.display()
            ))
        }
    };
    res.map_err(|e| format!("drawing `{}`: {e}", path.display()))
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = 0.06 * (hi - lo).max(1e-9);
    (lo - pad, hi + pad)
}

/// One histogram panel: (title, x label, bin edges, counts, mean, median).
pub type HistogramPanel = (String, String, Vec<f64>, Vec<u64>, f64, f64);

/// Histograms with their mean and median marked (Figure 6).
pub struct Histograms {
    pub panels: Vec<HistogramPanel>,
}

impl Figure for Histograms {
    fn size(&self) -> (u32, u32) {
        (520 * self.panels.len().max(1) as u32, 400)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for ((title, xlabel, edges, counts, mean, median), area) in self.panels.iter().zip(areas) {
            let (x0, x1) = (
                edges.first().copied().unwrap_or(0.0),
                edges
                    .last()
                    .copied()
                    .unwrap_or(1.0)
                    .max(edges.first().copied().unwrap_or(0.0) + 1e-9),
            );
            let ymax = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
            let mut chart = ChartBuilder::on(&area)
                .caption(title, (FONT, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(x0..x1, 0.0..ymax)?;
            chart
                .configure_mesh()
                .x_desc(xlabel.as_str())
                .y_desc("pairs")
                .label_style((FONT, 12))
                .draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
                Rectangle::new(
                    [(edges[i], 0.0), (edges[i + 1], c as f64)],
                    COLORS[0].mix(0.6).filled(),
                )
            }))?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*mean, 0.0), (*mean, ymax)],
                    COLORS[1].stroke_width(2),
                )))?
                .label(format!("mean {mean:.3e}"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], COLORS[1].stroke_width(2))
                });
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*median, 0.0), (*median, ymax)],
                    COLORS[2].stroke_width(2),
                )))?
                .label(format!("median {median:.3e}"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], COLORS[2].stroke_width(2))
                });
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()?;
        }
        Ok(())
    }
}

/// Per-group points with mean ± std, and a reference line (Figure 7).
pub struct GroupPoints {
    pub title: String,
    pub y_label: String,
    /// (group name, values)
    pub groups: Vec<(String, Vec<f64>)>,
    pub reference: Option<(String, f64)>,
}

impl Figure for GroupPoints {
    fn size(&self) -> (u32, u32) {
        (720, 440)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let n = self.groups.len().max(1);
        let (y0, y1) = range(
            self.groups
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .chain(self.reference.iter().map(|r| r.1)),
        );
        let names: Vec<String> = self.groups.iter().map(|g| g.0.clone()).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), y0..y1)?;
        chart
            .configure_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-9 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(self.y_label.as_str())
            .label_style((FONT, 13))
            .disable_x_mesh()
            .draw()?;
        if let Some((label, r)) = &self.reference {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(-0.5, *r), (n as f64 - 0.5, *r)],
                    REFERENCE.stroke_width(2),
                )))?
                .label(format!("{label}: {r:.3}"))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], REFERENCE.stroke_width(2))
                });
        }
        for (gi, (name, vals)) in self.groups.iter().enumerate() {
            let c = COLORS[gi % COLORS.len()];
            let x = gi as f64;
            let m = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
            let sd = if vals.len() > 1 {
                (vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64).sqrt()
            } else {
                0.0
            };
            chart
                .draw_series(vals.iter().enumerate().map(|(j, &v)| {
                    let jitter = ((j as f64 * 0.618_034) % 1.0 - 0.5) * 0.3;
                    Circle::new((x + jitter, v), 4, c.mix(0.7).filled())
                }))?
                .label(format!("{name}: mean {m:.3}, sd {sd:.3}"))
                .legend(move |(lx, ly)| Circle::new((lx + 8, ly), 4, c.filled()));
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.3, m), (x + 0.3, m)],
                c.stroke_width(3),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, m - sd), (x, m + sd)],
                c.stroke_width(2),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    }
}

/// One band: (group name, steps, mean, std).
pub type Band = (String, Vec<f64>, Vec<f64>, Vec<f64>);

/// Mean ± std bands over steps, one per group, one panel per quantity (Figures 10–11).
pub struct Bands {
    /// (panel title, y label, bands)
    pub panels: Vec<(String, String, Vec<Band>)>,
}

impl Figure for Bands {
    fn size(&self) -> (u32, u32) {
        (540 * self.panels.len().max(1) as u32, 400)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((1, self.panels.len().max(1)));
        for ((title, ylabel, groups), area) in self.panels.iter().zip(areas) {
            let (x0, x1) = range(groups.iter().flat_map(|g| g.1.iter().copied()));
            let (y0, y1) = range(
                groups
                    .iter()
                    .flat_map(|g| g.2.iter().zip(&g.3).flat_map(|(m, s)| [m - s, m + s])),
            );
            let mut chart = ChartBuilder::on(&area)
                .caption(title, (FONT, 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_desc("PPO step")
                .y_desc(ylabel.as_str())
                .label_style((FONT, 12))
                .draw()?;
            for (gi, (name, xs, ms, ss)) in groups.iter().enumerate() {
                let c = COLORS[gi % COLORS.len()];
                let mut poly: Vec<(f64, f64)> = xs
                    .iter()
                    .zip(ms.iter().zip(ss))
                    .map(|(x, (m, s))| (*x, m + s))
                    .collect();
                poly.extend(
                    xs.iter()
                        .zip(ms.iter().zip(ss))
                        .rev()
                        .map(|(x, (m, s))| (*x, m - s)),
                );
                chart.draw_series(std::iter::once(Polygon::new(poly, c.mix(0.2).filled())))?;
                chart
                    .draw_series(LineSeries::new(
                        xs.iter().copied().zip(ms.iter().copied()),
                        c.stroke_width(2),
                    ))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 12))
                .draw()?;
        }
        Ok(())
    }
}

/// Grouped bars: per category, one bar per head and one for the ensemble mean (Figure 9).
pub struct HeadBars {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// `heads[k][c]`: head k's value in category c.
    pub heads: Vec<Vec<f64>>,
    /// The ensemble's value per category.
    pub ensemble: Vec<f64>,
    /// Another model to compare with (the paper: a fully fine-tuned single-head model):
    /// its label and value per category.
    pub baseline: Option<(String, Vec<f64>)>,
}

impl Figure for HeadBars {
    fn size(&self) -> (u32, u32) {
        (
            (160 + 140 * self.categories.len().max(1) as u32).max(640),
            440,
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let n = self.categories.len().max(1);
        let names = self.categories.clone();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..125.0)?;
        chart
            .configure_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-9 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            // Room above 100 for the legend, without ticks there.
            .y_label_formatter(&|y| {
                if *y <= 100.0 + 1e-9 {
                    format!("{y:.0}")
                } else {
                    String::new()
                }
            })
            .y_desc(self.y_label.as_str())
            .label_style((FONT, 13))
            .disable_x_mesh()
            .draw()?;
        // K head bars, the ensemble bar and the baseline's, side by side in 0.8 of each
        // category's width.
        let ens = self.heads.len();
        let bars = ens + 1 + usize::from(self.baseline.is_some());
        let w = 0.8 / bars as f64;
        let bar = |c: usize, j: usize, v: f64, color: RGBAColor| {
            let x0 = c as f64 - 0.4 + j as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], color.filled())
        };
        for (k, vals) in self.heads.iter().enumerate() {
            let shade = COLORS[0].mix(0.35 + 0.5 * k as f64 / bars.max(2) as f64);
            let s = chart.draw_series(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(c, &v)| bar(c, k, v, shade)),
            )?;
            if k == 0 {
                s.label(format!("heads 0–{} (one bar each)", self.heads.len() - 1))
                    .legend(|(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], COLORS[0].filled())
                    });
            }
        }
        chart
            .draw_series(
                self.ensemble
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(c, &v)| bar(c, ens, v, COLORS[1].to_rgba())),
            )?
            .label("ensemble mean")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], COLORS[1].filled()));
        if let Some((label, vals)) = &self.baseline {
            chart
                .draw_series(
                    vals.iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(c, &v)| bar(c, ens + 1, v, COLORS[2].to_rgba())),
                )?
                .label(label.as_str())
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], COLORS[2].filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()?;
        Ok(())
    }
}
