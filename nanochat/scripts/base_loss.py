"""Evaluate the base model: bits per byte on the training and validation splits, and a few greedy
completions of fixed prompts, to one JSON record.

    python -m nanochat.scripts.base_loss --model_dir=base/ --tokenizer=tok/tokenizer.json \
        --train=shard_00000.parquet --val=shard_00003.parquet --out=base_loss.json
"""

import dataclasses
import logging
import time

import torch

from nanochat import settings
from nanochat.checkpoint import load_model
from nanochat.common import read_input, run_record, start_compute_stage, write_json_atomic
from nanochat.compute import init_compute
from nanochat.engine import Engine
from nanochat.loss_eval import eval_batches, evaluate_bpb
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.base_loss")

PROMPTS = [  # upstream's sample prompts
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "My favorite color is",
    "If 5*x + 3 = 13, then x is",
]


@dataclasses.dataclass
class BaseLossSettings:
    """Base model loss evaluation and samples."""
    split_tokens: int = 10_485_760  # tokens evaluated on each split
    device_batch_size: int = 32  # sequences per evaluation batch
    sample_tokens: int = 16  # tokens generated greedily after each sample prompt


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, BaseLossSettings, device=True, model_dir="folder with model.pt and meta.json",
                                   tokenizer="tokenizer.json (token_bytes.pt beside it)", train="a training shard",
                                   val="the validation shard", out="JSON record to write")
    args = parser.parse_args(argv)
    cfg: BaseLossSettings = settings.from_args(BaseLossSettings, args)
    token_bytes_path = args.tokenizer.parent / "token_bytes.pt"
    start_compute_stage([args.model_dir / "model.pt", args.model_dir / "meta.json", args.tokenizer, token_bytes_path,
                         args.train, args.val])
    started = time.time()
    compute = init_compute(args.device)
    model, meta = load_model(args.model_dir, compute.device)
    tokenizer = Tokenizer.load(args.tokenizer)
    token_bytes = read_input(token_bytes_path, torch.load)
    B, T = cfg.device_batch_size, model.config.sequence_len
    record = {"settings": dataclasses.asdict(cfg), "model_step": meta["step"]}
    course = model.config.recipe == "course"
    for split, shard in (("train", args.train), ("val", args.val)):  # 2026: best-fit rows, as it trained on
        batches = eval_batches(shard, tokenizer, B, T, cfg.split_tokens, bestfit=not course)
        record[f"{split}_bpb"] = evaluate_bpb(model, batches, token_bytes, compute, autocast=course)
        record["tokens_per_split"] = len(batches) * B * T
        log.info("%s: %.4f bits/byte over %d tokens", split, record[f"{split}_bpb"], len(batches) * B * T)
    samples, engine = [], Engine(model, tokenizer)
    for prompt in PROMPTS:
        tokens = tokenizer.encode(prompt, prepend_bos=True)
        with compute.autocast("decode", model=model):
            [completion] = engine.generate_batch(tokens, 1, max_tokens=cfg.sample_tokens, temperature=0.0)
        completion = tokenizer.decode(completion)
        samples.append({"prompt": prompt, "completion": completion})
        log.info("%s|%s", prompt, completion.replace("\n", "\\n"))
    write_json_atomic(args.out, {**record, "samples": samples, "device": str(compute.device), **run_record(started)})


if __name__ == "__main__":
    main()
