//! Every param of every native kind at its edge values — 0, −1, huge, NaN (which a pipeline's
//! YAML turns into `null`), empty — must be refused by the kind's validation with an error
//! naming the param (which the engine turns into its `file:line:col`; checked end to end for
//! one case of each kind), or be accepted and then run to a result or an error: never a
//! panic or an abort. The runs go through the real binary in subprocesses (all accepted cases
//! of a kind in one pipeline; case by case when that pipeline crashes or stalls), so an abort
//! is caught. The kinds and their params come from the registry and the kinds' schemas (what
//! `dagrun kinds KIND --json` prints), so a param added later is covered without touching
//! this file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(rel: &str) -> String {
    fixtures().join(rel).to_str().unwrap().to_string()
}

/// The small input files the base params point at.
fn write_inputs(ws: &Ws) {
    let pairs: String = (0..12)
        .map(|i| {
            json!({"prompt": format!("review {i}:"), "chosen": format!("a fine film {i}"),
                   "rejected": format!("a dull film {i}")})
            .to_string()
                + "\n"
        })
        .collect();
    ws.write("pref.jsonl", &pairs);
    ws.write("data/train.jsonl", &pairs);
    ws.write("data/eval.jsonl", &pairs);
    let texts: String = (0..40)
        .map(|i| {
            json!({"text": format!("the movie number {i} was a fine film with a plot")}).to_string()
                + "\n"
        })
        .collect();
    ws.write("corpus.jsonl", &texts);
    let prompts: String = (0..6)
        .map(|i| json!({"prompt": format!("the movie {i}")}).to_string() + "\n")
        .collect();
    ws.write("prompts/train.jsonl", &prompts);
    ws.write("prompts/test.jsonl", &prompts);
    let rows: String = (0..4)
        .map(|i| {
            json!({"prompt": format!("q {i}"), "chosen": "good", "rejected": "bad",
                   "subset": "alpacaeval-easy"})
            .to_string()
                + "\n"
        })
        .collect();
    ws.write("rb.jsonl", &rows);
}

/// Params with which each native kind runs in a second or so on the fixtures.
fn base_params() -> BTreeMap<&'static str, Value> {
    let gpt2 = fixture("gpt2-tiny");
    let rm = fixture("llama-rm-tiny");
    let tok = fixture("gpt2-tiny/tokenizer.json");
    [
        ("bandit", json!({})),
        ("simulate", json!({"d": 5, "draws": 50})),
        (
            "toy_task",
            json!({"corpus_train": 40, "corpus_test": 10, "reward_bench_pairs": 8}),
        ),
        ("dataset_mix", json!({"sources": [{"path": "pref.jsonl"}]})),
        (
            "prompts",
            json!({"corpus": "corpus.jsonl", "tokenizer": tok}),
        ),
        (
            "lm_pretrain",
            json!({"corpus": "corpus.jsonl", "tokenizer": tok, "n_layer": 1, "n_head": 2,
                   "n_embd": 8, "n_positions": 16, "seq_len": 8, "batch_size": 2, "steps": 2}),
        ),
        (
            "backbone_pretrain",
            json!({"data": "data", "init": gpt2, "batch_size": 2, "epochs": 0.5}),
        ),
        (
            "head_ensemble",
            json!({"backbone": rm, "data": "data", "heads": 3, "max_epochs": 2}),
        ),
        (
            "ppo",
            json!({"policy": gpt2, "reward_model": rm, "prompts": "prompts", "batch_size": 2,
                   "mini_batch_size": 2, "ppo_epochs": 1, "steps": 1, "max_new_tokens": 2}),
        ),
        (
            "kl_calibrate",
            json!({"policy": gpt2, "reward_model": rm, "prompts": "prompts", "batch_size": 2,
                   "mini_batch_size": 2, "ppo_epochs": 1, "steps": 1, "max_new_tokens": 2,
                   "kl_target": 0.01, "betas": [0.01, 100.0], "max_extra_probes": 1}),
        ),
        (
            "judge_eval",
            json!({"policies": [gpt2], "reference": gpt2, "prompts": "prompts",
                   "judge_model": rm, "max_prompts": 2, "max_new_tokens": 2}),
        ),
        ("reward_bench", json!({"model": rm, "data": "rb.jsonl"})),
        ("report", json!({"title": "t"})),
    ]
    .into_iter()
    .collect()
}

/// The JSON type a schema property takes (`integer`, `number`, `string`, `array`, ...), looking
/// through `Option` (`["integer", "null"]`, `anyOf`) and references to definitions.
fn prop_type(schema: &Value, prop: &Value) -> Option<String> {
    match &prop["type"] {
        Value::String(t) => return Some(t.clone()),
        Value::Array(ts) => {
            return ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .map(str::to_string)
        }
        _ => {}
    }
    if let Some(r) = prop["$ref"].as_str() {
        let name = r.rsplit('/').next()?;
        let def = &schema["$defs"][name];
        return if def["enum"].is_array() || def["oneOf"].is_array() {
            Some("string".into())
        } else {
            prop_type(schema, def)
        };
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = prop[key].as_array() {
            return alts.iter().find_map(|a| match a["type"].as_str() {
                Some("null") => None,
                _ => prop_type(schema, a),
            });
        }
    }
    None
}

/// The edge values of a type, as the params a kind receives (a YAML `.nan` or `.inf` arrives
/// as `null`).
fn edges(ty: &str) -> Vec<Value> {
    match ty {
        "integer" => vec![json!(0), json!(-1), json!(100_000_000_000_000u64)],
        "number" => vec![json!(0), json!(-1), json!(1e300), Value::Null],
        "string" => vec![json!("")],
        "array" => vec![json!([])],
        "object" => vec![json!({})],
        _ => vec![],
    }
}

/// A pipeline of stages `c0`, `c1`, … of `kind`, one per params object, on the `cpu` device.
fn pipeline_of(kind: &str, cases: &[&Value]) -> String {
    let mut text = String::from("stages:\n");
    for (i, params) in cases.iter().enumerate() {
        text += &format!("  c{i}:\n    kind: {kind}\n    device: cpu\n    params:\n");
        for (k, v) in params.as_object().unwrap() {
            text += &format!("      {k}: {v}\n");
        }
    }
    text
}

/// How a process ended, in words, if it panicked, aborted or died of a signal.
fn crashed(o: &Output) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let err = String::from_utf8_lossy(&o.stderr);
    if let Some(sig) = o.status.signal() {
        return Some(format!("killed by signal {sig}"));
    }
    if o.status.code() == Some(101) || err.contains("panicked at") {
        return Some(format!("panicked: {}", err.trim()));
    }
    None
}

/// Runs `args` in `ws`, killing it after `limit`: `None` when it ran out of time.
fn run_with_limit(ws: &Ws, args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = ws.spawn(args);
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_native_param_at_its_edges_is_refused_naming_it_or_runs_without_crashing() {
    let ws = Ws::new();
    write_inputs(&ws);
    let bases = base_params();
    let registry = dagrun_stages::registry();
    // `DAGRUN_EDGE_KINDS=ppo,report` narrows the table while working on those kinds.
    let only: Option<Vec<String>> = std::env::var("DAGRUN_EDGE_KINDS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let kinds: Vec<_> = registry
        .kinds()
        .filter(|k| k.name() != "command")
        .filter(|k| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == k.name()))
        })
        .cloned()
        .collect();
    let mut failures = Vec::new();
    let (mut refused, mut ran, mut slow) = (0, 0, 0);
    for kind in &kinds {
        let name = kind.name();
        let base = bases
            .get(name)
            .unwrap_or_else(|| panic!("no base params for the native kind `{name}`: add them"));
        if let Err(e) = kind.validate(base) {
            panic!("{name}'s base params are refused: {}", e.message);
        }
        let Some(schema) = kind.params_schema() else {
            continue;
        };
        let Some(props) = schema["properties"].as_object() else {
            continue;
        };
        // Validation, in process: a refusal must name the param (or a path inside it).
        let mut accepted: Vec<(String, Value)> = vec![("base".into(), base.clone())];
        let mut located = None;
        for (param, prop) in props {
            let Some(ty) = prop_type(&schema, prop) else {
                continue;
            };
            for value in edges(&ty) {
                let case = format!("{name}.{param} = {value}");
                let mut params = base.clone();
                params[param.as_str()] = value.clone();
                let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    kind.validate(&params)
                }));
                match verdict {
                    Err(_) => failures.push(format!("{case}: validation panicked")),
                    Ok(Ok(())) => accepted.push((case, params)),
                    Ok(Err(e)) => {
                        refused += 1;
                        let at = e.param.clone().unwrap_or_default();
                        let inside = at == *param
                            || at.starts_with(&format!("{param}."))
                            || at.starts_with(&format!("{param}["));
                        // A constraint between two params may point at the other one, and
                        // then names this one in its message.
                        let between = !at.is_empty() && e.message.contains(param.as_str());
                        if !inside && !between {
                            failures.push(format!(
                                "{case}: refused without naming `{param}` (param {:?}): {}",
                                e.param, e.message
                            ));
                        } else if located.is_none() {
                            located = Some((param.clone(), params));
                        }
                    }
                }
            }
        }
        // One refusal per kind through `dagrun plan`: exit 2, at the param's line.
        if let Some((param, params)) = located {
            let yaml = pipeline_of(name, &[&params]);
            let line = yaml
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("{param}:")))
                .unwrap()
                + 1;
            ws.write("p.yaml", &yaml);
            let o = ws.dagrun(&["plan", "p.yaml"]);
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if o.status.code() != Some(2) || !err.contains(&format!("p.yaml:{line}:")) {
                failures.push(format!(
                    "{name}.{param}: `dagrun plan` does not point at line {line} (exit {:?}): {}",
                    o.status.code(),
                    err.trim()
                ));
            }
        }
        // The accepted cases run: all of them in one pipeline; when that crashes or stalls,
        // the ones it did not finish one by one.
        let started = Instant::now();
        let cases: Vec<&Value> = accepted.iter().map(|(_, p)| p).collect();
        ws.write("batch.yaml", &pipeline_of(name, &cases));
        let limit = Duration::from_secs(20 + cases.len() as u64);
        let whole = run_with_limit(&ws, &["run", "batch.yaml"], limit);
        if whole.as_ref().is_some_and(|o| crashed(o).is_none()) {
            ran += cases.len();
            eprintln!(
                "{name}: {} cases ran in one pipeline ({:.0} s)",
                cases.len(),
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        let plan = ws.plan_json("batch.yaml");
        let finished: Vec<String> = plan["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "cached")
            .filter_map(|n| n["node"].as_str().map(str::to_string))
            .collect();
        for (i, (case, params)) in accepted.iter().enumerate() {
            if finished.contains(&format!("c{i}")) {
                ran += 1;
                continue;
            }
            ws.write("one.yaml", &pipeline_of(name, &[params]));
            match run_with_limit(&ws, &["run", "one.yaml"], Duration::from_secs(20)) {
                Some(o) => {
                    if let Some(how) = crashed(&o) {
                        failures.push(format!("{case}: run {how}"));
                    }
                    ran += 1;
                }
                // A value that makes the node work longer (a huge step count) is a meaning,
                // not a crash.
                None => {
                    slow += 1;
                    eprintln!("{case}: still running after 20 s");
                }
            }
        }
    }
    eprintln!(
        "edge cases: {refused} refused by validation, {ran} ran, {slow} still running after 20 s"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    if only.is_none() {
        assert!(refused > 100 && ran > 50, "{refused} refused, {ran} ran");
    }
}

/// A training that diverges (a learning rate of 1e30 makes the loss NaN within a few steps)
/// fails its node, names the step in the log, and leaves nothing cached: the next plan still
/// has it to run.
#[test]
fn a_diverging_training_fails_at_its_step_and_is_not_cached() {
    let ws = Ws::new();
    write_inputs(&ws);
    let bases = base_params();
    for kind in ["lm_pretrain", "backbone_pretrain", "ppo"] {
        let mut params = bases[kind].clone();
        params["lr"] = json!(1e30);
        if kind != "ppo" {
            params["steps"] = json!(20);
        } else {
            params["steps"] = json!(5);
            params["ppo_epochs"] = json!(4);
        }
        if kind == "backbone_pretrain" {
            params.as_object_mut().unwrap().remove("steps");
            params["epochs"] = json!(10);
            params["loss_threshold"] = json!(0);
        }
        ws.write("div.yaml", &pipeline_of(kind, &[&params]));
        let o = ws.dagrun(&["run", "div.yaml"]);
        let out = text(&o);
        assert!(
            !o.status.success(),
            "{kind}: a diverging training succeeded:\n{out}"
        );
        assert!(crashed(&o).is_none(), "{kind}: {out}");
        assert!(
            out.contains("diverged at step"),
            "{kind}: the error names the step:\n{out}"
        );
        let (plan, _) = ws.ok(&["plan", "div.yaml"]);
        assert!(
            plan.contains("1 stale") || plan.contains("0 cached"),
            "{kind}: {plan}"
        );
    }
}

/// A size inside a list (a `dataset_mix` source's weight) that no machine could hold fails
/// the node with an error naming it, before anything is repeated, instead of aborting.
#[test]
fn a_weight_that_cannot_fit_fails_its_node_naming_it() {
    let ws = Ws::new();
    write_inputs(&ws);
    let params = json!({"sources": [{"path": "pref.jsonl", "weight": 1e12}]});
    ws.write("w.yaml", &pipeline_of("dataset_mix", &[&params]));
    let o = ws.dagrun(&["run", "w.yaml"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(crashed(&o).is_none(), "{out}");
    assert!(
        out.contains("sources[0].weight") && out.contains("needs about"),
        "{out}"
    );
}
