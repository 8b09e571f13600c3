"""Devices and distributed training: pick the device, join the process group under torchrun."""

import contextlib
import dataclasses
import os
import re
from typing import Any

import torch
import torch.distributed as dist

from nanochat.common import cpu_model

# Peak dense bf16 FLOP/s per device, for MFU. Devices not listed get no MFU figure.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12}


# oneDNN's instruction sets (ONEDNN_MAX_CPU_ISA, the limit an administrator or a benchmark sets) from which bf16
# matmuls run on AMX tiles, and from which on AVX-512's bf16 dot products (vdpbf16ps); below both, oneDNN converts
# bf16 to fp32 in software: 34 GFLOP/s against fp32's 290 on an AVX2-only path (measured, 2-core Xeon).
AMX_ISAS = {"AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512_AMX_2",
            "ALL", "DEFAULT"}
BF16_ISAS = AMX_ISAS | {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX10_2_512"}

# Which CPU matmul classes (cpu_bf16) compute each path in bf16; fp32 elsewhere. Chosen by measurement:
# `python bench/cpu_precision.py` times every path both ways (docs/explanation/cpu-precision.md has the figures
# and the CPU each comes from). On CUDA every path computes in bf16, as upstream.
BF16_PATHS = {
    "train": {"amx", "avx512_bf16"},  # forward and backward (and its validation loss): bf16 matmuls ~2x fp32's
    "newton_schulz": {"amx", "avx512_bf16"},  # Muon's orthogonalization, in bf16 as upstream's everywhere
    "score": set(),  # CORE and categorical evals in fp32, as upstream on a CPU: its outcomes item by item
    "decode": set(),  # token by token: matrix-vector products, where casts cost more than bf16 saves
}


def onednn_limit() -> str:
    """oneDNN's instruction-set limit (ONEDNN_MAX_CPU_ISA), "ALL" when none is set."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()


def cpu_bf16(limit: str | None = None) -> str:
    """How this CPU multiplies bf16 matrices: "amx" (AMX tiles: Xeons from Sapphire Rapids), "avx512_bf16"
    (AVX-512 bf16 dot products: AMD Zen 4 and 5, Intel Cooper Lake), or "emulated" (converted in software:
    AVX2-only CPUs, older AVX-512, ARM), under oneDNN's limit (`limit`, else the one set, if any)."""
    limit = (limit or onednn_limit()).upper()
    if torch.cpu._is_amx_tile_supported() and limit in AMX_ISAS:
        return "amx"
    if torch.cpu._is_avx512_bf16_supported() and limit in BF16_ISAS:
        return "avx512_bf16"
    return "emulated"


def bf16_on_cpu(path: str) -> bool:
    """Whether `path` (a key of BF16_PATHS) computes in bf16 on this CPU."""
    return cpu_bf16() in BF16_PATHS[path]


def cpu_description() -> str:
    """The CPU and the software that decide its speed, for benchmark tables: model and instruction sets, cores,
    how bf16 matmuls run (and oneDNN's limit where set), torch, oneDNN and MKL versions."""
    limit = "" if onednn_limit() in ("ALL", "DEFAULT") else f", oneDNN limited to {onednn_limit()}"
    config = torch.__config__.show()
    onednn = re.search(r"MKL-DNN v([\d.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    return (f"{cpu_model()}; {os.cpu_count()} cores; bf16 matmuls: {cpu_bf16()}{limit}; torch {torch.__version__}"
            + (f", oneDNN {onednn[1]}" if onednn else "") + (f", MKL {mkl[1]}" if mkl else ""))


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

    def autocast(self, path: str = "train", model: torch.nn.Module | None = None):
        """bf16 autocast for `path` (a key of BF16_PATHS: "train", "score", "decode") on CUDA, and on CPUs
        where BF16_PATHS says so; fp32 elsewhere and on MPS. None for a 2026-recipe `model`: it computes in
        its embeddings' dtype (bf16 on CUDA), as upstream."""
        if model is not None and model.config.recipe == "2026":
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.amp.autocast("cuda", dtype=torch.bfloat16)
        if self.device.type == "cpu" and bf16_on_cpu(path):
            return torch.amp.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def precision(self, path: str, model: torch.nn.Module) -> str:
        """What `path` computes `model`'s matmuls in here, for the log: "bf16" or "fp32", and on a CPU how it
        multiplies bf16 (cpu_bf16), so that a run says whether this CPU took the bf16 path."""
        if model.config.recipe == "2026":
            dtype = "bf16" if model.transformer.wte.weight.dtype == torch.bfloat16 else "fp32"
        else:
            dtype = "bf16" if isinstance(self.autocast(path), torch.amp.autocast) else "fp32"
        return f"{dtype} (bf16 matmuls on this CPU: {cpu_bf16()})" if self.device.type == "cpu" else dtype

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
