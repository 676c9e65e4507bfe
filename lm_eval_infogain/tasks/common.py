"""Helpers that several tasks share: metadata options, user data files, and drawing distinct generated items.

lm-eval hands a task's `custom_dataset` hook the task metadata, which holds --metadata merged over
--model_args. Every task therefore prefixes its own keys with its name and ignores the rest.
"""

import csv
import json
import os
import random
from collections.abc import Callable, Hashable
from pathlib import Path

# A draw repeats an earlier item only when few distinct items are left to find; this bound turns an
# impossible request into an error instead of an endless loop.
MAX_DRAWS_PER_ITEM = 50


def reject_unknown_keys(metadata: dict, prefix: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(key for key in metadata if key.startswith(prefix) and key not in allowed)
    if unknown:
        raise ValueError(f"unknown {prefix.rstrip('_')} metadata {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def int_option(metadata: dict, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
    value = metadata.get(key, default)
    in_range = isinstance(value, int) and value >= minimum and (maximum is None or value <= maximum)
    if isinstance(value, bool) or not in_range:
        allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"
        raise ValueError(f"{key}={value!r} is invalid; allowed: {allowed}")
    return value


def user_file(metadata: dict, key: str, env_var: str) -> str | None:
    """The path a user gave through metadata `key`, else through the environment variable, else None."""
    return metadata.get(key) or os.environ.get(env_var) or None


def read_records(path: str | os.PathLike, label: str) -> list[tuple[int, dict]]:
    """(line number, record) of each row of a CSV (with a header) or each non-blank line of a JSONL file.

    `label` names the file in errors ("countdown file"), which are one-line ValueErrors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{label} {path}: no such file")
    if path.suffix.lower() == ".csv":
        records = read_csv_records(path)
    elif path.suffix.lower() == ".jsonl":
        records = read_jsonl_records(path, label)
    else:
        raise ValueError(f"{label} {path}: unknown extension {path.suffix!r}; allowed: .csv, .jsonl")
    if not records:
        raise ValueError(f"{label} {path}: no records")
    return records


def read_csv_records(path: Path) -> list[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: files saved by Excel start with a BOM
        reader = csv.DictReader(handle)
        return [(reader.line_num, record) for record in reader]


def read_jsonl_records(path: Path, label: str) -> list[tuple[int, dict]]:
    records = []
    with path.open(encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{label} {path}, line {line_number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{label} {path}, line {line_number}: "
                                 f"expected a JSON object, got {type(record).__name__}")
            records.append((line_number, record))
    return records


def first_field(record: dict, names: tuple[str, ...]) -> str | None:
    """The stripped value of the first of `names` that `record` has (non-empty), else None."""
    for name in names:
        value = record.get(name)
        if value not in (None, ""):
            return str(value).strip()
    return None


def draw_distinct(
    make: Callable[[random.Random], dict],
    key: Callable[[dict], Hashable],
    count: int,
    seed: int | str,
    exclude: frozenset = frozenset(),
) -> list[dict]:
    """`count` items from `make(rng)` whose keys differ from each other and from `exclude`; the same per seed."""
    rng = random.Random(seed)
    items: list[dict] = []
    seen = set(exclude)
    for _ in range(count * MAX_DRAWS_PER_ITEM):
        item = make(rng)
        if key(item) in seen:
            continue
        seen.add(key(item))
        items.append(item)
        if len(items) == count:
            return items
    raise ValueError(f"found only {len(items)} distinct items after {count * MAX_DRAWS_PER_ITEM} draws; ask for fewer")
