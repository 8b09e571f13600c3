"""report.md: the run's report card, rendered with Jinja2 from the stages' JSON records (never from logs),
with PNG plots beside it.

    python -m nanochat.report --records_dir=.nanochat --out_dir=.nanochat/report [--rl_enabled] \
        [--hourly_rate=24] [--copy_to=report.md]
"""

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import os
import subprocess
from datetime import datetime
from pathlib import Path

log = logging.getLogger("nanochat.report")


@dataclasses.dataclass
class ReportSettings:
    """report.md, rendered from the stages' records."""
    hourly_rate: float = 0.0  # cost per hour of the hardware, for the estimated cost (0: not shown)
    copy_to_workdir: bool = False  # also write report.md into the working directory (the ptolemy profile does)

# The records the report shows, by stage, relative to the base directory (docs/reference/artifacts.md).
RECORDS = {"tok_train": "tokenizer/tok_train.json", "tok_eval": "tokenizer/tok_eval.json",
           "base_train": "base_checkpoints/base_train.json", "base_loss": "eval/base_loss.json",
           "base_eval": "eval/base_eval.json", "mid_train": "mid_checkpoints/mid_train.json",
           "chat_eval_mid": "eval/chat_eval_mid.json", "sft_train": "sft_checkpoints/sft_train.json",
           "chat_eval_sft": "eval/chat_eval_sft.json", "rl_train": "rl_checkpoints/rl_train.json",
           "chat_eval_rl": "eval/chat_eval_rl.json"}
ROWS = ["CORE", "ARC-Challenge", "ARC-Easy", "GSM8K", "HumanEval", "MMLU", "ChatCORE"]
COLUMNS = ["BASE", "MID", "SFT", "RL"]
PLOTS = ["loss.png", "validation.png", "lr.png", "throughput.png"]


def summary_table(records: dict, rl_enabled: bool) -> list[list[str]]:
    """Upstream's report card: metric rows x stage columns; a cell without a number says why."""
    table = []
    for row in ROWS:
        cells = [row]
        for column in COLUMNS:
            if column == "RL" and not rl_enabled:
                cells.append("RL disabled")
            elif row == "CORE":
                core = records.get("base_eval", {})
                cells.append("" if column != "BASE" else f"{core['core']:.4f}" if core.get("available")
                             else "not available offline")
            elif column == "BASE":
                cells.append("")
            else:
                chat = records.get(f"chat_eval_{column.lower()}")
                if chat is None:
                    cells.append("not run")
                elif row == "ChatCORE":
                    cells.append(f"{chat['chatcore']:.4f}" if chat["chatcore"] is not None else "no tasks")
                else:
                    task = chat["tasks"].get(row)
                    cells.append("not evaluated" if task is None else f"{task['accuracy']:.4f}" if task["available"]
                                 else "not available offline" if "offline" in task["reason"] else "not available")
        table.append(cells)
    return table


def plot(records: dict, out_dir: Path) -> None:
    """Training loss, validation, LR schedule and throughput per training stage, one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [(name, records[f"{name}_train"]["history"]) for name in ("base", "mid", "sft", "rl")
              if f"{name}_train" in records]
    panels = [("loss.png", "training loss (nats/token)", "loss"), ("lr.png", "learning rate multiplier", "lr_mult"),
              ("throughput.png", "tokens per second", "tok_per_s")]
    for filename, title, key in panels:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, history in stages:
            ax.plot([h["step"] for h in history], [h[key] for h in history], label=name)
        ax.set(title=title, xlabel="step")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, history in stages:
        metric = "val_bpb" if name == "base" else "mean_reward" if name == "rl" else "val_loss"
        points = [(h["step"], h[metric]) for h in history if metric in h]
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{name} {metric}")
    ax.set(title="validation (base: bits/byte, mid/sft: loss, rl: mean reward)", xlabel="step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "validation.png", dpi=100)
    plt.close(fig)


def git_state(repo: Path) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return {"commit": commit or "unknown (not a git checkout)", "dirty": bool(git("status", "--porcelain"))}


def context(records: dict, rl_enabled: bool, hourly_rate: float) -> dict:
    """Everything the template shows, computed from the records."""
    times = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
             for r in records.values() if "started_at" in r]
    wall_s = sum(r.get("wall_time_s", 0) for r in records.values())
    versions = {name: importlib.metadata.version(name) for name in ("torch", "snakemake", "tokenizers")}
    hardware = records.get("base_train", {}).get("hardware") or next(
        (r["hardware"] for r in records.values() if "hardware" in r), {})
    return {"records": records, "table": summary_table(records, rl_enabled), "columns": COLUMNS,
            "rl_enabled": rl_enabled, "git": git_state(Path(__file__).resolve().parent.parent),
            "hardware": hardware, "versions": versions, "python": records.get("tok_train", {}).get("python", ""),
            "started": min(t[0] for t in times).strftime("%Y-%m-%d %H:%M:%S") if times else "unknown",
            "wall_s": wall_s, "span_s": (max(t[1] for t in times) - min(t[0] for t in times)).total_seconds()
            if times else 0.0, "cost": wall_s / 3600 * hourly_rate if hourly_rate > 0 else None,
            "hourly_rate": hourly_rate, "plots": PLOTS}


def render(records: dict, rl_enabled: bool, hourly_rate: float, image_prefix: str = "") -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("report.md.j2").render(**context(records, rl_enabled, hourly_rate),
                                                   image_prefix=image_prefix)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records_dir", type=Path, required=True, help="the workflow's base_dir")
    parser.add_argument("--out_dir", type=Path, required=True, help="where report.md and its plots go")
    parser.add_argument("--rl_enabled", action="store_true", help="RL was part of the run")
    parser.add_argument("--hourly_rate", type=float, default=0.0, help="cost per hour of the hardware (0: no cost)")
    parser.add_argument("--copy_to", type=Path, help="also write the report here (images linked into out_dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    records = {name: json.loads((args.records_dir / path).read_text()) for name, path in RECORDS.items()
               if (args.records_dir / path).is_file()}
    missing = [RECORDS[n] for n in ("tok_train", "base_train", "sft_train") if n not in records]
    if missing:
        raise SystemExit(f"error: missing input file(s): {', '.join(str(args.records_dir / m) for m in missing)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(records, args.out_dir)
    tmp = args.out_dir / "report.md.tmp"
    tmp.write_text(render(records, args.rl_enabled, args.hourly_rate))
    os.replace(tmp, args.out_dir / "report.md")
    if args.copy_to:
        prefix = os.path.relpath(args.out_dir, args.copy_to.resolve().parent) + "/"
        args.copy_to.write_text(render(records, args.rl_enabled, args.hourly_rate, image_prefix=prefix))
    log.info("wrote %s (%d records)", args.out_dir / "report.md", len(records))


if __name__ == "__main__":
    main()
