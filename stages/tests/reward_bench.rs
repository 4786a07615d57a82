//! The `reward_bench` kind through the real engine: a K-head reward model scored on a
//! RewardBench-format Parquet file, checked against scores recomputed here one sequence at
//! a time (no batching) with the plain template's text.

mod engine_support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use dagrun_engine::run::Outcome;
use dagrun_stages::{
    data::{write_parquet, Column},
    ml::{
        io::{chat::ChatTemplate, tokenizer::TextTokenizer},
        models::{heads::LinearHeads, reward_model::RewardModel, weights::to_f32_vec},
        DeviceSpec, Gpt2, TokenBatch,
    },
    rm::bench::RewardBenchResults,
};
use engine_support::{output, run_pipeline};

/// Runs `yaml` in `dir`: the outcome of its one node, and the node's `results` when it ran.
fn run_one(dir: &Path, yaml: &str) -> (Outcome, Option<PathBuf>) {
    let (id, outcome) = run_pipeline(dir, yaml).into_iter().next().unwrap();
    let path = matches!(outcome, Outcome::Ran { .. }).then(|| output(dir, &id, "results").0);
    (outcome, path)
}

fn tiny_gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny")
}

/// The stage, with `WS` the workspace (params are paths as the process sees them) and
/// `DATA` the data file.
const STAGE: &str = "stages:\n  rb:\n    kind: reward_bench\n    device: cpu\n    deps: [rm, DATA]\n    params: {model: WS/rm, data: WS/DATA, batch_size: 5, max_len: 24}\n";

fn stage(ws: &Path, data: &str) -> String {
    STAGE
        .replace("WS", ws.to_str().unwrap())
        .replace("DATA", data)
}

/// (subset, prompt, chosen, rejected)
fn rows() -> Vec<(&'static str, String, String, String)> {
    let words = [
        "the", "movie", "was", "great", "and", "dull", "a", "plot", "bad", "film", "fine",
    ];
    let text = |seed: usize, n: usize| -> String {
        (0..n)
            .map(|j| words[(seed * 7 + j * 3 + j * j) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let subsets = [
        "alpacaeval-easy",
        "mt-bench-hard",
        "llmbar-natural",
        "donotanswer",
        "math-prm",
        "hep-go",
        "shp",
    ];
    let mut out = Vec::new();
    for i in 0..21 {
        out.push((
            subsets[i % subsets.len()],
            text(i, 2 + i % 4),
            text(i + 100, 3 + i % 3),
            text(i + 200, 2 + i % 5),
        ));
    }
    // A tie: the same response twice is wrong for every head and for the mean.
    out.push((
        "shp",
        "the movie".into(),
        "was fine".into(),
        "was fine".into(),
    ));
    // A long pair, cut to its last 24 tokens.
    out.push(("hep-go", text(7, 40), text(8, 12), text(9, 12)));
    out
}

#[test]
fn a_k_head_model_is_scored_on_a_reward_bench_parquet_file() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    let device = DeviceSpec::Cpu.resolve().unwrap();
    let rm = RewardModel::new(
        Gpt2::from_hf_dir(&tiny_gpt2(), &device).unwrap(),
        LinearHeads::init(32, &[11, 12, 13], &device).unwrap(),
    )
    .unwrap();
    rm.save(&dir.join("rm"), Some(&tiny_gpt2().join("tokenizer.json")))
        .unwrap();
    let rows = rows();
    let col = |f: fn(&(&str, String, String, String)) -> String| {
        Column::Str(rows.iter().map(f).collect())
    };
    write_parquet(
        &dir.join("rb.parquet"),
        &[
            ("prompt", col(|r| r.1.clone())),
            ("chosen", col(|r| r.2.clone())),
            ("rejected", col(|r| r.3.clone())),
            ("subset", col(|r| r.0.to_string())),
        ],
    )
    .unwrap();

    let (outcome, path) = run_one(dir, &stage(dir, "rb.parquet"));
    assert!(matches!(outcome, Outcome::Ran { .. }), "{outcome:?}");
    let res: RewardBenchResults =
        serde_json::from_slice(&std::fs::read(path.unwrap()).unwrap()).unwrap();
    assert_eq!(res.heads, 3);
    assert_eq!(res.chat_template, "plain", "gpt2 → plain");
    assert_eq!(res.pairs, rows.len());
    assert_eq!(res.per_head.len(), 3);

    // The same scores, one unpadded sequence at a time.
    let tok = TextTokenizer::from_file(&dir.join("rm/tokenizer.json")).unwrap();
    let mut truncated = 0;
    let mut score = |prompt: &str, response: &str| -> Vec<f64> {
        let text = ChatTemplate::Plain.render_pair(prompt, response).unwrap();
        let mut ids = tok.encode(&text).unwrap();
        if ids.len() > 24 {
            ids.drain(..ids.len() - 24);
            truncated += 1;
        }
        let r = to_f32_vec(rm.forward(&TokenBatch::unpadded(&[ids]).unwrap()).unwrap());
        r.into_iter().map(f64::from).collect()
    };
    // subset → (pairs, right by mean, right by head k)
    let mut tally: BTreeMap<&str, (usize, usize, [usize; 3])> = BTreeMap::new();
    let mut near_ties = 0;
    for (subset, p, c, r) in &rows {
        let (rc, rr) = (score(p, c), score(p, r));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / 3.0;
        let t = tally.entry(subset).or_default();
        t.0 += 1;
        t.1 += usize::from(mean(&rc) > mean(&rr));
        for k in 0..3 {
            t.2[k] += usize::from(rc[k] > rr[k]);
            if rc[k] != rr[k] && (rc[k] - rr[k]).abs() < 1e-4 {
                near_ties += 1;
            }
        }
    }
    assert_eq!(
        near_ties, 0,
        "batching could flip a near-tie: change the rows"
    );
    assert_eq!(res.truncated, truncated);
    assert!(truncated >= 1);
    for (subset, (n, right, heads)) in &tally {
        let e = &res.ensemble.subsets[*subset];
        assert_eq!((e.count, e.correct), (*n, *right), "{subset}");
        for (head, right) in res.per_head.iter().zip(heads) {
            assert_eq!(head.subsets[*subset].correct, *right, "{subset}");
        }
    }
    // shp: three pairs and the tie.
    assert_eq!(res.counts["shp"], 4);
    // Section scores and the overall score from the subset accuracies (counts weighting).
    let acc = |s: &str| tally[s].1 as f64 / tally[s].0 as f64;
    let n = |s: &str| tally[s].0 as f64;
    let reasoning = (acc("math-prm") * n("math-prm") + acc("hep-go") * n("hep-go"))
        / (n("math-prm") + n("hep-go"));
    let chat_hard = (acc("mt-bench-hard") * n("mt-bench-hard")
        + acc("llmbar-natural") * n("llmbar-natural"))
        / (n("mt-bench-hard") + n("llmbar-natural"));
    let s = &res.ensemble.sections;
    assert!((s["chat"].score - acc("alpacaeval-easy")).abs() < 1e-12);
    assert!((s["chat_hard"].score - chat_hard).abs() < 1e-12);
    assert!((s["safety"].score - acc("donotanswer")).abs() < 1e-12);
    assert!((s["reasoning"].score - reasoning).abs() < 1e-12);
    assert!((s["prior_sets"].score - acc("shp")).abs() < 1e-12);
    let overall =
        (acc("alpacaeval-easy") + chat_hard + acc("donotanswer") + reasoning + 0.5 * acc("shp"))
            / 4.5;
    assert!((res.ensemble.overall - overall).abs() < 1e-12);
    // σ² of the chosen rewards per section, with K = 3 heads.
    assert_eq!(res.chosen_variance["reasoning"].n, 7);
}

#[test]
fn unknown_subsets_and_a_template_for_another_model_fail_with_clear_errors() {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    let device = DeviceSpec::Cpu.resolve().unwrap();
    RewardModel::new(
        Gpt2::from_hf_dir(&tiny_gpt2(), &device).unwrap(),
        LinearHeads::init(32, &[1, 2], &device).unwrap(),
    )
    .unwrap()
    .save(&dir.join("rm"), Some(&tiny_gpt2().join("tokenizer.json")))
    .unwrap();
    std::fs::write(
        dir.join("rb.jsonl"),
        "{\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\",\"subset\":\"shp\"}\n\
         {\"prompt\":\"a\",\"chosen\":\"b\",\"rejected\":\"c\",\"subset\":\"my-own\"}\n",
    )
    .unwrap();
    let stage = stage(dir, "rb.jsonl");
    let (outcome, _) = run_one(dir, &stage);
    let Outcome::Failed { error, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        error.contains("rb.jsonl") && error.contains("`my-own`"),
        "{error}"
    );
    // As an `Other` section, it runs; the overall score is the prior sets' alone.
    let (outcome, path) = run_one(
        dir,
        &stage.replace("max_len: 24}", "max_len: 24, unknown_subsets: other}"),
    );
    assert!(matches!(outcome, Outcome::Ran { .. }), "{outcome:?}");
    let res: RewardBenchResults =
        serde_json::from_slice(&std::fs::read(path.unwrap()).unwrap()).unwrap();
    assert!(res.ensemble.sections.contains_key("other"));
    assert_eq!(
        res.ensemble.overall,
        res.ensemble.sections["prior_sets"].score
    );
    // The Gemma template on a GPT-2 tokenizer.
    let (outcome, _) = run_one(
        dir,
        &stage.replace(
            "max_len: 24}",
            "max_len: 24, unknown_subsets: other, chat_template: gemma}",
        ),
    );
    let Outcome::Failed { error, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        error.contains("`gemma`") && error.contains("<bos>"),
        "{error}"
    );
}
