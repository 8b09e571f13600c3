"""Conversations for midtraining and SFT: the mixtures and the batch loader.

Both mixtures end with generated spelling conversations (nanochat.tasks.spellingbee), as upstream's:
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
"""

import random
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
               "arc_challenge_train": arc.conversations}
IDENTITY_REPEATS = {"mid_train": 2, "chat_sft": 1}  # as upstream: the model's name and maker, seen twice in midtraining


def mixture(stage: str, source: str, smoltalk_rows: int, simple_spelling_rows: int, spelling_bee_rows: int,
            hub_dir: Path | None, seed: int = 42) -> tuple[list, list, dict[str, int]]:
    """(train, validation, rows per source) of the stage's mixture from `source` (offline or hub)."""
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
    conversations = [c for rows in sources.values() for c in rows]
    random.Random(seed).shuffle(conversations)
    val = conversations[::20]
    train = [c for i, c in enumerate(conversations) if i % 20]
    return train, val, {name: len(rows) for name, rows in sources.items()}


class ChatLoader:
    """Micro-batches (inputs, targets) of rendered conversations, in a fixed order that is the same for any
    number of processes: global micro-batch g of a step goes to rank g // accum.

    pack=True (midtraining): conversations concatenated into one token stream cut into rows of T+1,
    every token trained. pack=False (SFT): one conversation per row, padded, targets -1 wherever the
    mask is 0 (and on padding). The state is the number of optimizer steps done: the same on every rank
    and for any number of processes, so a run resumes on another number.
    """

    def __init__(self, tokenizer: Tokenizer, conversations: list, B: int, T: int, rows_per_step: int, pack: bool,
                 rank: int = 0, world_size: int = 1, state: dict[str, int] | None = None):
        K, rem = divmod(rows_per_step, B)
        if rem or K % world_size:
            raise SystemExit(f"error: rows_per_step {rows_per_step} must be a multiple of B*world = {B}*{world_size}")
        self.B, self.T, self.pack, self.rank = B, T, pack, rank
        self.accum, self.K = K // world_size, K
        rendered = [tokenizer.render_conversation(c, T + 1) for c in conversations]
        self.rows = [(np.array(ids), np.array(mask)) for ids, mask in rendered]
        self.stream = np.concatenate([ids for ids, _ in self.rows]) if pack else None
        self.pad = tokenizer.special_id("<|assistant_end|>")
        self.taken = (state or {"steps": 0})["steps"] * self.accum  # micro-batches this rank has taken

    def next_batch(self, device="cpu"):
        """(inputs, targets), each a (B, T) tensor on `device`."""
        step, micro = divmod(self.taken, self.accum)
        g = step * self.K + self.rank * self.accum + micro  # global micro-batch index
        self.taken += 1
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
        non_blocking = torch.device(device).type == "cuda"
        return x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)

    def state_dict(self) -> dict[str, int]:
        assert self.taken % self.accum == 0, "save the loader state between optimizer steps"
        return {"steps": self.taken // self.accum}

    def epoch_steps(self) -> int:
        """Optimizer steps for one pass over the data."""
        rows = len(self.stream) // self.T if self.pack else len(self.rows)
        return max(1, rows // (self.K * self.B))
