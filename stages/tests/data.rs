//! The data kinds (`toy_task`, `dataset_mix`, `prompts`) run through the real engine on
//! temporary workspaces, and the readers on the formats users bring (docs/algorithms.md §9).

mod engine_support;

use std::path::Path;

use dagrun_engine::{run::Outcome, stage::StageKind};
use dagrun_stages::{
    data::{
        io::{for_each_row, preference_columns},
        read_preferences, read_texts,
        toy::{self, PairShape, SourceFile, SourceFormat, SourceSpec},
        world::WorldParams,
        write_jsonl, write_parquet, Column, Message, PreferenceFormat, PreferencePair, World,
    },
    kinds::{dataset_mix::DatasetMixKind, prompts::PromptsKind, toy_task::ToyTaskKind},
    ml::io::tokenizer::{BpeTrainConfig, TextTokenizer},
};
use engine_support::{assert_ran, open, output, run_pipeline};
use serde_json::{json, Value};

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const TASK: &str = "stages:\n  task:\n    kind: toy_task\n    params: {seed: 3}\n";

#[test]
fn toy_task_writes_world_corpus_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    assert_ran(&run_pipeline(dir.path(), TASK));
    assert!(t0.elapsed().as_secs_f64() < 20.0);
    let (world_path, m) = output(dir.path(), "task", "world");
    let world = World::load(&world_path).unwrap();
    assert_eq!(world.seed, 3);
    assert_eq!(world, World::generate(3, &WorldParams::default()));
    assert_eq!(m.scalars["world.sentiment_words"], 76.0);
    assert_eq!(m.scalars["corpus.train"], 500.0);
    assert!((0.4..0.6).contains(&m.scalars["corpus.positive_fraction"]));

    // The corpus, in both file types, with the same rows.
    let (corpus, _) = output(dir.path(), "task", "corpus");
    let train = read_texts(&corpus.join("train.jsonl"), "text").unwrap();
    assert_eq!(train.len(), 500);
    assert_eq!(
        read_texts(&corpus.join("train.parquet"), "text").unwrap(),
        train
    );
    assert_eq!(
        read_texts(&corpus.join("test.parquet"), "text")
            .unwrap()
            .len(),
        100
    );
    assert!(train.iter().all(|r| matches!(r.label, Some(0 | 1))));
    // Positive reviews carry more true sentiment than negative ones.
    let mean = |label| {
        let rows: Vec<_> = train.iter().filter(|r| r.label == Some(label)).collect();
        rows.iter().map(|r| world.reward("", &r.text)).sum::<f64>() / rows.len() as f64
    };
    assert!(mean(1) > mean(0) + 2.0, "{} vs {}", mean(1), mean(0));

    // The sources: flat JSONL, chat JSONL, flat Parquet.
    let (prefs, _) = output(dir.path(), "task", "preferences");
    let mut names: Vec<String> = std::fs::read_dir(&prefs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["chat.jsonl", "clean.jsonl", "medium.parquet", "noisy.jsonl"]
    );
    let chat_raw = jsonl(&prefs.join("chat.jsonl"));
    assert_eq!(chat_raw[0]["chosen"][0]["role"], "user");
    assert_eq!(chat_raw[0]["chosen"][1]["role"], "assistant");
    assert_eq!(chat_raw[0]["chosen"][0], chat_raw[0]["rejected"][0]);
    let chat = read_preferences(&prefs.join("chat.jsonl"), PreferenceFormat::Chat).unwrap();
    assert_eq!(chat.len(), 400);
    assert_eq!(chat[0].prompt, chat_raw[0]["chosen"][0]["content"]);
    assert_eq!(chat[0].chosen, chat_raw[0]["chosen"][1]["content"]);
    assert!(chat[0].prompt_messages.is_some());
    let medium = read_preferences(&prefs.join("medium.parquet"), PreferenceFormat::Flat).unwrap();
    assert_eq!(medium.len(), 200);
    let all = read_preferences(&prefs, PreferenceFormat::Auto).unwrap();
    assert_eq!(all.len(), 1400);

    // Metrics against the true reward, recomputed from the files.
    let clean = read_preferences(&prefs.join("clean.jsonl"), PreferenceFormat::Flat).unwrap();
    let agree = clean
        .iter()
        .filter(|p| world.reward(&p.prompt, &p.chosen) > world.reward(&p.prompt, &p.rejected))
        .count() as f64;
    let ties = clean
        .iter()
        .filter(|p| world.reward(&p.prompt, &p.chosen) == world.reward(&p.prompt, &p.rejected))
        .count() as f64;
    assert_eq!(m.scalars["clean.ties"], ties);
    assert!((m.scalars["clean.agreement"] - agree / (400.0 - ties)).abs() < 1e-12);
    assert!(m.scalars["clean.agreement"] > m.scalars["noisy.agreement"]);
    assert!(m.scalars["clean.mean_reward_chosen"] > m.scalars["clean.mean_reward_rejected"]);

    // The tokenizer: GPT-2's layout, trained on the corpus.
    let (tok, _) = output(dir.path(), "task", "tokenizer");
    let tok = tokenizers::Tokenizer::from_file(&tok).unwrap();
    let vocab = tok.get_vocab_size(true);
    assert!((600..=1024).contains(&vocab), "{vocab}");
    assert_eq!(m.scalars["tokenizer.vocab"], vocab as f64);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    let ids = tok
        .encode(train[0].text.as_str(), false)
        .unwrap()
        .get_ids()
        .to_vec();
    // About 1.2 tokens per word (punctuation is a token of its own).
    let words = train[0].text.split_whitespace().count();
    assert!(
        ids.len() * 10 < words * 14,
        "{} ids for {words} words",
        ids.len()
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), train[0].text);

    // The RewardBench-format test set: ten RewardBench subsets, two per section.
    let (rb, _) = output(dir.path(), "task", "reward_bench");
    let rows = dagrun_stages::data::reward_bench::read_rows(&rb).unwrap();
    assert_eq!(rows.len(), 400);
    assert_eq!(m.scalars["reward_bench.pairs"], 400.0);
    let sections = dagrun_stages::data::reward_bench::sections_of(
        rows.iter().map(|r| r.subset.as_str()),
        dagrun_stages::data::reward_bench::UnknownSubsets::Error,
    )
    .unwrap();
    assert_eq!(sections.len(), 10);
    let distinct: std::collections::BTreeSet<_> = sections.values().collect();
    assert_eq!(distinct.len(), 5, "{sections:?}");
}

#[test]
fn toy_task_is_deterministic_for_a_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    run_pipeline(a.path(), TASK);
    run_pipeline(b.path(), TASK);
    run_pipeline(c.path(), &TASK.replace("seed: 3", "seed: 4"));
    for (out, file) in [
        ("world", None),
        ("tokenizer", None),
        ("corpus", Some("train.parquet")),
        ("preferences", Some("noisy.jsonl")),
        ("preferences", Some("medium.parquet")),
        ("reward_bench", Some("reward_bench.parquet")),
    ] {
        let read = |d: &Path| {
            let (p, _) = output(d, "task", out);
            std::fs::read(file.map_or(p.clone(), |f| p.join(f))).unwrap()
        };
        assert_eq!(read(a.path()), read(b.path()), "{out}/{file:?}");
        assert_ne!(read(a.path()), read(c.path()), "{out}/{file:?}");
    }
}

#[test]
fn bradley_terry_labels_follow_the_source_noise() {
    // 3 seeds × 3000 pairs: the agreement of a source has a standard error under 0.01,
    // and the clean and noisy sources are more than 0.15 apart in expectation.
    let shape = PairShape {
        prompt_min_words: 2,
        prompt_max_words: 7,
        response_words: 10,
        degenerate_prob: 0.1,
    };
    let spec = |name: &str, temperature, flip| SourceSpec {
        name: name.into(),
        pairs: 3000,
        temperature,
        flip,
        format: SourceFormat::Flat,
        file: SourceFile::Jsonl,
    };
    for seed in [0, 1, 2] {
        let world = World::generate(seed, &WorldParams::default());
        let clean = toy::stats(&toy::pairs(&world, seed, &spec("clean", 0.5, 0.0), &shape));
        let noisy = toy::stats(&toy::pairs(&world, seed, &spec("noisy", 2.0, 0.15), &shape));
        assert!(clean.agreement > 0.8, "seed {seed}: {clean:?}");
        assert!(
            clean.agreement > noisy.agreement + 0.1,
            "seed {seed}: {clean:?} {noisy:?}"
        );
        assert!(
            noisy.agreement > 0.5,
            "noisy labels still carry signal: {noisy:?}"
        );
        assert!(
            clean.mean_reward_chosen - clean.mean_reward_rejected
                > noisy.mean_reward_chosen - noisy.mean_reward_rejected
        );
    }
}

#[test]
fn the_small_paper_dag_runs_on_the_built_in_task() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tokenizer.json");
    train_tokenizer(&tok);
    let yaml = format!(
        "{TASK}  mix:
    kind: dataset_mix
    params:
      seed: 1
      eval_fraction: 0.2
      sources:
        - {{path: '${{stages.task.preferences}}/clean.jsonl', weight: 2.0}}
        - {{path: '${{stages.task.preferences}}/noisy.jsonl', weight: 0.5}}
        - {{path: '${{stages.task.preferences}}/chat.jsonl', format: chat, cap: 100}}
        - {{path: '${{stages.task.preferences}}', name: everything}}
  prompts:
    kind: prompts
    params:
      corpus: ${{stages.task.corpus}}
      tokenizer: tokenizer.json
      max_test: 50
  prompts_task_tokenizer:
    kind: prompts
    params:
      corpus: ${{stages.task.corpus}}
      tokenizer: ${{stages.task.tokenizer}}
  prompts_words:
    kind: prompts
    params:
      corpus: ${{stages.task.corpus}}
      min_chars: 0
      seed: 5
"
    );
    let outcomes = run_pipeline(dir.path(), &yaml);
    assert_ran(&outcomes);
    assert_eq!(outcomes.len(), 5);

    // The mix: per-source counts, the whole folder deduplicated against the single files.
    let (data, m) = output(dir.path(), "mix", "data");
    let s = &m.scalars;
    assert_eq!(s["clean.read"], 400.0);
    assert_eq!(s["clean.selected"], 2.0 * s["clean.kept"]);
    assert_eq!(s["noisy.selected"], (0.5 * s["noisy.kept"]).round());
    assert_eq!(s["chat.selected"], 100.0);
    assert_eq!(s["everything.read"], 1400.0);
    // Every pair of clean, noisy and chat is in the folder too: dropped there as duplicates.
    assert!(s["everything.dropped_duplicate"] >= s["clean.kept"] + s["noisy.kept"] + 100.0);
    assert_eq!(
        s["everything.kept"]
            + s["everything.dropped_duplicate"]
            + s["everything.dropped_identical"]
            + s["everything.dropped_empty"]
            + s["everything.dropped_too_long"],
        1400.0
    );
    let train = jsonl(&data.join("train.jsonl"));
    let eval = jsonl(&data.join("eval.jsonl"));
    assert_eq!(train.len() as f64, s["train"]);
    assert_eq!(eval.len() as f64, s["eval"]);
    assert_eq!(
        s["total.train"] + s["total.eval"],
        train.len() as f64 + eval.len() as f64
    );
    let from_chat: Vec<&Value> = train.iter().filter(|r| r["source"] == "chat").collect();
    assert!(!from_chat.is_empty());
    assert!(from_chat
        .iter()
        .all(|r| r["prompt_messages"][0]["role"] == "user"));
    assert!(train
        .iter()
        .filter(|r| r["source"] == "clean")
        .all(|r| r.get("prompt_messages").is_none()));
    // The Parquet copy holds the same rows.
    let pq = read_preferences(&data.join("train.parquet"), PreferenceFormat::Auto).unwrap();
    let jl = read_preferences(&data.join("train.jsonl"), PreferenceFormat::Auto).unwrap();
    assert_eq!(pq, jl);

    // Prompts with the tokenizer: each is the decoding of the first k ∈ [2, 7] tokens of a
    // corpus row longer than 200 characters.
    let tokenizer = tokenizers::Tokenizer::from_file(&tok).unwrap();
    let (prompts, m) = output(dir.path(), "prompts", "prompts");
    let (corpus, _) = output(dir.path(), "task", "corpus");
    let train_rows = read_texts(&corpus.join("train.jsonl"), "text").unwrap();
    let ps = jsonl(&prompts.join("train.jsonl"));
    let long = train_rows
        .iter()
        .filter(|r| r.text.chars().count() > 200)
        .count();
    assert_eq!(ps.len(), long);
    assert_eq!(m.scalars["train.long_enough"], long as f64);
    let mut ks = std::collections::BTreeSet::new();
    for p in &ps {
        let row = &train_rows[p["source_row"].as_u64().unwrap() as usize];
        assert!(row.text.chars().count() > 200);
        let ids = tokenizer
            .encode(row.text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        let k = (2..=7)
            .find(|&k| tokenizer.decode(&ids[..k], true).unwrap() == p["prompt"])
            .unwrap_or_else(|| panic!("{p} is no 2..7-token prefix of {:?}", row.text));
        assert!(row.text.starts_with(p["prompt"].as_str().unwrap()));
        ks.insert(k);
    }
    assert!(ks.len() >= 5, "{ks:?}");
    assert_eq!(jsonl(&prompts.join("test.jsonl")).len(), 50);
    assert_eq!(m.scalars["test.prompts"], 50.0);

    // With the task's own tokenizer, through a whole-value reference.
    let (_, m) = output(dir.path(), "prompts_task_tokenizer", "prompts");
    assert_eq!(m.scalars["train.prompts"], long as f64);

    // Without a tokenizer: words; every row is long enough with min_chars 0.
    let (prompts, _) = output(dir.path(), "prompts_words", "prompts");
    let ps = jsonl(&prompts.join("test.jsonl"));
    assert_eq!(ps.len(), 100);
    for p in &ps {
        let n = p["prompt"].as_str().unwrap().split_whitespace().count();
        assert!((2..=7).contains(&n));
    }
}

/// The built-in task's tokenizer, trained on a few reviews.
fn train_tokenizer(path: &Path) {
    let world = World::generate(0, &WorldParams::default());
    let texts: Vec<String> = toy::corpus(&world, 0, "train", 200)
        .into_iter()
        .map(|r| r.text)
        .collect();
    built_in_tokenizer(&texts, 400).save(path).unwrap();
}

/// The built-in task's tokenizer: a byte-level BPE in GPT-2's layout, `<|endoftext|>` id 0.
fn built_in_tokenizer(texts: &[String], vocab_size: usize) -> TextTokenizer {
    let config = BpeTrainConfig {
        vocab_size,
        ..BpeTrainConfig::default()
    };
    TextTokenizer::train_bpe(texts.iter().map(String::as_str), &config).unwrap()
}

#[test]
fn the_built_in_tokenizer_round_trips_and_is_deterministic() {
    let w = World::generate(0, &WorldParams::default());
    let texts: Vec<String> = toy::corpus(&w, 0, "train", 200)
        .into_iter()
        .map(|r| r.text)
        .collect();
    let a = built_in_tokenizer(&texts, 400);
    let b = built_in_tokenizer(&texts, 400);
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    a.save(&pa).unwrap();
    b.save(&pb).unwrap();
    assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    assert_eq!(a.vocab_size(), 400);
    assert_eq!(a.eos_id(), Some(0));
    let text = &texts[3];
    let ids = a.encode(text).unwrap();
    assert!(
        ids.len() < text.len() / 2,
        "merges compress: {} ids",
        ids.len()
    );
    assert_eq!(&a.decode(&ids).unwrap(), text);
    // Text the tokenizer never saw still round-trips (byte level).
    let odd = "Zebra! ünïcode 42";
    let ids = a.encode(odd).unwrap();
    assert_eq!(a.decode(&ids).unwrap(), odd);
}

#[test]
fn chat_format_as_in_preference_dataset_mix2() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data/mix2_sample.jsonl");
    let rows = read_preferences(&fixture, PreferenceFormat::Auto).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].prompt, "What is a good movie for a rainy day?");
    assert_eq!(
        rows[0].chosen,
        "A warm comedy such as Paddington 2 works well."
    );
    assert_eq!(rows[0].rejected, "Movies.");
    assert_eq!(
        rows[1].prompt,
        "System: You are a film critic.\n\nUser: Rate Alien.\n\nAssistant: Which one?\n\nUser: The 1979 film."
    );
    assert_eq!(rows[1].prompt_messages.as_ref().unwrap().len(), 4);
    assert_eq!(rows[1].rejected, "It has a cat in it.");

    // The same rows as Hugging Face stores them: Parquet with list<struct<role, content>>.
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("train-00000-of-00001.parquet");
    let full = |side: fn(&PreferencePair) -> &String| {
        Column::Messages(
            rows.iter()
                .map(|r| {
                    let mut m = r.prompt_messages.clone().unwrap();
                    m.push(Message::new("assistant", side(r)));
                    m
                })
                .collect(),
        )
    };
    write_parquet(
        &pq,
        &[
            ("chosen", full(|r| &r.chosen)),
            ("rejected", full(|r| &r.rejected)),
            ("chosen_score", Column::Int(vec![4, 5, 3])),
        ],
    )
    .unwrap();
    assert_eq!(read_preferences(&pq, PreferenceFormat::Auto).unwrap(), rows);
    assert_eq!(read_preferences(&pq, PreferenceFormat::Chat).unwrap(), rows);

    // dataset_mix drops the identical third pair and keeps the chat turns.
    let yaml = format!(
        "stages:\n  mix:\n    kind: dataset_mix\n    params:\n      eval_fraction: 0\n      sources: [{{path: '{}'}}]\n",
        fixture.display()
    );
    assert_ran(&run_pipeline(dir.path(), &yaml));
    let (data, m) = output(dir.path(), "mix", "data");
    assert_eq!(m.scalars["mix2_sample.dropped_identical"], 1.0);
    let train = jsonl(&data.join("train.jsonl"));
    assert_eq!(train.len(), 2);
    let multi = train
        .iter()
        .find(|r| r["chosen"] == "A tense, superbly designed classic: 9/10.")
        .unwrap();
    assert_eq!(
        multi["prompt_messages"][0],
        json!({"role": "system", "content": "You are a film critic."})
    );
}

#[test]
fn errors_name_the_file_and_the_line_or_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prefs.jsonl");
    let good = json!({"prompt": "p", "chosen": "a", "rejected": "b"});
    let mut rows = vec![good.clone(); 16];
    rows.push(json!({"prompt": "p", "rejected": "b"}));
    write_jsonl(&path, &rows).unwrap();
    let e = read_preferences(&path, PreferenceFormat::Auto).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:17: missing field \"chosen\"", path.display())
    );

    let pq = dir.path().join("prefs.parquet");
    write_parquet(
        &pq,
        &[
            ("prompt", Column::Str(vec!["p".into(), "q".into()])),
            ("chosen", Column::Str(vec!["a".into(), "b".into()])),
        ],
    )
    .unwrap();
    let e = read_preferences(&pq, PreferenceFormat::Auto).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: row 1: missing field \"rejected\"", pq.display())
    );
    let e = read_texts(&pq, "text").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: row 1: missing field \"text\"", pq.display())
    );

    let chat = dir.path().join("chat.jsonl");
    write_jsonl(
        &chat,
        &[json!({"chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                 "rejected": [{"role": "user", "content": "x"}, {"role": "assistant"}]})],
    )
    .unwrap();
    let e = read_preferences(&chat, PreferenceFormat::Auto).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: rejected[1]: missing field \"content\"",
            chat.display()
        )
    );

    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"not parquet").unwrap();
    let e = read_preferences(&bad, PreferenceFormat::Auto)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: not a readable Parquet file", bad.display())),
        "{e}"
    );

    // A failing node: the stage's error names the file and line, and nothing is cached.
    let yaml = format!(
        "stages:\n  mix:\n    kind: dataset_mix\n    params:\n      sources: [{{path: '{}'}}]\n",
        path.display()
    );
    let outcomes = run_pipeline(dir.path(), &yaml);
    match &outcomes[0].1 {
        Outcome::Failed { error, .. } => {
            assert!(
                error.contains("prefs.jsonl:17: missing field \"chosen\""),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(open(dir.path()).latest("mix").unwrap().is_none());
}

#[test]
fn parquet_and_jsonl_round_trip_rows() {
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<PreferencePair> = (0..50u32)
        .map(|i| PreferencePair {
            prompt: format!("prompt {i} — ünïcode"),
            chosen: format!("good {i}"),
            rejected: String::new(),
            prompt_messages: i
                .is_multiple_of(2)
                .then(|| vec![Message::new("user", &format!("prompt {i} — ünïcode"))]),
        })
        .collect();
    let pq = dir.path().join("x.parquet");
    let jl = dir.path().join("x.jsonl");
    write_parquet(&pq, &preference_columns(&pairs, None)).unwrap();
    write_jsonl(&jl, &pairs).unwrap();
    assert_eq!(
        read_preferences(&pq, PreferenceFormat::Flat).unwrap(),
        pairs
    );
    assert_eq!(
        read_preferences(&jl, PreferenceFormat::Auto).unwrap(),
        pairs
    );
    let mut n = 0;
    for_each_row(&pq, |_, v| {
        assert!(v["prompt_messages"].is_array());
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 50);
}

#[test]
fn validate_names_the_parameter() {
    let check = |kind: &dyn StageKind, params: Value, param: &str, text: &str| {
        let e = kind.validate(&params).expect_err(&params.to_string());
        assert_eq!(e.param.as_deref(), Some(param), "{params}: {e:?}");
        assert!(e.message.contains(text), "{params}: {}", e.message);
        assert!(
            e.message.starts_with(&format!("`{param}`")),
            "{}",
            e.message
        );
    };
    let mix = DatasetMixKind;
    check(&mix, json!({"sources": []}), "sources", "at least one");
    check(
        &mix,
        json!({"sources": [{"path": "a.jsonl", "weight": 1.0, "cap": 3}]}),
        "sources[0].cap",
        "not both",
    );
    check(
        &mix,
        json!({"sources": [{"path": "a.jsonl", "weight": -1.0}]}),
        "sources[0].weight",
        "≥ 0",
    );
    check(
        &mix,
        json!({"sources": [{"path": "x/a.jsonl"}, {"path": "y/a.parquet"}]}),
        "sources[1].name",
        "`a`",
    );
    check(
        &mix,
        json!({"sources": [{"path": "a.jsonl"}], "eval_fraction": 1.0}),
        "eval_fraction",
        "[0, 1)",
    );
    check(
        &mix,
        json!({"sources": [{"path": "a.jsonl"}], "shuffle": true}),
        "shuffle",
        "unknown field",
    );
    let e = mix
        .validate(&json!({"sources": [{"path": "a.jsonl", "format": "xml"}]}))
        .unwrap_err();
    assert!(e.message.contains("unknown variant `xml`"), "{e:?}");
    check(
        &mix,
        json!({"sources": [{"path": {"$artifact": 0}}]}),
        "sources[0].name",
        "whole",
    );
    // A reference inside text is a path, and validates as one.
    assert!(mix
        .validate(&json!({"sources": [{"path": {"$concat": [{"$artifact": 0}, "/clean.jsonl"]}}]}))
        .is_ok());
    assert!(mix
        .validate(&json!({"sources": [{"path": {"$artifact": 0}, "name": "all"}]}))
        .is_ok());
    assert!(mix
        .validate(&json!({"sources": [{"path": "a.jsonl"}], "max_chars": null}))
        .is_ok());

    let prompts = PromptsKind;
    check(
        &prompts,
        json!({"corpus": "c", "min_tokens": 5, "max_tokens": 3}),
        "max_tokens",
        "≥ min_tokens",
    );
    check(
        &prompts,
        json!({"corpus": "c", "min_tokens": 0}),
        "min_tokens",
        "at least 1",
    );
    check(
        &prompts,
        json!({"corpus": "c", "test_fraction": 1.5}),
        "test_fraction",
        "[0, 1)",
    );
    check(&prompts, json!({"corpus": ""}), "corpus", "empty");
    check(&prompts, json!({}), "corpus", "missing field");
    assert!(prompts.validate(&json!({"corpus": "c"})).is_ok());

    let task = ToyTaskKind;
    check(
        &task,
        json!({"sources": [{"name": "a", "pairs": 1, "temperature": 0.0}]}),
        "sources[0].temperature",
        "> 0",
    );
    check(
        &task,
        json!({"sources": [{"name": "a", "pairs": 1, "temperature": 1.0, "flip": 1.0}]}),
        "sources[0].flip",
        "[0, 1)",
    );
    check(
        &task,
        json!({"sources": [{"name": "a b", "pairs": 1, "temperature": 1.0}]}),
        "sources[0].name",
        "letters",
    );
    check(
        &task,
        json!({"world": {"consistency": 2.0}}),
        "world.consistency",
        "[0, 1]",
    );
    check(
        &task,
        json!({"prompt_min_words": 4, "prompt_max_words": 3}),
        "prompt_max_words",
        "≥",
    );
    check(
        &task,
        json!({"degenerate_prob": -0.1}),
        "degenerate_prob",
        "[0, 1]",
    );
    check(
        &task,
        json!({"reward_bench_pairs": 0}),
        "reward_bench_pairs",
        "at least 1",
    );
    assert!(task.validate(&json!({})).is_ok());
    for (k, v) in [(&mix as &dyn StageKind, 1), (&prompts, 1), (&task, 2)] {
        assert_eq!(k.version(), v, "{}", k.name());
    }
}

/// The built-in task's default sources and corpus have the sizes the docs give (how long
/// they take to generate is a benchmark, not a test).
#[test]
fn built_in_task_generates_its_documented_sizes() {
    let world = World::generate(0, &WorldParams::default());
    let shape = PairShape {
        prompt_min_words: 2,
        prompt_max_words: 7,
        response_words: 10,
        degenerate_prob: 0.1,
    };
    let mut n = 0;
    for s in toy::default_sources() {
        n += toy::pairs(&world, 0, &s, &shape).len();
    }
    n += toy::corpus(&world, 0, "train", 500).len() + toy::corpus(&world, 0, "test", 100).len();
    assert_eq!(n, 1400 + 600);
}
