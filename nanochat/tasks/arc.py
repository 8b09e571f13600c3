"""AI2 ARC (Easy and Challenge): grade-school science questions, 3-5 lettered choices.
Evaluation on the test split, training (SFT's hub mixture) on the train split. No offline copy exists."""

from pathlib import Path

from nanochat.tasks.common import EvalTask, multiple_choice_conversation, multiple_choice_prompt, parquet_rows


def read(folder: Path) -> list[dict]:
    return [{"question": r["question"], "choices": r["choices"]["text"],
             "answer": r["choices"]["label"].index(r["answerKey"])} for r in parquet_rows(folder)]


def conversations(folder: Path) -> list[list[dict]]:
    return [multiple_choice_conversation(item) for item in read(folder)]


EASY = EvalTask("ARC-Easy", "categorical", 0.25, "arc_easy_test", read,
                "not available offline: no package ships AI2 ARC (QuaRTz, a real AI2 science set, is reported "
                "beside it)", multiple_choice_prompt)
CHALLENGE = EvalTask("ARC-Challenge", "categorical", 0.25, "arc_challenge_test", read,
                     "not available offline: no package ships AI2 ARC", multiple_choice_prompt)
