"""GSM8K: grade-school math word problems with worked answers ending in '#### N'. Evaluation on the test
split (greedy answer, graded by the number after '####'); training (mid and SFT hub mixtures) and RL on
the train split. No offline copy exists."""

import re
from pathlib import Path

from nanochat.tasks.common import EvalTask, parquet_rows


def read(folder: Path) -> list[dict]:
    """Items {"question", "answer": final number} for evaluation and RL rewards."""
    return [{"question": r["question"], "answer": r["answer"].split("####")[-1].strip().replace(",", "")}
            for r in parquet_rows(folder)]


def prompt(item: dict) -> str:
    return item["question"]


def grade(item: dict, completion: str) -> bool:
    found = re.search(r"####\s*(-?[\d,]*\.?\d+)", completion)
    return bool(found) and found.group(1).replace(",", "") == item["answer"]


def conversation(question: str, answer: str) -> list[dict]:
    """The worked answer, with each calculator annotation <<expr=value>> as a python call and its output."""
    parts = []
    for i, piece in enumerate(re.split(r"<<([^>]*)>>", answer)):
        if i % 2 == 0:
            parts.append({"type": "text", "text": piece})
        else:
            expr, _, value = piece.rpartition("=")
            parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": value}]
    return [{"role": "user", "content": question}, {"role": "assistant", "content": parts}]


def conversations(folder: Path) -> list[list[dict]]:
    return [conversation(row["question"], row["answer"]) for row in parquet_rows(folder)]


TASK = EvalTask("GSM8K", "generative", 0.0, "gsm8k_test", read, "not available offline: no package ships GSM8K",
                prompt, grade)
