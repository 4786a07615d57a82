#!/usr/bin/env bash
# Benchmark dagrun's GPT-2 (cpu = burn-flex, libtorch-cpu = burn-tch) beside PyTorch eager on
# the same machine, in one run: forward+backward tokens/s of GPT-2 small (124M, random init,
# batch 8 x 128) and greedy generation tokens/s (batch 8, prompt 16, 32 new tokens, KV cache).
#
# Usage: scripts/bench-ml.sh [--quick]   (--quick: the tiny model, for a smoke test)
# Env:   BENCH_ITERS (default 3), CARGO_TARGET_DIR (default target-bench-ml),
#        DAGRUN_TORCH_VENV (see scripts/torch-venv.sh; the libtorch-cpu and PyTorch rows need it).
# Output: JSON lines on stdout, also written to $BENCH_OUT (default
#         $CARGO_TARGET_DIR/bench-ml-results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=small
[ "${1:-}" = "--quick" ] && MODEL=tiny
ITERS="${BENCH_ITERS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-bench-ml}"
OUT="${BENCH_OUT:-$CARGO_TARGET_DIR/bench-ml-results.jsonl}"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

eval "$(scripts/torch-venv.sh)"
ARGS=(--model "$MODEL" --iters "$ITERS" --batch 8 --seq 128 --gen-batch 8 --gen-prompt 16 --gen-tokens 32)
[ "$MODEL" = tiny ] && ARGS=(--model tiny --iters "$ITERS" --batch 8 --seq 32 --gen-batch 8 --gen-prompt 8 --gen-tokens 16)

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
cargo build --release -p dagrun-stages --features tch --example bench_gpt2 >&2
BIN="$CARGO_TARGET_DIR/release/examples/bench_gpt2"
for dev in cpu libtorch-cpu; do
    echo "# dagrun on $dev" >&2
    "$BIN" --device "$dev" "${ARGS[@]}" | tee -a "$OUT"
done
echo "# PyTorch eager" >&2
"$DAGRUN_PYTHON" scripts/bench_gpt2_torch.py "${ARGS[@]}" | tee -a "$OUT"
