"""Evaluation throughput at d20 shape: items/s one at a time vs batched, per kind of evaluation job.

A random-weight d20 model (561M parameters, vocab 65,536, context 2,048) on this machine's device, the
same items scored three ways in one run, with the answers compared (they must be identical): before
(one item per forward with every position's logits: the scorer before batching, and upstream's), one
item per forward through the current scorer (the head only at scored positions), and batched:
  core_mc       CORE multiple choice: 4 options x 128 tokens (hellaswag-like), one forward per item vs
                base_eval.batch_tokens per forward
  core_schema   CORE schema: 2 contexts x 64 tokens (winograd-like)
  core_lm       CORE language modeling: 1 row of 128 tokens, 16 scored (lambada-like)
  categorical   chat multiple choice: offline MMLU prompt lengths, one per forward vs chat_eval.batch_size
  generative    chat generation: GSM8K test prompt lengths (../shared/data, else MMLU's), `--new_tokens`
                greedy tokens each with no stop, one prompt at a time vs chat_eval.batch_size together
The chat prompts are `--items` neighbours from the middle of the task's prompts sorted by length, as one
batch of chat_eval sees them (it sorts a task's problems by length before batching).
Token ids are random; prompt lengths are the texts' characters / 4.5 (a 65k BPE on English text).

    python bench/eval_throughput.py [--device cuda] [--items 8] [--new_tokens 32]

Then the computed time of every evaluation job on one A100 (bf16 peak 312 TFLOPS): an upper bound, each
CORE item at its context limit (2,048 tokens per row; 11 rows, language identification's options, for every
non-LM task), forward FLOPs with attention over 2,048 positions, at `--a100_utilization` of peak, and each
generative problem 512 decoding steps of `--a100_step_ms` in batches of chat_eval.batch_size.
"""

import argparse
import functools
import json
import random
import time
from pathlib import Path

import torch
from engine_decode import NoStopTokenizer  # bench/, the folder this script runs from

from nanochat.catalog import CORE_TASKS
from nanochat.compute import init_compute
from nanochat.core_eval import device_batch_tokens, score_batch
from nanochat.engine import Engine, right_padded
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts.base_eval import BaseEvalSettings
from nanochat.scripts.chat_eval import ChatEvalSettings, last_token_logits
from nanochat.tasks import mmlu
from nanochat.tasks.common import multiple_choice_prompt

VOCAB, CONTEXT = 65536, 2048
GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
CORE_LM_TASKS = {"jeopardy", "bigbench_qa_wikidata", "lambada_openai", "bigbench_dyck_languages", "squad", "coqa",
                 "bigbench_cs_algorithms", "bigbench_operators", "bigbench_repeat_copy_logic"}  # baseline 0
CHAT_TASK_ITEMS = {"ARC-Easy": 2376, "ARC-Challenge": 1172, "MMLU": 14042, "GSM8K": 1319, "HumanEval": 164,
                   "SpellingBee": 500}  # test-set sizes (hub); SpellingBee: nanochat.tasks.spellingbee.items()


def random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(VOCAB) for _ in range(n)]


CORE_KINDS = {"core_mc": "multiple_choice", "core_schema": "schema", "core_lm": "language_modeling"}


def core_items(kind: str, n: int, rng: random.Random) -> list[tuple]:
    """(sequences, spans, gold) per item, as nanochat.core_eval.prepare gives them."""
    rows, length, scored = {"core_mc": (4, 128, 24), "core_schema": (2, 64, 48), "core_lm": (1, 128, 16)}[kind]
    items = []
    for _ in range(n):
        prefix = random_ids(rng, length - scored)
        seqs = [prefix + random_ids(rng, scored) for _ in range(rows)]
        items.append((seqs, [(length - scored, length)] * rows, 0 if rows > 1 else None))
    return items


def full_logits_score(model, task_type: str, item: tuple, device) -> bool:
    """The scorer before batching (and upstream's way): one item per forward, the logits of every position."""
    seqs, spans, gold = item
    ids = right_padded(seqs, device)
    logits = model(ids).float()
    if task_type == "language_modeling":
        a, b = spans[0]
        return bool((logits[0, a - 1:b - 1].argmax(-1) == ids[0, a:b]).all())
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    mean_losses = [losses[i, a - 1:b - 1].mean().item() for i, (a, b) in enumerate(spans)]
    return mean_losses.index(min(mean_losses)) == gold


def median_run(texts: list[str], n: int, rng: random.Random) -> list[list[int]]:
    """`n` prompts as one batch of chat_eval sees them: the task's prompts sorted by length, `n` neighbours
    from the middle (a real task has hundreds to thousands, so neighbours pad little)."""
    lengths = sorted(int(len(text) / 4.5) for text in texts)
    start = max(0, len(lengths) // 2 - n // 2)
    return [random_ids(rng, length) for length in lengths[start:start + n]]


def timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="", help="cuda or cpu (default: the best available)")
    parser.add_argument("--items", type=int, default=8, help="items per kind of job (generation: prompts)")
    parser.add_argument("--new_tokens", type=int, default=32, help="tokens generated per prompt")
    parser.add_argument("--kinds", default="core_mc,core_schema,core_lm,categorical,generative",
                        help="which kinds of job to measure (comma-separated)")
    parser.add_argument("--batch_tokens", type=int, default=BaseEvalSettings.batch_tokens)
    parser.add_argument("--batch_size", type=int, default=ChatEvalSettings.batch_size)
    parser.add_argument("--a100_utilization", type=float, default=0.3, help="of bf16 peak, for the computed times")
    parser.add_argument("--a100_step_ms", type=float, default=10.0, help="one batched decoding step, d20 on an A100")
    args = parser.parse_args()
    compute = init_compute(args.device)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(20, VOCAB, CONTEXT)).to(compute.device).eval()
    model.init_weights()
    for block in model.transformer.h:  # zero output projections would make every position alike
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.02)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.02)
    device, rng = compute.device, random.Random(0)
    questions = [json.loads(line)["question"] for line in GSM8K.open()] if GSM8K.is_file() else \
        [multiple_choice_prompt(item) for item in mmlu.offline()]
    mmlu_prompts = median_run([multiple_choice_prompt(item) for item in mmlu.offline()], args.items, rng)
    gen_prompts = median_run(questions, args.items, rng)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}; d20 "
          f"({model.num_params():,} parameters), {args.items} items per kind")
    print("| job kind | before: one per forward, every position's logits (items/s) | one per forward (items/s) "
          "| batched (items/s) | batched / before | same answers |")
    print("|---|---|---|---|---|---|")
    engine = Engine(model, NoStopTokenizer())
    with torch.no_grad():
        for kind in filter(None, args.kinds.split(",")):
            if kind.startswith("core"):
                items = core_items(kind, args.items, rng)
                task_type = CORE_KINDS[kind]
                per_batch = max(1, device_batch_tokens(args.batch_tokens, device)
                                // (len(items[0][0]) * len(items[0][0][0])))

                def before(items=items, task_type=task_type):
                    return [full_logits_score(model, task_type, item, device) for item in items]

                def one(items=items, task_type=task_type):
                    return [score_batch(model, task_type, [item], device)[0] for item in items]

                def batched(items=items, task_type=task_type, per_batch=per_batch):
                    return [o for i in range(0, len(items), per_batch)
                            for o in score_batch(model, task_type, items[i:i + per_batch], device)]
                autocast = functools.partial(compute.autocast, "score")
            elif kind == "categorical":
                def before():
                    return [int(model(torch.tensor([p], device=device))[0, -1].argmax()) for p in mmlu_prompts]

                def one():
                    return [int(last_token_logits(model, [p], device).argmax()) for p in mmlu_prompts]

                def batched():
                    return [int(row.argmax()) for i in range(0, len(mmlu_prompts), args.batch_size)
                            for row in last_token_logits(model, mmlu_prompts[i:i + args.batch_size], device)]
                autocast = functools.partial(compute.autocast, "score")
            else:
                def before():
                    return [engine.generate_batch(p, 1, max_tokens=args.new_tokens, temperature=0.0)[0]
                            for p in gen_prompts]
                one = before

                def batched():
                    return [c for i in range(0, len(gen_prompts), args.batch_size)
                            for c in engine.generate_greedy(gen_prompts[i:i + args.batch_size], args.new_tokens)]

                def autocast():
                    return compute.autocast("decode")
            with autocast():
                batched()  # warm-up
                before_s, before_out = timed(before)
                one_s, one_out = (before_s, before_out) if one is before else timed(one)
                batch_s, batch_out = timed(batched)
            n = args.items
            same = sum(a == b == c for a, b, c in zip(before_out, one_out, batch_out))
            print(f"| {kind} | {n / before_s:.3f} | {n / one_s:.3f} | {n / batch_s:.3f} | {before_s / batch_s:.2f}x "
                  f"| {same}/{n} |", flush=True)

    flops_per_token = model.flops_per_token() / 3  # a forward: 2 x parameters (no embedding) + attention at 2,048
    a100 = 312e12 * args.a100_utilization
    print(f"\nComputed upper bounds on one A100 (bf16 {args.a100_utilization:.0%} of peak; {args.a100_step_ms} ms "
          f"per decoding step, batches of {args.batch_size}, 512 steps each):")
    print("| job | items | upper bound (min) |\n|---|---|---|")
    for label, n in CORE_TASKS.items():
        rows = 1 if label in CORE_LM_TASKS else 11
        print(f"| base_eval_task {label} | {n:,} | {n * rows * CONTEXT * flops_per_token / a100 / 60:.1f} |")
    for name, n in CHAT_TASK_ITEMS.items():
        if name in ("GSM8K", "HumanEval", "SpellingBee"):
            minutes = -(-n // args.batch_size) * 512 * args.a100_step_ms / 1000 / 60
        else:
            minutes = n * CONTEXT * flops_per_token / a100 / 60
        print(f"| chat_eval_task {name} (per model) | {n:,} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
