"""Write the workflow's rule graphs into docs/index.md as Mermaid diagrams (GitHub and most Markdown viewers
draw them): the text `snakemake --rulegraph mermaid-js` prints, between the page's rulegraph markers.

    python docs/tools/rulegraph.py     # rewrites the blocks; tests/test_docs.py checks they are current

Snakemake numbers the rules in an order that depends on Python's string hashing, so it runs here with
PYTHONHASHSEED=0: the same workflow always gives the same text.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "index.md"
# block name -> snakemake arguments (target `all`; the cluster graph includes the optional RL stage)
GRAPHS = {
    "ptolemy": ["--profile", "profiles/ptolemy", "all", "--config", "workflow={chat_rl: true}"],
    "local": ["--profile", "profiles/local", "all"],
}


def mermaid(args: list[str]) -> str:
    """The Mermaid text `snakemake --rulegraph mermaid-js` prints for these arguments."""
    cmd = [sys.executable, "-m", "snakemake", "--rulegraph", "mermaid-js", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout


def block(name: str, text: str) -> str:
    return f"<!-- rulegraph {name} -->\n```mermaid\n{text.strip()}\n```\n<!-- /rulegraph {name} -->"


def blocks(page: str) -> dict[str, str]:
    """The rulegraph blocks of a page, by name."""
    return {m.group(1): m.group(0) for m in re.finditer(r"<!-- rulegraph (\w+) -->.*?<!-- /rulegraph \1 -->", page,
                                                       re.DOTALL)}


def main() -> None:
    page = PAGE.read_text()
    for name, args in GRAPHS.items():
        page = page.replace(blocks(page)[name], block(name, mermaid(args)))
    PAGE.write_text(page)
    print(f"{PAGE}: {len(GRAPHS)} rule graphs")


if __name__ == "__main__":
    main()
