#!/usr/bin/env bash
# Build dagrun (release, `--features tch`) against pip's torch of a chosen version, and package
# it for a machine that has that PyTorch in its Python but no Rust toolchain (e.g. a GPU box).
#
# Usage:
#   scripts/build-for-torch.sh <torch-version>        # e.g. 2.11.0
#
# What it does:
#   1. creates (or reuses) a venv OUTSIDE the clone with only `torch==<version>` in it:
#      ${DAGRUN_TORCH_VENV:-/opt/dagrun/torch-<version>-venv}
#   2. builds `dagrun` in release with `--features tch`, LIBTORCH_USE_PYTORCH=1 and
#      LIBTORCH_BYPASS_VERSION_CHECK=1 (burn-tch 0.22.1 expects libtorch 2.9.0; other versions
#      work, see /work/shared/design/PLATFORM.md), in its own target folder:
#      ${CARGO_TARGET_DIR:-<repo>/target/torch-<version>}
#   3. builds the test executables the GPU run needs (`cargo test --no-run
#      --message-format=json`: stages' `ml` and `ppo` tests) with the same settings;
#   4. writes into ${DAGRUN_DIST:-<repo>/dist/torch-<version>} (ignored by git):
#        bin/dagrun            the binary (stripped)
#        tests/ml, tests/ppo   the test executables (stripped)
#        fixtures/             tests/fixtures (the tests read them through DAGRUN_FIXTURES)
#        env.sh                `. env.sh` finds the machine's torch lib/ through its python and
#                              sets LD_LIBRARY_PATH (+ DAGRUN_FIXTURES)
#        dagrun                wrapper: sources env.sh, then runs bin/dagrun
#        manifest.json         torch version, git commit, build time, rustc, file sizes
#      (a ref/ folder there, from `scripts/gpu-run.sh --make-cpu-ref`, is kept)
#
# On the target machine:  dist/torch-<version>/dagrun --version
#                         (its python must import torch of the same version; PYTHON=... to choose)
#
# Env: DAGRUN_TORCH_VENV, CARGO_TARGET_DIR, DAGRUN_DIST, PYTHON (python that creates the venv),
#      CARGO_BUILD_JOBS (cargo's own), DAGRUN_SKIP_TESTS=1 (binary only).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

VERSION="${1:-}"
if [ -z "$VERSION" ] || [ "${VERSION#-}" != "$VERSION" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

VENV="${DAGRUN_TORCH_VENV:-/opt/dagrun/torch-$VERSION-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target/torch-$VERSION}"
DIST="${DAGRUN_DIST:-$REPO/dist/torch-$VERSION}"
PY="${PYTHON:-python3}"

log() { echo "build-for-torch: $*" >&2; }

# 1. The venv: torch only (its CUDA wheels come along as torch's own dependencies; they are
#    needed to link libtorch_cuda and to load it at run time, also on a CPU-only machine).
have_torch() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$VERSION' else 1)" 2>/dev/null
}
if ! have_torch; then
    log "installing torch==$VERSION into $VENV (several GB with its CUDA libraries)"
    mkdir -p "$(dirname "$VENV")"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir "torch==$VERSION" >&2
    have_torch || { log "torch $VERSION did not install into $VENV"; exit 1; }
else
    log "reusing $VENV"
fi
TORCH_LIB="$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
[ -e "$TORCH_LIB/libtorch_cuda.so" ] ||
    log "WARNING: $TORCH_LIB has no libtorch_cuda.so: this build will not see CUDA devices"

# 2-3. Build. torch-sys runs `python3` to find libtorch when LIBTORCH_USE_PYTORCH=1.
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# No debug info: smaller files to carry, faster links (the copies are stripped anyway).
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-false}"

log "cargo build --release --features tch --bin dagrun (target: $CARGO_TARGET_DIR)"
cargo build --release --features tch --bin dagrun >&2

TEST_JSON="$CARGO_TARGET_DIR/build-for-torch-tests.json"
if [ -z "${DAGRUN_SKIP_TESTS:-}" ]; then
    log "cargo test --release --features tch --no-run (stages: ml, ppo)"
    cargo test --release --features tch -p dagrun-stages --test ml --test ppo --no-run \
        --message-format=json > "$TEST_JSON"
fi

# 4. Package.
# (ref/, written by `scripts/gpu-run.sh --make-cpu-ref`, is kept.)
rm -rf "$DIST/bin" "$DIST/tests" "$DIST/fixtures" "$DIST/env.sh" "$DIST/dagrun" "$DIST/manifest.json"
mkdir -p "$DIST/bin" "$DIST/tests"
strip_copy() { # src dst
    cp "$1" "$2"
    chmod u+w "$2"
    # All symbols go too (backtraces lose names): the folder must stay small to carry.
    if command -v strip >/dev/null; then strip "$2"; fi
}
strip_copy "$CARGO_TARGET_DIR/release/dagrun" "$DIST/bin/dagrun"
if [ -z "${DAGRUN_SKIP_TESTS:-}" ]; then
    # One JSON message per artifact; the test executables are the `test` targets.
    python3 - "$TEST_JSON" > "$CARGO_TARGET_DIR/build-for-torch-tests.txt" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
EOF
    while read -r name exe; do
        strip_copy "$exe" "$DIST/tests/$name"
        log "test executable: tests/$name"
    done < "$CARGO_TARGET_DIR/build-for-torch-tests.txt"
fi
cp -r tests/fixtures "$DIST/fixtures"

cat > "$DIST/env.sh" <<'EOF'
# Source me: `. dist/torch-<version>/env.sh`. Finds the torch lib/ of this machine's python
# (DAGRUN_PYTHON, else PYTHON, else the first of python3, python that imports torch), checks
# its version against the build's, and sets
# LD_LIBRARY_PATH and DAGRUN_FIXTURES.
DAGRUN_DIST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
if [ -z "${DAGRUN_PYTHON:-${PYTHON:-}}" ]; then # the first of python3, python that imports torch
    for DAGRUN_PYTHON in python3 python; do "$DAGRUN_PYTHON" -W ignore -c 'import torch' 2>/dev/null && break; done
fi
DAGRUN_PYTHON="${DAGRUN_PYTHON:-${PYTHON:-python3}}"
DAGRUN_TORCH_INFO="$("$DAGRUN_PYTHON" -W ignore -c 'import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
    echo "env.sh: $DAGRUN_PYTHON cannot import torch" >&2; return 1 2>/dev/null || exit 1; }
DAGRUN_TORCH_VERSION="$(echo "$DAGRUN_TORCH_INFO" | sed -n 1p)"
DAGRUN_TORCH_LIB="$(echo "$DAGRUN_TORCH_INFO" | sed -n 2p)"
DAGRUN_BUILT_FOR="$(sed -n 's/.*"torch_version": *"\([^"]*\)".*/\1/p' "$DAGRUN_DIST_DIR/manifest.json")"
if [ "${DAGRUN_TORCH_VERSION%%+*}" != "$DAGRUN_BUILT_FOR" ]; then
    echo "env.sh: WARNING: this dagrun was built for torch $DAGRUN_BUILT_FOR, $DAGRUN_PYTHON has $DAGRUN_TORCH_VERSION" >&2
fi
export DAGRUN_PYTHON DAGRUN_TORCH_LIB DAGRUN_DIST_DIR
export LD_LIBRARY_PATH="$DAGRUN_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DAGRUN_FIXTURES="${DAGRUN_FIXTURES:-$DAGRUN_DIST_DIR/fixtures}"
EOF
cat > "$DIST/dagrun" <<'EOF'
#!/usr/bin/env bash
# dagrun with this machine's torch lib/ on LD_LIBRARY_PATH (see env.sh).
set -e
. "$(cd "$(dirname "$0")" && pwd)/env.sh"
exec "$DAGRUN_DIST_DIR/bin/dagrun" "$@"
EOF
chmod +x "$DIST/dagrun"

TORCH_FULL="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
python3 - "$DIST" "$VERSION" "$TORCH_FULL" "$(git rev-parse HEAD)" "$(git status --porcelain | wc -l)" \
    "$(rustc --version)" > "$DIST/manifest.json" <<'EOF'
import json, os, sys, datetime
dist, version, full, commit, dirty, rustc = sys.argv[1:]
files = {}
for root, _, names in os.walk(dist):
    for n in names:
        p = os.path.join(root, n)
        files[os.path.relpath(p, dist)] = os.path.getsize(p)
print(json.dumps({
    "torch_version": version, "torch_built_against": full, "git_commit": commit,
    "git_dirty_files": int(dirty), "rustc": rustc,
    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "features": ["tch"], "files": dict(sorted(files.items())),
}, indent=1))
EOF
log "wrote $DIST ($(du -sh "$DIST" | cut -f1))"
echo "$DIST"
