"""QuaRTz: AI2's two-choice qualitative science questions, from OpenAI's `evals` wheel (offline only)."""

import json
import re

from nanochat.common import package_file
from nanochat.tasks.common import LETTERS, EvalTask, multiple_choice_prompt


def offline() -> list[dict]:
    items = []
    with open(package_file("evals", "registry", "data", "quartz", "samples.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            q, a, b = re.match(r"(?s)(.*?)\n\n A: (.*?)\n B: (.*)$", row["input"][1]["content"]).groups()
            items.append({"question": q.strip(), "choices": [a.strip(), b.strip()],
                          "answer": LETTERS.index(row["ideal"])})
    return items


TASK = EvalTask("QuaRTz", "categorical", 0.5, None, None, offline, multiple_choice_prompt)
