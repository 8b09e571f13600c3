"""Conversations for midtraining and SFT: the mixtures and the batch loader.

Offline mixture (real data that installed packages ship, plus generated spelling tasks):
  chatterbot    2,026 hand-written English dialogs (`chatterbot-corpus` package)
  spelling      "Spell the word: ..." answered letter by letter, and "How many r are in ...?" answered
                with a python tool call and its output (words of the offline corpus)
Hub mixtures (upstream's, on the cluster), from what the `download` target fetches:
  mid  SmolTalk + MMLU auxiliary_train + GSM8K train + identity conversations (twice) + spelling
  sft  ARC-Easy and ARC-Challenge train + GSM8K train + SmolTalk (smoltalk_rows of it) + identity + spelling
GSM8K's calculator annotations <<expr=value>> become python tool calls and their output.
Spelling words exclude those of the SpellingBee evaluation, so the evaluation stays unseen.
Every 20th conversation (after a fixed shuffle) is held out for validation.
"""

import dataclasses
import importlib.util
import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from nanochat.tokenizer import Tokenizer


def chatterbot_conversations() -> list[list[dict]]:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None:
        raise SystemExit("error: the offline chat mixture needs the `chatterbot-corpus` package")
    conversations = []
    for path in sorted(Path(spec.submodule_search_locations[0], "data", "english").glob("*.yml")):
        for dialog in yaml.safe_load(path.read_text())["conversations"]:
            turns = [str(t) for t in dialog][: len(dialog) // 2 * 2]  # end on the assistant's turn
            conversations.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                                  for i, t in enumerate(turns)])
    return [c for c in conversations if c]


def _training_words() -> list[str]:
    from nanochat.dataset import offline_documents
    from nanochat.tasks import load_task

    held_out = {item["word"] for item in load_task("spellingbee", "offline")}
    return sorted({w for doc in offline_documents() for w in re.findall(r"[a-z]{3,}", doc.lower())} - held_out)


def spelling_conversations(n: int, seed: int = 7) -> list[list[dict]]:
    words, rng = _training_words(), random.Random(seed)
    conversations = []
    for i in range(n):
        word = rng.choice(words)
        if i % 2 == 0:
            conversations.append([{"role": "user", "content": f"Spell the word: {word}"},
                                  {"role": "assistant", "content": f"{word}:{','.join(word)}"}])
            continue
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        count = word.count(letter)
        conversations.append([
            {"role": "user", "content": f"How many {letter} are in the word {word}?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": f"Spelled out, {word} is {','.join(word)}. Let me count with Python."},
                {"type": "python", "text": f"'{word}'.count('{letter}')"},
                {"type": "python_output", "text": str(count)},
                {"type": "text", "text": f"There are {count}"}]}])
    return conversations


# name -> (hub dataset, file patterns): each downloaded into HUB_DIR/snapshots/<name>/ by the workflow.
HUB_CHAT_DATA = {
    "smoltalk": ("HuggingFaceTB/smol-smoltalk", ["*train-*.parquet"]),
    "mmlu_aux": ("cais/mmlu", ["auxiliary_train/*.parquet"]),
    "gsm8k_train": ("openai/gsm8k", ["main/train-*.parquet"]),
    "arc_easy_train": ("allenai/ai2_arc", ["ARC-Easy/train-*.parquet"]),
    "arc_challenge_train": ("allenai/ai2_arc", ["ARC-Challenge/train-*.parquet"]),
}
HUB_MIXTURES = {"mid": ["smoltalk", "mmlu_aux", "gsm8k_train"],
                "sft": ["arc_easy_train", "arc_challenge_train", "gsm8k_train", "smoltalk"]}
IDENTITY_REPEATS = {"mid": 2, "sft": 1}  # as upstream: the model's name and maker, seen twice in midtraining
IDENTITY_FILE = "identity_conversations.jsonl"  # in the hub folder


@dataclasses.dataclass
class ChatDataSettings:
    """Data of the chat stages' hub mixtures that does not come from the hub."""
    identity_url: str = "https://karpathy-public.s3.us-west-2.amazonaws.com/identity_conversations.jsonl"  # conversations that teach the model who it is (JSON lines, one list of messages each)


def _multiple_choice(question: str, choices: list[str], answer: int) -> list[dict]:
    from nanochat.tasks import LETTERS, multiple_choice_prompt

    return [{"role": "user", "content": multiple_choice_prompt({"question": question, "choices": choices})},
            {"role": "assistant", "content": LETTERS[answer]}]


def gsm8k_conversation(question: str, answer: str) -> list[dict]:
    """The worked answer, with each calculator annotation <<expr=value>> as a python call and its output."""
    parts = []
    for i, piece in enumerate(re.split(r"<<([^>]*)>>", answer)):
        if i % 2 == 0:
            parts.append({"type": "text", "text": piece})
        else:
            expr, _, value = piece.rpartition("=")
            parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": value}]
    return [{"role": "user", "content": question}, {"role": "assistant", "content": parts}]


def hub_conversations(name: str, folder: Path) -> list[list[dict]]:
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        raise SystemExit(f"error: missing input: no parquet files in {folder} (run the `download` target)")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    if name == "smoltalk":
        return [row["messages"] for row in rows]
    if name == "mmlu_aux":
        rows = [row.get("train", row) for row in rows]  # auxiliary_train nests each row under "train"
        return [_multiple_choice(r["question"], r["choices"], r["answer"]) for r in rows]
    if name == "gsm8k_train":
        return [gsm8k_conversation(row["question"], row["answer"]) for row in rows]
    return [_multiple_choice(row["question"], row["choices"]["text"], row["choices"]["label"].index(row["answerKey"]))
            for row in rows]


def mixture(stage: str, source: str, spelling_examples: int, smoltalk_rows: int, hub_dir: Path | None,
            seed: int = 42) -> tuple[list, list, dict[str, int]]:
    """(train, validation, rows per source) of the stage's mixture from `source` (offline or hub)."""
    if source == "offline":
        sources = {"chatterbot": chatterbot_conversations()}
    else:
        sources = {name: hub_conversations(name, Path(hub_dir) / "snapshots" / name) for name in HUB_MIXTURES[stage]}
        identity = Path(hub_dir) / IDENTITY_FILE
        if not identity.is_file():
            raise SystemExit(f"error: missing input file: {identity} (run the `download` target)")
        sources["identity"] = [json.loads(line) for line in identity.read_text().splitlines() if line.strip()] \
            * IDENTITY_REPEATS[stage]
        if smoltalk_rows > 0:
            sources["smoltalk"] = random.Random(seed).sample(sources["smoltalk"],
                                                             min(smoltalk_rows, len(sources["smoltalk"])))
    sources["spelling"] = spelling_conversations(spelling_examples)
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
    mask is 0 (and on padding). The state is the number of micro-batches this rank has taken.
    """

    def __init__(self, tokenizer: Tokenizer, conversations: list, B: int, T: int, rows_per_step: int, pack: bool,
                 rank: int = 0, world_size: int = 1, state: int = 0):
        K, rem = divmod(rows_per_step, B)
        if rem or K % world_size:
            raise ValueError(f"rows_per_step {rows_per_step} must be a multiple of B*world = {B}*{world_size}")
        self.B, self.T, self.pack, self.rank = B, T, pack, rank
        self.accum, self.K = K // world_size, K
        rendered = [tokenizer.render_conversation(c, T + 1) for c in conversations]
        self.rows = [(np.array(ids), np.array(mask)) for ids, mask in rendered]
        self.stream = np.concatenate([ids for ids, _ in self.rows]) if pack else None
        self.pad = tokenizer.special_id("<|assistant_end|>")
        self.taken = state

    def next_batch(self, device="cpu"):
        """(inputs, targets), each a (B, T) tensor on `device`."""
        import torch  # here, not at the top: the workflow imports this module's constants

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

    def state_dict(self) -> int:
        assert self.taken % self.accum == 0, "save the loader state between optimizer steps"
        return self.taken

    def epoch_steps(self) -> int:
        """Optimizer steps for one pass over the data."""
        rows = len(self.stream) // self.T if self.pack else len(self.rows)
        return max(1, rows // (self.K * self.B))
