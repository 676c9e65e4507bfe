"""pass@k for humaneval_local and mbpp_local, with each program run in lm_eval_infogain's sandbox.

lm-eval's humaneval and mbpp score with Hugging Face `evaluate.load("code_eval")`, which downloads the
metric from the hub and runs programs in forked processes of the evaluator. These functions keep the
signatures, the metric names and code_eval's program (candidate, a newline, the tests) and estimator,
and run each program through `sandbox.run_program` (3 s, code_eval's default time limit).

lm-eval scores one document at a time; `run_ahead` (called by the code tasks once their filters ran)
runs every program the metric will ask for side by side, as code_eval runs its own in a thread pool,
and `passes` answers from those outcomes. A program it did not run ahead is run on the spot.
"""

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

from lm_eval_infogain.tasks.sandbox import Status, run_program

logger = logging.getLogger(__name__)
# Programs at once per CPU: a program's start-up waits on the kernel (namespaces, mounts) as much as on
# the CPU; two per CPU ran the fixtures' programs about 1.5x faster than one per CPU on 2 CPUs. As in
# code_eval, programs that share the CPUs each take longer against their wall-clock limit.
PROGRAMS_PER_CPU = 2
# Program text -> passed, for the programs of the latest run_ahead.
outcomes_run_ahead: dict[str, bool] = {}


def estimate_pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased estimator of pass@k: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def program(candidate: str, tests: str) -> str:
    """code_eval's program: the candidate, a newline, the tests."""
    return candidate + "\n" + tests


def program_passes(source: str) -> bool:
    execution = run_program(source)
    if execution.status is not Status.PASSED:
        logger.debug("program %s: %s", execution.status.value, execution.reason)
    return execution.status is Status.PASSED


def run_ahead(programs: list[str]) -> None:
    """Run `programs` side by side and keep their outcomes for `passes` (replacing the previous ones)."""
    unique = list(dict.fromkeys(programs))
    with ThreadPoolExecutor(max_workers=PROGRAMS_PER_CPU * len(os.sched_getaffinity(0))) as pool:
        outcomes = list(pool.map(program_passes, unique))
    outcomes_run_ahead.clear()
    outcomes_run_ahead.update(zip(unique, outcomes))


def passes(candidate: str, tests: str) -> bool:
    source = program(candidate, tests)
    outcome = outcomes_run_ahead.get(source)
    return program_passes(source) if outcome is None else outcome


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int) -> dict[str, float]:
    """humaneval's metric: {"pass@k": mean over problems}, for each k no larger than every problem's sample count."""
    ks = [k] if isinstance(k, int) else list(k)
    correct = [sum(passes(candidate, tests) for candidate in candidates)
               for tests, candidates in zip(references, predictions, strict=True)]
    counts = [len(candidates) for candidates in predictions]
    return {
        f"pass@{one_k}": sum(map(estimate_pass_at_k, counts, correct, [one_k] * len(counts))) / len(counts)
        for one_k in ks
        if all(count >= one_k for count in counts)
    }


def pass_at_1(references: str | list[str], predictions: str | list[str] | list[list[str]]) -> float:
    """mbpp's metric: pass@1 of one program (a string) or of lists of them, as lm-eval's mbpp accepts."""
    references = [references] if isinstance(references, str) else references
    predictions = [[prediction] if isinstance(prediction, str) else prediction for prediction in predictions]
    return pass_at_k(references, predictions, k=1)["pass@1"]


def prompt_plus_completions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """humaneval's `create_test` filter: the completion continues the prompt's function header."""
    return [[doc["prompt"] + response for response in responses] for responses, doc in zip(resps, docs, strict=True)]
