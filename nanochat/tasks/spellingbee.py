"""SpellingBee: "How many r are in the word ...?" over the offline corpus's words, in both modes.
Training conversations, as upstream's mixtures have them: SimpleSpelling spells a word letter by letter,
SpellingBee counts a letter with a python tool call. Their words: dwyl's words_alpha.txt in the hub
mixtures (as upstream), the offline corpus's words offline; never the words the evaluation asks about."""

import random
import re
from pathlib import Path

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


def corpus_words() -> list[str]:
    """The offline mixture's word list: the offline corpus's words of 3+ letters."""
    return sorted({w for doc in offline_documents() for w in re.findall(r"[a-z]{3,}", doc.lower())})


def read_word_list(path: Path) -> list[str]:
    """The hub mixtures' word list: dwyl's words_alpha.txt (catalog entry words_alpha), one word per line."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_words(words: list[str]) -> list[str]:
    """`words` without those the evaluation asks about, so the evaluation stays unseen."""
    held_out = {item["word"] for item in items()}
    return sorted(set(words) - held_out)


def simple_spelling(n: int, words: list[str], seed: int = 7) -> list[list[dict]]:
    """`n` "Spell the word: ..." conversations answered letter by letter (upstream's SimpleSpelling)."""
    rng = random.Random(seed)
    return [[{"role": "user", "content": f"Spell the word: {word}"},
             {"role": "assistant", "content": f"{word}:{','.join(word)}"}] for word in rng.choices(words, k=n)]


def spelling_bee(n: int, words: list[str], seed: int = 8) -> list[list[dict]]:
    """`n` letter-counting conversations, answered by spelling, a python tool call and its output."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        word = rng.choice(words)
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
