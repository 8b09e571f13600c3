"""Conversations for midtraining and SFT: the mixtures and the batch loaders.

Course mixtures (upstream 48abd7d) end with generated spelling conversations (nanochat.tasks.spellingbee):
  simple_spelling  "Spell the word: ..." answered letter by letter
  spelling_bee     "How many r are in ...?" answered with a python tool call and its output
Offline mixture (real data that installed packages ship): chatterbot's 2,026 hand-written English
dialogs (nanochat.tasks.chatterbot) + spelling over the offline corpus's words.
Hub mixtures (upstream's composition, on the cluster), from what the `download` target fetches
(nanochat.catalog), spelling over dwyl's words_alpha.txt; the d20 defaults give upstream's rows:
  mid  SmolTalk (all) + MMLU auxiliary_train + GSM8K train + identity conversations (twice)
       + SimpleSpelling 200K + SpellingBee 80K
  sft  ARC-Easy and ARC-Challenge train + GSM8K train + SmolTalk (10K) + identity
       + SimpleSpelling 300 + SpellingBee 300
Every 20th conversation (after a fixed shuffle) is held out for validation.

The 2026 recipe's SFT mixture (upstream 92d63d4, `sft_mixture_2026`): SmolTalk train + MMLU auxiliary_train
x3 + GSM8K train x4, validated on SmolTalk test + the first 5,200 MMLU test and 420 GSM8K test questions;
no identity or spelling conversations. Offline: chatterbot's dialogs alone, every 20th held out.

Loaders: ChatLoader packs conversations into one stream (midtraining) or puts one per row (course SFT);
BestFitPadLoader packs whole conversations into rows best-fit, padding the rest (2026 SFT).
"""

import bisect
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from nanochat import layout
from nanochat.catalog import MIXTURES
from nanochat.tasks import arc, chatterbot, gsm8k, identity, mmlu, smoltalk, spellingbee
from nanochat.tokenizer import Tokenizer

# Catalog entry -> its conversations; each entry is downloaded into <hub_dir>/<name>/.
HUB_SOURCES = {"smoltalk": smoltalk.conversations, "mmlu_aux": mmlu.conversations,
               "gsm8k_train": gsm8k.conversations, "arc_easy_train": arc.conversations,
               "arc_challenge_train": arc.conversations, "smoltalk_test": smoltalk.conversations,
               "mmlu_test": mmlu.conversations, "gsm8k_test": gsm8k.conversations}
IDENTITY_REPEATS = {"mid_train": 2, "chat_sft": 1}  # as upstream: the model's name and maker, seen twice in midtraining
# Upstream 92d63d4's SFT mixture: these train splits (SmolTalk once, MMLU and GSM8K for their epochs) and for
# validation these test splits, MMLU's and GSM8K's cut to the training mixture's proportions.
TRAIN_2026 = ("smoltalk", "mmlu_aux", "gsm8k_train")
VAL_ROWS_2026 = {"smoltalk_test": None, "mmlu_test": 5200, "gsm8k_test": 420}
ENTRIES_2026 = [*TRAIN_2026, *VAL_ROWS_2026]  # what it reads (catalog MIXTURES["chat_sft_2026"])
RENDER_LIMIT = 2048  # upstream 92d63d4's SFT cuts each conversation at the tokenizer's default, 2048 tokens


def held_out(conversations: list, seed: int = 42) -> tuple[list, list]:
    """(train, validation): a fixed shuffle, every 20th conversation held out."""
    conversations = list(conversations)
    random.Random(seed).shuffle(conversations)
    return [c for i, c in enumerate(conversations) if i % 20], conversations[::20]


def mixture(stage: str, source: str, smoltalk_rows: int, simple_spelling_rows: int, spelling_bee_rows: int,
            hub_dir: Path | None, seed: int = 42) -> tuple[list, list, dict[str, int]]:
    """(train, validation, rows per source) of the stage's course mixture from `source` (offline or hub)."""
    if source == "offline":
        sources = {"chatterbot": chatterbot.conversations()}
        words = spellingbee.corpus_words()
    else:
        sources = {name: HUB_SOURCES[name](Path(hub_dir) / name) for name in MIXTURES[stage]}
        identity_file = Path(hub_dir) / layout.IDENTITY_FILE
        sources["identity"] = identity.conversations(identity_file) * IDENTITY_REPEATS[stage]
        if smoltalk_rows > 0:
            sources["smoltalk"] = random.Random(seed).sample(sources["smoltalk"],
                                                             min(smoltalk_rows, len(sources["smoltalk"])))
        words = spellingbee.read_word_list(Path(hub_dir) / layout.WORDS_FILE)
    words = spellingbee.training_words(words)
    sources["simple_spelling"] = spellingbee.simple_spelling(simple_spelling_rows, words)
    sources["spelling_bee"] = spellingbee.spelling_bee(spelling_bee_rows, words)
    train, val = held_out([c for rows in sources.values() for c in rows], seed)
    return train, val, {name: len(rows) for name, rows in sources.items()}


def dataset_order(rows: list, seed: int = 42) -> list:
    """The rows in the order upstream 92d63d4's tasks read a split: Hugging Face datasets' shuffle(seed=42)."""
    return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]


def task_mixture(tasks: list[list]) -> list:
    """Upstream's TaskMixture: every task's conversations (a task listed twice is seen twice), in one fixed
    random order over all of them."""
    conversations = [c for task in tasks for c in task]
    random.Random(42).shuffle(conversations)
    return conversations


def sft_mixture_2026(source: str, mmlu_epochs: int, gsm8k_epochs: int,
                     hub_dir: Path | None) -> tuple[list, list, dict[str, int]]:
    """(train, validation, rows per source) of upstream 92d63d4's SFT mixture from `source` (offline or hub)."""
    if source == "offline":
        conversations = chatterbot.conversations()
        train, val = held_out(conversations)
        return train, val, {"chatterbot": len(conversations)}
    read = {name: dataset_order(HUB_SOURCES[name](Path(hub_dir) / name)) for name in ENTRIES_2026}
    epochs = dict(zip(TRAIN_2026, (1, mmlu_epochs, gsm8k_epochs)))
    train = task_mixture([read[name] for name, n in epochs.items() for _ in range(n)])
    val_tasks = {name: read[name][:rows] for name, rows in VAL_ROWS_2026.items()}
    val = task_mixture(list(val_tasks.values()))
    composition = {**{name: len(read[name]) * n for name, n in epochs.items()},
                   **{name: len(rows) for name, rows in val_tasks.items()}}
    return train, val, composition


class StepBatches:
    """The order in which processes take micro-batches, the same for any number of processes: global
    micro-batch g of a step goes to rank g // accum. The state is the number of optimizer steps done: the
    same on every rank and for any number of processes, so a run resumes on another number."""

    def __init__(self, B: int, rows_per_step: int, rank: int, world_size: int, state: dict[str, int] | None):
        K, rem = divmod(rows_per_step, B)
        if rem or K % world_size:
            raise SystemExit(f"error: rows_per_step {rows_per_step} must be a multiple of B*world = {B}*{world_size}")
        self.B, self.rank = B, rank
        self.accum, self.K = K // world_size, K
        self.taken = (state or {"steps": 0})["steps"] * self.accum  # micro-batches this rank has taken

    def next_index(self) -> int:
        """The global index of this rank's next micro-batch."""
        step, micro = divmod(self.taken, self.accum)
        self.taken += 1
        return step * self.K + self.rank * self.accum + micro

    def state_dict(self) -> dict[str, int]:
        assert self.taken % self.accum == 0, "save the loader state between optimizer steps"
        return {"steps": self.taken // self.accum}


def on_device(x: torch.Tensor, y: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    non_blocking = torch.device(device).type == "cuda"
    return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)


class ChatLoader(StepBatches):
    """Micro-batches (inputs, targets) of rendered conversations, in a fixed order (StepBatches).

    pack=True (midtraining): conversations concatenated into one token stream cut into rows of T+1,
    every token trained. pack=False (SFT): one conversation per row, padded, targets -1 wherever the
    mask is 0 (and on padding).
    """

    def __init__(self, tokenizer: Tokenizer, conversations: list, B: int, T: int, rows_per_step: int, pack: bool,
                 rank: int = 0, world_size: int = 1, state: dict[str, int] | None = None):
        super().__init__(B, rows_per_step, rank, world_size, state)
        self.T, self.pack = T, pack
        rendered = [tokenizer.render_conversation(c, T + 1) for c in conversations]
        self.rows = [(np.array(ids), np.array(mask)) for ids, mask in rendered]
        self.stream = np.concatenate([ids for ids, _ in self.rows]) if pack else None
        self.pad = tokenizer.special_id("<|assistant_end|>")

    def next_batch(self, device="cpu"):
        """(inputs, targets), each a (B, T) tensor on `device`."""
        g = self.next_index()
        B, T = self.B, self.T
        if self.pack:
            idx = (g * B * T + np.arange(B * T + 1)) % len(self.stream)
            tokens = torch.from_numpy(self.stream[idx].astype(np.int64))
            x, y = tokens[:-1].view(B, T), tokens[1:].view(B, T)
        else:
            rows = [self.rows[(g * B + i) % len(self.rows)] for i in range(B)]
            width = max(len(ids) for ids, _ in rows) - 1
            x = torch.full((B, width), self.pad, dtype=torch.long)
            y = torch.full((B, width), -1, dtype=torch.long)
            for i, (ids, mask) in enumerate(rows):
                n = len(ids) - 1
                x[i, :n] = torch.from_numpy(ids[:-1])
                y[i, :n] = torch.from_numpy(np.where(mask[1:] == 1, ids[1:], -1))
        return on_device(x, y, device)

    def epoch_steps(self) -> int:
        """Optimizer steps for one pass over the data."""
        rows = len(self.stream) // self.T if self.pack else len(self.rows)
        return max(1, rows // (self.K * self.B))


def best_fit_rows(lengths: Sequence[int], capacity: int, buffer_size: int = 100) -> Iterator[tuple[list[int], int]]:
    """Upstream 92d63d4's SFT packing, row after row: (the row's conversations, as positions in the endless
    repetition of the list whose `lengths` are given; conversations packed so far, this row's included).

    A row takes, while it can, the longest conversation of the next `buffer_size` not yet packed that fits
    in what is left of its `capacity` tokens (of equal ones, the one waiting longest); when none fits, the
    rest of the row is padding. No conversation is cut or dropped.
    """
    waiting: list[tuple[int, int]] = []  # (length, position), kept sorted: a bisection finds the best fit
    upcoming = packed = 0
    while True:
        row, used = [], 0
        while used < capacity:
            while len(waiting) < buffer_size:
                bisect.insort(waiting, (lengths[upcoming % len(lengths)], upcoming))
                upcoming += 1
            fits = bisect.bisect_right(waiting, (capacity - used, math.inf)) - 1
            if fits < 0:
                break
            length = waiting[fits][0]
            _, position = waiting.pop(bisect.bisect_left(waiting, (length, -1)))
            row.append(position)
            used += length
            packed += 1
        yield row, packed


class BestFitPadLoader(StepBatches):
    """Upstream 92d63d4's SFT micro-batches (its sft_data_generator_bos_bestfit at world size 1, token for
    token): rows of T+1 tokens, each starting at a conversation's <|bos|>, packed by `best_fit_rows` and
    padded with <|bos|>; targets -1 wherever the mask is 0 (padding included). One sequence of rows for any
    number of processes, taken in the order of StepBatches.

    A pass over the mixture ends as upstream's: at the step during which a fetched micro-batch (upstream
    fetches one ahead) completes the mixture; `progress(step)`, upstream's learning-rate clock, is the
    fraction of the mixture packed once that step has fetched its micro-batches.
    """

    def __init__(self, tokenizer: Tokenizer, conversations: list, B: int, T: int, rows_per_step: int,
                 rank: int = 0, world_size: int = 1, state: dict[str, int] | None = None):
        super().__init__(B, rows_per_step, rank, world_size, state)
        self.T, self.bos = T, tokenizer.bos_id
        rendered = [tokenizer.render_conversation(c, min(T + 1, RENDER_LIMIT)) for c in conversations]
        lengths = [len(ids) for ids, _ in rendered]
        self.starts = np.cumsum([0, *lengths])
        self.ids = np.concatenate([np.asarray(ids, np.int32) for ids, _ in rendered])  # 5 bytes a token in all
        self.mask = np.concatenate([np.asarray(mask, np.int8) for _, mask in rendered])
        self.plan = best_fit_rows(lengths, T + 1)
        self.rows: list[list[int]] = []  # the rows planned so far: their conversations' positions
        self.packed: list[int] = []  # conversations packed once each of those rows is

    def _packed_after(self, batches: int) -> int:
        """Conversations packed once the first `batches` micro-batches are."""
        while len(self.rows) < batches * self.B:
            row, packed = next(self.plan)
            self.rows.append(row)
            self.packed.append(packed)
        return self.packed[batches * self.B - 1]

    def epoch_steps(self) -> int:
        """Optimizer steps of one pass over the mixture (at least one)."""
        batches = 1
        while self._packed_after(batches) < len(self.starts) - 1:
            batches += 1
        # upstream fetches micro-batch b during step (b - 2) // K (the first before any) and stops after it
        return max(1, (batches - 2) // self.K + 1)

    def progress(self, step: int) -> float:
        """The fraction of the mixture packed once optimizer step `step` (from 0) has fetched the micro-batch
        after its own, as upstream 92d63d4 sets that step's learning rate."""
        return self._packed_after((step + 1) * self.K + 1) / (len(self.starts) - 1)

    def next_batch(self, device="cpu"):
        """(inputs, targets), each a (B, T) tensor on `device`."""
        g = self.next_index()
        self._packed_after(g + 1)
        row_ids = np.full((self.B, self.T + 1), self.bos, dtype=np.int64)
        row_mask = np.zeros((self.B, self.T + 1), dtype=np.int8)
        n = len(self.starts) - 1
        for i, row in enumerate(self.rows[g * self.B:(g + 1) * self.B]):
            pieces = [slice(self.starts[p % n], self.starts[p % n + 1]) for p in row]
            used = sum(s.stop - s.start for s in pieces)
            row_ids[i, :used] = np.concatenate([self.ids[s] for s in pieces])
            row_mask[i, :used] = np.concatenate([self.mask[s] for s in pieces])
        x = torch.from_numpy(row_ids[:, :-1].copy())
        y = torch.from_numpy(np.where(row_mask[:, 1:] == 1, row_ids[:, 1:], -1))
        return on_device(x, y, device)
