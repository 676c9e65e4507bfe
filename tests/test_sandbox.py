"""The code executor against hostile programs: each is contained and reported, none harms the machine.

Every program runs through bubblewrap, the default sandbox. Every program here is bounded by its own
construction too (a fork bomb of at most 64 processes, a memory bomb refused up front, a disk bomb of at
most 256 MiB), so a broken sandbox fails the test instead of taking the machine down. The attacks at the
end are written to get past the in-process guard (they escape it when run with
MDM_INFOGAIN_UNSAFE_SANDBOX=1); each asserts the effects that must not happen: no file outside the run
directory, no signal to a process outside the sandbox, no secret of the evaluator in the output, no
process of the run left afterwards.
"""

import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lm_eval_infogain.tasks import code_metrics
from lm_eval_infogain.tasks import sandbox as sandbox_module
from lm_eval_infogain.tasks.sandbox import (
    OUTPUT_TAIL_CHARS,
    UNSAFE_VARIABLE,
    Limits,
    Sandbox,
    SandboxUnavailable,
    Status,
    require_sandbox,
    run_program,
)

# Programs run under AMPLE end by another limit long before its clock: the time is slack for a loaded
# machine, where starting Python alone can take more than a second.
AMPLE = Limits(seconds=20)
# A program that must first start a child before it loops until its time limit.
AMPLE_START = 5
RUNNING_AS_ROOT = os.getuid() == 0
REPO = Path(__file__).resolve().parents[1]
# Host paths that must not be seen inside: the checkout, the venv, the Python installation, the home.
HOST_PATHS = sorted({str(path) for path in (REPO, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(),
                                            Path.home())
                     if not sandbox_module.is_under(str(path), sandbox_module.SYSTEM_DIRS)})
# A process that stays alive by exec: it reports through an inherited pipe, then sleeps; the token in
# its arguments lets the test find it among the host's processes.
SLEEPER = "import os, sys, time; os.write(int(sys.argv[1]), b'x'); time.sleep(600)"


def start_sleeper(token: str, detach: bool = False) -> str:
    """Program text: fork a child that (after setsid, if `detach`) execs SLEEPER with an empty environment."""
    return ("import os, sys\nread_end, write_end = os.pipe()\nos.set_inheritable(write_end, True)\n"
            "if os.fork() == 0:\n"
            + ("    os.setsid()\n" if detach else "")
            + f"    arguments = [sys.executable, '-I', '-S', '-c', {SLEEPER!r}, str(write_end), {token!r}]\n"
            "    os.execve(sys.executable, arguments, {})\n"
            "os.read(read_end, 1)\nprint('sleeper running', flush=True)\n")


def processes_carrying(token: str) -> list[int]:
    """Host processes (not zombies) with `token` in their command line."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token.encode() in cmdline.read_bytes() and is_running(int(cmdline.parent.name)):
                pids.append(int(cmdline.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def no_process_left(token: str, seconds: float = 10.0) -> bool:
    """No host process carries `token`, allowing a SIGKILLed one a few seconds to finish dying on a loaded
    machine (it is killed already; a process that escaped the kill would still be there after them)."""
    deadline = time.monotonic() + seconds
    while processes_carrying(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_carrying(token) == []


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie is dead, only not yet reaped by its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_a_correct_program_passes_and_a_wrong_one_fails_with_its_exception(sandbox):
    assert run_program("assert sorted([3, 1, 2]) == [1, 2, 3]", sandbox=sandbox).status is Status.PASSED
    failed = run_program("def f():\n    return 2\nassert f() == 1, 'f is wrong'", sandbox=sandbox)
    assert failed.status is Status.FAILED and failed.reason == "AssertionError: f is wrong"
    broken = run_program("def f(:\n    pass", sandbox=sandbox)
    assert broken.status is Status.FAILED and broken.reason.startswith("SyntaxError")


@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_exiting_before_the_tests_run_is_a_failure(sandbox):
    execution = run_program("import sys\nsys.exit(0)\nassert False", sandbox=sandbox)
    assert execution.status is Status.FAILED and "before the end of the program" in execution.reason


# ---------------------------------------------------------------- the verdict needs proof

RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
TESTS = "assert add(2, 2) == 4, 'add is wrong'\nassert add(-1, 1) == 0\n"
# What a model's completion can append to its code (no stop sequence of humaneval cuts them): ways to
# end the process with status 0, or to make an early exit look normal, before its tests fail.
EARLY_EXITS = {
    "os._exit(0)": "import os\nos._exit(0)\n",
    "os._exit(256)": "import os\nos._exit(256)\n",
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "raise SystemExit": "raise SystemExit(0)\n",
    "atexit": "import atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook": "import os, sys\nsys.excepthook = lambda *details: os._exit(0)\n",
    "threading.excepthook": "import os, threading\nthreading.excepthook = lambda details: os._exit(0)\n",
    "a thread exits 0 while the tests run": (
        "import os, threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(0)), daemon=True).start()\n"
        "time.sleep(5)\n"),
    "__del__": "class Bail:\n    def __del__(self):\n        import os\n        os._exit(0)\nkept = Bail()\n",
    "signal handler": ("import os, signal, time\nsignal.signal(signal.SIGALRM, lambda *details: os._exit(0))\n"
                       "signal.setitimer(signal.ITIMER_REAL, 0.2)\ntime.sleep(5)\n"),
    "rebound builtins.SystemExit": (
        "import builtins, sys\nclass NotAnExit(Exception):\n    pass\n"
        "builtins.SystemExit = builtins.BaseException = NotAnExit\nsys.exit(0)\n"),
    "rebound os._exit": "import os, sys\nos._exit = lambda status: None\nsys.exit(0)\n",
    "the guard's globals rewritten": (
        "import os, sys\nframe = sys._getframe()\nwhile frame is not None:\n"
        "    frame.f_globals.update(SystemExit=KeyError, BaseException=KeyError)\n    frame = frame.f_back\n"
        "os._exit(0)\n"),
    "stdout closed, then os._exit(0)": "import os, sys\nsys.stdout.close()\nos._exit(0)\n",
}


@pytest.mark.parametrize("early_exit", EARLY_EXITS.values(), ids=EARLY_EXITS.keys())
def test_a_wrong_program_that_exits_early_fails(early_exit):
    execution = run_program(WRONG + early_exit + TESTS, AMPLE)
    assert execution.status is Status.FAILED, execution


def test_the_right_program_passes():
    assert run_program(RIGHT + TESTS, AMPLE).status is Status.PASSED


@pytest.mark.parametrize("sandbox", list(Sandbox))
@pytest.mark.parametrize("early_exit", ["import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n"])
def test_exit_status_0_alone_is_no_pass_in_either_sandbox(sandbox, early_exit):
    execution = run_program(RIGHT + early_exit + TESTS, AMPLE, sandbox)
    assert execution.status is Status.FAILED and "before the end of the program" in execution.reason


@pytest.mark.parametrize("ending, reason", [
    ("import os\nos._exit(200)", "exit status 200"),
    ("import os\nos.kill(os.getpid(), 40)", "signal 40"),  # a real-time signal signal.Signals does not name
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
])
@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_any_exit_status_or_signal_is_a_failure_with_its_reason(sandbox, ending, reason):
    execution = run_program(RIGHT + TESTS + ending, AMPLE, sandbox)
    assert execution.status is Status.FAILED and reason in execution.reason, execution


def test_the_program_cannot_read_its_own_source_or_tests():
    """No file holds the program and its standard input is /dev/null: a program cannot answer from its
    tests (or rewrite them and exec them)."""
    program = ("import os, sys\nseen = []\n"
               "for read in (lambda: open(__file__).read(), lambda: open('program.py').read(), sys.stdin.read,\n"
               "             lambda: open('/proc/self/fd/0').read(), lambda: str(os.listdir('.'))):\n"
               "    try:\n        seen.append(read())\n    except Exception as error:\n"
               "        seen.append(type(error).__name__)\n"
               "print('SEEN', seen)\n")
    execution = run_program(program + "# the tests: SECRET-EXPECTED-VALUE\n", AMPLE)
    assert execution.status is Status.PASSED, execution
    assert "SEEN ['NameError', 'FileNotFoundError', ''," in execution.output  # /proc/self/fd/0: refused or empty
    assert "SECRET-EXPECTED-VALUE" not in execution.output


def test_run_ahead_and_pass_at_k_never_raise_because_of_a_program(monkeypatch):
    """Even a failure of the sandbox's own machinery on one program scores that program as failed."""
    programs = {"exit 200": RIGHT + TESTS + "import os\nos._exit(200)", "right": RIGHT + TESTS,
                "signal 40": RIGHT + TESTS + "import os\nos.kill(os.getpid(), 40)"}
    code_metrics.run_ahead(list(programs.values()))
    assert code_metrics.outcomes_run_ahead == {programs["exit 200"]: False, programs["right"]: True,
                                               programs["signal 40"]: False}

    def broken_pipe(*arguments, **options):
        raise OSError("no more descriptors")

    monkeypatch.setattr(sandbox_module.subprocess, "Popen", broken_pipe)
    execution = run_program(RIGHT + TESTS, AMPLE)
    assert execution.status is Status.FAILED and "the sandbox failed on this program" in execution.reason
    assert code_metrics.pass_at_k([TESTS], [[RIGHT + "# not run ahead"]], k=1) == {"pass@1": 0.0}


@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_infinite_loop_times_out_and_every_process_of_the_run_dies(sandbox):
    token = secrets.token_hex(8)
    program = start_sleeper(token) + "while True:\n    pass\n"
    start = time.monotonic()
    execution = run_program(program, Limits(seconds=AMPLE_START, processes=1), sandbox)
    assert time.monotonic() - start < AMPLE_START + 15
    assert execution.status is Status.TIMED_OUT and "time limit" in execution.reason
    assert "sleeper running" in execution.output
    assert no_process_left(token)


def test_a_child_that_left_the_session_with_an_empty_environment_dies_with_the_run():
    """setsid, then execve with no environment: neither a group kill nor an environment marker finds it."""
    token = secrets.token_hex(8)
    execution = run_program(start_sleeper(token, detach=True), Limits(seconds=AMPLE.seconds, processes=1))
    assert execution.status is Status.PASSED, execution.output
    assert "sleeper running" in execution.output
    assert no_process_left(token)


def test_fork_bomb_is_refused_at_the_first_fork():
    start = time.monotonic()
    execution = run_program("import os\nwhile True:\n    os.fork()\n", AMPLE)
    assert time.monotonic() - start < AMPLE.seconds
    assert execution.status is Status.FAILED and "refuses os.fork" in execution.reason


def test_fork_bomb_allowed_to_fork_is_capped_and_leaves_nothing_behind():
    """Six doublings (64 processes, all sleeping): RLIMIT_NPROC caps them (a root evaluator's programs run
    as the unprivileged host user, to whom it applies), then the end of the run's PID namespace kills them."""
    token = secrets.token_hex(8)
    program = ("import os, sys\nfor _ in range(6):\n    os.fork()\nprint('forked', flush=True)\n"
               "sleeper = 'import time; time.sleep(600)'\n"
               f"os.execv(sys.executable, [sys.executable, '-I', '-S', '-c', sleeper, {token!r}])\n")
    start = time.monotonic()
    execution = run_program(program, Limits(seconds=2, processes=4))
    assert time.monotonic() - start < 30
    assert execution.status is not Status.PASSED
    forked = execution.output.count("forked")
    assert 1 <= forked < 64 and no_process_left(token)


@pytest.mark.parametrize(
    "program",
    [
        "blob = b'x' * (8 << 30)",  # refused at once: 8 GiB against a 1 GiB address space
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))",  # grows until the limit
    ],
)
def test_memory_bomb_fails_with_memory_error(program):
    execution = run_program(program, AMPLE)
    assert execution.status is Status.FAILED and execution.reason == "MemoryError"


@pytest.mark.parametrize("sandbox", list(Sandbox))
def test_infinite_output_is_capped(sandbox):
    start = time.monotonic()
    execution = run_program("while True:\n    print('x' * 1000)", AMPLE, sandbox)
    assert time.monotonic() - start < AMPLE.seconds
    assert execution.status is Status.FAILED and "output reached the limit" in execution.reason
    assert len(execution.output) <= OUTPUT_TAIL_CHARS


def test_a_huge_file_is_cut_at_the_size_limit():
    execution = run_program("with open('big.txt', 'w') as f:\n    f.write('x' * (64 << 20))", AMPLE)
    assert execution.status is Status.FAILED and "File too large" in execution.reason


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize(
    "connect",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
        "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))",  # below the socket module
        "import os\nos.system('exec 3<>/dev/tcp/127.0.0.1/{port}')",  # through a shell
    ],
)
def test_network_connection_never_arrives(listener, connect):
    port = listener.getsockname()[1]
    execution = run_program(connect.format(port=port), AMPLE)
    assert execution.status is Status.FAILED and "refuses" in execution.reason
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_environment_secrets_do_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2-from-the-parent")
    execution = run_program("import os\nprint(sorted(os.environ.items()))")
    assert execution.status is Status.PASSED
    assert "hunter2" not in execution.output and "SANDBOX_TEST_SECRET" not in execution.output
    # Nor through the parent's environment file, which /proc would show to a process of the same user.
    sneaky = run_program("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert sneaky.status is Status.FAILED and "hunter2" not in sneaky.output


def test_writes_outside_the_run_directory_are_refused(tmp_path):
    kept_file = tmp_path / "kept.txt"
    kept_file.write_text("precious")
    kept_dir = tmp_path / "kept_dir"
    kept_dir.mkdir()
    attempts = [
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(tmp_path / 'new.txt')!r}, os.O_WRONLY | os.O_CREAT))",
        f"import os\nos.remove({str(kept_file)!r})",
        f"import shutil\nshutil.rmtree({str(kept_dir)!r})",
        f"import os\nos.rename({str(kept_file)!r}, 'stolen.txt')",
        f"import os\nos.symlink({str(kept_file)!r}, 'link')\nopen('link', 'w').write('overwritten')",
        f"import os\nos.chmod({str(kept_file)!r}, 0o777)",
        "import pathlib\n(pathlib.Path.cwd().parent / 'escaped.txt').write_text('x')",
    ]
    for attempt in attempts:
        execution = run_program(attempt, AMPLE)
        assert execution.status is Status.FAILED and "the sandbox refuses" in execution.reason, attempt
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.txt", "kept_dir"]
    assert kept_file.read_text() == "precious"


def test_home_and_tmpdir_are_the_run_directory_of_which_nothing_is_left(tmp_path, monkeypatch):
    host_temp = tmp_path / "host_temp"
    host_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(host_temp))  # where run_program makes its mount point
    program = ("import os, pathlib, tempfile\n"
               "cwd = os.getcwd()\nassert os.environ['HOME'] == os.environ['TMPDIR'] == cwd\n"
               "assert tempfile.gettempdir() == cwd and str(pathlib.Path.home()) == cwd\n"
               "with tempfile.NamedTemporaryFile('w', delete=False) as handle:\n    handle.write('scratch')\n"
               "os.mkdir('locked')\nopen('locked/inside.txt', 'w').write('x')\nos.chmod('locked', 0)\n"
               "print(f'cwd={cwd}')\n")
    execution = run_program(program)
    assert execution.status is Status.PASSED, execution.reason
    assert execution.output.strip() == "cwd=/sandbox"
    assert list(host_temp.iterdir()) == []


def test_reads_outside_are_refused_while_imports_work(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch codes")
    execution = run_program(f"print(open({str(secret)!r}).read())", AMPLE)
    assert execution.status is Status.FAILED and "the launch codes" not in execution.output
    imports = run_program("import collections, heapq, json, math, re, itertools, functools\nprint(json.dumps([1]))")
    assert imports.status is Status.PASSED and imports.output.strip() == "[1]"


def test_signals_to_other_processes_are_refused():
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        execution = run_program(f"import os, signal\nos.kill({bystander.pid}, signal.SIGKILL)", AMPLE)
        assert execution.status is Status.FAILED and "refuses os.kill" in execution.reason
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("bad", [{"seconds": 0}, {"memory_bytes": -1}, {"processes": -1}, {"processes": 1.5}])
def test_invalid_limits_are_refused(bad):
    with pytest.raises(ValueError, match=f"Limits.{next(iter(bad))}="):
        Limits(**bad)


def test_resource_limits_cannot_be_raised_by_the_program():
    program = "import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)"
    execution = run_program(program, AMPLE)
    assert execution.status is Status.FAILED and "refuses resource.setrlimit" in execution.reason


def test_programs_solutions_rely_on_keep_working():
    """The standard library HumanEval and MBPP solutions import, deep recursion, printing, own files."""
    program = ("import bisect, collections, copy, datetime, decimal, fractions, functools, hashlib, heapq\n"
               "import itertools, json, math, operator, random, re, statistics, string, sys, typing\n"
               "sys.setrecursionlimit(10_000)\n"
               "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
               "assert depth(5_000) == 5_000\n"
               "open('notes.txt', 'w').write('kept')\nassert open('notes.txt').read() == 'kept'\n"
               "print(heapq.nsmallest(2, [5, 1, 4]), math.comb(5, 2), re.sub('a', 'b', 'aa'))\n")
    execution = run_program(program, AMPLE)
    assert execution.status is Status.PASSED, execution.output
    assert execution.output.strip() == "[1, 4] 10 bb"


# ---------------------------------------------------------------- attacks written to escape the guard


# What an escaped program would do; each step reports and goes on. Run after a bypass of the guard.
PAYLOAD = """
import os, signal, socket
def attempt(name, action):
    try:
        print(name, 'done', repr(action())[-1500:], flush=True)
    except Exception as error:
        print(name, 'failed:', type(error).__name__, flush=True)
attempt('write', lambda: open(os.path.join(OUTSIDE, 'written'), 'w').write('escaped'))
attempt('shell', lambda: os.system(f'touch {OUTSIDE}/by-shell'))
attempt('kill', lambda: os.kill(BYSTANDER, signal.SIGKILL))
attempt('signal evaluator', lambda: os.kill(EVALUATOR, signal.SIGUSR1))
attempt('connect', lambda: socket.create_connection(('127.0.0.1', PORT), timeout=2))
attempt('environ of a process holding a secret', lambda: open(f'/proc/{BYSTANDER}/environ', 'rb').read())
attempt('environ of the evaluator', lambda: open(f'/proc/{EVALUATOR}/environ', 'rb').read())
"""
CLOSURE_OF = ("[function for function in gc.get_objects() "
              "if getattr(function, '__name__', None) == {name!r} and getattr(function, '__closure__', None)]")
BYPASSES = {
    "rewritten builtins.any": "import builtins\nbuiltins.any = lambda iterable: True\n",
    "rewritten os.path.realpath": "import os.path\nos.path.realpath = lambda path, **options: os.getcwd()\n",
    "hook's __code__ replaced": (
        "import gc\n"
        f"for hook in {CLOSURE_OF.format(name='hook')}:\n"
        "    names = hook.__code__.co_freevars\n"
        "    source = 'def outer():\\n' + ''.join(f'    {name} = None\\n' for name in names)\n"
        "    source += '    def hook(event, args):\\n        ' + ', '.join(names) + '\\n    return hook\\n'\n"
        "    scope = {}\n    exec(source, scope)\n    hook.__code__ = scope['outer']().__code__\n"
    ),
    "hook's closure cells rewritten": (
        "import gc\n"
        "values = {'own_roots': ('',), 'read_roots': ('',), 'may_start_processes': True}  # '' + '/' prefixes all\n"
        f"for function in {CLOSURE_OF.format(name='hook')} + {CLOSURE_OF.format(name='check_path')} "
        f"+ {CLOSURE_OF.format(name='check_open')}:\n"
        "    for name, cell in zip(function.__code__.co_freevars, function.__closure__):\n"
        "        if name in values:\n            cell.cell_contents = values[name]\n"
        "        if name == 'own_pid':\n            cell.cell_contents = EVALUATOR\n"
    ),
    "guard's globals rewritten through frames": (
        "import sys\nframe = sys._getframe()\n"
        "while frame is not None:\n"
        "    if 'make_hook' in frame.f_globals:\n"
        "        frame.f_globals.update(is_under=lambda path, roots: True, PROCESS_EVENTS=frozenset(),\n"
        "                               SIGNAL_EVENTS=frozenset(), PROCESS_MODULES=frozenset())\n"
        "    frame = frame.f_back\n"
    ),
    "sub-interpreter without the hook": (
        "import _xxsubinterpreters as interpreters\n"
        "interpreters.run_string(interpreters.create(), PRELUDE + PAYLOAD)\n"
    ),
}


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory of the host where an escaped program would leave its marks."""
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


@pytest.fixture
def bystander():
    """A process of the evaluating user, outside the sandbox, holding a secret in its environment."""
    secret = f"hunter2-{secrets.token_hex(8)}"
    process = subprocess.Popen(["/usr/bin/sleep", "600"], env={"SANDBOX_TEST_SECRET": secret})
    process.secret = secret
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def evaluator_signals():
    """The SIGUSR1s this process (the evaluator) receives while the test runs."""
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: received.append(number))
    yield received
    signal.signal(signal.SIGUSR1, previous)


def evaluator_environment() -> list[str]:
    """This process's environment as /proc shows it, less what the sandbox gives every program."""
    given = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
    entries = Path(f"/proc/{os.getpid()}/environ").read_bytes().decode(errors="replace").split("\0")
    return [entry for entry in entries if "=" in entry and entry not in given]


def assert_contained(execution, outside, bystander, evaluator_signals, listener=None) -> None:
    assert list(outside.iterdir()) == [], execution.output
    assert bystander.poll() is None, execution.output
    assert evaluator_signals == [], execution.output
    assert bystander.secret not in execution.output
    leaked = [entry for entry in evaluator_environment() if entry in execution.output]
    assert leaked == [], execution.output
    if listener is not None:
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize("bypass", BYPASSES.values(), ids=BYPASSES.keys())
def test_a_program_that_disarms_the_guard_is_still_contained(bypass, outside, bystander, evaluator_signals, listener):
    prelude = (f"OUTSIDE = {str(outside)!r}\nBYSTANDER = {bystander.pid}\nEVALUATOR = {os.getpid()}\n"
               f"PORT = {listener.getsockname()[1]}\n")
    program = prelude + f"PRELUDE = {prelude!r}\nPAYLOAD = {PAYLOAD!r}\n" + bypass + PAYLOAD
    execution = run_program(program, AMPLE)
    assert "environ of the evaluator" in execution.output, execution.output  # the payload ran to its end
    assert_contained(execution, outside, bystander, evaluator_signals, listener)


def test_calls_that_raise_no_audit_event_are_contained(outside, bystander, evaluator_signals):
    """os.mkfifo, os.mknod and signal.pidfd_send_signal pass an audit hook unseen."""
    program = (f"import os, signal\nos.mkfifo({str(outside / 'fifo')!r})\nos.mknod({str(outside / 'node')!r})\n"
               f"signal.pidfd_send_signal(os.pidfd_open({bystander.pid}), signal.SIGKILL)\n"
               f"signal.pidfd_send_signal(os.pidfd_open({os.getpid()}), signal.SIGUSR1)\n")
    execution = run_program(program, AMPLE)
    assert execution.status is Status.FAILED
    assert_contained(execution, outside, bystander, evaluator_signals)


@pytest.fixture
def installed_file():
    """A file of the Python installation (site-packages), which programs may read, removed afterwards."""
    path = Path(sysconfig.get_paths()["purelib"]) / f"lm_eval_infogain_sandbox_probe_{secrets.token_hex(4)}.txt"
    path.write_text("installed")
    path.chmod(0o644)
    yield path
    path.unlink()


def test_a_read_only_descriptor_cannot_change_an_installed_file(installed_file):
    before = installed_file.stat()
    program = (f"import os\ndescriptor = os.open({str(installed_file)!r}, os.O_RDONLY)\n"
               "for change in (lambda: os.fchmod(descriptor, 0o777), lambda: os.utime(descriptor, (0, 0))):\n"
               "    try:\n        change()\n    except OSError as error:\n        print(error)\n")
    run_program(program, AMPLE)
    after = installed_file.stat()
    assert stat.S_IMODE(after.st_mode) == 0o644 and after.st_mtime_ns == before.st_mtime_ns


def test_a_symlink_race_between_threads_writes_nothing_outside(outside):
    """a/link points inside, b/link outside; one thread swaps a and b (plain directories, which a path
    check allows) over and over while the other writes through a/link, checked while it pointed inside."""
    program = ("import os, sys, threading, time\nsys.setswitchinterval(1e-6)\nos.mkdir('a')\nos.mkdir('b')\n"
               "os.symlink(os.path.abspath('inside.txt'), 'a/link')\n"
               f"os.symlink({str(outside / 'raced')!r}, 'b/link')\n"
               "stop = time.monotonic() + 2\n"
               "def swap():\n    while time.monotonic() < stop:\n"
               "        os.rename('a', 'c')\n        os.rename('b', 'a')\n        os.rename('c', 'b')\n"
               "threading.Thread(target=swap).start()\n"
               "while time.monotonic() < stop:\n"
               "    try:\n        open('a/link', 'w').write('escaped')\n    except OSError:\n        pass\n")
    run_program(program, AMPLE)
    assert list(outside.iterdir()) == []


def test_a_program_cannot_make_the_read_only_installation_writable(installed_file):
    """Root inside a user namespace, with its capabilities, could remount a read-only bind writable."""
    program = (f"import os\nos.system('mount -o remount,bind,rw {sys.prefix}; mount -o remount,rw {sys.prefix}; "
               f"chmod 777 {installed_file}')\n")
    run_program(program, Limits(seconds=AMPLE.seconds, processes=4))
    assert stat.S_IMODE(installed_file.stat().st_mode) == 0o644


def unguarded(check: str) -> str:
    """A program that execs a fresh interpreter running `check` without the guard's audit hook: what a
    program that disarmed the guard can do, with only the kernel's walls left."""
    return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-I', '-S', '-c', {check!r}])\n"


def test_the_host_filesystem_is_out_of_sight(outside):
    """No path of the host's checkout, venv, Python or home exists inside, nor shows in the mount table
    (a root evaluator mounts the Python installation as overlays that name no source path)."""
    allowed = {"sandbox", "proc", "dev", "usr", "bin", "lib", "lib32", "lib64", "libx32", "python", "site-packages"}
    check = ("import os\nprint('top:', ' '.join(sorted(os.listdir('/'))))\n"
             f"for path in {[*HOST_PATHS, str(outside), '/home', '/etc', '/root/.ssh']!r}:\n"
             "    try:\n        os.stat(path)\n        print('visible:', path)\n    except OSError:\n        pass\n"
             "lines = open('/proc/self/mountinfo').read().splitlines()\n"
             "print('mounts:', ' '.join(line.split()[3] + ':' + line.split(' - ')[1] for line in lines))\n")
    execution = run_program(unguarded(check), Limits(seconds=AMPLE.seconds, processes=1))
    top = execution.output.split("top:")[1].splitlines()[0].split()
    assert set(top) <= allowed and "visible:" not in execution.output, execution.output
    mounts = execution.output.split("mounts:")[1].split()
    if RUNNING_AS_ROOT:
        leaked = [word for word in mounts for path in HOST_PATHS if path in word]
        assert leaked == [], execution.output


HOST_CHECKS = """
import ctypes, json, os, platform, subprocess
found = {"outer uid": open('/proc/self/uid_map').read().split()[1], "keys": open('/proc/keys').read()}
try:
    open('/proc/sys/kernel/core_pattern', 'w')
    found['core_pattern'] = 'opened for writing'
except OSError as error:
    found['core_pattern'] = type(error).__name__
for directory in ('/', '/dev/shm', '/sandbox'):
    written = 0
    try:
        while written < 100 << 20:  # files of 512 KiB: under the 1 MiB cap on a single file
            with open(f'{directory}/block{written}', 'wb') as block:
                block.write(bytes(512 << 10))
            written += 512 << 10
        found[directory] = 'wrote 100 MiB'
    except OSError as error:
        found[directory] = error.strerror
found['unshare -U'] = subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode
if platform.machine() == 'x86_64':
    libc = ctypes.CDLL(None, use_errno=True)
    numbers = {'keyctl': 250, 'add_key': 248, 'request_key': 249, 'io_uring_setup': 425, 'userfaultfd': 323,
               'ptrace': 101, 'personality': 135, 'bpf': 321, 'perf_event_open': 298}
    for name, number in numbers.items():
        result = libc.syscall(number, 0, 0, 0, 0, 0)
        found[name] = os.strerror(ctypes.get_errno()) if result == -1 else f'returned {result}'
print('FOUND', json.dumps(found))
"""


def test_the_program_is_nobody_on_the_host_with_capped_tmpfs_seccomp_and_no_nested_namespaces():
    execution = run_program(unguarded(HOST_CHECKS), Limits(seconds=AMPLE.seconds, processes=4))
    found = json.loads(execution.output.split("FOUND")[1])
    assert found["outer uid"] != "0" and found["keys"] == "", found
    assert found["core_pattern"] in ("PermissionError", "OSError"), found
    assert found["/"] == "Read-only file system", found
    assert found["/dev/shm"] == found["/sandbox"] == "No space left on device", found
    assert found["unshare -U"] != 0, found
    refused = {name: outcome for name, outcome in found.items() if name in (
        "keyctl", "add_key", "request_key", "io_uring_setup", "userfaultfd", "ptrace", "personality", "bpf",
        "perf_event_open")}
    assert set(refused.values()) <= {"Operation not permitted"}, refused


needs_cgroups = pytest.mark.skipif(not sandbox_module.cgroup_support().parents,
                                   reason=f"cgroups {sandbox_module.cgroup_support().missing}")


@needs_cgroups
def test_each_run_has_its_own_pids_memory_and_cpu_cgroup_which_goes_with_it():
    """While a run's process sleeps, its cgroups are the run's own, in the evaluator's, with the run's
    limits (25 tasks with one process allowed, 1 GiB plus its two 64 MiB tmpfs, one CPU); they are gone
    after the run."""
    token = secrets.token_hex(8)
    limits = Limits(seconds=AMPLE_START, processes=1)
    parents = sandbox_module.cgroup_support().parents
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(run_program, start_sleeper(token) + "import time\ntime.sleep(60)\n", limits)
        deadline = time.monotonic() + AMPLE_START
        while not processes_carrying(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        sleeper = processes_carrying(token)[0]
        own = {controllers: path for line in Path(f"/proc/{sleeper}/cgroup").read_text().splitlines()
               for _, controllers, path in [line.split(":", 2)]}
        run_cgroups = {controller: os.path.join(parent, Path(own[controller]).name)
                       for controller, parent in parents.items()}
        settings = {file: Path(run_cgroups[controller], file).read_text().strip()
                    for controller, file in [("pids", "pids.max"), ("memory", "memory.limit_in_bytes"),
                                             ("cpu", "cpu.cfs_quota_us")]}
        assert running.result().status is Status.TIMED_OUT
    assert settings == {"pids.max": "25", "memory.limit_in_bytes": str((1 << 30) + (128 << 20)),
                        "cpu.cfs_quota_us": "100000"}, settings
    for controller, directory in run_cgroups.items():  # the run's own, in the evaluator's
        assert own[controller].endswith(directory.split(f"/sys/fs/cgroup/{controller}")[1])
        assert Path(directory).name.startswith("lm_eval_infogain_run_")
        assert not os.path.exists(directory)  # removed after the run


@needs_cgroups
def test_memory_is_capped_for_the_run_not_only_per_process():
    """Three children of 250 MB each: each is under its own 512 MiB address space, together they are
    over the run's 640 MiB, so the run's cgroup kills one of them. (Which one is the kernel's choice,
    possibly one that already holds its memory: so count the children alive once all have tried.)"""
    program = ("import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
               "        held = b'x' * (250 << 20)\n        time.sleep(60)\n        os._exit(0)\n"
               "    pids.append(pid)\ntime.sleep(2)\n"
               "print('alive', sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in pids), flush=True)\n"
               "time.sleep(60)\n")
    execution = run_program(program, Limits(seconds=AMPLE_START, memory_bytes=512 << 20, processes=3))
    assert execution.status is not Status.PASSED
    assert "alive " in execution.output and "alive 3" not in execution.output, execution.output


def test_a_program_cannot_raise_its_priority():
    execution = run_program("import os\nos.nice(-10)", AMPLE)
    assert execution.status is Status.FAILED and "PermissionError" in execution.reason


def test_the_run_directory_is_capped_in_size():
    """Files of 512 KiB (under the per-file cap) until the disk cap stops them, or 256 MiB."""
    program = ("total = 0\ntry:\n    for number in range(512):\n"
               "        with open(f'block{number}', 'wb') as block:\n            block.write(bytes(512 << 10))\n"
               "        total += 512 << 10\nfinally:\n    print('written', total, flush=True)\n")
    execution = run_program(program, AMPLE)
    written = int(execution.output.split("written")[1].split()[0])
    assert written <= Limits().disk_bytes and "No space left on device" in execution.output


def test_the_run_directory_is_capped_in_files():
    program = ("count = 0\ntry:\n    for number in range(20_000):\n        open(f'f{number}', 'w').close()\n"
               "        count += 1\nfinally:\n    print('created', count, flush=True)\n")
    execution = run_program(program, AMPLE)
    created = int(execution.output.split("created")[1].split()[0])
    assert created < Limits().files and "No space left on device" in execution.output


# ---------------------------------------------------------------- choosing the sandbox


def test_bubblewrap_is_the_default_and_runs_here(monkeypatch):
    monkeypatch.delenv(UNSAFE_VARIABLE, raising=False)
    assert require_sandbox() is Sandbox.BUBBLEWRAP


def test_without_bwrap_on_path_the_sandbox_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delenv(UNSAFE_VARIABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable) as refusal:
        require_sandbox()
    message = str(refusal.value)
    assert "\n" not in message and "bubblewrap" in message and "apt-get install -y bubblewrap" in message
    assert f"{UNSAFE_VARIABLE}=1" in message


def test_a_bwrap_that_cannot_create_namespaces_is_refused_with_its_reason(monkeypatch):
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)  # a root evaluator starts bwrap as the unprivileged sandbox user
        fake = Path(directory) / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.delenv(UNSAFE_VARIABLE, raising=False)
        monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")
        with pytest.raises(SandboxUnavailable, match="bubblewrap cannot run a program here .bwrap: No permissions"):
            require_sandbox()


def test_the_unsafe_opt_in_uses_the_guard_alone_and_warns(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv(UNSAFE_VARIABLE, "1")
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap needed
    assert require_sandbox() is Sandbox.GUARD_ONLY
    assert "WITHOUT a kernel boundary" in caplog.text
    execution = run_program("import os\nprint(os.getcwd())")
    assert execution.status is Status.PASSED and execution.output.strip() != "/sandbox"


@pytest.mark.parametrize("value", ["yes", "true", "2"])
def test_the_unsafe_opt_in_accepts_only_1(monkeypatch, value):
    monkeypatch.setenv(UNSAFE_VARIABLE, value)
    with pytest.raises(ValueError, match=f"{UNSAFE_VARIABLE}='{value}' is invalid; allowed: 1"):
        run_program("pass")


# ---------------------------------------------------------------- through the stock CLI

# The stock lm_eval CLI with one more model, "scripted": it answers each humaneval document with the
# completion that SCRIPTED_COMPLETIONS (JSON: task_id -> text) names, cut at the request's stop
# sequences as a model's generation is.
SCRIPTED_CLI = """
import json, os, sys
from lm_eval.__main__ import cli_evaluate
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

@register_model("scripted")
class Scripted(LM):
    def __init__(self, **options):
        super().__init__()
        print("scripted model loaded", file=sys.stderr)
        self.completions = json.loads(os.environ.get("SCRIPTED_COMPLETIONS", "{}"))

    def generate_until(self, requests):
        answers = []
        for request in requests:
            text = self.completions[request.doc["task_id"]]
            cuts = [text.index(stop) for stop in request.args[1]["until"] if stop in text]
            answers.append(text[:min(cuts)] if cuts else text)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError

    loglikelihood_rolling = loglikelihood

sys.argv = ["lm_eval", *sys.argv[1:]]
cli_evaluate()
"""


def test_stock_cli_scores_wrong_programs_that_exit_0_as_failed(tmp_path):
    """humaneval_local through `lm_eval` with a scripted model: each early exit appended to a wrong
    completion scores pass@1 0, the right completion 1, and the results JSON records the sandbox."""
    problem = {"prompt": "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n",
               "canonical_solution": "    return a + b\n",
               "test": "def check(candidate):\n    assert candidate(2, 2) == 4\n    assert candidate(-1, 1) == 0\n",
               "entry_point": "add"}
    completions = {"right": "    return a + b\n"}
    for name in ("os._exit(0)", "atexit", "rebound builtins.SystemExit", "a thread exits 0 while the tests run"):
        completions[name] = "    return a - b\n" + EARLY_EXITS[name]
    documents = tmp_path / "humaneval.jsonl"
    documents.write_text("".join(json.dumps({"task_id": task_id, **problem}) + "\n" for task_id in completions))
    command = [sys.executable, "-c", SCRIPTED_CLI, "--model", "scripted", "--tasks", "humaneval_local",
               "--confirm_run_unsafe_code", "--metadata", json.dumps({"humaneval_local_jsonl": str(documents)}),
               "--output_path", str(tmp_path / "out"), "--log_samples"]
    env = {key: value for key, value in os.environ.items() if key != UNSAFE_VARIABLE}
    result = subprocess.run(command, cwd=tmp_path, env={**env, "SCRIPTED_COMPLETIONS": json.dumps(completions)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_humaneval_local_*.jsonl")).open()]
    scores = {sample["doc"]["task_id"]: sample["pass@1"] for sample in samples}
    assert scores == {name: float(name == "right") for name in completions}, scores
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["results"]["humaneval_local"]["pass@1,create_test"] == 1 / len(completions)
    metadata = results["configs"]["humaneval_local"]["metadata"]
    assert metadata["sandbox"] == "bubblewrap"
    assert metadata["sandbox_layers"] == sandbox_module.sandbox_layers(Sandbox.BUBBLEWRAP)
    assert metadata["sandbox_layers"]["host_user"].startswith("uid 65534" if RUNNING_AS_ROOT else f"uid {os.getuid()}")
    assert metadata["sandbox_layers"]["cgroups"].startswith(
        "per run" if sandbox_module.cgroup_support().parents else "not in force")


def test_stock_cli_checks_the_sandbox_before_it_loads_the_model(tmp_path):
    """lm-eval builds the tasks after the model; a code task named on the command line is checked first."""
    env = {key: value for key, value in os.environ.items() if key != UNSAFE_VARIABLE}
    env["PATH"] = str(tmp_path)  # no bwrap (the interpreter is called by its full path)
    documents = Path(__file__).parent / "fixtures" / "humaneval_test.jsonl"
    command = [sys.executable, "-c", SCRIPTED_CLI, "--model", "scripted", "--tasks", "humaneval_local",
               "--confirm_run_unsafe_code", "--metadata", json.dumps({"humaneval_local_jsonl": str(documents)})]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "scripted model loaded" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        "mdm_infogain: code tasks run generated programs inside bubblewrap, but bwrap is not on PATH")
