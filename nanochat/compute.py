"""Devices and distributed training: pick the device, join the process group under torchrun."""

import contextlib
import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist

# Peak dense bf16 FLOP/s per device, for MFU. Devices not listed get no MFU figure.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12}


# oneDNN's instruction sets (ONEDNN_MAX_CPU_ISA, the limit an administrator or a benchmark sets) that include
# the AMX tiles; below them bf16 matmuls run without AMX: 34 GFLOP/s against fp32's 290 with AVX2 only (measured).
AMX_ISAS = {"AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2",
            "ALL", "DEFAULT"}


def cpu_has_amx() -> bool:
    """Whether bf16 matmuls get AMX tiles here: the CPU has them and oneDNN may use them."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    return torch.cpu._is_amx_tile_supported() and limit.upper() in AMX_ISAS


@dataclasses.dataclass
class Compute:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self, decode: bool = False, model: torch.nn.Module | None = None):
        """bf16 autocast on CUDA, and on CPUs with AMX tiles (about 2x faster matmuls there);
        fp32 on other CPUs, where bf16 is emulated and slow, and on MPS. `decode`: token-by-token
        generation, whose matmuls are too small on a CPU for the bf16 casts to pay (fp32 is 1.8x faster).
        None for a 2026-recipe `model`: it computes in its embeddings' dtype (bf16 on CUDA), as upstream."""
        if model is not None and model.config.recipe == "2026":
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.amp.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and cpu_has_amx() and not decode:
            return torch.amp.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def peak_flops(self) -> float | None:
        if self.device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)

    def all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=op)
        return t

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order, on every rank (pickled: for small state, not weights)."""
        if not self.distributed:
            return [obj]
        objs = [None] * self.world_size
        dist.all_gather_object(objs, obj)
        return objs

    def gather_to_master(self, obj: Any) -> list[Any] | None:
        """`obj` of every rank, in rank order, on rank 0 only (None elsewhere); pickled, sent once each."""
        if not self.distributed:
            return [obj]
        objs = [None] * self.world_size if self.is_master else None
        dist.gather_object(obj, objs, dst=0)
        return objs

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_compute(device: str = "") -> Compute:
    """The best device unless one is named; joins the process group when started by torchrun."""
    if not device:
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if "RANK" not in os.environ:
        return Compute(torch.device(device))
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        return Compute(torch.device("cuda", local_rank), rank, local_rank, world)
    dist.init_process_group("gloo")
    return Compute(torch.device(device), rank, local_rank, world)


def shutdown(compute: Compute) -> None:
    if compute.distributed:
        dist.destroy_process_group()
