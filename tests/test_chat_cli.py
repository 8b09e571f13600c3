"""The terminal chat (nanochat/scripts/chat_cli.py) on the tiny pipeline's SFT model: in a terminal as a user
drives it, its flags checked, and turns it cannot answer told and survived."""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

CHAT_CLI = [sys.executable, "-m", "nanochat.scripts.chat_cli"]


def test_cli_answers_in_a_terminal_and_exits_cleanly(chat_run):
    """Drive the real CLI through a pseudo-terminal, as a user would."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([*CHAT_CLI, "--max_tokens", "16"], cwd=chat_run, stdin=child_fd, stdout=child_fd,
                            stderr=child_fd)
    os.close(child_fd)
    output = b""

    def read_until(marker: bytes, count: int = 1, timeout: float = 120) -> None:
        nonlocal output
        deadline = time.time() + timeout
        while output.count(marker) < count:
            assert time.time() < deadline, output.decode(errors="replace")
            if select.select([main_fd], [], [], 0.5)[0]:
                output += os.read(main_fd, 4096)

    read_until(b"User: ")
    os.write(main_fd, b"Spell the word: light\n")
    read_until(b"Assistant: ")
    read_until(b"User: ", count=2)
    os.write(main_fd, b"/exit\n")
    assert proc.wait(timeout=60) == 0
    os.close(main_fd)
    reply = output.split(b"Assistant: ")[1].split(b"User: ")[0].strip()
    assert reply, "the model said nothing"

    one_shot = subprocess.run([*CHAT_CLI, "-i", "mid", "-p", "Hello", "--max_tokens", "5"], cwd=chat_run,
                              capture_output=True, text=True, timeout=120)
    assert one_shot.returncode == 0 and one_shot.stdout.strip()
    missing = subprocess.run([*CHAT_CLI, "-i", "rl"], cwd=REPO.parent, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "no rl checkpoint" in missing.stderr


@pytest.mark.parametrize("flag, value, meaning", [
    ("--max_tokens", "-5", "an integer >= 1"), ("--max_tokens", "0", "an integer >= 1"),
    ("-t", "nan", "a finite number >= 0"), ("-t", "-0.5", "a finite number >= 0"), ("-t", "inf", "a finite number"),
    ("-k", "-3", "an integer >= 0"), ("-k", "1.5", "an integer >= 0"),
])
def test_bad_flags_are_usage_errors_naming_the_range(chat_run, flag, value, meaning):
    result = subprocess.run([*CHAT_CLI, flag, value, "-p", "hi"], cwd=chat_run, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{flag}" in result.stderr and value in result.stderr and meaning in result.stderr


def replies(output: bytes) -> list[bytes]:
    return [part.split(b"\nUser:")[0].strip() for part in output.split(b"Assistant: ")[1:]]


def test_turns_it_cannot_answer_are_told_and_the_conversation_goes_on(chat_run: Path):
    """A line that is not UTF-8 and one far longer than the model's positions each get a message, and the
    conversation is as if they had not been typed: the next greedy reply is the one without them."""
    def chat(lines: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([*CHAT_CLI, "-t", "0", "--max_tokens", "8"], input=lines, cwd=chat_run,
                              capture_output=True, timeout=300)

    messy = chat(b"Hello\ncaf\xe9 \xff\n" + b"x" * 100_000 + b"\nWhy is the sky blue?\n/exit\n")
    clean = chat(b"Hello\nWhy is the sky blue?\n/exit\n")
    assert messy.returncode == 0 and b"Traceback" not in messy.stdout + messy.stderr, messy.stderr.decode()
    said = replies(messy.stdout)
    assert said[1].startswith(b"(no reply: that text is not UTF-8") and b"positions" in said[2], said
    assert [said[0], said[3]] == replies(clean.stdout)
