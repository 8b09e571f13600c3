"""Tokenizer compression: UTF-8 bytes per token on validation text (and on training text, for contrast).

    python -m nanochat.scripts.tok_eval --tokenizer tok/tokenizer.json --train shard_00000.parquet \
        --val shard_00003.parquet --out tok_eval.json
"""

import dataclasses
import logging
import time

from nanochat import settings
from nanochat.common import run_record, start_compute_stage, write_json_atomic
from nanochat.dataset import iter_texts
from nanochat.tokenizer import Tokenizer

log = logging.getLogger("nanochat.scripts.tok_eval")


@dataclasses.dataclass
class TokEvalSettings:
    """Tokenizer evaluation."""
    max_chars: int = 10_000_000  # characters of each split to encode


def compression(tokenizer: Tokenizer, texts: list[str]) -> dict[str, float]:
    """Bytes, tokens and bytes per token of `texts` under `tokenizer`."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return {"bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, TokEvalSettings, tokenizer="tokenizer.json to evaluate",
                                   train="a training shard", val="the validation shard", out="JSON record to write")
    args = parser.parse_args(argv)
    cfg: TokEvalSettings = settings.from_args(TokEvalSettings, args)
    start_compute_stage([args.tokenizer, args.train, args.val])
    started = time.time()
    tokenizer = Tokenizer.load(args.tokenizer)
    record = {"settings": dataclasses.asdict(cfg), "vocab_size": tokenizer.vocab_size}
    for split, path in (("train", args.train), ("val", args.val)):
        record[split] = compression(tokenizer, list(iter_texts([path], cfg.max_chars)))
        log.info("%s: %.3f bytes/token over %d bytes", split, record[split]["bytes_per_token"], record[split]["bytes"])
    write_json_atomic(args.out, {**record, **run_record(started)})


if __name__ == "__main__":
    main()
