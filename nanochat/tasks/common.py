"""What every chat task shares: the evaluation task record, multiple-choice rendering, reading hub parquet."""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from nanochat.common import read_input

LETTERS = "ABCDEFGHIJ"


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """A chat evaluation task. Items: categorical {"question", "choices", "answer": index}; generative
    items are the task's own, with `prompt` making the user turn and `grade` judging a completion."""
    name: str  # as shown in records and report.md
    kind: Literal["categorical", "generative"]
    baseline: float  # accuracy of random answers
    hub: str | None  # catalog entry of the test split (source=hub); None: the same data in both modes
    read_hub: Callable[[Path], list[dict]] | None  # items from the downloaded folder
    offline: Callable[[], list[dict]] | str  # items that installed packages ship, or why there are none
    prompt: Callable[[dict], str]  # the user turn
    grade: Callable[[dict, str], bool] | None = None  # generative: is the completion right


def multiple_choice_prompt(item: dict) -> str:
    """The user turn of a multiple-choice question (evaluation and training render it alike)."""
    lines = [f"Multiple Choice question: {item['question']}"]
    lines += [f"- {choice}={letter}" for letter, choice in zip(LETTERS, item["choices"])]
    return "\n".join(lines + ["\nRespond only with the letter of the correct answer."])


def multiple_choice_conversation(item: dict) -> list[dict]:
    """A multiple-choice item as a training conversation: the question, then the right letter."""
    return [{"role": "user", "content": multiple_choice_prompt(item)},
            {"role": "assistant", "content": LETTERS[item["answer"]]}]


def parquet_rows(folder: Path) -> list[dict]:
    """Every row of the parquet files under a downloaded folder, in file order."""
    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        raise SystemExit(f"error: missing input: no parquet files in {folder} (run the `download` target)")
    return [row for path in files for row in read_input(path, pq.read_table).to_pylist()]
