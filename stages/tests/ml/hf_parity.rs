//! dagrun's GPT-2 against Hugging Face transformers' outputs on the tiny fixture
//! (scripts/make_hf_fixtures.py): per-token log-probs within 1e-4 in float32.

use dagrun_stages::ml::inference::logprobs::token_logprobs_rows;
use dagrun_stages::ml::io::tokenizer::TextTokenizer;
use dagrun_stages::ml::models::weights::{HostTensor, HostTensors};
use dagrun_stages::ml::{Gpt2, Padding, TokenBatch};

use crate::common::{cpu_devices, cuda_device, max_abs_diff, reference, tiny_hf_dir};

const TOL: f32 = 1e-4;

fn ref_texts() -> Vec<(String, Vec<u32>, Vec<f32>)> {
    reference()["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let ids = t["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let lp = t["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (t["text"].as_str().unwrap().to_string(), ids, lp)
        })
        .collect()
}

#[test]
fn tokenizer_json_gives_the_reference_ids() {
    let tok = TextTokenizer::from_file(&tiny_hf_dir().join("tokenizer.json")).unwrap();
    assert_eq!(tok.eos_id(), Some(0));
    for (text, ids, _) in ref_texts() {
        assert_eq!(tok.encode(&text).unwrap(), ids, "{text}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

#[test]
fn logprobs_match_transformers_on_every_cpu_device() {
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        for (text, ids, expected) in ref_texts() {
            let batch = TokenBatch::unpadded(&[ids]).unwrap();
            let got = &token_logprobs_rows(&model, &batch).unwrap()[0];
            let diff = max_abs_diff(got, &expected);
            println!("{spec} {text:?}: max |Δ| = {diff:.2e}");
            assert!(diff <= TOL, "{spec} {text:?}: max abs diff {diff}");
        }
    }
}

/// The same parity on CUDA (`DAGRUN_TEST_CUDA=1`; skipped otherwise): unpadded, and padded
/// on both sides.
#[test]
fn logprobs_match_transformers_on_cuda() {
    let Some(spec) = cuda_device() else {
        return;
    };
    let device = spec.resolve().unwrap();
    let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let texts = ref_texts();
    for (text, ids, expected) in &texts {
        let batch = TokenBatch::unpadded(std::slice::from_ref(ids)).unwrap();
        let got = &token_logprobs_rows(&model, &batch).unwrap()[0];
        let diff = max_abs_diff(got, expected);
        println!("{spec} {text:?}: max |Δ| = {diff:.2e}");
        assert!(diff <= TOL, "{spec} {text:?}: max abs diff {diff}");
    }
    let rows: Vec<Vec<u32>> = texts.iter().map(|t| t.1.clone()).collect();
    for padding in [Padding::Right, Padding::Left] {
        let batch = TokenBatch::from_rows(&rows, 0, padding).unwrap();
        let got = token_logprobs_rows(&model, &batch).unwrap();
        for ((text, _, expected), row) in texts.iter().zip(&got) {
            let diff = max_abs_diff(row, expected);
            println!("{spec} {padding:?} {text:?}: max |Δ| = {diff:.2e}");
            assert!(diff <= TOL, "{spec} {padding:?} {text:?}: {diff}");
        }
    }
}

#[test]
fn padded_batches_give_the_unpadded_logprobs() {
    let texts = ref_texts();
    let rows: Vec<Vec<u32>> = texts.iter().map(|t| t.1.clone()).collect();
    for spec in cpu_devices() {
        let device = spec.resolve().unwrap();
        let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
        for padding in [Padding::Right, Padding::Left] {
            let batch = TokenBatch::from_rows(&rows, 0, padding).unwrap();
            let got = token_logprobs_rows(&model, &batch).unwrap();
            for ((text, _, expected), row) in texts.iter().zip(&got) {
                let diff = max_abs_diff(row, expected);
                assert!(diff <= TOL, "{spec} {padding:?} {text:?}: {diff}");
            }
        }
    }
}

fn fixture_logprobs(model: &Gpt2) -> Vec<f32> {
    let (_, ids, _) = ref_texts().remove(0);
    token_logprobs_rows(model, &TokenBatch::unpadded(&[ids]).unwrap()).unwrap()[0].clone()
}

/// The other layouts found in the wild load to the same model: no `transformer.` prefix,
/// old `attn.bias` / `attn.masked_bias` buffers, an explicit tied `lm_head.weight`, and
/// half-precision weights (within half's rounding).
#[test]
fn checkpoint_layout_variants_load_to_the_same_model() {
    let device = dagrun_stages::ml::DeviceSpec::Cpu.resolve().unwrap();
    let dir = tiny_hf_dir();
    let config = dagrun_stages::ml::models::gpt2_hf::read_config(&dir.join("config.json")).unwrap();
    let original = HostTensors::read(&dir.join("model.safetensors")).unwrap();
    let baseline = fixture_logprobs(&Gpt2::from_hf_dir(&dir, &device).unwrap());

    // GPT2Model layout: no prefix, with attention buffers and a tied lm_head.weight.
    let mut variant = HostTensors::new("variant");
    for (name, t) in &original.tensors {
        variant.tensors.insert(
            name.trim_start_matches("transformer.").to_string(),
            t.clone(),
        );
    }
    let wte = variant.tensors["wte.weight"].clone();
    variant.tensors.insert("lm_head.weight".into(), wte);
    for l in 0..config.n_layer {
        let n = config.n_positions;
        variant.tensors.insert(
            format!("h.{l}.attn.bias"),
            HostTensor {
                shape: vec![1, 1, n, n],
                values: vec![1.0; n * n],
            },
        );
        variant.tensors.insert(
            format!("h.{l}.attn.masked_bias"),
            HostTensor {
                shape: vec![],
                values: vec![-1e4],
            },
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    variant.write(&path).unwrap();
    let reread = HostTensors::read(&path).unwrap();
    let model = Gpt2::from_tensors(&config, reread, &device).unwrap();
    assert_eq!(fixture_logprobs(&model), baseline);

    // An untied config takes lm_head.weight from the file, and needs it.
    let mut untied = config.clone();
    untied.tie_word_embeddings = false;
    let mut with_head = original.clone();
    let wte = with_head.tensors["transformer.wte.weight"].clone();
    with_head.tensors.insert("lm_head.weight".into(), wte);
    let model = Gpt2::from_tensors(&untied, with_head, &device).unwrap();
    assert_eq!(fixture_logprobs(&model), baseline);
    let err = Gpt2::from_tensors(&untied, original.clone(), &device).unwrap_err();
    assert!(err.to_string().contains("lm_head.weight"), "{err}");

    // A stray tensor and a missing one are reported by name.
    let mut extra = original.clone();
    extra.tensors.insert(
        "transformer.h.9.mlp.c_fc.weight".into(),
        HostTensor {
            shape: vec![1],
            values: vec![0.0],
        },
    );
    let err = Gpt2::from_tensors(&config, extra, &device).unwrap_err();
    assert!(err.to_string().contains("h.9.mlp.c_fc.weight"), "{err}");
    let mut missing = original.clone();
    missing.tensors.remove("transformer.h.1.ln_2.bias");
    let err = Gpt2::from_tensors(&config, missing, &device).unwrap_err();
    assert!(err.to_string().contains("h.1.ln_2.bias"), "{err}");
}

/// dagrun's own export re-loads to identical outputs (exact f32 round trip).
#[test]
fn export_then_load_is_exact() {
    let device = dagrun_stages::ml::DeviceSpec::Cpu.resolve().unwrap();
    let model = Gpt2::from_hf_dir(&tiny_hf_dir(), &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model
        .save_hf_dir(tmp.path(), Some(&tiny_hf_dir().join("tokenizer.json")))
        .unwrap();
    assert!(tmp.path().join("tokenizer.json").exists());
    let back = Gpt2::from_hf_dir(tmp.path(), &device).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(fixture_logprobs(&back), fixture_logprobs(&model));
}
