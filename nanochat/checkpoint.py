"""Resumable step checkpoints and the attempts log of a training run, and final checkpoints; every file is
written atomically (temp + rename).

A step checkpoint is a folder `step_NNNNNN/` that rank 0 writes, resumable by any number of processes:

    model.pt     the weights
    training.pt  the optimizers' state by parameter name, whole: under DDP rank 0's (every rank holds the
                 same), with a sharded optimizer (nanochat.sharding) the shares of every rank gathered; a
                 resuming rank takes the state of the parameters its optimizers hold, whatever their number;
                 the data loader's state, the union of every rank's part (`save`); each rank's RNG state
    meta.json    written last: a folder without it is incomplete and ignored

Resuming tries the newest complete checkpoint first. One with a file that does not load (truncated, on a
damaged disk) is moved aside, to `step_NNNNNN.unusable-<time>`, saying so, and the next older one is tried: the
run goes on from there, and the newer files stay for a look instead of being deleted or overwritten. One that
loads but does not fit (another format, another model) stops the stage with an error naming the folder and
why: going back to an older checkpoint would silently throw away the newer training. Pruning after a save
keeps that checkpoint and the KEEP - 1 newest before it, and never touches a newer one.

`attempts.json`, beside the checkpoints, lists every attempt of the run: where it started, where and how it
ended (completed, stopped to be resumed, failed, or nothing: killed), its SLURM job. Snakemake retries a
failed training job many times (workflow/rules/common.smk), which a long run needs, one 12-hour job after
another; a retry whose previous attempt made no progress stops at once, naming how that attempt ended, since
it would only repeat it. A command typed again (Snakemake's attempt 1) always trains.
"""

import datetime
import json
import logging
import os
import platform
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from nanochat import layout, run_lock
from nanochat.common import also_log_to, read_input, write_atomic, write_json_atomic
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig

log = logging.getLogger("nanochat.checkpoint")
KEEP = 2  # step checkpoints kept: the one just saved and the newest before it
FORMAT = 3  # of a step checkpoint; 2 kept optimizer state by position; 1 (no "format" in meta.json) had a file per rank
STEP_FOLDER = re.compile(r"step_(\d{6,})")
ATTEMPTS = "attempts.json"


def save_atomic(obj: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator's state, and on CUDA this process's GPU's."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def step_folders(root: Path) -> list[Path]:
    """The step checkpoint folders under `root` with their meta.json (complete), newest first."""
    folders = [d for d in root.glob("step_*") if STEP_FOLDER.fullmatch(d.name) and (d / "meta.json").is_file()]
    return sorted(folders, key=folder_step, reverse=True)


def folder_step(folder: Path) -> int:
    return int(STEP_FOLDER.fullmatch(folder.name).group(1))


def read_attempts(root: Path) -> list[dict]:
    """The attempts log of the run whose step checkpoints are under `root`, oldest first."""
    path = Path(root) / ATTEMPTS
    return json.loads(path.read_text()) if path.is_file() else []


def how_it_ended(attempt: dict) -> str:
    """An attempt's end in words, for the message of a retry that stops."""
    if attempt["outcome"] is None:  # nothing recorded: the process did not get to say
        job = attempt["slurm_job"]
        return ("it ended without a word: killed (out of memory, a node failure, SIGKILL, or the error of another "
                "process)"
                + (f"; `sacct -j {job}` shows how SLURM job {job} ended" if job else ""))
    return f"at step {attempt['end_step']} it {attempt['outcome']}"


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class StepCheckpoints:
    def __init__(self, root: Path, compute: Compute, sharded: bool = False):
        """Step checkpoints of one run under `root`, whose train.log gathers the log of every attempt. Rank 0
        holds the run's lock (nanochat.run_lock) from here to its exit, or stops naming the trainer that does.
        `sharded`: each rank's optimizers hold the state of its own share of the parameters."""
        self.root, self.compute, self.sharded = Path(root), compute, sharded
        if compute.is_master:
            run_lock.acquire(self.root)
            also_log_to(self.root / "train.log")

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, newest first."""
        return step_folders(self.root)

    def save(self, step: int, model: torch.nn.Module, optimizers: list, loader_state: dict, meta: dict) -> None:
        """Write step checkpoint `step`; every rank calls it. `loader_state` is this rank's part of the loader's
        state, and the checkpoint keeps the union of the parts: so a part must be keyed the same way for any
        number of processes (the positions of this rank's own streams, or values every rank shares)."""
        parts = self.compute.gather((loader_state, rng_state(self.compute.device)))
        names = {p: name for name, p in model.named_parameters()}
        mine = [{names[p]: {k: v.cpu() if torch.is_tensor(v) else v for k, v in state.items()}
                 for p, state in opt.state.items()} for opt in optimizers]
        shares = self.compute.gather_to_master(mine if self.sharded or self.compute.is_master else None)
        if self.compute.is_master:
            folder = self.root / f"step_{step:06d}"
            save_atomic(model.state_dict(), folder / "model.pt")
            whole = [{name: state for share in shares if share for name, state in share[i].items()}
                     for i in range(len(optimizers))]
            save_atomic({"optimizers": whole,
                         "loader": {key: value for part, _ in parts for key, value in part.items()},
                         "rng": [rng for _, rng in parts]}, folder / "training.pt")
            write_json_atomic(folder / "meta.json",
                              {**meta, "step": step, "world_size": self.compute.world_size, "format": FORMAT})
            # This one and the newest before it stay; a newer one is never deleted (none should be there: a run
            # resumes from the newest it can read and moves unreadable ones aside).
            before = [d for d in self.complete() if folder_step(d) < step]
            for old in before[KEEP - 1:]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint saved: %s", folder)
        self.compute.barrier()  # nobody goes on (or exits on a stop request) before the checkpoint is complete

    def load_latest(self, model: torch.nn.Module, optimizers: list) -> tuple[dict, dict] | None:
        """Restore the newest checkpoint every rank can read; (meta, loader state), or None to start fresh."""
        for folder in self.complete():
            loaded = self._read(folder)
            flag = torch.tensor([loaded is not None], dtype=torch.int64, device=self.compute.device)
            if not int(self.compute.all_reduce(flag, op=torch.distributed.ReduceOp.MIN).item()):
                self._move_aside(folder)
                continue
            meta, weights, state = loaded
            try:
                model.load_state_dict(weights)
                names = {p: name for name, p in model.named_parameters()}
                for opt, saved in zip(optimizers, state["optimizers"], strict=True):
                    # the parameters this rank's optimizer holds (all, or its share); none before a first step.
                    # AdamW's step count stays on the CPU, except where torch keeps it beside the parameter
                    # (fused or capturable: a CUDA step refuses a CPU count there), as load_state_dict does.
                    for group in opt.param_groups:
                        step_on_device = group.get("fused") or group.get("capturable")
                        for p in (p for p in group["params"] if names[p] in saved):
                            opt.state[p] = {k: v.to(p.device) if torch.is_tensor(v) and (k != "step" or step_on_device)
                                            else v for k, v in saved[names[p]].items()}
            except (RuntimeError, ValueError, KeyError) as err:
                raise SystemExit(f"error: step checkpoint {folder} does not fit this model: {err}") from err
            # Rank r continues its own random stream. A rank the saving run did not have takes rank 0's: every
            # rank seeds alike and draws alike (no dropout; RL seeds its samples by question), so that is the
            # state it would have had.
            rngs = state["rng"]
            set_rng_state(rngs[self.compute.rank] if self.compute.rank < len(rngs) else rngs[0], self.compute.device)
            if meta["world_size"] != self.compute.world_size:
                log.info("%s was written by %d processes; continuing on %d", folder.name, meta["world_size"],
                         self.compute.world_size)
            log.info("resuming from %s (step %d)", folder, meta["step"])
            return meta, state["loader"]
        return None

    def _read(self, folder: Path) -> tuple[dict, dict, dict] | None:
        """(meta, weights, training state) of a checkpoint, or None when a file does not load (logged)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("format") != FORMAT:
                raise SystemExit(f"error: step checkpoint {folder} is in format {meta.get('format', 1)}, this "
                                 f"version reads format {FORMAT} (format 1 had a file per process, 2 kept optimizer "
                                 "state by position). Resume it with the version that wrote it, or move the folder "
                                 "away to resume from an older one "
                                 "or start over.")
            weights = torch.load(folder / "model.pt", map_location=self.compute.device)
            # Tensors and plain types only: a pickle in a step folder that would call a function never runs.
            state = torch.load(folder / "training.pt", map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file means: use an older checkpoint
            log.warning("checkpoint %s is unusable (%s: %s)", folder.name, type(err).__name__, err)
            return None
        return meta, weights, state

    def _move_aside(self, folder: Path) -> None:
        """Rename an unreadable checkpoint out of the way, so that nothing resumes from, prunes or overwrites it."""
        if self.compute.is_master:
            aside = folder.with_name(f"{folder.name}.unusable-{datetime.datetime.now():%Y%m%d-%H%M%S}")
            folder.rename(aside)
            log.warning("moved it aside to %s (delete it once you no longer need it); falling back to an older "
                        "checkpoint", aside)

    def start_attempt(self, step: int, attempt: int) -> None:
        """Record an attempt of this run starting at `step`; `attempt` is Snakemake's (1: a command typed,
        more: its retries). A retry stops here, saying why, when the previous attempt made no progress: it did
        not complete, and this one starts no later than it did."""
        attempts = read_attempts(self.root)
        previous = attempts[-1] if attempts else None
        if attempt > 1 and previous and previous["outcome"] != "completed" and step <= previous["start_step"]:
            if self.compute.is_master:
                job = f", SLURM job {previous['slurm_job']}" if previous["slurm_job"] else ""
                log.error("not training: the previous attempt (started %s at step %d on %s%s) made no progress: %s; "
                          "this retry would start from step %d. Another retry would repeat it, so this one stops "
                          "here; every attempt's log is in %s. Fix the cause, then run the command again: a "
                          "command typed again always trains.", previous["started_at"], previous["start_step"],
                          previous["host"], job, how_it_ended(previous), step, self.root / "train.log")
            raise SystemExit(1)
        self.compute.barrier()  # every rank has read the log before rank 0 adds this attempt
        if self.compute.is_master:
            write_json_atomic(self.root / ATTEMPTS, attempts + [{
                "attempt": attempt, "start_step": step, "started_at": now(), "host": platform.node(),
                "world_size": self.compute.world_size, "slurm_job": os.environ.get("SLURM_JOB_ID"),
                "end_step": None, "ended_at": None, "outcome": None}])

    def end_attempt(self, step: int, outcome: str) -> None:
        """How this attempt ended, at `step`: "completed", "stopped on <reason>", "failed with <error>"."""
        if self.compute.is_master:
            attempts = read_attempts(self.root)
            attempts[-1].update(end_step=step, ended_at=now(), outcome=outcome)
            write_json_atomic(self.root / ATTEMPTS, attempts)


def save_final(folder: Path, model: torch.nn.Module, meta: dict) -> None:
    """The stage's declared output: weights and what is needed to rebuild the model."""
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), folder / "model.pt")
    write_json_atomic(folder / "meta.json", meta)


def load_model(folder: Path, device: torch.device | str = "cpu"):
    """The model saved by `save_final`, in eval mode, and its meta."""
    meta = read_input(Path(folder) / "meta.json", lambda path: json.loads(path.read_text()))
    model = read_input(Path(folder) / "model.pt", lambda path: model_from(meta, torch.load(path, map_location=device)))
    if model.config.recipe == "2026" and torch.device(device).type == "cuda":  # its compute dtype there, as trained
        model.cast_embeddings(torch.bfloat16)
    return model.to(device).eval(), meta


def model_from(meta: dict, weights: dict) -> GPT:
    model = GPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(weights)
    return model


def find_model(base_dir: Path, model: str) -> Path:
    """The folder of a model (base, mid, sft, rl): its final checkpoint, else while its stage still trains,
    its newest complete step checkpoint."""
    final = Path(base_dir) / layout.CHECKPOINTS[model]
    if (final / "model.pt").is_file():
        return final
    steps = [folder for run in (final / "steps").glob("*") for folder in step_folders(run)]
    if not steps:
        raise SystemExit(f"error: no {model} checkpoint under {final}; train it first "
                         f"(snakemake --profile profiles/local all)")
    return max(steps, key=folder_step)
