"""Run cells of the exact-model grid (launch/oracle_grid.sh) in one process.

    python -m lm_eval_infogain.oracle_grid < cells     # one cell a line: the arguments of a stock `lm_eval` run
    python -m lm_eval_infogain.oracle_grid --corpus sudoku_4x4_many > corpus.txt

Each cell is run by lm-eval's own CLI code (HarnessCLI: the same parsing, simple_evaluate call and results
and samples files as `lm_eval <arguments>`), one after the other in this process. What that saves is what
every stock run repeats: lm-eval's imports, its index of the task folders and the environment report it
writes into each results file, which together take longer than an exact model's cell on a loaded 2-core
machine; the index and the report are made once (neither changes between cells). A cell's table goes nowhere (its files hold it); its command line and time go to stderr. The
process computes on one thread (see run_cells); outputs do not depend on it.

--corpus writes a task's documents (each prompt, then its target, one after the other) as the text that
`python -m lm_eval_infogain.pc_baseline` counts for pc_sampler's token-frequency table.
"""

import argparse
import contextlib
import functools
import os
import shlex
import sys
import time

from lm_eval_infogain.errors import UsageError

CORPUS_TASKS = ("sudoku_4x4_many", "oracle_hmm")


def build_task_index_once() -> None:
    """Make lm-eval's TaskIndex.build return the index it built first for the same folders (a copy)."""
    from lm_eval.tasks._index import TaskIndex

    build, built = TaskIndex.build, {}

    def build_once(paths, *, resolve_includes=True):
        paths = list(paths)
        key = (tuple(str(path) for path in paths), resolve_includes)
        if key not in built:
            built[key] = build(paths, resolve_includes=resolve_includes)
        return dict(built[key])

    TaskIndex.build = staticmethod(build_once)


def collect_environment_once() -> None:
    """Make torch's environment report (what lm-eval writes into every results file: it runs `pip list`
    and more, seconds each time) the one collected first: the environment does not change between cells."""
    from torch.utils import collect_env

    collect_env.get_pretty_env_info = functools.cache(collect_env.get_pretty_env_info)


def run_cell(arguments: list[str]) -> None:
    """`lm_eval <arguments>` in this process (the CLI's `run` command), its printout dropped."""
    from lm_eval._cli import HarnessCLI

    cli = HarnessCLI()
    argv = sys.argv
    sys.argv = ["lm_eval", "run", *arguments]
    try:
        args = cli.parse_args()
    finally:
        sys.argv = argv
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        cli.execute(args)


def run_cells(lines) -> None:
    import torch
    from lm_eval.utils import setup_logging

    # One thread: an exact model's tensors are small, and on a busy machine a second thread waits more than
    # it works (a 24-step sudoku decode of 100 puzzles: 0.8 s with one, 5.1 s with two, under load 8 on
    # 2 cores); launch/oracle_grid.sh runs one process per oracle side by side instead.
    torch.set_num_threads(1)
    setup_logging()
    build_task_index_once()
    collect_environment_once()
    for line in lines:
        arguments = shlex.split(line)
        if not arguments:
            continue
        print(f"lm_eval {shlex.join(arguments)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        run_cell(arguments)
        print(f"# {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def corpus(task: str) -> str:
    """A task's documents as text: each prompt, then its target (see the module docstring)."""
    if task == "sudoku_4x4_many":
        from lm_eval_infogain.tasks import sudoku as module

        docs = module.load_many_solution_dataset()["test"]
    elif task == "oracle_hmm":
        from lm_eval_infogain.tasks import oracle_hmm as module

        docs = module.load_dataset()["test"]
    else:
        raise UsageError(f"--corpus {task!r} is invalid; allowed: {' | '.join(CORPUS_TASKS)}")
    return "".join(f"{module.doc_to_text(doc)}{module.doc_to_target(doc)}\n" for doc in docs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lm_eval_infogain.oracle_grid",
                                     description="Run exact-model grid cells (stock lm_eval arguments, one "
                                                 "cell a line on stdin) in one process.")
    parser.add_argument("--corpus", metavar="TASK", help=f"print a task's documents instead ({', '.join(CORPUS_TASKS)})")
    args = parser.parse_args(argv)
    try:
        if args.corpus:
            sys.stdout.write(corpus(args.corpus))
        else:
            run_cells(sys.stdin)
    except UsageError as error:
        parser.exit(2, f"oracle_grid: {error}\n")


if __name__ == "__main__":
    main()
