"""lm-eval's request cache (`--use_cache PATH`) made safe to resume with.

lm-eval's CachingLM keys an answer by the request alone (hash_args(method, request args)), not by the
model args, so a cache file filled with one sampler would answer a run with another. The backend
therefore stores the settings that decide its outputs in the cache file under a reserved key the
first time it sees the file (and each answer's decode stats under keys of their own, so that a resumed
run still reports them), and refuses a file whose stored settings differ (or that holds answers
from something else) with one line naming the file and the settings. Answers are committed as each
batch finishes, so a run killed half way keeps its finished requests and a rerun of the same
command computes only the rest.

The settings include the model's identity (`model_identity`): weights replaced at the same
`pretrained` path (a retrain into the same folder) are a changed setting like any other. Before
lm-eval opens the file, `claim` takes a lock on it for this process (two runs filling one file would
each compute every request) and checks that sqlite can read it (a file truncated by a full disk or a
copy would otherwise fail inside sqlitedict's thread with a traceback).
"""

import fcntl
import hashlib
import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import torch

from lm_eval_infogain.errors import UsageError

SETTINGS_KEY = "mdm_infogain:settings"  # cache keys of answers are sha256 hex digests, never this
STATS_PREFIX = "mdm_infogain:stats:"  # + an answer's key: its decode stats
# A checkpoint file is known by its name, size, the first and last MiB and, for safetensors, the whole
# header (every tensor's name, dtype, shape and offsets): seconds for 16 GB of shards, and a retrained
# model differs in every tensor, so in the first and last MiB of each shard.
EDGE_BYTES = 1 << 20
SAFETENSORS_HEADER_LENGTH_BYTES = 8  # the file starts with the header's length, a little-endian u64
MAX_SAFETENSORS_HEADER = 100 << 20  # what the safetensors format allows
LOCKS: dict[str, int] = {}  # lock file path -> its descriptor, open (and locked) for the process lifetime


def flatten(settings: dict, prefix: str = "") -> dict:
    """{'sampler': {'mode': 'x'}} -> {'sampler.mode': 'x'}: differences are named by their full key."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(stored: dict, current: dict) -> list[str]:
    stored, current = flatten(stored), flatten(current)
    return [f"{key}: {stored.get(key, '<unset>')!r} -> {current.get(key, '<unset>')!r}"
            for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]


def guard(dbdict, settings: dict) -> None:
    """Record `settings` in a new cache file, or check them against the ones it holds; raise on a mismatch."""
    settings = json.loads(json.dumps(settings))  # the form it takes once stored (tuples -> lists)
    if SETTINGS_KEY in dbdict:
        changed = differences(dbdict[SETTINGS_KEY], settings)
        if changed:
            raise UsageError(f"--use_cache file {dbdict.filename} holds answers made with other settings "
                             f"({'; '.join(changed)}); use another --use_cache path for these settings, "
                             "or delete the file to recompute")
        return
    if len(dbdict):
        raise UsageError(f"--use_cache file {dbdict.filename} holds answers that mdm_infogain did not record "
                         "its settings for (another model or an older version); use another --use_cache path")
    dbdict[SETTINGS_KEY] = settings
    dbdict.commit()


def stats_key(request_args: tuple) -> str:
    """Where a generate_until answer's decode stats are kept: beside lm-eval's key of the answer."""
    from lm_eval.api.model import hash_args

    return f"{STATS_PREFIX}{hash_args('generate_until', request_args)}"


def store_stats(dbdict, request_args: tuple, row: dict) -> None:
    """Keep a request's decode stats with its cached answer (committed with it), so a resumed run still
    reports them; nothing without a cache file."""
    if dbdict is not None:
        dbdict[stats_key(request_args)] = row


def stored_stats(dbdict, request_args: tuple) -> dict | None:
    """The decode stats kept with a cached answer (None for a cache file written before they were kept)."""
    return dbdict.get(stats_key(request_args))


def file_digest(path: Path) -> str:
    """sha256 of a file's size, first and last EDGE_BYTES and (safetensors) header: see EDGE_BYTES."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as file:
        digest.update(file.read(EDGE_BYTES))
        if size > EDGE_BYTES:
            file.seek(max(EDGE_BYTES, size - EDGE_BYTES))
            digest.update(file.read())
        if path.suffix == ".safetensors" and size >= SAFETENSORS_HEADER_LENGTH_BYTES:
            file.seek(0)
            header_length = int.from_bytes(file.read(SAFETENSORS_HEADER_LENGTH_BYTES), "little")
            digest.update(file.read(min(header_length, MAX_SAFETENSORS_HEADER)))
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """One digest of every file under a checkpoint folder (config, generation config, tokenizer, chat
    template, weights), each by its relative name and file_digest; hidden entries (.cache, .git) left out."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub id (a model or a peft adapter) in the Hugging Face cache, named by
    its commit; None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    for config_name in ("config.json", "adapter_config.json"):
        config_file = try_to_load_from_cache(repo_id, config_name)
        if isinstance(config_file, str):  # else None (never fetched) or a marker (known to be absent)
            return Path(config_file).parent
    return None


def model_identity(pretrained_path: str) -> dict:
    """What names the weights and files of a checkpoint: a local folder's digest; a hub id's resolved commit
    and the digest of its cached snapshot when it is cached, else the id alone (nothing to read offline)."""
    if Path(pretrained_path).is_dir():
        return {"folder_digest": folder_digest(Path(pretrained_path))}
    snapshot = hub_snapshot(pretrained_path)
    if snapshot is None:
        return {"hub_id": pretrained_path}
    return {"hub_id": pretrained_path, "commit": snapshot.name, "folder_digest": folder_digest(snapshot)}


def weights_identity(model) -> dict:
    """A model built in Python has no files to name: the digest of every parameter and buffer, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return {"weights_digest": digest.hexdigest()}


def claim(cache_db: str) -> None:
    """Lock `cache_db` for this process and check that sqlite can read it, before lm-eval opens it.

    The lock is a POSIX record lock on `<cache_db>.lock`: held until the process ends (however it ends),
    shared by every opening in this process, refused to any other process.
    """
    path = Path(cache_db)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = f"{path}.lock"
    if lock_path not in LOCKS:
        lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_file)
            raise UsageError(f"--use_cache file {path} is in use by another run (it holds {lock_path}); wait "
                             "for that run to end, or use another --use_cache path") from None
        LOCKS[lock_path] = lock_file
    if path.exists():
        check_readable(path)


def check_readable(path: Path) -> None:
    """sqlite's quick_check of an existing cache file; one line naming it when it is damaged."""
    problem = None
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            rows = connection.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            problem = rows[0][0]
    except sqlite3.DatabaseError as error:
        problem = str(error)
    if problem is not None:
        raise UsageError(f"--use_cache file {path} is damaged ({problem}); delete it to recompute its answers, "
                         "or use another --use_cache path")
