"""Pretraining shards of the offline corpus (nanochat.dataset): real English text that installed packages
ship, dealt into `num_shards` parquet shards, the last one the validation split. No network. The
fineweb-edu and ClimbMix shards are downloaded instead (rule download_shard, nanochat.scripts.download).

    python -m nanochat.scripts.base_data --source=offline --num_shards=4 --index=0 --out=shard_00000.parquet
"""

import dataclasses
import logging
from typing import Literal

from nanochat import layout, settings
from nanochat.common import setup_logging
from nanochat.dataset import build_offline_shard, verify_parquet

log = logging.getLogger("nanochat.scripts.base_data")


@dataclasses.dataclass
class BaseDataSettings:
    """Pretraining corpus: where the shards come from and how many."""
    source: Literal["fineweb-edu", "climbmix", "offline"] = "fineweb-edu"  # fineweb-edu (the course recipe's) and climbmix (the 2026 recipe's) download from the hub (catalog entries fineweb_edu, climbmix); offline uses text shipped in installed packages
    num_shards: int = dataclasses.field(default=240, metadata={"minimum": 2})  # shards to prepare; the last is the validation split (climbmix: its shard 6542, as upstream) (240 covers d20's 11.2B tokens)


def main(argv: list[str] | None = None) -> None:
    parser = settings.stage_parser(__doc__, BaseDataSettings, out="the shard to write")
    parser.add_argument("--index", type=int, required=True, help="which shard to write (0-based)")
    args = parser.parse_args(argv)
    cfg: BaseDataSettings = settings.from_args(BaseDataSettings, args)
    setup_logging()
    if cfg.source != "offline":
        parser.error(f"--source={cfg.source} shards are downloaded: python -m nanochat.scripts.download "
                     f"{layout.SHARD_ENTRIES[cfg.source]} --index=N --out=...")
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
