//! Checks of the theory stages against the paper's closed forms (docs/algorithms.md §7).

use dagrun_stages::theory::{
    plot_bandit, plot_simulation, rng, run_bandit, run_simulation, solutions, BanditParams,
    SimulateParams, SimulationResult, TheoryError, Variability,
};

fn small(seed: u64) -> SimulateParams {
    SimulateParams {
        d: 200,
        draws: 20_000,
        seed,
        signal: 0.25,
        ..SimulateParams::default()
    }
}

#[test]
fn isotropic_sigma_gives_identical_solutions() {
    let mut g = rng::seeded(3, 0);
    for c in [0.01, 1.0, 7.5] {
        let r_hat: Vec<f64> = (0..50).map(|_| rng::standard_normal(&mut g)).collect();
        let var = vec![c; 50];
        let a = solutions::vanilla_solution(&r_hat, 2.0);
        let b = solutions::variance_aware_solution(&r_hat, &var, 2.0);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-12, "c = {c}: {x} vs {y}");
        }
    }
    // And draw by draw in the simulation.
    let params = SimulateParams {
        d: 100,
        draws: 500,
        variances: Some(vec![0.3; 100]),
        keep_returns: true,
        ..SimulateParams::default()
    };
    let res = run_simulation(&params).unwrap();
    let (a, b) = (
        res.vanilla.returns.as_ref().unwrap(),
        res.variance_aware.returns.as_ref().unwrap(),
    );
    assert_eq!(a.len(), 500);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{x} vs {y}");
    }
    let (pv, pa) = (
        res.vanilla.underperformance.closed_form,
        res.variance_aware.underperformance.closed_form,
    );
    assert!((pv - pa).abs() < 1e-12, "{pv} vs {pa}");
}

#[test]
fn monte_carlo_matches_theorem_3_3_within_three_standard_errors() {
    for variability in [Variability::High, Variability::Low] {
        for seed in [1, 2] {
            let res = run_simulation(&SimulateParams {
                variability,
                ..small(seed)
            })
            .unwrap();
            for (name, m) in [
                ("vanilla", &res.vanilla),
                ("variance-aware", &res.variance_aware),
            ] {
                let u = &m.underperformance;
                assert!(
                    (0.05..=0.4).contains(&u.closed_form),
                    "{variability:?}/{seed}/{name}: closed form {} outside the test's range",
                    u.closed_form
                );
                assert!(
                    u.z_score.abs() <= 3.0,
                    "{variability:?}/{seed}/{name}: MC {} vs closed form {} (se {}, z {})",
                    u.monte_carlo,
                    u.closed_form,
                    u.standard_error,
                    u.z_score
                );
            }
        }
    }
}

#[test]
fn variance_aware_never_more_likely_to_underperform() {
    let mut g = rng::seeded(11, 0);
    for _ in 0..2000 {
        let d = 1 + (rng::uniform01(&mut g) * 60.0) as usize;
        let scale = (rng::uniform01(&mut g) * 6.0 - 3.0).exp();
        let r_star: Vec<f64> = (0..d)
            .map(|_| scale * rng::standard_normal(&mut g))
            .collect();
        let var: Vec<f64> = (0..d)
            .map(|_| (rng::uniform01(&mut g) * 9.0 - 4.5).exp())
            .collect();
        let p_va = solutions::p_underperform_variance_aware(&r_star, &var);
        let p_van = solutions::p_underperform_vanilla(&r_star, &var);
        assert!(
            p_va <= p_van * (1.0 + 1e-12),
            "d {d}: P_va {p_va} > P_van {p_van}"
        );
    }
}

#[test]
fn algorithms_section_7_numeric_check() {
    let (r_hat, var) = ([1.0, 1.0], [1.0, 4.0]);
    let w = solutions::variance_aware_solution(&r_hat, &var, 1.0);
    let direction = [w[0] / w[0], w[1] / w[0]];
    assert!((direction[1] - 0.25).abs() < 1e-15);
    let sharpe_aware = solutions::sharpe_ratio(&w, &r_hat, &var);
    let sharpe_vanilla =
        solutions::sharpe_ratio(&solutions::vanilla_solution(&r_hat, 1.0), &r_hat, &var);
    assert!((sharpe_aware - 1.1180).abs() < 5e-5, "{sharpe_aware}");
    assert!((sharpe_vanilla - 0.8944).abs() < 5e-5, "{sharpe_vanilla}");
    assert!(sharpe_aware >= sharpe_vanilla);
}

#[test]
fn same_seed_same_result_other_seed_other_result() {
    let a = run_simulation(&SimulateParams {
        draws: 300,
        ..SimulateParams::default()
    })
    .unwrap();
    let b = run_simulation(&SimulateParams {
        draws: 300,
        ..SimulateParams::default()
    })
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = run_simulation(&SimulateParams {
        draws: 300,
        seed: 1,
        ..SimulateParams::default()
    })
    .unwrap();
    assert_ne!(a.vanilla.summary.mean, c.vanilla.summary.mean);
    // The fixed problem does not depend on the number of draws.
    let p = SimulateParams::default();
    let q = SimulateParams {
        draws: 5,
        ..SimulateParams::default()
    };
    assert_eq!(p.true_reward_vector(), q.true_reward_vector());
    let r = p.true_reward_vector();
    let norm2: f64 = r.iter().map(|x| x * x).sum();
    assert!((norm2 - 0.16).abs() < 1e-12);
}

#[test]
fn figure_5_story_high_versus_low_variability() {
    let run = |variability| {
        run_simulation(&SimulateParams {
            draws: 2000,
            variability,
            ..SimulateParams::default()
        })
        .unwrap()
    };
    let (high, low) = (run(Variability::High), run(Variability::Low));
    // High: variance-aware returns spread much less, and underperform less often.
    assert!(high.variance_aware.summary.std < 0.7 * high.vanilla.summary.std);
    assert!(
        high.variance_aware.underperformance.closed_form
            < 0.5 * high.vanilla.underperformance.closed_form
    );
    // Low: nearly the same distribution.
    let ratio = low.variance_aware.summary.std / low.vanilla.summary.std;
    assert!((0.9..1.1).contains(&ratio), "std ratio {ratio}");
    let (pa, pv) = (
        low.variance_aware.underperformance.closed_form,
        low.vanilla.underperformance.closed_form,
    );
    assert!(pa <= pv && pv - pa < 0.01, "{pa} vs {pv}");
    // Histograms count every draw (shared edges span both methods).
    assert_eq!(high.vanilla.histogram.iter().sum::<u64>(), 2000);
    assert_eq!(high.variance_aware.histogram.iter().sum::<u64>(), 2000);
    assert_eq!(high.histogram_edges.len(), 41);
}

#[test]
fn theorem_2_2_bound_holds_whenever_the_noise_is_within_beta() {
    let res = run_simulation(&SimulateParams {
        d: 50,
        draws: 20_000,
        delta: 0.3,
        ..SimulateParams::default()
    })
    .unwrap();
    let expected_beta = 50f64.sqrt() + (2.0 * (1.0f64 / 0.3).ln()).sqrt();
    assert!((res.beta_delta - expected_beta).abs() < 1e-12);
    // The norm event has probability ≥ 1 - δ; the bound holds at least on that event.
    assert!(res.noise_within_beta >= 0.7);
    assert!(
        res.noise_within_beta < 1.0,
        "some draws should leave the ball at d = 50"
    );
    for m in [&res.vanilla, &res.variance_aware] {
        assert!(m.bound_holds >= res.noise_within_beta);
    }
}

#[test]
fn invalid_params_are_reported_by_field() {
    let err = run_simulation(&SimulateParams {
        high_range: [1.0, 0.1],
        ..SimulateParams::default()
    })
    .unwrap_err();
    assert!(matches!(&err, TheoryError::InvalidParam { field, .. } if field == "high_range"));
    let err = run_simulation(&SimulateParams {
        d: 3,
        variances: Some(vec![1.0, -1.0, 1.0]),
        ..SimulateParams::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("`variances[1]`"), "{err}");
    let parsed: Result<SimulateParams, _> =
        serde_json::from_str(r#"{"d": 10, "variability": "medium"}"#);
    assert!(parsed.is_err());
    let parsed: SimulateParams =
        serde_json::from_str(r#"{"d": 10, "variability": "low"}"#).unwrap();
    assert_eq!(parsed.variability, Variability::Low);
    assert_eq!(parsed.draws, 10_000);
}

#[test]
fn plots_are_written_or_say_which_font_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bandit = run_bandit(&BanditParams::default()).unwrap();
    let sims: Vec<SimulationResult> = [Variability::High, Variability::Low]
        .into_iter()
        .map(|variability| {
            run_simulation(&SimulateParams {
                draws: 500,
                variability,
                ..SimulateParams::default()
            })
            .unwrap()
        })
        .collect();
    let refs: Vec<&SimulationResult> = sims.iter().collect();
    let fig2_svg = dir.path().join("figure2.svg");
    match plot_bandit(&bandit, &fig2_svg) {
        Err(TheoryError::NoFont { searched }) => {
            assert!(searched.contains("DejaVuSans.ttf"));
            return;
        }
        other => other.unwrap(),
    }
    let svg = std::fs::read_to_string(&fig2_svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("vanilla") && svg.contains("arm 3"));
    let fig2_png = dir.path().join("figure2.png");
    plot_bandit(&bandit, &fig2_png).unwrap();
    let fig5_svg = dir.path().join("figure5.svg");
    plot_simulation(&refs, &fig5_svg).unwrap();
    let svg = std::fs::read_to_string(&fig5_svg).unwrap();
    assert!(svg.contains("High variability") && svg.contains("Low variability"));
    let fig5_png = dir.path().join("figure5.png");
    plot_simulation(&refs, &fig5_png).unwrap();
    for png in [&fig2_png, &fig5_png] {
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(
            bytes.len() > 5_000,
            "{} is suspiciously small",
            png.display()
        );
    }
    let err = plot_bandit(&bandit, &dir.path().join("figure2.pdf")).unwrap_err();
    assert!(matches!(err, TheoryError::PlotFormat { .. }));
}
