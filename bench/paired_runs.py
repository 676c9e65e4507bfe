"""Two lm-eval runs of one task, compared document by document: a sampler option's price in accuracy and forwards.

    python bench/paired_runs.py results/runs-lookahead/tiny-llada-sudoku/sudoku_4x4/rest \
        results/runs-lookahead/tiny-llada-sudoku/sudoku_4x4/block

Each folder is an lm-eval --output_path run made with --log_samples and decode_stats. Prints, per metric,
each run's value, mean NFE and mean tokens forwarded (from its decode stats), and the second run minus the
first on the documents both scored: the mean difference, its paired standard error, the normal 95%
interval (difference +- 1.96 stderr) and, for 0/1 metrics, the exact McNemar test (lm_eval_infogain.leaderboard
computes them, as for the leaderboard).
"""

import argparse
from pathlib import Path

import numpy

from lm_eval_infogain.leaderboard.files import find_results
from lm_eval_infogain.leaderboard.pairing import document_values
from lm_eval_infogain.leaderboard.runs import rows_of_run
from lm_eval_infogain.leaderboard.statistics import paired_statistics


def run_rows(folder: Path) -> dict:
    """{(task, metric, filter): the leaderboard's row} of the one run in `folder`."""
    found = find_results([folder])
    if len(found) != 1:
        raise SystemExit(f"{folder} holds {len(found)} results files; expected one run")
    return {(row["task"], row["metric"], row["filter"]): row for row in rows_of_run(*found[0])}


def compare(first: Path, second: Path) -> list[dict]:
    firsts, seconds = run_rows(first), run_rows(second)
    comparisons = []
    for key in sorted(firsts.keys() & seconds.keys(), key=str):
        documents = [document_values(folder / rows[key]["samples_file"], key[1], key[2])
                     for folder, rows in ((first, firsts), (second, seconds))]
        shared = sorted(documents[0].keys() & documents[1].keys(), key=str)
        values = [numpy.array([docs[doc] for doc in shared]) for docs in documents]  # 2 x [n]
        if len(shared) < 2:
            raise SystemExit(f"{key[0]} {key[1]}: {len(shared)} document(s) in both runs; a paired interval needs 2")
        statistics = paired_statistics(values[1], values[0], [doc[0] for doc in shared])
        half_width = 1.96 * statistics["difference_stderr"]
        comparisons.append({"task": key[0], "metric": key[1], "n": len(shared), "runs": [firsts[key], seconds[key]],
                            **statistics, "interval95": [statistics["difference"] - half_width,
                                                         statistics["difference"] + half_width]})
    return comparisons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path, help="the reference run's --output_path")
    parser.add_argument("second", type=Path, help="the run compared with it")
    args = parser.parse_args(argv)
    for item in compare(args.first, args.second):
        print(f"{item['task']} {item['metric']}, {item['n']} documents in both runs")
        for folder, row in zip((args.first, args.second), item["runs"]):
            print(f"  {folder}: {row['value']:.4f}, mean NFE {row['mean_nfe']:.2f}, "
                  f"mean tokens forwarded {row['mean_tokens_forwarded']:.1f}")
        low, high = item["interval95"]
        line = (f"  second - first: {item['difference']:+.4f}, paired stderr {item['difference_stderr']:.4f}, "
                f"95% interval [{low:+.4f}, {high:+.4f}]")
        if item["test"] == "exact McNemar":
            line += (f"; exact McNemar p = {item['p_value']:.3g} (second alone right on {item['challenger_only']}, "
                     f"first alone on {item['baseline_only']})")
        print(line)


if __name__ == "__main__":
    main()
