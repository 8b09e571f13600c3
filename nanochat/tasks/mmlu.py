"""MMLU: 57 subjects of four-choice questions. Evaluation on the test split (offline: the 1,000-question
subset that OpenAI's `evals` wheel ships); training (midtraining's hub mixture) on auxiliary_train."""

import json
import re
from pathlib import Path

from nanochat.common import package_file
from nanochat.tasks.common import LETTERS, EvalTask, multiple_choice_conversation, multiple_choice_prompt, parquet_rows


def read(folder: Path) -> list[dict]:
    rows = [row.get("train", row) for row in parquet_rows(folder)]  # auxiliary_train nests each row under "train"
    return [{"question": r["question"], "choices": r["choices"], "answer": r["answer"]} for r in rows]


def offline() -> list[dict]:
    items = []
    with open(package_file("evals", "registry", "data", "sandbagging", "samples-all-large.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            q, *choices = re.match(r"(?s)(.*?)\n+A\. (.*?)\nB\. (.*?)\nC\. (.*?)\nD\. (.*?)\nAnswer:\s*$",
                                   row["question"]).groups()
            items.append({"question": q.strip(), "choices": choices, "answer": LETTERS.index(row["answer"])})
    return items


def conversations(folder: Path) -> list[list[dict]]:
    return [multiple_choice_conversation(item) for item in read(folder)]


TASK = EvalTask("MMLU", "categorical", 0.25, "mmlu_test", read, offline, multiple_choice_prompt)
