"""Info-Gain's proposal and objective on hand-made logits, where the formula gives the answer."""

import math

import torch

from lm_eval_infogain.sampling.info_gain import InfoGain, duplicate_candidates, entropy, score_candidates
from lm_eval_infogain.sampling.strategies import StepContext, top_k_mask


def context(logits, masked, k):
    probs = torch.softmax(logits, -1)
    tokens = logits.argmax(-1)
    return StepContext(
        logits=logits, probs=probs, masked=masked, num_to_commit=torch.tensor([k]), tokens=tokens,
        confidence=probs.gather(-1, tokens[..., None]).squeeze(-1), entropy=entropy(logits),
        generators=[torch.Generator().manual_seed(0)], temperature=0.0,
    )


def test_entropy_of_uniform_and_one_hot():
    assert math.isclose(float(entropy(torch.zeros(8))), math.log(8), rel_tol=1e-6)
    assert float(entropy(torch.tensor([100.0, 0.0, 0.0]))) < 1e-6


def test_objective_adds_current_uncertainty_for_info_gain_only():
    current = torch.tensor([[0.1, 2.0, 0.5]])  # [B, L]
    commit = torch.tensor([[[True, False, False], [False, True, False], [False, False, True]]])
    next_mean = torch.tensor([[1.0, 0.2, 0.9]])
    info_gain = score_candidates(current, commit, next_mean, "info_gain")
    lookum = score_candidates(current, commit, next_mean, "lookum")
    torch.testing.assert_close(info_gain, torch.tensor([[-1.1, -2.2, -1.4]]))
    torch.testing.assert_close(lookum, torch.tensor([[-1.0, -0.2, -0.9]]))
    assert int(info_gain.argmax()) == 0 and int(lookum.argmax()) == 1


def test_choose_ignores_invalid_candidates():
    logits = torch.zeros(1, 3, 5)
    strategy = InfoGain(candidate_number=3, position_temperature=0.2, threshold=0.99, variant="lookum")
    ctx = context(logits, torch.ones(1, 3, dtype=torch.bool), 1)
    proposal = strategy.propose(ctx)
    proposal.valid[:] = torch.tensor([[True, False, True]])
    winner = strategy.choose(ctx, proposal, torch.tensor([[0.5, 0.0, 0.4]]))
    assert int(winner) == 2  # candidate 1 has the lowest next entropy but is invalid


def test_duplicate_position_sets_are_dropped():
    commit = torch.tensor([[[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]]], dtype=torch.bool)
    assert duplicate_candidates(commit).tolist() == [[False, True, False, True]]


def test_bypass_commits_confident_positions_without_lookahead():
    logits = torch.zeros(1, 4, 6)
    logits[0, 2, 3] = 20.0  # position 2 is near certain
    strategy = InfoGain(candidate_number=4, position_temperature=0.2, threshold=0.8, variant="info_gain")
    proposal = strategy.propose(context(logits, torch.ones(1, 4, dtype=torch.bool), 2))
    assert proposal.valid.tolist() == [[True, False, False, False]]
    assert proposal.commit[0, 0].tolist() == [False, False, True, False]  # min(k, |S|) = 1 position
    assert proposal.bypass.tolist() == [True]


def test_lookahead_candidates_commit_k_masked_positions():
    logits = torch.randn(1, 8, 6, generator=torch.Generator().manual_seed(1))
    masked = torch.tensor([[True, True, False, True, True, True, False, True]])
    strategy = InfoGain(candidate_number=6, position_temperature=0.2, threshold=0.99, variant="info_gain")
    ctx = context(logits, masked, 2)
    proposal = strategy.propose(ctx)
    assert (proposal.commit.sum(-1) == 2).all()
    assert not (proposal.commit & ~masked[:, None]).any()
    assert torch.equal(proposal.commit[:, 0], top_k_mask(ctx.confidence, masked, torch.tensor([2])))
    assert proposal.valid[0, 0] and proposal.valid.sum() >= 2


def test_top_k_mask_respects_per_row_k_and_eligibility():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.8, 0.6, 0.4]])
    eligible = torch.tensor([[True, True, True, False], [True, True, True, True]])
    mask = top_k_mask(scores, eligible, torch.tensor([2, 1]))
    assert mask.tolist() == [[True, False, True, False], [False, True, False, False]]


def test_one_candidate_commits_the_k_most_confident():
    """N = 1: no lookahead candidates at all (the proposal still has its [B, N, L] shape)."""
    logits = torch.randn(1, 5, 6, generator=torch.Generator().manual_seed(2))
    masked = torch.ones(1, 5, dtype=torch.bool)
    ctx = context(logits, masked, 2)
    proposal = InfoGain(candidate_number=1, position_temperature=0.2, threshold=0.99, variant="info_gain").propose(ctx)
    assert proposal.commit.shape == proposal.tokens.shape == (1, 1, 5) and proposal.valid.tolist() == [[True]]
    assert torch.equal(proposal.commit[:, 0], top_k_mask(ctx.confidence, masked, torch.tensor([2])))
