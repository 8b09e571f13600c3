"""Download a file over plain HTTP(S), verified, into place: the CORE eval bundle (a zip, unpacked into a
folder) or a JSON-lines file of conversations (upstream's identity conversations).

    python -m nanochat.fetch --kind=eval_bundle --url=https://.../eval_bundle.zip --out=eval_bundle/
    python -m nanochat.fetch --kind=conversations --url=https://.../identity_conversations.jsonl --out=identity.jsonl

The download must have the size the server announced and pass its kind's check (zip CRCs and a
core.yaml inside; every line a list of user/assistant messages); otherwise it is downloaded again, up to
3 times. The output appears only once complete.
"""

import argparse
import json
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from nanochat.common import setup_logging

log = logging.getLogger("nanochat.fetch")
ATTEMPTS = 3


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


def fetch(url: str, dest: Path, check) -> str | None:
    """Download `url` to `dest`; why it is unusable, or None."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        expected = response.headers.get("Content-Length")
        shutil.copyfileobj(response, f, length=2 ** 20)
    size = dest.stat().st_size
    if expected is not None and size != int(expected):
        return f"{size} bytes, the server announced {expected}"
    return check(dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("eval_bundle", "conversations"), required=True, help="what is fetched")
    parser.add_argument("--url", required=True, help="where it is served")
    parser.add_argument("--out", type=Path, required=True, help="the folder (eval_bundle) or file to write")
    args = parser.parse_args(argv)
    setup_logging()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    check = check_bundle if args.kind == "eval_bundle" else check_conversations
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=f".{args.out.name}-") as tmp:
        download = Path(tmp) / "download"
        for attempt in range(1, ATTEMPTS + 1):
            problem = fetch(args.url, download, check)
            if problem is None:
                break
            log.warning("%s: attempt %d/%d rejected: %s", args.url, attempt, ATTEMPTS, problem)
        else:
            raise SystemExit(f"error: {args.url} failed verification {ATTEMPTS} times: {problem}")
        if args.kind == "conversations":
            os.replace(download, args.out)
        else:
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(download) as zf:
                zf.extractall(unpacked)
            root = next(p.parent for p in unpacked.rglob("core.yaml"))  # the zip may hold one top folder
            shutil.rmtree(args.out, ignore_errors=True)
            os.replace(root, args.out)
    log.info("%s verified into %s", args.url, args.out)


if __name__ == "__main__":
    main()
