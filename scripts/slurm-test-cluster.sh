#!/usr/bin/env bash
# A single-host Slurm test cluster for the Slurm backend (docs/slurm.md, tests/test_slurm.py).
#
#   scripts/slurm-test-cluster.sh         configure and start it (nothing to do if `sinfo` answers)
#   scripts/slurm-test-cluster.sh stop    cancel every job and stop the daemons
#
# Run as root on Debian 12 with `apt-get install slurm-wlm munge` done (Slurm 22.05). No systemd:
# munged runs as the munge user, then slurmctld, then two slurmds, node1 and node2, on 127.0.0.1
# with their own ports (a heterogeneous job needs one node per component). Each node declares 4
# CPUs and 4000 MB whatever the machine has (SlurmdParameters=config_overrides);
# proctrack/linuxproc and task/none need no cgroups; no slurmdbd (finished jobs go to
# jobcomp/filetxt); the backfill scheduler runs every second because only it starts heterogeneous
# jobs. Every wait is time-limited; on a timeout the script fails showing the daemons' logs.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# beampipe test cluster (scripts/slurm-test-cluster.sh)"
LOGS=/var/log/slurm
RUN=/run/slurm
NODES=(node1 node2)
WAIT=30 # seconds for each daemon to answer

fail() {
    echo "slurm-test-cluster: $*" >&2
    for log in "$LOGS"/slurmctld.log "$LOGS"/slurmd-*.log /var/log/munge/munged.log; do
        if [[ -f $log ]]; then
            echo "--- last lines of $log:" >&2
            tail -n 25 "$log" >&2 || true
        fi
    done
    exit 1
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds, fail after SECONDS.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "$what did not happen within ${seconds} s ($*)"
        fi
        sleep 0.2
    done
}

answers() { timeout 5 sinfo --noheader >/dev/null 2>&1; }

nodes_idle() {
    local states
    states=$(timeout 5 sinfo --noheader --Node --format='%N %t' 2>/dev/null) || return 1
    [[ $(grep -cE '^node[12] idle$' <<<"$states") -eq 2 ]]
}

stop() {
    local pid jobs
    if answers; then # cancel every job first, so that no job step outlives its slurmd
        jobs=$(timeout 10 squeue --noheader --format=%A) || true
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs || true
            wait_for "$WAIT" "every job ending" bash -c "[[ -z \$(squeue --noheader) ]]"
        fi
    fi
    for pidfile in "$RUN"/slurmd-*.pid "$RUN"/slurmctld.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + WAIT))
        while kill -0 "$pid" 2>/dev/null; do
            ((SECONDS < deadline)) || fail "process $pid ($pidfile) did not exit within ${WAIT} s"
            sleep 0.2
        done
        rm -f "$pidfile"
    done
    if [[ -f /run/munge/munged.pid ]]; then
        pid=$(cat /run/munge/munged.pid)
        kill "$pid" 2>/dev/null || true
        wait_for "$WAIT" "munged (pid $pid) exiting" bash -c "! kill -0 $pid"
    fi
    echo "slurm-test-cluster: stopped"
}

if [[ ${1:-start} == stop ]]; then
    stop
    exit 0
elif [[ ${1:-start} != start ]]; then
    echo "usage: $0 [start|stop]" >&2
    exit 2
fi

if answers; then
    echo "slurm-test-cluster: already running ($(sinfo --noheader --summarize \
        --format='partition %P, nodes allocated/idle/other/total %F'))"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || fail "run me as root (I start munged, slurmctld and slurmd)"
for exe in munged slurmctld slurmd sinfo; do
    command -v "$exe" >/dev/null || [[ -x /usr/sbin/$exe ]] ||
        fail "no $exe: apt-get install -y slurm-wlm munge"
done

# -- munge -----------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
fi
munge_answers() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }
if ! munge_answers; then
    runuser -u munge -- /usr/sbin/munged
    wait_for "$WAIT" "munged answering" munge_answers
fi

# -- slurm.conf ------------------------------------------------------------------------------------
if [[ -f $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script; not overwriting it"
fi
install -d -o slurm -g slurm -m 0755 "$LOGS" "$RUN" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
for node in "${NODES[@]}"; do
    install -d -o root -g root -m 0755 "/var/lib/slurm/slurmd/$node"
done
HOST=$(hostname -s)
cat >"$CONF" <<EOF
$MARK
ClusterName=beampipe-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd/%n
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=10
NodeName=node[1-2] NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=4 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP
EOF

# -- daemons ---------------------------------------------------------------------------------------
running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$RUN/slurmctld.pid" || /usr/sbin/slurmctld -c # -c: forget jobs of an earlier run
wait_for "$WAIT" "slurmctld answering sinfo" answers
for node in "${NODES[@]}"; do
    running "$RUN/slurmd-$node.pid" || /usr/sbin/slurmd -N "$node"
done
wait_for "$WAIT" "node1 and node2 idle" nodes_idle
echo "slurm-test-cluster: running ($(sinfo --noheader --summarize --format='partition %P, %N'))"
