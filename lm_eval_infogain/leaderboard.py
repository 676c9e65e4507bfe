"""One table of every lm-eval run under a folder: leaderboard.json, a markdown README and a chart.

    python -m lm_eval_infogain.leaderboard results/runs/ -o results/ [--reference results/reference/paper.json]

Input: lm-eval `--output_path` folders, searched recursively for `results_*.json`. Each metric of each
task of each results file gives one row: model, task, sampler (`mode/use_cache`, `lookum` for
Info-Gain's LookUM variant), metric and filter, value, stderr, n (samples evaluated), the lm-eval
command that reproduces it (rebuilt from the file's `config`), the lm-eval and package versions, the
run's date and machine (from lm-eval's `pretty_env_info`: the GPU models, else the CPU model).

Decode stats (mean NFE, mean cumulative entropy, mean tokens forwarded, mean seconds per request) come
from the per-request JSONL of the `decode_stats=<file>` model arg, found in this order:
1. the file named in the results' `config.model_args.decode_stats` (and its `.rank<N>` siblings under
   `accelerate launch`), as written, or relative to the run's output_path;
2. else any `decode_stats*.jsonl` (and `.rank<N>`) next to the results file or in its output_path
   (the folder given to `--output_path`, one above the results file);
3. else the results' `config.decode_stats_mean` (under `accelerate launch`, only the first process's
   share of the requests).
Only the JSONL lines of the row's task count; a request logged twice (a rerun appending to the same
file) counts once, its last line. `decode_stats_source` says which of the three a row used.

Reference rows (published numbers, never measured here) come from `--reference` JSON files, by default
every `*.json` in `<output>/reference/`, each `{"source": "...", "rows": [{"model", "task", "sampler",
"metric", "value", optional "nfe", "note"}]}`. They are kept apart: `reference_rows` in the JSON, their
own table in the README, hollow markers in the chart.

Output (same input, same bytes): `leaderboard.json`, `README.md` and `leaderboard.png` (metric against
mean NFE, one panel per task and metric, one colour per sampler) in the output folder.

Info-Gain against confidence order: for every model, task, metric and cache mode measured with both
`info_gain` and `original`, `comparisons` in the JSON and a README section say in words whether
Info-Gain's value is above, equal to or below original's, with the difference's standard error
sqrt(se_info_gain^2 + se_original^2) (the runs' own stderrs, treated as independent) and both mean
cumulative entropies.
"""

import argparse
import json
import math
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_SEEDS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
STAT_KEYS = ("nfe", "cumulative_entropy", "tokens_forwarded", "seconds")
NOT_METRICS = {"alias", "name", "sample_len", " "}
# Keys lm-eval itself puts in a task's recorded metadata (besides the model_args it merges in).
LM_EVAL_METADATA_KEYS = {"version", "config_source"}


# Metrics that older runs under a runs folder may hold but that no task computes any more, with the reason:
# their rows are left out of the board, which names them.
RETIRED_METRICS = {
    "acc_last_step_equals_target": "countdown's former 'lenient rule', which disagreed with the paper's checker; "
                                   "acc_paper_rule replaces it: rerun the run to measure it",
}


class LeaderboardError(Exception):
    """A problem with the input that stops the run; printed as one line."""


def find_results(folders: list[Path]) -> list[tuple[Path, Path]]:
    """(folder, results file) for every results_*.json under the folders, in sorted order."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            raise LeaderboardError(f"{folder} is not a folder")
        found += [(folder, path) for path in sorted(folder.rglob("results_*.json"))]
    if not found:
        raise LeaderboardError(f"no results_*.json under {', '.join(map(str, folders))} "
                               "(run lm_eval with --output_path there first)")
    return found


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LeaderboardError(f"cannot read {path}: {error}") from error


def model_args_dict(model_args) -> dict:
    """lm-eval 0.4.13 records model_args as a dict; older versions and the Python API as a string."""
    if isinstance(model_args, dict):
        return model_args
    pairs = [item.split("=", 1) for item in (model_args or "").split(",") if "=" in item]
    return {key.strip(): value.strip() for key, value in pairs}


def with_ranks(path: Path) -> list[Path]:
    """The file itself and the per-process files `<name>.rank<N>` that accelerate launch writes."""
    return sorted(p for p in [path, *path.parent.glob(path.name + ".rank*")] if p.is_file())


def decode_stats_files(results_path: Path, config: dict) -> tuple[list[Path], str]:
    output_path = results_path.parent.parent
    named = model_args_dict(config.get("model_args")).get("decode_stats")
    if named:
        for candidate in (Path(named), output_path / named, output_path / Path(named).name):
            if with_ranks(candidate):
                return with_ranks(candidate), "model_args"
    for folder in (results_path.parent, output_path):
        files = sorted(set(folder.glob("decode_stats*.jsonl")) | set(folder.glob("decode_stats*.jsonl.rank*")))
        if files:
            return files, "next_to_results"
    return [], ""


def read_decode_stats(files: list[Path], task: str) -> list[dict]:
    """The task's per-request lines, one per (doc_id, idx, repeat): the last one logged."""
    requests = {}
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise LeaderboardError(f"{path}:{number} is not JSON: {error}") from error
            if row.get("task") == task:
                requests[(row.get("doc_id"), row.get("idx"), row.get("repeat"))] = row
    return list(requests.values())


def decode_summary(results_path: Path, root: Path, config: dict, task: str) -> dict:
    files, how = decode_stats_files(results_path, config)
    requests = read_decode_stats(files, task) if files else []
    if requests:
        means = {key: sum(row[key] for row in requests) / len(requests) for key in STAT_KEYS}
        source = ", ".join(relative(path, root) for path in files)
        return {"requests": len(requests), **means, "source": f"{how}: {source}"}
    means = (config.get("decode_stats_mean") or {}).get(task)
    if means:
        return {"requests": means.get("requests"), **{key: means.get(key) for key in STAT_KEYS},
                "source": "config.decode_stats_mean"}
    return {"requests": None, **{key: None for key in STAT_KEYS}, "source": None}


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def sampler_label(config: dict) -> str:
    sampler = config.get("sampler")
    if not isinstance(sampler, dict):  # another backend: its model type is all we know
        return str(config.get("model"))
    mode = "lookum" if sampler.get("mode") == "info_gain" and sampler.get("variant") == "lookum" else sampler["mode"]
    return f"{mode}/{sampler.get('use_cache')}"


def format_value(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cli_metadata(data: dict, task: str) -> dict:
    """What `--metadata` gave the task: lm-eval records it merged with the model_args and the YAML's version."""
    metadata = data.get("configs", {}).get(task, {}).get("metadata") or {}
    model_args = model_args_dict(data.get("config", {}).get("model_args"))
    return {key: value for key, value in metadata.items() if key not in model_args.keys() | LM_EVAL_METADATA_KEYS}


def command(data: dict, task: str, results_path: Path) -> str:
    """The lm_eval command line that reproduces a task of a results file, from what lm-eval recorded."""
    config = data.get("config", {})
    model_args = config.get("model_args")
    if isinstance(model_args, dict):
        model_args = ",".join(f"{key}={format_value(value)}" for key, value in model_args.items())
    parts = ["lm_eval", "--model", str(config.get("model")), "--model_args", model_args or "", "--tasks", task]
    metadata = cli_metadata(data, task)
    if metadata:
        parts += ["--metadata", json.dumps(metadata)]
    shots = data.get("n-shot", {}).get(task)
    if shots is not None:
        parts += ["--num_fewshot", str(shots)]
    if config.get("batch_size") is not None:
        parts += ["--batch_size", format_value(config["batch_size"])]
    if config.get("limit") is not None:
        parts += ["--limit", format_value(config["limit"])]
    if config.get("gen_kwargs"):
        parts += ["--gen_kwargs", ",".join(f"{k}={format_value(v)}" for k, v in config["gen_kwargs"].items())]
    if data.get("chat_template") is not None:
        parts.append("--apply_chat_template")
    if data.get("fewshot_as_multiturn"):
        parts.append("--fewshot_as_multiturn")
    if data.get("system_instruction"):
        parts += ["--system_instruction", data["system_instruction"]]
    if all(config.get(key) is not None for key in DEFAULT_SEEDS):
        parts += ["--seed", ",".join(format_value(config[key]) for key in DEFAULT_SEEDS)]
    parts += ["--output_path", results_path.parent.parent.as_posix()]
    if any(results_path.parent.glob(f"samples_{task}_*.jsonl")):
        parts.append("--log_samples")
    return shlex.join(parts)


def machine(data: dict) -> str:
    """The GPUs lm-eval saw, else the CPU model and core count, from its pretty_env_info."""
    info = data.get("pretty_env_info") or ""
    lines = info.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("GPU models and configuration:"):
            gpus = [line.partition(":")[2].strip()] + [text.strip() for text in lines[index + 1:]
                                                     if text.startswith("GPU ")][:16]
            gpus = [text for text in gpus if text and text != "Could not collect"]
            if gpus:
                return "; ".join(gpus)
    cpu = re.search(r"^Model name:\s*(.+)$", info, re.M)
    cores = re.search(r"^CPU\(s\):\s*(\d+)$", info, re.M)
    if cpu:
        return f"CPU: {cpu.group(1).strip()}" + (f" ({cores.group(1)} cores)" if cores else "")
    return "unknown"


def iso_date(value) -> str | None:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rows_of_run(folder: Path, results_path: Path) -> list[dict]:
    data = read_json(results_path)
    if not isinstance(data.get("results"), dict) or not isinstance(data.get("config"), dict):
        raise LeaderboardError(f"{results_path} has no 'results' and 'config': not an lm-eval results file")
    config = data["config"]
    args = model_args_dict(config.get("model_args"))
    model = config.get("pretrained") or args.get("pretrained") or data.get("model_name")
    rows = []
    for task, metrics in sorted(data["results"].items()):
        summary = decode_summary(results_path, folder, config, task)
        n = data.get("n-samples", {}).get(task, {}).get("effective", metrics.get("sample_len"))
        for key, value in metrics.items():
            if key in NOT_METRICS or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            rows.append({
                "kind": "measured", "model": model, "task": task, "sampler": sampler_label(config),
                "metric": metric, "filter": filter_name or None, "value": value,
                "stderr": number_or_none(metrics.get(f"{metric}_stderr,{filter_name}")), "n": n,
                "mean_nfe": summary["nfe"], "mean_cumulative_entropy": summary["cumulative_entropy"],
                "mean_tokens_forwarded": summary["tokens_forwarded"], "mean_seconds": summary["seconds"],
                "decode_stats_requests": summary["requests"], "decode_stats_source": summary["source"],
                "command": command(data, task, results_path),
                "lm_eval_version": data.get("lm_eval_version"),
                "lm_eval_infogain_version": config.get("lm_eval_infogain_version"),
                "date": iso_date(data.get("date")), "machine": machine(data),
                "sampler_config": config.get("sampler"), "results_file": relative(results_path, folder),
            })
    return rows


def read_reference(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        data = read_json(path)
        if not isinstance(data.get("source"), str) or not data["source"].strip():
            raise LeaderboardError(f"{path} needs a 'source' naming where its numbers were published")
        for index, row in enumerate(data.get("rows", [])):
            missing = [key for key in ("model", "task", "sampler", "metric", "value") if key not in row]
            if missing:
                raise LeaderboardError(f"{path} row {index} lacks {', '.join(missing)}")
            rows.append({"kind": "reference", "model": row["model"], "task": row["task"], "sampler": row["sampler"],
                         "metric": row["metric"], "value": row["value"], "nfe": row.get("nfe"),
                         "note": row.get("note"), "source": data["source"], "reference_file": path.name})
    return sorted(rows, key=lambda r: (r["model"], r["task"], r["sampler"], r["metric"], r["reference_file"]))


def sort_key(row: dict) -> tuple:
    return (row["model"] or "", row["task"], row["sampler"], row["metric"], row["filter"] or "",
            row["date"] or "", row["results_file"])


def build(folders: list[Path], reference_files: list[Path]) -> dict:
    measured = sorted((row for folder, path in find_results(folders) for row in rows_of_run(folder, path)),
                      key=sort_key)
    rows = [row for row in measured if row["metric"] not in RETIRED_METRICS]
    retired = sorted({row["metric"] for row in measured} & RETIRED_METRICS.keys())
    return {"rows": rows, "comparisons": compare(rows, "info_gain", "original"),
            "reference_rows": read_reference(reference_files),
            "retired_metrics": {metric: RETIRED_METRICS[metric] for metric in retired}}


def compare(rows: list[dict], challenger: str, baseline: str) -> list[dict]:
    """`challenger` against `baseline` (sampler modes) per model, task, metric, filter and cache mode:
    the difference of the values, its standard error and the verdict in a word. With several runs of
    one cell, the latest counts."""
    latest = {}
    for row in rows:  # sorted by date within a cell, so the last one wins
        mode, _, cache = row["sampler"].partition("/")
        latest[(row["model"], row["task"], row["metric"], row["filter"], cache, mode)] = row
    comparisons = []
    for (model, task, metric, filter_name, cache, mode), ours in sorted(latest.items(), key=lambda item: str(item[0])):
        theirs = latest.get((model, task, metric, filter_name, cache, baseline))
        if mode != challenger or theirs is None:
            continue
        difference = ours["value"] - theirs["value"]
        errors = (ours["stderr"], theirs["stderr"])
        stderr = math.hypot(*errors) if None not in errors else None
        comparisons.append({
            "model": model, "task": task, "metric": metric, "filter": filter_name, "use_cache": cache,
            "challenger": challenger, "baseline": baseline, "challenger_value": ours["value"],
            "baseline_value": theirs["value"], "difference": difference, "difference_stderr": stderr,
            "verdict": "above" if difference > 0 else "below" if difference < 0 else "equal",
            "challenger_cumulative_entropy": ours["mean_cumulative_entropy"],
            "baseline_cumulative_entropy": theirs["mean_cumulative_entropy"],
        })
    return comparisons


def comparison_sentence(item: dict) -> str:
    """One plain line, e.g. "tiny / sudoku_4x4, acc (prefix): info_gain 0.52 is above original 0.46 by 0.06
    (stderr of the difference 0.07, 0.9 stderr); mean cumulative entropy 3.1 vs 4.2"."""
    where = f"{item['model']} / {item['task']}, {item['metric']}"
    where += f" {item['filter']}" if item["filter"] and item["filter"] != "none" else ""
    head = (f"{where} (use_cache={item['use_cache']}): {item['challenger']} {fmt(item['challenger_value'])} is "
            f"**{item['verdict']}** {item['baseline']} {fmt(item['baseline_value'])}")
    if item["verdict"] != "equal":
        head += f" by {fmt(abs(item['difference']))}"
    stderr = item["difference_stderr"]
    if stderr:
        head += f" (stderr of the difference {fmt(stderr, 2)}, {abs(item['difference']) / stderr:.1f} stderr)"
    elif stderr is None:
        head += " (no stderr)"
    return (head + f"; mean cumulative entropy {fmt(item['challenger_cumulative_entropy'])} vs "
            f"{fmt(item['baseline_cumulative_entropy'])}")


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def cell(text) -> str:
    return str(text).replace("|", "\\|")


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
            row["model"], row["task"], row["sampler"], metric, fmt(row["value"]), fmt(row["stderr"]), fmt(row["n"]),
            fmt(row["mean_nfe"]), fmt(row["mean_cumulative_entropy"]), fmt(row["lm_eval_version"]),
            fmt(row["date"]), row["machine"], number[row["command"]])) + " |")
    if board["retired_metrics"]:
        lines += ["", "Left out, metrics no longer computed: " + "; ".join(
            f"`{metric}` ({reason})" for metric, reason in board["retired_metrics"].items()) + "."]
    if board["comparisons"]:
        lines += ["", "## Info-Gain against confidence order (original)", "",
                  "Is Info-Gain's value above original's? The difference's stderr treats the two runs as "
                  "independent.", ""]
        lines += [f"- {comparison_sentence(item)}" for item in board["comparisons"]]
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


def chart(board: dict, path: Path) -> None:
    """Metric against mean NFE: one panel per (task, metric, filter), one colour per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    panels = sorted({(row["task"], row["metric"], row["filter"] or "") for row in board["rows"]})
    samplers = sorted({row["sampler"] for row in board["rows"] + board["reference_rows"]})
    colours = {name: pyplot.get_cmap("tab10")(index % 10) for index, name in enumerate(samplers)}
    columns = min(3, len(panels))
    rows_count = math.ceil(len(panels) / columns)
    figure, axes = pyplot.subplots(rows_count, columns, figsize=(5 * columns, 4 * rows_count), squeeze=False)
    for axis, (task, metric, filter_name) in zip(axes.flat, panels):
        for row in board["rows"]:
            if (row["task"], row["metric"], row["filter"] or "") == (task, metric, filter_name) and row["mean_nfe"]:
                axis.scatter(row["mean_nfe"], row["value"], color=colours[row["sampler"]], label=row["sampler"])
                axis.annotate(row["model"], (row["mean_nfe"], row["value"]), fontsize=7, alpha=0.7,
                              xytext=(3, 3), textcoords="offset points")
        for row in board["reference_rows"]:
            if (row["task"], row["metric"]) == (task, metric) and row["nfe"]:
                axis.scatter(row["nfe"], row["value"], facecolors="none", edgecolors=colours[row["sampler"]],
                             label=f"{row['sampler']} (reference)")
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        if unique:
            axis.legend(unique.values(), unique.keys(), fontsize=7)
        axis.set_title(f"{task}: {metric}" + (f" ({filter_name})" if filter_name not in ("", "none") else ""),
                       fontsize=9)
        axis.set_xlabel("mean NFE per request")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lm_eval_infogain.leaderboard",
                                     description="Collect lm-eval results and decode stats into one leaderboard.")
    parser.add_argument("folders", nargs="+", type=Path, help="lm-eval output folders, searched recursively")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for leaderboard.json, README.md and leaderboard.png")
    parser.add_argument("--reference", type=Path, action="append",
                        help="published numbers (JSON with 'source' and 'rows'); default: <output>/reference/*.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    references = args.reference
    if references is None:
        references = sorted((args.output / "reference").glob("*.json"))
    try:
        board = build(args.folders, references)
    except LeaderboardError as error:
        sys.exit(f"leaderboard: {error}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
    (args.output / "README.md").write_text(markdown(board), encoding="utf-8")
    chart(board, args.output / "leaderboard.png")
    print(f"{len(board['rows'])} rows ({len(board['reference_rows'])} reference) -> "
          f"{args.output / 'leaderboard.json'}, README.md, leaderboard.png")


if __name__ == "__main__":
    main()
