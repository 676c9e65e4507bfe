"""Run an untrusted Python program (a model's code plus its tests) in a child process, with limits.

`run_program(source)` never raises because of the program: it returns an `Execution` whose status is
passed (the program ran to its end, proved by sandbox_guard.py, and exited 0), failed (with a reason:
the last line of its output, the signal that killed it, or the output limit) or timed out. The proof
is a random string per run, sent with the program on the guard's standard input and written back by
the guard to a pipe only after the program's last line ran; an exit, with any status, proves nothing.

Two sandboxes, chosen by `chosen_sandbox()`:

BUBBLEWRAP (the default): the program runs inside bubblewrap (`bwrap`), so the boundary is the kernel's.
- new user, PID, network, IPC, UTS and mount namespaces (`--unshare-all --unshare-user`): no network
  but an unconnected loopback, no process of the host visible or reachable by a signal, a fresh /proc
  and a minimal /dev; the program runs as uid 65534 with no capabilities, `--new-session` (no terminal
  injection) and `--die-with-parent`. Root needs the explicit `--unshare-user --uid`: `bwrap
  --unshare-all` run by root makes a user namespace too, but keeps uid 0 with every capability in it,
  enough to remount a read-only bind writable and change the host's files;
- `--clearenv`, then PATH, HOME and TMPDIR (the run directory) and LANG (bwrap adds PWD): nothing of
  the evaluator's environment;
- read-only binds of only the Python installation running the evaluator and the system directories
  (/usr and the /bin, /lib* links or directories), nothing else of the host: not /root, /home, the
  checkout or the evaluator's output;
- one writable place, /sandbox (working directory, HOME, TMPDIR): a tmpfs capped at Limits.disk_bytes
  and Limits.files, mounted by `unshare` in a mount namespace of its own (bubblewrap 0.8, Debian 12's,
  cannot size a tmpfs), so it vanishes with the run;
- when the run ends, its namespace's first process is killed, and with it every process of the run
  (the kernel kills a PID namespace with its init); run_program returns once they are gone.
Not guaranteed: a kernel exploit crosses any namespace boundary; for hostile models use a VM.

GUARD_ONLY (unsafe, opt-in with MDM_INFOGAIN_UNSAFE_SANDBOX=1 where bubblewrap cannot run): the program
runs as the evaluating user, in a temporary directory of the host, with a scrubbed environment; at the
end its process group is killed and /proc swept for processes carrying the run's marker. A program
written to escape this can (it can rewrite the audit hook, reach the whole filesystem, signal any
process of the user, leave a process behind).

In both, sandbox_guard.py sets the rlimits in the child before the program's first line runs:
- a wall-clock limit, after which the run is killed; RLIMIT_CPU backs it up;
- RLIMIT_AS caps memory; RLIMIT_FSIZE caps output (stdout and stderr go to one capped file) and any
  file the program writes; RLIMIT_CORE=0, so a crash leaves no core file;
- RLIMIT_NPROC caps processes and threads at the user's current count plus a small allowance. The
  kernel does not apply it to root (user namespaces do not change that), so when evaluating as root a
  fork bomb is stopped by the audit hook, then by the wall-clock limit;
and installs its audit hook (sockets, ctypes calls, new processes, signals, rlimits, files outside the
directory), which turns a program's mistakes into clear failures. It is no boundary: the program can
rewrite it.
"""

import json
import logging
import math
import os
import secrets
import select
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lm_eval_infogain.errors import UsageError

logger = logging.getLogger(__name__)

GUARD = Path(__file__).with_name("sandbox_guard.py")
MARKER = "LM_EVAL_INFOGAIN_SANDBOX"
UNSAFE_VARIABLE = "MDM_INFOGAIN_UNSAFE_SANDBOX"
INSTALL_HINT = ("install it (Debian/Ubuntu: apt-get install -y bubblewrap; Fedora: dnf install bubblewrap), "
                f"or set {UNSAFE_VARIABLE}=1 to run generated code without a kernel boundary (unsafe)")
# RLIMIT_NPROC counts threads too; this leaves room for a program's few worker threads.
THREAD_ALLOWANCE = 16
OUTPUT_TAIL_CHARS = 4000
PROOF_READ_BYTES = 4096
REASON_CHARS = 300
# Killing a marked process can race with it forking; a few rounds of the sweep catch the children.
SWEEP_ROUNDS = 20
# How long a killed process may take to finish dying on a loaded machine.
DYING_SECONDS = 10.0
# Inside bubblewrap: the program's directory, the guard, and the unprivileged user it runs as.
SANDBOX_DIR = "/sandbox"
SANDBOX_GUARD = "/sandbox_guard.py"
NOBODY = "65534"
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32")
# bwrap reports a child killed by a signal as exit status 128 + the signal's number, as a shell does.
SIGNAL_EXIT_BASE = 128


class Sandbox(str, Enum):
    BUBBLEWRAP = "bubblewrap"
    GUARD_ONLY = "in-process guard only (unsafe)"


class SandboxUnavailable(UsageError):
    """bubblewrap is missing or cannot create its namespaces here; the message says what to do (one line:
    the stock CLI prints it alone)."""


@dataclass(frozen=True)
class Limits:
    seconds: float = 3.0  # wall clock per program: code_eval's default, which lm-eval's humaneval and mbpp use
    memory_bytes: int = 1 << 30  # address space
    output_bytes: int = 1 << 20  # stdout and stderr together, and any single file the program writes
    processes: int = 0  # processes the program may start; with 0 the guard refuses fork, exec and spawn
    disk_bytes: int = 64 << 20  # all files of the run together (bubblewrap only)
    files: int = 1024  # files and directories of the run together (bubblewrap only)

    def __post_init__(self):
        for name in ("seconds", "memory_bytes", "output_bytes", "disk_bytes", "files"):
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


def chosen_sandbox() -> Sandbox:
    """bubblewrap, unless MDM_INFOGAIN_UNSAFE_SANDBOX=1 asks for the in-process guard alone."""
    value = os.environ.get(UNSAFE_VARIABLE, "")
    if value not in ("", "0", "1"):
        raise UsageError(f"{UNSAFE_VARIABLE}={value!r} is invalid; allowed: 1 (unsafe: no kernel boundary), 0 or unset")
    return Sandbox.GUARD_ONLY if value == "1" else Sandbox.BUBBLEWRAP


def require_sandbox() -> Sandbox:
    """The sandbox code tasks will use, checked before any request is decoded: raises SandboxUnavailable
    with one line where bubblewrap cannot run, warns where the unsafe guard-only sandbox was chosen."""
    sandbox = chosen_sandbox()
    if sandbox is Sandbox.GUARD_ONLY:
        logger.warning("%s=1: generated code runs WITHOUT a kernel boundary, guarded only by an audit hook "
                       "that a program can rewrite; use this only for code you trust", UNSAFE_VARIABLE)
        return sandbox
    probe = run_program("print('ok')", Limits(seconds=60), sandbox)
    if probe.status is not Status.PASSED:
        raise SandboxUnavailable(f"bubblewrap cannot run a program here ({probe.reason}); code tasks need "
                                 "user namespaces (a container may forbid them): run on the host or in a VM "
                                 f"that allows them, or set {UNSAFE_VARIABLE}=1 (unsafe)")
    return sandbox


def run_program(source: str, limits: Limits = Limits(), sandbox: Sandbox | None = None) -> Execution:
    """Run `source` as a Python program in `sandbox` (default: `chosen_sandbox()`); see the module docstring.
    Whatever the program does, and even where the sandbox's own machinery fails on it, the answer is
    an Execution: only a sandbox that cannot run at all raises (SandboxUnavailable)."""
    sandbox = chosen_sandbox() if sandbox is None else sandbox
    run = run_in_bubblewrap if sandbox is Sandbox.BUBBLEWRAP else run_with_guard_only
    proof = secrets.token_hex(16)
    proof_read, proof_write = os.pipe()
    try:
        with tempfile.TemporaryFile() as run_input:  # the guard's standard input: proof, then program
            run_input.write(f"{proof}\n{source}".encode("utf-8", errors="replace"))
            run_input.seek(0)
            returncode, output_size, output = run(run_input, proof_write, limits)
        proved = read_proof(proof_read) == proof.encode()
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as error:
        if isinstance(error, SandboxUnavailable):
            raise
        logger.warning("the sandbox failed on a program: %r", error)
        return Execution(Status.FAILED, f"the sandbox failed on this program: {error!r}"[:REASON_CHARS], "")
    finally:
        os.close(proof_read)
        os.close(proof_write)
    return execution(returncode, proved, output_size, output, limits, bubblewrap=sandbox is Sandbox.BUBBLEWRAP)


def read_proof(proof_read: int) -> bytes:
    """What the guard wrote to the proof pipe (nothing, unless the program ran to its end)."""
    os.set_blocking(proof_read, False)
    try:
        return os.read(proof_read, PROOF_READ_BYTES)
    except BlockingIOError:
        return b""


# ---------------------------------------------------------------- bubblewrap


def run_in_bubblewrap(run_input, proof_fd: int, limits: Limits) -> tuple[int | None, int, str]:
    tools = bubblewrap_tools()
    mount_point = tempfile.mkdtemp(prefix="lm_eval_infogain_sandbox_")  # stays empty: the tmpfs covers it
    info_read, info_write = os.pipe()  # bwrap writes the host pid of the namespace's first process here
    try:
        command = [*tmpfs_command(tools, mount_point, limits),
                   *bubblewrap_command(tools["bwrap"], mount_point, info_write),
                   *guard_command(SANDBOX_DIR, limits, SANDBOX_GUARD, proof_fd)]
        return supervise(command, limits, env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=run_input,
                         pass_fds=(proof_fd, info_write), end_run=lambda process: end_namespace(process, info_read))
    finally:
        os.close(info_read)
        os.close(info_write)
        os.rmdir(mount_point)


def bubblewrap_tools() -> dict[str, str]:
    """Where bwrap, and util-linux's unshare and mount (which size the run's tmpfs), are on PATH."""
    tools = {tool: shutil.which(tool) for tool in ("bwrap", "unshare", "mount")}
    if tools["bwrap"] is None:
        raise SandboxUnavailable(f"code tasks run generated programs inside bubblewrap, but bwrap is not on PATH: "
                                 f"{INSTALL_HINT}")
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise SandboxUnavailable(f"code tasks run generated programs inside bubblewrap, which needs util-linux's "
                                 f"{' and '.join(missing)}, not on PATH: install util-linux, or set "
                                 f"{UNSAFE_VARIABLE}=1 to run generated code without a kernel boundary (unsafe)")
    return tools


def tmpfs_command(tools: dict[str, str], mount_point: str, limits: Limits) -> list[str]:
    """A mount namespace of our own with a size-capped tmpfs on `mount_point`, then exec the rest."""
    options = f"size={limits.disk_bytes},nr_inodes={limits.files},mode=0700"
    mount = f'{tools["mount"]} -t tmpfs -o {options} sandbox "$0" && exec "$@"'
    return [tools["unshare"], "--user", "--map-root-user", "--mount", "--", "/bin/sh", "-c", mount, mount_point]


def bubblewrap_command(bwrap: str, mount_point: str, info_fd: int) -> list[str]:
    environment = {"PATH": "/usr/bin:/bin", "HOME": SANDBOX_DIR, "TMPDIR": SANDBOX_DIR, "LANG": "C.UTF-8"}
    return [
        bwrap, "--unshare-all", "--unshare-user", "--uid", NOBODY, "--gid", NOBODY, "--cap-drop", "ALL",
        "--die-with-parent", "--new-session", "--clearenv",
        *[argument for name, value in environment.items() for argument in ("--setenv", name, value)],
        *read_only_system_binds(), "--proc", "/proc", "--dev", "/dev",
        "--bind", mount_point, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
        "--ro-bind", str(GUARD), SANDBOX_GUARD,
        "--info-fd", str(info_fd),
    ]


def read_only_system_binds() -> list[str]:
    """The system directories (a merged-/usr link stays a link) and the Python installation, read-only."""
    binds = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            binds += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            binds += ["--ro-bind", directory, directory]
    for directory in python_installation():
        binds += ["--ro-bind", directory, directory]
    return binds


def python_installation() -> list[str]:
    """The directories of the running interpreter (a virtualenv and the Python it was made from), outside /usr."""
    prefixes = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    prefixes |= {os.path.realpath(prefix) for prefix in prefixes}
    outside = sorted(prefix for prefix in prefixes if not any(
        prefix == system or prefix.startswith(system + os.sep) for system in SYSTEM_DIRS))
    # A prefix inside another one is covered by its bind.
    return [prefix for prefix in outside if not any(prefix.startswith(other + os.sep) for other in outside)]


def end_namespace(process: subprocess.Popen, info_read: int) -> None:
    """Kill bwrap, which takes the run's PID namespace with it (`--die-with-parent` kills the namespace's
    first process, and the kernel every other one with it), and wait until that first process is gone.
    It is waited for, never signalled by its number, which another process may carry by then."""
    kill_group(process.pid)
    process.wait()
    os.set_blocking(info_read, False)
    try:
        info = os.read(info_read, 4096)
    except BlockingIOError:  # bwrap died before it could say
        return
    namespace_init = json.loads(info)["child-pid"]
    if in_a_new_pid_namespace(namespace_init):  # else it is gone and its number already reused
        wait_until_gone([namespace_init])


def in_a_new_pid_namespace(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except (FileNotFoundError, PermissionError):  # gone (or a zombie), or now another user's process
        return False


# ---------------------------------------------------------------- guard only (unsafe)


def run_with_guard_only(run_input, proof_fd: int, limits: Limits) -> tuple[int | None, int, str]:
    run_id = secrets.token_hex(16)
    directory = tempfile.mkdtemp(prefix="lm_eval_infogain_sandbox_")
    try:
        command = guard_command(directory, limits, str(GUARD), proof_fd)
        return supervise(command, limits, env=scrubbed_environment(Path(directory), run_id), cwd=directory,
                         stdin=run_input, pass_fds=(proof_fd,),
                         end_run=lambda process: end_group_and_marked(process, run_id))
    finally:
        kill_marked_processes(run_id)
        remove_tree(directory)


def end_group_and_marked(process: subprocess.Popen, run_id: str) -> None:
    started = marked_processes(run_id)  # before the kill: a dying process soon hides its environment
    kill_group(process.pid)  # children still in the group die with it
    process.wait()
    wait_until_gone(started)


def scrubbed_environment(directory: Path, run_id: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(directory), "TMPDIR": str(directory), "LANG": "C.UTF-8",
            MARKER: run_id}


# ---------------------------------------------------------------- shared by both


def guard_command(directory: str, limits: Limits, guard: str, proof_fd: int) -> list[str]:
    """The interpreter running sandbox_guard.py; -S skips site-packages' .pth files (an editable install's
    would import from the checkout), the guard puts site-packages on sys.path itself."""
    settings = {"rlimits": resource_limits(limits), "processes": limits.processes, "proof_fd": proof_fd,
                "site_packages": [path for path in site.getsitepackages() if os.path.isdir(path)]}
    return [sys.executable, "-I", "-S", guard, directory, json.dumps(settings)]


def supervise(command: list[str], limits: Limits, *, env: dict[str, str], cwd: str, stdin, pass_fds: tuple,
              end_run) -> tuple[int | None, int, str]:
    """Start `command`, wait up to the time limit, then `end_run(process)`. Returns the exit status (None
    when timed out), the output's size and its end, read back through our own handle of a file the
    program cannot see."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=stdin, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
        try:
            returncode = wait_for_exit(process, limits.seconds)
        finally:
            end_run(process)
        output_size = os.fstat(output.fileno()).st_size
        output.seek(max(0, output_size - OUTPUT_TAIL_CHARS))
        return returncode, output_size, output.read().decode("utf-8", errors="replace")


def wait_for_exit(process: subprocess.Popen, seconds: float) -> int | None:
    """The exit status, or None after `seconds`; woken by the exit itself (Popen.wait polls every 50 ms)."""
    process_fd = os.pidfd_open(process.pid)
    try:
        exited, _, _ = select.select([process_fd], [], [], seconds)
    finally:
        os.close(process_fd)
    return process.wait() if exited else None


def execution(returncode: int | None, proved: bool, output_size: int, output: str, limits: Limits, *,
              bubblewrap: bool) -> Execution:
    """Passed needs both the proof and exit status 0: a status alone, whatever it is, proves nothing."""
    if returncode is None:
        return Execution(Status.TIMED_OUT, f"exceeded the time limit of {limits.seconds} s", output)
    if returncode == 0 and proved:
        return Execution(Status.PASSED, "", output)
    return Execution(Status.FAILED, failure_reason(returncode, output, output_size, limits, bubblewrap), output)


def failure_reason(returncode: int, output: str, output_size: int, limits: Limits, bubblewrap: bool) -> str:
    if output_size >= limits.output_bytes:
        return f"output reached the limit of {limits.output_bytes} bytes"
    if returncode == 0:
        return "exit status 0 before the end of the program (its tests did not all run)"
    if returncode < 0:
        return f"killed by {signal_name(-returncode)}"
    last_lines = [line for line in output.splitlines() if line.strip()]
    if last_lines:
        return last_lines[-1][:REASON_CHARS]
    if bubblewrap and returncode > SIGNAL_EXIT_BASE:  # bwrap reports a death by signal n as status 128 + n
        return f"exit status {returncode} (or killed by {signal_name(returncode - SIGNAL_EXIT_BASE)})"
    return f"exit status {returncode}"


def signal_name(number: int) -> str:
    """SIGKILL, or "signal 40" for a number Python's signal.Signals does not name (real-time signals)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


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


def wait_until_gone(pids: list[int], seconds: float = DYING_SECONDS) -> None:
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
