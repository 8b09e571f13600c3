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
from pathlib import Path

import torch
import yaml

SHUFFLE_SEED = 1337  # the order of a task's items, so that `max_items` takes a fixed random subset
FEWSHOT_SEED = 1234  # + the item's index: which other items are its few-shot examples


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


@torch.no_grad()
def score_item(model, tokenizer, task_type: str, item: dict, fewshot: list[dict], delimiter: str,
               device: torch.device | str = "cpu") -> bool:
    """Whether the model gets the item right, given its few-shot examples."""
    texts = render(task_type, item, fewshot, delimiter)
    seqs, spans = scored_spans(task_type, [tokenizer.encode(t, prepend_bos=True) for t in texts])
    max_len = model.config.sequence_len
    cut = [max(0, len(s) - max_len) for s in seqs]  # keep the end, where the options are
    seqs = [s[c:] for s, c in zip(seqs, cut)]
    spans = [(max(1, a - c), b - c) for (a, b), c in zip(spans, cut)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [s[-1]] * (width - len(s)) for s in seqs], device=device)  # padding is never scored
    logits = model(ids).float()
    if task_type == "language_modeling":
        a, b = spans[0]
        return bool((logits[0, a - 1:b - 1].argmax(-1) == ids[0, a:b]).all())
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    mean_losses = [losses[i, a - 1:b - 1].mean().item() for i, (a, b) in enumerate(spans)]
    return mean_losses.index(min(mean_losses)) == item["gold"]


def load_bundle(bundle: Path) -> list[dict]:
    """The bundle's tasks with their items and random baselines (as fractions)."""
    config = yaml.safe_load((bundle / "core.yaml").read_text())
    with open(bundle / "eval_meta_data.csv") as f:
        baselines = {row["Eval Task"]: float(row["Random baseline"]) / 100 for row in csv.DictReader(f)}
    tasks = []
    for task in config["icl_tasks"]:
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


def evaluate_task(model, tokenizer, task: dict, max_items: int, device: torch.device | str = "cpu") -> dict:
    """Accuracy, centered accuracy and the per-item outcomes (in scoring order) of one task."""
    items = task_items(task, max_items)
    outcomes = []
    for idx, item in enumerate(items):
        fewshot = [items[i] for i in fewshot_indices(idx, len(items), task["num_fewshot"])]
        outcomes.append(score_item(model, tokenizer, task["task_type"], item, fewshot, task["delimiter"], device))
    accuracy = sum(outcomes) / len(items)
    baseline = task["baseline"]
    return {"accuracy": accuracy, "centered": (accuracy - baseline) / (1 - baseline), "n": len(items),
            "baseline": baseline, "task_type": task["task_type"], "correct": outcomes}
