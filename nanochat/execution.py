"""Run untrusted model-written Python (HumanEval completions) in a sandboxed child process.

Each program runs in its own process and session, in a fresh temporary directory that is deleted
afterwards, with:
  - a wall-clock timeout, after which the whole process group is killed;
  - address-space, file-size and core-dump limits (setrlimit);
  - no network: socket creation raises;
  - no process control or destructive file operations: fork/exec/kill/system/rmtree... raise.
This stops accidents and naive escapes of a small model's code, not a determined attacker: run
evaluations of untrusted models on a machine you can afford to lose, as upstream advises.
"""

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import tempfile

# Runs in the child before the program: every name below becomes a function that raises.
_GUARD = r'''
import builtins, os, shutil, socket, subprocess, sys
def _refuse(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox")
for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd"):
    setattr(socket, name, _refuse)
for name in ("fork", "forkpty", "system", "kill", "killpg", "putenv", "unsetenv", "remove", "removedirs", "rmdir",
             "unlink", "rename", "renames", "truncate", "replace", "fchmod", "chmod", "chown", "fchown", "lchown",
             "chroot", "setuid", "setgid", "execv", "execve", "execvp", "execl", "spawnv", "spawnve", "posix_spawn",
             "posix_spawnp", "popen"):
    if hasattr(os, name):
        setattr(os, name, _refuse)
for name in ("rmtree", "move", "chown"):
    setattr(shutil, name, _refuse)
subprocess.Popen = subprocess.run = subprocess.call = subprocess.check_output = _refuse
builtins.exit = builtins.quit = builtins.help = _refuse
source = open(sys.argv[1]).read()
del builtins, shutil, socket, subprocess
exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclasses.dataclass
class ExecutionResult:
    success: bool  # exited with status 0 within the time limit
    timed_out: bool
    returncode: int | None
    stdout: str
    stderr: str


def _limits(max_memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 2 ** 20, 10 * 2 ** 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def execute_code(program: str, timeout: float = 5.0, max_memory_bytes: int = 512 * 2 ** 20) -> ExecutionResult:
    """Run `program` sandboxed; never raises for anything the program does, never blocks past `timeout`."""
    with tempfile.TemporaryDirectory(prefix="nanochat-sandbox-") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w") as f:
            f.write(program)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-I", "-c", _GUARD, path], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=lambda: _limits(max_memory_bytes), text=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            timed_out = True
        finally:
            try:  # whatever the program left running in its session goes too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return ExecutionResult(not timed_out and proc.returncode == 0, timed_out, proc.returncode,
                           stdout[-10_000:], stderr[-10_000:])
