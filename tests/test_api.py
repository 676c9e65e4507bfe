"""InfoGainSampler: the notebook interface over the loop, with the paper's standalone-sampler keywords."""

import random

import pytest
import torch

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate
from lm_eval_infogain.tasks import sudoku


@pytest.fixture(scope="module")
def sudoku_sampler():
    return InfoGainSampler.from_pretrained("tiny-llada-sudoku", dtype="float32", device="cpu")


def puzzle_prompts(count: int) -> list[tuple[dict, str]]:
    rng = random.Random(7)
    docs = [sudoku.make_puzzle(rng) for _ in range(count)]
    return [(doc, sudoku.doc_to_text(doc)) for doc in docs]


def test_the_trained_model_solves_puzzles_through_the_notebook_interface(sudoku_sampler):
    """The checkpoint's own defaults (gen 24, one token per step) apply; Info-Gain solves some puzzles."""
    docs = puzzle_prompts(8)
    ids = [sudoku_sampler.tokenizer(text, add_special_tokens=False)["input_ids"] for _, text in docs]
    out = sudoku_sampler.sample(ids, candidate_number=8, position_temperature=0.2, threshold=0.8,
                                variant="info_gain")
    assert out.config.gen_length == 24 and out.config.mode == "info_gain"
    assert [len(row) for row in out.ids] == [24] * 8
    solved = [sudoku.score_answer(doc["Puzzle"], text) for (doc, _), text in zip(docs, out.text)]
    assert sum(solved) >= 2, out.text
    assert all(row["nfe"] >= 1 and row["cumulative_entropy"] > 0 for row in out.stats)


def test_same_loop_as_the_backend_with_the_papers_keyword_names(sudoku_sampler):
    (_, text), = puzzle_prompts(1)
    ids = sudoku_sampler.tokenizer(text, add_special_tokens=False)["input_ids"]
    out = sudoku_sampler.sample(ids, max_new_tokens=24, steps=12, block_size=12, mode="original", seed=5)
    adapter, _ = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    config = SamplerConfig(mode="original", gen_length=24, steps=12, block_length=12, use_cache="none")
    expected, stats = generate(adapter, [ids], config, [5])
    assert out.ids == expected and out.stats == stats


def test_a_padded_tensor_batch_equals_prompt_by_prompt(sudoku_sampler):
    tokenizer = sudoku_sampler.tokenizer
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for _, text in puzzle_prompts(2)]
    ids[1] = ids[1][3:]  # two lengths
    width = max(map(len, ids))
    batch = torch.tensor([[0] * (width - len(row)) + row for row in ids])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])
    together = sudoku_sampler.sample(batch, attention_mask=mask, seed=[1, 2], mode="info_gain")
    alone = [sudoku_sampler.sample(row, seed=seed, mode="info_gain").ids[0] for row, seed in zip(ids, [1, 2])]
    assert together.ids == alone


@pytest.mark.parametrize("keywords,message", [
    ({"block_sise": 4}, "keyword='block_sise' is invalid"),
    ({"variant": "greedy"}, "variant='greedy' is invalid"),
    ({"seed": [1, 2]}, "seed=[1, 2] is invalid"),
])
def test_bad_keywords_are_one_line_errors(sudoku_sampler, keywords, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sudoku_sampler.sample([1, 2, 3], **keywords)


def test_a_model_that_is_not_an_adapter_is_refused():
    with pytest.raises(ValueError, match="model='Linear' is invalid; allowed: an adapter"):
        InfoGainSampler(torch.nn.Linear(2, 2))
