"""CI regression on the exact-model testbed: relations the grid (launch/oracle_grid.sh, results/oracle.md)
found, pinned on a small slice, paired, so that a sampler change that breaks them fails.

On sudoku_4x4_many with exact marginals and 2 tokens per step, confidence order (`original`) commits
digits that are each likely but contradict each other, and Info-Gain's lookahead, which sees a
contradiction as the uniform output it leads to, avoids them: Info-Gain solves more puzzles, exact McNemar
p < 0.01 on the first 40 puzzles. With one token per step both solve every puzzle (the sanity row).
"""

import numpy
import pytest

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.leaderboard import paired_statistics
from lm_eval_infogain.tasks import sudoku

PUZZLES = 40
SIGNIFICANCE = 0.01


@pytest.fixture(scope="module")
def solved():
    """{(mode, steps): [0/1 per puzzle]} on the first PUZZLES puzzles of sudoku_4x4_many."""
    sampler = InfoGainSampler.from_pretrained("oracle-sudoku", device="cpu")
    docs = sudoku.load_many_solution_dataset(sudoku_num_puzzles=PUZZLES)["test"]
    prompts = [sampler.tokenizer(sudoku.doc_to_text(doc), add_special_tokens=False)["input_ids"] for doc in docs]
    found = {}
    for mode, steps in (("original", 12), ("info_gain", 12), ("original", 24), ("info_gain", 24)):
        out = sampler.sample(prompts, mode=mode, steps=steps, seed=list(range(PUZZLES)))
        found[mode, steps] = [int(sudoku.score_answer(doc["Puzzle"], text)) for doc, text in zip(docs, out.text)]
    return found


def test_info_gain_solves_more_many_solution_puzzles_than_confidence_order_at_two_tokens_per_step(solved):
    result = paired_statistics(numpy.array(solved["info_gain", 12], dtype=float),
                               numpy.array(solved["original", 12], dtype=float), list(range(PUZZLES)))
    assert result["test"] == "exact McNemar"
    assert result["difference"] > 0 and result["p_value"] < SIGNIFICANCE, result


def test_exact_marginals_one_token_per_step_solve_every_puzzle(solved):
    assert solved["original", 24] == solved["info_gain", 24] == [1] * PUZZLES
