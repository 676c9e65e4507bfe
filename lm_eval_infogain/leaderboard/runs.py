"""One row per metric of each task of each results file, and the published reference rows."""

import re
from datetime import datetime, timezone
from pathlib import Path

from lm_eval_infogain.leaderboard.commands import command, format_value
from lm_eval_infogain.leaderboard.decode_stats import decode_summary
from lm_eval_infogain.leaderboard.files import LeaderboardError, model_args_dict, read_json, relative, samples_file
from lm_eval_infogain.leaderboard.labels import run_settings


NOT_METRICS = {"alias", "name", "sample_len", " "}
PREDICT_ONLY_METRIC = "bypass"  # what lm-eval reports (999) for every task of a --predict_only run
# Metrics that older runs under a runs folder may hold but that no task computes any more, with the reason:
# their rows are left out of the board, which names them.
RETIRED_METRICS = {
    "acc_last_step_equals_target": "countdown's former 'lenient rule', which disagreed with the paper's checker; "
                                   "acc_paper_rule replaces it: rerun the run to measure it",
}


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
        samples = samples_file(results_path, task)
        settings, given = run_settings(data, task, samples)
        n = data.get("n-samples", {}).get(task, {}).get("effective", metrics.get("sample_len"))
        for key, value in metrics.items():
            if key in NOT_METRICS or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            if key.startswith(f"{PREDICT_ONLY_METRIC},"):  # --predict_only: no metric was computed
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
                "sampler_config": config.get("sampler"), "settings": settings, "settings_given": given,
                "documents": settings["docs"], "results_file": relative(results_path, folder),
                "samples_file": relative(samples, folder) if samples else None,
            })
    return rows


def sampler_label(config: dict) -> str:
    sampler = config.get("sampler")
    if not isinstance(sampler, dict):  # another backend: its model type is all we know
        return str(config.get("model"))
    mode = "lookum" if sampler.get("mode") == "info_gain" and sampler.get("variant") == "lookum" else sampler["mode"]
    if sampler.get("parallel_threshold") is not None:  # Info-Gain with parallel commits: a sampler of its own
        mode += f"+parallel{format_value(sampler['parallel_threshold'])}"
    return f"{mode}/{sampler.get('use_cache')}"


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
    return (row["model"] or "", row["task"], row["label"], row["metric"], row["filter"] or "",
            row["date"] or "", row["results_file"])
