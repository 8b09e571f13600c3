"""CORE score of the base model on the DCLM eval bundle, per task and overall, to one JSON record.

    python -m nanochat.base_eval --bundle=eval_bundle/ --model_dir=base/ --tokenizer=tok/tokenizer.json \
        --out=base_eval.json [--max_per_task=16]

No offline copy of the bundle exists; with --bundle=none (the local profile's default) the record
says CORE is not available rather than giving a number.
"""

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from nanochat import settings
from nanochat.common import run_record, start_compute_stage, write_json_atomic

log = logging.getLogger("nanochat.base_eval")
NOT_AVAILABLE = "not available offline: no package ships the CORE eval bundle (set core.bundle_url to download it)"


@dataclasses.dataclass
class CoreSettings:
    """CORE evaluation of the base model (DCLM eval bundle: 22 in-context-learning tasks)."""
    bundle_url: str = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"  # download source of eval_bundle.zip; empty: CORE is reported as not available
    max_per_task: int = -1  # items evaluated per task (-1: all); small values make CPU runs quick but noisy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_per_task", type=int, default=CoreSettings.max_per_task,
                        help=settings.field_comments(CoreSettings)["max_per_task"])
    parser.add_argument("--bundle", required=True, help="unpacked eval bundle folder, or 'none'")
    parser.add_argument("--device", default="", help="cuda, cpu or mps (default: the best available)")
    settings.add_path_arguments(
        parser, model_dir="folder with model.pt and meta.json", tokenizer="tokenizer.json",
        out="JSON record to write")
    args = parser.parse_args(argv)
    bundle = None if args.bundle == "none" else Path(args.bundle)
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer,
                         *([bundle / "core.yaml", bundle / "eval_meta_data.csv"] if bundle else [])])
    started = time.time()
    if bundle is None:
        log.warning("CORE %s", NOT_AVAILABLE)
        write_json_atomic(args.out, {"core": None, "available": False, "reason": NOT_AVAILABLE, **run_record(started)})
        return

    from nanochat.checkpoint import load_model
    from nanochat.compute import init_compute
    from nanochat.core_eval import evaluate_task, load_bundle
    from nanochat.tokenizer import Tokenizer

    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    tokenizer = Tokenizer.load(args.tokenizer)
    tasks = {}
    for task in load_bundle(bundle):
        task_started = time.time()
        with compute.autocast():
            result = evaluate_task(model, tokenizer, task, args.max_per_task, compute.device)
        tasks[task["label"]] = {**result, "wall_time_s": round(time.time() - task_started, 3)}
        log.info("%-40s accuracy %.4f  centered %+.4f  (n=%d)", task["label"], result["accuracy"],
                 result["centered"], result["n"])
    core = sum(t["centered"] for t in tasks.values()) / len(tasks)
    log.info("CORE %.4f over %d tasks", core, len(tasks))
    write_json_atomic(args.out, {"core": core, "available": True, "tasks": tasks, "model_step": meta["step"],
                                 "max_per_task": args.max_per_task, "device": str(compute.device),
                                 **run_record(started)})


if __name__ == "__main__":
    main()
