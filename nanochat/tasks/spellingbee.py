"""SpellingBee: "How many r are in the word ...?" over the offline corpus's words, in both modes.
Training conversations (every mixture) spell words letter by letter and count letters with a python
tool call; they use words that the evaluation does not, so the evaluation stays unseen."""

import random
import re

from nanochat.dataset import offline_documents
from nanochat.tasks.common import EvalTask


def items(n: int = 500) -> list[dict]:
    """Letter-counting questions over the offline corpus's vocabulary, fixed by a seed."""
    words = sorted({w for doc in offline_documents() for w in re.findall(r"[a-z]{4,}", doc.lower())})
    rng = random.Random(42)
    chosen = []
    for word in rng.sample(words, min(n, len(words))):
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        chosen.append({"word": word, "letter": letter, "answer": word.count(letter)})
    return chosen


def prompt(item: dict) -> str:
    return f"How many {item['letter']} are in the word {item['word']}?"


def grade(item: dict, completion: str) -> bool:
    numbers = re.findall(r"-?\d+", completion)
    return bool(numbers) and int(numbers[-1]) == item["answer"]


def _training_words() -> list[str]:
    held_out = {item["word"] for item in items()}
    return sorted({w for doc in offline_documents() for w in re.findall(r"[a-z]{3,}", doc.lower())} - held_out)


def conversations(n: int, seed: int = 7) -> list[list[dict]]:
    """`n` spelling (even) and letter-counting (odd) conversations."""
    words, rng = _training_words(), random.Random(seed)
    out = []
    for i in range(n):
        word = rng.choice(words)
        if i % 2 == 0:
            out.append([{"role": "user", "content": f"Spell the word: {word}"},
                        {"role": "assistant", "content": f"{word}:{','.join(word)}"}])
            continue
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        count = word.count(letter)
        out.append([
            {"role": "user", "content": prompt({"letter": letter, "word": word})},
            {"role": "assistant", "content": [
                {"type": "text", "text": f"Spelled out, {word} is {','.join(word)}. Let me count with Python."},
                {"type": "python", "text": f"'{word}'.count('{letter}')"},
                {"type": "python_output", "text": str(count)},
                {"type": "text", "text": f"There are {count}"}]}])
    return out


TASK = EvalTask("SpellingBee", "generative", 0.0, None, None, items, prompt, grade)
