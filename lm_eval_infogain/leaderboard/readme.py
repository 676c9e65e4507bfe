"""The board as markdown: the measured table, the comparisons with `original` in words, the commands."""

import math

from lm_eval_infogain.leaderboard.pairing import BASELINE, mode_of


# Hand-written rather than lm-eval's make_table: that one lays out one results dict, not rows of many runs.
def markdown(board: dict) -> str:
    commands = sorted({row["command"] for row in board["rows"]})
    number = {text: index for index, text in enumerate(commands, 1)}
    lines = ["# Leaderboard", "",
             "Written by `python -m lm_eval_infogain.leaderboard` from the lm-eval results under the runs folder; "
             "rerun it rather than editing this file. Full rows, with every sampler setting: `leaderboard.json`.", "",
             "## Measured", "",
             "| model | task | sampler | metric | value | stderr | n | mean NFE | mean cum. entropy "
             "| lm-eval | date | machine | cmd |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for row in board["rows"]:
        metric = row["metric"] + (f" ({row['filter']})" if row["filter"] and row["filter"] != "none" else "")
        lines.append("| " + " | ".join(cell(value) for value in (
            row["model"], row["task"], row["label"], metric, fmt(row["value"]), fmt(row["stderr"]), fmt(row["n"]),
            fmt(row["mean_nfe"]), fmt(row["mean_cumulative_entropy"]), fmt(row["lm_eval_version"]),
            fmt(row["date"]), row["machine"], number[row["command"]])) + " |")
    if board["retired_metrics"]:
        lines += ["", "Left out, metrics no longer computed: " + "; ".join(
            f"`{metric}` ({reason})" for metric, reason in board["retired_metrics"].items()) + "."]
    if board["duplicates"]:
        lines += ["", "Runs with the same settings and documents (each a row above; the comparisons use the latest): "
                  + "; ".join(f"{item['model']} / {item['task']} / {item['label']}: "
                              f"{', '.join(f'`{path}`' for path in item['results_files'])}, compared: "
                              f"`{item['compared']}`" for item in board["duplicates"]) + "."]
    if board["comparisons"]:
        lines += ["", "## Paired comparisons", "",
                  "Every pair of labels run on one model, task and cache mode and on the same documents (`docs`: a "
                  "digest of their ids and text), document by document from the runs' `--log_samples` files, pairs "
                  f"with confidence order (`{BASELINE}`) first: the mean per-document difference (challenger minus "
                  "baseline), its paired stderr, its paired bootstrap 95% interval, and for 0/1 metrics an exact "
                  "McNemar test (`alone`: documents only one of the two got right).", ""]
        in_words = [f"- {comparison_sentence(item)}" for item in board["comparisons"]
                    if mode_of(item["challenger"]) == "info_gain" and mode_of(item["baseline"]) == BASELINE]
        if in_words:
            lines += [f"Info-Gain against `{BASELINE}` in words:", "", *in_words, ""]
        lines += ["| model | task | metric | cache | docs | challenger | baseline | difference | paired stderr "
                      "| 95% interval | n | test | alone (challenger / baseline) |",
                  "|---|---|---|---|---|---|---|---:|---:|---|---:|---|---:|"]
        for item in board["comparisons"]:
            lines.append("| " + " | ".join(cell(value) for value in (
                item["model"], item["task"], item["metric"], item["use_cache"], fmt(item["documents"]),
                item["challenger"], item["baseline"], fmt(item["difference"], 3), fmt(item["difference_stderr"], 2),
                interval_text(item), fmt(item["n"]), test_cell(item),
                f"{item['challenger_only']} / {item['baseline_only']}" if "challenger_only" in item else "-")) + " |")
    lines += ["", "![metric against mean NFE](leaderboard.png)", "", "## Commands", ""]
    for text in commands:
        lines += [f"{number[text]}.", "", "```bash", text, "```", ""]
    if board["reference_rows"]:
        lines += ["## Published (reference, not measured here)", "",
                  "| model | task | sampler | metric | value | NFE | source | note |", "|---|---|---|---|---:|---:|---|---|"]
        for row in board["reference_rows"]:
            lines.append("| " + " | ".join(cell(value) for value in (
                row["model"], row["task"], row["sampler"], row["metric"], fmt(row["value"]), fmt(row["nfe"]),
                row["source"], fmt(row["note"]))) + " |")
        lines.append("")
    return "\n".join(lines)


def comparison_sentence(item: dict) -> str:
    """One plain line, e.g. "tiny / sudoku_4x4, acc (use_cache=none): info_gain 0.5 is **above** original
    0.47 by 0.03 on the same 100 documents (paired stderr 0.024; exact McNemar p = 0.37: info_gain alone
    right on 8, original alone on 5); mean cumulative entropy 2.69 vs 2.75"."""
    where = f"{item['model']} / {item['task']}, {item['metric']}"
    where += f" {item['filter']}" if item["filter"] and item["filter"] != "none" else ""
    head = (f"{where} (use_cache={item['use_cache']}): {item['challenger']} {fmt(item['challenger_value'])} is "
            f"**{item['verdict']}** {item['baseline']} {fmt(item['baseline_value'])}")
    if item["verdict"] != "equal":
        head += f" by {fmt(abs(item['difference']))}"
    return head + f" {evidence(item)}; mean cumulative entropy {fmt(item['challenger_cumulative_entropy'])} vs " \
                  f"{fmt(item['baseline_cumulative_entropy'])}"


def evidence(item: dict) -> str:
    """The statistics behind a verdict, in words."""
    stderr = "no stderr" if item["difference_stderr"] is None else f"stderr {fmt(item['difference_stderr'], 2)}"
    if not item["paired"]:
        return f"({stderr} of the difference, the runs treated as independent: no samples logged)"
    text = (f"on the same {item['n']} documents (digest {item['documents']}; paired {stderr}, paired bootstrap "
            f"95% interval of the difference {interval_text(item)}")
    if item["test"] == "exact McNemar":
        return text + (f"; exact McNemar p = {fmt(item['p_value'], 2)}: {item['challenger']} alone right on "
                       f"{item['challenger_only']}, {item['baseline']} alone on {item['baseline_only']})")
    return text + ")"


def interval_text(item: dict) -> str:
    return "-" if item.get("ci95") is None else f"[{fmt(item['ci95'][0], 3)}, {fmt(item['ci95'][1], 3)}]"


def test_cell(item: dict) -> str:
    if not item["paired"]:
        return "unpaired (no samples logged)"
    if item["test"] == "exact McNemar":
        return f"McNemar p = {fmt(item['p_value'], 2)}"
    return "paired bootstrap"


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def cell(text) -> str:
    return str(text).replace("|", "\\|")
