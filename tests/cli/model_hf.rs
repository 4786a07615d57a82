//! `dagrun model reward|logprobs` on the Hugging Face Gemma/Llama/Qwen2 fixtures (sharded folders
//! written by scripts/make_decoder_fixtures.py), against transformers' reference outputs.

use std::path::PathBuf;

use crate::support::Ws;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("decoders-reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn model_reward_scores_a_llama_sequence_classifier_folder() {
    let r = reference();
    let case = &r["models"]["llama-rm-tiny"]["f32"]["cases"][0];
    let model = fixture("llama-rm-tiny");
    let ws = Ws::new();
    let (out, _) = ws.ok(&[
        "model",
        "reward",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--response",
        case["response"].as_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = v["rewards"][0].as_f64().unwrap();
    let expected = case["scores"][0].as_f64().unwrap();
    assert!((got - expected).abs() <= 1e-4, "{got} vs {expected}");

    // bf16 on the bf16 copy, and log-probs of the Gemma causal LM, through the same binary.
    let (out, _) = ws.ok(&[
        "model",
        "reward",
        "--model",
        fixture("llama-rm-tiny-bf16").to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--response",
        case["response"].as_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]);
    assert!(out.starts_with("rewards:"), "{out}");
    let (out, _) = ws.ok(&[
        "model",
        "logprobs",
        "--model",
        fixture("gemma-tiny").to_str().unwrap(),
        "--text",
        "Hello",
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["sum_logprob"].as_f64().unwrap() < 0.0);
}

/// Qwen2 through the binary: log-probs of the causal LM (f32 against transformers; bf16 runs)
/// and the scores of its sequence classifier.
#[test]
fn model_logprobs_and_reward_on_qwen2_folders() {
    let r = reference();
    let ws = Ws::new();
    let text = &r["models"]["qwen2-tiny"]["f32"]["texts"][0];
    let (out, _) = ws.ok(&[
        "model",
        "logprobs",
        "--model",
        fixture("qwen2-tiny").to_str().unwrap(),
        "--text",
        text["text"].as_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ids"], text["ids"], "{v}");
    let got = v["token_logprobs"].as_array().unwrap();
    let want = text["token_logprobs"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() <= 1e-4,
            "{g} vs {w}"
        );
    }
    let (out, _) = ws.ok(&[
        "model",
        "logprobs",
        "--model",
        fixture("qwen2-tiny-bf16").to_str().unwrap(),
        "--text",
        "Hello",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["sum_logprob"].as_f64().unwrap() < 0.0, "{v}");
    let case = &r["models"]["qwen2-rm-tiny"]["f32"]["cases"][0];
    let (out, _) = ws.ok(&[
        "model",
        "reward",
        "--model",
        fixture("qwen2-rm-tiny").to_str().unwrap(),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--response",
        case["response"].as_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = v["rewards"][0].as_f64().unwrap();
    let expected = case["scores"][0].as_f64().unwrap();
    assert!((got - expected).abs() <= 1e-4, "{got} vs {expected}");
}

/// `dagrun model generate` stops where transformers' `generate` stops: at any `eos_token_id`
/// of the folder's `generation_config.json` (Llama-3-Instruct lists `<|end_of_text|>` and
/// `<|eot_id|>` there), not only at `config.json`'s.
#[test]
fn model_generate_stops_at_any_eos_id_of_the_generation_config() {
    let ws = Ws::new();
    let model = ws.p("llama");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture("llama-tiny")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let path = model.to_str().unwrap();
    let args = |new_tokens: &'static str| {
        let greedy = ["--greedy", "--device", "cpu", "--json"];
        let mut a = vec![
            "model",
            "generate",
            "--model",
            path,
            "--prompt",
            "the movie was",
        ];
        a.extend(["--max-new-tokens", new_tokens]);
        a.extend(greedy);
        a
    };
    let generate = |new_tokens: &'static str| -> Vec<u64> {
        let (out, _) = ws.ok(&args(new_tokens));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    let prompt_len = generate("1").len() - 1;
    let free = generate("8");
    assert_eq!(
        free.len(),
        prompt_len + 8,
        "no early stop without a stop id: {free:?}"
    );
    // Stop at the latest generated token that first appears there (greedy decoding of a
    // random model repeats itself; the first generated token always qualifies).
    let k = (prompt_len..free.len())
        .rev()
        .find(|&i| !free[prompt_len..i].contains(&free[i]))
        .unwrap();
    std::fs::write(
        model.join("generation_config.json"),
        format!("{{\"eos_token_id\": [1, {}]}}", free[k]),
    )
    .unwrap();
    assert_eq!(
        generate("8"),
        free[..=k].to_vec(),
        "k = {k}, free = {free:?}"
    );
    // A malformed generation config is an error naming it.
    std::fs::write(model.join("generation_config.json"), "{ nope").unwrap();
    let o = ws.dagrun(&args("2"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("generation_config.json"), "{err}");
}

/// `dagrun model export-classifier`: a classifier folder written again as one, which `dagrun
/// model reward` scores as the original (its head has no bias to drop); a head that does not
/// exist is refused by name; `--help` states the dropped bias.
#[test]
fn model_export_classifier_writes_a_folder_that_scores_as_the_original() {
    let ws = Ws::new();
    let src = fixture("qwen2-rm-tiny");
    let out = ws.p("cls");
    let (v, _) = ws.ok(&[
        "model",
        "export-classifier",
        "--model",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["architecture"], "Qwen2ForSequenceClassification", "{v}");
    assert_eq!(v["dropped_bias"], 0.0, "{v}");
    let config: serde_json::Value = serde_json::from_str(&ws.read("cls/config.json")).unwrap();
    assert_eq!(config["num_labels"], 1, "{config}");
    let reward = |model: &str| {
        let (r, _) = ws.ok(&[
            "model",
            "reward",
            "--model",
            model,
            "--prompt",
            "This movie was",
            "--response",
            " great fun.",
            "--device",
            "cpu",
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_str(&r).unwrap();
        r["rewards"][0].as_f64().unwrap()
    };
    let (a, b) = (reward(src.to_str().unwrap()), reward(out.to_str().unwrap()));
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    let o = ws.dagrun(&[
        "model",
        "export-classifier",
        "--model",
        src.to_str().unwrap(),
        "--out",
        ws.p("cls2").to_str().unwrap(),
        "--head",
        "3",
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("head 3 does not exist"),
        "{err}"
    );
    let (help, _) = ws.ok(&["model", "export-classifier", "--help"]);
    assert!(
        help.contains("ForSequenceClassification") && help.contains("bias"),
        "{help}"
    );
}
