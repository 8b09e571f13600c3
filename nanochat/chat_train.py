"""Training of the chat stages (midtraining, SFT, RL): what they share. Their settings and entry points are
nanochat.scripts.mid_train, nanochat.scripts.chat_sft and nanochat.scripts.chat_rl.

A stage starts from its parent's final checkpoint (base for mid, mid for SFT, SFT for RL; the 2026 recipe's
SFT from base), with the base stage's learning rates times `init_lr_frac`, trains with the loop, checkpoints
and resume rules of base training (nanochat.training), and writes its final checkpoint and a JSON record.

The 2026 recipe's SFT (settings with recipe "2026": upstream 92d63d4's scripts/chat_sft.py) differs in its
mixture and batches (nanochat.chat_data: sft_mixture_2026, BestFitPadLoader), its optimizers (Muon without
weight decay, every group's rate times init_lr_frac, optionally the base run's optimizer state: warm_start)
and its learning-rate clock (PassSchedule: the fraction of the mixture consumed, not the step).
"""

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nanochat import settings
from nanochat.catalog import CATALOG, mixture_entries
from nanochat.chat_data import ENTRIES_2026, BestFitPadLoader, ChatLoader, mixture, sft_mixture_2026
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
    lrs = meta.get("base_lrs") or {k: meta["settings"][k] for k in LR_KEYS}
    unresolved = [k for k, v in lrs.items() if v < 0]
    if unresolved:
        raise SystemExit(f"error: the parent's meta.json has unresolved base settings {unresolved} (-1)")
    return lrs


@dataclasses.dataclass(frozen=True)
class PassSchedule:
    """Upstream 92d63d4's SFT schedule (its get_lr_multiplier and get_muon_momentum): the learning rate follows
    `progress(step)`, the fraction of the pass done (the mixture packed, or the steps of a set number), with a
    linear warmup, a constant part and a linear warmdown to final_lr_frac; Muon's momentum is the course's,
    0.85 to 0.95 over 300 steps; Muon's weight decay stays as the optimizers were built (0)."""
    num_steps: int
    progress: Callable[[int], float]
    warmup_ratio: float
    warmdown_ratio: float
    final_lr_frac: float

    def lr(self, step: int) -> float:
        progress = self.progress(step)  # upstream's last step may pass 1 by a few conversations, its rate below 0
        if progress < self.warmup_ratio:
            return (progress + 1e-8) / self.warmup_ratio
        if progress <= 1.0 - self.warmdown_ratio:
            return 1.0
        decay = (progress - (1.0 - self.warmdown_ratio)) / self.warmdown_ratio
        return (1 - decay) * 1.0 + decay * self.final_lr_frac

    def muon_momentum(self, step: int) -> float:
        return Schedule(self.num_steps, self.warmdown_ratio).muon_momentum(step)

    def muon_weight_decay(self, step: int) -> None:
        return None


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

    @property
    def autocast(self) -> bool:
        """Whether the model trains and evaluates under autocast: the course model; a 2026 one casts its weights."""
        return self.model.config.recipe == "course"

    def train(self, loader: Any, steps: int, evaluate: Callable[[], float], metric: str, tokens_per_step: int,
              loss_fn: Callable | None = None, evaluate_first: bool = False, schedule: Any = None) -> None:
        """Train to `steps` on `schedule` (default: the course's, decaying over the last cfg.warmdown_ratio of
        the steps); with `evaluate_first`, measure `metric` before the first step too (kept in the step
        checkpoints' meta, so a resumed run still reports the value from before training)."""
        if evaluate_first and not self.history:
            self.meta[f"initial_{metric}"] = round(evaluate(), 5)

        log.info("%s: %d steps on %d x %s", self.name, steps, self.compute.world_size, self.compute.device)
        train_loop(self.model, self.optimizers, loader, schedule=schedule or Schedule(steps, self.cfg.warmdown_ratio),
                   grad_clip=self.cfg.grad_clip, compute=self.compute, runtime=self.runtime,
                   checkpoints=self.checkpoints, history=self.history, meta=self.meta, evaluate=evaluate,
                   metric=metric, tokens_per_step=tokens_per_step, stop=self.stop, loss_fn=loss_fn,
                   shards=self.shards, autocast=self.autocast)

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


def build_optimizers(model: Any, init_lr_frac: float, lrs: dict, owns: Callable | None) -> list:
    """The stage's optimizers at the base stage's learning rates times init_lr_frac. A 2026 model's as upstream
    92d63d4's chat stages build them: Muon without weight decay (pretraining has taken it to 0), and every
    group's rate scaled once the optimizers are built, the groups with a fixed rate included."""
    if model.config.recipe == "course":
        return model.setup_optimizers(*(lrs[k] * init_lr_frac for k in LR_KEYS[:3]), lrs["weight_decay"], owns=owns)
    optimizers = model.setup_optimizers(*(lrs[k] for k in LR_KEYS[:3]), 0.0, owns=owns)
    for group in (group for opt in optimizers for group in opt.param_groups):
        group["lr"] = group["lr"] * init_lr_frac
        group["initial_lr"] = group["lr"]
    return optimizers


def warm_start(model: Any, optimizers: list, parent_dir: Path, parent_meta: dict, device: torch.device) -> Path:
    """Upstream 92d63d4's SFT warm start (load-optimizer=1): the optimizers' state (momenta, second moments, step
    counts) from the parent's last step checkpoint, the one under <parent_dir>/steps/ whose weights are the
    parent's. Learning rates and every other group setting stay this stage's (upstream restores only the rates,
    keeping pretraining's last Muon weight decay, about 0). Returns the checkpoint folder."""
    weights = model.state_dict()
    for folder in sorted(Path(parent_dir, "steps").glob(f"*/step_{parent_meta['step']:06d}")):
        if not (folder / "meta.json").is_file():
            continue
        saved = torch.load(folder / "model.pt", map_location=device)
        if saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k]) for k in weights):
            state = torch.load(folder / "training.pt", map_location="cpu", weights_only=True)["optimizers"]
            names = {p: name for name, p in model.named_parameters()}
            for opt, by_name in zip(optimizers, state, strict=True):
                # torch's own loading: this stage's groups, the saved state by position, placed as the optimizer
                # needs it (a fused AdamW's step counts on the parameters' device)
                params = [p for group in opt.param_groups for p in group["params"]]
                opt.load_state_dict({**opt.state_dict(), "state": {i: by_name[names[p]] for i, p in enumerate(params)}})
            return folder
    raise SystemExit(f"error: load_optimizer=1, but no step checkpoint of the parent model (step "
                     f"{parent_meta['step']}, its weights) under {Path(parent_dir, 'steps')}; set load_optimizer "
                     "to 0 to start from fresh optimizer state")


def setup(settings_cls: type, name: str, args: argparse.Namespace, extra_inputs: list[Path] = (),
          resolve: Callable[[Any, dict], Any] | None = None) -> ChatStage:
    """Check the inputs (`extra_inputs`: the stage's own beyond parent and tokenizer), load the parent model,
    complete the settings from the parent's meta (`resolve`), build optimizers, resume if possible (else, when
    the settings ask for it, warm-start the optimizers from the parent's run)."""
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
    cfg = resolve(cfg, parent_meta) if resolve else cfg
    lrs = base_lrs(parent_meta)
    shards = ParameterShards(model, compute) if compute.distributed and rt.shard_optimizer else None
    optimizers = build_optimizers(model, cfg.init_lr_frac, lrs, shards.owns if shards else None)
    checkpoints = StepCheckpoints(args.ckpt_dir / run_hash(cfg, args.parent_dir / "model.pt"), compute,
                                  sharded=shards is not None)
    resumed = checkpoints.load_latest(model, optimizers)
    state, loader_state = resumed if resumed else ({"history": []}, None)
    if not resumed and getattr(cfg, "load_optimizer", 0) == 1:
        log.info("optimizer state from %s", warm_start(model, optimizers, args.parent_dir, parent_meta,
                                                        compute.device))
    checkpoints.start_attempt(len(state["history"]), args.attempt)
    meta = {"settings": dataclasses.asdict(cfg), "model_config": model.export_config(), "stage": name,
            "tokenizer": str(args.tokenizer), "base_lrs": lrs, "parent": str(args.parent_dir),
            **{k: v for k, v in state.items() if k.startswith("initial_")}}
    return ChatStage(name, args, cfg, rt, compute, Tokenizer.load(args.tokenizer), model, optimizers, shards,
                     checkpoints, state["history"], loader_state, meta, stop, started)


def train_on_conversations(settings_cls: type, name: str, pack: bool, args: argparse.Namespace,
                           resolve: Callable[[Any, dict], Any] | None = None) -> None:
    """Midtraining (pack=True) and SFT (pack=False; the 2026 recipe's packed best-fit) on the conversation
    mixture, validated by loss. `resolve`: see setup."""
    stage = setup(settings_cls, name, args, resolve=resolve)
    cfg, compute, tokenizer = stage.cfg, stage.compute, stage.tokenizer
    sft_2026 = getattr(cfg, "recipe", "course") == "2026"  # chat_sft's settings have one (resolved), mid_train's not
    if sft_2026:
        train, val, composition = sft_mixture_2026(cfg.mixture, cfg.mmlu_epochs, cfg.gsm8k_epochs, stage.args.hub_dir)
    else:
        train, val, composition = mixture(name, cfg.mixture, cfg.smoltalk_rows, cfg.simple_spelling_rows,
                                          cfg.spelling_bee_rows, stage.args.hub_dir)
    log.info("%s mixture: %s; %d train / %d validation conversations", name, composition, len(train), len(val))
    B, T, rank, world = cfg.device_batch_size, cfg.max_seq_len, compute.rank, compute.world_size

    def loader(conversations: list, rows_per_step: int, state: dict | None = None) -> Any:
        if sft_2026:
            return BestFitPadLoader(tokenizer, conversations, B, T, rows_per_step, rank, world, state)
        return ChatLoader(tokenizer, conversations, B, T, rows_per_step, pack, rank, world, state)

    train_loader = loader(train, cfg.rows_per_step, stage.loader_state)
    steps = cfg.num_iterations if cfg.num_iterations > 0 else train_loader.epoch_steps()
    val_loader = loader(val, B * world)
    eval_steps = min(val_loader.epoch_steps(), max(1, stage.runtime.eval_tokens // (B * T * world)))
    val_batches = [val_loader.next_batch() for _ in range(eval_steps)]

    def validation_loss() -> float:
        stage.model.eval()
        loss = evaluate_loss(stage.model, val_batches, compute, autocast=stage.autocast)
        stage.model.train()
        return loss

    schedule = None
    if sft_2026:  # the pass's clock: the mixture consumed, or the steps of a set number
        clock = train_loader.progress if cfg.num_iterations <= 0 else (lambda step: (step + 1) / steps)
        schedule = PassSchedule(steps, clock, cfg.warmup_ratio, cfg.warmdown_ratio, cfg.final_lr_frac)
    stage.train(train_loader, steps, validation_loss, "val_loss", cfg.rows_per_step * T, evaluate_first=True,
                schedule=schedule)
    data = (ENTRIES_2026 if sft_2026 else mixture_entries(name)) if cfg.mixture == "hub" else []
    stage.finish(steps, "val_loss", {"mixture": composition, "train_conversations": len(train),
                                     "val_conversations": len(val),
                                     "data": {entry: CATALOG[entry].describe() for entry in data}})
