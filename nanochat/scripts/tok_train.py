"""Train the byte-level BPE tokenizer on the first training shards (the validation shard never).

As upstream, the tokenizer needs only the first ~2B characters: with fineweb-edu's ~250M characters
per shard, the first 8 shards. The workflow gives it only those, so it trains while the others download.

Writes into --out_dir: tokenizer.json, token_bytes.pt (UTF-8 bytes per token id, 0 for special
tokens, used for bits per byte) and tok_train.json (what was trained on, how long it took).

    python -m nanochat.scripts.tok_train --vocab_size 4096 --out_dir tok/ shard_00000.parquet shard_00001.parquet
"""

import dataclasses
import logging
import time

import torch

from nanochat import settings
from nanochat.common import run_record, sha256sum, start_compute_stage, write_atomic, write_json_atomic
from nanochat.dataset import iter_texts
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.tok_train")


@dataclasses.dataclass
class TokTrainSettings:
    """BPE tokenizer training (rustbpe, GPT-4 split pattern, 9 special tokens)."""
    vocab_size: int = dataclasses.field(default=65536, metadata={"minimum": 265})  # vocabulary size, the 9 special tokens included (at least 256 bytes + 9)
    num_shards: int = dataclasses.field(default=8, metadata={"minimum": 1})  # train on the first this many training shards (fineweb-edu: ~250M characters each); the workflow waits only for these
    max_chars: int = 2_000_000_000  # train on at most this many characters of those shards
    doc_cap: int = 10_000  # keep at most this many characters of each document, so none dominates


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, TokTrainSettings, out_dir="folder for tokenizer.json and token_bytes.pt")
    parser.add_argument("shards", nargs="+", help="training shards (parquet, `text` column)")
    args = parser.parse_args(argv)
    cfg: TokTrainSettings = settings.from_args(TokTrainSettings, args)
    shards = args.shards[:cfg.num_shards]
    if len(shards) < len(args.shards):
        log.info("reading the first %d of the %d shards given (num_shards)", len(shards), len(args.shards))
    start_compute_stage(shards)
    started = time.time()
    seen = {"chars": 0, "docs": 0}

    def texts():
        for text in iter_texts(shards, cfg.max_chars, cfg.doc_cap):
            seen["chars"] += len(text)
            seen["docs"] += 1
            yield text

    log.info("training vocab %d on at most %d chars of %d shard(s)", cfg.vocab_size, cfg.max_chars, len(shards))
    tokenizer = Tokenizer.train(texts(), cfg.vocab_size)
    train_s = time.time() - started
    if tokenizer.vocab_size != cfg.vocab_size:
        log.warning("vocab came out at %d, not %d: the corpus has too few distinct merges",
                    tokenizer.vocab_size, cfg.vocab_size)
    write_atomic(args.out_dir / "tokenizer.json", tokenizer.save)
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.int32)
    write_atomic(args.out_dir / "token_bytes.pt", lambda tmp: torch.save(token_bytes, tmp))
    write_json_atomic(args.out_dir / "tok_train.json", {
        "settings": dataclasses.asdict(cfg), "shards": [str(s) for s in shards],
        # what the workflow checks the tokenizer against when it starts (nanochat.integrity)
        "tokenizer_sha256": sha256sum(args.out_dir / "tokenizer.json"),
        "train_chars": seen["chars"], "train_docs": seen["docs"], "vocab_size": tokenizer.vocab_size,
        "train_time_s": round(train_s, 3), **run_record(started)})
    log.info("vocab %d trained on %d chars (%d docs) in %.1fs", tokenizer.vocab_size, seen["chars"],
             seen["docs"], train_s)
    if seen["chars"] < cfg.max_chars:
        log.info("all of %d shard(s) read: %d characters, fewer than max_chars", len(shards), seen["chars"])


if __name__ == "__main__":
    main()
