#!/usr/bin/env bash
# The test suite, as CI runs it: every backend-sensitive test on both the pure-Rust `cpu`
# device and libtorch's CPU device, plus the Hugging Face export check.
#
#   scripts/test.sh            # provides libtorch through pip (once), then runs the tests
#   DAGRUN_NO_TCH=1 scripts/test.sh   # pure-Rust backends only (no torch download)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DAGRUN_NO_TCH:-}" ]; then
    exec cargo test --workspace
fi
eval "$(scripts/torch-venv.sh)"
exec cargo test --workspace --features tch
