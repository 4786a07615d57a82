#!/usr/bin/env bash
# The PPO step benchmark with libtorch's fused kernels switched per run (DAGRUN_FUSED_OPS:
# none; layer norm + GELU; + log-softmax; + softmax, the LM head and the linear layers (all
# but Adam); all (the default: + the flat Adam; the others update per tensor)), then
# PyTorch eager, on libtorch's CPU device, one thread each; ROUNDS times. One line per run:
# impl, fused ops, median seconds per phase.
# docs/benchmarks.md ("libtorch's fused kernels") has its figures.
#
#   scripts/bench-fused.sh [DIST]      # DIST: a folder from scripts/build-for-torch.sh
#                                      #       (default dist/torch-2.11.0)
# Env: MODEL (small), BATCH (16), STEPS (3), ROUNDS (2), PYTHON (the dist's torch venv).
set -euo pipefail
cd "$(dirname "$0")/.."
DIST="${1:-dist/torch-2.11.0}"
version="${DIST##*torch-}"
export PYTHON="${PYTHON:-/opt/dagrun/torch-$version-venv/bin/python}"
# shellcheck disable=SC1091
. "$DIST/env.sh"
export OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1
B="${BATCH:-16}"
ARGS=(--model "${MODEL:-small}" --batch "$B" --mini-batch "$B" --ppo-epochs 4 --min-prompt 2
      --max-prompt 7 --new-tokens 10 --heads 10 --warmup 1 --steps "${STEPS:-3}" --profile)
line='import json, sys
d = json.load(sys.stdin)
print(d["impl"], d["device"].get("fused_ops"), {k: round(v, 3) for k, v in d["median"].items()}, flush=True)'
uptime
for _ in $(seq "${ROUNDS:-2}"); do
    for ops in none "layer_norm gelu_tanh" "layer_norm gelu_tanh log_softmax" \
               "layer_norm gelu_tanh log_softmax softmax rms_norm lm_head linear" all; do
        if [ "$ops" = all ]; then unset DAGRUN_FUSED_OPS; else export DAGRUN_FUSED_OPS="$ops"; fi
        "$DIST/bin/dagrun" bench ppo-step --device libtorch-cpu "${ARGS[@]}" 2>/dev/null |
            python3 -c "$line"
    done
    unset DAGRUN_FUSED_OPS
    "$PYTHON" scripts/bench_ppo_torch.py ppo-step --device cpu "${ARGS[@]}" 2>/dev/null | python3 -c "$line"
done
uptime
