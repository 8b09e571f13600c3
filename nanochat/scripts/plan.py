"""The run's plan, before anything starts (no GPU, seconds): the model's size, each training stage's steps,
tokens and FLOPs, the hours that takes on the profile's GPUs, how many jobs of the profile's time limit,
GPU-hours and cost, the scratch space it needs against what is free, and which downloads are present.

    snakemake --profile profiles/ptolemy plan      # the rule passes the config and the profile's GPUs

Hours come from a measured model FLOPs utilisation (MFU) per GPU type, MEASURED below, each with its source;
a GPU type without a measurement gets no hours, rather than a guess. The 2026 recipe has no measured MFU on
any GPU type here: its hours assume the course recipe's, and the plan says so.
"""

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from nanochat import layout
from nanochat.gpt import GPT, GPTConfig
from nanochat.scripts import chat_sft
from nanochat.scripts.base_train import BaseTrainSettings, horizon, model_config, resolved
from nanochat.scripts.chat_sft import ChatSftSettings
from nanochat.training import RuntimeSettings

PEAK_FLOPS = {"a100": 312e12, "h100": 989e12}  # dense bf16 FLOP/s per GPU, the vendors' data sheets
# Measured runs: MFU = FLOPs of the run (our flops_per_token, the same formula as upstream's) / (GPUs x peak x s).
MEASURED = {"a100": {"source": "the course fork's d20 base training (job 76356): 21,400 steps of 524,288 tokens "
                               "in 7 h 05 min 14 s on 8 A100s",
                     "depth": 20, "vocab_size": 65536, "sequence_len": 2048, "steps": 21_400,
                     "tokens_per_step": 524_288, "seconds": 7 * 3600 + 5 * 60 + 14, "gpus": 8}}
# One pretraining shard on disk (fineweb-edu: 240 = 24 GB; ClimbMix: ~100 MB each, upstream 92d63d4's speedrun.sh).
SHARD_BYTES = {"fineweb-edu": 100e6, "climbmix": 100e6, "offline": 2e6}


def measured_mfu(gpu: str) -> float | None:
    run = MEASURED.get(gpu)
    if run is None:
        return None
    with torch.device("meta"):  # the course recipe's model: sizes without memory
        flops = GPT(GPTConfig.from_depth(run["depth"], run["vocab_size"], run["sequence_len"])).flops_per_token()
    return flops * run["steps"] * run["tokens_per_step"] / (run["gpus"] * PEAK_FLOPS[gpu] * run["seconds"])


def checkpoint_bytes(model: GPT) -> float:
    """A step checkpoint: fp32 weights, AdamW's two moments of everything outside the blocks (embeddings, head,
    scalars), Muon's momentum of the block matrices (its 2026 second moment is a vector per matrix: left out)."""
    muon = sum(p.numel() for p in model.transformer.h.parameters())
    return 4 * (model.num_params() + 2 * (model.num_params() - muon) + muon)


def mfu_line(gpu: str | None, mfu: float | None, recipe: str) -> str:
    """Where the MFU behind the hours comes from: measured, assumed (2026), or none (no hours)."""
    if not gpu:
        return "; no hours"
    if mfu is None:
        return f"; no measured MFU for {gpu}: no hours"
    if recipe == "2026":
        return (f"; MFU {mfu:.1%} ASSUMED: no {gpu} run of the 2026 recipe is measured, so its hours assume the "
                f"course recipe's MFU, measured: {MEASURED[gpu]['source']}")
    return f"; MFU {mfu:.1%}, measured: {MEASURED[gpu]['source']}"


def plan(sections: dict, gpu: str | None, gpus: int, job_minutes: int, base_dir: Path, data: list[str]) -> str:
    base = resolved(BaseTrainSettings(**sections["base_train"]))
    runtime = RuntimeSettings(**sections["runtime"])
    vocab_size = sections["tok_train"]["vocab_size"]
    with torch.device("meta"):
        model = GPT(model_config(base, vocab_size))
    run_length = horizon(base, model)
    mfu = measured_mfu(gpu) if gpu else None
    hourly_rate = sections["report"]["hourly_rate"]
    job_hours = job_minutes / 60 - runtime.stop_before_limit / 3600 if job_minutes else None
    lines = [f"# Plan: {base.recipe} recipe, d{base.depth}, {model.num_params():,} parameters, "
             f"{model.flops_per_token():.3g} FLOPs per token",
             "", f"GPUs per training job: {f'{gpus} x {gpu}' if gpu else 'none declared by the profile (this machine)'}"
             + mfu_line(gpu, mfu, base.recipe)]
    if base.recipe == "2026":
        lines += ["", f"2026 recipe: {run_length.total_batch_size:,} tokens per step"
                  + (" (automatic from the horizon)" if base.total_batch_size == -1 else "")
                  + f", learning rates x {run_length.lr_scale:.4f}, Muon weight decay {run_length.weight_decay:.4g}; "
                  "no midtraining (SFT from the base model)."]
    lines += ["", "| stage | steps | tokens | FLOPs | hours | jobs |", "|---|---|---|---|---|---|"]
    total_hours = 0.0
    stages = [("base_train", run_length.num_steps, run_length.total_batch_size, model.flops_per_token())]
    parent = {"model_config": {"recipe": base.recipe}, "settings": dataclasses.asdict(base),
              "total_batch_size": run_length.total_batch_size}  # what chat_sft inherits from a 2026 base model
    chat_stages = {"mid_train": sections["mid_train"],
                   "chat_sft": dataclasses.asdict(chat_sft.resolved(ChatSftSettings(**sections["chat_sft"]), parent))}
    for name, cfg in chat_stages.items():
        if name == "mid_train" and base.recipe == "2026":
            continue
        with torch.device("meta"):
            flops = GPT(model_config(dataclasses.replace(base, max_seq_len=cfg["max_seq_len"]),
                                     vocab_size)).flops_per_token()
        stages.append((name, cfg["num_iterations"], cfg["rows_per_step"] * cfg["max_seq_len"], flops))
    for name, steps, tokens_per_step, flops_per_token in stages:
        if steps <= 0:
            lines.append(f"| {name} | one pass over its mixture (counted when it starts) | | | | |")
            continue
        tokens, flops = steps * tokens_per_step, steps * tokens_per_step * flops_per_token
        hours = flops / (gpus * PEAK_FLOPS[gpu] * mfu) / 3600 if mfu else None
        total_hours += hours or 0
        jobs = math.ceil(hours / job_hours) if hours and job_hours else None
        lines.append(f"| {name} | {steps:,} | {tokens:.3g} | {flops:.3g} | {f'{hours:.1f}' if hours else 'n/a'} | "
                     f"{jobs or 'n/a'} |")
    if total_hours:
        cost = f", ${total_hours * hourly_rate:,.0f} at ${hourly_rate}/h" if hourly_rate else \
            " (set report.hourly_rate for a cost)"
        lines += ["", f"Training with known steps: {total_hours:.1f} h, {total_hours * gpus:.0f} GPU-hours{cost}."]
    shards = sections["base_data"]["num_shards"] * SHARD_BYTES[sections["base_data"]["source"]]
    ckpts = len(stages) * (2 * checkpoint_bytes(model) + 4 * model.num_params())  # 2 step checkpoints and a model each
    existing = next(p for p in [base_dir, *base_dir.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    lines += ["", f"Scratch: about {(shards + ckpts) / 1e9:.0f} GB ({shards / 1e9:.1f} GB of shards, "
              f"{ckpts / 1e9:.1f} GB of checkpoints); {free / 1e9:.0f} GB free at {existing}"
              + (": NOT ENOUGH" if free < shards + ckpts else "") + "."]
    downloads = [base_dir / path for path in layout.download_paths(data, sections["base_data"]["num_shards"])]
    missing = [p for p in downloads if not p.exists()]
    lines.append(f"Downloads: {len(downloads) - len(missing)} of {len(downloads)} present" +
                 (f"; missing e.g. {missing[0]}: run the `download` target where there is internet" if missing else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", required=True, help="the workflow config's sections, as JSON")
    parser.add_argument("--gpu", default="", help="GPU type of a training job (a100, h100); empty: none")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per training job")
    parser.add_argument("--job_minutes", type=int, default=0, help="time limit of a training job (0: none)")
    parser.add_argument("--base_dir", type=Path, required=True, help="where the run's artefacts go")
    parser.add_argument("data", nargs="*", help="the catalog entries the run downloads")
    args = parser.parse_args(argv)
    print(plan(json.loads(args.sections), args.gpu or None, args.gpus, args.job_minutes, args.base_dir, args.data))


if __name__ == "__main__":
    main()
