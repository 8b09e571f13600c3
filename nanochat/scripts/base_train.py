"""Pretrain the base model on the tokenized shards; resumable at any step checkpoint.

    python -m nanochat.scripts.base_train --depth=4 --tokenizer=tok/tokenizer.json --val=val.parquet \
        --out_dir=base/ --ckpt_dir=base/steps shard_00000.parquet ...
    torchrun --standalone --nproc_per_node=8 -m nanochat.scripts.base_train ...   # one process per GPU

Step checkpoints go to --ckpt_dir/<run hash>/ (the hash covers the settings and the tokenizer, so
a changed run never resumes from another's state). On start the newest complete one is restored, whatever
number of processes wrote it. SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 write a checkpoint and exit with status
75; rerunning continues from there. A Snakemake retry (--attempt above 1) whose previous attempt made no
progress stops at once, saying how that attempt ended (nanochat.checkpoint).
"""

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Literal

import torch

from nanochat import scaling, settings
from nanochat.checkpoint import StepCheckpoints, save_final
from nanochat.common import read_input, run_hash, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute, shutdown
from nanochat.dataloader import BestFitLoader, DataLoader
from nanochat.gpt import GPT, GPTConfig
from nanochat.loss_eval import eval_batches, evaluate_bpb
from nanochat.retry_guard import no_retry_on_exit
from nanochat.sharding import ParameterShards
from nanochat.tokenizer import Tokenizer
from nanochat.training import RuntimeSettings, Schedule, StopRequest, add_attempt_flag, train_loop

log = logging.getLogger("nanochat.scripts.base_train")


@dataclasses.dataclass
class BaseTrainSettings:
    """Base model pretraining: the recipe, model shape, optimization and training length."""
    recipe: Literal["course", "2026"] = "course"  # course: upstream 48abd7d, the seed course's d20; 2026: upstream 92d63d4 (value embeddings, sliding windows, MuonAdamW, BOS best-fit batches; SFT straight after, no midtraining)
    depth: int = dataclasses.field(default=20, metadata={"minimum": 1})  # transformer layers; width = depth x 64 (2026: rounded up to a multiple of 128) unless model_dim is set
    model_dim: int = 0  # width override for tiny models, a multiple of 64 (2026: of 128) (0: from depth)
    n_kv_head: int = 0  # key/value heads for grouped-query attention (0: as many as query heads)
    window_pattern: str = ""  # attention window per layer, tiled: S a quarter of the context, L all of it; the last layer is always L (empty: the recipe's, course L, 2026 SSSL)
    max_seq_len: int = 2048  # context length in tokens
    device_batch_size: int = 32  # sequences per micro-batch on each device
    total_batch_size: int = -1  # tokens per optimizer step over all devices; sets gradient accumulation (-1: the recipe's, course 524,288, 2026 automatic from the horizon)
    num_iterations: int = -1  # optimizer steps; -1: derived from target_flops, else from target_param_data_ratio
    target_flops: float = -1.0  # training compute budget in FLOPs (-1: unused)
    target_param_data_ratio: float = -1.0  # training tokens = ratio x parameters (2026: x matrix and head parameters), when neither of the above is set (-1: the recipe's, course 20, 2026 12)
    embedding_lr: float = -1.0  # AdamW learning rate of the embedding, x (width/768)^-0.5 (-1: the recipe's, course 0.2, 2026 0.3)
    unembedding_lr: float = -1.0  # AdamW learning rate of the output head, x (width/768)^-0.5 (-1: the recipe's, course 0.004, 2026 0.008)
    matrix_lr: float = 0.02  # Muon learning rate of the transformer block matrices
    scalar_lr: float = 0.5  # 2026: AdamW learning rate of the per-layer residual scalars
    weight_decay: float = -1.0  # course: AdamW's of embedding and head; 2026: Muon's cautious weight decay at d12, scaled to the batch and horizon, decaying to 0 (-1: the recipe's, course 0, 2026 0.28)
    grad_clip: float = -1.0  # clip the global gradient norm to this, 0: no clipping (-1: the recipe's, course 1, 2026 0)
    warmup_steps: int = -1  # steps over which the learning rate rises linearly to its peak (-1: the recipe's, course 0, 2026 40)
    warmdown_ratio: float = -1.0  # final fraction of steps over which the learning rate decays linearly (-1: the recipe's, course 0.2, 2026 0.65)
    final_lr_frac: float = -1.0  # learning rate at the end of the warmdown, a fraction of the peak (-1: the recipe's, course 0, 2026 0.05)
    seed: int = 42  # seed of the initial weights


# The settings in which the recipes differ: what a -1 (or empty) setting above becomes. Course: upstream 48abd7d's
# scripts/base_train.py; 2026: upstream 92d63d4's (its speedrun then sets the ratio to 8: the gpt2 preset).
RECIPES = {
    "course": dict(window_pattern="L", total_batch_size=524_288, target_param_data_ratio=20.0, embedding_lr=0.2,
                   unembedding_lr=0.004, weight_decay=0.0, grad_clip=1.0, warmup_steps=0, warmdown_ratio=0.2,
                   final_lr_frac=0.0),
    "2026": dict(window_pattern="SSSL", total_batch_size=-1, target_param_data_ratio=12.0, embedding_lr=0.3,
                 unembedding_lr=0.008, weight_decay=0.28, grad_clip=0.0, warmup_steps=40, warmdown_ratio=0.65,
                 final_lr_frac=0.05),
}


def resolved(cfg: BaseTrainSettings) -> BaseTrainSettings:
    """The settings with each -1 (or empty) one replaced by its recipe's value."""
    unset = {key: value for key, value in RECIPES[cfg.recipe].items() if getattr(cfg, key) in (-1, "")}
    return dataclasses.replace(cfg, **unset)


def model_config(cfg: BaseTrainSettings, vocab_size: int, depth: int = 0) -> GPTConfig:
    """The model of resolved settings; with `depth`, that depth's model as upstream sizes it (no width override)."""
    if depth:
        return GPTConfig.from_depth(depth, vocab_size, cfg.max_seq_len, recipe=cfg.recipe,
                                    window_pattern=cfg.window_pattern)
    return GPTConfig.from_depth(cfg.depth, vocab_size, cfg.max_seq_len, cfg.model_dim, cfg.n_kv_head,
                                recipe=cfg.recipe, window_pattern=cfg.window_pattern)


def horizon(cfg: BaseTrainSettings, model: GPT) -> scaling.Horizon:
    """Steps and tokens per step of resolved settings (nanochat.scaling); the 2026 recipe also scales its
    learning rates and weight decay, measured against the d12 model (built on the meta device: sizes only)."""
    budget = dict(num_iterations=cfg.num_iterations, target_flops=cfg.target_flops,
                  target_param_data_ratio=cfg.target_param_data_ratio, total_batch_size=cfg.total_batch_size)
    if cfg.recipe == "course":
        steps = scaling.course_num_steps(model.num_params(), model.flops_per_token(), **budget)
        return scaling.Horizon(steps, cfg.total_batch_size, 1.0, cfg.weight_decay)
    with torch.device("meta"):
        reference = GPT(model_config(cfg, model.config.vocab_size, depth=scaling.REFERENCE_DEPTH))
    return scaling.horizon_2026(scaling.scaling_params(model.num_scaling_params()),
                                scaling.scaling_params(reference.num_scaling_params()), model.flops_per_token(),
                                weight_decay=cfg.weight_decay, **budget)


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, BaseTrainSettings, RuntimeSettings,
                                   tokenizer="tokenizer.json (token_bytes.pt beside it)", val="validation shard",
                                   out_dir="where the final model.pt/meta.json go",
                                   ckpt_dir="where resumable step checkpoints go")
    parser.add_argument("shards", nargs="+", help="training shards")
    add_attempt_flag(parser)
    args = parser.parse_args(argv)
    with no_retry_on_exit(args.ckpt_dir, args.attempt):
        train(args)


def train(args: argparse.Namespace) -> None:
    cfg = resolved(settings.from_args(BaseTrainSettings, args))
    rt: RuntimeSettings = settings.from_args(RuntimeSettings, args)
    token_bytes_path = args.tokenizer.parent / "token_bytes.pt"
    start_compute_stage([*args.shards, args.val, args.tokenizer, token_bytes_path])
    started = time.time()
    compute = init_compute(rt.device)
    if not compute.is_master:
        logging.getLogger().setLevel(logging.WARNING)
    stop = StopRequest(rt.stop_before_limit)
    tokenizer = Tokenizer.load(args.tokenizer)
    token_bytes = read_input(token_bytes_path, torch.load)
    B, T = cfg.device_batch_size, cfg.max_seq_len
    course = cfg.recipe == "course"
    torch.manual_seed(cfg.seed)
    if course:
        model = GPT(model_config(cfg, tokenizer.vocab_size)).to(compute.device)
    else:  # as upstream 92d63d4: shapes on the meta device, so the seed draws init_weights's numbers only
        with torch.device("meta"):
            model = GPT(model_config(cfg, tokenizer.vocab_size))
        model.to_empty(device=compute.device)
    model.init_weights()
    if not course and compute.device.type == "cuda":  # 2026: embeddings stored in bf16, the matmuls' dtype
        model.cast_embeddings(torch.bfloat16)
    run_length, automatic = horizon(cfg, model), cfg.total_batch_size == -1
    steps, total_batch, lr_scale = run_length.num_steps, run_length.total_batch_size, run_length.lr_scale
    shards = ParameterShards(model, compute) if compute.distributed and rt.shard_optimizer else None
    optimizers = model.setup_optimizers(cfg.embedding_lr * lr_scale, cfg.unembedding_lr * lr_scale,
                                        cfg.matrix_lr * lr_scale, run_length.weight_decay,
                                        owns=shards.owns if shards else None, scalar_lr=cfg.scalar_lr * lr_scale)
    log.info("model %s: %s params, %.3g FLOPs/token; %d steps of %s tokens on %d x %s, matmuls in %s",
             model.config, f"{model.num_params():,}", model.flops_per_token(), steps, f"{total_batch:,}",
             compute.world_size, compute.device, compute.precision("train", model))
    if not course:
        log.info("2026 recipe: batch %s tokens%s, learning rates x %.4f, Muon weight decay %.6f", f"{total_batch:,}",
                 " (automatic)" if automatic else "", lr_scale, run_length.weight_decay)

    run = run_hash(cfg, args.tokenizer, names=[Path(s).name for s in args.shards])
    checkpoints = StepCheckpoints(args.ckpt_dir / run, compute, sharded=shards is not None)
    resumed = checkpoints.load_latest(model, optimizers)
    meta, loader_state = resumed if resumed else ({"history": []}, None)
    history = meta["history"]
    checkpoints.start_attempt(len(history), args.attempt)
    loader = (DataLoader if course else BestFitLoader)(args.shards, tokenizer, B, T, total_batch, compute.rank,
                                                       compute.world_size, state=loader_state)
    val_batches = eval_batches(args.val, tokenizer, B, T, rt.eval_tokens, compute.rank, compute.world_size,
                               bestfit=not course)

    def validation_bpb() -> float:
        model.eval()
        bpb = evaluate_bpb(model, val_batches, token_bytes, compute, autocast=course)
        model.train()
        return bpb

    model_meta = {"settings": dataclasses.asdict(cfg), "model_config": model.export_config(),
                  "total_batch_size": total_batch, "tokenizer": str(args.tokenizer)}  # 2026 SFT inherits the batch
    schedule = Schedule(steps, cfg.warmdown_ratio, cfg.warmup_steps, cfg.final_lr_frac, recipe=cfg.recipe,
                        weight_decay=0.0 if course else run_length.weight_decay)
    train_loop(model, optimizers, loader, schedule=schedule, grad_clip=cfg.grad_clip, compute=compute, runtime=rt,
               checkpoints=checkpoints, history=history, meta=model_meta, evaluate=validation_bpb, metric="val_bpb",
               tokens_per_step=total_batch, stop=stop, shards=shards, autocast=course)
    val_bpb = history[-1]["val_bpb"]
    log.info("done: %d steps, final loss %.4f, validation %.4f bits/byte", steps, history[-1]["loss"], val_bpb)
    if compute.is_master:
        save_final(args.out_dir, model, {**model_meta, "step": steps})
        write_json_atomic(args.out_dir / "base_train.json", {
            "settings": dataclasses.asdict(cfg), "model_config": model.export_config(),
            "num_params": model.num_params(), "flops_per_token": model.flops_per_token(), "num_steps": steps,
            "tokens": steps * total_batch, "total_batch_size": total_batch, "world_size": compute.world_size,
            "device": str(compute.device), "final_loss": history[-1]["loss"], "val_bpb": val_bpb,
            "history": history, **run_record(started)})
    shutdown(compute)


if __name__ == "__main__":
    main()
