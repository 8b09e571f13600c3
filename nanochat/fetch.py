"""Download catalog entries (nanochat.catalog), verified, into place: the one download path of the workflow.

Every download goes through `fetch_verified`: download, check, and on a failed check delete and
download again, at most ATTEMPTS times; the output appears under its final name only once verified.
  hub files   size and LFS sha256 as the hub reports them at the pinned revision; parquet must open
  URL files   size as the server announced it, sha256 when pinned, then the content (zip CRCs and a
              core.yaml inside; or every line a list of user/assistant messages)
$NANOCHAT_DOWNLOAD_MIRROR, when set, serves URL files as <mirror>/<file name> (same checks);
$HF_ENDPOINT does the same for the hub.
"""

import fnmatch
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url

from nanochat.catalog import HubFiles, UrlFile, source_url
from nanochat.common import sha256sum
from nanochat.dataset import verify_parquet

log = logging.getLogger("nanochat.fetch")
ATTEMPTS = 3  # a download failing verification is deleted and downloaded again, at most this often


def megabytes(size: int | str | None) -> str:
    return f"{int(size) / 1e6:,.1f} MB" if size is not None else "size unknown"


def fetch_verified(what: str, download: Callable[[bool], Path], check: Callable[[Path], str | None],
                   size: int | None = None) -> Path:
    """`download(again)` then `check`; why a download is unusable is logged and it is fetched again. Each
    attempt says when it starts and how long it took (shown live in a local run, see common.setup_logging)."""
    problem = None
    for attempt in range(1, ATTEMPTS + 1):
        log.info("%s: downloading (%s)%s", what, megabytes(size), f", attempt {attempt}" if attempt > 1 else "")
        started = time.time()
        path = download(attempt > 1)
        seconds = time.time() - started
        log.info("%s: %s in %.1f s (%.1f MB/s)", what, megabytes(path.stat().st_size), seconds,
                 path.stat().st_size / 1e6 / max(seconds, 1e-3))
        problem = check(path)
        if problem is None:
            return path
        log.warning("%s: attempt %d/%d rejected: %s", what, attempt, ATTEMPTS, problem)
        path.unlink()
    raise SystemExit(f"error: {what} failed verification {ATTEMPTS} times: {problem}")


def check_hub_file(path: Path, size: int | None, etag: str | None, column: str | None) -> str | None:
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, the hub reports {size}"
    if path.suffix == ".parquet" and (problem := verify_parquet(path, column)):
        return problem
    if etag and len(etag) == 64 and (digest := sha256sum(path)) != etag:  # an LFS file's etag is its sha256
        return f"sha256 {digest}, the hub reports {etag}"
    return None


def hub_file(entry: HubFiles, filename: str, out: Path, column: str | None = None) -> str:
    """One file of a hub dataset into `out`, verified; returns the commit it came from."""
    if entry.revision is None:
        log.warning("%s is not pinned to a commit (nanochat/catalog.py): downloading main", entry.repo)
    meta = get_hf_file_metadata(hf_hub_url(entry.repo, filename, repo_type="dataset", revision=entry.revision))
    staging = out.parent / ".download"

    def download(again: bool) -> Path:
        return Path(hf_hub_download(entry.repo, filename, repo_type="dataset", revision=entry.revision,
                                    local_dir=staging, force_download=again))

    path = fetch_verified(f"{entry.repo}/{filename}", download,
                          lambda p: check_hub_file(p, meta.size, meta.etag, column), meta.size)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, out)
    log.info("%s: %s bytes verified (commit %s, sha256 %s)", filename, meta.size, meta.commit_hash, meta.etag)
    return meta.commit_hash


def hub_files(entry: HubFiles, out: Path) -> None:
    """Every file of the entry matching its patterns, each verified, into the folder `out` at once."""
    listing = HfApi().list_repo_tree(entry.repo, repo_type="dataset", revision=entry.revision, recursive=True)
    names = sorted(f.path for f in listing if any(fnmatch.fnmatch(f.path, p) for p in entry.patterns))
    if not names:
        raise SystemExit(f"error: {entry.describe()} has no files matching {list(entry.patterns)}")
    staging = out.with_name(out.name + ".download")
    shutil.rmtree(staging, ignore_errors=True)
    commits = {hub_file(entry, name, staging / name) for name in names}
    for leftover in staging.rglob(".download"):
        shutil.rmtree(leftover)
    (staging / "source.json").write_text(json.dumps({"repo": entry.repo, "commits": sorted(commits),
                                                     "files": names}, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    log.info("%s: %d file(s) verified into %s", entry.describe(), len(names), out)


def check_bundle(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad, names = zf.testzip(), zf.namelist()
    except zipfile.BadZipFile as err:
        return f"not a zip file ({err})"
    if bad is not None:
        return f"CRC error in {bad}"
    return None if any(n.endswith("core.yaml") for n in names) else "no core.yaml inside"


def check_conversations(path: Path) -> str | None:
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"not JSON lines ({err})"
    for i, conversation in enumerate(lines, 1):
        if not (isinstance(conversation, list) and conversation
                and all(isinstance(m, dict) and m.get("role") in ("user", "assistant", "system")
                        and isinstance(m.get("content"), str) for m in conversation)):
            return f"line {i} is not a list of messages"
    return None if lines else "no conversations"


def check_word_list(path: Path) -> str | None:
    try:
        words = path.read_text(encoding="utf-8").split()
    except UnicodeDecodeError as err:
        return f"not UTF-8 text ({err})"
    bad = next((w for w in words if not (w.isascii() and w.isalpha() and w.islower())), None)
    if bad is not None:
        return f"{bad[:40]!r} is not a lowercase word"
    return None if words else "no words"


def copy_logging_tenths(source, target, total: int, what: str) -> None:
    """Copy in 1 MB blocks, logging each tenth of `total` bytes (when the server announced it) as it arrives."""
    done, tenths = 0, 0
    for block in iter(lambda: source.read(2 ** 20), b""):
        target.write(block)
        done += len(block)
        if total and done * 10 // total > tenths:
            tenths = done * 10 // total
            log.info("%s: %d%% of %s", what, min(100, 10 * tenths), megabytes(total))


CONTENT_CHECKS = {"eval_bundle": check_bundle, "conversations": check_conversations, "word_list": check_word_list}


def url_file(entry: UrlFile, out: Path) -> None:
    """A plain URL into `out` (a file, or for the eval bundle the unpacked folder), verified."""
    url = source_url(entry)
    if entry.sha256 is None:
        log.warning("%s has no pinned sha256 (nanochat/catalog.py): only its content is checked", entry.url)
    content_check = CONTENT_CHECKS[entry.kind]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        dest, got = Path(tmp) / "download", {}  # what the last download announced and hashed to

        def download(again: bool) -> Path:
            with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
                got["size"] = response.headers.get("Content-Length")
                copy_logging_tenths(response, f, int(got["size"] or 0), url)
            return dest

        def check(path: Path) -> str | None:
            size, got["sha256"] = path.stat().st_size, sha256sum(path)
            if got["size"] is not None and size != int(got["size"]):
                return f"{size} bytes, the server announced {got['size']}"
            if entry.sha256 and got["sha256"] != entry.sha256:
                return f"sha256 {got['sha256']}, the catalog pins {entry.sha256}"
            return content_check(path)

        fetch_verified(url, download, check)
        log.info("%s verified (sha256 %s)", url, got["sha256"])
        if entry.kind != "eval_bundle":  # a single file
            os.replace(dest, out)
            return
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(dest) as zf:
            zf.extractall(unpacked)
        root = next(p.parent for p in unpacked.rglob("core.yaml"))  # the zip may hold one top folder
        shutil.rmtree(out, ignore_errors=True)
        os.replace(root, out)
