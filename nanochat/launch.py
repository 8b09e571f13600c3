"""Run a training entry point on every GPU of this machine: torchrun when there are several.

    python -m nanochat.launch nanochat.scripts.base_train --depth=4 ...

On a node with N > 1 CUDA devices this is `torchrun --standalone --nproc_per_node=N -m MODULE ...`;
otherwise (one GPU, CPU, MPS) it is `python -m MODULE ...`. The rule need not know the hardware:
SLURM decides it when the job starts.
"""

import os
import sys

import torch


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    gpus = torch.cuda.device_count()
    cmd = [sys.executable, "-m"]
    if gpus > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m"]
    os.execv(sys.executable, cmd + sys.argv[1:])


if __name__ == "__main__":
    main()
