"""One trainer per training run: a lock file beside the run's step checkpoints, naming who holds it.

Two trainers on one run would write the same step folders and attempts log. That happens when the
Snakemake that started a job dies (an SSH session dropped without tmux, `kill -9`) while its job goes
on (a SLURM job keeps running; a local trainer is orphaned but lives), and a rerun after `--unlock`
starts a second one. The lock names the holder: its SLURM job, else its host and pid. A trainer that
finds the lock held by a job or process that is still alive (asked of `squeue`, or of the process
table on the same host) stops at once, naming it, before it reads or writes a checkpoint; a lock
whose holder is gone (killed, its job over) is taken over, saying so. The holder releases it on exit.
"""

import atexit
import json
import logging
import os
import socket
import subprocess
from pathlib import Path

log = logging.getLogger("nanochat.run_lock")
LOCK = "trainer.lock"
LIVE_SLURM_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def holder() -> dict:
    """This process, as the lock names it."""
    return {"slurm_job": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(), "pid": os.getpid()}


def describe(owner: dict | None) -> str:
    if owner is None:
        return "an unreadable lock"
    where = f"pid {owner['pid']} on {owner['host']}"
    return f"SLURM job {owner['slurm_job']} ({where})" if owner.get("slurm_job") else where


def is_alive(owner: dict | None) -> bool:
    """Whether the lock's holder still runs. Unknowable (another host, no squeue) counts as alive: taking over
    a live run's lock would let two trainers write one run, waiting costs only a message."""
    if owner is None:
        return False
    if owner.get("slurm_job"):
        try:
            state = subprocess.run(["squeue", "-h", "-j", owner["slurm_job"], "-o", "%T"], capture_output=True,
                                   text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return True
        return state in LIVE_SLURM_STATES  # squeue forgets an ended job: empty
    if owner["host"] != socket.gethostname():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_owner(path: Path) -> dict | None:
    """The lock's holder; {} if the lock is gone, None if it cannot be read (acquire links a complete file, so
    no live trainer wrote it)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError):
        return None


def acquire(root: Path) -> None:
    """Hold the run's lock until this process exits, or stop (SystemExit) naming the live holder."""
    root.mkdir(parents=True, exist_ok=True)
    path, me = root / LOCK, holder()
    tmp = root / f".{LOCK}.{me['pid']}"
    tmp.write_text(json.dumps(me) + "\n")
    try:
        while True:
            try:
                os.link(tmp, path)  # atomic: fails if a lock is there
                break
            except FileExistsError:
                pass
            owner = read_owner(path)
            if owner == {}:
                continue  # released meanwhile: try again
            if owner == me:
                return  # this process holds it already
            if is_alive(owner):
                job = owner.get("slurm_job")
                raise SystemExit(f"error: another trainer is training this run: {describe(owner)} holds {path}. "
                                 f"Wait for it to end{f' or cancel it (scancel {job})' if job else ''}; its step "
                                 f"checkpoints are left as they are. If it is gone, delete {path}.")
            log.warning("taking over the lock of %s, which no longer runs", describe(owner))
            path.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    atexit.register(release, path, me)


def release(path: Path, me: dict) -> None:
    """Remove the lock if this process still holds it."""
    try:
        if json.loads(path.read_text()) == me:
            path.unlink()
    except (OSError, json.JSONDecodeError):
        pass
