#!/usr/bin/env bash
# A Ptolemy twin: this machine as a one-node SLURM cluster shaped like a Ptolemy GPU node (partitions
# devel and gpu-a100 with the 12-hour limit, 16 CPUs, 256 GB, gpu:a100:8 backed by placeholder device
# files), so profiles/ptolemy's requests are accepted unchanged. Needs root and Debian's slurm-wlm + munge.
# `start-two-nodes` makes it two such nodes instead, n1 and n2, each its own slurmd on this machine
# (Debian's `slurmd -N`), for multi-node jobs; `start` switches back. The configuration stays at
# /etc/slurm either way: Snakemake's SLURM job step drops SLURM_CONF from a job's environment.
#   tests/slurm/twin.sh start | start-two-nodes | stop | status
set -euo pipefail
host=$(hostname -s)
conf=/etc/slurm

start() {  # $1: nodes (1, or 2 for n1 and n2)
    local nodes=${1:-1} node_lines daemons
    command -v slurmctld >/dev/null || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged --force
    for i in 0 1 2 3 4 5 6 7; do touch "/dev/fakegpu$i"; done
    if [ "$nodes" = 2 ]; then
        node_lines="NodeName=n1 NodeHostname=$host Port=17001 CPUs=16 RealMemory=262144 Gres=gpu:a100:8 State=UNKNOWN
NodeName=n2 NodeHostname=$host Port=17002 CPUs=16 RealMemory=262144 Gres=gpu:a100:8 State=UNKNOWN"
        names=n1,n2 daemons="n1 n2"
    else
        node_lines="NodeName=$host CPUs=16 RealMemory=262144 Gres=gpu:a100:8 State=UNKNOWN"
        names=$host daemons=""
    fi
    if [ -s "$conf/slurm.conf" ] && ! grep -qF "${node_lines%%$'\n'*}" "$conf/slurm.conf"; then
        stop  # the other shape is running: its daemons and jobs go
        rm -rf /var/spool/slurmctld/*
    fi
    mkdir -p "$conf" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$conf/slurm.conf" <<CONF
ClusterName=ptolemy-twin
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmdPidFile=/run/slurmd-%n.pid
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
GresTypes=gpu
SlurmdParameters=config_overrides
MailProg=/bin/true
# Without accounting, scontrol is the only record of a finished job: keep it an hour (default 5 min).
MinJobAge=3600
$node_lines
PartitionName=devel Nodes=$names Default=YES MaxTime=12:00:00 State=UP
PartitionName=gpu-a100 Nodes=$names MaxTime=12:00:00 State=UP
CONF
    cat > "$conf/gres.conf" <<CONF
AutoDetect=off
NodeName=$names Name=gpu Type=a100 File=/dev/fakegpu[0-7]
CONF
    pgrep -x slurmctld >/dev/null || slurmctld
    if [ -n "$daemons" ]; then
        for node in $daemons; do
            mkdir -p "/var/spool/slurmd/$node"
            running "/run/slurmd-$node.pid" || slurmd -N "$node"
        done
    else
        mkdir -p "/var/spool/slurmd/$host"
        pgrep -x slurmd >/dev/null || slurmd
    fi
    for _ in $(seq 30); do
        if [ "$(sinfo -h -N -p gpu-a100 -o %T 2>/dev/null | grep -cE 'idle|mixed|allocated')" -eq "$nodes" ]; then
            sinfo; return 0
        fi
        scontrol update nodename="$names" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "the SLURM twin did not come up:" >&2; sinfo >&2 || true; exit 1
}

running() {  # a daemon whose pid file names a live process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop() {
    scontrol shutdown >/dev/null 2>&1 || true
    pkill -x slurmd || true
    pkill -x slurmctld || true
    for _ in $(seq 30); do  # a restart right after must not find them still exiting
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0
        sleep 0.5
    done
}

case "${1:-}" in
    start) start 1 ;;
    start-two-nodes) start 2 ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|start-two-nodes|stop|status" >&2; exit 2 ;;
esac
