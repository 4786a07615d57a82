//! pipelines/paper.yaml without its weights and data: the dry run says what is missing,
//! a real run refuses before doing any work.

use crate::support::*;

#[test]
fn paper_pipeline_dry_run_names_what_is_missing_and_the_run_refuses() {
    let ws = Ws::new();
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/paper.yaml"))
        .unwrap();
    ws.write("paper.yaml", &src);
    let (out, _) = ws.ok(&["plan", "paper.yaml"]);
    for missing in [
        "data/preference_dataset_mix2",
        "data/imdb",
        "data/reward-bench",
        "models/gpt2/tokenizer.json",
        "models/gemma-2b-it",
        "models/FsfairX-LLaMA3-RM-v0.1",
    ] {
        assert!(
            out.contains(&format!("input `{missing}` is missing")),
            "{missing}:\n{out}"
        );
    }
    assert!(
        out.contains("ppo[method=variance_aware,member=9,seed=2]"),
        "{out}"
    );
    assert!(!ws.p(".dagrun").exists(), "a dry run writes nothing");
    let o = ws.dagrun(&["paper.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("paper.yaml:63:12: missing input file `data/preference_dataset_mix2`"),
        "{}",
        text(&o)
    );
    assert!(!ws.p(".dagrun").exists(), "nothing ran");
    // With the inputs present, what remains is the device.
    let (graph, _) = ws.ok(&["graph", "paper.yaml"]);
    assert!(graph.contains("ppo [60 nodes"), "{graph}");
}
