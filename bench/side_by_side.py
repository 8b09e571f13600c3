"""Upstream nanochat 48abd7d (../shared/anchors) and ours, side by side on this machine, in one run.

Each measurement runs in a fresh process, upstream's and ours interleaved, `--reps` times each;
the table gives medians and the ratio ours / upstream (> 1: ours faster). Same shape, same tokens:
  train        optimizer steps (forward, backward, clipping, AdamW + Muon) on the same random token
               batch: upstream as its base_train runs (torch.compile, fp32 on a CPU, bf16 Newton-Schulz),
               ours as ours runs by default (nanochat.compute.BF16_PATHS for this CPU; no compile)
  train_avx2   the same with oneDNN limited to AVX2 in both processes (ONEDNN_MAX_CPU_ISA): bf16 matmuls
               as an AVX2-only CPU runs them (ours then trains in fp32 by itself)
  train_avx512 the same, limited to AVX-512 with bf16 instructions but no AMX: bf16 as a Zen 4 or Cooper
               Lake runs it
               These two are emulated where this CPU has more: the limit takes instructions away, not this
               CPU's cores, caches and memory (the table says so); figures for a Zen 4 come from a Zen 4.
  decode       greedy decoding with each one's Engine and KV cache, from the same weights and prompt;
               the tokens must be identical
  score_mc     CORE scoring (items/s) with each one's scorer, as its base_eval runs it, of the same items
  score_schema of real offline text, tokenized alike (one token per byte), from the decoding weights:
  score_lm     multiple choice (4 options), schema (2 contexts) and language modeling; the per-item
               outcomes are compared (both in fp32 on a CPU, bf16 autocast on CUDA)
  tok_train    tokenizer training (MB of text per second) on the same offline documents, 10,000
               characters each as tok_train cuts them, with the same vocabulary: both train with rustbpe,
               ours then builds its HF tokenizer from the merges; bytes per token of both on held-out documents
The table's first line names the CPU (model, the instruction sets bf16 depends on, torch, oneDNN and MKL).
Upstream's processes import upstream's `nanochat` package: its folder comes first on PYTHONPATH.
Skips, saying so, without ../shared/anchors. `bench/gpu_check.sh` runs it unchanged on a CUDA GPU.

    python bench/side_by_side.py [--reps 3] [--depth 4] [--what train decode]
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# `nanochat` is imported inside the functions: which package it is (ours, or upstream's, first on the
# worker's PYTHONPATH) is decided by the process a function runs in.

ANCHOR = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "nanochat-48abd7d"
RESULTS = Path(__file__).resolve().parent / "results"
UNITS = {"train": "tok/s", "train_avx2": "tok/s", "train_avx512": "tok/s", "decode": "tok/s",
         "score_mc": "items/s", "score_schema": "items/s", "score_lm": "items/s", "tok_train": "MB/s"}
SCORE_KINDS = {"score_mc": "multiple_choice", "score_schema": "schema", "score_lm": "language_modeling"}
# ONEDNN_MAX_CPU_ISA per measurement, both sides: oneDNN's limit, which our nanochat.compute.cpu_bf16() reads too.
ISA_LIMITS = {"train_avx2": "AVX2", "train_avx512": "AVX512_CORE_BF16"}


class StubTokenizer:
    """What both engines and both CORE scorers ask of a tokenizer. Decoding: special tokens outside the
    vocabulary, so a random model never stops early and both decode exactly the tokens asked for.
    Scoring: one token per UTF-8 byte after a BOS, so both score the same token sequences."""
    bos_id = 0

    def special_id(self, token: str) -> int:  # ours
        return -2 - sum(map(ord, token))

    encode_special = special_id  # upstream's names

    def get_bos_token_id(self) -> int:
        return self.bos_id

    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:  # ours
        return [self.bos_id] * prepend_bos + [1 + b for b in text.encode("utf-8")]

    def __call__(self, texts: list[str], prepend: int) -> list[list[int]]:  # upstream's
        return [[prepend] + self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return ""


def build_model(args: argparse.Namespace):
    """The model of this process's package (ours or upstream's: both have GPT and GPTConfig with the same
    fields), initialised by that package, on the device."""
    from nanochat.gpt import GPT, GPTConfig  # whichever package PYTHONPATH gives this process

    heads = max(1, (args.width + 127) // 128)  # upstream's head dim 128
    torch.manual_seed(0)
    model = GPT(GPTConfig(args.seq_len, args.vocab, args.depth, heads, heads, args.width)).to(args.device)
    model.init_weights()
    return model


def worker_train(args: argparse.Namespace) -> dict:
    from nanochat import gpt

    model = build_model(args)
    optimizers = model.setup_optimizers(unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.0)
    if args.impl == "upstream":
        step_model = torch.compile(model, dynamic=False)  # as upstream's base_train
        autocast = (lambda: torch.amp.autocast("cuda", dtype=torch.bfloat16)) if args.device == "cuda" \
            else contextlib.nullcontext
    else:
        from nanochat import compute as compute_mod
        from nanochat.fused import keep_freed_memory
        if args.device == "cpu":
            keep_freed_memory()  # as train_loop does on a CPU
        step_model = torch.compile(model, dynamic=False) if args.compile else model  # runtime.compile
        autocast = compute_mod.Compute(torch.device(args.device)).autocast
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=generator).to(args.device)
    y = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=generator).to(args.device)
    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        started = time.perf_counter()
        with autocast():
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    tokens = args.batch * args.seq_len
    return {"value": tokens / statistics.median(times[args.warmup:]), "first_step_s": times[0],
            "losses": losses, "package": gpt.__file__}


def shared_model(args: argparse.Namespace):
    """This package's model with the weights every inference measurement shares (written by main)."""
    model = build_model(args)
    model.load_state_dict(torch.load(args.scratch / "weights.pt"), strict=True)
    return model.eval()


def worker_decode(args: argparse.Namespace) -> dict:
    from nanochat import gpt
    from nanochat.engine import Engine

    model = shared_model(args)
    prompt = torch.randint(0, args.vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(2)).tolist()
    engine = Engine(model, StubTokenizer())
    with precision(args, decode=True):
        engine.generate_batch(prompt[:16], 1, max_tokens=4, temperature=0.0)  # warm-up
        started = time.perf_counter()
        out = engine.generate_batch(prompt, 1, max_tokens=args.new_tokens, temperature=0.0)
        seconds = time.perf_counter() - started
    tokens = out[0][0] if args.impl == "upstream" else out[0]  # upstream: (sequences with the prompt, masks)
    tokens = tokens[len(prompt):] if args.impl == "upstream" else tokens
    return {"value": args.new_tokens / seconds, "tokens": tokens, "package": gpt.__file__}


def worker_score(args: argparse.Namespace, kind: str) -> dict:
    from nanochat import gpt

    model = shared_model(args)
    task = json.loads((args.scratch / "items.json").read_text())[kind]
    with precision(args, decode=False):
        started = time.perf_counter()
        if args.impl == "upstream":  # upstream's base_eval shuffles and crops before its scorer, as ours does inside
            from nanochat.core_eval import evaluate_example
            meta = {"task_type": kind, "num_fewshot": task["num_fewshot"], "continuation_delimiter": task["delimiter"]}
            correct = [bool(evaluate_example(i, model, StubTokenizer(), task["shuffled"], args.device, meta))
                       for i in range(len(task["shuffled"]))]
        else:
            from nanochat.core_eval import evaluate_task
            from nanochat.scripts.base_eval import BaseEvalSettings
            correct = evaluate_task(model, StubTokenizer(), {**task, "baseline": 0.0}, 0, args.device,
                                    BaseEvalSettings().batch_tokens)["correct"]
        seconds = time.perf_counter() - started
    return {"value": len(correct) / seconds, "correct": correct, "package": gpt.__file__}


def worker_tok_train(args: argparse.Namespace) -> dict:
    from nanochat import tokenizer as tokenizer_mod

    corpus = json.loads((args.scratch / "corpus.json").read_text())
    train, held_out = corpus["train"], corpus["held_out"]
    started = time.perf_counter()
    if args.impl == "upstream":
        tok = tokenizer_mod.RustBPETokenizer.train_from_iterator(iter(train), args.vocab)
        seconds = time.perf_counter() - started
        held_tokens = sum(map(len, tok.encode(held_out)))
    else:
        tok = tokenizer_mod.Tokenizer.train(iter(train), args.vocab)
        seconds = time.perf_counter() - started
        held_tokens = sum(map(len, tok.encode_batch(held_out)))
    return {"value": corpus["train_bytes"] / 1e6 / seconds, "bytes_per_token": corpus["held_out_bytes"] / held_tokens,
            "package": tokenizer_mod.__file__}


def precision(args: argparse.Namespace, decode: bool) -> contextlib.AbstractContextManager:
    """Each one's precision for inference: upstream autocasts on CUDA only; ours as its stages run it."""
    if args.impl == "upstream":
        return torch.amp.autocast("cuda", dtype=torch.bfloat16) if args.device == "cuda" else contextlib.nullcontext()
    from nanochat.compute import Compute
    return Compute(torch.device(args.device)).autocast("decode" if decode else "score")


def run_worker(impl: str, what: str, args: argparse.Namespace, scratch: Path) -> dict:
    env = dict(os.environ)
    if what in ISA_LIMITS:
        env["ONEDNN_MAX_CPU_ISA"] = ISA_LIMITS[what]
    if impl == "upstream":
        env["PYTHONPATH"] = os.pathsep.join([str(ANCHOR), env.get("PYTHONPATH", "")])
    flags = [f"--{k}={v}" for k, v in vars(args).items()
             if k not in ("what", "worker", "reps", "impl", "scratch", "compile")] + ["--compile"] * args.compile
    command = [sys.executable, __file__, "--worker", f"--impl={impl}", f"--what={what}", f"--scratch={scratch}",
               *flags]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ANCHOR if impl == "upstream" else None,
                            env=env)
    if result.returncode != 0:
        raise SystemExit(f"{impl} {what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def write_inputs(scratch: Path, args: argparse.Namespace) -> None:
    """What the asked measurements of both sides read besides the weights: the tokenizer corpus, the scoring
    items; real offline text (ours to read it)."""
    import random

    from nanochat.core_eval import task_items
    from nanochat.dataset import offline_documents

    scoring = [what for what in args.what if what in SCORE_KINDS]
    if not scoring and "tok_train" not in args.what:
        return
    docs = [d[:10_000] for d in offline_documents()]  # as tok_train cuts documents
    if "tok_train" in args.what:
        train, held_out = docs[:int(len(docs) * 0.9)], docs[int(len(docs) * 0.9):]
        (scratch / "corpus.json").write_text(json.dumps({
            "train": train, "held_out": held_out, "train_bytes": sum(len(d.encode("utf-8")) for d in train),
            "held_out_bytes": sum(len(d.encode("utf-8")) for d in held_out)}))
    words = " ".join(docs).split()
    rng = random.Random(3)

    def text(n: int) -> str:
        start = rng.randrange(len(words) - n)
        return " ".join(words[start:start + n])

    def item(kind: str) -> dict:
        if kind == "multiple_choice":
            return {"query": text(60), "choices": [text(rng.randint(6, 14)) for _ in range(4)],
                    "gold": rng.randrange(4)}
        if kind == "schema":
            return {"context_options": [text(rng.randint(30, 50)) for _ in range(2)], "continuation": text(12),
                    "gold": rng.randrange(2)}
        return {"context": text(80), "continuation": text(2)}

    tasks = {}
    for kind in (SCORE_KINDS[what] for what in scoring):
        task = {"label": kind, "task_type": kind, "num_fewshot": 1, "delimiter": " ",
                "items": [item(kind) for _ in range(args.items)]}
        tasks[kind] = {**task, "shuffled": task_items(task, 0)}  # the order upstream's base_eval scores them in
    (scratch / "items.json").write_text(json.dumps(tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", nargs="+", default=list(UNITS), choices=list(UNITS))
    parser.add_argument("--reps", type=int, default=3, help="runs of each side per measurement")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (median)")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing (compilation)")
    parser.add_argument("--prompt_tokens", type=int, default=512)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="ours compiled too (runtime.compile; upstream is)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("ours", "upstream"), help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=24, help="CORE items per scoring measurement")
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        [what] = args.what
        if what in SCORE_KINDS:
            result = worker_score(args, SCORE_KINDS[what])
        else:
            result = {"decode": worker_decode, "tok_train": worker_tok_train}.get(what, worker_train)(args)
        print(json.dumps(result))
        return
    if not (ANCHOR / "nanochat" / "gpt.py").is_file():
        print(f"skipped: upstream nanochat is not at {ANCHOR} (../shared/anchors)")
        return

    from nanochat.gpt import GPT, GPTConfig  # ours, for the shared decoding weights

    heads = max(1, (args.width + 127) // 128)
    torch.manual_seed(0)
    model = GPT(GPTConfig(args.seq_len, args.vocab, args.depth, heads, heads, args.width))
    model.init_weights()
    for block in model.transformer.h:  # zero output projections would make every position alike
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.02)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.02)
    results: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        torch.save(model.state_dict(), scratch / "weights.pt")
        write_inputs(scratch, args)
        for what in args.what:
            runs = results[what] = {"upstream": [], "ours": []}
            for rep in range(args.reps):
                for impl in ("upstream", "ours") if rep % 2 == 0 else ("ours", "upstream"):  # interleaved
                    runs[impl].append(run_worker(impl, what, args, scratch))
                    print(f"{what} {impl} run {rep + 1}: {figure(runs[impl][-1]['value'])} {UNITS[what]}", flush=True)
    from nanochat.compute import cpu_bf16, cpu_description

    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_description()
    print(f"\n{device}; d{args.depth} (width {args.width}, vocab {args.vocab}), seq {args.seq_len}, "
          f"batch {args.batch}; ours {'compiled' if args.compile else 'not compiled'}; medians of {args.reps}\n")
    print("| what | upstream | ours | ours / upstream | notes |\n|---|---|---|---|---|")
    summary = {}
    for what, runs in results.items():
        up, ours = (statistics.median(r["value"] for r in runs[impl]) for impl in ("upstream", "ours"))
        notes = ""
        if what == "decode":
            same = all(r["tokens"] == runs["upstream"][0]["tokens"] for r in runs["ours"] + runs["upstream"])
            notes = "identical tokens" if same else "**tokens differ**"
        elif what in SCORE_KINDS:
            reference = runs["upstream"][0]["correct"]
            differ = max(sum(a != b for a, b in zip(r["correct"], reference)) for r in runs["ours"] + runs["upstream"])
            notes = (f"{len(reference)} items, accuracy {sum(reference) / len(reference):.3f}; "
                     + ("identical outcomes" if not differ else f"**{differ} outcomes differ**"))
        elif what == "tok_train":
            notes = "bytes/token held out " + " vs ".join(f"{runs[impl][0]['bytes_per_token']:.3f}"
                                                          for impl in ("upstream", "ours"))
        else:
            notes = (f"**emulated**: oneDNN limited to {ISA_LIMITS[what]} (bf16 matmuls {cpu_bf16(ISA_LIMITS[what])}) "
                     f"on this {cpu_bf16()} CPU; " if what in ISA_LIMITS and cpu_bf16(ISA_LIMITS[what]) != cpu_bf16()
                     else "")
            notes += (f"first step (compile) {statistics.median(r['first_step_s'] for r in runs['upstream']):.1f} s"
                     f" vs {statistics.median(r['first_step_s'] for r in runs['ours']):.1f} s")
        summary[what] = {"upstream": up, "ours": ours, "ratio": ours / up, "notes": notes}
        print(f"| {what} | {figure(up)} {UNITS[what]} | {figure(ours)} {UNITS[what]} | {ours / up:.2f} | {notes} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "side_by_side.json"
    out.write_text(json.dumps({"device": device, "args": {k: str(v) for k, v in vars(args).items()},
                               "summary": summary, "runs": results}, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
