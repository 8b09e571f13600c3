"""Resumable step checkpoints and final checkpoints, every file written atomically (temp + rename).

A step checkpoint is a folder `step_NNNNNN/` holding `model.pt` (rank 0), `rank{r}.pt` (each rank's
optimizer, data-loader and RNG state) and `meta.json`, which rank 0 writes last: a folder without
it is incomplete and ignored. Loading tries the newest complete checkpoint first and falls back to
older ones when a file does not load (a truncated write, a full disk), saying so.
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from nanochat import layout
from nanochat.common import also_log_to, write_atomic, write_json_atomic
from nanochat.compute import Compute
from nanochat.gpt import GPT, GPTConfig

log = logging.getLogger("nanochat.checkpoint")
KEEP = 2  # complete step checkpoints kept; older ones are deleted


def save_atomic(obj: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StepCheckpoints:
    def __init__(self, root: Path, compute: Compute):
        """Step checkpoints of one run under `root`, whose train.log gathers the log of every attempt."""
        self.root, self.compute = Path(root), compute
        if compute.is_master:
            also_log_to(self.root / "train.log")

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, newest first."""
        return sorted((d for d in self.root.glob("step_*") if (d / "meta.json").is_file()), reverse=True)

    def save(self, step: int, model: torch.nn.Module, optimizers: list, loader_state: Any, meta: dict) -> None:
        folder = self.root / f"step_{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        if self.compute.is_master:
            save_atomic(model.state_dict(), folder / "model.pt")
        save_atomic({"optimizers": [opt.state_dict() for opt in optimizers], "loader": loader_state,
                     "rng": rng_state()}, folder / f"rank{self.compute.rank}.pt")
        self.compute.barrier()  # every rank's file is in place before the folder is marked complete
        if self.compute.is_master:
            write_json_atomic(folder / "meta.json", {**meta, "step": step, "world_size": self.compute.world_size})
            for old in self.complete()[KEEP:]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint saved: %s", folder)
        self.compute.barrier()

    def load_latest(self, model: torch.nn.Module, optimizers: list) -> tuple[dict, Any] | None:
        """Restore the newest checkpoint every rank can load; (meta, loader state), or None to start fresh."""
        for folder in self.complete():
            meta = json.loads((folder / "meta.json").read_text())
            try:
                if meta["world_size"] != self.compute.world_size:
                    raise ValueError(f"saved by {meta['world_size']} processes, this run has "
                                     f"{self.compute.world_size}")
                weights = torch.load(folder / "model.pt", map_location=self.compute.device)
                state = torch.load(folder / f"rank{self.compute.rank}.pt", map_location="cpu", weights_only=False)
                ok = 1
            except Exception as err:  # noqa: BLE001 - any unreadable file means: use an older checkpoint
                log.warning("checkpoint %s is unusable (%s: %s); falling back to an older one",
                            folder.name, type(err).__name__, err)
                ok = 0
            flag = torch.tensor([ok], device=self.compute.device)
            if not int(self.compute.all_reduce(flag, op=torch.distributed.ReduceOp.MIN).item()):
                continue
            model.load_state_dict(weights)
            for opt, opt_state in zip(optimizers, state["optimizers"]):
                opt.load_state_dict(opt_state)
            set_rng_state(state["rng"])
            log.info("resuming from %s (step %d)", folder, meta["step"])
            return meta, state["loader"]
        return None


def save_final(folder: Path, model: torch.nn.Module, meta: dict) -> None:
    """The stage's declared output: weights and what is needed to rebuild the model."""
    folder.mkdir(parents=True, exist_ok=True)
    save_atomic(model.state_dict(), folder / "model.pt")
    write_json_atomic(folder / "meta.json", meta)


def load_model(folder: Path, device: torch.device | str = "cpu"):
    """The model saved by `save_final`, in eval mode, and its meta."""
    meta = json.loads((Path(folder) / "meta.json").read_text())
    model = GPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(torch.load(Path(folder) / "model.pt", map_location=device))
    return model.to(device).eval(), meta


def find_model(base_dir: Path, model: str) -> Path:
    """The folder of a model (base, mid, sft, rl): its final checkpoint, else while its stage still trains,
    its newest complete step checkpoint."""
    final = Path(base_dir) / layout.CHECKPOINTS[model]
    if (final / "model.pt").is_file():
        return final
    steps = sorted((final / "steps").glob("*/step_*/meta.json"), key=lambda p: p.parent.name)
    if not steps:
        raise SystemExit(f"error: no {model} checkpoint under {final}; train it first "
                         f"(snakemake --profile profiles/local all)")
    return steps[-1].parent
