//! `dagrun bench ...` (hidden): time the ML stages' own code on a device and print JSON.
//! The work is in `dagrun_stages::bench`; this file only parses flags. See docs/benchmarks.md
//! and scripts/gpu-run.sh, which runs these beside scripts/bench_ppo_torch.py.

use dagrun_stages::bench::{bench_ppo_step, bench_rm_score, PpoBench, RmBench};
use dagrun_stages::ml::DeviceSpec;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// One PPO step of the `ppo` kind's code (generation, scoring, policy/value/reference
    /// forward, PPO epochs), GPT-2 of random init, with a K-head reward model. Defaults: the
    /// paper's setting (batch 128, prompts of 2-7 tokens, 10 new tokens, 4 epochs, K = 10).
    PpoStep {
        /// Where to run: cpu, libtorch-cpu, cuda, cuda:N.
        #[arg(long, value_name = "D", default_value = "auto")]
        device: DeviceSpec,
        /// small (GPT-2 124M) or tiny.
        #[arg(long, default_value = "small")]
        model: String,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Rows per PPO mini-batch.
        #[arg(long, default_value_t = 128)]
        mini_batch: usize,
        #[arg(long, default_value_t = 4)]
        ppo_epochs: usize,
        #[arg(long, default_value_t = 2)]
        min_prompt: usize,
        #[arg(long, default_value_t = 7)]
        max_prompt: usize,
        #[arg(long, default_value_t = 10)]
        new_tokens: usize,
        /// Heads of the reward model (K).
        #[arg(long, default_value_t = 10)]
        heads: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also time the update's parts (loss forward, backward, Adam), waiting for the
        /// device after each.
        #[arg(long)]
        profile: bool,
    },
    /// Reward-model scoring throughput: forward passes of `batch` x `len` tokens through a
    /// GPT-2 backbone (random init) and K heads, rewards read back each time.
    RmScore {
        #[arg(long, value_name = "D", default_value = "auto")]
        device: DeviceSpec,
        #[arg(long, default_value = "small")]
        model: String,
        #[arg(long, default_value_t = 10)]
        heads: usize,
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 64)]
        len: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Run one benchmark and print its JSON on one line.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let out = match cmd {
        BenchCommand::PpoStep {
            device,
            model,
            batch,
            mini_batch,
            ppo_epochs,
            min_prompt,
            max_prompt,
            new_tokens,
            heads,
            warmup,
            steps,
            seed,
            profile,
        } => bench_ppo_step(
            device,
            &PpoBench {
                model,
                batch,
                mini_batch,
                ppo_epochs,
                min_prompt,
                max_prompt,
                new_tokens,
                heads,
                warmup,
                steps,
                seed,
                profile,
            },
        ),
        BenchCommand::RmScore {
            device,
            model,
            heads,
            batch,
            len,
            warmup,
            iters,
            seed,
        } => bench_rm_score(
            device,
            &RmBench {
                model,
                heads,
                batch,
                len,
                warmup,
                iters,
                seed,
            },
        ),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{out}");
    Ok(())
}
