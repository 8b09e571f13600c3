"""Bits per byte: the tokenizer-independent loss (nats per token depend on the vocabulary)."""

import contextlib
import math
from pathlib import Path

import torch

from nanochat.compute import Compute
from nanochat.dataloader import BestFitLoader, TokenStream, row_groups
from nanochat.tokenizer import Tokenizer


def eval_batches(shard: str | Path, tokenizer: Tokenizer, B: int, T: int, num_tokens: int,
                 rank: int = 0, world_size: int = 1, bestfit: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the first `num_tokens` tokens of `shard`, as (B, T) batches: batch i goes to
    rank i % world_size, so every world size evaluates exactly the same tokens. Cheap to keep and reuse.

    `bestfit` (the 2026 recipe): upstream 92d63d4's validation batches instead, each rank's first
    num_tokens / (B T world_size) best-fit batches (nanochat.dataloader.BestFitLoader) from its own row groups."""
    if bestfit:
        loader = BestFitLoader([shard], tokenizer, B, T, B * T * world_size, rank, world_size)
        return [loader.next_batch() for _ in range(max(1, num_tokens // (B * T * world_size)))]
    stream = TokenStream(row_groups([shard]), tokenizer, 0, 1)
    n = max(world_size, num_tokens // (B * T) // world_size * world_size)
    batches = []
    for i in range(n):
        tokens = torch.tensor(stream.take(B * T), dtype=torch.long)
        if i % world_size == rank:
            batches.append((tokens[:-1].view(B, T), tokens[1:].view(B, T)))
    return batches


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, batches: list, token_bytes: torch.Tensor, compute: Compute,
                 autocast: bool = True) -> float:
    """Summed loss in nats divided by ln 2 x UTF-8 bytes of the targets, over all ranks' batches.
    Targets that are special tokens (0 bytes, e.g. <|bos|>) or ignored (-1) count neither loss nor bytes.
    `autocast`: under compute.autocast() (the course model; a 2026 model casts its weights itself)."""
    token_bytes = token_bytes.to(compute.device)
    total = torch.zeros(2, dtype=torch.float64, device=compute.device)  # nats, bytes
    for x, y in batches:
        x, y = x.to(compute.device), y.to(compute.device)
        with compute.autocast() if autocast else contextlib.nullcontext():
            loss = model(x, y, loss_reduction="none").view(-1)
        y = y.view(-1)
        nbytes = torch.where(y >= 0, token_bytes[y.clamp(min=0)], 0)  # an ignored target (-1) has no bytes
        total[0] += (loss * (nbytes > 0)).sum().double()
        total[1] += nbytes.sum().double()
    nats, nbytes = compute.all_reduce(total).tolist()
    return nats / (math.log(2) * nbytes)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: list, compute: Compute, autocast: bool = True) -> float:
    """Mean loss in nats over every trained target (not -1) of all ranks' batches; `autocast` as evaluate_bpb's."""
    total = torch.zeros(2, dtype=torch.float64, device=compute.device)  # nats, targets
    for x, y in batches:
        x, y = x.to(compute.device), y.to(compute.device)
        with compute.autocast() if autocast else contextlib.nullcontext():
            loss = model(x, y, loss_reduction="none").view(-1)
        total[0] += loss.sum().double()  # ignored targets contribute 0
        total[1] += (y != -1).sum().double()
    nats, count = compute.all_reduce(total).tolist()
    return nats / max(count, 1)
