"""Pretraining batches from parquet shards, tokenized with BOS per document: one loader per recipe.

Course (DataLoader): the token sequence cut into (B, T+1) rows, whatever the document boundaries. The data
one optimizer step sees does not depend on how many processes share it. A step consists
of K = total_batch / (B * T) micro-batches, each drawn from its own *stream*: stream k reads row
groups k, k+K, k+2K, ... of the shards (cycling into a new epoch at the end). Rank r of W owns
streams r*A .. r*A+A-1 (A = K / W micro-steps of gradient accumulation), so one process with
A = K sees exactly the micro-batches that W processes see together.

A stream's position is (row groups finished, tokens consumed from the next one): small, exact
state that a checkpoint stores, so a resumed run continues with exactly the tokens it would
have seen. A rank's state is its streams' positions by stream number; a checkpoint keeps those of
all ranks, so a run stopped on W processes resumes on any other number, each rank taking its own.

2026 (BestFitLoader): upstream 92d63d4's BOS-aligned best-fit rows; see the class.
"""

import bisect
import itertools
from collections import deque
from collections.abc import Iterator
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


Position = tuple[int, int, int, int]  # epoch (from 1), shard, row group, document within the row group


def document_batches(shards: list[str | Path], rank: int, world_size: int, start: Position,
                     batch_size: int) -> Iterator[tuple[list[str], Position]]:
    """Upstream's document order for rank r of W: row groups r, r+W, r+2W, ... of each shard in turn, forever,
    `batch_size` documents at a time; each batch with the position of the one after it."""
    epoch, shard, rg, doc = start
    while True:
        while shard < len(shards):
            while rg < row_group_count(shards[shard]):
                texts = read_texts(shards[shard], rg)
                for i in range(doc, len(texts), batch_size):
                    yield texts[i:i + batch_size], (epoch, shard, rg, i + batch_size)
                rg, doc = rg + world_size, 0
            shard, rg = shard + 1, rank
        epoch, shard = epoch + 1, 0


class BestFitLoader:
    """Micro-batches (inputs, targets) of shape (B, T) for one rank: upstream 92d63d4's BOS-aligned best-fit
    rows (its tokenizing_distributed_data_loader_with_state_bos_bestfit), token for token.

    Every row starts at a document's BOS. From a buffer of at least `buffer_size` tokenized documents, a row
    takes the largest document that fits in what is left of it, again and again; when none fits, the shortest
    one is cropped to fill the row exactly (its rest is dropped). No padding; every token can see its
    document's start. Each rank reads its own row groups (document_batches), so the batches depend on the
    number of processes, as upstream's.

    The state is exact: the position in the shards and the documents in the buffer. A resumed loader continues
    with exactly the batches this one would have given; it must run on as many processes as the one saved.
    """

    def __init__(self, shards: list[str | Path], tokenizer: Tokenizer, B: int, T: int, total_batch: int,
                 rank: int = 0, world_size: int = 1, state: dict | None = None, buffer_size: int = 1000,
                 tokenizer_batch_size: int = 128):
        accum, rem = divmod(total_batch, B * T * world_size)
        if rem or not accum:
            raise SystemExit(f"error: total batch {total_batch} tokens must be a multiple of "
                             f"B*T*world = {B}*{T}*{world_size}")
        if all(row_group_count(shard) <= rank for shard in shards):  # it would search for documents forever
            raise SystemExit(f"error: process {rank} of {world_size} has no row group to read: each reads row "
                             f"groups {rank}, {rank}+{world_size}, ... of every shard. Use more row groups.")
        self.B, self.T, self.accum = B, T, accum
        self.tokenizer, self.world_size, self.buffer_size = tokenizer, world_size, buffer_size
        self.key = f"bestfit rank {rank}"
        saved = self._saved(state) if state else {"position": (1, 0, rank, 0), "tokens": [], "lengths": []}
        self.position: Position = tuple(saved["position"])
        self.batches = document_batches(shards, rank, world_size, self.position, tokenizer_batch_size)
        # The buffer, sorted by (length, arrival): the largest document that fits, the first to arrive among
        # equal lengths, is the one upstream's linear search picks; so is the shortest one for cropping.
        self.order: list[tuple[int, int]] = []
        self.docs: dict[int, list[int]] = {}  # by arrival, in arrival order
        self.arrivals = itertools.count()
        tokens = iter(saved["tokens"])
        for length in saved["lengths"]:
            self._add(list(itertools.islice(tokens, length)))

    def _saved(self, state: dict) -> dict:
        """This rank's part of a checkpoint's loader state, or an error if it is not a best-fit state of this
        many processes."""
        parts = [part for key, part in state.items() if isinstance(key, str) and key.startswith("bestfit rank ")]
        if not parts:
            raise SystemExit("error: the step checkpoint's data loader state is not the 2026 recipe's best-fit "
                             "loader's; resume it with the recipe that wrote it")
        if parts[0]["world_size"] != self.world_size or self.key not in state:
            raise SystemExit(f"error: the step checkpoint was written by {parts[0]['world_size']} processes; the "
                             f"2026 recipe's best-fit batches depend on the number of processes (each reads its own "
                             f"row groups, as upstream's), so resume it on {parts[0]['world_size']}, not "
                             f"{self.world_size}")
        return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in state[self.key].items()}

    def _add(self, doc: list[int]) -> None:
        arrival = next(self.arrivals)
        bisect.insort(self.order, (len(doc), arrival))
        self.docs[arrival] = doc

    def _pop(self, index: int) -> list[int]:
        return self.docs.pop(self.order.pop(index)[1])

    def _refill(self) -> None:
        texts, self.position = next(self.batches)
        for doc in self.tokenizer.encode_batch(texts, prepend_bos=True):
            self._add(doc)

    def _row(self) -> list[int]:
        row: list[int] = []
        while len(row) < self.T + 1:
            while len(self.order) < self.buffer_size:
                self._refill()
            room = self.T + 1 - len(row)
            fits = bisect.bisect_right(self.order, (room, float("inf")))
            if fits:  # the largest length that fits, and its first arrival
                row += self._pop(bisect.bisect_left(self.order, (self.order[fits - 1][0], -1)))
            else:
                row += self._pop(0)[:room]
        return row

    def next_batch(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self._row() for _ in range(self.B)], dtype=torch.long)
        x, y = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # the model and the loss view them flat
        non_blocking = torch.device(device).type == "cuda"
        return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def state_dict(self) -> dict[str, dict]:
        """This rank's position and buffered documents (in arrival order), under a key of its own; tensors and
        plain types only, as a step checkpoint stores them."""
        docs = list(self.docs.values())
        return {self.key: {"world_size": self.world_size, "position": list(self.position),
                           "lengths": torch.tensor([len(doc) for doc in docs], dtype=torch.long),
                           "tokens": torch.tensor([t for doc in docs for t in doc], dtype=torch.int32)}}
