//! Throughput of dagrun's GPT-2 on one device: forward+backward tokens/s of a training batch
//! and greedy generation tokens/s with the KV cache. Random init (no download needed).
//!
//! ```text
//! cargo run --release -p dagrun-stages --example bench_gpt2 -- \
//!     [--device cpu|libtorch-cpu|cuda] [--model small|tiny] [--batch 8] [--seq 128] \
//!     [--iters 3] [--gen-batch 8] [--gen-prompt 16] [--gen-tokens 32]
//! ```
//! Prints one JSON object per measurement on stdout (scripts/bench-ml.sh collects them).

use std::time::Instant;

use burn::tensor::Tensor;
use dagrun_stages::ml::inference::generate::{generate, GenerateConfig};
use dagrun_stages::ml::inference::sampling::SamplingConfig;
use dagrun_stages::ml::rng::SeededRng;
use dagrun_stages::ml::training::train_lm::LmTrainer;
use dagrun_stages::ml::{DeviceSpec, Gpt2, Gpt2Config, TokenBatch};

struct Args {
    device: DeviceSpec,
    model: String,
    batch: usize,
    seq: usize,
    iters: usize,
    gen_batch: usize,
    gen_prompt: usize,
    gen_tokens: usize,
}

fn parse() -> Args {
    let mut a = Args {
        device: DeviceSpec::Cpu,
        model: "small".into(),
        batch: 8,
        seq: 128,
        iters: 3,
        gen_batch: 8,
        gen_prompt: 16,
        gen_tokens: 32,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (pair[0].as_str(), pair.get(1).expect("flag value").as_str());
        match k {
            "--device" => a.device = v.parse().expect("device"),
            "--model" => a.model = v.to_string(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--seq" => a.seq = v.parse().unwrap(),
            "--iters" => a.iters = v.parse().unwrap(),
            "--gen-batch" => a.gen_batch = v.parse().unwrap(),
            "--gen-prompt" => a.gen_prompt = v.parse().unwrap(),
            "--gen-tokens" => a.gen_tokens = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn random_rows(rng: &mut SeededRng, rows: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..rows)
        .map(|_| (0..len).map(|_| rng.below(vocab) as u32).collect())
        .collect()
}

fn main() {
    let args = parse();
    let device = args.device.resolve().expect("device");
    let config = match args.model.as_str() {
        "small" => Gpt2Config::small(),
        "tiny" => Gpt2Config::tiny(1000),
        other => panic!("unknown model {other}"),
    };
    let mut rng = SeededRng::new(0);

    // Forward + backward.
    let ad = device.clone().autodiff();
    let model = Gpt2::init(&config, 0, &ad).expect("init");
    let batch = TokenBatch::unpadded(&random_rows(
        &mut rng,
        args.batch,
        args.seq,
        config.vocab_size,
    ))
    .unwrap();
    let step = |model: &Gpt2| {
        let loss = LmTrainer::loss(model, &batch).unwrap();
        let grads = loss.backward();
        // Read one gradient so that lazy backends finish the work.
        let g: Tensor<2> = model_wte(model).grad(&grads).expect("grad");
        let _: f32 = g.sum().into_scalar();
    };
    step(&model); // warm-up
    let t0 = Instant::now();
    for _ in 0..args.iters {
        step(&model);
    }
    let secs = t0.elapsed().as_secs_f64();
    let tokens = (args.batch * args.seq * args.iters) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": "dagrun", "device": args.device.to_string(), "model": args.model,
            "what": "forward+backward", "batch": args.batch, "seq": args.seq,
            "iters": args.iters, "seconds": secs, "tokens_per_s": tokens / secs,
        })
    );

    // Greedy generation with the KV cache.
    let model = Gpt2::init(&config, 0, &device).expect("init");
    let prompts = random_rows(&mut rng, args.gen_batch, args.gen_prompt, config.vocab_size);
    let gen = GenerateConfig {
        max_new_tokens: args.gen_tokens,
        sampling: SamplingConfig::greedy(),
        stop_ids: Vec::new(),
        pad_id: 0,
    };
    generate(
        &model,
        &prompts[..1],
        &GenerateConfig {
            max_new_tokens: 2,
            ..gen.clone()
        },
        &mut rng,
    )
    .unwrap(); // warm-up
    let t0 = Instant::now();
    let out = generate(&model, &prompts, &gen, &mut rng).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let new_tokens: usize = out.responses.iter().map(Vec::len).sum();
    println!(
        "{}",
        serde_json::json!({
            "impl": "dagrun", "device": args.device.to_string(), "model": args.model,
            "what": "generate", "batch": args.gen_batch, "prompt": args.gen_prompt,
            "new_tokens": args.gen_tokens, "seconds": secs,
            "tokens_per_s": new_tokens as f64 / secs,
        })
    );
}

/// The token embedding (the largest gradient) of a model.
fn model_wte(model: &Gpt2) -> Tensor<2> {
    model.token_embedding()
}
