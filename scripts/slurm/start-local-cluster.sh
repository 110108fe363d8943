#!/usr/bin/env bash
# Starts a one-node Slurm cluster on localhost (munge, slurmctld, slurmd), for vestige's
# Slurm tests and for trying `vestige run --backend slurm` on one machine. Idempotent: it
# installs the Debian packages only when they are missing and starts only the daemons that
# are not running. Needs root (CI runs as root). Accounting stays off, so `sacct` answers
# "accounting storage is disabled" and `vestige status` reads squeue and the cell logs.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "start-local-cluster.sh: run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key, then the daemon as the munge user.
if ! pgrep -x munged >/dev/null; then
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(free -m | awk '/^Mem:/ { print int($2 * 0.9) }')
conf=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /tmp/slurm/state /tmp/slurm/spool /tmp/slurm/log
want=$(cat <<CONF
# Written by vestige's scripts/slurm/start-local-cluster.sh: a one-node cluster.
ClusterName=vestige-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# A requeued task waits cred_expire seconds (120 by default) before it starts again.
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Start eligible jobs (a requeued task, a dependent array) within a couple of seconds.
SchedulerParameters=bf_interval=1,sched_interval=2
ReturnToService=2
StateSaveLocation=/tmp/slurm/state
SlurmdSpoolDir=/tmp/slurm/spool
SlurmctldPidFile=/tmp/slurm/slurmctld.pid
SlurmdPidFile=/tmp/slurm/slurmd.pid
SlurmctldLogFile=/tmp/slurm/log/slurmctld.log
SlurmdLogFile=/tmp/slurm/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
DefMemPerCPU=$((mem / cpus))
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    printf '%s\n' "$want" >"$conf"
    changed=1
fi

if [ "${changed:-0}" = 1 ] && pgrep -x slurmctld >/dev/null; then
    # Some settings (AuthInfo) need a restart: stop both daemons and start them again.
    scontrol shutdown || true
    for _ in $(seq 30); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 1; done
fi
if ! pgrep -x slurmctld >/dev/null; then
    slurmctld -c -i
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd
fi

# Wait until the node takes jobs.
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)
    case "$state" in
    idle* | mix* | alloc*) echo "slurm: node $host is $state ($cpus CPUs, $mem MB)"; exit 0 ;;
    esac
    sleep 1
done
echo "start-local-cluster.sh: the node did not come up; see /tmp/slurm/log/" >&2
sinfo -N -l >&2 || true
exit 1
