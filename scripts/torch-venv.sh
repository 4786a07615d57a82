#!/usr/bin/env bash
# Provide libtorch 2.9.0 (the version burn-tch 0.22.1 / tch 0.22 expects) from PyPI's
# `torch==2.9.0` wheel, in a virtual environment OUTSIDE the clone, and print the environment
# needed to build and run dagrun with `--features tch`.
#
# Usage:
#   scripts/torch-venv.sh            # create or reuse the venv, print `export ...` lines
#   eval "$(scripts/torch-venv.sh)"  # ... and apply them to the current shell
#
# The venv lives at ${DAGRUN_TORCH_VENV:-/opt/dagrun/torch-venv}; it is reused when it already
# has torch 2.9.0 (so CI pays the ~2-minute, ~6.7 GB install once per machine). It also holds
# transformers, safetensors, tokenizers and numpy, which the Hugging Face parity scripts
# (scripts/make_hf_fixtures.py) and the export test use, and tensorboard, whose event reader
# checks `run --tensorboard`'s files (tests/cli/tensorboard.rs).
#
# Progress goes to stderr; only the `export` lines go to stdout.
set -euo pipefail

VENV="${DAGRUN_TORCH_VENV:-/opt/dagrun/torch-venv}"
TORCH_VERSION="2.9.0"
PY="${PYTHON:-python3}"

have_torch() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null
}
have_extras() {
    "$VENV/bin/python" -c "import transformers, safetensors, tokenizers, numpy, tensorboard" 2>/dev/null
}

if ! have_torch || ! have_extras; then
    echo "torch-venv: installing torch==$TORCH_VERSION (+ transformers, safetensors, tokenizers, numpy, tensorboard) into $VENV" >&2
    mkdir -p "$(dirname "$VENV")"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" transformers safetensors tokenizers numpy tensorboard >&2
    have_torch || { echo "torch-venv: torch $TORCH_VERSION did not install into $VENV" >&2; exit 1; }
else
    echo "torch-venv: reusing $VENV" >&2
fi

TORCH_LIB="$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"

# torch-sys runs `python3` to find libtorch when LIBTORCH_USE_PYTORCH=1: put the venv first.
echo "export LIBTORCH_USE_PYTORCH=1"
echo "export PATH=\"$VENV/bin:\$PATH\""
echo "export LD_LIBRARY_PATH=\"$TORCH_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export DAGRUN_PYTHON=\"$VENV/bin/python\""
