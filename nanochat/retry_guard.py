"""Whether the main Snakemake process should start a training job at all, asked before each attempt
(workflow/rules/common.smk), so that a job which could only fail is never submitted, nor queued for GPUs:

- another trainer still trains this stage (its run lock, nanochat.run_lock, is held by a live SLURM job or
  process: the Snakemake that started it died, an SSH session dropped without tmux): the run stops at once,
  naming it, instead of submitting job after job that each refuse;
- the previous attempt of this job stopped on an error no retry can fix (an input that does not load, a
  setting the stage refuses, a retry without progress): the retry is not submitted.

A training stage records such an error with `no_retry_on_exit` in its step checkpoint folder; the record
of an earlier command never counts, since each attempt clears it as it starts.
"""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from nanochat import run_lock
from nanochat.common import write_json_atomic

NO_RETRY = "no_retry.json"  # in a stage's step checkpoint folder (--ckpt_dir): the error that ended its attempt
RESUMABLE_EXIT = 75  # EX_TEMPFAIL: a step checkpoint was written on request (time limit, signal); a retry resumes


@contextlib.contextmanager
def no_retry_on_exit(ckpt_dir: Path, attempt: int) -> Iterator[None]:
    """Run a training stage: an exit with an error message (SystemExit: nanochat.common.InputError, a refused
    setting, a live trainer holding the run) is recorded for `refusal`; a crash (any other exception, a kill)
    is not: a retry may get past it."""
    marker = Path(ckpt_dir) / NO_RETRY
    marker.unlink(missing_ok=True)
    try:
        yield
    except SystemExit as stop:
        if stop.code not in (None, 0, RESUMABLE_EXIT):
            message = stop.code if isinstance(stop.code, str) else f"exit status {stop.code}: its log says why"
            write_json_atomic(marker, {"attempt": attempt, "error": message})
        raise


def live_trainer(ckpt_dir: Path) -> tuple[dict, Path] | None:
    """The live holder of a run lock under `ckpt_dir` (someone still trains a run of this stage), and the lock."""
    for lock in sorted(Path(ckpt_dir).glob(f"*/{run_lock.LOCK}")):
        owner = run_lock.read_owner(lock)
        if owner and run_lock.is_alive(owner):
            return owner, lock
    return None


def refusal(stage: str, ckpt_dir: Path, attempt: int, log: str) -> str | None:
    """Why attempt `attempt` of `stage` must not start, or None."""
    if found := live_trainer(ckpt_dir):
        owner, lock = found
        job = owner.get("slurm_job")
        pid = owner["pid"]
        wait, stop = (f"squeue -j {job}", f"scancel {job}") if job else (f"ps -p {pid}", f"kill {pid}")
        return (f"{stage} was not started: it is still being trained by {run_lock.describe(owner)}, which an "
                f"earlier command started (its lock: {lock}). Wait for it to end ({wait}), then run this command "
                f"again: it goes on from that trainer's newest step checkpoint. Or stop it ({stop}): it checkpoints "
                "first.")
    marker = Path(ckpt_dir) / NO_RETRY
    try:
        stopped = json.loads(marker.read_text()) if attempt > 1 else None
    except (OSError, ValueError):  # none, or unreadable (not ours): the retry goes ahead, as before this guard
        stopped = None
    if isinstance(stopped, dict) and stopped.get("attempt") == attempt - 1:
        return (f"{stage} is not retried: its attempt {stopped['attempt']} stopped on an error no retry can fix: "
                f"{stopped.get('error')} (log: {log}). Fix it, then run the same command again.")
    return None
