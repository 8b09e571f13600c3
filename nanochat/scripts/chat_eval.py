"""Evaluate a model on the chat tasks (nanochat.tasks) to one JSON record: per-task accuracy, and
ChatCORE where it can be computed.

Categorical tasks: the question and lettered choices as a user turn; the answer is the choice letter
with the highest logit right after <|assistant_start|>. Generative tasks: greedy decoding until
<|assistant_end|>, then a check: GSM8K's number after '####', HumanEval's program run against its
tests in the sandbox, SpellingBee's last number. A task with no data from the chosen source is
recorded as not available, with the reason.

Two aggregates, each the mean over tasks of (accuracy - baseline) / (1 - baseline):
  chatcore    upstream's ChatCORE: only when its six tasks (ARC-Easy, ARC-Challenge, MMLU, GSM8K,
              HumanEval, SpellingBee) were all evaluated on the real test sets (source=hub); else null
  chat_mean   over the tasks evaluated here, named in chat_mean_tasks. Offline (MMLU subset, HumanEval,
              SpellingBee, QuaRTz) it is another task set: it does not compare with ChatCORE.

    python -m nanochat.scripts.chat_eval --source=offline --model_dir=sft/ --tokenizer=tok/tokenizer.json \
        --hub_dir=hub/ --out=chat_eval_sft.json
"""

import dataclasses
import logging
import random
import time
from typing import Literal

import torch

from nanochat import settings, tasks
from nanochat.catalog import CATALOG
from nanochat.checkpoint import load_model
from nanochat.common import run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute
from nanochat.engine import Engine
from nanochat.tasks.common import LETTERS
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.chat_eval")


@dataclasses.dataclass
class ChatEvalSettings:
    """Chat evaluation (ARC, MMLU, GSM8K, HumanEval, SpellingBee; QuaRTz offline)."""
    source: Literal["hub", "offline"] = "hub"  # hub: the real tasks, downloaded; offline: what installed packages ship
    max_problems: int = -1  # problems per task (-1: all), drawn with a fixed seed
    max_new_tokens: int = 512  # tokens generated per generative problem


def aggregates(results: dict, source: str) -> dict:
    """ChatCORE (upstream's six tasks on the real test sets, else None) and the mean over what was evaluated."""
    evaluated = {name: r for name, r in results.items() if r["available"]}
    mean = sum(r["centered"] for r in evaluated.values()) / len(evaluated) if evaluated else None
    is_chatcore = source == "hub" and set(evaluated) == set(tasks.CHATCORE_TASKS)
    return {"chatcore": mean if is_chatcore else None, "chat_mean": mean, "chat_mean_tasks": list(evaluated)}


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, ChatEvalSettings, device=True, model_dir="folder with model.pt and meta.json", tokenizer="tokenizer.json",
                                hub_dir="folder of downloaded hub datasets (source=hub)", out="JSON record to write")
    args = parser.parse_args(argv)
    cfg: ChatEvalSettings = settings.from_args(ChatEvalSettings, args)
    names = tasks.task_names(cfg.source)
    hub = [tasks.EVAL_TASKS[t].hub for t in names if tasks.EVAL_TASKS[t].hub] if cfg.source == "hub" else []
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer,
                         *(args.hub_dir / name for name in hub)])
    started = time.time()
    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    tokenizer = Tokenizer.load(args.tokenizer)
    engine = Engine(model, tokenizer)
    results = {}
    for name in names:
        task = tasks.EVAL_TASKS[name]
        items = tasks.load(name, cfg.source, args.hub_dir)
        if isinstance(items, str):
            results[task.name] = {"available": False, "reason": items}
            log.info("%-14s %s", task.name, items)
            continue
        random.Random(1337).shuffle(items)
        items = items[:cfg.max_problems] if cfg.max_problems > 0 else items
        task_started, correct = time.time(), 0
        for item in items:
            ids = tokenizer.render_for_completion([{"role": "user", "content": task.prompt(item)}])
            if task.kind == "categorical":
                letters = [tokenizer.encode(letter)[0] for letter in LETTERS[:len(item["choices"])]]
                with torch.no_grad(), compute.autocast():
                    logits = model(torch.tensor([ids], device=compute.device))[0, -1]
                correct += int(logits[letters].argmax()) == item["answer"]
            else:
                with compute.autocast(decode=True):
                    [completion] = engine.generate_batch(ids, 1, max_tokens=cfg.max_new_tokens, temperature=0.0)
                correct += task.grade(item, tokenizer.decode(completion))
        accuracy = correct / len(items)
        results[task.name] = {"available": True, "accuracy": accuracy, "n": len(items), "baseline": task.baseline,
                              "centered": (accuracy - task.baseline) / (1 - task.baseline),
                              "wall_time_s": round(time.time() - task_started, 3)}
        log.info("%-14s accuracy %.4f (n=%d, baseline %.2f) in %.1fs", task.name, accuracy, len(items),
                 task.baseline, results[task.name]["wall_time_s"])
    scores = aggregates(results, cfg.source)
    if scores["chatcore"] is not None:
        log.info("ChatCORE %.4f", scores["chatcore"])
    else:
        mean = "n/a" if scores["chat_mean"] is None else f"{scores['chat_mean']:.4f}"
        log.info("chat mean %s over %s (not ChatCORE: that needs %s from the hub)", mean,
                 ", ".join(scores["chat_mean_tasks"]) or "no tasks", ", ".join(tasks.CHATCORE_TASKS))
    write_json_atomic(args.out, {**scores, "tasks": results, "settings": dataclasses.asdict(cfg), "model_step": meta["step"],
                                 "data": {name: CATALOG[name].describe() for name in hub},
                                 "device": str(compute.device), **run_record(started)})


if __name__ == "__main__":
    main()
