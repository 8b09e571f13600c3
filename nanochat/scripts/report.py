"""report.md: the run's report card, rendered with Jinja2 from the stages' JSON records (never from logs),
with PNG plots beside it.

    python -m nanochat.scripts.report --out_dir=.nanochat/report [--hourly_rate=24] \
        .nanochat/tokenizer/tok_train.json .nanochat/base_checkpoints/base_train.json ...

Each record is named by its file (tok_train.json is the tok_train stage's); the report shows the
stages whose records it is given, and says "not run" for the others. RL appears when chat_rl.json is
among them. With --copy_to_workdir=true, report.md is also written into the working directory.
"""

import dataclasses
import importlib.metadata
import importlib.resources
import json
import logging
import os
import subprocess
from datetime import datetime
from pathlib import Path

import jinja2
import matplotlib
import matplotlib.pyplot as plt

from nanochat import settings
from nanochat.catalog import CATALOG
from nanochat.common import setup_logging, write_atomic
from nanochat.layout import PLOTS, TRAINED_BY
from nanochat.tasks import CHATCORE_TASKS

matplotlib.use("Agg")
log = logging.getLogger("nanochat.scripts.report")


@dataclasses.dataclass
class ReportSettings:
    """report.md, rendered from the stages' records."""
    hourly_rate: float = 0.0  # cost per hour of the hardware, for the estimated cost (0: not shown)
    copy_to_workdir: bool = False  # also write report.md into the working directory (the ptolemy profile does)


ROWS = ["CORE", "ARC-Challenge", "ARC-Easy", "GSM8K", "HumanEval", "MMLU", "ChatCORE"]
COLUMNS = ["BASE", "MID", "SFT", "RL"]
REQUIRED = ("tok_train", "base_train", "chat_sft")  # the report is about a trained chat model


def chat_mean_tasks(records: dict) -> list[str]:
    """The tasks of the chat mean when some chat model has it without ChatCORE (offline): the row it needs."""
    chat = [records[f"chat_eval_{c.lower()}"] for c in COLUMNS if f"chat_eval_{c.lower()}" in records]
    return next((r["chat_mean_tasks"] for r in chat if r["chatcore"] is None), [])


def recipe(records: dict) -> str:
    """The base model's recipe (course or 2026); records from before the 2026 recipe are the course's."""
    return records.get("base_train", {}).get("settings", {}).get("recipe", "course")


def summary_table(records: dict, rl_enabled: bool) -> list[list[str]]:
    """Upstream's report card: metric rows x stage columns; a cell without a number says why. A "Chat mean"
    row follows ChatCORE when a chat model was evaluated on another task set (offline)."""
    table = []
    for row in ROWS + ["Chat mean"] * bool(chat_mean_tasks(records)):
        cells = [row]
        for column in COLUMNS:
            if column == "RL" and not rl_enabled:
                cells.append("RL disabled")
            elif column == "MID" and recipe(records) == "2026":
                cells.append("no midtraining (2026)")
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
                    offline = chat.get("settings", {}).get("source") == "offline"
                    cells.append(f"{chat['chatcore']:.4f}" if chat["chatcore"] is not None
                                 else "not available offline" if offline else "not available")
                elif row == "Chat mean":
                    cells.append(f"{chat['chat_mean']:.4f}" if chat["chat_mean"] is not None else "no tasks")
                else:
                    task = chat["tasks"].get(row)
                    cells.append("not evaluated" if task is None else f"{task['accuracy']:.4f}" if task["available"]
                                 else "not available offline" if "offline" in task["reason"] else "not available")
        table.append(cells)
    return table


def plot(records: dict, out_dir: Path) -> None:
    """Training loss, validation, LR schedule and throughput per training stage, one PNG each."""
    stages = [(name, records[stage]["history"]) for name, stage in TRAINED_BY.items() if stage in records]
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
            "chat_mean_tasks": chat_mean_tasks(records), "chatcore_tasks": CHATCORE_TASKS,
            "rl_enabled": rl_enabled, "recipe": recipe(records), "git": git_state(Path(__file__).resolve().parent.parent),
            "hardware": hardware, "versions": versions, "python": records.get("tok_train", {}).get("python", ""),
            "started": min(t[0] for t in times).strftime("%Y-%m-%d %H:%M:%S") if times else "unknown",
            "wall_s": wall_s, "span_s": (max(t[1] for t in times) - min(t[0] for t in times)).total_seconds()
            if times else 0.0, "cost": wall_s / 3600 * hourly_rate if hourly_rate > 0 else None,
            "hourly_rate": hourly_rate, "plots": PLOTS}


def render(records: dict, rl_enabled: bool, hourly_rate: float, image_prefix: str = "",
           data_sources: list[str] | tuple[str, ...] = ()) -> str:
    template = importlib.resources.files("nanochat.scripts").joinpath("report.md.j2").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    return env.from_string(template).render(**context(records, rl_enabled, hourly_rate), image_prefix=image_prefix,
                                            data=[CATALOG[name].describe() for name in data_sources])


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, ReportSettings, out_dir="where report.md and its plots go")
    parser.add_argument("--data", action="append", default=[], choices=sorted(CATALOG),
                        help="a catalog entry the run downloaded, named in the report with its revision (repeatable)")
    parser.add_argument("records", nargs="+", type=Path, help="the stages' JSON records")
    args = parser.parse_args(argv)
    cfg: ReportSettings = settings.from_args(ReportSettings, args)
    setup_logging()
    records = {path.stem: json.loads(path.read_text()) for path in args.records}
    missing = [name for name in REQUIRED if name not in records]
    if missing:
        raise SystemExit(f"error: missing record(s): {', '.join(f'{m}.json' for m in missing)}")
    rl_enabled = "chat_rl" in records
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(records, args.out_dir)
    text = render(records, rl_enabled, cfg.hourly_rate, data_sources=args.data)
    write_atomic(args.out_dir / "report.md", lambda tmp: tmp.write_text(text))
    if cfg.copy_to_workdir:
        prefix = os.path.relpath(args.out_dir, Path.cwd()) + "/"
        Path("report.md").write_text(render(records, rl_enabled, cfg.hourly_rate, prefix, args.data))
    log.info("wrote %s (%d records)", args.out_dir / "report.md", len(records))


if __name__ == "__main__":
    main()
