"""CORE score of the base model on the DCLM eval bundle, per task and overall, to one JSON record.

    python -m nanochat.scripts.base_eval --bundle_dir=eval_bundle/ --model_dir=base/ \
        --tokenizer=tok/tokenizer.json --out=base_eval.json [--max_per_task=16]

No offline copy of the bundle exists; with --bundle=false (the local presets) the record says CORE is
not available rather than giving a number.
"""

import dataclasses
import logging
import time

from nanochat import settings
from nanochat.catalog import CATALOG
from nanochat.checkpoint import load_model
from nanochat.common import run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute
from nanochat.core_eval import evaluate_task, load_bundle
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.base_eval")
NOT_AVAILABLE = "not available offline: no package ships the CORE eval bundle (set base_eval.bundle to download it)"


@dataclasses.dataclass
class BaseEvalSettings:
    """CORE evaluation of the base model (DCLM eval bundle: 22 in-context-learning tasks)."""
    bundle: bool = True  # score on the downloaded eval bundle (catalog entry eval_bundle); false: CORE is reported as not available
    max_per_task: int = -1  # items evaluated per task (-1: all); small values make CPU runs quick but noisy


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(
        __doc__, BaseEvalSettings, device=True, bundle_dir="the unpacked eval bundle (read when --bundle=true)",
        model_dir="folder with model.pt and meta.json", tokenizer="tokenizer.json", out="JSON record to write")
    args = parser.parse_args(argv)
    cfg: BaseEvalSettings = settings.from_args(BaseEvalSettings, args)
    bundle = [args.bundle_dir / "core.yaml", args.bundle_dir / "eval_meta_data.csv"] if cfg.bundle else []
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer, *bundle])
    started = time.time()
    if not cfg.bundle:
        log.warning("CORE %s", NOT_AVAILABLE)
        write_json_atomic(args.out, {"core": None, "available": False, "reason": NOT_AVAILABLE,
                                     "settings": dataclasses.asdict(cfg), **run_record(started)})
        return
    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    tokenizer = Tokenizer.load(args.tokenizer)
    tasks = {}
    for task in load_bundle(args.bundle_dir):
        task_started = time.time()
        with compute.autocast():
            result = evaluate_task(model, tokenizer, task, cfg.max_per_task, compute.device)
        tasks[task["label"]] = {**result, "wall_time_s": round(time.time() - task_started, 3)}
        log.info("%-40s accuracy %.4f  centered %+.4f  (n=%d)", task["label"], result["accuracy"],
                 result["centered"], result["n"])
    core = sum(t["centered"] for t in tasks.values()) / len(tasks)
    log.info("CORE %.4f over %d tasks", core, len(tasks))
    write_json_atomic(args.out, {"core": core, "available": True, "tasks": tasks, "model_step": meta["step"],
                                 "max_per_task": cfg.max_per_task, "settings": dataclasses.asdict(cfg),
                                 "bundle": CATALOG["eval_bundle"].describe(), "device": str(compute.device),
                                 **run_record(started)})


if __name__ == "__main__":
    main()
