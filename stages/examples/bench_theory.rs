//! Times the Figure 5 simulation (d = 1000, M = 10,000) and writes the figures.
//!
//! `cargo run --release -p dagrun-stages --example bench_theory [-- RUNS [OUT_DIR]]`
//! prints the median and the spread of RUNS timed runs (default 7) per variability setting,
//! the Theorem 3.3 comparison, and, when OUT_DIR is given, writes Figure 2 and Figure 5 as SVG
//! and PNG plus the results as JSON there.

use std::path::PathBuf;
use std::time::Instant;

use dagrun_stages::theory::{
    plot_bandit, plot_simulation, run_bandit, run_simulation, BanditParams, SimulateParams,
    SimulationResult, Variability,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(7);
    let out: Option<PathBuf> = args.next().map(PathBuf::from);

    let mut results: Vec<SimulationResult> = Vec::new();
    for variability in [Variability::High, Variability::Low] {
        let params = SimulateParams {
            variability,
            ..SimulateParams::default()
        };
        let mut times = Vec::with_capacity(runs);
        let mut last = None;
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            let res = run_simulation(&params)?;
            times.push(start.elapsed().as_secs_f64());
            last = Some(res);
        }
        times.sort_by(f64::total_cmp);
        let res = last.expect("at least one run");
        println!(
            "{variability:?}: d = {}, M = {}: median {:.1} ms (min {:.1}, max {:.1}) over {} runs",
            params.d,
            params.draws,
            1e3 * times[times.len() / 2],
            1e3 * times[0],
            1e3 * times[times.len() - 1],
            times.len()
        );
        for (name, m) in [
            ("vanilla", &res.vanilla),
            ("variance-aware", &res.variance_aware),
        ] {
            let u = &m.underperformance;
            println!(
                "  {name:>14}: mean {:+.5}, std {:.5}, P(wᵀr* ≤ 0) MC {:.4} ± {:.4} vs Thm 3.3 {:.4} (z {:+.2}); Thm 2.2 bound holds in {:.4}",
                m.summary.mean, m.summary.std, u.monte_carlo, u.standard_error, u.closed_form, u.z_score, m.bound_holds
            );
        }
        results.push(res);
    }

    let bandit = run_bandit(&BanditParams::default())?;
    println!(
        "bandit: true return π0 {:.4}, vanilla {:.4}, variance-aware {:.4} (β {} vs {:.4}, KL {:.4})",
        bandit.reference.true_return,
        bandit.vanilla.true_return,
        bandit.variance_aware.true_return,
        bandit.beta,
        bandit.beta_variance_aware,
        bandit.vanilla.kl_to_reference
    );

    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let refs: Vec<&SimulationResult> = results.iter().collect();
        for ext in ["svg", "png"] {
            plot_bandit(&bandit, &dir.join(format!("figure2.{ext}")))?;
            plot_simulation(&refs, &dir.join(format!("figure5.{ext}")))?;
        }
        std::fs::write(
            dir.join("bandit.json"),
            serde_json::to_string_pretty(&bandit)?,
        )?;
        std::fs::write(
            dir.join("simulate.json"),
            serde_json::to_string_pretty(&results)?,
        )?;
        println!("figures and JSON written to {}", dir.display());
    }
    Ok(())
}
