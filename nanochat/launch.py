"""Run a training entry point on every GPU of this machine, or of every node of a SLURM allocation.

    python -m nanochat.launch nanochat.scripts.base_train --depth=4 ...

On one node with N > 1 CUDA devices this is `torchrun --standalone --nproc_per_node=N -m MODULE ...`;
otherwise (one GPU, CPU, MPS) it is `python -m MODULE ...`. In a SLURM job of several nodes
(a rule with resources `nodes: 2`, `tasks: 2` and `mpi: srun`) it is one torchrun per
node through `srun`, its processes meeting at a c10d rendezvous on this node, the allocation's first (where
the job's script runs), on a port free here, so two jobs sharing a node never take the same one; every node
runs as many processes as this one has GPUs (one without). The rule need not know the hardware: SLURM
decides it when the job starts.
"""

import os
import shutil
import socket
import subprocess
import sys

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def allocation() -> tuple[int, int]:
    """(nodes, CPUs per node) of this SLURM job, (1, 0) outside SLURM. Asked of squeue: Snakemake's SLURM job
    step keeps only the job's id of the SLURM_* environment."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not shutil.which("squeue"):
        return 1, 0
    fields = subprocess.run(["squeue", "-h", "-j", job, "-o", "%D %c"], capture_output=True, text=True).stdout.split()
    return (int(fields[0]), int(fields[1])) if len(fields) == 2 and all(f.isdigit() for f in fields) else (1, 0)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    gpus = torch.cuda.device_count()
    nodes, cpus = allocation()
    if nodes > 1:
        srun = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", f"--cpus-per-task={cpus}",
                *([f"--gres=gpu:{gpus}"] if gpus else [])]
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                    f"--nproc-per-node={max(gpus, 1)}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={socket.gethostname()}:{free_port()}",
                    f"--rdzv-id=slurm-{os.environ['SLURM_JOB_ID']}", "-m"]
        os.execvp("srun", srun + torchrun + sys.argv[1:])
    cmd = [sys.executable, "-m"]
    if gpus > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m"]
    os.execv(sys.executable, cmd + sys.argv[1:])


if __name__ == "__main__":
    main()
