"""Upstream nanochat 48abd7d (../shared/anchors) and ours, side by side on this machine, in one run.

Each measurement runs in a fresh process, upstream's and ours interleaved, `--reps` times each;
the table gives medians and the ratio ours / upstream (> 1: ours faster). Same shape, same tokens:
  train        optimizer steps (forward, backward, clipping, AdamW + Muon) on the same random token
               batch: upstream as its base_train runs (torch.compile, fp32 on a CPU), ours as ours
               runs by default (bf16 autocast where the CPU has AMX, else fp32; no compile)
  train_fp32   the same, ours forced onto its fp32 path while upstream keeps this CPU's AMX tiles for its
               bf16 Newton-Schulz: ours as on a CPU without AMX, upstream not
  train_avx2   the same with oneDNN limited to AVX2 in both processes (ONEDNN_MAX_CPU_ISA): a laptop CPU
               without AVX-512 and AMX, for both; ours then trains in fp32 by itself
  train_avx512 the same, limited to AVX-512 with bf16 instructions but no AMX (Zen 4, Cooper Lake)
  decode       greedy decoding with each one's Engine and KV cache, from the same weights and prompt;
               the tokens must be identical
Upstream's processes import upstream's `nanochat` package: its folder comes first on PYTHONPATH.
Skips, saying so, without ../shared/anchors. `bench/gpu_check.sh` runs it unchanged on a CUDA GPU.

    python bench/side_by_side.py [--reps 3] [--depth 4] [--what train train_fp32 decode]
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
UNITS = {"train": "tok/s", "train_fp32": "tok/s", "train_avx2": "tok/s", "train_avx512": "tok/s", "decode": "tok/s"}
# ONEDNN_MAX_CPU_ISA per measurement and side: oneDNN's limit, which our cpu_has_amx() reads too (nanochat.compute).
ISA_LIMITS = {"train_fp32": {"ours": "AVX512_CORE_BF16"}, "train_avx2": {"ours": "AVX2", "upstream": "AVX2"},
              "train_avx512": {"ours": "AVX512_CORE_BF16", "upstream": "AVX512_CORE_BF16"}}


class StubTokenizer:
    """What both engines ask of a tokenizer, with special tokens outside the vocabulary: a random model
    never stops early, and both decode exactly the tokens asked for."""
    bos_id = -1

    def special_id(self, token: str) -> int:  # ours
        return -2 - sum(map(ord, token))

    encode_special = special_id  # upstream's names

    def get_bos_token_id(self) -> int:
        return self.bos_id

    def encode(self, text: str, *args, **kwargs) -> list[int]:
        return []

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


def worker_decode(args: argparse.Namespace) -> dict:
    from nanochat import gpt
    from nanochat.engine import Engine

    model = build_model(args)
    model.load_state_dict(torch.load(args.weights), strict=True)  # the same weights for both
    model.eval()
    prompt = torch.randint(0, args.vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(2)).tolist()
    engine = Engine(model, StubTokenizer())
    with decode_precision(args):
        engine.generate_batch(prompt[:16], 1, max_tokens=4, temperature=0.0)  # warm-up
        started = time.perf_counter()
        out = engine.generate_batch(prompt, 1, max_tokens=args.new_tokens, temperature=0.0)
        seconds = time.perf_counter() - started
    tokens = out[0][0] if args.impl == "upstream" else out[0]  # upstream: (sequences with the prompt, masks)
    tokens = tokens[len(prompt):] if args.impl == "upstream" else tokens
    return {"value": args.new_tokens / seconds, "tokens": tokens, "package": gpt.__file__}


def decode_precision(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Each one's precision for decoding: upstream autocasts on CUDA only; ours as its Engine users run it."""
    if args.impl == "upstream":
        return torch.amp.autocast("cuda", dtype=torch.bfloat16) if args.device == "cuda" else contextlib.nullcontext()
    from nanochat.compute import Compute
    return Compute(torch.device(args.device)).autocast(decode=True)


def run_worker(impl: str, what: str, args: argparse.Namespace, weights: Path) -> dict:
    env = dict(os.environ)
    if impl in ISA_LIMITS.get(what, {}):
        env["ONEDNN_MAX_CPU_ISA"] = ISA_LIMITS[what][impl]
    if impl == "upstream":
        env["PYTHONPATH"] = os.pathsep.join([str(ANCHOR), env.get("PYTHONPATH", "")])
    flags = [f"--{k}={v}" for k, v in vars(args).items()
             if k not in ("what", "worker", "reps", "impl", "weights", "compile")] + ["--compile"] * args.compile
    command = [sys.executable, __file__, "--worker", f"--impl={impl}", f"--what={what}", f"--weights={weights}",
               *flags]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ANCHOR if impl == "upstream" else None,
                            env=env)
    if result.returncode != 0:
        raise SystemExit(f"{impl} {what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        [what] = args.what
        print(json.dumps((worker_decode if what == "decode" else worker_train)(args)))
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
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / "weights.pt"
        torch.save(model.state_dict(), weights)
        for what in args.what:
            runs = results[what] = {"upstream": [], "ours": []}
            for rep in range(args.reps):
                for impl in ("upstream", "ours") if rep % 2 == 0 else ("ours", "upstream"):  # interleaved
                    runs[impl].append(run_worker(impl, what, args, weights))
                    print(f"{what} {impl} run {rep + 1}: {runs[impl][-1]['value']:,.0f} {UNITS[what]}", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
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
        else:
            notes = (f"first step (compile) {statistics.median(r['first_step_s'] for r in runs['upstream']):.1f} s"
                     f" vs {statistics.median(r['first_step_s'] for r in runs['ours']):.1f} s")
        summary[what] = {"upstream": up, "ours": ours, "ratio": ours / up, "notes": notes}
        print(f"| {what} | {up:,.0f} {UNITS[what]} | {ours:,.0f} {UNITS[what]} | {ours / up:.2f} | {notes} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "side_by_side.json"
    out.write_text(json.dumps({"device": device, "args": {k: str(v) for k, v in vars(args).items()},
                               "summary": summary, "runs": results}, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
