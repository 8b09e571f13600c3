"""Run untrusted model-written Python (HumanEval completions) in a sandboxed child process.

The child is `python -I` running this file: it reads the program, confines itself, reports which layers it
applied, then runs the program with exec(). The layers are enforced by the kernel, so no trick inside Python
(ctypes, posix, _socket, importlib.reload) gets around them:

  parent        a fresh temporary folder as the working directory, deleted afterwards; a new session whose
                process group is killed as a whole, at the wall-clock timeout or at the end, before the
                child is reaped (so the group's id cannot have been given to another process); the output
                read from files of at most 10 MiB each.
  rlimits       address space (MemoryError past max_memory_bytes), 10 MiB per file written, no core dumps.
  capabilities  none: a child of root gives up root's powers (mknod, mount, module loading, reading any
                file, signalling any process...), though it keeps owning root's files.
  Landlock      (Linux 5.13+, where enabled; the ABI version applied is reported) reads only in the
                interpreter's sys.path, /lib, /usr/lib, /etc/ld.so.cache and /dev/urandom; reads and writes
                (no devices, sockets or execution) only in its temporary folder, and /dev/null.
                ABI 4+: no TCP bind or connect. ABI 6+: no signals to processes outside the sandbox, no
                abstract unix sockets.
  seccomp       (libseccomp through pyseccomp) a deny list, answered EPERM: sockets and io_uring; new
                processes (fork, vfork, clone without CLONE_THREAD: threads still start) and exec; ptrace,
                process_vm_*, pidfd_*, kcmp; signals (kill, tgkill, rt_*sigqueueinfo) to any pid but its
                own; limits, scheduling and memory placement of another process; setsid, setpgid,
                unshare, setns and the mount calls; chmod, chown, utime and xattr calls (Landlock does not
                cover metadata); fcntl F_SETOWN (signals through I/O); bpf, perf_event_open, userfaultfd,
                keyrings, syslog. clone3 and every syscall newer than Landlock's (447-511) answer ENOSYS,
                as on an older kernel: glibc falls back to clone, whose flags a filter can read.

The probes tests/test_execution.py runs, each refused: reading /etc/passwd or another file outside the
folder, with open() or libc's open through ctypes; writing, overwriting, unlinking, renaming, truncating or
chmod-ing a file outside, or writing it through a hard or symbolic link; posix.system, posix.fork,
posix.execv, posix.posix_spawn, subprocess (even reloaded), importlib.reload(os).system, libc's fork through
ctypes; posix.kill of the parent; kill, killpg, libc's kill and pidfd_send_signal of another process;
ptrace attach, unshare of a user namespace, mknod of a block device; a _socket, socket or libc socket
connection to a server on 127.0.0.1; a setsid child outliving the sandbox. exit() or sys.exit() before
the end of the program (which would skip HumanEval's checks) counts as a failure.

What it does not stop: stat of paths outside (names, sizes, times); reading the interpreter's own files and
the shared libraries; 5 seconds of CPU and of writing 10 MiB files into the temporary folder; os._exit(0)
before the end passes; a kernel bug. seccomp is a deny list: a syscall it does not name (up to 446) is
allowed. Where a layer is unavailable (an older kernel, Landlock not enabled, no libseccomp) the program
runs under the others, ExecutionResult.layers and sandbox_layers() say so, and a warning is printed once.
Run evaluations of untrusted models on a machine you can afford to lose, as upstream advises.
"""

import ctypes
import dataclasses
import errno
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import BinaryIO

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Landlock (linux/landlock.h): the syscall numbers are the same on every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION, _RULE_PATH_BENEATH, _PR_SET_NO_NEW_PRIVS = 1, 1, 38
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_CHAR, _MAKE_SOCK, _MAKE_BLOCK, _TRUNCATE, _IOCTL_DEV = 1 << 6, 1 << 9, 1 << 11, 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV  # all a rule on a non-folder may grant
_NET_TCP = 0b11  # bind and connect, from ABI 4
_SCOPES = 0b11  # abstract unix sockets and signals, from ABI 6

# seccomp: refused outright (EPERM).
_REFUSED = (
    "socket", "socketpair", "io_uring_setup", "io_uring_enter", "io_uring_register",  # io_uring opens sockets too
    "fork", "vfork", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "kcmp",
    "tkill", "setpriority", "ioprio_set",  # they name a thread, group or user: the filter cannot tell its own
    "setsid", "setpgid", "unshare", "setns",  # leaving the process group the parent kills
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr",
    "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "utime", "utimes", "utimensat",
    "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "syslog",
)
_SIGNALS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # allowed when argument 0 is its own pid
_ON_SELF_BY_ZERO = ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
                    "migrate_pages", "move_pages")  # allowed when argument 0 (the pid) is 0: the caller
_NEWER_THAN_REVIEWED = range(447, 512)  # after landlock_restrict_self; 512+ are x86's x32 entries
_CLONE_THREAD, _F_SETOWN, _F_SETOWN_EX = 0x10000, 8, 15
_CAP_VERSION_3 = 0x20080522


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _checked(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def landlock_abi() -> int:
    """The newest Landlock ABI this kernel offers; 0 when it has none (before 5.13, or not enabled at boot)."""
    try:
        return _checked(_libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                                      ctypes.c_uint32(_CREATE_RULESET_VERSION)))
    except OSError:
        return 0


def _readable_paths() -> list[str]:
    """What the interpreter reads after its start: its modules, the shared libraries they load, random bytes."""
    prefixes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    paths = [p for p in sys.path if p.startswith(prefixes)]
    paths += ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache", "/dev/urandom"]
    return [p for p in paths if os.path.exists(p)]


def _landlock_allow(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneath(access if os.path.isdir(path) else access & _FILE_RIGHTS, fd)
        _checked(_libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                               ctypes.byref(rule), ctypes.c_uint32(0)))
    finally:
        os.close(fd)


def _apply_landlock(workdir: str, abi: int) -> None:
    """Reads in the interpreter's paths, reads and writes in `workdir`; TCP and outside signals refused."""
    newest_right = {1: 12, 2: 13, 3: 14, 4: 14}.get(abi, 15)  # REFER came with ABI 2, TRUNCATE 3, IOCTL_DEV 5
    handled = (2 << newest_right) - 1
    attr = _RulesetAttr(handled, _NET_TCP if abi >= 4 else 0, _SCOPES if abi >= 6 else 0)
    ruleset = _checked(_libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr),
                                     ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)))
    try:
        for path in _readable_paths():
            _landlock_allow(ruleset, path, _READ_FILE | _READ_DIR)
        _landlock_allow(ruleset, os.devnull, _READ_FILE | _WRITE_FILE)
        # no device nodes (root could make one for a disk), no socket files, nothing executable
        _landlock_allow(ruleset, workdir, handled & ~(_MAKE_CHAR | _MAKE_BLOCK | _MAKE_SOCK | _EXECUTE | _IOCTL_DEV))
        _checked(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _checked(_libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)))
    finally:
        os.close(ruleset)


def _apply_seccomp(seccomp) -> None:
    """The deny list of the module's docstring, through the pyseccomp module `seccomp`."""
    refuse, absent = seccomp.ERRNO(errno.EPERM), seccomp.ERRNO(errno.ENOSYS)
    syscalls = seccomp.SyscallFilter(seccomp.ALLOW)
    # another architecture's numbering (int 0x80 on x86-64) would name other syscalls than the rules
    syscalls.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for name in _REFUSED:
        syscalls.add_rule(refuse, name)
    for name in _SIGNALS:
        syscalls.add_rule(refuse, name, seccomp.Arg(0, seccomp.NE, os.getpid()))
    for name in _ON_SELF_BY_ZERO:
        syscalls.add_rule(refuse, name, seccomp.Arg(0, seccomp.NE, 0))
    syscalls.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    for command in (_F_SETOWN, _F_SETOWN_EX):
        syscalls.add_rule(refuse, "fcntl", seccomp.Arg(1, seccomp.EQ, command))
    for number in (seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3"), *_NEWER_THAN_REVIEWED):
        syscalls.add_rule(absent, number)
    syscalls.load()


def _confine(workdir: str, max_memory_bytes: int) -> dict:
    """Apply every layer this machine has to the calling process; the layers applied, and why any is missing."""
    resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 2 ** 20, 10 * 2 ** 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    no_capabilities = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: two 32-bit words each
    _checked(_libc.capset(ctypes.byref(_CapHeader(_CAP_VERSION_3, 0)), no_capabilities))
    layers = {"seccomp": False, "landlock": landlock_abi(), "missing": {}}
    try:  # before Landlock: finding libseccomp.so runs ldconfig
        import pyseccomp
    except (ImportError, RuntimeError) as e:  # RuntimeError: the binding is there, libseccomp.so is not
        pyseccomp = None
        layers["missing"]["seccomp"] = f"no libseccomp binding: {e}"
    if layers["landlock"]:
        _apply_landlock(workdir, layers["landlock"])
    else:
        layers["missing"]["landlock"] = "the kernel offers none (it needs Linux 5.13+ with landlock in lsm=)"
    if pyseccomp:
        _apply_seccomp(pyseccomp)
        layers["seccomp"] = True
    return layers


def _run_sandboxed(path: str, max_memory_bytes: str, report_fd: str) -> None:
    """The child: confine itself, report the layers on `report_fd`, then run the program at `path`."""
    with open(path) as f:
        source = f.read()
    layers = _confine(os.path.dirname(path), int(max_memory_bytes))
    with os.fdopen(int(report_fd), "w") as report:  # closed before the program runs: it cannot write a report
        json.dump(layers, report)
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})
    except SystemExit:
        sys.exit("the program exited before its end")  # which would skip the checks after the exit


@dataclasses.dataclass
class ExecutionResult:
    success: bool  # ran to its end with status 0 within the time limit
    timed_out: bool
    returncode: int | None
    stdout: str
    stderr: str
    layers: dict  # as the sandbox reported them (see sandbox_layers); empty if it failed before reporting


def _wait_then_kill_group(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the child, kill its process group, reap it; whether it timed out. The
    child is reaped only after the kill: until then its pid, which is its group's id, stays taken, so the kill
    cannot hit another process group."""
    waiter = threading.Thread(target=os.waitid, args=(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT))
    waiter.start()
    try:
        waiter.join(timeout)
        return waiter.is_alive()
    finally:  # even when interrupted (Ctrl-C): nothing the program started stays behind
        os.killpg(proc.pid, signal.SIGKILL)
        waiter.join()
        proc.wait()


def _tail(output: BinaryIO) -> str:
    output.seek(0)
    return output.read().decode(errors="replace")[-10_000:]


def _run_in(workdir: str, program: str, timeout: float, max_memory_bytes: int) -> ExecutionResult:
    path = os.path.join(workdir, "program.py")
    with open(path, "w") as f:
        f.write(program)
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    report_read, report_write = os.pipe()
    with os.fdopen(report_read, "rb") as report, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen([sys.executable, "-I", __file__, path, str(max_memory_bytes), str(report_write)],
                                    cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                    start_new_session=True, pass_fds=(report_write,))
        finally:
            os.close(report_write)  # the child has its own copy
        timed_out = _wait_then_kill_group(proc, timeout)
        return ExecutionResult(not timed_out and proc.returncode == 0, timed_out, proc.returncode, _tail(stdout),
                               _tail(stderr), json.loads(report.read() or "{}"))


def execute_code(program: str, timeout: float = 5.0, max_memory_bytes: int = 512 * 2 ** 20) -> ExecutionResult:
    """Run `program` sandboxed; never raises for anything the program does, never blocks past `timeout`."""
    workdir = tempfile.mkdtemp(prefix="nanochat-sandbox-")
    try:
        result = _run_in(workdir, program, timeout, max_memory_bytes)
    finally:
        # rm, not shutil.rmtree: a program can nest folders deeper than rmtree's recursion goes (RecursionError)
        subprocess.run(["rm", "-rf", "--", workdir], check=False)
    if result.layers.get("missing"):  # stacklevel 1: one location, so the warning shows once per process
        missing = "; ".join(f"{layer} ({why})" for layer, why in result.layers["missing"].items())
        warnings.warn(f"the sandbox runs without {missing}", stacklevel=1)
    return result


@functools.cache
def sandbox_layers() -> dict:
    """The layers a program gets on this machine, as the sandbox reports them: {"seccomp": bool, "landlock": the
    Landlock ABI applied (0: none), "missing": {layer: why}}."""
    return execute_code("").layers


if __name__ == "__main__":
    _run_sandboxed(*sys.argv[1:])
