"""Ours' 2026 recipe beside upstream 92d63d4 (../shared/anchors) and beside ours' course recipe, on this CPU.

  upstream  `nanochat.scripts.base_train --recipe=2026` against upstream's `scripts/base_train.py`, each run in a
            fresh process, the two interleaved, on the same shards and the same tokenizer, at each of --depths
            for each of --seeds: training tok/s (the median of the steps after --skip: upstream's first step
            compiles) and validation bits per byte at the same steps (every --eval_every and the last, on
            --eval_tokens). Same shape and batches for both (--seq_len, --device_batch, --total_batch,
            --steps); everything else each one's default (2026: windows SSSL, warmup 40, warmdown 0.65, ...).
            Upstream runs as its base_train does (torch.compile, fp32 on a CPU), its fixed seed (42, in
            compute_init) replaced by the run's right after; ours as it runs (not compiled unless
            --ours_compile). Means and spread (sample standard deviation) over the seeds, "within seed noise"
            when the means differ by at most two standard errors; and the differences seed by seed (paired: one
            seed gives both the same initial weights, both building the model on the meta device).
  wall      ours --recipe=2026 against ours --recipe=course at equal training time, at the shape of
            config/presets/cpu-15m.yaml (depth, context, batches, validation tokens): --calibrate steps of each
            give its step time, then each trains its whole schedule over the steps that fit in --minutes
            (each as ours runs it here: course in bf16 autocast where the CPU has AMX, 2026 in fp32 on a CPU as
            upstream); the validation bits-per-byte difference is printed.

Data: the offline corpus in --shards shards (nanochat.dataset.build_offline_shard, as the CPU presets), written
once into a scratch folder the way upstream reads them (NANOCHAT_BASE_DIR/base_data_climbmix/shard_XXXXX.parquet,
the last one validation); ours is given the same files. Tokenizer: ours (tok_train, --vocab) on the
training shards, converted to upstream's tiktoken pickle (the byte-level tokens' bytes ranked by our ids, the
special tokens at our ids) with the same token_bytes.pt; both must encode every shard to identical ids before
anything is measured. Both processes get the same environment (ours' GOMP_SPINCOUNT included) and all cores.

The upstream comparison skips, saying so, without ../shared/anchors or without rustbpe and tiktoken (upstream's
tokenizer module imports both: `pip install -e '.[bench]'`); the wall-time comparison needs neither.

    python bench/recipe_2026.py [--what upstream wall] [--depths 4 6] [--seeds 42 43 44] [--steps 40] [--minutes 3]

The defaults take about half an hour on 2 cores (the first time longer: upstream compiles each shape once into
torch's cache). 40 steps are the 2026 recipe's warmup; --steps 100 reaches into its warmdown.
"""

import argparse
import importlib.util
import json
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from nanochat.dataset import build_offline_shard, read_texts, row_group_count
from nanochat.scripts.base_train import RECIPES
from nanochat.tokenizer import BYTE_CHARS, SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

REPO = Path(__file__).resolve().parents[1]
ANCHOR = REPO.parent / "shared" / "anchors" / "nanochat-92d63d4"
RESULTS = REPO / "bench" / "results"
PRESET = REPO / "config" / "presets" / "cpu-15m.yaml"
# Upstream's base_train with the run's seed: compute_init seeds 42, and only the weight init draws from that
# generator afterwards, so re-seeding right after it is all a seed flag would do.
UPSTREAM_LAUNCH = ("import runpy, sys, torch, nanochat.common as common; seed = int(sys.argv.pop(1)); "
                   "init = common.compute_init; "
                   "common.compute_init = lambda *a: (init(*a), torch.manual_seed(seed))[0]; "
                   "runpy.run_module('scripts.base_train', run_name='__main__', alter_sys=True)")
UPSTREAM_STEP = re.compile(r"^step (\d+)/\d+ .*\| dt: ([\d.]+)ms", re.M)
UPSTREAM_BPB = re.compile(r"^Step (\d+) \| Validation bpb: ([\d.]+)", re.M)


def to_tiktoken(tokenizer: Tokenizer):
    """Our tokenizer as the tiktoken Encoding upstream pickles: each token's bytes ranked by its id (HF's ids
    follow the merge order, which is tiktoken's rank), the special tokens at our ids."""
    import tiktoken

    chars = {char: byte for byte, char in enumerate(BYTE_CHARS)}
    vocab = tokenizer.hf.get_vocab()
    ranks = {bytes(chars[c] for c in token): i for token, i in vocab.items() if token not in SPECIAL_TOKENS}
    return tiktoken.Encoding("nanochat-flow", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens={token: vocab[token] for token in SPECIAL_TOKENS})


def shard_texts(path: Path) -> list[str]:
    return [text for rg in range(row_group_count(path)) for text in read_texts(path, rg)]


def check_same_ids(tokenizer: Tokenizer, encoding, shards: list[Path]) -> int:
    """Tokens of all the shards, which both tokenizers must encode to the same ids (else the bench stops)."""
    if encoding.encode_single_token("<|bos|>") != tokenizer.bos_id:
        raise SystemExit("the tiktoken copy has another <|bos|> id")
    total = 0
    for shard in shards:
        texts = shard_texts(shard)
        ours, theirs = list(tokenizer.encode_batch(texts)), encoding.encode_ordinary_batch(texts)
        for text, a, b in zip(texts, ours, theirs):
            if a != b:
                raise SystemExit(f"the tokenizers differ on a document of {shard.name}: {text[:80]!r}...")
        total += sum(map(len, ours))
    return total


def prepare_data(scratch: Path, args: argparse.Namespace, upstream: bool) -> dict:
    """Shards, ours' tokenizer and (for the upstream comparison) its tiktoken copy, under `scratch`."""
    data = scratch / "base_data_climbmix"  # upstream's folder under NANOCHAT_BASE_DIR, last shard = validation
    data.mkdir(parents=True)
    shards = [data / f"shard_{i:05d}.parquet" for i in range(args.shards)]
    for i, shard in enumerate(shards):
        build_offline_shard(i, args.shards, shard)
    ours_dir = scratch / "tok"
    run([sys.executable, "-m", "nanochat.scripts.tok_train", f"--vocab_size={args.vocab}", f"--out_dir={ours_dir}",
         *map(str, shards[:-1])], "tok_train")
    tokenizer = Tokenizer.load(ours_dir / "tokenizer.json")
    info = {"train": shards[:-1], "val": shards[-1], "tokenizer": ours_dir / "tokenizer.json", "vocab": args.vocab}
    if upstream:
        encoding = to_tiktoken(tokenizer)
        info["tokens_checked"] = check_same_ids(tokenizer, encoding, shards)
        upstream_dir = scratch / "tokenizer"  # upstream's get_tokenizer() and get_token_bytes() read these
        upstream_dir.mkdir()
        (upstream_dir / "tokenizer.pkl").write_bytes(pickle.dumps(encoding))
        shutil.copy(ours_dir / "token_bytes.pt", upstream_dir / "token_bytes.pt")
    return info


def run(command: list[str], what: str, **kwargs) -> tuple[str, float]:
    """Stdout and wall seconds of a finished command; the bench stops with the end of its stderr if it failed."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout, time.perf_counter() - started


def train_upstream(scratch: Path, shape: dict, seed: int) -> dict:
    """Upstream's base_train on the scratch data: its per-step seconds and validation bpb by step."""
    flags = {"depth": shape["depth"], "max-seq-len": shape["seq_len"], "device-batch-size": shape["device_batch"],
             "total-batch-size": shape["total_batch"], "num-iterations": shape["steps"],
             "eval-every": shape["eval_every"], "eval-tokens": shape["eval_tokens"], "core-metric-every": -1,
             "sample-every": -1, "device-type": "cpu", "model-tag": "bench"}
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(scratch),
           "PYTHONPATH": os.pathsep.join([str(ANCHOR), os.environ.get("PYTHONPATH", "")])}
    out, wall = run([sys.executable, "-c", UPSTREAM_LAUNCH, str(seed), *(f"--{k}={v}" for k, v in flags.items())],
                    f"upstream d{shape['depth']} seed {seed}", cwd=ANCHOR, env=env)
    parsed = parse_upstream(out)
    if len(parsed["step_s"]) != shape["steps"]:
        raise SystemExit(f"upstream printed {len(parsed['step_s'])} step lines, not {shape['steps']}:\n{out[-3000:]}")
    return {**parsed, "wall_s": wall}


def parse_upstream(out: str) -> dict:
    """Per-step seconds (its `dt`, which leaves out evaluation) and validation bpb by step from upstream's output."""
    steps = sorted((int(step), float(ms) / 1000) for step, ms in UPSTREAM_STEP.findall(out))
    return {"step_s": [seconds for _, seconds in steps],
            "bpb": {int(step): float(bpb) for step, bpb in UPSTREAM_BPB.findall(out)}}


def train_ours(scratch: Path, data: dict, shape: dict, seed: int, recipe: str, compile_model: bool) -> dict:
    """Ours' base_train on the scratch data: its per-step seconds and validation bpb by step (base_train.json)."""
    folder = Path(tempfile.mkdtemp(prefix=f"ours-{recipe}-", dir=scratch))
    flags = {"recipe": recipe, "depth": shape["depth"], "max_seq_len": shape["seq_len"],
             "device_batch_size": shape["device_batch"], "total_batch_size": shape["total_batch"],
             "num_iterations": shape["steps"], "eval_every": shape["eval_every"],
             "eval_tokens": shape["eval_tokens"], "seed": seed, "device": "cpu", "compile": compile_model,
             "checkpoint_every": 0, "tokenizer": data["tokenizer"], "val": data["val"],
             "out_dir": folder / "out", "ckpt_dir": folder / "steps"}
    _, wall = run([sys.executable, "-m", "nanochat.scripts.base_train", *(f"--{k}={v}" for k, v in flags.items()),
                   *map(str, data["train"])], f"ours {recipe} d{shape['depth']} seed {seed}", cwd=REPO)
    history = json.loads((folder / "out" / "base_train.json").read_text())["history"]
    shutil.rmtree(folder)
    return {"step_s": [shape["total_batch"] / entry["tok_per_s"] for entry in history], "wall_s": wall,
            "bpb": {entry["step"]: entry["val_bpb"] for entry in history if "val_bpb" in entry}}


def tok_s(result: dict, tokens_per_step: int, skip: int) -> float:
    """Steady-state throughput: tokens per step over the median step time after the first `skip` steps."""
    return tokens_per_step / statistics.median(result["step_s"][skip:])


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_upstream(scratch: Path, data: dict, args: argparse.Namespace) -> dict:
    """Part 1: for each depth, every seed's run of upstream and of ours, interleaved, then the summary table."""
    summary = {}
    for depth in args.depths:
        shape = {"depth": depth, "seq_len": args.seq_len, "device_batch": args.device_batch,
                 "total_batch": args.total_batch, "steps": args.steps, "eval_every": args.eval_every,
                 "eval_tokens": args.eval_tokens}
        runs: dict[str, list[dict]] = {"upstream": [], "ours": []}
        for i, seed in enumerate(args.seeds):
            for impl in ("upstream", "ours") if i % 2 == 0 else ("ours", "upstream"):
                result = (train_upstream(scratch, shape, seed) if impl == "upstream" else
                          train_ours(scratch, data, shape, seed, "2026", args.ours_compile))
                result.update(seed=seed, tok_s=tok_s(result, args.total_batch, args.skip))
                runs[impl].append(result)
                final = result["bpb"].get(args.steps, float("nan"))
                print(f"d{depth} {impl} seed {seed}: {result['tok_s']:,.0f} tok/s, bpb {final:.4f} at step "
                      f"{args.steps}, first step {result['step_s'][0]:.1f} s, {result['wall_s']:.0f} s in all",
                      flush=True)
        summary[f"d{depth}"] = summarize(runs, args)
    print_upstream_tables(summary, args)
    return summary


def summarize(runs: dict[str, list[dict]], args: argparse.Namespace) -> dict:
    """Means and spreads over seeds: tok/s, and bpb at each step both evaluated, with the per-seed differences
    (paired: the same seed gives both the same initial weights)."""
    steps = sorted(set.intersection(*(set(r["bpb"]) for rs in runs.values() for r in rs)))
    out = {"runs": runs, "tok_s": {impl: spread([r["tok_s"] for r in rs]) for impl, rs in runs.items()},
           "bpb": {step: {**{impl: spread([r["bpb"][step] for r in rs]) for impl, rs in runs.items()},
                          "paired": spread([o["bpb"][step] - u["bpb"][step]
                                            for u, o in zip(runs["upstream"], runs["ours"])])}
                   for step in steps}}
    out["ratio"] = out["tok_s"]["ours"][0] / out["tok_s"]["upstream"][0]
    return out


def within_noise(ours: tuple[float, float], upstream: tuple[float, float], n: int) -> bool:
    """Whether the means differ by at most two standard errors of their difference (seed noise)."""
    return abs(ours[0] - upstream[0]) <= 2 * ((ours[1] ** 2 + upstream[1] ** 2) / n) ** 0.5


def pm(value: tuple[float, float], digits: int) -> str:
    """mean ± sd"""
    return f"{value[0]:,.{digits}f} ± {value[1]:,.{digits}f}"


def print_upstream_tables(summary: dict, args: argparse.Namespace) -> None:
    n = len(args.seeds)
    print(f"\nours --recipe=2026 vs upstream 92d63d4: seq {args.seq_len}, {args.device_batch} x {args.seq_len} "
          f"tokens per micro-batch, {args.total_batch:,} per step, {args.steps} steps; mean ± sd over {n} seeds "
          f"({', '.join(map(str, args.seeds))}); tok/s the median after step {args.skip}\n")
    print(f"| depth | upstream tok/s | ours tok/s | ours / upstream | upstream bpb @{args.steps} "
          f"| ours bpb @{args.steps} | ours - upstream |\n|---|---|---|---|---|---|---|")
    for depth, s in summary.items():
        up, ours = s["tok_s"]["upstream"], s["tok_s"]["ours"]
        last = s["bpb"].get(args.steps)
        if last is None:
            bpb = "n/a | n/a | n/a"
        else:
            noise = ("one seed: no spread" if n < 2 else "within seed noise"
                     if within_noise(last["ours"], last["upstream"], n) else "**beyond seed noise**")
            bpb = (f"{pm(last['upstream'], 4)} | {pm(last['ours'], 4)} | "
                   f"{last['ours'][0] - last['upstream'][0]:+.4f} ({noise})")
        print(f"| {depth} | {pm(up, 0)} | {pm(ours, 0)} | {s['ratio']:.2f} | {bpb} |")
    print("\n| depth | step | upstream bpb | ours bpb | ours - upstream | same seed: ours - upstream |\n"
          "|---|---|---|---|---|---|")
    for depth, s in summary.items():
        for step, b in s["bpb"].items():
            print(f"| {depth} | {step} | {pm(b['upstream'], 4)} | {pm(b['ours'], 4)} | "
                  f"{b['ours'][0] - b['upstream'][0]:+.4f} | {b['paired'][0]:+.4f} ± {b['paired'][1]:.4f} |")


def compare_wall(scratch: Path, data: dict, args: argparse.Namespace) -> dict:
    """Part 2: 2026 and course at the cpu-15m shape, each over the steps that fit in the same training time."""
    preset = yaml.safe_load(PRESET.read_text())
    train, runtime = preset["base_train"], preset["runtime"]
    shape = {"depth": train["depth"], "seq_len": train["max_seq_len"], "device_batch": train["device_batch_size"],
             "total_batch": train["total_batch_size"], "eval_tokens": runtime["eval_tokens"]}
    seed, results = args.seeds[0], {}
    for recipe in ("2026", "course"):
        calibration = train_ours(scratch, data, {**shape, "steps": args.calibrate, "eval_every": 0,
                                                 "eval_tokens": shape["device_batch"] * shape["seq_len"]},
                                 seed, recipe, args.ours_compile)
        step_s = statistics.median(calibration["step_s"][2:])  # the first steps allocate and warm up
        steps = max(1, int(args.minutes * 60 / step_s))
        result = train_ours(scratch, data, {**shape, "steps": steps, "eval_every": 0}, seed, recipe,
                            args.ours_compile)
        results[recipe] = {"steps": steps, "calibrated_step_s": step_s, "train_s": sum(result["step_s"]),
                           "bpb": result["bpb"][steps], "run": result}
        print(f"cpu-15m shape, {recipe}: {steps} steps of {step_s:.2f} s, trained {results[recipe]['train_s']:.0f} s, "
              f"bpb {results[recipe]['bpb']:.4f}", flush=True)
    print(f"\nours 2026 vs ours course at equal training time ({args.minutes:g} min each), cpu-15m shape: d"
          f"{shape['depth']}, seq {shape['seq_len']}, {shape['total_batch']:,} tokens per step, seed {seed}\n")
    print("| recipe | steps | s/step | training time | validation bpb |\n|---|---|---|---|---|")
    for recipe, r in results.items():
        print(f"| {recipe} | {r['steps']} | {r['train_s'] / r['steps']:.2f} | {r['train_s']:.0f} s | {r['bpb']:.4f} |")
    warmup = RECIPES["2026"]["warmup_steps"]
    if results["2026"]["steps"] < warmup:
        print(f"\n2026 trained only {results['2026']['steps']} steps, inside its {warmup}-step learning-rate warmup")
    difference = results["2026"]["bpb"] - results["course"]["bpb"]
    print(f"\nbpb 2026 - course: {difference:+.4f} ({'2026' if difference < 0 else 'course'} lower)")
    return {"shape": shape, "seed": seed, "results": results, "bpb_2026_minus_course": difference}


def machine() -> dict:
    """The CPU model, its ISA flags that decide the kernels (AMX, AVX512_BF16, AVX2), cores and torch."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split()) if cpuinfo else set()
    return {"cpu": model.group(1) if model else platform.processor(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "AMX": "amx_tile" in flags, "AVX512_BF16": "avx512_bf16" in flags, "AVX2": "avx2" in flags,
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}


def upstream_missing() -> str | None:
    """Why the upstream comparison cannot run here, or None."""
    if not (ANCHOR / "scripts" / "base_train.py").is_file():
        return f"upstream nanochat 92d63d4 is not at {ANCHOR} (../shared/anchors)"
    missing = [name for name in ("rustbpe", "tiktoken") if importlib.util.find_spec(name) is None]
    return f"upstream imports {' and '.join(missing)}: pip install -e '.[bench]'" if missing else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", nargs="+", default=["upstream", "wall"], choices=["upstream", "wall"])
    parser.add_argument("--depths", nargs="+", type=int, default=[4, 6])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="42: upstream's own")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each upstream comparison run")
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--device_batch", type=int, default=4, help="sequences per micro-batch")
    parser.add_argument("--total_batch", type=int, default=4096, help="tokens per optimizer step")
    parser.add_argument("--eval_every", type=int, default=20)
    parser.add_argument("--eval_tokens", type=int, default=32768)
    parser.add_argument("--skip", type=int, default=3, help="first steps left out of the tok/s median")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each recipe in the wall part")
    parser.add_argument("--calibrate", type=int, default=6, help="steps timing each recipe in the wall part (3+)")
    parser.add_argument("--shards", type=int, default=4, help="offline shards, the last one validation")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--ours_compile", action="store_true", help="ours torch.compiled too (upstream always is)")
    parser.add_argument("--scratch", type=Path, help="a new folder to keep the data and tokenizers in")
    parser.add_argument("--out", type=Path, default=RESULTS / "recipe_2026.json", help="the results JSON")
    args = parser.parse_args()
    if args.calibrate < 3:
        parser.error("--calibrate needs at least 3 steps: the first two are left out")

    info = machine()
    print(f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads; AMX {info['AMX']}, AVX512_BF16 "
          f"{info['AVX512_BF16']}, AVX2 {info['AVX2']}; torch {info['torch']}; GOMP_SPINCOUNT "
          f"{info['GOMP_SPINCOUNT']}, OMP_WAIT_POLICY {info['OMP_WAIT_POLICY']} (both sides)")
    why_not = upstream_missing() if "upstream" in args.what else None
    if why_not:
        print(f"upstream comparison skipped: {why_not}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = args.scratch or Path(tmp)
        data = prepare_data(scratch, args, upstream="upstream" in args.what and not why_not)
        if "tokens_checked" in data:
            print(f"tokenizer: vocab {args.vocab}, ours and its tiktoken copy give identical ids on all "
                  f"{args.shards} shards ({data['tokens_checked']:,} tokens)", flush=True)
        record = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
                  "tokens_checked": data.get("tokens_checked")}
        if "upstream" in args.what and not why_not:
            record["upstream"] = compare_upstream(scratch, data, args)
        if "wall" in args.what:
            record["wall"] = compare_wall(scratch, data, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
