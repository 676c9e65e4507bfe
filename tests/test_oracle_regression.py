"""CI regression on the exact-model testbed: relations the grid (launch/oracle_grid.sh, results/oracle.md)
found, pinned on a small slice, paired, so that a sampler change that breaks them fails.

On sudoku_4x4_many with exact marginals and 2 tokens per step, confidence order (`original`) commits
digits that are each likely but contradict each other, and Info-Gain's lookahead, which sees a
contradiction as the uniform output it leads to, avoids them: Info-Gain solves more puzzles, exact McNemar
p < 0.01 on the first 40 puzzles. With one token per step both solve every puzzle (the sanity row).
Where the lookahead does not help, the grid found (500 puzzles, noise σ = 1 on the log-marginals, 4 tokens
per step) random order solving far more puzzles than Info-Gain (0.726 against 0.382), and `eb_sampler`
solving every puzzle; on oracle_hmm with exact marginals and 2 tokens per step, LookUM finds the most
likely continuation less often than Info-Gain (0.770 against 0.958). Each is pinned here on 40 documents.
"""

import numpy
import pytest

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.leaderboard import paired_statistics
from lm_eval_infogain.models.oracles import load_oracle
from lm_eval_infogain.tasks import oracle_hmm, sudoku

PUZZLES = 40
SIGNIFICANCE = 0.01


def noisy_sampler(name: str, noise: float) -> InfoGainSampler:
    """The exact model with oracle_noise=noise and its checkpoint's sampler defaults."""
    defaults = InfoGainSampler.from_pretrained(name, device="cpu").defaults
    return InfoGainSampler(*load_oracle(name, "cpu", noise), **defaults)


@pytest.fixture(scope="module")
def puzzles():
    return sudoku.load_many_solution_dataset(sudoku_num_puzzles=PUZZLES)["test"]


def solved_by(sampler, docs, **keywords) -> list[int]:
    """[0/1 per puzzle]: solved by the rules."""
    prompts = [sampler.tokenizer(sudoku.doc_to_text(doc), add_special_tokens=False)["input_ids"] for doc in docs]
    out = sampler.sample(prompts, seed=list(range(len(docs))), **keywords)
    return [int(sudoku.score_answer(doc["Puzzle"], text)) for doc, text in zip(docs, out.text)]


@pytest.fixture(scope="module")
def solved(puzzles):
    """{(mode, steps): [0/1 per puzzle]} on the first PUZZLES puzzles of sudoku_4x4_many, exact marginals."""
    sampler = InfoGainSampler.from_pretrained("oracle-sudoku", device="cpu")
    return {(mode, steps): solved_by(sampler, puzzles, mode=mode, steps=steps)
            for mode, steps in (("original", 12), ("info_gain", 12), ("original", 24), ("info_gain", 24))}


def assert_wins(ours: list[int], theirs: list[int]) -> None:
    result = paired_statistics(numpy.array(ours, dtype=float), numpy.array(theirs, dtype=float),
                               list(range(len(ours))))
    assert result["test"] == "exact McNemar"
    assert result["difference"] > 0 and result["p_value"] < SIGNIFICANCE, result


def test_info_gain_solves_more_many_solution_puzzles_than_confidence_order_at_two_tokens_per_step(solved):
    assert_wins(solved["info_gain", 12], solved["original", 12])


def test_exact_marginals_one_token_per_step_solve_every_puzzle(solved):
    assert solved["original", 24] == solved["info_gain", 24] == [1] * PUZZLES


def test_under_noise_random_order_solves_more_than_info_gain_and_eb_sampler_solves_every_puzzle(puzzles):
    sampler = noisy_sampler("oracle-sudoku", 1.0)
    assert_wins(solved_by(sampler, puzzles, mode="random", steps=6), solved_by(sampler, puzzles, mode="info_gain", steps=6))
    assert solved_by(sampler, puzzles, mode="eb_sampler") == [1] * PUZZLES


def test_lookum_finds_the_most_likely_hmm_continuation_less_often_than_info_gain():
    sampler = InfoGainSampler.from_pretrained("oracle-hmm", device="cpu")
    docs = oracle_hmm.load_dataset(oracle_hmm_num_docs=PUZZLES)["test"]
    prompts = [sampler.tokenizer(oracle_hmm.doc_to_text(doc), add_special_tokens=False)["input_ids"] for doc in docs]
    is_map = {}
    for mode, variant in (("info_gain", "info_gain"), ("lookum", "lookum")):
        out = sampler.sample(prompts, mode="info_gain", variant=variant, steps=4, seed=list(range(PUZZLES)))
        is_map[mode] = [oracle_hmm.process_results(doc, [text])["is_map"] for doc, text in zip(docs, out.text)]
    assert_wins(is_map["info_gain"], is_map["lookum"])
