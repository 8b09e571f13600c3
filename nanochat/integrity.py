"""Kept artefacts that went bad after their stage wrote them, found when the workflow starts, before any job.

Every stage writes its outputs atomically (temp + rename), so a damaged file under its final name was damaged
later: a copy or a disk quota cut it short, a byte flipped, someone edited it. Snakemake compares only
modification times, so such a file looks up to date, and the stage that reads it fails, or a chat tool later.
The workflow (workflow/rules/common.smk) checks the kept artefacts as it starts and moves a damaged one aside
(to NAME.damaged-<time>, never deleted), saying so; a stage that needs it then rebuilds it. Snakemake rebuilds a
missing file only for a job that runs, so when the tokenizer or a final model is gone (deleted, or set aside
here) after report.md was written, report.md is set aside too (it describes them): the `report` and `all`
targets then rebuild them (a model from its stage's last step checkpoint), and what was made from them.

The checks read a few bytes of each file (the tokenizer is hashed: it is small), so they cost well under a
second for a d20 run's hundreds of shards and 2 GB models. A flipped byte inside a shard's
pages or a model's weights is not seen here; it is seen by the download's checksum and by loading.
"""

import datetime
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path

from nanochat.common import sha256sum

PARQUET_MAGIC = b"PAR1"  # a parquet file starts and ends with it; its footer's length is stored just before the end


def parquet_problem(path: Path) -> str | None:
    size = path.stat().st_size
    if size < 12:
        return f"{size} bytes, too short for a parquet file"
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(size - 8)
        footer_length, tail = int.from_bytes(f.read(4), "little"), f.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return "no parquet magic bytes at its start and end: truncated or not parquet"
    if footer_length + 12 > size:
        return f"its footer claims {footer_length:,} bytes of a {size:,}-byte file: truncated"
    return None


def torch_file_problem(path: Path) -> str | None:
    """torch.save writes a zip archive, whose directory is at the end: a cut-short file has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a complete torch file ({err})"
    return None


def tokenizer_problem(path: Path) -> str | None:
    """Against the sha256 that tok_train recorded beside it; without that record, that it parses."""
    record = path.parent / "tok_train.json"
    expected = json.loads(record.read_text()).get("tokenizer_sha256") if record.is_file() else None
    if expected:
        digest = sha256sum(path)
        return None if digest == expected else f"sha256 {digest}, tok_train wrote {expected} ({record})"
    try:
        json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not valid UTF-8 JSON ({err})"
    return None


def problem(path: Path) -> str | None:
    """Why the kept artefact `path` is damaged, or None if it looks as its stage wrote it."""
    if path.suffix == ".parquet":
        return parquet_problem(path)
    if path.suffix == ".pt":
        return torch_file_problem(path)
    if path.name == "tokenizer.json":
        return tokenizer_problem(path)
    raise ValueError(f"no check for {path}")


def set_aside(path: Path, kind: str) -> Path:
    """Rename `path` to NAME.<kind>-<time> beside it, never overwriting or deleting anything."""
    aside = path.with_name(f"{path.name}.{kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    path.rename(aside)
    return aside


def set_aside_damaged(paths: Iterable[str | Path]) -> list[str]:
    """Move each damaged file of `paths` aside (missing ones are skipped); a message for each."""
    return [f"{path} is damaged: {why}. Moved aside to {set_aside(path, 'damaged')} (delete it when you no longer "
            "need it); its stage rebuilds it for the next stage that needs it"
            for path in map(Path, paths) if path.is_file() and (why := problem(path))]


# Beside each file the chat tools load, what its stage writes after it: the file was built when that is there.
WRITTEN_AFTER = {"model.pt": "meta.json", "tokenizer.json": "tok_train.json", "token_bytes.pt": "tok_train.json"}


def lost(paths: Iterable[str | Path]) -> list[str]:
    """The files of `paths` that are gone though their stage finished (its later file is there): deleted, or set
    aside here. A file of a stage that never ran (a model of a stage this config adds) is not lost."""
    return [str(path) for path in map(Path, paths)
            if not path.exists() and (path.parent / WRITTEN_AFTER[path.name]).is_file()]


def set_aside_stale_report(report: Path, missing: list[str]) -> str | None:
    """report.md requires every final model and the tokenizer (workflow/rules/report.smk) and describes them: with
    some `missing` (lost) it is moved aside, so that the `report` target runs again and rebuilds them, with what
    was made from them. Snakemake rebuilds a missing file only for a job that runs."""
    if not report.is_file() or not missing:
        return None
    return (f"{', '.join(missing)} gone since {report} was written: moved the report aside to "
            f"{set_aside(report, 'stale')}; the `report` and `all` targets rebuild them (a model from its last step "
            "checkpoint), and what was made from them")
