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

import torch

from nanochat import settings
from nanochat.checkpoint import StepCheckpoints, save_final
from nanochat.common import read_input, run_hash, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute, shutdown
from nanochat.dataloader import DataLoader
from nanochat.gpt import GPT, GPTConfig
from nanochat.loss_eval import eval_batches, evaluate_bpb
from nanochat.retry_guard import no_retry_on_exit
from nanochat.sharding import ParameterShards
from nanochat.tokenizer import Tokenizer
from nanochat.training import RuntimeSettings, Schedule, StopRequest, add_attempt_flag, train_loop

log = logging.getLogger("nanochat.scripts.base_train")


@dataclasses.dataclass
class BaseTrainSettings:
    """Base model pretraining: model shape, optimization and training length."""
    depth: int = dataclasses.field(default=20, metadata={"minimum": 1})  # transformer layers; width = depth x 64 unless model_dim is set
    model_dim: int = 0  # width override for tiny models, a multiple of 64 (0: depth x 64)
    n_kv_head: int = 0  # key/value heads for grouped-query attention (0: as many as query heads)
    max_seq_len: int = 2048  # context length in tokens
    device_batch_size: int = 32  # sequences per micro-batch on each device
    total_batch_size: int = 524_288  # tokens per optimizer step over all devices; sets gradient accumulation
    num_iterations: int = -1  # optimizer steps; -1: derived from target_flops, else from target_param_data_ratio
    target_flops: float = -1.0  # training compute budget in FLOPs (-1: unused)
    target_param_data_ratio: float = 20.0  # training tokens = ratio x parameters, when neither of the above is set
    embedding_lr: float = 0.2  # AdamW learning rate of the embedding (x (width/768)^-0.5)
    unembedding_lr: float = 0.004  # AdamW learning rate of the output head (x (width/768)^-0.5)
    matrix_lr: float = 0.02  # Muon learning rate of the transformer block matrices
    weight_decay: float = 0.0  # AdamW weight decay of embedding and head
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    warmdown_ratio: float = 0.2  # final fraction of steps over which the learning rate decays linearly to 0
    seed: int = 42  # seed of the initial weights


def num_steps(cfg: BaseTrainSettings, num_params: int, flops_per_token: int) -> int:
    """Training length: num_iterations, else a FLOPs budget, else tokens = ratio x parameters."""
    if cfg.num_iterations > 0:
        return cfg.num_iterations
    if cfg.target_flops > 0:
        return max(1, round(cfg.target_flops / (flops_per_token * cfg.total_batch_size)))
    return max(1, round(cfg.target_param_data_ratio * num_params / cfg.total_batch_size))


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
    cfg: BaseTrainSettings = settings.from_args(BaseTrainSettings, args)
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
    model_config = GPTConfig.from_depth(cfg.depth, tokenizer.vocab_size, T, cfg.model_dim, cfg.n_kv_head)
    torch.manual_seed(cfg.seed)
    model = GPT(model_config).to(compute.device)
    model.init_weights()
    shards = ParameterShards(model, compute) if compute.distributed and rt.shard_optimizer else None
    optimizers = model.setup_optimizers(cfg.embedding_lr, cfg.unembedding_lr, cfg.matrix_lr, cfg.weight_decay,
                                        owns=shards.owns if shards else None)
    steps = num_steps(cfg, model.num_params(), model.flops_per_token())
    log.info("model %s: %s params, %.3g FLOPs/token; %d steps of %s tokens on %d x %s",
             model_config, f"{model.num_params():,}", model.flops_per_token(), steps, f"{cfg.total_batch_size:,}",
             compute.world_size, compute.device)

    run = run_hash(cfg, args.tokenizer, names=[Path(s).name for s in args.shards])
    checkpoints = StepCheckpoints(args.ckpt_dir / run, compute, sharded=shards is not None)
    resumed = checkpoints.load_latest(model, optimizers)
    meta, loader_state = resumed if resumed else ({"history": []}, None)
    history = meta["history"]
    checkpoints.start_attempt(len(history), args.attempt)
    loader = DataLoader(args.shards, tokenizer, B, T, cfg.total_batch_size, compute.rank, compute.world_size,
                        state=loader_state)
    val_batches = eval_batches(args.val, tokenizer, B, T, rt.eval_tokens, compute.rank, compute.world_size)

    def validation_bpb() -> float:
        model.eval()
        bpb = evaluate_bpb(model, val_batches, token_bytes, compute)
        model.train()
        return bpb

    model_meta = {"settings": dataclasses.asdict(cfg), "model_config": model.export_config(),
                  "tokenizer": str(args.tokenizer)}
    train_loop(model, optimizers, loader, schedule=Schedule(steps, cfg.warmdown_ratio), grad_clip=cfg.grad_clip,
               compute=compute, runtime=rt, checkpoints=checkpoints, history=history, meta=model_meta,
               evaluate=validation_bpb, metric="val_bpb", tokens_per_step=cfg.total_batch_size, stop=stop,
               shards=shards)
    val_bpb = history[-1]["val_bpb"]
    log.info("done: %d steps, final loss %.4f, validation %.4f bits/byte", steps, history[-1]["loss"], val_bpb)
    if compute.is_master:
        save_final(args.out_dir, model, {**model_meta, "step": steps})
        write_json_atomic(args.out_dir / "base_train.json", {
            "settings": dataclasses.asdict(cfg), "model_config": model.export_config(),
            "num_params": model.num_params(), "flops_per_token": model.flops_per_token(), "num_steps": steps,
            "tokens": steps * cfg.total_batch_size, "world_size": compute.world_size,
            "device": str(compute.device), "final_loss": history[-1]["loss"], "val_bpb": val_bpb,
            "history": history, **run_record(started)})
    shutdown(compute)


if __name__ == "__main__":
    main()
