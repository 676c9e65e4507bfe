"""Which runs are compared (every pair of labels on the same documents) and the numbers of each pair."""

import math
from pathlib import Path

import numpy

from lm_eval_infogain.leaderboard.files import read_jsonl
from lm_eval_infogain.leaderboard.runs import number_or_none
from lm_eval_infogain.leaderboard.statistics import paired_statistics, verdict


BASELINE = "original"  # confidence order: the sampler every other one is compared with first


def compare(rows: list[dict], documents: list, baseline: str = BASELINE) -> list[dict]:
    """Every pair of labels run on one model, task, metric, filter and cache mode and on the same documents
    (digest), compared document by document (`documents` [per row]: {doc key: value} from its samples file,
    or None). Pairs with the `baseline` mode come first in each cell."""
    comparisons = []
    for (model, task, metric, filter_name, cache, docs), runs in sorted(latest_runs(rows, documents).items(),
                                                                         key=lambda item: str(item[0])):
        names = sorted(runs)
        pairs = {ordered_pair(a, b, baseline) for i, a in enumerate(names) for b in names[i + 1:]}
        for challenger, other in sorted(pairs, key=lambda pair: (mode_of(pair[1]) != baseline, pair)):
            (ours, our_docs), (theirs, their_docs) = runs[challenger], runs[other]
            comparisons.append({
                "model": model, "task": task, "metric": metric, "filter": filter_name, "use_cache": cache,
                "documents": docs, "challenger": challenger, "baseline": other,
                "challenger_results_file": ours["results_file"], "baseline_results_file": theirs["results_file"],
                "challenger_value": ours["value"],
                "baseline_value": theirs["value"],
                **difference_statistics(ours, theirs, our_docs, their_docs),
                "challenger_cumulative_entropy": ours["mean_cumulative_entropy"],
                "baseline_cumulative_entropy": theirs["mean_cumulative_entropy"],
            })
    return comparisons


def latest_runs(rows: list[dict], documents: list) -> dict:
    """{(model, task, metric, filter, cache, docs): {name: (row, documents)}}: the runs of one cell scored the
    same documents (equal digests); a name is the label without the cache mode; of runs with one label (the
    same settings) the latest."""
    cells = {}
    for row, values in zip(rows, documents):  # sorted by date within a label, so the last one wins
        mode, _, cache = row["sampler"].partition("/")
        name = " ".join(filter(None, (mode, row["named_settings"])))
        key = (row["model"], row["task"], row["metric"], row["filter"], cache, row["documents"])
        cells.setdefault(key, {})[name] = (row, values)
    return cells


def mode_of(name: str) -> str:
    return name.split(" ")[0]


def ordered_pair(first: str, second: str, baseline: str) -> tuple[str, str]:
    """The pair's challenger and baseline: the `baseline` mode second when it is one of them, else by name."""
    if mode_of(first) == baseline or (mode_of(second) != baseline and first > second):
        return second, first
    return first, second


def difference_statistics(ours: dict, theirs: dict, our_docs, their_docs) -> dict:
    """Paired over the documents both runs scored when their samples were logged; else the two runs'
    own stderrs, treated as independent (sqrt(se1^2 + se2^2))."""
    shared = sorted(our_docs.keys() & their_docs.keys(), key=str) if our_docs and their_docs else []
    if not shared:
        difference = ours["value"] - theirs["value"]
        errors = (ours["stderr"], theirs["stderr"])
        return {"paired": False, "n": None, "difference": difference,
                "difference_stderr": math.hypot(*errors) if None not in errors else None,
                "verdict": verdict(difference)}
    challenger = numpy.array([our_docs[key] for key in shared])  # [n]
    baseline = numpy.array([their_docs[key] for key in shared])  # [n]
    return {"paired": True, "n": len(shared), **paired_statistics(challenger, baseline, [key[0] for key in shared])}


def document_values(path: Path, metric: str, filter_name: str | None) -> dict[tuple, float]:
    """{(doc_id, doc_hash): value} of one metric and filter from a samples file."""
    values = {}
    for sample in read_jsonl(path):
        value = sample.get(metric)
        if sample.get("filter", "none") == (filter_name or "none") and number_or_none(value) is not None:
            values[(sample.get("doc_id"), sample.get("doc_hash"))] = float(value)
    return values
