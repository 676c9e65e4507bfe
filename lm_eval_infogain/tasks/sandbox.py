"""Run an untrusted Python program (a model's code plus its tests) in a child process, with limits.

`run_program(source)` never raises because of the program: it returns an `Execution` whose status is
passed (the program ran to its end, proved by sandbox_guard.py, and exited 0), failed (with a reason:
the last line of its output, the signal that killed it, or the output limit) or timed out. The proof
is a random string per run, sent with the program on the guard's standard input and written back by
the guard to a pipe only after the program's last line ran; an exit, with any status, proves nothing.

Two sandboxes, chosen by `chosen_sandbox()`:

BUBBLEWRAP (the default): the program runs inside bubblewrap (`bwrap`), so the boundary is the kernel's.
- an unprivileged host user: an evaluator running as root drops to uid/gid 65534 (setpriv, no
  supplementary groups, no capabilities) before bwrap makes any user namespace, so no uid inside maps
  to host root, root-owned files (/proc/sys, /proc/keys of other users) stay closed, and RLIMIT_NPROC
  binds; a non-root evaluator's programs run as the evaluating user;
- new user, PID, network, IPC, UTS, cgroup and mount namespaces (`--unshare-all --unshare-user`), and
  no more user namespaces inside (`--disable-userns`): no network but an unconnected loopback, no
  process of the host visible or reachable by a signal; the program is uid 65534 in every namespace
  (no `--dev`, which would map it through an intermediate uid 0), without capabilities, in a new
  session (no terminal injection), killed with its parent;
- a seccomp filter (REFUSED_SYSCALLS, built with libseccomp) refusing keyrings, io_uring,
  userfaultfd, ptrace, BPF, perf, personality and every mount, namespace and module call;
- `--clearenv`, then PATH, HOME and TMPDIR (the run directory), LANG and, for a relocated Python,
  LD_LIBRARY_PATH (bwrap adds PWD): nothing of the evaluator's environment;
- a read-only root: /usr (and the /bin, /lib* links), the Python installation at neutral paths
  (/python, /site-packages/N: see PythonLayout), a read-only /proc, and the devices null, zero, full,
  random, urandom; nothing else of the host, not /root, /home, /etc, the checkout or the output;
- two writable places, each a tmpfs capped at Limits.disk_bytes: /dev/shm, and /sandbox (working
  directory, HOME, TMPDIR), also capped at Limits.files where the evaluator is root (bwrap 0.8 can
  size a tmpfs but not count its files: root_launch mounts it); both vanish with the run;
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
- RLIMIT_NPROC caps processes and threads at the host user's current count plus a small allowance
  (the kernel does not apply it to root: only in the unsafe sandbox run by root does it not bind);
and installs its audit hook (sockets, ctypes calls, new processes, signals, rlimits, files outside the
directory), which turns a program's mistakes into clear failures. It is no boundary: the program can
rewrite it.
"""

import atexit
import errno
import functools
import json
import logging
import math
import os
import secrets
import select
import shlex
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from lm_eval_infogain.errors import UsageError

logger = logging.getLogger(__name__)

GUARD = Path(__file__).with_name("sandbox_guard.py")
# The guard runs as `python -c GUARD_SOURCE`: no file of the host needs to be reachable inside.
GUARD_SOURCE = GUARD.read_text(encoding="utf-8")
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
# The unprivileged host user (nobody) a root evaluator drops to before any user namespace is made; a
# non-root evaluator's programs run as itself. Inside, the program is uid 65534 either way.
SANDBOX_ID = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32")
NEUTRAL_PYTHON = "/python"
NEUTRAL_SITE_PACKAGES = "/site-packages"
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEVICE_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
                "/dev/stderr": "/proc/self/fd/2"}
CGROUP_CONTROLLERS = ("pids", "memory", "cpu")
CPU_PERIOD_MICROSECONDS = 100_000  # cgroup v1's default cpu.cfs_period_us
# Tasks of a run besides the program's: bwrap, its PID namespace's init, the guard, and the shell's
# short-lived mount children at the start.
LAUNCH_TASKS = 8
# Kernel interfaces no test program needs and that widen the kernel's attack surface or reach beyond
# the run: keyrings, io_uring, userfaultfd, tracing and reading other processes, BPF, perf, execution
# domains, and every mount, namespace and module call. They fail with EPERM.
REFUSED_SYSCALLS = (
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "personality", "bpf", "perf_event_open",
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "unshare", "setns", "open_by_handle_at", "name_to_handle_at", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "syslog", "acct", "swapon", "swapoff", "reboot", "quotactl",
    "fanotify_init",
)
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


def sandbox_layers(sandbox: Sandbox, limits: Limits = Limits()) -> dict[str, str]:
    """What protects the evaluation on this machine, layer by layer, as the results JSON records it."""
    mebibytes = 1 << 20
    verdict = "a pass needs the guard's proof, written after the program's last line; exit status alone is none"
    rlimits = (f"per process: {limits.seconds} s wall clock (CPU time backs it), "
               f"{limits.memory_bytes // mebibytes} MiB address space, "
               f"{limits.output_bytes // mebibytes} MiB output and per file, no core dumps, "
               "processes and threads of the host user capped (RLIMIT_NPROC"
               + (", which the kernel does not apply to root)" if sandbox is Sandbox.GUARD_ONLY and os.getuid() == 0
                  else ")"))
    if sandbox is Sandbox.GUARD_ONLY:
        return {"host_user": f"uid {os.getuid()} (the evaluating user)", "namespaces": "none", "seccomp": "none",
                "filesystem": "the host's, behind an audit hook the program can disarm", "cgroups": "not in force",
                "rlimits": rlimits, "verdict": verdict}
    as_root = os.getuid() == 0
    support = cgroup_support()
    cgroups = support.missing or (f"per run (cgroup v1): at most {run_tasks(limits)} tasks, "
                                  f"{cgroup_settings('memory', limits)['memory.limit_in_bytes'] // mebibytes} MiB "
                                  "of memory with its tmpfs pages, one CPU")
    python = python_layout()
    if not python.moved:
        installation = "the Python installation (under /usr)"
    else:
        shown = ("read-only overlays that name no host path" if python.stage.overlay
                 else "binds whose host paths /proc/self/mountinfo names")
        installation = f"the Python installation at /python, /site-packages/N ({shown})"
    return {
        "host_user": (f"uid {SANDBOX_ID}, gid {SANDBOX_ID}, no supplementary groups (dropped from root before any "
                      "user namespace)" if as_root else f"uid {os.getuid()} (the evaluating user)"),
        "namespaces": "user, pid, network, ipc, uts, cgroup, mount; no nested user namespace (--disable-userns)",
        "seccomp": "refuses " + ", ".join(REFUSED_SYSCALLS),
        "filesystem": (f"read-only /, /usr, /proc and {installation}; "
                       f"writable /sandbox ({limits.disk_bytes // mebibytes} MiB"
                       + (f", {limits.files} files)" if as_root else ")")
                       + f" and /dev/shm ({limits.disk_bytes // mebibytes} MiB)"),
        "cgroups": cgroups,
        "rlimits": rlimits,
        "verdict": verdict,
    }


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
    python = python_layout()
    as_root = os.getuid() == 0
    info_read, info_write = os.pipe()  # bwrap writes the host pid of the namespace's first process here
    seccomp_read = seccomp_pipe()
    cgroups = make_run_cgroups(limits)
    try:
        launch = root_launch(tools, python, limits, cgroups) if as_root else []
        command = [*launch, *bubblewrap_command(tools["bwrap"], python, as_root, limits, info_write, seccomp_read),
                   *guard_command(python.interpreter, python.site_packages, SANDBOX_DIR, limits, proof_fd,
                                  SANDBOX_ID if as_root else os.getuid())]
        return supervise(command, limits, env={"PATH": "/usr/bin:/bin"}, cwd="/", stdin=run_input,
                         pass_fds=(proof_fd, info_write, seccomp_read),
                         end_run=lambda process: end_namespace(process, info_read))
    finally:
        for descriptor in (info_read, info_write, seccomp_read):
            os.close(descriptor)
        remove_run_cgroups(cgroups)


def bubblewrap_tools() -> dict[str, str]:
    """Where bwrap, and util-linux's unshare, mount and setpriv (which a root evaluator needs), are on PATH."""
    needed = ("bwrap", "unshare", "mount", "setpriv") if os.getuid() == 0 else ("bwrap",)
    tools = {tool: shutil.which(tool) for tool in needed}
    if tools["bwrap"] is None:
        raise SandboxUnavailable(f"code tasks run generated programs inside bubblewrap, but bwrap is not on PATH: "
                                 f"{INSTALL_HINT}")
    missing = [tool for tool, path in tools.items() if path is None]
    if missing:
        raise SandboxUnavailable(f"code tasks run generated programs inside bubblewrap, which needs util-linux's "
                                 f"{' and '.join(missing)}, not on PATH: install util-linux, or set "
                                 f"{UNSAFE_VARIABLE}=1 to run generated code without a kernel boundary (unsafe)")
    return tools


def root_launch(tools: dict[str, str], python: "PythonLayout", limits: Limits, cgroups: list[str]) -> list[str]:
    """For an evaluator running as root: in a mount namespace of its own (no user namespace: root's own
    right to mount), bind the moved Python directories on the stage (unprivileged, bwrap may be unable
    to reach them by their paths, e.g. under /root) and mount the run directory, a tmpfs capped in
    bytes and in files (bwrap's --size caps bytes only); then setpriv drops to the unprivileged host
    user SANDBOX_ID before bwrap makes any user namespace, so that no uid inside maps to host root and
    RLIMIT_NPROC binds. The mounts vanish with the namespace. The first process joins the run's
    `cgroups`, so every process of the run is in them."""
    options = f"size={limits.disk_bytes},nr_inodes={limits.files},mode=0700,uid={SANDBOX_ID},gid={SANDBOX_ID}"
    mounts = [python.stage.mount_command(tools["mount"], host, staged)
              for host, staged in zip(python.moved, python.sources)]
    mounts.append(f"{tools['mount']} -t tmpfs -o {options} sandbox {shlex.quote(python.stage.run_directory)}")
    joins = [f"echo $$ > {shlex.quote(os.path.join(cgroup, 'cgroup.procs'))}" for cgroup in cgroups]
    script = " && ".join([*joins, *mounts, 'exec "$@"'])
    return [tools["unshare"], "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
            tools["setpriv"], f"--reuid={SANDBOX_ID}", f"--regid={SANDBOX_ID}", "--clear-groups", "--inh-caps=-all"]


def bubblewrap_command(bwrap: str, python: "PythonLayout", as_root: bool, limits: Limits, info_fd: int,
                       seccomp_fd: int) -> list[str]:
    """bwrap's arguments: namespaces, the read-only system at neutral paths, the capped tmpfs, seccomp.
    The run directory: the tmpfs root_launch mounted, else (not root) one capped in bytes only."""
    environment = {"PATH": "/usr/bin:/bin", "HOME": SANDBOX_DIR, "TMPDIR": SANDBOX_DIR, "LANG": "C.UTF-8",
                   **python.environment}
    run_directory = (["--bind", python.stage.run_directory, SANDBOX_DIR] if as_root
                     else ["--perms", "0700", "--size", str(limits.disk_bytes), "--tmpfs", SANDBOX_DIR])
    python_binds = [argument for source, neutral in zip(python.sources if as_root else python.moved,
                                                       python.moved.values())
                    for argument in ("--ro-bind", source, neutral)]
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--cap-drop", "ALL", "--die-with-parent",
        "--new-session", "--clearenv",
        *[argument for name, value in environment.items() for argument in ("--setenv", name, value)],
        *read_only_system_binds(), *python_binds,
        # bwrap's --dev would make the sandbox's uid 0 in an intermediate user namespace (for devpts):
        # only the devices a program needs, bound one by one, keep every user namespace's uid 65534.
        "--proc", "/proc", "--remount-ro", "/proc", "--dir", "/dev",
        *[argument for device in DEVICES if os.path.exists(device) for argument in ("--dev-bind", device, device)],
        *[argument for link, target in DEVICE_LINKS.items() for argument in ("--symlink", target, link)],
        "--perms", "1777", "--size", str(limits.disk_bytes), "--tmpfs", "/dev/shm",
        *run_directory, "--remount-ro", "/", "--chdir", SANDBOX_DIR,
        "--seccomp", str(seccomp_fd), "--info-fd", str(info_fd),
    ]


def read_only_system_binds() -> list[str]:
    """The system directories (a merged-/usr link stays a link), read-only."""
    binds = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            binds += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            binds += ["--ro-bind", directory, directory]
    return binds


@dataclass(frozen=True)
class Stage:
    """Empty directories of the host, made once per evaluator, on which each run's own mount namespace
    mounts what bwrap binds (root evaluator only): `run_directory`, and one per moved directory."""

    root: str
    run_directory: str
    overlay: bool = False  # whether read-only overlays (which hide their source paths) can be mounted

    @staticmethod
    def make(moved: int, tools: dict[str, str]) -> "Stage":
        root = tempfile.mkdtemp(prefix="lm_eval_infogain_stage_")
        os.chmod(root, 0o711)  # the sandbox user passes through, lists nothing
        for name in ["run", "empty", "probe", *map(str, range(moved))]:
            os.mkdir(os.path.join(root, name), 0o700)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        stage = Stage(root, os.path.join(root, "run"))
        probe = stage.mount_command(tools["mount"], stage.run_directory, os.path.join(root, "probe"), overlay=True)
        tried = subprocess.run([tools["unshare"], "--mount", "--propagation", "private", "/bin/sh", "-c", probe],
                               capture_output=True)
        return dataclasses.replace(stage, overlay=tried.returncode == 0)

    @property
    def empty(self) -> str:
        return os.path.join(self.root, "empty")

    def mount_command(self, mount: str, host: str, staged: str, overlay: bool | None = None) -> str:
        """Shell words that show `host` at `staged`. A bind mount's line in /proc/self/mountinfo names
        its source path (the home, checkout or venv); a read-only overlay of the directory (and an empty
        one: an overlay needs two layers) names only the descriptors it was given."""
        if not (self.overlay if overlay is None else overlay):
            return f"{mount} --bind {shlex.quote(host)} {shlex.quote(staged)}"
        return (f"{mount} -t overlay overlay -o ro,lowerdir=/proc/self/fd/8:/proc/self/fd/9 {shlex.quote(staged)} "
                f"8<{shlex.quote(host)} 9<{shlex.quote(self.empty)}")


@dataclass(frozen=True)
class PythonLayout:
    """The evaluator's Python inside the sandbox. An installation outside the system directories (a
    pyenv, conda or virtualenv in a home or a checkout) is bound at a neutral path, /python and
    /site-packages/N, so that no path of the host's home, checkout or venv exists inside."""

    interpreter: str  # inside
    site_packages: tuple[str, ...]  # inside
    moved: dict  # host directory -> its neutral path inside
    stage: Stage
    environment: dict  # LD_LIBRARY_PATH for an interpreter whose libpython moved with it

    @property
    def sources(self) -> list[str]:
        """Where root_launch binds each moved directory for bwrap to find it."""
        return [os.path.join(self.stage.root, str(number)) for number in range(len(self.moved))]


def python_layout() -> PythonLayout:
    with PYTHON_LAYOUT_LOCK:  # found once, though the first runs may start side by side
        return find_python_layout()


PYTHON_LAYOUT_LOCK = threading.Lock()


@functools.cache
def find_python_layout() -> PythonLayout:
    base = os.path.realpath(sys.base_prefix)
    executable = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    moved = {} if is_under(base, SYSTEM_DIRS) else {base: NEUTRAL_PYTHON}
    site_packages = [os.path.realpath(path) for path in site.getsitepackages() if os.path.isdir(path)]
    outside = [path for path in dict.fromkeys(site_packages) if not is_under(path, (*SYSTEM_DIRS, base))]
    moved |= {path: f"{NEUTRAL_SITE_PACKAGES}/{number}" for number, path in enumerate(outside)}

    def inside(path: str) -> str:
        for host, neutral in moved.items():
            if is_under(path, (host,)):
                return neutral + path[len(host):]
        return path

    if not is_under(executable, (*SYSTEM_DIRS, base)):
        raise SandboxUnavailable(f"the interpreter {executable} lies outside its installation {base}; code tasks "
                                 "need an interpreter the sandbox can bind (a virtualenv made with symlinks)")
    library = {"LD_LIBRARY_PATH": f"{NEUTRAL_PYTHON}/lib"} if base in moved else {}
    stage = Stage.make(len(moved), bubblewrap_tools()) if os.getuid() == 0 else Stage("", "")
    return PythonLayout(inside(executable), tuple(map(inside, site_packages)), moved, stage, library)


def is_under(path: str, roots) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


@dataclass(frozen=True)
class CgroupSupport:
    """Where runs get cgroups of their own: controller -> the evaluator's own cgroup, in which each run's
    is made (so the evaluator's limits still hold), or why there are none. Directly in it, not in a
    cgroup of all runs: the CPU scheduler would give such a cgroup one share for all its runs together,
    which halved the throughput of runs side by side on a busy machine."""

    parents: dict
    missing: str  # empty when cgroups are in force


@functools.cache
def cgroup_support() -> CgroupSupport:
    if os.getuid() != 0:
        return CgroupSupport({}, "not in force: the evaluator is not root, so no cgroup is writable")
    own = {controller: path for line in Path("/proc/self/cgroup").read_text().splitlines()
           for _, controllers, path in [line.split(":", 2)] for controller in controllers.split(",")}
    mounted = {}  # controller -> mount point of its cgroup v1 hierarchy
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, after = line.split(" - ", 1)
        filesystem, _, options = after.split()
        if filesystem == "cgroup":
            mounted |= {option: fields.split()[4] for option in options.split(",") if option in CGROUP_CONTROLLERS}
    parents = {}
    for controller in CGROUP_CONTROLLERS:
        if controller not in mounted or controller not in own:
            return CgroupSupport({}, f"not in force: no cgroup v1 {controller} hierarchy here (cgroup v2 "
                                     "would need a delegated subtree, which the sandbox does not use yet)")
        parent = os.path.join(mounted[controller], own[controller].lstrip("/"))
        if not os.access(parent, os.W_OK):
            return CgroupSupport({}, f"not in force: the evaluator's cgroup {parent} is not writable")
        parents[controller] = parent
    return CgroupSupport(parents, "")


def cgroup_settings(controller: str, limits: Limits) -> dict[str, int]:
    """The run's limits, all its processes together (file -> value, written in this order)."""
    memory = limits.memory_bytes + 2 * limits.disk_bytes  # the program's memory, and its two tmpfs' pages
    return {
        "pids": {"pids.max": run_tasks(limits)},
        "memory": {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory},  # memsw: no swap
        "cpu": {"cpu.cfs_quota_us": CPU_PERIOD_MICROSECONDS},  # one CPU at most, whatever it starts
    }[controller]


def run_tasks(limits: Limits) -> int:
    """Tasks (processes and threads) one run may hold: its program's allowance plus the launch's own."""
    return THREAD_ALLOWANCE + limits.processes + LAUNCH_TASKS


def make_run_cgroups(limits: Limits) -> list[str]:
    """A pids, memory and cpu cgroup for one run, set to `limits`, where cgroups are in force; else none."""
    name = f"lm_eval_infogain_run_{secrets.token_hex(8)}"
    cgroups = []
    for controller, parent in cgroup_support().parents.items():
        cgroup = os.path.join(parent, name)
        os.mkdir(cgroup)
        cgroups.append(cgroup)
        for file, value in cgroup_settings(controller, limits).items():
            if os.path.exists(os.path.join(cgroup, file)):  # memsw exists only with swap accounting
                Path(cgroup, file).write_text(str(value))
    return cgroups


def remove_run_cgroups(cgroups: list[str]) -> None:
    """Remove the run's cgroups once the processes left in them (none, after end_namespace) are gone."""
    for cgroup in cgroups:
        left = [int(pid) for pid in Path(cgroup, "cgroup.procs").read_text().split()]
        for pid in left:
            kill_process(pid)
        wait_until_gone(left)
        os.rmdir(cgroup)


@functools.cache
def seccomp_program() -> bytes:
    """The BPF program bwrap installs: REFUSED_SYSCALLS fail with EPERM, every other call is allowed."""
    try:
        import pyseccomp  # loads libseccomp.so.2 through ctypes
    except OSError as error:
        raise SandboxUnavailable(f"code tasks need libseccomp ({error}): install it (Debian/Ubuntu: apt-get "
                                 f"install -y libseccomp2), or set {UNSAFE_VARIABLE}=1 (unsafe)") from None
    refuse = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in REFUSED_SYSCALLS:
        refuse.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as program:
        refuse.export_bpf(program)
        program.seek(0)
        return program.read()


def seccomp_pipe() -> int:
    """A pipe's read end holding the seccomp program (a few hundred bytes: it fits the pipe's buffer)."""
    read_end, write_end = os.pipe()
    os.write(write_end, seccomp_program())
    os.close(write_end)
    return read_end


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
        site_packages = [path for path in site.getsitepackages() if os.path.isdir(path)]
        command = guard_command(sys.executable, site_packages, directory, limits, proof_fd, os.getuid())
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


def guard_command(interpreter: str, site_packages, directory: str, limits: Limits, proof_fd: int,
                  uid: int) -> list[str]:
    """The interpreter running sandbox_guard.py as host user `uid`; -S skips site-packages' .pth files (an
    editable install's would import from the checkout), the guard puts site-packages on sys.path itself."""
    settings = {"rlimits": resource_limits(limits, uid), "processes": limits.processes, "proof_fd": proof_fd,
                "site_packages": list(site_packages)}
    return [interpreter, "-I", "-S", "-c", GUARD_SOURCE, directory, json.dumps(settings)]


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


def resource_limits(limits: Limits, uid: int) -> dict[str, int]:
    """The rlimits sandbox_guard.py sets, soft = hard, before the program runs as host user `uid`."""
    return {
        # A backstop for the wall-clock limit, in whole CPU seconds.
        "RLIMIT_CPU": math.ceil(limits.seconds) + 1,
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.output_bytes,
        "RLIMIT_CORE": 0,
        "RLIMIT_NPROC": tasks_of_user(uid) + THREAD_ALLOWANCE + limits.processes,
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


def kill_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
            kill_process(pid)
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
