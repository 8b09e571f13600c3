"""Bits per byte: the tokenizer-independent loss (nats per token depend on the vocabulary)."""

import math

import torch

from nanochat.compute import Compute
from nanochat.dataloader import DataLoader


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, loader: DataLoader, steps: int, token_bytes: torch.Tensor,
                 compute: Compute) -> float:
    """Summed loss in nats over `steps` micro-batches per rank, divided by ln 2 x UTF-8 bytes of the
    targets. Targets that are special tokens (0 bytes, e.g. <|bos|>) count neither loss nor bytes."""
    token_bytes = token_bytes.to(compute.device)
    total = torch.zeros(2, dtype=torch.float64, device=compute.device)  # nats, bytes
    for _ in range(steps):
        x, y = loader.next_batch(compute.device)
        with compute.autocast():
            loss = model(x, y, loss_reduction="none").view(-1)
        nbytes = token_bytes[y.view(-1)]
        total[0] += (loss * (nbytes > 0)).sum().double()
        total[1] += nbytes.sum().double()
    nats, nbytes = compute.all_reduce(total).tolist()
    return nats / (math.log(2) * nbytes)
