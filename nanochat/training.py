"""What every training stage shares: runtime settings, the --attempt flag, LR schedule, stop signals, progress lines,
wandb."""

import argparse
import contextlib
import dataclasses
import datetime
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from nanochat.common import write_atomic
from nanochat.compute import Compute, shutdown
from nanochat.fused import keep_freed_memory
from nanochat.retry_guard import RESUMABLE_EXIT
from nanochat.sharding import ParameterShards, optimizer_state_bytes

log = logging.getLogger("nanochat.train")



@dataclasses.dataclass
class RuntimeSettings:
    """How training runs, not what it computes: changing these never reruns a stage."""
    device: str = ""  # cuda, cpu or mps; empty: the best one available
    compile: bool = False  # torch.compile the model (worth it on CUDA for long runs)
    shard_optimizer: bool = True  # with several processes, each keeps optimizer state for and updates its share of the parameters (nanochat.sharding); false: DDP, the whole state on every process
    checkpoint_every: int = 500  # optimizer steps between resumable step checkpoints, and one at the last step (0: none)
    eval_every: int = 250  # optimizer steps between validation bits-per-byte evaluations (0: only at the end)
    eval_tokens: int = 10_485_760  # validation tokens per evaluation, over all processes
    log_every: int = 10  # optimizer steps between progress lines
    stop_before_limit: int = 300  # seconds before a SLURM job's time limit to checkpoint and exit 75 for a resubmission (0: only at SIGTERM)
    wandb_project: str = "nanochat"  # Weights & Biases project
    wandb_run: str = ""  # Weights & Biases run name; empty: no wandb at all (nothing is skipped)


def add_attempt_flag(parser: argparse.ArgumentParser) -> None:
    """--attempt, which the training rules set to Snakemake's attempt number of the job."""
    parser.add_argument("--attempt", type=int, default=1,
                        help="Snakemake's attempt number of this job: 1 (a command typed) always trains; a retry "
                             "stops at once if the previous attempt made no progress (default: 1)")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The optimizers' settings at each step, which train_loop asks before every update: the learning-rate
    multiplier, Muon's momentum and (2026) Muon's weight decay. Course: upstream 48abd7d's; 2026: upstream
    92d63d4's. The learning rate is the same function in both; the course has no warmup and decays to 0."""
    num_steps: int
    warmdown_ratio: float  # final fraction of the steps over which the learning rate decays linearly
    warmup_steps: int = 0  # first steps over which the learning rate rises linearly to its peak
    final_lr_frac: float = 0.0  # learning rate at the end of the warmdown, a fraction of the peak
    recipe: str = "course"  # "course" or "2026": which Muon momentum and weight decay schedules
    weight_decay: float = 0.0  # 2026: Muon's weight decay at step 0, falling along a cosine to 0 at the end

    def lr(self, step: int) -> float:
        """Linear warmup, constant, then linear to final_lr_frac over the warmdown."""
        warmdown = round(self.warmdown_ratio * self.num_steps)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step <= self.num_steps - warmdown:
            return 1.0
        progress = (self.num_steps - step) / warmdown
        return progress * 1.0 + (1 - progress) * self.final_lr_frac

    def muon_momentum(self, step: int) -> float:
        """Course: 0.85 to 0.95 over the first 300 steps. 2026: 0.85 to 0.97 over the first 400, then down to
        0.90 over the warmdown."""
        if self.recipe == "course":
            frac = min(step / 300, 1.0)
            return (1 - frac) * 0.85 + frac * 0.95
        warmdown = round(self.warmdown_ratio * self.num_steps)
        warmdown_start = self.num_steps - warmdown
        if step < 400:
            frac = step / 400
            return (1 - frac) * 0.85 + frac * 0.97
        if step >= warmdown_start:
            progress = (step - warmdown_start) / warmdown
            return 0.97 * (1 - progress) + 0.90 * progress
        return 0.97

    def muon_weight_decay(self, step: int) -> float | None:
        """2026: cosine from weight_decay to 0 over the run; course: None, Muon has no weight decay."""
        if self.recipe == "course":
            return None
        return self.weight_decay * 0.5 * (1 + math.cos(math.pi * step / self.num_steps))


def slurm_job_end() -> float | None:
    """When SLURM ends this job (Unix time), asked of squeue; None outside SLURM or if squeue cannot say."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        end = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
        return datetime.datetime.fromisoformat(end).timestamp()  # squeue prints local time
    except (OSError, subprocess.TimeoutExpired, ValueError):
        log.warning("SLURM job %s: end time unknown (squeue), relying on SIGTERM at the limit", job)
        return None


class StopRequest:
    """When training should write a step checkpoint and exit with RESUMABLE_EXIT, to be resumed by a rerun:
    on SIGTERM (SLURM's time limit, a cancel), SIGINT (Ctrl-C), SIGUSR1 (a warning anyone can send),
    or, in a SLURM job, once the next step would end within `margin` seconds of the job's time limit.

    The deadline replaces `sbatch --signal`: under Snakemake's SLURM executor a warning signal kills
    the job's shell (`B:`) or the Snakemake process inside the job step (without `B:`), not just
    the trainer, so the job would die before the checkpoint is written."""

    def __init__(self, margin: float):
        self.reason: str | None = None
        self.deadline = slurm_job_end() if margin > 0 else None
        if self.deadline:  # at most a quarter of what is left, so that a short job still makes progress
            self.margin = min(margin, (self.deadline - time.time()) / 4)
            log.info("SLURM job ends at %s: checkpointing and exiting %d s before",
                     datetime.datetime.fromtimestamp(self.deadline).strftime("%Y-%m-%d %H:%M:%S"), self.margin)
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.reason = signal.Signals(signum).name
        log.warning("%s received: checkpointing at the end of this step", self.reason)

    def due(self, step_seconds: float, compute: Compute) -> bool:
        """Whether to stop after this step; every process of a DDP run gets the same answer."""
        if not self.reason and self.deadline and time.time() + step_seconds + self.margin >= self.deadline:
            self.reason = f"the SLURM time limit in {format_duration(self.deadline - time.time())}"
        flag = torch.tensor(float(self.reason is not None), device=compute.device)
        if compute.all_reduce(flag, op=torch.distributed.ReduceOp.MAX).item() and not self.reason:
            self.reason = "another process's stop request"
        return self.reason is not None


def format_duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """A compact line per `every` steps: step, loss (smoothed), lr, tok/s, MFU, ETA."""

    def __init__(self, num_steps: int, tokens_per_step: int, flops_per_token: int, peak_flops: float | None,
                 every: int):
        self.num_steps, self.tokens_per_step = num_steps, tokens_per_step
        self.flops_per_token, self.peak_flops, self.every = flops_per_token, peak_flops, every
        self.smooth_loss, self.step_times = None, []

    def update(self, step: int, loss: float, lr_mult: float, dt: float) -> dict:
        """Record one finished step (1-based), log a line when due, return the step's history entry."""
        self.smooth_loss = loss if self.smooth_loss is None else 0.9 * self.smooth_loss + 0.1 * loss
        self.step_times = (self.step_times + [dt])[-50:]
        tok_s = self.tokens_per_step / dt
        mfu = tok_s * self.flops_per_token / self.peak_flops if self.peak_flops else None
        if self.every and (step % self.every == 0 or step == self.num_steps):
            eta = (self.num_steps - step) * sum(self.step_times) / len(self.step_times)
            log.info("step %*d/%d | loss %.4f | lr x%.2f | %s tok/s | mfu %s | %.0f ms | eta %s",
                     len(str(self.num_steps)), step, self.num_steps, self.smooth_loss, lr_mult, f"{tok_s:,.0f}",
                     f"{100 * mfu:.1f}%" if mfu is not None else "n/a", 1000 * dt, format_duration(eta))
        return {"step": step, "loss": round(loss, 5), "lr_mult": round(lr_mult, 5), "tok_per_s": round(tok_s, 1),
                "mfu": None if mfu is None else round(mfu, 4), "time": round(time.time(), 3)}


def init_wandb(runtime: RuntimeSettings, config: dict, is_master: bool, run_folder: Path):
    """A wandb run when `wandb_run` is set (offline unless WANDB_MODE says otherwise), else None.

    Every attempt of a training run logs into one wandb run: its id is kept in `run_folder` (beside the
    step checkpoints, under base_dir), and wandb's files go there too, not into the working directory.
    Offline, wandb writes a directory per attempt, all with that id; `wandb sync` joins them into one run.
    A resumed attempt logs the restored history first (train_loop): a SIGKILLed attempt's last records
    may never have left its wandb process."""
    if not runtime.wandb_run or not is_master:
        return None
    import wandb

    id_file = run_folder / "wandb_id"
    if not id_file.is_file():
        write_atomic(id_file, lambda tmp: tmp.write_text(uuid.uuid4().hex[:12] + "\n"))
    return wandb.init(project=runtime.wandb_project, name=runtime.wandb_run, config=config,
                      id=id_file.read_text().strip(), resume="allow", dir=run_folder)


def train_loop(model, optimizers: list, loader, *, schedule: Schedule, grad_clip: float, compute,
               runtime: RuntimeSettings, checkpoints, history: list[dict], meta: dict,
               evaluate: Callable[[], float], metric: str, tokens_per_step: int, stop: StopRequest,
               loss_fn: Callable | None = None, shards: ParameterShards | None = None, autocast: bool = True) -> None:
    """Optimizer steps from len(history) to `schedule.num_steps`, shared by every training stage.

    Each step: gradient accumulation over the loader's micro-batches (DDP all-reduces on the last
    only; with `shards` the sharded step sums them instead), clipping (grad_clip 0: none), the step's
    settings from `schedule` (any object with Schedule's num_steps and methods): every group's learning
    rate, and every Muon group's (optimizers[1]) momentum and weight decay, then the optimizer steps. The
    forward and backward passes run under compute.autocast() if `autocast` (the course model; a 2026 model
    casts its weights itself). Appends a
    history entry per step (with `metric` from `evaluate` every eval_every steps), writes step
    checkpoints every checkpoint_every steps and at the last, and on a stop request checkpoints and exits 75. How the
    attempt ends (completed, stopped, failed) goes to the run's attempts log (nanochat.checkpoint).
    The loss of a micro-batch is `loss_fn(model, batch)`, by default the model's own mean loss.
    """
    train_model, ddp, steps = model, compute.distributed and shards is None, schedule.num_steps
    if compute.device.type == "cpu":
        keep_freed_memory()
    if ddp:
        train_model = DDP(model, device_ids=[compute.local_rank] if compute.device.type == "cuda" else None)
    if runtime.compile:
        train_model = torch.compile(train_model)
    peak = compute.peak_flops()
    progress = Progress(steps, tokens_per_step, model.flops_per_token(), peak and peak * compute.world_size,
                        runtime.log_every)
    wandb_run = init_wandb(runtime, meta["settings"], compute.is_master, checkpoints.root)
    for entry in history if wandb_run else []:  # what a killed attempt never flushed; wandb ignores steps it has
        wandb_run.log(entry, step=entry["step"])
    loss_fn = loss_fn or (lambda m, batch: m(*batch))
    step, accum = len(history), loader.accum
    started_at = step
    try:
        while step < steps:
            t0 = time.time()
            lr_mult = schedule.lr(step)
            loss_sum = torch.zeros((), device=compute.device)
            for micro in range(accum):
                batch = loader.next_batch(compute.device)
                # DDP averages gradients across ranks only on the last micro-step.
                last = micro == accum - 1 or not ddp
                with (contextlib.nullcontext() if last else train_model.no_sync(),
                      compute.autocast() if autocast else contextlib.nullcontext()):
                    loss = loss_fn(train_model, batch)
                    (loss / accum).backward()
                loss_sum += loss.detach()
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * lr_mult
            momentum, weight_decay = schedule.muon_momentum(step), schedule.muon_weight_decay(step)
            for group in optimizers[1].param_groups:
                group["momentum"] = momentum
                if weight_decay is not None:
                    group["weight_decay"] = weight_decay
            if shards:
                shards.step(optimizers, grad_clip)
            else:
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                for opt in optimizers:
                    opt.step()
            if step == started_at:  # the state exists from the first step on
                sizes = compute.gather(optimizer_state_bytes(optimizers))
                log.info("optimizer state per process: %s MB", ", ".join(f"{s / 1e6:.2f}" for s in sizes))
            model.zero_grad(set_to_none=True)
            loss_value = compute.all_reduce(loss_sum).item() / (accum * compute.world_size)
            if compute.device.type == "cuda":
                torch.cuda.synchronize()
            step += 1
            entry = progress.update(step, loss_value, lr_mult, time.time() - t0)
            if runtime.eval_every and step % runtime.eval_every == 0 and step < steps:
                entry[metric] = round(evaluate(), 5)
                log.info("step %d | %s %.4f", step, metric, entry[metric])
            history.append(entry)
            if wandb_run:
                wandb_run.log(entry, step=step)
            stopping = step < steps and stop.due(time.time() - t0, compute)
            # The last step is checkpointed too: a job killed between the end of training and its outputs
            # (a time limit during the final evaluation or save) is resumed with no step to redo.
            if stopping or (runtime.checkpoint_every and (step % runtime.checkpoint_every == 0 or step == steps)):
                checkpoints.save(step, model, optimizers, loader.state_dict(), {**meta, "history": history})
            if stopping:
                log.warning("stopped at step %d on %s; rerun to resume", step, stop.reason)
                checkpoints.end_attempt(step, f"stopped on {stop.reason}")
                shutdown(compute)
                sys.exit(RESUMABLE_EXIT)
        history[-1][metric] = round(evaluate(), 5)
    except Exception as err:  # recorded for the next attempt, which stops if this one made no progress
        checkpoints.end_attempt(len(history), f"failed with {type(err).__name__}: {err}")
        raise
    checkpoints.end_attempt(steps, "completed")
    if wandb_run:
        wandb_run.finish()
