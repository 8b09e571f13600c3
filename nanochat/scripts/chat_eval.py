"""Evaluate a model on the chat tasks (nanochat.tasks): one task per run, then the aggregates over the
tasks' records.

    python -m nanochat.scripts.chat_eval --task=mmlu --source=offline --model_dir=sft/ \
        --tokenizer=tok/tokenizer.json --hub_dir=hub/ --out=chat_eval/sft/mmlu.json
    python -m nanochat.scripts.chat_eval --source=offline --out=chat_eval_sft.json chat_eval/sft/*.json

Categorical tasks: the question and lettered choices as a user turn; the answer is the choice letter
with the highest logit right after <|assistant_start|>. Generative tasks: greedy decoding until
<|assistant_end|>, then a check: GSM8K's number after '####', HumanEval's program run against its
tests in the sandbox, SpellingBee's last number. Up to `batch_size` problems go through the model
together (right-padded; generation stops per problem), with the answers each would get alone.

Two aggregates, each the mean over tasks of (accuracy - baseline) / (1 - baseline):
  chatcore    upstream's ChatCORE: only when its six tasks (ARC-Easy, ARC-Challenge, MMLU, GSM8K,
              HumanEval, SpellingBee) were all evaluated on the real test sets (source=hub); else null
  chat_mean   over the tasks evaluated here, named in chat_mean_tasks. Offline (MMLU subset, HumanEval,
              SpellingBee, QuaRTz) it is another task set: it does not compare with ChatCORE.
The workflow runs one job per (model, task) (rule chat_eval_task), then the aggregates (rule chat_eval);
the record lists upstream's tasks that the source has no data for as not available, with the reason.
"""

import argparse
import dataclasses
import json
import logging
import random
import time
from pathlib import Path
from typing import Literal

import torch

from nanochat import settings, tasks
from nanochat.catalog import CATALOG
from nanochat.checkpoint import load_model
from nanochat.common import progress_logger, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute
from nanochat.engine import Engine, right_padded
from nanochat.execution import sandbox_layers
from nanochat.layout import CHAT_EVAL_TASKS
from nanochat.tasks.common import LETTERS, EvalTask
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.chat_eval")


@dataclasses.dataclass
class ChatEvalSettings:
    """Chat evaluation (ARC, MMLU, GSM8K, HumanEval, SpellingBee; QuaRTz offline)."""
    source: Literal["hub", "offline"] = "hub"  # hub: the real tasks, downloaded; offline: what installed packages ship
    max_problems: int = -1  # problems per task (-1: all), drawn with a fixed seed
    max_new_tokens: int = 512  # tokens generated per generative problem
    batch_size: int = 32  # problems scored or generated together (1: one at a time)


def aggregates(results: dict, source: str) -> dict:
    """ChatCORE (upstream's six tasks on the real test sets, else None) and the mean over what was evaluated."""
    evaluated = {name: r for name, r in results.items() if r["available"]}
    mean = sum(r["centered"] for r in evaluated.values()) / len(evaluated) if evaluated else None
    is_chatcore = source == "hub" and set(evaluated) == set(tasks.CHATCORE_TASKS)
    return {"chatcore": mean if is_chatcore else None, "chat_mean": mean, "chat_mean_tasks": list(evaluated)}


@torch.no_grad()
def last_token_logits(model, prompts: list[list[int]], device) -> torch.Tensor:
    """(prompts, vocab): the logits after each prompt's last token, the prompts right-padded into one forward
    (causal attention: no prompt sees the padding)."""
    ids = right_padded(prompts, device)
    rows, last = torch.arange(len(prompts), device=device), torch.tensor([len(p) - 1 for p in prompts], device=device)
    return model.logits(model.hidden(ids)[rows, last])  # the head for the last positions only


def answer_letters(model, tokenizer: Tokenizer, task: EvalTask, items: list[dict], device) -> list[int]:
    """The choice each categorical item gets: the letter with the highest logit after <|assistant_start|>."""
    prompts = [tokenizer.render_for_completion([{"role": "user", "content": task.prompt(item)}]) for item in items]
    choices = []
    for row, item in zip(last_token_logits(model, prompts, device), items):
        letters = [tokenizer.encode(letter)[0] for letter in LETTERS[:len(item["choices"])]]
        choices.append(int(row[letters].argmax()))
    return choices


def evaluate(task: EvalTask, items: list[dict], model, tokenizer: Tokenizer, compute, cfg: ChatEvalSettings
             ) -> tuple[list[str], list[bool]]:
    """Each item's answer (the chosen letter, or the completion) and whether it is right, in `items` order.
    Problems of similar prompt length go through the model together."""
    order = sorted(range(len(items)), key=lambda i: len(task.prompt(items[i])))
    engine, answers, correct = Engine(model, tokenizer), [""] * len(items), [False] * len(items)
    progress = progress_logger(log, task.name, len(items))
    for start in range(0, len(order), cfg.batch_size):
        batch = order[start:start + cfg.batch_size]
        if task.kind == "categorical":
            with compute.autocast("score", model=model):
                chosen = answer_letters(model, tokenizer, task, [items[i] for i in batch], compute.device)
            for i, choice in zip(batch, chosen):
                answers[i], correct[i] = LETTERS[choice], choice == items[i]["answer"]
        else:
            prompts = [tokenizer.render_for_completion([{"role": "user", "content": task.prompt(items[i])}])
                       for i in batch]
            with compute.autocast("decode", model=model):
                completions = engine.generate_greedy(prompts, max_tokens=cfg.max_new_tokens)
            for i, completion in zip(batch, completions):
                answers[i] = tokenizer.decode(completion)
                correct[i] = task.grade(items[i], answers[i])
        progress(start + len(batch))
    return answers, correct


def score_task(args: argparse.Namespace, cfg: ChatEvalSettings) -> None:
    """One task's accuracy and per-item outcomes, to its record."""
    task = tasks.EVAL_TASKS[args.task]
    hub = [task.hub] if cfg.source == "hub" and task.hub else []
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer,
                         *(args.hub_dir / name for name in hub)])
    started = time.time()
    items = tasks.load(args.task, cfg.source, args.hub_dir)
    if isinstance(items, str):
        raise SystemExit(f"error: {task.name} has no data from source={cfg.source}: {items}")
    random.Random(1337).shuffle(items)
    items = items[:cfg.max_problems] if cfg.max_problems > 0 else items
    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    answers, correct = evaluate(task, items, model, Tokenizer.load(args.tokenizer), compute, cfg)
    seconds, accuracy = time.time() - started, sum(correct) / len(items)
    log.info("%-14s accuracy %.4f (n=%d, baseline %.2f) in %.1fs, %.2f items/s", task.name, accuracy, len(items),
             task.baseline, seconds, len(items) / seconds)
    write_json_atomic(args.out, {
        "task": args.task, "name": task.name, "kind": task.kind, "available": True, "accuracy": accuracy,
        "n": len(items), "baseline": task.baseline, "centered": (accuracy - task.baseline) / (1 - task.baseline),
        "correct": correct, "answers": answers, "items_per_s": round(len(items) / seconds, 3), "model_step": meta["step"],
        "settings": dataclasses.asdict(cfg), "data": {name: CATALOG[name].describe() for name in hub},
        "device": str(compute.device), "torch": torch.__version__, **run_record(started),
        **({"sandbox": sandbox_layers()} if args.task == "humaneval" else {})})  # the OS layers its programs ran under


def aggregate(args: argparse.Namespace, cfg: ChatEvalSettings) -> None:
    """ChatCORE and the chat mean from the task records; upstream's other tasks as not available."""
    start_compute_stage(args.records)
    started = time.time()
    records = {r["task"]: r for r in (json.loads(path.read_text()) for path in args.records)}
    if missing := [name for name in CHAT_EVAL_TASKS[cfg.source] if name not in records]:
        raise SystemExit(f"error: source={cfg.source} needs a record of every task; missing: {', '.join(missing)}")
    results = {}
    for name in tasks.task_names(cfg.source):
        task = tasks.EVAL_TASKS[name]
        if name in records:
            results[task.name] = records[name]
        else:
            results[task.name] = {"available": False, "reason": tasks.load(name, cfg.source, Path())}
            log.info("%-14s %s", task.name, results[task.name]["reason"])
    for name, r in results.items():
        if r["available"]:
            log.info("%-14s accuracy %.4f (n=%d, baseline %.2f)", name, r["accuracy"], r["n"], r["baseline"])
    scores = aggregates(results, cfg.source)
    if scores["chatcore"] is not None:
        log.info("ChatCORE %.4f", scores["chatcore"])
    else:
        mean = "n/a" if scores["chat_mean"] is None else f"{scores['chat_mean']:.4f}"
        log.info("chat mean %s over %s (not ChatCORE: that needs %s from the hub)", mean,
                 ", ".join(scores["chat_mean_tasks"]) or "no tasks", ", ".join(tasks.CHATCORE_TASKS))
    data = {name: text for r in records.values() for name, text in r["data"].items()}
    write_json_atomic(args.out, {**scores, "tasks": results, "settings": dataclasses.asdict(cfg),
                                 "model_step": next(iter(records.values()))["model_step"], "data": data,
                                 **run_record(started)})


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, ChatEvalSettings, device=True, out="JSON record to write")
    parser.add_argument("--task", choices=list(tasks.EVAL_TASKS), help="evaluate this task (else: the aggregates)")
    parser.add_argument("--model_dir", type=Path, help="folder with model.pt and meta.json (with --task)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (with --task)")
    parser.add_argument("--hub_dir", type=Path, default=Path("hub"),
                        help="folder of downloaded hub datasets (with --task and source=hub)")
    parser.add_argument("records", nargs="*", type=Path, help="without --task: the task records to aggregate")
    args = parser.parse_args(argv)
    cfg: ChatEvalSettings = settings.from_args(ChatEvalSettings, args)
    if args.task:
        if None in (args.model_dir, args.tokenizer):
            parser.error("--task needs --model_dir and --tokenizer")
        score_task(args, cfg)
    else:
        aggregate(args, cfg)


if __name__ == "__main__":
    main()
