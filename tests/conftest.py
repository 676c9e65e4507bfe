"""Shared fixtures: the bundled tiny random LLaDA and helpers to run the sampler on it."""

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


@pytest.fixture(autouse=True)
def fixed_torch_seed():
    torch.manual_seed(0)
