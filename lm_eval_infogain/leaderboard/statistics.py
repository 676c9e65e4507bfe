"""Paired statistics of two runs scored on the same documents: the mean per-document difference and its
standard error, an exact McNemar test for 0/1 metrics, a 95% paired bootstrap interval otherwise.

    from lm_eval_infogain.leaderboard.statistics import paired_statistics
    paired_statistics(challenger, baseline, doc_ids)  # two [n] arrays of per-document scores
"""

import math

import numpy
from scipy import stats


def paired_statistics(challenger, baseline, doc_ids: list) -> dict:
    """Mean per-document difference with its standard error; an exact McNemar test (a two-sided binomial
    test on the discordant documents) for 0/1 metrics, a 95% paired bootstrap interval otherwise."""
    difference = challenger - baseline  # [n]
    n = len(difference)
    result = {"difference": float(difference.mean()), "verdict": verdict(float(difference.mean())),
              "difference_stderr": float(difference.std(ddof=1) / math.sqrt(n)) if n > 1 else None}
    if set(challenger.tolist()) | set(baseline.tolist()) <= {0.0, 1.0}:
        only_challenger, only_baseline = int((difference > 0).sum()), int((difference < 0).sum())
        discordant = only_challenger + only_baseline
        return result | {
            "test": "exact McNemar", "challenger_only": only_challenger, "baseline_only": only_baseline,
            "p_value": stats.binomtest(only_challenger, discordant).pvalue if discordant else 1.0,
            "discordant_doc_ids": [doc for doc, d in zip(doc_ids, difference) if d != 0]}
    interval = None
    if n > 1 and difference.std() > 0:
        bootstrap = stats.bootstrap((challenger, baseline), lambda a, b, axis: numpy.mean(a - b, axis=axis),
                                    paired=True, vectorized=True, method="percentile", n_resamples=9999,
                                    rng=numpy.random.default_rng(0))  # fixed: same input, same bytes
        interval = [float(bootstrap.confidence_interval.low), float(bootstrap.confidence_interval.high)]
    elif n > 1:
        interval = [result["difference"], result["difference"]]
    return result | {"test": "paired bootstrap", "ci95": interval,
                     "differing_documents": int((difference != 0).sum())}


def verdict(difference: float) -> str:
    return "above" if difference > 0 else "below" if difference < 0 else "equal"
