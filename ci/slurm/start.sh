#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine (munge + slurmctld + slurmd), for the
# Slurm integration tests. Needs root and Debian's slurmctld slurmd slurm-client munge
# (installed here when missing). Idempotent: a running cluster is left as it is.
#
#   ci/slurm/start.sh            # prints `export SLURM_CONF=...` on stdout
#   eval "$(ci/slurm/start.sh)"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
STATE="${DAGRUN_SLURM_STATE:-/var/tmp/dagrun-slurm}"
CONF="$STATE/slurm.conf"
log() { echo "slurm: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    log "installing slurmctld slurmd slurm-client munge"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
fi

mkdir -p "$STATE/state" "$STATE/spool"
host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))"
sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM@|$mem_mb|g" -e "s|@STATE@|$STATE|g" \
    "$here/slurm.conf.in" > "$CONF.new"
mv "$CONF.new" "$CONF"
export SLURM_CONF="$CONF"

# munge: a key owned by munge (mode 400), its run folder, the daemon as the munge user.
if ! pgrep -x munged >/dev/null; then
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    su -s /bin/sh munge -c "munged --force"
    log "munged started"
fi

if ! pgrep -x slurmctld >/dev/null; then
    # -c: a fresh controller state (no jobs or node states from an earlier boot).
    slurmctld -c -f "$CONF"
    log "slurmctld started"
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd -f "$CONF"
    log "slurmd started"
fi

# Wait until the node takes jobs.
for _ in $(seq 1 60); do
    state="$(sinfo -h -N -o '%T' 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle*|mixed*|allocated*) log "node $host is $state"; echo "export SLURM_CONF=$CONF"; exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
log "the node did not come up; slurmctld log:"
tail -n 20 "$STATE/slurmctld.log" >&2 || true
tail -n 20 "$STATE/slurmd.log" >&2 || true
exit 1
