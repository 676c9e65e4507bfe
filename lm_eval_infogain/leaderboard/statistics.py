"""Paired statistics of two runs scored on the same documents: the mean per-document difference, its
standard error and its 95% paired bootstrap interval, and an exact McNemar test for 0/1 metrics.

    from lm_eval_infogain.leaderboard.statistics import paired_statistics
    paired_statistics(challenger, baseline, doc_ids)  # two [n] arrays of per-document scores
"""

import math

import numpy
from scipy import stats


def paired_statistics(challenger, baseline, doc_ids: list) -> dict:
    """Mean per-document difference with its standard error and a 95% paired bootstrap interval; for 0/1
    metrics also an exact McNemar test (a two-sided binomial test on the discordant documents)."""
    difference = challenger - baseline  # [n]
    n = len(difference)
    result = {"difference": float(difference.mean()), "verdict": verdict(float(difference.mean())),
              "difference_stderr": float(difference.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
              "ci95": paired_bootstrap_interval(challenger, baseline)}
    if set(challenger.tolist()) | set(baseline.tolist()) <= {0.0, 1.0}:
        only_challenger, only_baseline = int((difference > 0).sum()), int((difference < 0).sum())
        discordant = only_challenger + only_baseline
        return result | {
            "test": "exact McNemar", "challenger_only": only_challenger, "baseline_only": only_baseline,
            "p_value": stats.binomtest(only_challenger, discordant).pvalue if discordant else 1.0,
            "discordant_doc_ids": [doc for doc, d in zip(doc_ids, difference) if d != 0]}
    return result | {"test": "paired bootstrap", "differing_documents": int((difference != 0).sum())}


def paired_bootstrap_interval(challenger, baseline) -> list[float] | None:
    """95% percentile interval of the mean per-document difference, resampling documents (pairs) together;
    None for fewer than 2 documents."""
    difference = challenger - baseline  # [n]
    if len(difference) < 2:
        return None
    if difference.std() == 0:  # every resample has the same mean
        return [float(difference.mean())] * 2
    bootstrap = stats.bootstrap((challenger, baseline), lambda a, b, axis: numpy.mean(a - b, axis=axis),
                                paired=True, vectorized=True, method="percentile", n_resamples=9999,
                                rng=numpy.random.default_rng(0))  # fixed: same input, same bytes
    return [float(bootstrap.confidence_interval.low), float(bootstrap.confidence_interval.high)]


def verdict(difference: float) -> str:
    return "above" if difference > 0 else "below" if difference < 0 else "equal"
