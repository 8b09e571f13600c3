"""Training throughput of the config presets on this machine, and a FLOPs-per-token check at d20 shape.

For each preset: full optimizer steps (forward+backward over the gradient accumulation, AdamW +
Muon) on random tokens of the preset's shape, in two modes measured in this process:
  baseline  fp32 everywhere
  ours      what base_train does here (bf16 autocast and Newton-Schulz where compute.BF16_PATHS says)
Prints tok/s, ms/step, time per 100 steps, MFU against this process's measured matmul peak, and the
ratio ours/baseline. Upstream, side by side on this machine: bench/side_by_side.py.

    python bench/base_train.py --presets tiny cpu-5m [--d20]
"""

import argparse
import contextlib
import os
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from nanochat import compute as compute_mod
from nanochat.gpt import GPT, GPTConfig
from nanochat.training import Schedule

PRESETS = Path(__file__).resolve().parent.parent / "config" / "presets"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - started)


def step_time(depth: int, T: int, B: int, total: int, vocab: int, fast: bool, steps: int) -> tuple[float, GPT]:
    """Seconds per optimizer step, averaged over `steps` after one warm-up step."""
    # The baseline is our fp32 path (model and Muon): compute.cpu_bf16() says "emulated" under an AVX2 limit of
    # oneDNN, which fp32 matmuls (MKL) do not go through.
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if not fast:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    try:
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_depth(depth, vocab, T))
        model.init_weights()
        optimizers = model.setup_optimizers(0.2, 0.004, 0.02, 0.0)
        cpu = compute_mod.Compute(torch.device("cpu"))
        accum = total // (B * T)
        x, y = torch.randint(0, vocab, (B, T)), torch.randint(0, vocab, (B, T))
        schedule = Schedule(steps + 1, 0.0)

        def one_step(step: int) -> None:
            for _ in range(accum):
                with cpu.autocast() if fast else contextlib.nullcontext():
                    loss = model(x, y)
                (loss / accum).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizers[1].param_groups[0]["momentum"] = schedule.muon_momentum(step)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)

        one_step(0)
        started = time.perf_counter()
        for step in range(1, steps + 1):
            one_step(step)
        return (time.perf_counter() - started) / steps, model
    finally:
        os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
        if limit is not None:
            os.environ["ONEDNN_MAX_CPU_ISA"] = limit


def preset_shape(name: str) -> tuple[int, int, int, int, int]:
    cfg = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    bt = cfg["base_train"]
    return bt["depth"], bt["max_seq_len"], bt["device_batch_size"], bt["total_batch_size"], \
        cfg["tok_train"]["vocab_size"]


def d20_flops_check(seq_len: int) -> None:
    """FLOPs of one forward+backward at batch 1, counted by torch, vs the model's formula."""
    model = GPT(GPTConfig.from_depth(20, 65536, seq_len))
    model.init_weights()
    x = torch.randint(0, 65536, (1, seq_len))
    counter = FlopCounterMode(display=False)
    started = time.perf_counter()
    with counter:
        model(x, x).backward()
    seconds = time.perf_counter() - started
    counted = counter.get_total_flops() / seq_len
    formula = model.flops_per_token()
    print(f"d20 (561M) fwd+bwd, batch 1 x {seq_len}: {seconds:.1f} s, {seq_len / seconds:,.0f} tok/s; FLOPs/token "
          f"counted {counted:.4g} vs formula {formula:.4g} (ratio {counted / formula:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["tiny", "cpu-5m"], help="config/presets/ names")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per preset and mode")
    parser.add_argument("--d20", action="store_true", help="also the d20 FLOPs-per-token check (about a minute)")
    parser.add_argument("--d20_seq_len", type=int, default=512, help="sequence length for the d20 check")
    args = parser.parse_args()

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    fast_peak = peaks["bf16"] if compute_mod.bf16_on_cpu("train") else peaks["fp32"]
    print(f"{compute_mod.cpu_description()}\n{torch.get_num_threads()} threads; matmul peak "
          f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{'shape':<28}{'mode':<10}{'tok/s':>9}{'ms/step':>9}{'100 steps':>11}{'MFU':>7}{'ratio':>8}")
    shapes = [(name, preset_shape(name)) for name in args.presets] + [("d4-seq1024", (4, 1024, 1, 1024, 4096))]
    for name, (depth, T, B, total, vocab) in shapes:
        results = {}
        for mode, fast, peak in (("baseline", False, peaks["fp32"]), ("ours", True, fast_peak)):
            seconds, model = step_time(depth, T, B, total, vocab, fast, args.steps)
            tok_s = total / seconds
            results[mode] = tok_s
            label = f"{name} ({model.num_params() / 1e6:.1f}M)"
            ratio = "" if mode == "baseline" else f"{tok_s / results['baseline']:.2f}x"
            print(f"{label:<28}{mode:<10}{tok_s:>9,.0f}{1000 * seconds:>9.0f}{100 * seconds / 60:>9.1f} m"
                  f"{100 * tok_s * model.flops_per_token() / peak:>6.1f}%{ratio:>8}")
    if args.d20:
        d20_flops_check(args.d20_seq_len)


if __name__ == "__main__":
    main()
