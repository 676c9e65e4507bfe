"""One table of every lm-eval run under a folder: leaderboard.json, a markdown README and a chart.

    python -m lm_eval_infogain.leaderboard results/runs/ -o results/ [--reference results/reference/paper.json]

Input: lm-eval `--output_path` folders, searched recursively for `results_*.json`. Each metric of each
task of each results file gives one row: model, task, sampler (`mode/use_cache`, `lookum` for
Info-Gain's LookUM variant), label, metric and filter, value, stderr, n (samples evaluated), the lm-eval
command that reproduces it (rebuilt from the file's `config`), the lm-eval and package versions, the
run's date and machine (from lm-eval's `pretty_env_info`: the GPU models, else the CPU model).

Labels: a row's label is its sampler followed by every setting in which its run differs from another
run of the same model and task (`settings` in the row: the effective sampler settings, other
model_args, gen_kwargs, task metadata, shots, chat template, seeds, and `docs`, a digest of the ids
and text of the documents scored, from the `--log_samples` file), e.g. `fast_dllm/none threshold=0.9`.
The table, the chart and the comparisons use it. Runs with the same label (same settings, same
documents) all stay rows; `duplicates` names them and which one the comparisons use (the latest).

Decode stats (mean NFE, mean cumulative entropy, mean tokens forwarded, mean seconds per request) come
from the per-request JSONL of the `decode_stats=<file>` model arg, found in this order:
1. the file named in the results' `config.model_args.decode_stats` (and its `.rank<N>` siblings under
   `accelerate launch`), as written, or relative to the run's output_path;
2. else any `decode_stats*.jsonl` (and `.rank<N>`) next to the results file or in its output_path
   (the folder given to `--output_path`, one above the results file);
3. else the results' own per-request stats, `config.decode_stats_per_request` (every process's);
4. else the results' `config.decode_stats_mean` (written before the per-request list existed: under
   `accelerate launch`, only the first process's share of the requests).
Only the lines of the row's task count; a request logged twice (a rerun appending to the same file)
counts once, its last line. `decode_stats_source` says which of the four a row used.

Reference rows (published numbers, never measured here) come from `--reference` JSON files, by default
every `*.json` in `<output>/reference/`, each `{"source": "...", "rows": [{"model", "task", "sampler",
"metric", "value", optional "nfe", "note"}]}`. They are kept apart: `reference_rows` in the JSON, their
own table in the README, hollow markers in the chart.

Output (same input, same bytes): `leaderboard.json`, `README.md` and `leaderboard.png` (metric against
mean NFE with stderr bars, one panel per model, task and metric, one colour and marker per sampler;
`--predict_only` runs, which have no metric, are left out) in the output folder.

Paired comparisons: runs on the same documents (equal `docs` digests) are compared document by
document, from the runs' `--log_samples` files (`samples_file` in a row); runs on other documents are
never compared. For every pair of labels of one model, task, metric, filter, cache mode and set of
documents, `comparisons` in the JSON has the mean per-document difference, its
paired standard error, and an exact McNemar test (0/1 metrics: a binomial test on the documents only
one of the two got right, which it lists) or a 95% paired bootstrap interval (other metrics). A run
without samples falls back to the runs' own stderrs treated as independent, and says so. The README
states each sampler against confidence order (`original`), Info-Gain in words.
"""

import argparse
import hashlib
import json
import math
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy
from lm_eval.utils import get_file_datetime, get_results_filenames, simple_parse_args_string
from scipy import stats

DEFAULT_SEEDS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
STAT_KEYS = ("nfe", "cumulative_entropy", "tokens_forwarded", "seconds")
NOT_METRICS = {"alias", "name", "sample_len", " "}
PREDICT_ONLY_METRIC = "bypass"  # what lm-eval reports (999) for every task of a --predict_only run
# Keys lm-eval itself puts in a task's recorded metadata (besides the model_args it merges in).
LM_EVAL_METADATA_KEYS = {"version", "config_source"}
# model_args that name where a run came from or wrote to, not how it decoded: never part of a label.
NOT_SETTINGS = {"pretrained", "decode_stats"}
# Sampler settings that sampler_label already shows.
SAMPLER_LABEL_KEYS = {"mode", "variant", "parallel_threshold", "use_cache"}
UNSET = "default"  # how a label shows a setting one run gave and another left to its default


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
        paths = get_results_filenames([path.as_posix() for path in folder.rglob("results_*.json")])
        found += [(folder, Path(path)) for path in sorted(paths)]
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
    return simple_parse_args_string(model_args)


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


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file (decode stats, lm-eval samples); blank lines skipped."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise LeaderboardError(f"{path}:{number} is not JSON: {error}") from error
    return rows


def read_decode_stats(files: list[Path], task: str) -> list[dict]:
    """The task's per-request lines, one per (doc_id, idx, repeat): the last one logged."""
    requests = {}
    for path in files:
        for row in read_jsonl(path):
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
    requests = [row for row in config.get("decode_stats_per_request") or [] if row.get("task") == task]
    if requests:
        means = {key: sum(row[key] for row in requests) / len(requests) for key in STAT_KEYS}
        return {"requests": len(requests), **means, "source": "config.decode_stats_per_request"}
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
    if sampler.get("parallel_threshold") is not None:  # Info-Gain with parallel commits: a sampler of its own
        mode += f"+parallel{format_value(sampler['parallel_threshold'])}"
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


def run_settings(data: dict, task: str, samples: Path | None) -> tuple[dict, list[str]]:
    """Everything a run of `task` was decoded and scored with, {name: value}, and the names its command gave
    (model_args, gen_kwargs, --metadata): the effective sampler settings (checkpoint defaults resolved), the
    other model_args, gen_kwargs (`gen_kwargs.<key>`), the task metadata, shots, chat template, system
    instruction, seeds, and `docs`, the digest of the documents scored."""
    config = data["config"]
    model_args = model_args_dict(config.get("model_args"))
    sampler = config.get("sampler") if isinstance(config.get("sampler"), dict) else {}
    gen_kwargs = {f"gen_kwargs.{key}": value for key, value in (config.get("gen_kwargs") or {}).items()}
    metadata = cli_metadata(data, task)
    settings = {key: value for key, value in sampler.items() if key not in SAMPLER_LABEL_KEYS}
    settings |= {key: value for key, value in model_args.items()
                 if key not in NOT_SETTINGS | SAMPLER_LABEL_KEYS | sampler.keys()}
    settings |= gen_kwargs | metadata | {
        "num_fewshot": data.get("n-shot", {}).get(task), "chat_template": data.get("chat_template_sha"),
        "system_instruction": data.get("system_instruction_sha"),
        "seed": ",".join(format_value(config.get(key)) for key in DEFAULT_SEEDS),
        "docs": documents_digest(samples)}
    return settings, sorted(model_args.keys() | gen_kwargs.keys() | metadata.keys())


def documents_digest(samples: Path | None) -> str | None:
    """The first 12 hex digits of a sha256 of the (doc_id, doc_hash) pairs a run scored (lm-eval's doc_hash
    hashes the document's text): equal digests, same documents. None without a --log_samples file."""
    if samples is None:
        return None
    pairs = sorted({(sample.get("doc_id"), sample.get("doc_hash")) for sample in read_jsonl(samples)}, key=str)
    return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()[:12]


def label_runs(rows: list[dict]) -> None:
    """Sets each row's `named_settings` and `label` (its sampler, then those settings): every setting in which
    its run differs from another run of the same model and task. A sampler setting is named only in the runs
    that gave it on their command line or whose sampler also ran with another value of it (`threshold` says
    nothing about `original`); data, gen_kwargs, shots, seeds and documents are named in every run."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:  # a run gives one row per metric: they share their settings
        groups.setdefault((row["model"], row["task"]), {}).setdefault(row["results_file"], []).append(row)
    for runs in groups.values():
        first_rows = [run_rows[0] for run_rows in runs.values()]
        keys = sorted({key for run in first_rows for key in run["settings"]})
        for run in first_rows:
            same_sampler = [other for other in first_rows if other["sampler"] == run["sampler"]]
            named = [key for key in keys if differs(key, first_rows) and (
                key not in (run["sampler_config"] or {}) or key in run["settings_given"] or differs(key, same_sampler))]
            text = " ".join(f"{key}={setting_text(run['settings'].get(key, UNSET))}" for key in named)
            for row in runs[run["results_file"]]:
                row["named_settings"], row["label"] = text, " ".join(filter(None, (row["sampler"], text)))


def differs(key: str, runs) -> bool:
    return len({json.dumps(run["settings"].get(key, UNSET), sort_keys=True) for run in runs}) > 1


def setting_text(value) -> str:
    return format_value(value) if isinstance(value, (str, int, float)) or value is None else json.dumps(value)


def duplicate_runs(rows: list[dict]) -> list[dict]:
    """Runs of one model and task with the same label, i.e. the same settings and documents: each is a row of
    the table; the comparisons use the latest (rows are sorted by date within a label)."""
    files: dict[tuple, list[str]] = {}
    for row in rows:
        runs = files.setdefault((row["model"], row["task"], row["label"]), [])
        if row["results_file"] not in runs:
            runs.append(row["results_file"])
    return [{"model": model, "task": task, "label": label, "results_files": runs, "compared": runs[-1]}
            for (model, task, label), runs in files.items() if len(runs) > 1]


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


def samples_file(results_path: Path, task: str) -> Path | None:
    """lm-eval's --log_samples file of a task, written beside the results file with the same timestamp."""
    stamp = get_file_datetime(results_path.name).removesuffix(".json")
    path = results_path.parent / f"samples_{task}_{stamp}.jsonl"
    return path if path.is_file() else None


def document_values(path: Path, metric: str, filter_name: str | None) -> dict[tuple, float]:
    """{(doc_id, doc_hash): value} of one metric and filter from a samples file."""
    values = {}
    for sample in read_jsonl(path):
        value = sample.get(metric)
        if sample.get("filter", "none") == (filter_name or "none") and number_or_none(value) is not None:
            values[(sample.get("doc_id"), sample.get("doc_hash"))] = float(value)
    return values


def build(folders: list[Path], reference_files: list[Path]) -> dict:
    measured = [(row, folder) for folder, path in find_results(folders) for row in rows_of_run(folder, path)]
    label_runs([row for row, _ in measured])
    measured.sort(key=lambda pair: sort_key(pair[0]))
    kept = [(row, folder) for row, folder in measured if row["metric"] not in RETIRED_METRICS]
    rows = [row for row, _ in kept]
    documents = [document_values(folder / row["samples_file"], row["metric"], row["filter"])
                 if row["samples_file"] else None for row, folder in kept]
    retired = sorted({row["metric"] for row, _ in measured} & RETIRED_METRICS.keys())
    return {"rows": rows, "comparisons": compare(rows, documents, BASELINE), "duplicates": duplicate_runs(rows),
            "reference_rows": read_reference(reference_files),
            "retired_metrics": {metric: RETIRED_METRICS[metric] for metric in retired}}


BASELINE = "original"  # confidence order: the sampler every other one is compared with first


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


def verdict(difference: float) -> str:
    return "above" if difference > 0 else "below" if difference < 0 else "equal"


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
    text = f"on the same {item['n']} documents (digest {item['documents']}; paired {stderr}"
    if item["test"] == "exact McNemar":
        return text + (f"; exact McNemar p = {fmt(item['p_value'], 2)}: {item['challenger']} alone right on "
                       f"{item['challenger_only']}, {item['baseline']} alone on {item['baseline_only']})")
    interval = "-" if item["ci95"] is None else f"[{fmt(item['ci95'][0], 3)}, {fmt(item['ci95'][1], 3)}]"
    return text + f"; paired bootstrap 95% interval of the difference {interval})"


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def cell(text) -> str:
    return str(text).replace("|", "\\|")


def test_cell(item: dict) -> str:
    if not item["paired"]:
        return "unpaired (no samples logged)"
    if item["test"] == "exact McNemar":
        return f"McNemar p = {fmt(item['p_value'], 2)}"
    interval = "-" if item["ci95"] is None else f"[{fmt(item['ci95'][0], 3)}, {fmt(item['ci95'][1], 3)}]"
    return f"bootstrap 95% {interval}"


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
    against_baseline = [item for item in board["comparisons"] if mode_of(item["baseline"]) == BASELINE]
    if against_baseline:
        lines += ["", f"## Paired comparisons against confidence order ({BASELINE})", "",
                  "Each sampler against the same model, task and cache mode run with `original` on the same "
                  "documents (`docs`: a digest of their ids and text), document by document "
                  "(from the runs' `--log_samples` files): the mean per-document difference, its paired stderr, "
                  "and an exact McNemar test (0/1 metrics; `alone`: documents only one of the two got right) or a "
                  "paired bootstrap 95% interval (other metrics). Every pair of samplers is in "
                  "`leaderboard.json` under `comparisons`.", ""]
        lines += [f"- {comparison_sentence(item)}" for item in against_baseline
                  if mode_of(item["challenger"]) == "info_gain"]
        lines += ["", "| model | task | metric | cache | sampler | difference | paired stderr | n | test | alone "
                      "(sampler / original) |", "|---|---|---|---|---|---:|---:|---:|---|---:|"]
        for item in against_baseline:
            lines.append("| " + " | ".join(cell(value) for value in (
                item["model"], item["task"], item["metric"], item["use_cache"], item["challenger"],
                fmt(item["difference"], 3), fmt(item["difference_stderr"], 2), fmt(item["n"]), test_cell(item),
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


MARKERS = "osD^vP*Xph<>"


def chart(board: dict, path: Path) -> None:
    """Metric against mean NFE with stderr bars: one panel per (model, task, metric, filter), one colour and
    marker per sampler. Samplers that land on the same point are drawn side by side (a small horizontal
    offset, said in the axis label) so that none hides another."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    plotted = [row for row in board["rows"] if row["mean_nfe"]]
    panels = sorted({(row["model"], row["task"], row["metric"], row["filter"] or "") for row in plotted})
    samplers = sorted({row["label"] for row in plotted} | {row["sampler"] for row in board["reference_rows"]})
    style = {name: (pyplot.get_cmap("tab10")(index % 10), MARKERS[index % len(MARKERS)])
             for index, name in enumerate(samplers)}
    columns = max(1, min(2, len(panels)))
    rows_count = max(1, math.ceil(len(panels) / columns))
    figure, axes = pyplot.subplots(rows_count, columns, figsize=(6.5 * columns, 4.2 * rows_count), squeeze=False,
                                   layout="constrained")
    for axis, (model, task, metric, filter_name) in zip(axes.flat, panels):
        points = [row for row in plotted if (row["model"], row["task"], row["metric"], row["filter"] or "")
                  == (model, task, metric, filter_name)]
        draw_panel(axis, points, style)
        for row in board["reference_rows"]:
            if (row["task"], row["metric"]) == (task, metric) and row["nfe"]:
                colour, marker = style[row["sampler"]]
                axis.scatter(row["nfe"], row["value"], facecolors="none", edgecolors=colour, marker=marker,
                             label=f"{row['sampler']} (reference)")
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        axis.set_title(f"{model}\n{task}: {metric}" + (f" ({filter_name})" if filter_name not in ("", "none") else ""),
                       fontsize=9)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def draw_panel(axis, points: list[dict], style: dict) -> None:
    """One sampler per point, with its stderr bar; points at the same (NFE, value) spread sideways."""
    span = max((row["mean_nfe"] for row in points), default=1.0) - min((row["mean_nfe"] for row in points), default=0.0)
    step = 0.012 * max(span, max((row["mean_nfe"] for row in points), default=1.0) * 0.2)
    seen: dict[tuple, int] = {}
    for row in points:
        spot = (round(row["mean_nfe"], 1), round(row["value"], 3))
        offset = seen.get(spot, 0)
        seen[spot] = offset + 1
        colour, marker = style[row["label"]]
        axis.errorbar(row["mean_nfe"] + offset * step, row["value"], yerr=row["stderr"] or 0.0, fmt=marker,
                      color=colour, markersize=6, capsize=3, elinewidth=1, label=row["label"])
    shifted = any(count > 1 for count in seen.values())
    axis.set_xlabel("mean NFE per request" + (" (equal points drawn side by side)" if shifted else ""))


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
