"""Run an untrusted Python program (a model's code plus its tests) in a child process, with limits.

`run_program(source)` never raises because of the program: it returns an `Execution` whose status is
passed (the program ran to its end and exited 0), failed (with a reason: the last line of its output,
the signal that killed it, or the output limit) or timed out.

What holds for every program, enforced by the operating system (Linux); the rlimits are set by
sandbox_guard.py in the child before the program's first line runs:
- a wall-clock limit, after which the program's whole process group is killed; RLIMIT_CPU backs it up;
- RLIMIT_AS caps memory; RLIMIT_FSIZE caps output (stdout and stderr go to one capped file) and any
  file the program writes; RLIMIT_CORE=0, so a crash leaves no core file;
- RLIMIT_NPROC caps processes and threads at the user's current count plus a small allowance. The
  kernel does not apply it to root, so when evaluating as root only the guard below stops a fork bomb;
- a fresh session (own process group) killed at the end, then a sweep of /proc that kills any process
  still carrying this run's marker in its environment (one that left the group with setsid);
- a new temporary directory as working directory, HOME and TMPDIR, removed afterwards;
- a scrubbed environment: PATH, HOME, TMPDIR, LANG and the run's marker, nothing of ours (no secrets,
  no proxies); the interpreter runs with -I, so PYTHON* variables and the user site are ignored.

What the Python-level guard (sandbox_guard.py, an audit hook installed before the program runs) adds,
best-effort, since a C extension can bypass it: no sockets (this runs without network namespaces), no
C calls through ctypes, no new processes, no signals to other processes, no changed rlimits, no writes
outside the directory, and no reads outside the directory and Python's import paths. Without namespaces
or a separate user, what the evaluating user may read or write stays open to a program that gets past
the guard; run code tasks as an unprivileged user (or in a container) for an operating-system guarantee.
"""

import json
import math
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

GUARD = Path(__file__).with_name("sandbox_guard.py")
MARKER = "LM_EVAL_INFOGAIN_SANDBOX"
# RLIMIT_NPROC counts threads too; this leaves room for a program's few worker threads.
THREAD_ALLOWANCE = 16
OUTPUT_TAIL_CHARS = 4000
REASON_CHARS = 300
# Killing a marked process can race with it forking; a few rounds of the sweep catch the children.
SWEEP_ROUNDS = 20


@dataclass(frozen=True)
class Limits:
    seconds: float = 3.0  # wall clock per program: code_eval's default, which lm-eval's humaneval and mbpp use
    memory_bytes: int = 1 << 30  # address space
    output_bytes: int = 1 << 20  # stdout and stderr together, and any single file the program writes
    processes: int = 0  # processes the program may start; with 0 the guard refuses fork, exec and spawn

    def __post_init__(self):
        for name in ("seconds", "memory_bytes", "output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name}={getattr(self, name)!r} is invalid; allowed: a number > 0")
        if not (isinstance(self.processes, int) and self.processes >= 0):
            raise ValueError(f"Limits.processes={self.processes!r} is invalid; allowed: an integer >= 0")


class Status(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Execution:
    status: Status
    reason: str  # empty when passed
    output: str  # the end of stdout and stderr, interleaved


def run_program(source: str, limits: Limits = Limits()) -> Execution:
    """Run `source` as a Python program in a fresh temporary directory; see the module docstring."""
    run_id = secrets.token_hex(16)
    directory = tempfile.mkdtemp(prefix="lm_eval_infogain_sandbox_")
    try:
        return run_in(Path(directory), source, limits, run_id)
    finally:
        kill_marked_processes(run_id)
        remove_tree(directory)


def run_in(directory: Path, source: str, limits: Limits, run_id: str) -> Execution:
    program = directory / "program.py"
    program.write_text(source, encoding="utf-8")
    settings = {"rlimits": resource_limits(limits), "processes": limits.processes}
    command = [sys.executable, "-I", str(GUARD), str(directory), str(program), json.dumps(settings)]
    # Read back through our own handle: the program may rename the file or put a symlink in its place.
    with (directory / "output.txt").open("w+b") as output:
        process = subprocess.Popen(
            command, cwd=directory, env=scrubbed_environment(directory, run_id), stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=limits.seconds)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            started = marked_processes(run_id)  # before the kill: a dying process soon hides its environment
            kill_group(process.pid)  # children still in the group die with it
            process.wait()
            wait_until_gone(started)
        output_size = os.fstat(output.fileno()).st_size
        output.seek(max(0, output_size - OUTPUT_TAIL_CHARS))
        text = output.read().decode("utf-8", errors="replace")
    if returncode is None:
        return Execution(Status.TIMED_OUT, f"exceeded the time limit of {limits.seconds} s", text)
    if returncode == 0:
        return Execution(Status.PASSED, "", text)
    return Execution(Status.FAILED, failure_reason(returncode, text, output_size, limits), text)


def failure_reason(returncode: int, output: str, output_size: int, limits: Limits) -> str:
    if output_size >= limits.output_bytes:
        return f"output reached the limit of {limits.output_bytes} bytes"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    last_lines = [line for line in output.splitlines() if line.strip()]
    return last_lines[-1][:REASON_CHARS] if last_lines else f"exit status {returncode}"


def scrubbed_environment(directory: Path, run_id: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(directory), "TMPDIR": str(directory), "LANG": "C.UTF-8",
            MARKER: run_id}


def resource_limits(limits: Limits) -> dict[str, int]:
    """The rlimits sandbox_guard.py sets, soft = hard, before the program runs."""
    return {
        # A backstop for the wall-clock limit, in whole CPU seconds.
        "RLIMIT_CPU": math.ceil(limits.seconds) + 1,
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.output_bytes,
        "RLIMIT_CORE": 0,
        "RLIMIT_NPROC": tasks_of_user(os.getuid()) + THREAD_ALLOWANCE + limits.processes,
    }


def tasks_of_user(uid: int) -> int:
    """Threads (the unit RLIMIT_NPROC counts) that `uid` runs now, from /proc/*/status."""
    count = 0
    for status_path in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status_path.read_text().splitlines() if ":" in line)
        except (FileNotFoundError, ProcessLookupError):  # the process exited while we looked
            continue
        if int(fields["Uid"].split()[0]) == uid:
            count += int(fields["Threads"])
    return count


def kill_group(process_group: int) -> None:
    try:
        os.killpg(process_group, signal.SIGKILL)
    except ProcessLookupError:  # the program and all its children already exited
        pass


def marked_processes(run_id: str) -> list[int]:
    marker = f"{MARKER}={run_id}".encode()
    pids = []
    for environ_path in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ_path.read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):  # exited while we looked
            continue
        except PermissionError:  # another user's process, which the program could not have started
            continue
        if marker in variables:
            pids.append(int(environ_path.parent.name))
    return pids


def kill_marked_processes(run_id: str) -> None:
    """SIGKILL every process whose environment carries this run's marker, until none is left."""
    for _ in range(SWEEP_ROUNDS):
        pids = marked_processes(run_id)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until_gone(pids)
    raise RuntimeError(f"processes {marked_processes(run_id)} of sandbox run {run_id} survive SIGKILL")


def is_alive(pid: int) -> bool:
    """True while `pid` exists and has not finished dying (a zombie is dead, only not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until_gone(pids: list[int], seconds: float = 10.0) -> None:
    """Wait for SIGKILLed processes to finish dying: on a loaded machine that takes a moment, and
    nothing of a run may outlive run_program."""
    deadline = time.monotonic() + seconds
    while any(map(is_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)


def remove_tree(directory: str) -> None:
    """Remove the run's directory even where the program took away its own permissions."""
    os.chmod(directory, stat.S_IRWXU)
    for parent, subdirectories, _ in os.walk(directory):
        for name in subdirectories:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRWXU)
    shutil.rmtree(directory)
