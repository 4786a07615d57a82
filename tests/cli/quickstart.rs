//! The quickstart pipeline end to end, at a reduced size (the full one takes minutes).

use crate::support::*;

fn reduced() -> String {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/quickstart.yaml"
    ))
    .unwrap();
    let out = src
        .replace("  seeds: [1, 2, 3, 4]", "  seeds: [1, 2]")
        .replace("  members: [0, 1]", "  members: [0]")
        .replace("  ppo_steps: 40", "  ppo_steps: 20")
        .replace("  kl_target: 10", "  kl_target: 5")
        .replace("draws: 10000", "draws: 2000")
        .replace("      steps: 300", "      steps: 150");
    assert_ne!(out, src);
    out
}

#[test]
fn quickstart_runs_caches_reruns_heads_with_cutoff_and_ppo_beats_the_reference() {
    let ws = Ws::new();
    ws.write("quickstart.yaml", &reduced());
    // With training curves: the four training kinds write them, one run folder a node.
    let ran = ws.run(&["quickstart.yaml", "--tensorboard", "tb"]);
    assert!(
        ran.contains("report") && ran.contains("reward_bench") && ran.len() == 19,
        "{ran:?}"
    );
    let mut runs: Vec<String> = std::fs::read_dir(ws.p("tb"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    let mut want = vec!["backbone", "head_ensemble", "lm"];
    let ppo: Vec<String> = ran
        .iter()
        .filter(|n| n.starts_with("ppo["))
        .cloned()
        .collect();
    assert_eq!(ppo.len(), 4, "{ran:?}");
    want.extend(ppo.iter().map(String::as_str));
    want.sort();
    assert_eq!(runs, want);
    // TensorBoard's reader sees a PPO node's curves as its record has them.
    if let Some(py) = crate::tensorboard::tensorboard_python() {
        let curves = crate::tensorboard::read_back(&py, &ws.p("tb"));
        for node in [&ppo[0], &"backbone".to_string()] {
            let want = crate::tensorboard::recorded(&ws, node);
            assert!(!want.is_empty(), "{node}: no series");
            for (tag, points) in want {
                assert_eq!(curves[node.as_str()][&tag], points, "{node} {tag}");
            }
        }
    }
    // Fully cached the second time.
    assert!(ws.run(&["quickstart.yaml"]).is_empty());
    // The PPO sweep's final numbers per method: n, mean, sd, min, max.
    let (out, _) = ws.ok(&[
        "metrics",
        "quickstart.yaml",
        "--stage",
        "ppo",
        "--group-by",
        "method",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].split_whitespace().collect::<Vec<_>>()
            == ["method", "metric", "n", "mean", "sd", "min", "max"],
        "{out}"
    );
    for method in ["vanilla", "variance_aware"] {
        for metric in ["final_kl", "final_score", "mean_variance"] {
            assert!(
                lines.iter().any(|l| {
                    let cells: Vec<&str> = l.split_whitespace().collect();
                    cells.len() == 7 && cells[..3] == [method, metric, "2"]
                }),
                "{method} {metric}: {out}"
            );
        }
    }
    // Rerunning the heads reproduces them (same seed): everything below stays cached.
    let (_, err) = ws.ok(&["quickstart.yaml", "--rerun", "head_ensemble"]);
    assert_eq!(executed(&err), set(&["head_ensemble"]), "{err}");
    assert!(err.contains("kept by early cutoff"), "{err}");
    // The report's numbers, through `dagrun show`.
    let (show, _) = ws.ok(&["show", "report"]);
    for key in [
        "judge.reference",
        "judge.vanilla.mean",
        "judge.variance_aware.mean",
        "judge.vanilla.share_below_reference",
        "reward_bench.ensemble.overall",
        "reward_bench.ensemble.chat_hard",
    ] {
        assert!(show.contains(key), "{key} missing from:\n{show}");
    }
    let out = ws.p("out");
    ws.ok(&["export", "report", out.to_str().unwrap()]);
    let numbers: serde_json::Value =
        serde_json::from_str(&ws.read("out/report/numbers.json")).unwrap();
    // Each method trained at the β its calibration chose for the KL target.
    let runs = numbers["ppo"].as_object().unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for m in ["vanilla", "variance_aware"] {
        let (show, _) = ws.ok(&["show", &format!("calibrate[method={m}]"), "--json"]);
        let c: serde_json::Value = serde_json::from_str(&show).unwrap();
        let beta = c["metrics"]["scalars"]["beta"].as_f64().unwrap();
        let mut kls = Vec::new();
        for (label, run) in runs.iter().filter(|(_, r)| r["method"] == m) {
            assert_eq!(run["kl_target"], 5.0, "{label}");
            assert_eq!(run["beta"].as_f64(), Some(beta), "{label}");
        }
        // The calibration checked its β on the sweep's own runs: PPO from a seed is
        // deterministic, so the check's mean final KL is the sweep's, to the last bits.
        let (ppo, _) = ws.ok(&[
            "metrics",
            "quickstart.yaml",
            "--stage",
            "ppo",
            "--format",
            "json",
        ]);
        let rows: serde_json::Value = serde_json::from_str(&ppo).unwrap();
        for row in rows.as_array().unwrap() {
            if row["matrix"]["method"] == m {
                kls.push(row["metrics"]["final_kl"].as_f64().unwrap());
            }
        }
        assert_eq!(kls.len(), 2, "{ppo}");
        let checked = c["metrics"]["scalars"]["checked_kl"].as_f64().unwrap();
        let sweep = kls.iter().sum::<f64>() / kls.len() as f64;
        assert!(
            (checked - sweep).abs() <= 1e-9 * sweep.abs().max(1.0),
            "{m}: the check's mean final KL {checked} is not the sweep's {sweep}"
        );
    }
    let j = &numbers["judge"];
    let reference = j["reference"].as_f64().unwrap();
    for m in ["vanilla", "variance_aware"] {
        let mean = j["groups"][m]["distribution"]["mean"].as_f64().unwrap();
        assert!(
            mean > reference + 0.2,
            "{m}: PPO's true reward {mean} does not beat the reference {reference}"
        );
    }
    // RewardBench on the built-in task's test set (Figure 9): the ensemble and each of
    // the 10 heads, per section; easy pairs (Chat: large true-reward gaps) are scored
    // better than hard ones (Chat Hard: small gaps).
    let rb = &numbers["reward_bench"];
    assert_eq!(rb["pairs"], 400, "{rb}");
    let per_head = rb["per_head"].as_array().unwrap();
    assert_eq!(per_head.len(), 10);
    let section = |s: &serde_json::Value, key: &str| {
        s["sections"][key]["score"]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} score in {s}"))
    };
    for s in per_head.iter().chain([&rb["ensemble"]]) {
        for key in ["chat", "chat_hard", "safety", "reasoning", "prior_sets"] {
            assert!((0.0..=1.0).contains(&section(s, key)), "{key}");
        }
        assert!(s["overall"].as_f64().unwrap() > 0.5, "{s}");
    }
    let (chat, hard) = (
        section(&rb["ensemble"], "chat"),
        section(&rb["ensemble"], "chat_hard"),
    );
    assert!(chat > 0.8 && chat > hard, "chat {chat}, chat hard {hard}");
    // Figure 9's baseline: the backbone with its one head, on the same pairs.
    let base = &numbers["reward_bench_baseline"];
    assert_eq!(base["per_head"].as_array().unwrap().len(), 1, "{base}");
    assert_eq!(base["pairs"], 400);
    assert!(
        base["ensemble"]["overall"].as_f64().unwrap() > 0.5,
        "{base}"
    );
    assert!(ws.read("out/report/index.html").contains("RewardBench"));
    // The claims table: every claim the pipeline measures, each with an interval around
    // its estimate and a verdict (which verdict depends on the reduced run's few policies).
    let f = &numbers["findings"];
    let ids: Vec<&str> = f["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for id in [
        "heads_disagree",
        "vanilla_beats_reference",
        "variance_aware_beats_reference",
        "judge_variance_lower",
        "judge_q10_higher",
        "kl_comparable",
    ] {
        assert!(ids.contains(&id), "claim {id} missing: {ids:?}");
    }
    assert!(ids.iter().any(|i| i.starts_with("theorem_3_3[")), "{ids:?}");
    for c in f["claims"].as_array().unwrap() {
        let i = &c["interval"];
        let (lo, est, hi) = (
            i["lo"].as_f64().unwrap(),
            i["estimate"].as_f64().unwrap(),
            i["hi"].as_f64().unwrap(),
        );
        assert!(
            lo <= hi && [lo, est, hi].iter().all(|x| x.is_finite()),
            "{c}"
        );
        assert!(
            ["supported", "contradicted", "inconclusive"].contains(&c["verdict"].as_str().unwrap()),
            "{c}"
        );
    }
    // PPO beats the reference by far on the built-in task (the interval is well above 0),
    // but the reduced run has 2 policies a method, below findings::MIN_PER_GROUP: no verdict.
    let beats = f["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "vanilla_beats_reference")
        .unwrap();
    assert!(beats["interval"]["lo"].as_f64().unwrap() > 0.0, "{beats}");
    assert_eq!(beats["verdict"], "inconclusive", "{beats}");
    assert!(ws.read("out/report/index.html").contains("<h2>Claims</h2>"));
    for fig in [
        "fig2_bandit",
        "fig5_simulation",
        "fig6_variance",
        "fig7_judge",
        "fig9_reward_bench",
        "fig10_11_ppo_curves",
    ] {
        assert!(
            ws.p(&format!("out/report/{fig}.svg")).exists()
                || ws.read("out/report/index.html").contains("Plot not drawn"),
            "{fig}"
        );
    }
    // A model from the cache, by node id.
    let (gen, _) = ws.ok(&[
        "model",
        "generate",
        "--model",
        "lm",
        "--prompt",
        "the movie",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&gen).unwrap();
    assert!(v["ids"].as_array().unwrap().len() >= 3);
    // Errors about a node's model name the node, never the cache's folder it is read from,
    // and an output that does not exist is named as such.
    for (args, want) in [
        (vec!["--model", "lm", "--dtype", "bf16"], "lm"),
        (
            vec!["--model", "lm:foo"],
            "node `lm` has no output `foo` (its outputs: model)",
        ),
    ] {
        let mut all = vec!["model", "logprobs", "--text", "the movie"];
        all.extend(args);
        let o = ws.dagrun(&all);
        let out = text(&o);
        assert!(!o.status.success(), "{all:?}: {out}");
        assert!(out.contains(want), "{all:?}: {out}");
        assert!(
            !out.contains(".dagrun") && !out.contains("no model output"),
            "{all:?}: {out}"
        );
    }
}

#[test]
fn the_robustness_pipeline_plans_the_comparison_once_per_task_seed() {
    let ws = Ws::new();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/robustness.yaml"
    ))
    .unwrap();
    ws.write("robustness.yaml", &src);
    let (out, _) = ws.ok(&["plan", "robustness.yaml"]);
    // 6 stages × 3 seeds, calibrate 3 × 2, ppo 3 × 16, judge and report 3 each, summary.
    assert!(out.starts_with("robustness.yaml: 79 nodes"), "{out}");
    assert!(
        out.contains("ppo[task_seed=2,method=variance_aware,member=1,seed=4]"),
        "{out}"
    );
}
