#!/usr/bin/env bash
# A real S3 server on localhost for the remote cache's tests (tests/cli/remote.rs) and its
# benchmark (bench/remote/run.sh): moto's server (PyPI `moto[server]`, the S3 REST API
# over HTTP, multipart uploads and conditional puts included), installed into a venv
# outside the clone and started on 127.0.0.1 once; later calls reuse the running one.
#
#   eval "$(ci/s3/start.sh)"     # prints the environment the tests and dagrun read
#
# Environment (optional): DAGRUN_S3_VENV [/opt/dagrun/s3-venv], DAGRUN_S3_PORT [5555].
# The server keeps everything in memory. DAGRUN_S3_STARTED is the pid of the server this
# call started (empty when one was running already): `kill "$DAGRUN_S3_STARTED"` stops it.
set -euo pipefail
VENV=${DAGRUN_S3_VENV:-/opt/dagrun/s3-venv}
PORT=${DAGRUN_S3_PORT:-5555}
MOTO_VERSION=5.2.6
PY=${PYTHON:-python3}
PIDFILE=${TMPDIR:-/tmp}/dagrun-s3-$PORT.pid
LOG=${TMPDIR:-/tmp}/dagrun-s3-$PORT.log
ENDPOINT=http://127.0.0.1:$PORT

if [ ! -x "$VENV/bin/moto_server" ]; then
    echo "ci/s3/start.sh: installing moto[server]==$MOTO_VERSION into $VENV" >&2
    # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
    if ! "$PY" -c "import ensurepip" 2>/dev/null && command -v apt-get >/dev/null; then
        echo "ci/s3/start.sh: installing python3-venv" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    fi
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
fi

answers() { "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('$ENDPOINT/', timeout=2)" 2>/dev/null; }

STARTED=
if ! answers; then
    echo "ci/s3/start.sh: starting moto_server on $ENDPOINT (log: $LOG)" >&2
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 &
    STARTED=$!
    echo "$STARTED" >"$PIDFILE"
    for _ in $(seq 1 100); do
        answers && break
        sleep 0.2
    done
    answers || { echo "ci/s3/start.sh: moto_server did not answer on $ENDPOINT; its log:" >&2; cat "$LOG" >&2; exit 1; }
fi

# The bucket the tests share (each test works under a prefix of its own).
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$VENV/bin/python" - "$ENDPOINT" <<'PY' >&2
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
if "dagrun-tests" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="dagrun-tests")
PY

cat <<ENV
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export DAGRUN_S3_BUCKET=dagrun-tests
export DAGRUN_S3_SERVER=$VENV/bin/moto_server
export DAGRUN_S3_PIDFILE=$PIDFILE
export DAGRUN_S3_STARTED=$STARTED
ENV
