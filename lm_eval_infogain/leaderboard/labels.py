"""What a run was run with, and labels that name where runs of one model and task differ."""

import hashlib
import json
from pathlib import Path

from lm_eval_infogain.leaderboard.commands import DEFAULT_SEEDS, cli_metadata, format_value
from lm_eval_infogain.leaderboard.files import model_args_dict, read_jsonl


# model_args that name where a run came from or wrote to, not how it decoded: never part of a label.
NOT_SETTINGS = {"pretrained", "decode_stats"}
# Sampler settings that sampler_label already shows.
SAMPLER_LABEL_KEYS = {"mode", "variant", "parallel_threshold", "use_cache"}
UNSET = "default"  # how a label shows a setting one run gave and another left to its default
# a user strategy's options, as model_args name them (sampling.modes.OPTION_PREFIX; not imported: it needs torch)
OPTION_PREFIX = "sampler."


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
    settings = {key: value for key, value in sampler.items() if key not in SAMPLER_LABEL_KEYS | {"strategy_options"}}
    settings |= strategy_settings(sampler, config.get("strategy"))
    settings |= {key: value for key, value in model_args.items()
                 if key not in NOT_SETTINGS | SAMPLER_LABEL_KEYS | sampler.keys()}
    settings |= gen_kwargs | metadata | {
        "num_fewshot": data.get("n-shot", {}).get(task), "chat_template": data.get("chat_template_sha"),
        "system_instruction": data.get("system_instruction_sha"),
        "seed": ",".join(format_value(config.get(key)) for key in DEFAULT_SEEDS),
        "docs": documents_digest(samples)}
    return settings, sorted(model_args.keys() | gen_kwargs.keys() | metadata.keys())


def strategy_settings(sampler: dict, strategy) -> dict:
    """A user strategy's options as `sampler.<name>` (as model_args give them) and, so that two versions of
    its file are told apart, its version and the first 12 hex digits of its file's sha256."""
    settings = {f"{OPTION_PREFIX}{key}": value for key, value in (sampler.get("strategy_options") or {}).items()}
    if isinstance(strategy, dict) and strategy:
        settings["strategy.version"] = strategy.get("version")
        settings["strategy.file_sha256"] = (strategy.get("file_sha256") or "")[:12] or None
    return settings


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
                not is_sampler_setting(key, run) or key in run["settings_given"] or differs(key, same_sampler))]
            text = " ".join(f"{key}={setting_text(run['settings'].get(key, UNSET))}" for key in named)
            for row in runs[run["results_file"]]:
                row["named_settings"], row["label"] = text, " ".join(filter(None, (row["sampler"], text)))


def is_sampler_setting(key: str, run: dict) -> bool:
    """A setting of the sampler (a user strategy's options and identity included), named only where it tells
    runs of one sampler apart."""
    return key in (run["sampler_config"] or {}) or key.startswith((OPTION_PREFIX, "strategy."))


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
