"""CORE (DCLM paper): in-context-learning accuracy of a base model on the eval bundle's tasks.

Three task formats, each scored by the model's loss, never by sampling:
  multiple_choice     one context, several continuations; correct if the gold continuation has the
                      lowest mean loss.
  schema              several contexts, one continuation; correct if the continuation has the lowest
                      mean loss after the gold context.
  language_modeling   one context and continuation; correct if greedy decoding reproduces every
                      continuation token.
Each task's accuracy is centered on its random baseline, (acc - b) / (1 - b), and CORE is the mean of
the centered accuracies. Few-shot examples are other items of the same task, drawn with a fixed seed.
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


def render(task_type: str, item: dict, fewshot: list[dict], delimiter: str) -> list[str]:
    """One full text per option: the few-shot examples, then the item with that option filled in."""
    def example(it: dict) -> str:
        if task_type == "multiple_choice":
            return it["query"] + delimiter + it["choices"][it["gold"]]
        if task_type == "schema":
            return it["context_options"][it["gold"]] + delimiter + it["continuation"]
        return it["context"] + delimiter + it["continuation"]

    prefix = "".join(example(it) + "\n\n" for it in fewshot)
    if task_type == "multiple_choice":
        return [prefix + item["query"] + delimiter + choice for choice in item["choices"]]
    if task_type == "schema":
        return [prefix + context + delimiter + item["continuation"] for context in item["context_options"]]
    return [prefix + item["context"] + delimiter + item["continuation"]]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    while all(len(s) > n and s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


@torch.no_grad()
def score_item(model, tokenizer, task_type: str, item: dict, fewshot: list[dict], delimiter: str,
               device: torch.device | str = "cpu") -> bool:
    texts = render(task_type, item, fewshot, delimiter)
    seqs = [tokenizer.encode(t, prepend_bos=True) for t in texts]
    if task_type == "multiple_choice":  # the options differ at the end: score what follows the shared part
        spans = [(_common_prefix(seqs), len(s)) for s in seqs]
    elif task_type == "schema":  # the options differ at the start: score the shared continuation
        suffix = _common_prefix([s[::-1] for s in seqs])
        spans = [(len(s) - suffix, len(s)) for s in seqs]
    else:  # the continuation's tokens are those after the context's (a space joins the word after it)
        context = texts[0][:len(texts[0]) - len(item["continuation"])].rstrip()
        spans = [(min(len(tokenizer.encode(context, prepend_bos=True)), len(seqs[0]) - 1), len(seqs[0]))]
    max_len = model.config.sequence_len
    cut = [max(0, len(s) - max_len) for s in seqs]  # keep the end, where the options are
    seqs = [s[c:] for s, c in zip(seqs, cut)]
    spans = [(max(1, a - c), b - c) for (a, b), c in zip(spans, cut)]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [s[-1]] * (width - len(s)) for s in seqs], device=device)
    logits = model(ids)
    targets = ids[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")
    if task_type == "language_modeling":
        a, b = spans[0]
        return bool((logits[0, a - 1:b - 1].argmax(-1) == ids[0, a:b]).all())
    mean_losses = [losses[i, a - 1:b - 1].mean().item() for i, (a, b) in enumerate(spans)]
    return min(range(len(mean_losses)), key=mean_losses.__getitem__) == item["gold"]


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


def evaluate_task(model, tokenizer, task: dict, max_items: int, device: torch.device | str = "cpu") -> dict:
    """Accuracy and centered accuracy on the task's first `max_items` items (shuffled with a fixed seed)."""
    items = task["items"][:]
    random.Random(1337).shuffle(items)
    items = items[:max_items] if max_items > 0 else items
    correct = 0
    for i, item in enumerate(items):
        others = [it for it in task["items"] if it is not item]
        fewshot = random.Random(1234 + i).sample(others, min(task["num_fewshot"], len(others)))
        correct += score_item(model, tokenizer, task["task_type"], item, fewshot, task["delimiter"], device)
    accuracy = correct / len(items)
    baseline = task["baseline"]
    return {"accuracy": accuracy, "centered": (accuracy - baseline) / (1 - baseline), "n": len(items),
            "baseline": baseline, "task_type": task["task_type"]}
