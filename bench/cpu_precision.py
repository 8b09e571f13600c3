"""Each CPU path in fp32 and in bf16 on this machine: the measurement behind nanochat.compute.BF16_PATHS.

For oneDNN's own instruction sets and each class below them (ONEDNN_MAX_CPU_ISA: AMX, then AVX-512 with
bf16 dot products as a Zen 4 has, then AVX2 only), a fresh process times each path both ways in two
interleaved rounds (fp32 first, then bf16 first), each the median of --reps calls; the table gives the median:
  matmul         a 1024 x 1024 x 1024 product (GFLOP/s)
  train          forward + backward of the course model (tok/s)
  newton_schulz  Muon's orthogonalization of that model's matrices, grouped by shape as Muon does (ms)
  score          a no-grad forward with the loss at every position, as CORE scores (tok/s)
  decode         greedy decoding from the KV cache after a prompt (tok/s)
and says what ours computes in on such a CPU. A limit below this CPU's own class is labelled "emulated":
another CPU's instructions run on this one's cores, memory and caches, which is not that CPU.

    python bench/cpu_precision.py [--reps 5] [--depth 4] [--limits ALL AVX512_CORE_BF16 AVX2]
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from engine_decode import NoStopTokenizer

from nanochat import compute, muon
from nanochat.engine import Engine
from nanochat.gpt import GPT, GPTConfig

PATHS = {"matmul": "GFLOP/s", "train": "tok/s", "newton_schulz": "ms", "score": "tok/s", "decode": "tok/s"}
CLASS_LIMITS = {"amx": "ALL", "avx512_bf16": "AVX512_CORE_BF16", "emulated": "AVX2"}  # the limit that gives each


def timed(run, reps: int) -> float:
    """Median seconds of `run()` over `reps` calls, after one untimed call."""
    run()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(path: str, bf16: bool, args: argparse.Namespace, model: GPT) -> float:
    """One path in one precision, in its unit (PATHS)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    tokens = torch.randint(0, args.vocab, (1, args.seq_len), generator=torch.Generator().manual_seed(1))
    if path == "matmul":
        dtype = torch.bfloat16 if bf16 else torch.float32
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        return 2 * 1024 ** 3 / timed(lambda: a @ b, args.reps * 4) / 1e9
    if path == "train":
        def step() -> None:
            with autocast:
                loss = model(tokens, tokens)
            loss.backward()
            model.zero_grad(set_to_none=True)
        return args.seq_len / timed(step, args.reps)
    if path == "newton_schulz":
        muon.bf16_on_cpu = lambda _: bf16  # the precision under test, where Muon asks compute.BF16_PATHS
        groups: dict[tuple, list] = {}
        for p in model.transformer.h.parameters():
            groups.setdefault(tuple(p.shape), []).append(torch.randn_like(p))
        return 1000 * timed(lambda: [muon.newton_schulz(torch.stack(g)) for g in groups.values()], args.reps)
    if path == "score":
        def forward() -> None:
            with torch.no_grad(), autocast:
                model(tokens, tokens, loss_reduction="none")
        return args.seq_len / timed(forward, args.reps)
    engine, prompt = Engine(model, NoStopTokenizer()), tokens[0, :256].tolist()

    def decode() -> None:
        with torch.no_grad(), autocast:
            engine.generate_batch(prompt, 1, max_tokens=args.new_tokens, temperature=0.0)
    return args.new_tokens / timed(decode, max(1, args.reps // 2))


def worker(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(args.depth, args.vocab, args.seq_len))
    model.init_weights()
    results = {"class": compute.cpu_bf16(), "uses": {}, "fp32": {}, "bf16": {}}
    for path in PATHS:
        results["uses"][path] = "bf16" if path != "matmul" and compute.bf16_on_cpu(path) else "fp32"
        for rep in range(2):  # fp32, bf16, bf16, fp32: neither side always first
            for precision in ("fp32", "bf16") if rep == 0 else ("bf16", "fp32"):
                results[precision].setdefault(path, []).append(measure(path, precision == "bf16", args, model))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", nargs="+", help="oneDNN limits to run under (default: this CPU's class "
                                                     "and every class below it)")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    classes = list(CLASS_LIMITS)
    own = compute.cpu_bf16()
    limits = args.limits or [CLASS_LIMITS[c] for c in classes[classes.index(own):]]
    print(f"{compute.cpu_description()}\nd{args.depth}, vocab {args.vocab}, seq {args.seq_len}, batch 1; "
          f"{args.new_tokens} decoded tokens after 256; two interleaved rounds of {args.reps} calls\n")
    print("| oneDNN limit | bf16 matmuls | measured on | path | fp32 | bf16 | bf16 / fp32 | ours computes in |\n"
          "|---|---|---|---|---|---|---|---|")
    for limit in limits:
        flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("limits", "worker")]
        out = subprocess.run([sys.executable, __file__, "--worker", *flags], capture_output=True, text=True,
                             env={**os.environ, "ONEDNN_MAX_CPU_ISA": limit}, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        where = f"**emulated** on this {own} CPU" if result["class"] != own else "this CPU"
        for path, unit in PATHS.items():
            fp32, bf16 = (statistics.median(result[p][path]) for p in ("fp32", "bf16"))
            speedup = fp32 / bf16 if unit == "ms" else bf16 / fp32
            print(f"| {limit} | {result['class']} | {where} | {path} | {fp32:,.1f} {unit} | {bf16:,.1f} {unit} | "
                  f"{speedup:.2f} | {result['uses'][path] if path != 'matmul' else ''} |", flush=True)


if __name__ == "__main__":
    main()
