"""Pretraining batches from parquet shards: tokenized with BOS per document, cut into (B, T+1) rows.

The data one optimizer step sees does not depend on how many processes share it. A step consists
of K = total_batch / (B * T) micro-batches, each drawn from its own *stream*: stream k reads row
groups k, k+K, k+2K, ... of the shards (cycling into a new epoch at the end). Rank r of W owns
streams r*A .. r*A+A-1 (A = K / W micro-steps of gradient accumulation), so one process with
A = K sees exactly the micro-batches that W processes see together.

A stream's position is (row groups finished, tokens consumed from the next one): small, exact
state that a checkpoint stores, so a resumed run continues with exactly the tokens it would
have seen. A rank's state is its streams' positions by stream number; a checkpoint keeps those of
all ranks, so a run stopped on W processes resumes on any other number, each rank taking its own.
"""

from collections import deque
from pathlib import Path

import torch

from nanochat.dataset import read_texts, row_group_count
from nanochat.tokenizer import Tokenizer


def row_groups(shards: list[str | Path]) -> list[tuple[str, int]]:
    return [(str(path), rg) for path in shards for rg in range(row_group_count(path))]


class TokenStream:
    """Row groups k, k+K, k+2K, ... as one endless token sequence, consumed from the front."""

    def __init__(self, groups: list[tuple[str, int]], tokenizer: Tokenizer, k: int, K: int,
                 state: tuple[int, int] = (0, 0)):
        self.groups, self.tokenizer, self.k, self.K = groups, tokenizer, k, K
        self.done, self.offset = state  # row groups finished; tokens consumed of the next one
        self.buffer: list[int] = []  # tokens from the current position on
        self.lengths: deque[int] = deque()  # token count of each row group with tokens in the buffer
        self.loaded = self.done  # next row group (counted along this stream) to tokenize
        self._fill(self.offset + 1)
        del self.buffer[:self.offset]

    def _fill(self, n: int) -> None:
        while len(self.buffer) < n:
            path, rg = self.groups[(self.k + self.loaded * self.K) % len(self.groups)]
            texts = read_texts(path, rg)
            tokens = [t for ids in self.tokenizer.encode_batch(texts, prepend_bos=True) for t in ids]
            self.buffer.extend(tokens)
            self.lengths.append(len(tokens))
            self.loaded += 1

    def take(self, n: int) -> list[int]:
        """The next n tokens plus one (the last target), advancing by n."""
        self._fill(n + 1)
        out = self.buffer[:n + 1]
        del self.buffer[:n]
        self.offset += n
        while self.offset >= self.lengths[0]:
            self.offset -= self.lengths.popleft()
            self.done += 1
        return out

    def state(self) -> tuple[int, int]:
        return self.done, self.offset


class DataLoader:
    """Micro-batches (inputs, targets) of shape (B, T) for one rank, in gradient-accumulation order."""

    def __init__(self, shards: list[str | Path], tokenizer: Tokenizer, B: int, T: int, total_batch: int,
                 rank: int = 0, world_size: int = 1, state: dict[int, tuple[int, int]] | None = None):
        K, rem = divmod(total_batch, B * T)
        if rem or K % world_size:
            raise SystemExit(f"error: total batch {total_batch} tokens must be a multiple of "
                             f"B*T*world = {B}*{T}*{world_size}")
        self.B, self.T = B, T
        self.accum = K // world_size
        groups = row_groups(shards)
        if len(groups) < K:
            raise SystemExit(f"error: {K} streams (total batch / (B*T)) need at least {K} row groups, the shards have "
                             f"{len(groups)}: some tokens would repeat within a step. Use more or smaller shards.")
        first = rank * self.accum
        self.streams = [TokenStream(groups, tokenizer, k, K, tuple(state[k]) if state else (0, 0))
                        for k in range(first, first + self.accum)]
        self.micro = 0  # which stream the next micro-batch comes from

    def next_batch(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.tensor(self.streams[self.micro].take(self.B * self.T), dtype=torch.long)
        self.micro = (self.micro + 1) % self.accum
        x, y = tokens[:-1].view(self.B, self.T), tokens[1:].view(self.B, self.T)
        non_blocking = torch.device(device).type == "cuda"
        return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def state_dict(self) -> dict[int, tuple[int, int]]:
        """Positions of this rank's streams, by stream number; only valid between optimizer steps."""
        assert self.micro == 0, "save the loader state between optimizer steps"
        return {s.k: s.state() for s in self.streams}
