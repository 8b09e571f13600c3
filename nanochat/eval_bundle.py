"""Download the CORE eval bundle (a zip over plain HTTPS) and unpack it, verified, into place.

    python -m nanochat.eval_bundle --url=https://.../eval_bundle.zip --out=eval_bundle/

The zip must arrive with the size the server announced, pass its CRC checks and contain core.yaml;
otherwise it is downloaded again (up to 3 times), and the folder appears only once it is complete.
"""

import argparse
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from nanochat.common import setup_logging

log = logging.getLogger("nanochat.eval_bundle")
ATTEMPTS = 3


def fetch(url: str, dest: Path) -> str | None:
    """Download `url` to `dest`; why it is unusable, or None."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        expected = response.headers.get("Content-Length")
        shutil.copyfileobj(response, f, length=2 ** 20)
    size = dest.stat().st_size
    if expected is not None and size != int(expected):
        return f"{size} bytes, the server announced {expected}"
    try:
        with zipfile.ZipFile(dest) as zf:
            bad = zf.testzip()
            names = zf.namelist()
    except zipfile.BadZipFile as err:
        return f"not a zip file ({err})"
    if bad is not None:
        return f"CRC error in {bad}"
    if not any(n.endswith("core.yaml") for n in names):
        return "no core.yaml inside"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="where eval_bundle.zip is served")
    parser.add_argument("--out", type=Path, required=True, help="folder to unpack the bundle into")
    args = parser.parse_args(argv)
    setup_logging()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".eval_bundle-") as tmp:
        archive = Path(tmp) / "eval_bundle.zip"
        for attempt in range(1, ATTEMPTS + 1):
            problem = fetch(args.url, archive)
            if problem is None:
                break
            log.warning("%s: attempt %d/%d rejected: %s", args.url, attempt, ATTEMPTS, problem)
        else:
            raise SystemExit(f"error: {args.url} failed verification {ATTEMPTS} times: {problem}")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        root = next(p.parent for p in unpacked.rglob("core.yaml"))  # the zip may hold one top folder
        if args.out.exists():
            shutil.rmtree(args.out)
        os.replace(root, args.out)
    log.info("eval bundle unpacked into %s", args.out)


if __name__ == "__main__":
    main()
