"""Upstream's identity conversations (who the model is and who made it), JSON lines of message lists."""

import json
from pathlib import Path

from nanochat.common import require_files


def conversations(path: Path) -> list[list[dict]]:
    require_files([path])
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
