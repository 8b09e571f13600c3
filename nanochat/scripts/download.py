"""Download one catalog entry (nanochat.catalog), verified, into place: the only stage that touches the
network. A hub entry becomes a folder of its files; a pretraining corpus (fineweb_edu, climbmix) one shard
per call (--index); a URL
entry a file, or for the eval bundle its unpacked folder.

    python -m nanochat.scripts.download fineweb_edu --index=0 --out=base_data/fineweb-edu/shard_00000.parquet
    python -m nanochat.scripts.download gsm8k_test --out=hub/gsm8k_test
    python -m nanochat.scripts.download eval_bundle --out=eval_bundle
"""

import argparse
from pathlib import Path

from nanochat import fetch, layout
from nanochat.catalog import CATALOG, HubFiles
from nanochat.common import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(CATALOG), help="the catalog entry")
    parser.add_argument("--index", type=int, help="a pretraining corpus: which shard")
    parser.add_argument("--out", type=Path, required=True, help="the file or folder to write")
    args = parser.parse_args(argv)
    setup_logging()
    entry = CATALOG[args.name]
    if not isinstance(entry, HubFiles):
        fetch.url_file(entry, args.out)
    elif args.name in layout.SHARD_ENTRIES.values():
        if args.index is None:
            parser.error(f"{args.name} needs --index")
        fetch.hub_file(entry, entry.patterns[0].format(index=args.index), args.out, column="text")
    else:
        fetch.hub_files(entry, args.out)


if __name__ == "__main__":
    main()
