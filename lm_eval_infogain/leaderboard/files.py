"""Finding and reading lm-eval's output: results files, JSONL (samples, decode stats), recorded model_args."""

import json
from pathlib import Path

from lm_eval.utils import get_file_datetime, get_results_filenames, simple_parse_args_string


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


def model_args_dict(model_args) -> dict:
    """lm-eval 0.4.13 records model_args as a dict; older versions and the Python API as a string."""
    if isinstance(model_args, dict):
        return model_args
    return simple_parse_args_string(model_args)


def with_ranks(path: Path) -> list[Path]:
    """The file itself and the per-process files `<name>.rank<N>` that accelerate launch writes."""
    return sorted(p for p in [path, *path.parent.glob(path.name + ".rank*")] if p.is_file())


def samples_file(results_path: Path, task: str) -> Path | None:
    """lm-eval's --log_samples file of a task, written beside the results file with the same timestamp."""
    stamp = get_file_datetime(results_path.name).removesuffix(".json")
    path = results_path.parent / f"samples_{task}_{stamp}.jsonl"
    return path if path.is_file() else None


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
