#!/usr/bin/env bash
# Remote cache benchmark (issue 22): push and pull of ~1 GB of model folders and of 1,000
# small nodes, dagrun beside DVC, to the same local S3 server in the same run. A benchmark,
# not a test: it prints a markdown report.
#
#   bash bench/remote/run.sh
#
# Environment (all optional):
#   DAGRUN_BENCH_VENV     venv for DVC (dvc + dvc-s3), outside the repo [/opt/dagrun/bench-venv]
#   DAGRUN_BENCH_TARGET   CARGO_TARGET_DIR for the release build [/work/target-bench]
#   DAGRUN_BENCH_BIN      a dagrun binary to time instead of building one (the report says
#                         which; a dev build optimises only the dependencies: opt-level 2)
#   DAGRUN_BENCH_WORK     scratch folder [a new mktemp -d]; about 12 GB at the default sizes
#   DAGRUN_BENCH_OUT      where the markdown report goes [$WORK/results.md]
#   DAGRUN_BENCH_MODELS   model folders [4], DAGRUN_BENCH_FILES files per folder [4],
#   DAGRUN_BENCH_FILE_MB  MiB per file [64]: 4 × 4 × 64 MiB = 1 GiB
#   DAGRUN_BENCH_SMALL    small nodes [1000]
#   DAGRUN_BENCH_REPS     repetitions of each timed command [3] (each into a fresh prefix
#                         and a fresh workspace, so that every push and pull moves everything;
#                         the S3 server is restarted between them: moto keeps it in memory)
#   DAGRUN_BENCH_S3_PORT  port of the S3 server this script starts [5556]
#   DAGRUN_BENCH_REMOTES  which remotes ["s3 folder"]: the local S3 server, a local folder
#
# What is timed (wall and CPU of the client process, on the same S3 server):
#   push   dagrun: `dagrun cache push p.yaml`        DVC: `dvc push`
#   no-op  the same push again (everything is there already), and the same pull again in
#          the workspace it just filled (everything is here already)
#   pull   dagrun: `dagrun run p.yaml --pull` into a fresh workspace (downloads, verifies,
#          restores the outputs); `dagrun cache pull p.yaml` (into the cache only)
#          DVC: `dvc pull` into a fresh workspace (downloads, checks out the outputs)
# Both tools start from the same bytes: each pipeline's stage copies a model folder (or
# writes a small file) from a source generated once. Transfers in flight: dagrun's default
# (-j 8) and DVC's default (--jobs: 4 × CPUs).
set -euo pipefail

if [ -z "${DAGRUN_BENCH_NICED:-}" ]; then
    DAGRUN_BENCH_NICED=1 exec nice -n 10 bash "$0" "$@"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${DAGRUN_BENCH_VENV:-/opt/dagrun/bench-venv}
TARGET=${DAGRUN_BENCH_TARGET:-/work/target-bench}
WORK=${DAGRUN_BENCH_WORK:-$(mktemp -d /tmp/dagrun-remote-bench.XXXXXX)}
OUT=${DAGRUN_BENCH_OUT:-$WORK/results.md}
MODELS=${DAGRUN_BENCH_MODELS:-4}
FILES=${DAGRUN_BENCH_FILES:-4}
FILE_MB=${DAGRUN_BENCH_FILE_MB:-64}
SMALL=${DAGRUN_BENCH_SMALL:-1000}
REPS=${DAGRUN_BENCH_REPS:-3}
PY=${PYTHON:-python3}
mkdir -p "$WORK"
ROWS=$WORK/rows.tsv
: >"$ROWS"
T_START=$(date +%s)

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- tools ---------------------------------------------------------------------------
if [ ! -x "$VENV/bin/dvc" ] || ! "$VENV/bin/python" -c "import dvc_s3" 2>/dev/null; then
    log "installing dvc and dvc-s3 into $VENV"
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q dvc dvc-s3
fi
DVC=$VENV/bin/dvc
export DVC_NO_ANALYTICS=1

log "starting the S3 server (ci/s3/start.sh, port ${DAGRUN_BENCH_S3_PORT:-5556})"
eval "$(DAGRUN_S3_PORT=${DAGRUN_BENCH_S3_PORT:-5556} "$REPO/ci/s3/start.sh")"
S3PY=$(dirname "$DAGRUN_S3_SERVER")/python
"$S3PY" - "$AWS_ENDPOINT_URL" <<'EOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
if "dagrun-bench" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="dagrun-bench")
EOF

if [ -n "${DAGRUN_BENCH_BIN:-}" ]; then
    DAGRUN=$DAGRUN_BENCH_BIN
    BUILD="given binary $DAGRUN"
else
    log "building dagrun (release) into $TARGET"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin dagrun)
    DAGRUN=$TARGET/release/dagrun
    BUILD="release build"
fi

# restart_s3: a new, empty server (moto holds every object in memory).
restart_s3() {
    if [ -n "${DAGRUN_S3_STARTED:-}" ]; then
        kill "$DAGRUN_S3_STARTED" 2>/dev/null || true
        while kill -0 "$DAGRUN_S3_STARTED" 2>/dev/null; do sleep 0.2; done
    fi
    eval "$(DAGRUN_S3_PORT=${DAGRUN_BENCH_S3_PORT:-5556} "$REPO/ci/s3/start.sh" 2>/dev/null)"
    "$S3PY" - "$AWS_ENDPOINT_URL" <<'PYEOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
if "dagrun-bench" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="dagrun-bench")
PYEOF
}
trap '[ -z "${DAGRUN_S3_STARTED:-}" ] || kill "$DAGRUN_S3_STARTED" 2>/dev/null || true' EXIT

# timed JSON CMD...: runs CMD in the current folder; writes wall and CPU seconds.
timed() {
    local json=$1
    shift
    "$PY" - "$json" "$@" <<'EOF'
import json, os, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"))
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
if status != 0:
    sys.exit(f"{cmd} failed: see {out}.log")
json.dump({"wall": wall, "cpu": ru.ru_utime + ru.ru_stime}, open(out, "w"))
EOF
}

# row SHAPE REMOTE BYTES TOOL OPERATION COMMAND JSON...
row() {
    local shape=$1 kind=$2 bytes=$3 tool=$4 op=$5 cmd=$6
    shift 6
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$kind" "$bytes" "$tool" "$op" "$cmd" "$(loadavg)" "$*" >>"$ROWS"
}

# --- the data ------------------------------------------------------------------------
SRC=$WORK/src
mkdir -p "$SRC"
log "generating $MODELS model folders of $FILES × $FILE_MB MiB and $SMALL small files"
for m in $(seq 0 $((MODELS - 1))); do
    mkdir -p "$SRC/model-$m"
    for f in $(seq 0 $((FILES - 1))); do
        [ -f "$SRC/model-$m/shard-$f.bin" ] || head -c $((FILE_MB * 1048576)) /dev/urandom >"$SRC/model-$m/shard-$f.bin"
    done
    echo "{\"model\": $m}" >"$SRC/model-$m/config.json"
done

# write_pipelines SHAPE DIR: dagrun's p.yaml and DVC's dvc.yaml for a shape.
write_pipelines() {
    local shape=$1 d=$2
    mkdir -p "$d"
    if [ "$shape" = models ]; then
        {
            echo "stages:"
            echo "  train:"
            echo "    kind: command"
            echo "    matrix: {m: [$(seq -s, 0 $((MODELS - 1)))]}"
            echo "    cmd: cp -r $SRC/model-\${matrix.m} models/model-\${matrix.m}"
            echo "    outs: [models/model-\${matrix.m}]"
        } >"$d/p.yaml"
        {
            echo "stages:"
            echo "  train:"
            echo "    foreach: [$(seq -s, 0 $((MODELS - 1)))]"
            echo "    do:"
            echo "      cmd: cp -r $SRC/model-\${item} models/model-\${item}"
            echo "      outs:"
            echo "        - models/model-\${item}"
        } >"$d/dvc.yaml"
    else
        {
            echo "stages:"
            echo "  small:"
            echo "    kind: command"
            echo "    matrix: {i: [$(seq -s, 0 $((SMALL - 1)))]}"
            echo "    cmd: echo node \${matrix.i} > small/s\${matrix.i}.txt"
            echo "    outs: [small/s\${matrix.i}.txt]"
        } >"$d/p.yaml"
        {
            echo "stages:"
            echo "  small:"
            echo "    foreach: [$(seq -s, 0 $((SMALL - 1)))]"
            echo "    do:"
            echo "      cmd: echo node \${item} > small/s\${item}.txt"
            echo "      outs:"
            echo "        - small/s\${item}.txt"
        } >"$d/dvc.yaml"
    fi
}

# populate SHAPE DIR: runs the commands once; dagrun by itself, DVC by a shell loop and
# `dvc commit -f` (bench/engine/run.sh does the same: the same dvc.lock and cache as
# `dvc repro`, much faster).
populate_dagrun() {
    (cd "$2" && "$DAGRUN" -q p.yaml >populate.log 2>&1)
}
populate_dvc() {
    local shape=$1 d=$2
    (
        cd "$d"
        "$DVC" init --no-scm -q
        "$DVC" config core.analytics false
        "$DVC" config core.check_update false
        if [ "$shape" = models ]; then
            mkdir -p models
            for m in $(seq 0 $((MODELS - 1))); do cp -r "$SRC/model-$m" "models/model-$m"; done
        else
            mkdir -p small
            for i in $(seq 0 $((SMALL - 1))); do echo "node $i" >"small/s$i.txt"; done
        fi
        "$DVC" commit -f -q >populate.log 2>&1
    )
}

bench_shape() {
    local shape=$1 kind=$2 bytes
    local a=$WORK/$shape/dagrun-a d=$WORK/$shape/dvc-a
    rm -rf "$WORK/$shape"
    write_pipelines "$shape" "$a"
    write_pipelines "$shape" "$d"
    log "$shape ($kind): populating dagrun and DVC"
    populate_dagrun "$shape" "$a"
    populate_dvc "$shape" "$d"
    bytes=$(du -sb "$a/${shape}" | cut -f1)
    for rep in $(seq 1 "$REPS"); do
        local prefix
        if [ "$kind" = s3 ]; then
            restart_s3
            prefix=s3://dagrun-bench/$shape-$rep-$$
        else
            prefix=$WORK/remotes/$shape-$rep
            rm -rf "$prefix" && mkdir -p "$prefix"
        fi
        local j=$WORK/$shape-$kind
        log "$shape rep $rep: dagrun push"
        (cd "$a" && timed "$j-dagrun-push-$rep.json" "$DAGRUN" -q cache push p.yaml --remote "$prefix/dagrun")
        log "$shape rep $rep: dagrun push again (no-op)"
        (cd "$a" && timed "$j-dagrun-noppush-$rep.json" "$DAGRUN" -q cache push p.yaml --remote "$prefix/dagrun")
        local b=$WORK/$shape/dagrun-b-$rep c=$WORK/$shape/dagrun-c-$rep
        write_pipelines "$shape" "$b"
        write_pipelines "$shape" "$c"
        log "$shape rep $rep: dagrun run --pull (fresh workspace)"
        (cd "$b" && timed "$j-dagrun-runpull-$rep.json" "$DAGRUN" -q p.yaml --pull --remote "$prefix/dagrun")
        (cd "$b" && "$DAGRUN" p.yaml 2>&1 | grep -q " 0 ran, " ) || { log "dagrun: the pulled workspace was not all cached"; exit 1; }
        diff -r "$a/$shape" "$b/$shape" >/dev/null || { log "dagrun: pulled outputs differ"; exit 1; }
        log "$shape rep $rep: dagrun cache pull (fresh workspace)"
        (cd "$c" && timed "$j-dagrun-pull-$rep.json" "$DAGRUN" -q cache pull p.yaml --remote "$prefix/dagrun")
        log "$shape rep $rep: dagrun cache pull again (no-op)"
        (cd "$c" && timed "$j-dagrun-noppull-$rep.json" "$DAGRUN" -q cache pull p.yaml --remote "$prefix/dagrun")
        rm -rf "$b" "$c"

        log "$shape rep $rep: dvc push"
        (cd "$d" && "$DVC" remote add -f -d bench "$prefix/dvc" -q \
            && { [ "$kind" != s3 ] || "$DVC" remote modify bench endpointurl "$AWS_ENDPOINT_URL"; } \
            && timed "$j-dvc-push-$rep.json" "$DVC" push -q)
        log "$shape rep $rep: dvc push again (no-op)"
        (cd "$d" && timed "$j-dvc-noppush-$rep.json" "$DVC" push -q)
        local e=$WORK/$shape/dvc-b-$rep
        write_pipelines "$shape" "$e"
        cp "$d/dvc.lock" "$e/"
        mkdir -p "$e/.dvc" && cp "$d/.dvc/config" "$e/.dvc/"
        log "$shape rep $rep: dvc pull (fresh workspace)"
        (cd "$e" && timed "$j-dvc-pull-$rep.json" "$DVC" pull -q)
        diff -r "$a/$shape" "$e/$shape" >/dev/null || { log "dvc: pulled outputs differ"; exit 1; }
        log "$shape rep $rep: dvc pull again (no-op)"
        (cd "$e" && timed "$j-dvc-noppull-$rep.json" "$DVC" pull -q)
        rm -rf "$e"
        [ "$kind" = s3 ] || rm -rf "$prefix"
    done
    row "$shape" "$kind" "$bytes" dagrun push "dagrun cache push" "$WORK"/$shape-$kind-dagrun-push-*.json
    row "$shape" "$kind" "$bytes" dagrun pull "dagrun run --pull (fresh workspace)" "$WORK"/$shape-$kind-dagrun-runpull-*.json
    row "$shape" "$kind" "$bytes" dagrun pull "dagrun cache pull (cache only)" "$WORK"/$shape-$kind-dagrun-pull-*.json
    row "$shape" "$kind" "$bytes" DVC push "dvc push" "$WORK"/$shape-$kind-dvc-push-*.json
    row "$shape" "$kind" "$bytes" DVC pull "dvc pull (fresh workspace)" "$WORK"/$shape-$kind-dvc-pull-*.json
    row "$shape" "$kind" "$bytes" dagrun no-op "dagrun cache push (all there)" "$WORK"/$shape-$kind-dagrun-noppush-*.json
    row "$shape" "$kind" "$bytes" dagrun no-op "dagrun cache pull (all here)" "$WORK"/$shape-$kind-dagrun-noppull-*.json
    row "$shape" "$kind" "$bytes" DVC no-op "dvc push (all there)" "$WORK"/$shape-$kind-dvc-noppush-*.json
    row "$shape" "$kind" "$bytes" DVC no-op "dvc pull (all here)" "$WORK"/$shape-$kind-dvc-noppull-*.json
    rm -rf "$WORK/$shape"
}

LOAD_BEFORE=$(loadavg)
for kind in ${DAGRUN_BENCH_REMOTES:-s3 folder}; do
    bench_shape models "$kind"
    bench_shape small "$kind"
done
LOAD_AFTER=$(loadavg)
T_END=$(date +%s)

{
    echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB memory, $(uname -sr)"
    echo "- load average (1, 5, 15 min): $LOAD_BEFORE before, $LOAD_AFTER after; everything ran under \`nice -n 10\`"
    echo "- S3 server: moto $("$S3PY" -c 'import moto; print(moto.__version__)') on $AWS_ENDPOINT_URL (the same for both tools)"
    echo "- models: $MODELS folders × $FILES files × $FILE_MB MiB (random bytes) + a config.json each; small: $SMALL nodes of one small file; $REPS repetitions, each into a fresh prefix and fresh workspaces"
    echo "- whole benchmark: $(((T_END - T_START) / 60)) min $(((T_END - T_START) % 60)) s"
    echo "- dagrun: $("$DAGRUN" --version), $BUILD (commit $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- remote cache engine src || echo ', with uncommitted changes'))"
    echo "- DVC: $("$DVC" --version), dvc-s3 $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("dvc-s3"))')"
    echo
    echo "| shape | remote | bytes | tool | command | wall mean (min–max) | CPU mean | load avg after |"
    echo "| --- | --- | ---: | --- | --- | ---: | ---: | --- |"
    "$PY" - "$ROWS" <<'EOF'
import json, statistics, sys
def f(s):
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
def b(n):
    n = int(n)
    for u in ["B", "KiB", "MiB", "GiB"]:
        if n < 1024 or u == "GiB":
            return f"{n:.1f} {u}" if u != "B" else f"{n} B"
        n /= 1024
for line in open(sys.argv[1]):
    shape, kind, nbytes, tool, op, cmd, load, files = line.rstrip("\n").split("\t")
    rs = [json.load(open(p)) for p in files.split()]
    walls = [r["wall"] for r in rs]
    cpus = [r["cpu"] for r in rs]
    print(f"| {shape} | {kind} | {b(nbytes)} | {tool} | `{cmd}` | {f(statistics.mean(walls))} "
          f"({f(min(walls))}–{f(max(walls))}) | {f(statistics.mean(cpus))} | {load} |")
EOF
} >"$OUT"
log "report: $OUT"
cat "$OUT"
