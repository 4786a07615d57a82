//! The command line itself: global options stand before or after a subcommand, a list
//! option that swallowed the pipeline is named, and bad counts are refused.

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
