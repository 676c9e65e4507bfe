"""Helpers that several tasks share: metadata options, user data files, and drawing distinct generated items.

lm-eval hands a task's `custom_dataset` hook the task metadata, which holds --metadata merged over
--model_args. Every task therefore prefixes its own keys with its name and ignores the rest.
"""

import csv
import io
import json
import os
import random
from collections.abc import Callable, Hashable
from pathlib import Path

from lm_eval_infogain.errors import UsageError

# A draw repeats an earlier item only when few distinct items are left to find; this bound turns an
# impossible request into an error instead of an endless loop.
MAX_DRAWS_PER_ITEM = 50
# The longest field a data file may hold: csv's own default limit, far above any prompt, instance or
# puzzle (a 500-word story premise is ~3,000 characters), and far below what would stall tokenisation.
MAX_FIELD_CHARS = 131_072


def reject_unknown_keys(metadata: dict, prefix: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(key for key in metadata if key.startswith(prefix) and key not in allowed)
    if unknown:
        raise UsageError(f"unknown {prefix.rstrip('_')} metadata {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def int_option(metadata: dict, key: str, default: int, minimum: int, maximum: int | None = None,
               why: str = "") -> int:
    """metadata[key] (else `default`), an int in minimum..maximum; `why` explains the bound in the error."""
    value = metadata.get(key, default)
    in_range = isinstance(value, int) and value >= minimum and (maximum is None or value <= maximum)
    if isinstance(value, bool) or not in_range:
        allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"
        raise UsageError(f"{key}={value!r} is invalid; allowed: {allowed}" + (f" ({why})" if why else ""))
    return value


def user_file(metadata: dict, key: str, env_var: str) -> str | None:
    """The path a user gave through metadata `key`, else through the environment variable, else None."""
    return metadata.get(key) or os.environ.get(env_var) or None


def read_records(path: str | os.PathLike, label: str) -> list[tuple[int, dict]]:
    """(line number, record) of each row of a CSV (with a header) or each non-blank line of a JSONL file.

    `label` names the file in errors ("countdown file"), which are one-line ValueErrors naming the file and,
    where there is one, the line: not UTF-8, not JSON, a field longer than MAX_FIELD_CHARS.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"{label} {path}: no such file")
    if path.suffix.lower() == ".csv":
        records = read_csv_records(path, label)
    elif path.suffix.lower() == ".jsonl":
        records = read_jsonl_records(path, label)
    else:
        raise UsageError(f"{label} {path}: unknown extension {path.suffix!r}; allowed: .csv, .jsonl")
    if not records:
        raise UsageError(f"{label} {path}: no records")
    for line_number, record in records:
        check_field_lengths(record, f"{label} {path}, line {line_number}")
    return records


def read_text(path: Path, label: str) -> str:
    """The file decoded as UTF-8 (a leading BOM, as Excel writes, dropped); else a ValueError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise UsageError(f"{label} {path}, line {line_number}: byte 0x{data[error.start]:02x} is not UTF-8; "
                         "save the file as UTF-8") from None


def read_csv_records(path: Path, label: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path, label), newline=""))
    records = []
    try:
        for record in reader:
            records.append((reader.line_num, record))
    except csv.Error as error:  # a field over csv's size limit, a NUL byte, ...
        # line_num counts the lines read before the one that failed
        raise UsageError(f"{label} {path}, line {reader.line_num + 1}: {error}") from None
    return records


def read_jsonl_records(path: Path, label: str) -> list[tuple[int, dict]]:
    records = []
    for line_number, line in enumerate(read_text(path, label).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{label} {path}, line {line_number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{label} {path}, line {line_number}: "
                             f"expected a JSON object, got {type(record).__name__}")
        records.append((line_number, record))
    return records


def check_field_lengths(record: dict, where: str) -> None:
    for name, value in record.items():
        length = len(value if isinstance(value, str) else json.dumps(value))
        if length > MAX_FIELD_CHARS:
            raise UsageError(f"{where}: field {name!r} holds {length:,} characters; "
                             f"allowed: at most {MAX_FIELD_CHARS:,}")


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
    raise UsageError(f"found only {len(items)} distinct items after {count * MAX_DRAWS_PER_ITEM} draws; ask for fewer")
