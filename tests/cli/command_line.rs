//! The command line itself: global options stand before or after a subcommand, a list
//! option that swallowed the pipeline is named, bad counts are refused, and `dagrun kinds`
//! teaches a kind's params.

use crate::support::*;

#[test]
fn global_options_stand_before_or_after_the_subcommand() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    for args in [
        vec!["-q", "plan", "p.yaml"],
        vec!["plan", "-q", "p.yaml"],
        vec!["--cache", ".dagrun", "plan", "p.yaml"],
        vec!["-v", "status", "p.yaml"],
    ] {
        let (out, _) = ws.ok(&args);
        assert!(
            out.contains("4 stale") || out.contains("3 stale"),
            "{args:?}: {out}"
        );
    }
    ws.ok(&["-q", "p.yaml"]);
    let (out, _) = ws.ok(&["status", "p.yaml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["in_progress"].is_null() && v["stages"]["train"].is_object(),
        "{out}"
    );
    let (out, _) = ws.ok(&["--cache", ".dagrun", "log"]);
    assert!(out.contains("4 nodes, 4 ran, 0 cached"), "{out}");
    // A run's own options before a subcommand would be ignored: refused instead.
    let o = ws.dagrun(&["-j", "2", "plan", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("after the pipeline"), "{}", text(&o));
}

#[test]
fn a_pipeline_read_as_a_node_name_is_pointed_out() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    for flag in ["--rerun", "--only", "--until"] {
        let o = ws.dagrun(&[flag, "prepare", "p.yaml"]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!("`p.yaml` was read as a value of {flag}")),
            "{t}"
        );
    }
    // Ending the list with `--` works, as the message says.
    let (out, _) = ws.ok(&["-n", "--rerun", "prepare", "--", "p.yaml"]);
    assert!(out.contains("forced"), "{out}");
    for (args, want) in [
        (vec!["p.yaml", "-j", "0"], "must be at least 1"),
        (vec!["p.yaml", "--json"], "--dry-run"),
    ] {
        let o = ws.dagrun(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    assert!(!ws.p(".dagrun").exists(), "nothing ran");
}

#[test]
fn plan_predicts_that_only_refuses_an_uncached_upstream() {
    let ws = Ws::new();
    ws.write("p.yaml", SWEEP);
    let (out, _) = ws.ok(&["plan", "p.yaml", "--only", "train"]);
    assert!(out.starts_with("p.yaml: 3 nodes, 3 missing"), "{out}");
    assert!(
        out.contains("needs `prepare`, which is outside the selection and not cached"),
        "{out}"
    );
    assert!(
        out.contains("a run would stop before doing any work"),
        "{out}"
    );
    let (run, _) = ws.predicted("p.yaml");
    assert_eq!(run.len(), 4);
    let o = ws.dagrun(&["p.yaml", "--only", "train"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`train[seed=0]` needs `prepare`, which is outside the selection"));
    // Once `prepare` is cached, both agree that the sweep runs.
    ws.run(&["p.yaml", "--only", "prepare"]);
    let (out, _) = ws.ok(&["plan", "p.yaml", "--only", "train"]);
    assert!(out.starts_with("p.yaml: 3 nodes, 3 stale"), "{out}");
    assert_eq!(ws.run(&["p.yaml", "--only", "train"]).len(), 3);
}

#[test]
fn kinds_lists_a_kinds_params_with_types_defaults_and_meaning() {
    let ws = Ws::new();
    let (out, _) = ws.ok(&["kinds", "ppo"]);
    assert!(out.starts_with("ppo (v"), "{out}");
    assert!(
        out.contains("  beta: number | null  [default 0.2]\n      KL coefficient"),
        "{out}"
    );
    assert!(
        out.contains("  method: vanilla | variance_aware  [default vanilla]"),
        "{out}"
    );
    assert!(out.contains("  policy: string  [required]"), "{out}");
    // Every param of every kind says what it is for.
    let (list, _) = ws.ok(&["kinds"]);
    let kinds: Vec<&str> = list
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|v| v.starts_with('v'))
        })
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(kinds.len() >= 13, "{list}");
    // Without a kind, --json gives every kind with its schema (the same one as per kind).
    let (all, _) = ws.ok(&["kinds", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all.as_object().unwrap().len(), kinds.len(), "{all}");
    let (ppo, _) = ws.ok(&["kinds", "ppo", "--json"]);
    let ppo: serde_json::Value = serde_json::from_str(&ppo).unwrap();
    assert_eq!(all["ppo"]["params"], ppo);
    assert!(all["command"]["params"].is_null() && all["command"]["takes_cmd"] == true);
    for k in kinds {
        let (json, _) = ws.ok(&["kinds", k, "--json"]);
        let schema: serde_json::Value = serde_json::from_str(&json).unwrap();
        if k == "command" {
            assert!(schema.is_null());
            continue;
        }
        let defs = &schema["$defs"];
        for (name, p) in schema["properties"].as_object().unwrap() {
            let referred = p["$ref"]
                .as_str()
                .or_else(|| p["anyOf"][0]["$ref"].as_str())
                .map(|r| &defs[r.rsplit('/').next().unwrap()]["description"]);
            assert!(
                p["description"].is_string() || referred.is_some_and(|d| d.is_string()),
                "{k}.{name} has no description"
            );
        }
    }
    let o = ws.dagrun(&["kinds", "ppo2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("unknown stage kind `ppo2` (known: "),
        "{}",
        text(&o)
    );
}

#[test]
fn a_pipeline_beside_a_cache_elsewhere_gets_a_hint_about_the_workspace() {
    let ws = Ws::new();
    std::fs::create_dir(ws.p("exp")).unwrap();
    ws.write("exp/p.yaml", SWEEP);
    // Run in exp/, then plan it from the folder above: that workspace has no cache.
    let o = std::process::Command::new(BIN)
        .args(["-q", "p.yaml"])
        .current_dir(ws.p("exp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (out, err) = ws.ok(&["plan", "exp/p.yaml"]);
    assert!(out.contains("4 stale"), "{out}");
    assert!(
        err.contains("has one: use `--workdir") && err.contains("/exp`"),
        "{err}"
    );
    // From exp/ itself, or once this workspace has a cache, no note.
    let (_, err) = ws.ok(&["--workdir", "exp", "plan", "exp/p.yaml"]);
    assert!(!err.contains("note:"), "{err}");
}
