use crate::support::*;

#[test]
fn theory_pipeline_reports_both_figures_and_the_closed_forms() {
    let ws = Ws::new();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/theory.yaml"
    ))
    .unwrap();
    // A smaller simulation keeps the test quick; the pipeline's own size is 10,000 draws.
    ws.write("theory.yaml", &src.replace("draws: 10000", "draws: 4000"));
    let ran = ws.run(&["theory.yaml"]);
    assert_eq!(
        ran,
        set(&[
            "bandit",
            "simulate[variability=high]",
            "simulate[variability=low]",
            "report"
        ])
    );
    let out = ws.p("out");
    ws.ok(&["export", "report", out.to_str().unwrap()]);
    let numbers: serde_json::Value =
        serde_json::from_str(&ws.read("out/report/numbers.json")).unwrap();
    for setting in ["high", "low"] {
        let s = &numbers["simulate"][setting];
        for m in ["vanilla", "variance_aware"] {
            let u = &s[m]["underperformance"];
            let z = u["z_score"].as_f64().unwrap();
            assert!(
                z.abs() < 3.0,
                "{setting} {m}: Monte Carlo is {z} standard errors from Theorem 3.3"
            );
        }
        let (pva, pvan) = (
            s["variance_aware"]["underperformance"]["closed_form"]
                .as_f64()
                .unwrap(),
            s["vanilla"]["underperformance"]["closed_form"]
                .as_f64()
                .unwrap(),
        );
        assert!(pva <= pvan + 1e-12, "{setting}: P_va {pva} > P_van {pvan}");
    }
    let hi = &numbers["simulate"]["high"];
    assert!(
        hi["variance_aware"]["summary"]["std"].as_f64().unwrap()
            < 0.7 * hi["vanilla"]["summary"]["std"].as_f64().unwrap()
    );
    let b = &numbers["bandit"];
    assert!(
        b["variance_aware"]["true_return"].as_f64().unwrap()
            > b["vanilla"]["true_return"].as_f64().unwrap()
    );
    let html = ws.read("out/report/index.html");
    assert!(html.contains("Figure 2") && html.contains("Figure 5") && html.contains("closed form"));
    let (show, _) = ws.ok(&["show", "simulate[variability=high]"]);
    assert!(
        show.contains("variance_aware.p_underperform_closed_form"),
        "{show}"
    );
    // Identical for a seed: rerunning a node reproduces its outputs (early cutoff).
    let (_, err) = ws.ok(&["theory.yaml", "--rerun", "simulate"]);
    assert!(err.contains("kept by early cutoff"), "{err}");
}
