"""Pretraining shards of the offline corpus (nanochat.dataset): real English text that installed packages
ship, dealt into `num_shards` parquet shards, the last one the validation split. No network. The
fineweb-edu shards are downloaded instead (rule download_shard, nanochat.scripts.download).

    python -m nanochat.scripts.base_data --source=offline --num_shards=4 --index=0 --out=shard_00000.parquet
"""

import dataclasses
import logging
from typing import Literal

from nanochat import settings
from nanochat.common import setup_logging
from nanochat.dataset import build_offline_shard, verify_parquet

log = logging.getLogger("nanochat.scripts.base_data")


@dataclasses.dataclass
class BaseDataSettings:
    """Pretraining corpus: where the shards come from and how many."""
    source: Literal["fineweb-edu", "offline"] = "fineweb-edu"  # fineweb-edu downloads from the hub (catalog entry fineweb_edu); offline uses text shipped in installed packages
    num_shards: int = dataclasses.field(default=240, metadata={"minimum": 2})  # shards to prepare; the last is the validation split (240 covers d20's 11.2B tokens)


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, BaseDataSettings, out="the shard to write")
    parser.add_argument("--index", type=int, required=True, help="which shard to write (0-based)")
    args = parser.parse_args(argv)
    cfg: BaseDataSettings = settings.from_args(BaseDataSettings, args)
    setup_logging()
    if cfg.source != "offline":
        parser.error("--source=fineweb-edu shards are downloaded: python -m nanochat.scripts.download fineweb_edu")
    if not 0 <= args.index < cfg.num_shards:
        parser.error(f"--index must be within 0..{cfg.num_shards - 1}")
    build_offline_shard(args.index, cfg.num_shards, args.out)
    problem = verify_parquet(args.out)
    if problem:
        args.out.unlink()
        raise SystemExit(f"error: {args.out}: {problem}")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
