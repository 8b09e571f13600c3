"""Training of the chat stages (midtraining, SFT, RL): what they share. Their settings and entry points are
nanochat.scripts.mid_train, nanochat.scripts.chat_sft and nanochat.scripts.chat_rl.

A stage starts from its parent's final checkpoint (base for mid, mid for SFT, SFT for RL), with the base
stage's learning rates times `init_lr_frac`, trains with the loop, checkpoints and resume rules of base
training (nanochat.training), and writes its final checkpoint and a JSON record.
"""

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanochat import settings
from nanochat.catalog import CATALOG, mixture_entries
from nanochat.chat_data import ChatLoader, mixture
from nanochat.checkpoint import StepCheckpoints, load_model, save_final
from nanochat.common import run_hash, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import Compute, init_compute, shutdown
from nanochat.loss_eval import evaluate_loss
from nanochat.sharding import ParameterShards
from nanochat.tokenizer import Tokenizer
from nanochat.training import RuntimeSettings, Schedule, StopRequest, add_attempt_flag, train_loop

log = logging.getLogger("nanochat.chat_train")
LR_KEYS = ("embedding_lr", "unembedding_lr", "matrix_lr", "weight_decay")


def base_lrs(meta: dict) -> dict:
    """The base stage's learning rates, carried along in every later stage's meta."""
    return meta.get("base_lrs") or {k: meta["settings"][k] for k in LR_KEYS}


@dataclasses.dataclass
class ChatStage:
    """A chat stage set up to train: model and optimizers restored from a step checkpoint if there is one."""
    name: str  # the stage: mid_train, chat_sft or chat_rl (its record is <name>.json)
    args: argparse.Namespace
    cfg: Any
    runtime: RuntimeSettings
    compute: Compute
    tokenizer: Tokenizer
    model: Any
    optimizers: list
    shards: ParameterShards | None  # each process's share of the parameters, when the optimizer is sharded
    checkpoints: StepCheckpoints
    history: list
    loader_state: dict | None
    meta: dict
    stop: StopRequest
    started: float

    def train(self, loader: Any, steps: int, evaluate: Callable[[], float], metric: str, tokens_per_step: int,
              loss_fn: Callable | None = None, evaluate_first: bool = False) -> None:
        """Train to `steps`; with `evaluate_first`, measure `metric` before the first step too (kept in the
        step checkpoints' meta, so a resumed run still reports the value from before training)."""
        if evaluate_first and not self.history:
            self.meta[f"initial_{metric}"] = round(evaluate(), 5)

        log.info("%s: %d steps on %d x %s", self.name, steps, self.compute.world_size, self.compute.device)
        train_loop(self.model, self.optimizers, loader, schedule=Schedule(steps, self.cfg.warmdown_ratio),
                   grad_clip=self.cfg.grad_clip, compute=self.compute, runtime=self.runtime,
                   checkpoints=self.checkpoints, history=self.history, meta=self.meta, evaluate=evaluate,
                   metric=metric, tokens_per_step=tokens_per_step, stop=self.stop, loss_fn=loss_fn,
                   shards=self.shards)

    def finish(self, steps: int, metric: str, record: dict) -> None:
        """Write the final checkpoint and the stage's record (rank 0), and leave the process group."""
        last = self.history[-1]
        log.info("%s done: %d steps, final loss %.4f, %s %.4f", self.name, steps, last["loss"], metric, last[metric])
        if self.compute.is_master:
            save_final(self.args.out_dir, self.model, {**self.meta, "step": steps})
            write_json_atomic(self.args.out_dir / f"{self.name}.json", {
                "settings": dataclasses.asdict(self.cfg), "num_steps": steps, "world_size": self.compute.world_size,
                "device": str(self.compute.device), "final_loss": last["loss"], metric: last[metric],
                f"initial_{metric}": self.meta.get(f"initial_{metric}"),
                "history": self.history, **record, **run_record(self.started)})
        shutdown(self.compute)


def parse(settings_cls: type, doc: str, argv: list[str] | None, **extra_paths: str) -> argparse.Namespace:
    """A chat stage's flags: its settings, the runtime settings, its paths and --attempt."""
    parser = settings.stage_parser(
        doc, settings_cls, RuntimeSettings, parent_dir="the parent stage's checkpoint folder (model.pt, meta.json)",
        tokenizer="tokenizer.json", out_dir="where the final model.pt/meta.json go",
        ckpt_dir="where resumable step checkpoints go", **extra_paths)
    parser.add_argument("--hub_dir", type=Path, help="downloaded hub datasets (for the hub mixture)")
    add_attempt_flag(parser)
    return parser.parse_args(argv)


def setup(settings_cls: type, name: str, args: argparse.Namespace, extra_inputs: list[Path] = ()) -> ChatStage:
    """Check the inputs (`extra_inputs`: the stage's own beyond parent and tokenizer), load the parent model,
    build optimizers, resume if possible."""
    cfg = settings.from_args(settings_cls, args)
    rt: RuntimeSettings = settings.from_args(RuntimeSettings, args)
    start_compute_stage([args.parent_dir / "model.pt", args.parent_dir / "meta.json", args.tokenizer,
                         *extra_inputs])

    started = time.time()
    compute = init_compute(rt.device)
    if not compute.is_master:
        logging.getLogger().setLevel(logging.WARNING)
    stop = StopRequest(rt.stop_before_limit)
    model, parent_meta = load_model(args.parent_dir, compute.device)
    model.train()
    lrs = base_lrs(parent_meta)
    shards = ParameterShards(model, compute) if compute.distributed and rt.shard_optimizer else None
    optimizers = model.setup_optimizers(*(lrs[k] * cfg.init_lr_frac for k in LR_KEYS[:3]), lrs["weight_decay"],
                                        owns=shards.owns if shards else None)
    checkpoints = StepCheckpoints(args.ckpt_dir / run_hash(cfg, args.parent_dir / "model.pt"), compute,
                                  sharded=shards is not None)
    resumed = checkpoints.load_latest(model, optimizers)
    state, loader_state = resumed if resumed else ({"history": []}, None)
    checkpoints.start_attempt(len(state["history"]), args.attempt)
    meta = {"settings": dataclasses.asdict(cfg), "model_config": model.export_config(), "stage": name,
            "tokenizer": str(args.tokenizer), "base_lrs": lrs, "parent": str(args.parent_dir),
            **{k: v for k, v in state.items() if k.startswith("initial_")}}
    return ChatStage(name, args, cfg, rt, compute, Tokenizer.load(args.tokenizer), model, optimizers, shards,
                     checkpoints, state["history"], loader_state, meta, stop, started)


def train_on_conversations(settings_cls: type, name: str, pack: bool, args: argparse.Namespace) -> None:
    """Midtraining (pack=True) and SFT (pack=False) on the conversation mixture, validated by loss."""
    stage = setup(settings_cls, name, args)
    cfg, compute = stage.cfg, stage.compute
    train, val, composition = mixture(name, cfg.mixture, cfg.smoltalk_rows, cfg.simple_spelling_rows,
                                      cfg.spelling_bee_rows, stage.args.hub_dir)
    log.info("%s mixture: %s; %d train / %d validation conversations", name, composition, len(train), len(val))
    B, T = cfg.device_batch_size, cfg.max_seq_len
    loader = ChatLoader(stage.tokenizer, train, B, T, cfg.rows_per_step, pack, compute.rank, compute.world_size,
                        stage.loader_state)
    steps = cfg.num_iterations if cfg.num_iterations > 0 else loader.epoch_steps()
    val_loader = ChatLoader(stage.tokenizer, val, B, T, B * compute.world_size, pack, compute.rank,
                            compute.world_size)
    eval_steps = min(val_loader.epoch_steps(), max(1, stage.runtime.eval_tokens // (B * T * compute.world_size)))
    val_batches = [val_loader.next_batch() for _ in range(eval_steps)]

    def validation_loss() -> float:
        stage.model.eval()
        loss = evaluate_loss(stage.model, val_batches, compute)
        stage.model.train()
        return loss

    stage.train(loader, steps, validation_loss, "val_loss", cfg.rows_per_step * T, evaluate_first=True)
    data = mixture_entries(name) if cfg.mixture == "hub" else []
    stage.finish(steps, "val_loss", {"mixture": composition, "train_conversations": len(train),
                                     "val_conversations": len(val),
                                     "data": {entry: CATALOG[entry].describe() for entry in data}})
