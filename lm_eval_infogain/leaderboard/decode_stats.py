"""A run's decode stats (mean NFE, cumulative entropy, tokens forwarded, seconds per request), from the
first of four places that has them (see the package docstring)."""

from pathlib import Path

from lm_eval_infogain.leaderboard.files import model_args_dict, read_jsonl, relative, with_ranks


STAT_KEYS = ("nfe", "cumulative_entropy", "tokens_forwarded", "seconds")


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
