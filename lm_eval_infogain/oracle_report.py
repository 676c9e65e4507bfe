"""The report of the exact-model grid (launch/oracle_grid.sh): per oracle, tokens per step and noise, each
sampler's metrics and exact diagnostics, and paired comparisons document by document.

    python -m lm_eval_infogain.oracle_report results/runs-oracle [--chart results/oracle.png]

Runs are read from <runs>/<oracle>/<sampler>/t<tokens per step>-noise<sigma>/ (t0: a sampler that chooses
its own steps). The printed markdown is what results/oracle.md holds between its report markers. Paired
statistics are the leaderboard's (exact McNemar for 0/1 metrics, a 95% paired bootstrap interval otherwise).
"""

import argparse
import json
import re
import statistics
from pathlib import Path

import numpy

from lm_eval_infogain.leaderboard.files import samples_file
from lm_eval_infogain.leaderboard.pairing import document_values
from lm_eval_infogain.leaderboard.statistics import paired_statistics

# the metrics compared per oracle: (name, higher is better)
METRICS = {"sudoku": (("acc", True),), "hmm": (("log_prob", True), ("is_map", True), ("map_gap", False))}
CHART_METRIC = {"sudoku": "acc", "hmm": "map_gap"}  # bars from 0: accuracy, and the distance to the MAP
BASELINES = ("original", "info_gain")  # every other sampler is compared with each (original with info_gain once)
CELL = re.compile(r"t(?P<tokens>\d+)-noise(?P<noise>[0-9.]+)")


def read_runs(root: Path) -> list[dict]:
    """One row per run: oracle, sampler, tokens per step, noise, task, per-document values per metric,
    and the means of the decode stats' NFE and exact diagnostics."""
    runs = []
    for results_path in sorted(root.glob("*/*/*/*/results_*.json")):
        oracle, sampler, cell = results_path.relative_to(root).parts[:3]
        match = CELL.fullmatch(cell)
        data = json.loads(results_path.read_text())
        task = next(iter(data["results"]))
        samples = samples_file(results_path, task)
        stats = data["config"]["decode_stats_per_request"]
        runs.append({
            "oracle": oracle, "sampler": sampler, "tokens": int(match["tokens"]), "noise": float(match["noise"]),
            "task": task, "documents": {metric: document_values(samples, metric, None)
                                        for metric, _ in METRICS[oracle]},
            "nfe": statistics.mean(row["nfe"] for row in stats),
            "contradictions": statistics.mean(row["exact_contradictions"] for row in stats),
            "joint_kl": statistics.mean(row["exact_joint_kl"] for row in stats),
        })
    return runs


def tokens_label(tokens: int) -> str:
    return "dynamic" if tokens == 0 else str(tokens)


def comparisons(runs: list[dict]) -> list[dict]:
    """Every sampler against each baseline run with the same oracle and noise (and tokens per step, or the
    baseline's 2 tokens per step for a sampler that chooses its own steps), per metric, paired."""
    found = []
    for index, name in enumerate(BASELINES):
        baselines = {(run["oracle"], run["noise"], run["tokens"]): run for run in runs if run["sampler"] == name}
        for run in runs:
            baseline = baselines.get((run["oracle"], run["noise"], run["tokens"] or 2))
            if run["sampler"] in BASELINES[:index + 1] or baseline is None:
                continue
            for metric, _ in METRICS[run["oracle"]]:
                ours, theirs = run["documents"][metric], baseline["documents"][metric]
                shared = sorted(ours.keys() & theirs.keys(), key=str)
                result = paired_statistics(numpy.array([ours[key] for key in shared]),
                                           numpy.array([theirs[key] for key in shared]), [key[0] for key in shared])
                found.append({"run": run, "baseline": baseline, "metric": metric, "n": len(shared), **result})
    return found


def fmt(value: float) -> str:
    return f"{value:.3f}"


def evidence(item: dict) -> str:
    if item["test"] == "exact McNemar":
        return (f"McNemar p={item['p_value']:.3g} ({item['challenger_only']} vs {item['baseline_only']} "
                "discordant documents)")
    low, high = item["ci95"]
    return f"95% bootstrap [{fmt(low)}, {fmt(high)}]"


def markdown(runs: list[dict]) -> str:
    lines = []
    for oracle in sorted({run["oracle"] for run in runs}, reverse=True):
        of_oracle = sorted((run for run in runs if run["oracle"] == oracle),
                           key=lambda run: (run["noise"], run["tokens"] or 99, run["sampler"]))
        metrics = [metric for metric, _ in METRICS[oracle]]
        lines += [f"### {of_oracle[0]['task']} (oracle-{oracle})", "",
                  "| noise | tokens/step | sampler | documents | " + " | ".join(metrics)
                  + " | mean NFE | contradictions | joint-vs-product KL |",
                  "|---" * (7 + len(metrics)) + "|"]
        for run in of_oracle:
            values = [fmt(statistics.mean(run["documents"][metric].values())) for metric in metrics]
            lines.append(f"| {run['noise']:g} | {tokens_label(run['tokens'])} | {run['sampler']} | "
                         f"{len(run['documents'][metrics[0]])} | " + " | ".join(values)
                         + f" | {run['nfe']:.2f} | {fmt(run['contradictions'])} | {fmt(run['joint_kl'])} |")
        lines.append("")
        lines += ["| noise | tokens/step | sampler - baseline | documents | metric | difference (paired stderr) | test |",
                  "|---|---|---|---|---|---|---|"]
        for item in comparisons(of_oracle):
            run = item["run"]
            stderr = "" if item["difference_stderr"] is None else f" ({fmt(item['difference_stderr'])})"
            lines.append(f"| {run['noise']:g} | {tokens_label(run['tokens'])} | {run['sampler']} - "
                         f"{item['baseline']['sampler']} | {item['n']} | {item['metric']} | "
                         f"{item['difference']:+.3f}{stderr} | {evidence(item)} |")
        lines.append("")
    return "\n".join(lines)


def chart(runs: list[dict], path: Path) -> None:
    """Per oracle, its CHART_METRIC per sampler, one group of bars per (noise, tokens per step)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    oracles = sorted({run["oracle"] for run in runs}, reverse=True)
    # one row per oracle, wide enough for a group of bars per (noise, tokens per step) and their labels
    figure, axes = pyplot.subplots(len(oracles), 1, figsize=(16, 4.5 * len(oracles)), squeeze=False)
    for axis, oracle in zip(axes[:, 0], oracles):
        metric = CHART_METRIC[oracle]
        of_oracle = [run for run in runs if run["oracle"] == oracle]
        groups = sorted({(run["noise"], run["tokens"]) for run in of_oracle}, key=lambda g: (g[0], g[1] or 99))
        samplers = sorted({run["sampler"] for run in of_oracle})
        width = 0.8 / len(samplers)
        for index, sampler in enumerate(samplers):
            values = {(run["noise"], run["tokens"]): statistics.mean(run["documents"][metric].values())
                      for run in of_oracle if run["sampler"] == sampler}
            xs = [g for g, group in enumerate(groups) if group in values]
            axis.bar([x + index * width for x in xs], [values[groups[x]] for x in xs], width, label=sampler)
        axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))],
                        [f"noise {noise:g}\n{tokens_label(tokens)} tok/step" for noise, tokens in groups])
        axis.set_ylabel(metric)
        axis.set_title(f"oracle-{oracle} ({of_oracle[0]['task']})")
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not over them
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--chart", type=Path, help="also draw the chart (PNG) here")
    args = parser.parse_args(argv)
    runs = read_runs(args.runs)
    print(markdown(runs))
    if args.chart:
        chart(runs, args.chart)


if __name__ == "__main__":
    main()
