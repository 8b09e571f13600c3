#!/usr/bin/env bash
# A Ptolemy twin: this machine as a one-node SLURM cluster shaped like a Ptolemy GPU node (partitions
# devel and gpu-a100 with the 12-hour limit, 16 CPUs, 256 GB, gpu:a100:8 backed by placeholder device
# files), so profiles/ptolemy's requests are accepted unchanged. Needs root and Debian's slurm-wlm + munge.
#   tests/slurm/twin.sh start | stop | status
set -euo pipefail
host=$(hostname -s)
conf=/etc/slurm

start() {
    command -v slurmctld >/dev/null || { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged --force
    for i in 0 1 2 3 4 5 6 7; do touch "/dev/fakegpu$i"; done
    mkdir -p "$conf" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    cat > "$conf/slurm.conf" <<CONF
ClusterName=ptolemy-twin
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
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
NodeName=$host CPUs=16 RealMemory=262144 Gres=gpu:a100:8 State=UNKNOWN
PartitionName=devel Nodes=$host Default=YES MaxTime=12:00:00 State=UP
PartitionName=gpu-a100 Nodes=$host MaxTime=12:00:00 State=UP
CONF
    cat > "$conf/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu Type=a100 File=/dev/fakegpu[0-7]
CONF
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|allocated"; then sinfo; return 0; fi
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "the SLURM twin did not come up:" >&2; sinfo >&2 || true; exit 1
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
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
