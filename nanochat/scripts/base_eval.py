"""CORE score of the base model on the DCLM eval bundle: one task per run, then CORE over the tasks' records.

    python -m nanochat.scripts.base_eval --task=hellaswag --bundle_dir=eval_bundle/ --model_dir=base/ \
        --tokenizer=tok/tokenizer.json --out=base_eval/hellaswag.json [--max_per_task=16]
    python -m nanochat.scripts.base_eval --out=base_eval.json base_eval/*.json

The workflow runs one job per task (rule base_eval_task: the tasks side by side on a node's GPUs, a failed
task reruns alone), then CORE, the mean centered accuracy, from their records (rule base_eval). No offline
copy of the bundle exists; with --bundle=false (the local presets) the record says CORE is not available
rather than giving a number.
"""

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from nanochat import settings
from nanochat.catalog import CATALOG, CORE_TASKS
from nanochat.checkpoint import load_model
from nanochat.common import progress_logger, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute
from nanochat.core_eval import bundle_labels, evaluate_task, load_bundle
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.base_eval")
NOT_AVAILABLE = "not available offline: no package ships the CORE eval bundle (set base_eval.bundle to download it)"


@dataclasses.dataclass
class BaseEvalSettings:
    """CORE evaluation of the base model (DCLM eval bundle: 22 in-context-learning tasks)."""
    bundle: bool = True  # score on the downloaded eval bundle (catalog entry eval_bundle); false: CORE is reported as not available
    max_per_task: int = -1  # items evaluated per task (-1: all); small values make CPU runs quick but noisy
    batch_tokens: int = dataclasses.field(default=-1, metadata={"minimum": -1})  # padded tokens scored per forward, several items side by side (1: one item per forward); -1: the device's, 16384 on a GPU, 1024 on a CPU (where bigger batches score fewer items/s, measured)


def score_task(args: argparse.Namespace, cfg: BaseEvalSettings) -> None:
    """One task's accuracy, centered accuracy and per-item outcomes, to its record."""
    bundle = args.bundle_dir
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer,
                         bundle / "core.yaml", bundle / "eval_meta_data.csv"])
    if bundle_labels(bundle) != list(CORE_TASKS):
        raise SystemExit(f"error: the eval bundle in {bundle} holds the tasks {bundle_labels(bundle)}, not the "
                         f"pinned bundle's {list(CORE_TASKS)} (nanochat.catalog.CORE_TASKS)")
    started = time.time()
    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    [task] = load_bundle(bundle, [args.task])
    total = min(len(task["items"]), cfg.max_per_task) if cfg.max_per_task > 0 else len(task["items"])
    with compute.autocast("score", model=model):
        result = evaluate_task(model, Tokenizer.load(args.tokenizer), task, cfg.max_per_task, compute.device,
                               cfg.batch_tokens, progress_logger(log, task["label"], total))
    seconds = time.time() - started
    log.info("%-40s accuracy %.4f  centered %+.4f  (n=%d, %.2f items/s)", task["label"], result["accuracy"],
             result["centered"], result["n"], result["n"] / seconds)
    write_json_atomic(args.out, {"label": task["label"], **result, "items_per_s": round(result["n"] / seconds, 3),
                                 "model_step": meta["step"], "settings": dataclasses.asdict(cfg),
                                 "bundle": CATALOG["eval_bundle"].describe(), "device": str(compute.device),
                                 "torch": torch.__version__, **run_record(started)})


def core(args: argparse.Namespace, cfg: BaseEvalSettings) -> None:
    """CORE over the task records: the mean of their centered accuracies."""
    start_compute_stage(args.records)
    started = time.time()
    if not cfg.bundle:
        log.warning("CORE %s", NOT_AVAILABLE)
        write_json_atomic(args.out, {"core": None, "available": False, "reason": NOT_AVAILABLE,
                                     "settings": dataclasses.asdict(cfg), **run_record(started)})
        return
    records = [json.loads(path.read_text()) for path in args.records]
    tasks = {r["label"]: r for r in records}
    if missing := [label for label in CORE_TASKS if label not in tasks]:
        raise SystemExit(f"error: CORE needs a record of every task; missing: {', '.join(missing)}")
    core_score = sum(tasks[label]["centered"] for label in CORE_TASKS) / len(CORE_TASKS)
    for label in CORE_TASKS:
        log.info("%-40s accuracy %.4f  centered %+.4f  (n=%d)", label, tasks[label]["accuracy"],
                 tasks[label]["centered"], tasks[label]["n"])
    log.info("CORE %.4f over %d tasks", core_score, len(CORE_TASKS))
    write_json_atomic(args.out, {"core": core_score, "available": True,
                                 "tasks": {label: tasks[label] for label in CORE_TASKS},
                                 "model_step": records[0]["model_step"], "max_per_task": cfg.max_per_task,
                                 "settings": dataclasses.asdict(cfg), "bundle": CATALOG["eval_bundle"].describe(),
                                 **run_record(started)})


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, BaseEvalSettings, device=True, out="JSON record to write")
    parser.add_argument("--task", choices=list(CORE_TASKS), help="score this task (else: CORE from the records)")
    parser.add_argument("--bundle_dir", type=Path, help="the unpacked eval bundle (with --task)")
    parser.add_argument("--model_dir", type=Path, help="folder with model.pt and meta.json (with --task)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (with --task)")
    parser.add_argument("records", nargs="*", type=Path, help="without --task: the task records CORE is computed from")
    args = parser.parse_args(argv)
    cfg: BaseEvalSettings = settings.from_args(BaseEvalSettings, args)
    if args.task:
        if None in (args.bundle_dir, args.model_dir, args.tokenizer):
            parser.error("--task needs --bundle_dir, --model_dir and --tokenizer")
        score_task(args, cfg)
    else:
        core(args, cfg)


if __name__ == "__main__":
    main()
