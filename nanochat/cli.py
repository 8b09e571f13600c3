"""`nanochat`: one command for what you do with the models a run trained, each subcommand with its --help.

    nanochat chat -p "Why is the sky blue?"      talk to a model in the terminal        (scripts/chat_cli.py)
    nanochat serve --port 8000                   web UI and OpenAI-compatible API        (scripts/chat_web.py)
    nanochat export -i sft                       a folder Hugging Face transformers loads (scripts/export.py)
    nanochat eval -i sft --task mmlu             one chat task on one model, its accuracy (scripts/chat_eval.py)
    nanochat plan --profile profiles/ptolemy     the run's plan: sizes, hours, jobs, space (workflow rule `plan`)

A model is named by its stage (-i base, mid, sft, rl) in a run's base_dir (--base_dir, default .nanochat):
its final checkpoint, or while the stage still trains, its newest step checkpoint. Training and the
workflow's evaluations are Snakemake's: `snakemake --profile profiles/local report`.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from nanochat import layout, tasks
from nanochat.checkpoint import find_model
from nanochat.scripts import chat_cli, chat_eval, chat_web
from nanochat.scripts import export as export_stage

# Subcommands that are a stage module's own command line, passed through whole (their --help is the module's).
PASSED_THROUGH = {"chat": (chat_cli.main, "talk to a model in the terminal"),
                  "serve": (chat_web.main, "serve the web UI and an OpenAI-compatible API")}


def model_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("-i", "--source", choices=tuple(layout.CHECKPOINTS), default=default,
                        help=f"which stage's model (default: {default})")
    parser.add_argument("--base_dir", type=Path, default=Path(".nanochat"), help="the run's base_dir")


def export(args: argparse.Namespace) -> None:
    out = args.out or args.base_dir / layout.EXPORT / args.source
    export_stage.main([f"--model_dir={find_model(args.base_dir, args.source)}", f"--out={out}",
                       f"--dtype={args.dtype}", f"--tokenizer={args.base_dir / layout.TOKENIZER / 'tokenizer.json'}"])
    print(f"exported to {out}: AutoModelForCausalLM.from_pretrained({str(out)!r})")


def evaluate(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "record.json"
        chat_eval.main([f"--task={args.task}", f"--source={args.data}", f"--max_problems={args.max_problems}",
                        f"--model_dir={find_model(args.base_dir, args.source)}", f"--device={args.device}",
                        f"--tokenizer={args.base_dir / layout.TOKENIZER / 'tokenizer.json'}",
                        f"--hub_dir={args.base_dir / layout.HUB}", f"--out={out}"])
        record = json.loads(out.read_text())
    print(f"{record['name']}: accuracy {record['accuracy']:.4f} on {record['n']} problems "
          f"(baseline {record['baseline']:.2f}), {args.source} model at step {record['model_step']}")


def plan(args: argparse.Namespace, snakemake_args: list[str]) -> None:
    if not Path("workflow/Snakefile").is_file():
        raise SystemExit("error: run `nanochat plan` in the checkout (the folder with workflow/Snakefile)")
    command = [sys.executable, "-m", "snakemake", "--profile", args.profile, "plan", *snakemake_args]
    raise SystemExit(subprocess.run(command).returncode)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSED_THROUGH:
        run, _ = PASSED_THROUGH[argv[0]]
        run(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="nanochat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (_, help_text) in PASSED_THROUGH.items():
        commands.add_parser(name, help=help_text + " (--help: its options)")

    sub = commands.add_parser("export", help="write a folder Hugging Face transformers loads")
    model_arguments(sub, "sft")
    sub.add_argument("--out", type=Path, help="folder to write (default: <base_dir>/export/<source>)")
    sub.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights' type")
    sub.set_defaults(run=export)

    sub = commands.add_parser("eval", help="one chat task on one model: its accuracy")
    model_arguments(sub, "sft")
    sub.add_argument("--task", choices=tuple(tasks.EVAL_TASKS), required=True, help="the task")
    sub.add_argument("--data", choices=("offline", "hub"), default="offline",
                     help="offline: what installed packages ship; hub: the downloaded test sets (default: offline)")
    sub.add_argument("--max_problems", type=int, default=-1, help="problems, drawn with a fixed seed (-1: all)")
    sub.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    sub.add_argument("--out", type=Path, help="also keep the record (per-problem answers) in this JSON file")
    sub.set_defaults(run=evaluate)

    sub = commands.add_parser("plan", help="the run's plan for a profile (Snakemake's rule `plan`)",
                              epilog="Other arguments go to Snakemake, e.g. --config base_train='{depth: 12}'.")
    sub.add_argument("--profile", default="profiles/local", help="the Snakemake profile (default: profiles/local)")
    sub.set_defaults(run=plan)

    args, unknown = parser.parse_known_args(argv)
    if args.run is plan:
        plan(args, unknown)
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    else:
        args.run(args)


if __name__ == "__main__":
    main()
