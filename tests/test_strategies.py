"""Each mode's choice of positions on hand-built scores, where the expected commit set is known."""

import math

import torch

from lm_eval_infogain.sampling.info_gain import entropy
from lm_eval_infogain.sampling import strategies
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import make_strategy
from lm_eval_infogain.sampling.strategies import StepContext


def context_from_probs(probs: list[list[float]], masked: list[bool], k: int) -> StepContext:
    """A one-row context whose position i has token distribution probs[i]."""
    probs_tensor = torch.tensor([probs])  # [1, L, V]
    logits = probs_tensor.log()
    tokens = logits.argmax(-1)
    return StepContext(
        logits=logits, probs=probs_tensor, masked=torch.tensor([masked]), num_to_commit=torch.tensor([k]),
        tokens=tokens, confidence=probs_tensor.gather(-1, tokens[..., None]).squeeze(-1), entropy=entropy(logits),
        generators=[torch.Generator().manual_seed(0)], temperature=0.0,
    )


# position: 0 confident, 1 sharp runner-up margin, 2 flat, 3 already committed, 4 fairly confident
PROBS = [[0.90, 0.05, 0.05], [0.50, 0.49, 0.01], [0.34, 0.33, 0.33], [0.99, 0.005, 0.005], [0.70, 0.15, 0.15]]
MASKED = [True, True, True, False, True]


def committed(mode_args: dict, k: int) -> list[int]:
    ctx = context_from_probs(PROBS, MASKED, k)
    proposal = make_strategy(SamplerConfig(**mode_args)).propose(ctx)
    return proposal.commit[0, 0].nonzero().flatten().tolist()


def test_original_commits_most_confident():
    assert committed(dict(mode="original"), 2) == [0, 4]


def test_margin_prefers_large_top1_top2_gap():
    assert committed(dict(mode="margin"), 2) == [0, 4]  # gaps 0.85, 0.01, 0.01, 0.55
    chosen = committed(dict(mode="margin"), 3)
    assert {0, 4} < set(chosen) and 3 not in chosen


def test_entropy_commits_lowest_entropy():
    assert committed(dict(mode="entropy"), 1) == [0]
    assert committed(dict(mode="entropy"), 3) == [0, 1, 4]  # H: 0.39, 0.74, 1.10, 0.80


def test_random_commits_k_masked_positions():
    chosen = committed(dict(mode="random"), 3)
    assert len(chosen) == 3 and 3 not in chosen


# A dynamic mode's step gets k = 1 from its schedule (everything left on a block's last step): the
# rule's count is not capped by it, k is only the floor that ends the block.


def test_fast_dllm_threshold_commits_all_above_and_at_least_one():
    assert committed(dict(mode="fast_dllm", threshold=0.6), 1) == [0, 4]
    assert committed(dict(mode="fast_dllm", threshold=0.95), 1) == [0]  # none above: the most confident


def test_fast_dllm_factor_rule():
    # sorted confidences 0.90, 0.70, 0.50, 0.34; with f = 0.6: 1 - f/2 = 0.70, 1 - f/3 = 0.80
    assert committed(dict(mode="fast_dllm", factor=0.6), 1) == [0]
    # with f = 1.0: bounds 0.50, 0.667, 0.75 -> 0.90 and 0.70 pass, 0.50 fails
    assert committed(dict(mode="fast_dllm", factor=1.0), 1) == [0, 4]


def test_eb_sampler_entropy_budget():
    # ascending entropies 0.39 (pos 0), 0.74 (pos 1), 0.80 (pos 4), 1.10 (pos 2)
    assert committed(dict(mode="eb_sampler", gamma=0.1), 1) == [0]
    assert committed(dict(mode="eb_sampler", gamma=0.5), 1) == [0, 1]  # 0.39 <= 0.5 < 0.39 + 0.74
    assert committed(dict(mode="eb_sampler", gamma=1.5), 1) == [0, 1, 4]  # 1.14 <= 1.5 < 1.96
    assert committed(dict(mode="eb_sampler", gamma=2.0), 1) == [0, 1, 2, 4]


def test_a_dynamic_blocks_last_step_commits_everything_left():
    assert committed(dict(mode="fast_dllm", threshold=0.95), 4) == [0, 1, 2, 4]
    assert committed(dict(mode="eb_sampler", gamma=0.1), 4) == [0, 1, 2, 4]


def test_pc_sampler_discounts_common_tokens_and_late_positions():
    # three equally confident positions; token 0 is very common in the background corpus, token 1 rare
    probs = [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]
    ctx = context_from_probs(probs, [True, True, True], 1)
    log_freq = torch.tensor([0.9, 0.01, 0.09]).log()
    scores = strategies.pc_score(ctx, log_freq, decay=0.25, cap=10.0)
    assert int(scores.argmax()) == 1  # rare token beats the common one at offset 0; offset 2 decays
    torch.testing.assert_close(scores[0, 1], torch.tensor(0.8 * -math.log(0.01) * math.exp(-0.25)))
    capped = strategies.pc_score(ctx, log_freq, decay=0.0, cap=1.0)
    assert torch.allclose(capped[0, 1:], torch.tensor([1.0, 1.0]))


def test_filter_logits_keeps_dreams_nucleus_then_top_k():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()  # [V]
    kept = lambda filtered: (filtered > float("-inf")).nonzero().flatten().tolist()  # noqa: E731
    assert kept(strategies.filter_logits(logits, None, None, 0.0)) == [0, 1, 2, 3]
    assert kept(strategies.filter_logits(logits, None, 0.7, 0.0)) == [0, 1]  # 0.5, then 0.8 crosses 0.7
    assert kept(strategies.filter_logits(logits, None, 1.0, 0.0)) == [0, 1, 2, 3]
    assert kept(strategies.filter_logits(logits, 3, None, 0.0)) == [0, 1, 2]
    assert kept(strategies.filter_logits(logits, 1, 0.99, 0.0)) == [0]
    # the nucleus is of the distribution tokens are drawn from: at T = 0.5, p^2 renormalised = 0.68, 0.25, ...
    assert kept(strategies.filter_logits(logits, None, 0.6, 1.0)) == [0, 1]
    assert kept(strategies.filter_logits(logits, None, 0.6, 0.5)) == [0]
    # kept logits are unchanged, so their softmax is the renormalised distribution
    filtered = strategies.filter_logits(logits, 2, None, 0.0)
    torch.testing.assert_close(filtered.softmax(-1), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert math.isclose(float(entropy(filtered)), -(0.625 * math.log(0.625) + 0.375 * math.log(0.375)), rel_tol=1e-6)
    # a tie with the k-th largest is kept
    assert kept(strategies.filter_logits(torch.tensor([1.0, 2.0, 1.0, 0.0]), 2, None, 0.0)) == [0, 1, 2]
