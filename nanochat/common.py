"""Small helpers every entry point shares: offline mode, input checks, atomic writes, logging."""

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("nanochat")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """One readable line per event, to stderr (Snakemake redirects it into the rule's log file)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for chatty in ("httpx", "httpx2", "urllib3", "filelock"):  # one line per HTTP request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)


def also_log_to(path: Path) -> None:
    """Append every log line to `path` too, dated: a rule's log is emptied when Snakemake reruns the job
    (a retry after a time limit), so a log beside the step checkpoints keeps every attempt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)


def go_offline() -> None:
    """Compute stages never touch the network: a GPU node has none, so a missing file must fail fast.

    Must run before anything imports huggingface_hub, which reads these variables at import time.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("WANDB_MODE", "offline")


def require_files(paths: Iterable[str | os.PathLike]) -> None:
    """Fail in seconds, naming every missing input, before any expensive work starts."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        lines = "\n  ".join(missing)
        raise SystemExit(f"error: missing input file(s):\n  {lines}\n"
                         "Run the workflow's download targets on a machine with internet access first.")


def start_compute_stage(inputs: Iterable[str | os.PathLike]) -> None:
    """Every compute entry point starts so: hub offline, logging on, all inputs present (else exit now)."""
    go_offline()
    setup_logging()
    require_files(inputs)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via a temporary file and rename, so a killed job never leaves a half-written record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def hardware() -> dict[str, Any]:
    """CPU model and count, and the GPUs torch sees (when the stage uses torch)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "gpus": []}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def run_record(started: float) -> dict[str, Any]:
    """What every stage's JSON record carries about where, when and how long it ran."""
    return {"host": platform.node(), "python": platform.python_version(), "hardware": hardware(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "wall_time_s": round(time.time() - started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
