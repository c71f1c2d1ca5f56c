#!/usr/bin/env bash
# One-node Slurm cluster for a laptop or CI, from Debian/Ubuntu's `slurm-wlm`
# and `munge` packages.
#
#   bash slurm/local-cluster.sh start    # install if missing, configure, start, wait for an idle node
#   bash slurm/local-cluster.sh status   # sinfo + daemon pids
#   bash slurm/local-cluster.sh stop     # stop only the daemons this script started (pid files)
#   bash slurm/local-cluster.sh env      # print `export SLURM_CONF=...` for client commands
#
# Everything lives in a state dir, ${HPCML_SLURM_DIR:-/tmp/hpcml-slurm}:
#   slurm.conf, munge/munge.key, munge/munge.socket.2, run/*.pid, log/*.log,
#   ctld/ (StateSaveLocation), spool/ (SlurmdSpoolDir).
# Nothing in /etc is modified, except: when run as root and /etc/slurm/slurm.conf
# does not exist, it is made a symlink to the state dir's slurm.conf so that
# sinfo/sbatch/squeue work without SLURM_CONF (removed again by `stop`).
#
# Knobs (environment):
#   HPCML_SLURM_DIR      state dir                     (default /tmp/hpcml-slurm)
#   HPCML_SLURM_CPUS     CPUs the node declares        (default 8; may exceed the real cores)
#   HPCML_SLURM_PORT     slurmctld port; slurmd = +1   (default 6817)
#   HPCML_SLURM_TIMEOUT  seconds to wait for idle node (default 60)
#
# Tuned for fast tests, not for production: KillWait=5, OverTimeLimit=0, a
# scheduler that runs every second (jobs chained with --dependency start within
# ~1-2 s of their predecessor), no accounting (use squeue/scontrol, not sacct).
set -euo pipefail

STATE=${HPCML_SLURM_DIR:-/tmp/hpcml-slurm}
CPUS=${HPCML_SLURM_CPUS:-8}
PORT=${HPCML_SLURM_PORT:-6817}
TIMEOUT=${HPCML_SLURM_TIMEOUT:-60}
CONF="$STATE/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

log() { printf '[local-cluster] %s\n' "$*"; }
die() { printf '[local-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Daemon binaries live in sbin, which is not always on a user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF="$CONF"

have_packages() {
    command -v munged >/dev/null && command -v slurmctld >/dev/null &&
        command -v slurmd >/dev/null && command -v sinfo >/dev/null
}

install_packages() {
    if have_packages; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        die "slurm-wlm/munge are not installed and this is not root. Install them first:
    sudo apt-get update && sudo apt-get install -y slurm-wlm munge
then re-run: bash $0 start"
    fi
    command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge with your package manager"
    log "installing slurm-wlm and munge (apt-get)..."
    local t0=$SECONDS
    # The packages' maintainer scripts try to start system daemons; we run our
    # own, so keep them from starting (policy-rc.d exit 101 = "not allowed").
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
    have_packages || die "installation finished but munged/slurmctld/slurmd/sinfo are still missing"
    log "installed in $((SECONDS - t0)) s"
}

# pid_alive NAME PIDFILE: the pid in PIDFILE runs a process named NAME
pid_alive() {
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/"$pid"/comm) == "$name"* ]]
}

write_config() {
    local user mem_mb
    user=$(id -un)
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p "$STATE"/{munge,run,log,ctld,spool/slurmd}
    chmod 700 "$STATE/munge"
    cat >"$CONF" <<EOF
# Written by hpcml slurm/local-cluster.sh -- a one-node test cluster. Regenerated on every start.
ClusterName=hpcml-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user

AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket.2

StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in containers/CI: track processes by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobContainerType=job_container/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Trust the CPUs= below even when the machine has fewer real cores (else the node is INVAL).
SlurmdParameters=config_overrides
ReturnToService=2

# No accounting daemon: squeue/scontrol only. Finished jobs stay visible to
# scontrol (with their ExitCode) for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
MailProg=/bin/true

# Fast turnaround for tests: schedule every second, kill 5 s after SIGTERM,
# no grace past the walltime.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,sched_min_interval=0,batch_sched_delay=0,bf_interval=1,defer_batch=0
KillWait=5
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10

NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

link_etc_conf() {
    # Let plain `sinfo`/`sbatch` find the config when nothing else owns /etc/slurm/slurm.conf.
    [[ $(id -u) -eq 0 ]] || return 0
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then
        return 0
    fi
    if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
        log "note: $ETC_CONF exists and is not ours; client commands need: export SLURM_CONF=$CONF"
        return 0
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$CONF" "$ETC_CONF"
}

start_munged() {
    local pidf="$STATE/run/munged.pid"
    if pid_alive munged "$pidf"; then
        return 0
    fi
    local key="$STATE/munge/munge.key"
    if [[ ! -s $key ]]; then
        dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        chmod 400 "$key"
    fi
    rm -f "$STATE/munge/munge.socket.2" "$STATE/munge/munge.socket.2.lock"
    # --force: tolerate a world-writable-with-sticky-bit parent such as /tmp.
    munged --force \
        --key-file="$key" \
        --socket="$STATE/munge/munge.socket.2" \
        --pid-file="$pidf" \
        --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed" ||
        die "munged failed to start; see $STATE/log/munged.log"
}

start_slurmctld() {
    if pid_alive slurmctld "$STATE/run/slurmctld.pid"; then
        return 0
    fi
    # -i: ignore unreadable state from an older run instead of refusing to start.
    slurmctld -i -f "$CONF" || die "slurmctld failed to start; see $STATE/log/slurmctld.log"
}

start_slurmd() {
    if pid_alive slurmd "$STATE/run/slurmd.pid"; then
        return 0
    fi
    slurmd -f "$CONF" -N "$NODE" || die "slurmd failed to start; see $STATE/log/slurmd.log"
}

node_state() {
    sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1
}

# Epoch seconds of the node's last slurmd registration (0 if unknown).
slurmd_registered_at() {
    local when
    when=$(scontrol show node "$NODE" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    date -d "$when" +%s 2>/dev/null || echo 0
}

all_running() {
    pid_alive munged "$STATE/run/munged.pid" &&
        pid_alive slurmctld "$STATE/run/slurmctld.pid" &&
        pid_alive slurmd "$STATE/run/slurmd.pid"
}

cmd_start() {
    local t0 t_install
    t0=$(date +%s.%N)
    if have_packages && [[ -f $CONF ]] && all_running && [[ -n $(node_state) ]]; then
        log "already running (state dir $STATE); node $NODE is $(node_state)"
        return 0
    fi
    install_packages
    t_install=$(date +%s.%N)
    write_config
    link_etc_conf
    local launched=0
    if ! pid_alive slurmd "$STATE/run/slurmd.pid"; then
        launched=$(($(date +%s) - 1))
    fi
    start_munged
    start_slurmctld
    start_slurmd
    # slurmctld restores the node's last state from its state dir: count the
    # node as up only once this slurmd has registered.
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        if [[ -n $state ]] && (($(slurmd_registered_at) < launched)); then
            state="registering"
        fi
        case $state in
        idle | mix | alloc) break ;;
        down* | drain* | inval*)
            # A node left down by a previous run: bring it back.
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            ;;
        esac
        sleep 0.2
    done
    case $state in
    idle | mix | alloc) ;;
    *)
        sinfo -N -l >&2 || true
        tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
        die "node $NODE not idle after ${TIMEOUT}s (state '${state:-no answer}')"
        ;;
    esac
    local t1
    t1=$(date +%s.%N)
    log "node $NODE is $state with $CPUS CPUs; state dir $STATE"
    awk -v a="$t0" -v b="$t_install" -v c="$t1" \
        'BEGIN {printf "[local-cluster] time to idle node: %.1f s (install %.1f s, start %.1f s)\n", c - a, b - a, c - b}'
    if [[ ! (-L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF") ]]; then
        log "client commands need: export SLURM_CONF=$CONF"
    fi
}

stop_one() {
    local name=$1 pidf="$STATE/run/$1.pid" pid i
    if ! pid_alive "$name" "$pidf"; then
        rm -f "$pidf"
        return 0
    fi
    pid=$(<"$pidf")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name ($pid) did not stop in 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
    log "stopped $name ($pid)"
}

cmd_stop() {
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
}

cmd_status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$name" "$STATE/run/$name.pid"; then
            log "$name running (pid $(<"$STATE/run/$name.pid"))"
        else
            log "$name not running"
            rc=1
        fi
    done
    if command -v sinfo >/dev/null && [[ -f $CONF ]]; then
        sinfo -N -l || rc=1
        squeue || true
    fi
    return $rc
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
restart) cmd_stop && cmd_start ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|status|restart|env" >&2
    exit 2
    ;;
esac
