"""Shared fixtures: the bundled tiny random LLaDA and helpers to run the sampler on it."""

import json
from collections import Counter

import pytest
import torch

from lm_eval_infogain.models.registry import load


@pytest.fixture(scope="session")
def tiny():
    """(adapter, tokenizer) of the bundled tiny-random-llada, float32 on CPU."""
    return load("tiny-random-llada", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def prompts(tiny):
    """Prompts of different lengths, so batches need padding."""
    _, tokenizer = tiny
    texts = ["Solve: 1 2 3 4", "Write a story about a lighthouse.", "0123", "The answer is: 44-15=29"]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tests run many tiny forwards: on a loaded CPU, torch's worker threads waiting on each other
    cost far more than they give (the sampler tests ran several times slower with two threads on two
    busy cores). Subprocesses whose outputs are compared with this process's get OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fixed_torch_seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def pc_baseline_file(tiny, tmp_path_factory):
    """A pc_sampler background table counted over a few task-like lines with the bundled tokenizer."""
    _, tokenizer = tiny
    counts = Counter()
    for line in ["The answer is 42.", "Solve the puzzle: 1234 3412", "Write a story about the sea."]:
        counts.update(tokenizer(line, add_special_tokens=False)["input_ids"])
    path = tmp_path_factory.mktemp("pc") / "freq.json"
    table = {"tokenizer": "tiny-random-llada", "source": "unit", "total": sum(counts.values()),
             "counts": {str(token): count for token, count in sorted(counts.items())}}
    path.write_text(json.dumps(table))
    return str(path)
