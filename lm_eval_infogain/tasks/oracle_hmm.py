"""The `oracle_hmm` task: continue a line of digits drawn from oracle-hmm's hidden Markov source.

Each document is a prefix of 6 digits (1-4) sampled from the source (models/oracle_hmm.py), distinct,
from a seeded `random.Random`; the prompt asks for the next 8 digits and ends with the prefix, so the
generation continues the chain. Every continuation of 8 digits is enumerated (4^8 of them), which gives
each document's most likely continuation (MAP) and the entropy of the continuation's distribution.

Metrics, per answer (its first 8 characters must be digits 1-4; anything else is `valid` 0 and scores as
the least likely continuation): `log_prob`, the exact log p(answer | prefix); `map_gap`, the MAP's
log-probability minus the answer's (0 = most likely); `is_map` (1 when the answer is a most likely
continuation); `entropy`, the distribution's own entropy (the expected -log_prob of an exact sample:
a reference, the same for every sampler); `valid`.
"""

import functools
import random
import re

import datasets

from lm_eval_infogain.models.oracle_hmm import (
    DIGITS, EMISSION, ENUMERATION_CHUNK, STATES, TRANSITION, continuation_log_probs, sequence_log_prob,
)
from lm_eval_infogain.tasks import common

PREFIX_LENGTH = 6
ANSWER_LENGTH = 8
DEFAULT_NUM_DOCS = 500
DEFAULT_SEED = 1234
METADATA_KEYS = ("oracle_hmm_num_docs", "oracle_hmm_seed")
MAX_DOCS = STATES ** PREFIX_LENGTH // 2  # distinct prefixes drawn at most (half of them)
ANSWER = re.compile(rf"[{DIGITS}]{{{ANSWER_LENGTH}}}")


def sample_prefix(rng: random.Random) -> dict:
    """A line of PREFIX_LENGTH digits emitted by the source (its parameters are in models/oracle_hmm.py)."""
    state, digits = rng.randrange(STATES), []
    for position in range(PREFIX_LENGTH):
        if position:
            state = rng.choices(range(STATES), TRANSITION[state])[0]
        digits.append(rng.choices(range(STATES), EMISSION[state])[0] + 1)
    return {"prefix": "".join(map(str, digits))}


def with_references(docs: list[dict]) -> list[dict]:
    """The documents with their MAP continuation, its log-probability, the least likely continuation's
    log-probability and the entropy (a chunk of documents at a time: one enumeration each)."""
    done = []
    for start in range(0, len(docs), ENUMERATION_CHUNK):
        chunk = docs[start:start + ENUMERATION_CHUNK]
        tables = continuation_log_probs([[int(d) for d in doc["prefix"]] for doc in chunk], ANSWER_LENGTH)
        for doc, table in zip(chunk, tables):  # table [4^8]
            best = int(table.argmax())
            best_digits = "".join(DIGITS[best // STATES ** power % STATES] for power in reversed(range(ANSWER_LENGTH)))
            done.append(doc | {"best": best_digits, "best_log_prob": float(table[best]),
                               "worst_log_prob": float(table.min()), "entropy": entropy(table)})
    return done


def entropy(log_probs) -> float:
    """-sum p log p of a distribution given as log-probabilities [N], summed by numpy (pairwise, one
    thread): torch's sum of 4^8 terms rounds differently with the number of threads."""
    return float(-(log_probs.exp() * log_probs).numpy().sum())


def load_dataset(**metadata) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset` hook; metadata oracle_hmm_num_docs (500), oracle_hmm_seed (1234)."""
    common.reject_unknown_keys(metadata, "oracle_hmm_", METADATA_KEYS)
    num_docs = common.int_option(metadata, "oracle_hmm_num_docs", DEFAULT_NUM_DOCS, minimum=1, maximum=MAX_DOCS,
                                 why=f"half the {STATES ** PREFIX_LENGTH} distinct prefixes")
    seed = common.int_option(metadata, "oracle_hmm_seed", DEFAULT_SEED, minimum=0)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(list(reference_docs(num_docs, seed)))})


@functools.lru_cache(maxsize=4)
def reference_docs(num_docs: int, seed: int) -> tuple[dict, ...]:
    """The documents with their references (an enumeration per document: once per process, which a grid
    of runs in one process, lm_eval_infogain.oracle_grid, shares)."""
    return tuple(with_references(common.draw_distinct(sample_prefix, lambda doc: doc["prefix"], num_docs, seed)))


def doc_to_text(doc: dict) -> str:
    return f"Continue this line of digits 1-4 with the next {ANSWER_LENGTH} digits.\n{doc['prefix']}"


def doc_to_target(doc: dict) -> str:
    return doc["best"]


def answer_log_prob(prefix: str, answer: str) -> float | None:
    """log p(answer | prefix), None when the answer does not start with 8 digits 1-4."""
    match = ANSWER.match(answer.strip())
    if match is None:
        return None
    return sequence_log_prob([int(d) for d in prefix], [int(d) for d in match.group()])


def process_results(doc: dict, results: list[str]) -> dict:
    log_prob = answer_log_prob(doc["prefix"], results[0])
    if log_prob is None:  # scored as the least likely continuation
        log_prob = doc["worst_log_prob"]
    gap = max(0.0, doc["best_log_prob"] - log_prob)  # the MAP is the largest; rounding aside
    return {"log_prob": log_prob, "map_gap": gap, "is_map": int(gap <= 1e-9), "entropy": doc["entropy"],
            "valid": int(ANSWER.match(results[0].strip()) is not None)}

