"""pass@k for humaneval_local and mbpp_local, with each program run in lm_eval_infogain's sandbox.

lm-eval's humaneval and mbpp score with Hugging Face `evaluate.load("code_eval")`, which downloads the
metric from the hub and runs programs in forked processes of the evaluator. These functions keep the
signatures, the metric names and code_eval's program (candidate, a newline, the tests) and estimator,
and run each program through `sandbox.run_program` (3 s, code_eval's default time limit).
"""

import logging
import math

from lm_eval_infogain.tasks.sandbox import Status, run_program

logger = logging.getLogger(__name__)


def estimate_pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased estimator of pass@k: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def passes(candidate: str, tests: str) -> bool:
    execution = run_program(candidate + "\n" + tests)
    if execution.status is not Status.PASSED:
        logger.debug("program %s: %s", execution.status.value, execution.reason)
    return execution.status is Status.PASSED


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
