"""Training of the chat stages (midtraining, SFT): what they share. Their settings and entry points are
nanochat.mid_train and nanochat.chat_sft.

The stage starts from its parent's final checkpoint (base for mid, mid for SFT), with the base stage's
learning rates times `init_lr_frac`, trains on the conversation mixture (nanochat.chat_data) with the
same loop, checkpoints and resume rules as base training, and writes its final checkpoint and record.
"""

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

from nanochat import settings
from nanochat.common import run_record, start_compute_stage, write_json_atomic
from nanochat.training import RuntimeSettings

log = logging.getLogger("nanochat.chat_train")
LR_KEYS = ("embedding_lr", "unembedding_lr", "matrix_lr", "weight_decay")


def base_lrs(meta: dict) -> dict:
    """The base stage's learning rates, carried along in every later stage's meta."""
    return meta.get("base_lrs") or {k: meta["settings"][k] for k in LR_KEYS}


def run_hash(cfg, parent_dir: Path) -> str:
    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    h.update((parent_dir / "model.pt").read_bytes())
    return h.hexdigest()[:12]


def main(settings_cls: type, stage: str, pack: bool, doc: str, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_arguments(parser, settings_cls)
    settings.add_arguments(parser, RuntimeSettings)
    settings.add_path_arguments(
        parser, parent_dir="the parent stage's checkpoint folder (model.pt, meta.json)",
        tokenizer="tokenizer.json", out_dir="where the final model.pt/meta.json go",
        ckpt_dir="where resumable step checkpoints go")
    args = parser.parse_args(argv)
    cfg = settings.from_args(settings_cls, args)
    rt: RuntimeSettings = settings.from_args(RuntimeSettings, args)
    start_compute_stage([args.parent_dir / "model.pt", args.parent_dir / "meta.json", args.tokenizer])

    from nanochat.chat_data import ChatLoader, offline_mixture
    from nanochat.checkpoint import StepCheckpoints, load_model, save_final
    from nanochat.compute import init_compute, shutdown
    from nanochat.loss_eval import evaluate_loss
    from nanochat.tokenizer import Tokenizer
    from nanochat.training import StopRequest, train_loop

    started = time.time()
    compute = init_compute(rt.device)
    if not compute.is_master:
        logging.getLogger().setLevel(logging.WARNING)
    stop = StopRequest()
    tokenizer = Tokenizer.load(args.tokenizer)
    model, parent_meta = load_model(args.parent_dir, compute.device)
    model.train()
    lrs = base_lrs(parent_meta)
    optimizers = model.setup_optimizers(*(lrs[k] * cfg.init_lr_frac for k in LR_KEYS[:3]), lrs["weight_decay"])
    train, val, composition = offline_mixture(cfg.spelling_examples)
    log.info("%s mixture: %s; %d train / %d validation conversations", stage, composition, len(train), len(val))

    checkpoints = StepCheckpoints(args.ckpt_dir / run_hash(cfg, args.parent_dir), compute)
    resumed = checkpoints.load_latest(model, optimizers)
    meta, loader_state = resumed if resumed else ({"history": []}, 0)
    B, T = cfg.device_batch_size, cfg.max_seq_len
    loader = ChatLoader(tokenizer, train, B, T, cfg.rows_per_step, pack, compute.rank, compute.world_size,
                        loader_state)
    steps = cfg.num_iterations if cfg.num_iterations > 0 else loader.epoch_steps()
    val_loader = ChatLoader(tokenizer, val, B, T, B * compute.world_size, pack, compute.rank, compute.world_size)
    val_batches = [val_loader.next_batch() for _ in range(min(val_loader.epoch_steps(),
                                                              max(1, rt.eval_tokens // (B * T * compute.world_size))))]

    def validation_loss() -> float:
        model.eval()
        loss = evaluate_loss(model, val_batches, compute)
        model.train()
        return loss

    model_meta = {"settings": dataclasses.asdict(cfg), "model_config": model.export_config(), "stage": stage,
                  "tokenizer": str(args.tokenizer), "base_lrs": lrs, "parent": str(args.parent_dir)}
    log.info("%d steps of %d rows x %d tokens on %d x %s", steps, cfg.rows_per_step, T, compute.world_size,
             compute.device)
    train_loop(model, optimizers, loader, steps=steps, warmdown_ratio=cfg.warmdown_ratio, grad_clip=cfg.grad_clip,
               compute=compute, runtime=rt, checkpoints=checkpoints, history=meta["history"], meta=model_meta,
               evaluate=validation_loss, metric="val_loss", tokens_per_step=cfg.rows_per_step * T, stop=stop)
    history = meta["history"]
    log.info("done: %d steps, final loss %.4f, validation loss %.4f", steps, history[-1]["loss"],
             history[-1]["val_loss"])
    if compute.is_master:
        save_final(args.out_dir, model, {**model_meta, "step": steps})
        write_json_atomic(args.out_dir / f"{stage}_train.json", {
            "settings": dataclasses.asdict(cfg), "mixture": composition, "train_conversations": len(train),
            "val_conversations": len(val), "num_steps": steps, "world_size": compute.world_size,
            "device": str(compute.device), "final_loss": history[-1]["loss"], "val_loss": history[-1]["val_loss"],
            "initial_val_loss": next((h["val_loss"] for h in history if "val_loss" in h), None),
            "history": history, **run_record(started)})
    shutdown(compute)
