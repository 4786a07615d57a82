#!/usr/bin/env bash
# Engine speed benchmark (issues 2 and 19): the warm no-op rerun of 1,000-node chain and
# fan-out pipelines and a 10,000-node sweep; the full run of the chain and of the fan-out
# (2 jobs); and the mid-chain edit (the own input of the chain's middle node edited, so
# the second half reruns); for dagrun, ninja (the floor: mtimes, no hashing), Snakemake
# and DVC, on the same machine in the same run. A benchmark, not a test: it prints a
# markdown report.
#
#   bash bench/engine/run.sh            # everything (about 15-20 minutes on 2 cores)
#   DAGRUN_BENCH_BEFORE=/path/to/old/dagrun bash bench/engine/run.sh   # and an older build
#
# Environment (all optional):
#   DAGRUN_BENCH_VENV     venv for DVC and Snakemake, outside the repo, reused when present
#                         [/opt/dagrun/bench-venv]
#   DAGRUN_BENCH_TARGET   CARGO_TARGET_DIR for the release build [/work/target-bench]
#   DAGRUN_BENCH_WORK     scratch folder for the generated workspaces [a new mktemp -d]
#   DAGRUN_BENCH_OUT      where the markdown report goes [$WORK/results.md]
#   DAGRUN_BENCH_N        nodes of the chain and fan-out [1000]
#   DAGRUN_BENCH_SWEEP    nodes of the sweep [10000]
#   DAGRUN_BENCH_TOOLS    which tools [dagrun ninja dvc snakemake] (`dagrun-before` is
#                         added when DAGRUN_BENCH_BEFORE names a binary)
#   DAGRUN_BENCH_BEFORE   another dagrun binary (say, main's) timed beside this one as
#                         "dagrun-before" [none]
#   DAGRUN_BENCH_MODES    what to time [noop full edit]: the warm no-op; the full run of
#                         chain (1 job) and fan-out (2 jobs); the mid-chain edit
#   DAGRUN_BENCH_RUNS_FULL  timed full runs and edits per tool [3]
#   DAGRUN_BENCH_SHAPES   which shapes [chain fanout sweep]
#   DAGRUN_BENCH_RUNS     timed runs of each dagrun command [20] (3 warm-up runs before)
#   DAGRUN_BENCH_RUNS_SLOW  timed runs of each DVC / Snakemake command [3] (1 warm-up)
#   DAGRUN_BENCH_LIMIT    seconds: a DVC or Snakemake step (populating, or its timed runs)
#                         estimated to take longer than this is not done the slow way [600]
#   DAGRUN_BENCH_DVC_REPRO=1  populate DVC with `dvc repro` even when it is estimated slow
#
# How each tool's cache is populated (the report says which way each row was):
#   dagrun     `dagrun pipeline.yaml` (runs every command).
#   Snakemake  `snakemake --cores 1` (runs every job), unless that is estimated to take
#              more than DAGRUN_BENCH_LIMIT (from the 1,000-node fan-out's rate): then the
#              commands are run by a shell loop, so the outputs exist, newer than their
#              inputs, but .snakemake/metadata holds no record of them. Snakemake then
#              skips its metadata checks, so its no-op figure is a lower bound.
#   DVC        the commands are run by a shell loop in order, then `dvc commit -f`: that
#              writes the same dvc.lock and cache as `dvc repro` (checked by hand: identical
#              dvc.lock and cache at 20 nodes, same no-op CPU time at 100), in a fraction of the time;
#              `dvc repro` spends ~0.4 s a stage on 2 cores. DAGRUN_BENCH_DVC_REPRO=1
#              uses `dvc repro` where its estimate fits in DAGRUN_BENCH_LIMIT.
set -euo pipefail

# DAGRUN_BENCH_NICED=1 set by the caller: no `nice` (a machine kept quiet otherwise).
if [ -z "${DAGRUN_BENCH_NICED:-}" ]; then
    # Shared machine: everything, every tool alike, runs at lower priority.
    DAGRUN_BENCH_NICED=1 exec nice -n 10 bash "$0" "$@"
fi

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${DAGRUN_BENCH_VENV:-/opt/dagrun/bench-venv}
TARGET=${DAGRUN_BENCH_TARGET:-/work/target-bench}
N=${DAGRUN_BENCH_N:-1000}
SWEEP=${DAGRUN_BENCH_SWEEP:-10000}
TOOLS=${DAGRUN_BENCH_TOOLS:-dagrun ninja dvc snakemake}
BEFORE=${DAGRUN_BENCH_BEFORE:-}
if [ -n "$BEFORE" ]; then TOOLS="$TOOLS dagrun-before"; fi
MODES=${DAGRUN_BENCH_MODES:-noop full edit}
RUNS_FULL=${DAGRUN_BENCH_RUNS_FULL:-3}
SHAPES=${DAGRUN_BENCH_SHAPES:-chain fanout sweep}
RUNS=${DAGRUN_BENCH_RUNS:-20}
RUNS_SLOW=${DAGRUN_BENCH_RUNS_SLOW:-3}
LIMIT=${DAGRUN_BENCH_LIMIT:-600}
WORK=${DAGRUN_BENCH_WORK:-$(mktemp -d /tmp/dagrun-bench.XXXXXX)}
OUT=${DAGRUN_BENCH_OUT:-$WORK/results.md}
PY=${PYTHON:-python3}
mkdir -p "$WORK"
ROWS=$WORK/rows.tsv
: >"$ROWS"
RUNROWS=$WORK/runrows.tsv
: >"$RUNROWS"
NOTES=$WORK/notes.txt
: >"$NOTES"
T_START=$(date +%s)

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
note() { echo "- $*" >>"$NOTES"; log "note: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# --- tools -------------------------------------------------------------------------------
has() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if has dvc || has snakemake; then
    if [ ! -x "$VENV/bin/dvc" ] || [ ! -x "$VENV/bin/snakemake" ]; then
        log "creating $VENV and installing dvc and snakemake with pip"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q dvc snakemake
    fi
fi
DVC=$VENV/bin/dvc
SNAKEMAKE=$VENV/bin/snakemake
export DVC_NO_ANALYTICS=1

log "building dagrun (release) into $TARGET"
(cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release --quiet --bin dagrun)
DAGRUN=$TARGET/release/dagrun
BUILT="$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- engine cache stages src || echo ', with uncommitted changes')"

NINJA=$(command -v ninja || true)
if has ninja && [ -z "$NINJA" ]; then
    log "ninja not found (apt-get install -y ninja-build): left out"
    TOOLS=${TOOLS/ninja/}
fi
mode() { case " $MODES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

HYPERFINE=$(command -v hyperfine || true)
[ -n "$HYPERFINE" ] || log "hyperfine not found (apt-get install -y hyperfine): timing with a Python loop"

# time_cmd JSON WARMUP RUNS CMD...: times CMD in the current folder; writes mean, stddev,
# min, max (seconds) and user, system (mean CPU seconds) to JSON.
time_cmd() {
    local json=$1 warm=$2 runs=$3
    shift 3
    if [ -n "$HYPERFINE" ]; then
        "$HYPERFINE" -N --style none --warmup "$warm" --runs "$runs" \
            --export-json "$json.hf" -- "$*" >/dev/null
        "$PY" - "$json.hf" "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
json.dump({k: r[k] for k in ("mean", "stddev", "min", "max", "user", "system")},
          open(sys.argv[2], "w"))
EOF
    else
        "$PY" - "$json" "$warm" "$runs" "$@" <<'EOF'
import json, os, statistics, subprocess, sys, time
out, warm, runs, cmd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
walls, users, syss = [], [], []
for i in range(warm + runs):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    t = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"{cmd} failed")
    if i >= warm:
        walls.append(t); users.append(ru.ru_utime); syss.append(ru.ru_stime)
json.dump({"mean": statistics.mean(walls),
           "stddev": statistics.stdev(walls) if len(walls) > 1 else 0.0,
           "min": min(walls), "max": max(walls),
           "user": statistics.mean(users), "system": statistics.mean(syss)},
          open(out, "w"))
EOF
    fi
}

# row SHAPE NODES TOOL COMMAND JSON POPULATED_BY POPULATE_SECONDS
row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$(loadavg)" >>"$ROWS"
}

# The commands of a generated pipeline, one per line, in dependency order (for the shell
# loop that populates DVC, and Snakemake where running it is too slow).
commands_of() {
    local shape=$1 n=$2
    "$PY" - "$shape" "$n" "$HERE/gen.py" <<'EOF'
import importlib.util, sys
shape, n, gen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
spec = importlib.util.spec_from_file_location("gen", gen)
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
if shape == "sweep":
    for i in range(n):
        print(g.cmd("shared.txt", f"s{i}.txt", i))
else:
    nodes = g.chain_nodes(n) if shape == "chain" else g.fanout_nodes(n)
    for _, inp, out, k in nodes:
        print(g.cmd(inp, out, k, g.own(k)))
EOF
}

# fits SECONDS_AT_N N_NODES FACTOR: whether SECONDS_AT_N (measured at $N nodes, empty if
# not measured) scaled linearly to N_NODES, times FACTOR, stays within $LIMIT.
fits() {
    [ -z "$1" ] && return 0
    "$PY" -c "import sys; sys.exit(0 if $1 * $2 / $N * $3 <= $LIMIT else 1)"
}
est() { "$PY" -c "print(round($1 * $2 / $N))"; }

# --- one shape ---------------------------------------------------------------------------
# Seconds measured at the fan-out ($N nodes), from which the sweep's cost is estimated.
FANOUT_SM_POP_S="" FANOUT_SM_NOOP_S="" FANOUT_SM_DRY_S=""
FANOUT_DVC_REPRO_S="" FANOUT_DVC_NOOP_S="" FANOUT_DVC_STATUS_S=""

mean_of() { "$PY" -c "import json; print(round(json.load(open('$1'))['mean'], 2))"; }
# slow_runs SECONDS_AT_N N_NODES: timed runs for a slow tool: RUNS_SLOW, or fewer (at least
# 2) so that warm-up plus runs fit in LIMIT.
slow_runs() {
    if [ -z "$1" ]; then echo "$RUNS_SLOW"; return; fi
    "$PY" -c "print(max(2, min($RUNS_SLOW, int($LIMIT / ($1 * $2 / $N)) - 1)))"
}

bench_dagrun-before() { DAGRUN=$BEFORE TOOL=dagrun-before bench_dagrun "$@"; }

bench_dagrun() {
    local shape=$1 n=$2 tool=${TOOL:-dagrun}
    local d=$WORK/$shape/$tool
    "$PY" "$HERE/gen.py" dagrun "$shape" "$n" "$d"
    cd "$d"
    log "$tool $shape $n: populating"
    local t0 t1
    t0=$(now_ms)
    "$DAGRUN" -q pipeline.yaml >populate.log 2>&1 || {
        note "$tool $shape $n: populating failed: $(tail -1 populate.log)"
        return
    }
    t1=$(now_ms)
    # The stat cache trusts only files older than 2 s: wait, so the warm-up runs fill it.
    sleep 3
    "$DAGRUN" pipeline.yaml >check.log 2>&1
    grep -q " 0 ran, $n cached" check.log || {
        note "$tool $shape $n: the rerun was not a no-op: $(tail -1 check.log)"
        return
    }
    log "$tool $shape $n: timing"
    time_cmd "$WORK/$shape-$tool-run.json" 3 "$RUNS" "$DAGRUN" pipeline.yaml
    row "$shape" "$n" "$tool" "dagrun pipeline.yaml" "$WORK/$shape-$tool-run.json" "dagrun" "$(((t1 - t0) / 1000))"
    time_cmd "$WORK/$shape-$tool-plan.json" 3 "$RUNS" "$DAGRUN" plan pipeline.yaml
    row "$shape" "$n" "$tool" "dagrun plan pipeline.yaml" "$WORK/$shape-$tool-plan.json" "" ""
}

bench_ninja() {
    local shape=$1 n=$2 d=$WORK/$shape/ninja
    "$PY" "$HERE/gen.py" ninja "$shape" "$n" "$d"
    cd "$d"
    log "ninja $shape $n: populating"
    local t0 t1
    t0=$(now_ms)
    "$NINJA" >populate.log 2>&1 || {
        note "ninja $shape $n: populating failed: $(tail -1 populate.log)"
        return
    }
    t1=$(now_ms)
    "$NINJA" >check.log 2>&1
    grep -q "no work to do" check.log || {
        note "ninja $shape $n: the rerun was not a no-op: $(tail -1 check.log)"
        return
    }
    log "ninja $shape $n: timing"
    time_cmd "$WORK/$shape-ninja-run.json" 3 "$RUNS" "$NINJA"
    row "$shape" "$n" ninja "ninja" "$WORK/$shape-ninja-run.json" "ninja" "$(((t1 - t0) / 1000))"
    time_cmd "$WORK/$shape-ninja-dry.json" 3 "$RUNS" "$NINJA" -n
    row "$shape" "$n" ninja "ninja -n" "$WORK/$shape-ninja-dry.json" "" ""
}

# --- full runs and the mid-chain edit ------------------------------------------------------
# The command that runs a whole generated pipeline of TOOL with JOBS jobs, in its folder.
run_cmd() {
    local tool=$1 jobs=$2
    case $tool in
        dagrun) echo "$DAGRUN -q -j $jobs pipeline.yaml" ;;
        dagrun-before) echo "$BEFORE -q -j $jobs pipeline.yaml" ;;
        ninja) echo "$NINJA -j $jobs" ;;
        snakemake) echo "$SNAKEMAKE -q --cores $jobs" ;;
    esac
}

# runrow SHAPE WHAT TOOL COMMAND MICROSECONDS...
runrow() {
    local shape=$1 what=$2 tool=$3 cmd=$4
    shift 4
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$what" "$tool" "$cmd" "$*" "$(loadavg)" >>"$RUNROWS"
}

# bench_runs TOOL: RUNS_FULL full runs of the chain (1 job) and of the fan-out (2 jobs),
# each in a fresh copy of the generated folder; then RUNS_FULL edits of the own input of
# the chain's middle node, each followed by a timed run (the second half reruns).
bench_runs() {
    local tool=$1 gen=$1 shape jobs t0 t1 r d tpl cmdline
    local -a times
    case $tool in dagrun-before) gen=dagrun ;; esac
    for shape in chain fanout; do
        case " $SHAPES " in *" $shape "*) ;; *) continue ;; esac
        jobs=1
        [ "$shape" = fanout ] && jobs=2
        tpl=$WORK/runs/$tool-$shape-template
        d=$WORK/runs/$tool-$shape
        "$PY" "$HERE/gen.py" "$gen" "$shape" "$N" "$tpl"
        cmdline=$(run_cmd "$tool" "$jobs")
        if mode full; then
            times=()
            for r in $(seq "$RUNS_FULL"); do
                rm -rf "$d"
                cp -a "$tpl" "$d"
                cd "$d"
                log "$tool $shape: full run $r"
                t0=$(date +%s%N)
                $cmdline >run.log 2>&1 || {
                    note "$tool $shape: the full run failed: $(tail -1 run.log)"
                    break
                }
                t1=$(date +%s%N)
                times+=("$(((t1 - t0) / 1000))")
                cd "$WORK"
            done
            runrow "$shape" "full run, $jobs job(s)" "$tool" "${cmdline##*/}" "${times[@]}"
        fi
        if mode edit && [ "$shape" = chain ]; then
            if ! mode full || [ ! -d "$d" ]; then
                rm -rf "$d"
                cp -a "$tpl" "$d"
                (cd "$d" && $cmdline >run.log 2>&1)
            fi
            cd "$d"
            times=()
            for r in $(seq "$RUNS_FULL"); do
                sleep 1.1 # a new mtime for the tools that compare mtimes
                echo "edit $r" >>"in/$((N / 2)).txt"
                log "$tool $shape: mid-chain edit $r"
                t0=$(date +%s%N)
                $cmdline >edit.log 2>&1 || {
                    note "$tool: the run after the mid-chain edit failed: $(tail -1 edit.log)"
                    break
                }
                t1=$(date +%s%N)
                times+=("$(((t1 - t0) / 1000))")
            done
            runrow "$shape" "mid-chain edit ($((N - N / 2)) nodes rerun)" "$tool" "${cmdline##*/}" "${times[@]}"
            cd "$WORK"
        fi
    done
}

bench_dvc() {
    local shape=$1 n=$2 d=$WORK/$shape/dvc
    "$PY" "$HERE/gen.py" dvc "$shape" "$n" "$d"
    cd "$d"
    "$DVC" init --no-scm -q
    "$DVC" config core.analytics false
    "$DVC" config core.check_update false
    local t0 t1 how
    if ! fits "$FANOUT_DVC_NOOP_S" "$n" 3; then
        note "DVC $shape $n skipped: its no-op took ${FANOUT_DVC_NOOP_S} s at $N nodes, so one warm-up and two timed runs extrapolate to $(est "$FANOUT_DVC_NOOP_S" "$((3 * n))") s, over ${LIMIT} s"
        return
    fi
    if [ -n "${DAGRUN_BENCH_DVC_REPRO:-}" ] && fits "$FANOUT_DVC_REPRO_S" "$n" 1; then
        how="dvc repro"
        log "dvc $shape $n: populating with dvc repro"
        t0=$(now_ms)
        "$DVC" repro -q >populate.log 2>&1 || {
            note "DVC $shape $n: dvc repro failed: $(tail -1 populate.log)"
            return
        }
        t1=$(now_ms)
    else
        how="shell loop + dvc commit -f"
        log "dvc $shape $n: populating with a shell loop and dvc commit -f"
        t0=$(now_ms)
        commands_of "$shape" "$n" | sh -e
        "$DVC" commit -f -q >populate.log 2>&1 || {
            note "DVC $shape $n: dvc commit failed: $(tail -1 populate.log)"
            return
        }
        t1=$(now_ms)
    fi
    "$DVC" repro >check.log 2>&1
    grep -q "Data and pipelines are up to date" check.log || {
        note "DVC $shape $n: the rerun was not a no-op: $(tail -1 check.log)"
        return
    }
    log "dvc $shape $n: timing"
    local w=$WORK/$shape-dvc
    local runs
    runs=$(slow_runs "$FANOUT_DVC_NOOP_S" "$n")
    time_cmd "$w-repro.json" 1 "$runs" "$DVC" repro
    row "$shape" "$n" DVC "dvc repro" "$w-repro.json" "$how" "$(((t1 - t0) / 1000))"
    if fits "$FANOUT_DVC_STATUS_S" "$n" "$((runs + 1))"; then
        time_cmd "$w-status.json" 1 "$runs" "$DVC" status
        row "$shape" "$n" DVC "dvc status" "$w-status.json" "" ""
    else
        note "DVC $shape $n: \`dvc status\` not timed (time limit)"
    fi
    if [ "$shape" = fanout ]; then
        FANOUT_DVC_NOOP_S=$(mean_of "$w-repro.json")
        FANOUT_DVC_STATUS_S=$(mean_of "$w-status.json")
        if [ "$how" = "dvc repro" ]; then FANOUT_DVC_REPRO_S=$(((t1 - t0) / 1000 + 1)); fi
    fi
}

bench_snakemake() {
    local shape=$1 n=$2 d=$WORK/$shape/snakemake
    "$PY" "$HERE/gen.py" snakemake "$shape" "$n" "$d"
    cd "$d"
    local t0 t1 how
    if ! fits "$FANOUT_SM_NOOP_S" "$n" 3; then
        note "Snakemake $shape $n skipped: its no-op took ${FANOUT_SM_NOOP_S} s at $N nodes, so one warm-up and two timed runs extrapolate to $(est "$FANOUT_SM_NOOP_S" "$((3 * n))") s, over ${LIMIT} s"
        return
    fi
    if fits "$FANOUT_SM_POP_S" "$n" 1; then
        how="snakemake --cores 1"
        log "snakemake $shape $n: populating with snakemake --cores 1"
        t0=$(now_ms)
        "$SNAKEMAKE" --cores 1 -q >populate.log 2>&1 || {
            note "Snakemake $shape $n: populating failed: $(grep -m1 Error populate.log)"
            return
        }
        t1=$(now_ms)
    else
        how="shell loop (no .snakemake metadata: lower bound)"
        note "Snakemake $shape $n: populated by a shell loop, not by Snakemake: running $n jobs through it extrapolates to $(est "$FANOUT_SM_POP_S" "$n") s (${FANOUT_SM_POP_S} s for $N at the fan-out)"
        log "snakemake $shape $n: populating with a shell loop"
        t0=$(now_ms)
        commands_of "$shape" "$n" | sh -e
        t1=$(now_ms)
    fi
    "$SNAKEMAKE" --cores 1 >check.log 2>&1
    grep -q "Nothing to be done" check.log || {
        note "Snakemake $shape $n: the rerun was not a no-op: $(tail -1 check.log)"
        return
    }
    log "snakemake $shape $n: timing"
    local w=$WORK/$shape-snakemake
    local runs
    runs=$(slow_runs "$FANOUT_SM_NOOP_S" "$n")
    time_cmd "$w-run.json" 1 "$runs" "$SNAKEMAKE" --cores 1
    row "$shape" "$n" Snakemake "snakemake --cores 1" "$w-run.json" "$how" "$(((t1 - t0) / 1000))"
    if fits "$FANOUT_SM_DRY_S" "$n" "$((runs + 1))"; then
        time_cmd "$w-dry.json" 1 "$runs" "$SNAKEMAKE" -n --cores 1
        row "$shape" "$n" Snakemake "snakemake -n --cores 1" "$w-dry.json" "" ""
    else
        note "Snakemake $shape $n: \`snakemake -n\` not timed (time limit)"
    fi
    if [ "$shape" = fanout ]; then
        FANOUT_SM_POP_S=$(((t1 - t0) / 1000 + 1))
        FANOUT_SM_NOOP_S=$(mean_of "$w-run.json")
        FANOUT_SM_DRY_S=$(mean_of "$w-dry.json")
    fi
}

LOAD_BEFORE=$(loadavg)
if mode full || mode edit; then
    for tool in dagrun dagrun-before ninja snakemake; do
        has "$tool" || continue
        bench_runs "$tool"
    done
    if has dvc; then
        note "DVC: full runs and the mid-chain edit not timed (\`dvc repro\` spends ~0.4 s a stage: ~7 minutes a run)"
    fi
fi
# Fan-out first: its rates decide what the sweep can afford.
for shape in fanout chain sweep; do
    mode noop || break
    case " $SHAPES " in *" $shape "*) ;; *) continue ;; esac
    n=$N
    [ "$shape" = sweep ] && n=$SWEEP
    for tool in dagrun dagrun-before ninja snakemake dvc; do
        has "$tool" || continue
        "bench_$tool" "$shape" "$n"
        cd "$WORK"
    done
done
LOAD_AFTER=$(loadavg)
T_END=$(date +%s)

# --- report ------------------------------------------------------------------------------
versions() {
    echo "- dagrun: $("$DAGRUN" --version) (built at commit $BUILT)"
    if [ -n "$BEFORE" ]; then echo "- dagrun-before: $BEFORE ($("$BEFORE" --version))"; fi
    if has ninja; then echo "- ninja: $("$NINJA" --version)"; fi
    if has dvc; then echo "- DVC: $("$DVC" --version)"; fi
    if has snakemake; then echo "- Snakemake: $("$SNAKEMAKE" --version)"; fi
    echo "- Python (for DVC and Snakemake): $("$VENV/bin/python" --version 2>&1 || true)"
    echo "- rustc: $(rustc --version)"
    if [ -n "$HYPERFINE" ]; then echo "- timer: $("$HYPERFINE" --version)"; else echo "- timer: Python loop (no hyperfine)"; fi
}

{
    echo "### Run of $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB memory, $(uname -sr)"
    echo "- load average (1, 5, 15 min): $LOAD_BEFORE before, $LOAD_AFTER after; every tool ran at niceness $(nice) (\`DAGRUN_BENCH_NICED\` set beforehand skips the \`nice -n 10\`)"
    echo "- chain and fan-out: $N nodes; sweep: $SWEEP nodes; dagrun: 3 warm-up + $RUNS timed runs, DVC and Snakemake: 1 warm-up + $RUNS_SLOW timed runs"
    echo "- whole benchmark: $(((T_END - T_START) / 60)) min $(((T_END - T_START) % 60)) s"
    versions
    echo
    if [ -s "$RUNROWS" ]; then
        echo "| shape | what | tool | command | wall mean | wall min | runs (s) | load avg after |"
        echo "| --- | --- | --- | --- | ---: | ---: | --- | --- |"
        "$PY" - "$RUNROWS" <<'EOF'
import statistics, sys
for line in open(sys.argv[1]):
    shape, what, tool, cmd, us, load = line.rstrip("\n").split("\t")
    t = [int(x) / 1e6 for x in us.split()]
    if not t:
        print(f"| {shape} | {what} | {tool} | `{cmd}` | failed | | | {load} |")
        continue
    runs = ", ".join(f"{x:.2f}" for x in t)
    print(f"| {shape} | {what} | {tool} | `{cmd}` | {statistics.mean(t):.2f} s | {min(t):.2f} s | {runs} | {load} |")
EOF
        echo
    fi
    echo "| shape | nodes | tool | no-op command | wall mean ± σ | wall min | CPU (user+sys) | load avg after | cache populated by (s) |"
    echo "| --- | ---: | --- | --- | ---: | ---: | ---: | --- | --- |"
    "$PY" - "$ROWS" <<'EOF'
import json, sys
def f(s):
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"
for line in open(sys.argv[1]):
    shape, n, tool, cmd, js, how, pop, load = line.rstrip("\n").split("\t")
    r = json.load(open(js))
    popcell = f"{how} ({pop})" if how else ""
    print(f"| {shape} | {int(n):,} | {tool} | `{cmd}` | {f(r['mean'])} ± {f(r['stddev'])} "
          f"| {f(r['min'])} | {f(r['user'] + r['system'])} | {load} | {popcell} |")
EOF
    if [ -s "$NOTES" ]; then
        echo
        cat "$NOTES"
    fi
} >"$OUT"
log "report: $OUT"
cat "$OUT"
