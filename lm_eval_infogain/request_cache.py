"""lm-eval's request cache (`--use_cache PATH`) made safe to resume with.

lm-eval's CachingLM keys an answer by the request alone (hash_args(method, request args)), not by the
model args, so a cache file filled with one sampler would answer a run with another. The backend
therefore stores the settings that decide its outputs in the cache file under a reserved key the
first time it sees the file, and refuses a file whose stored settings differ (or that holds answers
from something else) with one line naming the file and the settings. Answers are committed as each
batch finishes, so a run killed half way keeps its finished requests and a rerun of the same
command computes only the rest.
"""

import json

SETTINGS_KEY = "mdm_infogain:settings"  # cache keys of answers are sha256 hex digests, never this


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
            raise ValueError(f"--use_cache file {dbdict.filename} holds answers made with other settings "
                             f"({'; '.join(changed)}); use another --use_cache path for these settings, "
                             "or delete the file to recompute")
        return
    if len(dbdict):
        raise ValueError(f"--use_cache file {dbdict.filename} holds answers that mdm_infogain did not record "
                         "its settings for (another model or an older version); use another --use_cache path")
    dbdict[SETTINGS_KEY] = settings
    dbdict.commit()
