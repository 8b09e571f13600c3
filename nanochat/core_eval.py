"""CORE (DCLM paper): in-context-learning accuracy of a base model on the eval bundle's tasks, scored
item by item exactly as upstream nanochat (48abd7d) scores it, so that numbers compare.

Three task formats, each scored by the model's loss, never by sampling:
  multiple_choice     one query, several continuations; correct if the gold continuation has the
                      lowest mean loss (scored after the tokens all options share).
  schema              several contexts, one continuation; correct if the continuation has the lowest
                      mean loss after the gold context (scored on the tokens all options end with).
  language_modeling   one context and continuation; correct if greedy decoding reproduces every
                      continuation token (scored after the tokens of the prompt without it).
Per task, items are shuffled with seed 1337 and cropped to `max_items`; item `idx` of that list gets
as few-shot examples the items `random.Random(1234 + idx).sample(<every other index>, k)`, in that
order, each followed by a blank line. Every sequence starts with BOS and keeps its last tokens when it
is longer than the model's context. Accuracy is centered on the task's random baseline,
(acc - b) / (1 - b), and CORE is the mean of the centered accuracies.
The bundle layout: `core.yaml` (`icl_tasks`: label, dataset_uri, num_fewshot, icl_task_type,
continuation_delimiter), `eval_data/<dataset_uri>` (JSON lines), `eval_meta_data.csv` (Eval Task,
Random baseline in percent).
"""

import csv
import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from nanochat.attention import KVCache
from nanochat.engine import right_padded

SHUFFLE_SEED = 1337  # the order of a task's items, so that `max_items` takes a fixed random subset
FEWSHOT_SEED = 1234  # + the item's index: which other items are its few-shot examples
# tokens that running an item's shared prefix once must save ((rows - 1) x its length): a second forward and the
# cache cost about 100 (measured on a CPU)
PREFIX_SAVING_MIN = 128


def fewshot_indices(idx: int, num_items: int, num_fewshot: int) -> list[int]:
    """The few-shot examples of item `idx` among `num_items`: never itself, the same on every run."""
    if num_fewshot == 0:
        return []
    return random.Random(FEWSHOT_SEED + idx).sample([i for i in range(num_items) if i != idx], num_fewshot)


def render(task_type: str, item: dict, fewshot: list[dict], delimiter: str) -> list[str]:
    """The texts scored for an item: one per option (multiple choice, schema), or, for language modeling,
    the prompt without the continuation and the full one. Contexts of language-modeling items are
    stripped: some end in whitespace, which would otherwise merge into the continuation's first token."""
    def example(it: dict) -> str:
        if task_type == "multiple_choice":
            return it["query"] + delimiter + it["choices"][it["gold"]]
        if task_type == "schema":
            return it["context_options"][it["gold"]] + delimiter + it["continuation"]
        return it["context"].strip() + delimiter + it["continuation"]

    prefix = "".join(example(it) + "\n\n" for it in fewshot)
    if task_type == "multiple_choice":
        return [prefix + item["query"] + delimiter + choice for choice in item["choices"]]
    if task_type == "schema":
        return [prefix + context + delimiter + item["continuation"] for context in item["context_options"]]
    if task_type == "language_modeling":
        without = prefix + item["context"].strip() + delimiter
        return [without.strip(), without + item["continuation"]]
    raise ValueError(f"unknown CORE task type {task_type!r}")


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n and s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def scored_spans(task_type: str, seqs: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The sequences to run and, per sequence, the [start, end) of the tokens whose loss decides."""
    if task_type == "multiple_choice":  # the options differ at the end: what follows the shared part
        start = _common_prefix(seqs)
        return seqs, [(start, len(s)) for s in seqs]
    if task_type == "schema":  # the options differ at the start: the continuation they share
        suffix = _common_prefix([s[::-1] for s in seqs])
        return seqs, [(len(s) - suffix, len(s)) for s in seqs]
    without, full = seqs
    if len(without) >= len(full) or full[:len(without)] != without:
        raise ValueError("language-modeling prompt without its continuation is not a token prefix of the full one")
    return [full], [(len(without), len(full))]


def prepare(model, tokenizer, task_type: str, item: dict, fewshot: list[dict], delimiter: str
            ) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """An item's token sequences, cut to the model's context, and the span of each whose loss decides."""
    texts = render(task_type, item, fewshot, delimiter)
    seqs, spans = scored_spans(task_type, [tokenizer.encode(t, prepend_bos=True) for t in texts])
    max_len = model.config.sequence_len
    cut = [max(0, len(s) - max_len) for s in seqs]  # keep the end, where the options are
    return [s[c:] for s, c in zip(seqs, cut)], [(max(1, a - c), b - c) for (a, b), c in zip(spans, cut)]


def shared_prefix(seqs: list[list[int]], spans: list[tuple[int, int]]) -> int:
    """How many tokens an item's rows start with whose hidden states no scored position reads: run once for
    all of them (the query of multiple-choice options, the few-shot examples of schema contexts)."""
    return min(_common_prefix(seqs), min(a for a, _ in spans) - 1) if len(seqs) > 1 else 0


def _prefix_cache(model, prefixes: list[list[int]], rows_per_prefix: int, length: int,
                  device: torch.device | str) -> KVCache:
    """A KV cache of `length` positions holding the prefixes, each repeated for its item's rows (the rows of
    item i at i, i + items, ...)."""
    cache = KVCache.for_model(model, len(prefixes), length)
    model.hidden(torch.tensor(prefixes, device=device), cache)
    cache.repeat(rows_per_prefix)
    return cache


@torch.no_grad()
def score_batch(model, task_type: str, prepared: list[tuple[list[list[int]], list[tuple[int, int]], int | None]],
                device: torch.device | str = "cpu") -> list[bool]:
    """Whether the model gets each item right, given (sequences, spans, gold) per item, all with as many
    sequences. Where that saves enough, the tokens an item's rows start with (each item its own, as many as the
    fewest of the items) run once, into a KV cache that the rest of every row continues. The rows run in one
    forward, right-padded: causal attention keeps padding out of every scored position, so each item scores as
    it would alone. Only the scored positions go through the head (position t predicts token t + 1)."""
    n = len(prepared[0][0])
    if any(len(seqs) != n for seqs, _, _ in prepared):
        raise ValueError("items scored together must have as many sequences")
    shared = min(shared_prefix(seqs, spans) for seqs, spans, _ in prepared)
    shared = shared if (n - 1) * shared >= PREFIX_SAVING_MIN else 0
    # option-major (row k of item i at k * items + i), the order in which KVCache.repeat tiles the prefixes
    rows = [seqs[k][shared:] for k in range(n) for seqs, _, _ in prepared]
    spans = [(a - shared, b - shared) for k in range(n) for _, item_spans, _ in prepared for a, b in [item_spans[k]]]
    ids = right_padded(rows, device)  # padding is never scored
    cache = _prefix_cache(model, [seqs[0][:shared] for seqs, _, _ in prepared], n, shared + ids.size(1),
                          device) if shared else None
    row_of = torch.tensor([r for r, (a, b) in enumerate(spans) for _ in range(a, b)], device=device)
    position = torch.tensor([t for a, b in spans for t in range(a - 1, b - 1)], device=device)
    logits = model.logits(model.hidden(ids, cache)[row_of, position])
    targets = ids[row_of, position + 1]
    lengths = [b - a for a, b in spans]
    if task_type == "language_modeling":  # right if greedy decoding gives every continuation token
        per_row = [bool(hits.all()) for hits in (logits.argmax(-1) == targets).split(lengths)]
    else:  # the mean loss of each row's scored tokens
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
        per_row = [chunk.mean().item() for chunk in losses.split(lengths)]
    outcomes = []
    for i, (_, _, gold) in enumerate(prepared):
        item_rows = per_row[i::len(prepared)]
        outcomes.append(item_rows[0] if task_type == "language_modeling" else item_rows.index(min(item_rows)) == gold)
    return outcomes


def score_item(model, tokenizer, task_type: str, item: dict, fewshot: list[dict], delimiter: str,
               device: torch.device | str = "cpu") -> bool:
    """Whether the model gets the item right, given its few-shot examples (one item per forward)."""
    seqs, spans = prepare(model, tokenizer, task_type, item, fewshot, delimiter)
    return score_batch(model, task_type, [(seqs, spans, item.get("gold"))], device)[0]


def bundle_labels(bundle: Path) -> list[str]:
    """The labels of the bundle's tasks, in core.yaml's order."""
    return [task["label"] for task in yaml.safe_load((bundle / "core.yaml").read_text())["icl_tasks"]]


def load_bundle(bundle: Path, labels: list[str] | None = None) -> list[dict]:
    """The bundle's tasks (those named in `labels`, else all) with their items and random baselines (as
    fractions)."""
    config = yaml.safe_load((bundle / "core.yaml").read_text())
    with open(bundle / "eval_meta_data.csv") as f:
        baselines = {row["Eval Task"]: float(row["Random baseline"]) / 100 for row in csv.DictReader(f)}
    tasks = []
    for task in config["icl_tasks"]:
        if labels is not None and task["label"] not in labels:
            continue
        with open(bundle / "eval_data" / task["dataset_uri"]) as f:
            items = [json.loads(line) for line in f if line.strip()]
        fewshot = task["num_fewshot"]
        tasks.append({"label": task["label"], "task_type": task["icl_task_type"], "items": items,
                      "num_fewshot": fewshot[0] if isinstance(fewshot, list) else fewshot,
                      "delimiter": task.get("continuation_delimiter", " "), "baseline": baselines[task["label"]]})
    return tasks


def task_items(task: dict, max_items: int) -> list[dict]:
    """The items a task is scored on: shuffled with a fixed seed, the first `max_items` (all if <= 0)."""
    items = task["items"][:]
    random.Random(SHUFFLE_SEED).shuffle(items)
    return items[:max_items] if max_items > 0 else items


def batches(prepared: list[tuple[list[list[int]], list, int | None]], batch_tokens: int) -> list[list[int]]:
    """Indices of the items scored together: as many sequences each, similar lengths side by side, at most
    `batch_tokens` padded tokens per forward (an item longer than that alone)."""
    def size(i: int) -> tuple[int, int]:
        return len(prepared[i][0]), max(len(s) for s in prepared[i][0])

    groups: list[list[int]] = [[]]
    for i in sorted(range(len(prepared)), key=size):
        rows, width = size(i)  # sorted: i is the widest of its group
        if groups[-1] and (size(groups[-1][0])[0] != rows or (len(groups[-1]) + 1) * rows * width > batch_tokens):
            groups.append([])
        groups[-1].append(i)
    return [g for g in groups if g]


def device_batch_tokens(batch_tokens: int, device: torch.device | str) -> int:
    """`batch_tokens`, or where it is -1 the device's own: 16,384 on a GPU, which fills its cores with items
    side by side; 1,024 (about one item per forward) on a CPU, where bigger batches page-fault fresh memory at
    every forward and score fewer items/s (schema 6.9 against 10.0 at 16,384, one thread, measured)."""
    return batch_tokens if batch_tokens > 0 else 1024 if torch.device(device).type == "cpu" else 16384


def evaluate_task(model, tokenizer, task: dict, max_items: int, device: torch.device | str = "cpu",
                  batch_tokens: int = 1, progress: Callable[[int], None] | None = None) -> dict:
    """Accuracy, centered accuracy and the per-item outcomes (in scoring order) of one task, scoring up to
    `batch_tokens` padded tokens per forward (1: one item per forward; -1: device_batch_tokens).
    `progress(items done)` is called after each forward."""
    items = task_items(task, max_items)
    prepared = []
    for idx, item in enumerate(items):
        fewshot = [items[i] for i in fewshot_indices(idx, len(items), task["num_fewshot"])]
        seqs, spans = prepare(model, tokenizer, task["task_type"], item, fewshot, task["delimiter"])
        prepared.append((seqs, spans, item.get("gold")))
    outcomes: list[bool] = [False] * len(items)
    done = 0
    for group in batches(prepared, device_batch_tokens(batch_tokens, device)):
        for i, outcome in zip(group, score_batch(model, task["task_type"], [prepared[i] for i in group], device)):
            outcomes[i] = outcome
        done += len(group)
        if progress:
            progress(done)
    accuracy = sum(outcomes) / len(items)
    baseline = task["baseline"]
    return {"accuracy": accuracy, "centered": (accuracy - baseline) / (1 - baseline), "n": len(items),
            "baseline": baseline, "task_type": task["task_type"], "correct": outcomes}
