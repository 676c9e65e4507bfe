"""Info-Gain's proposal and objective on hand-made logits, where the formula gives the answer."""

import math

import pytest
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


def test_parallel_threshold_commits_every_position_above_it_without_lookahead():
    logits = torch.zeros(2, 5, 6)
    logits[0, [1, 3, 4], 2] = 20.0  # row 0: three near-certain positions, position 4 already committed
    masked = torch.tensor([[True, True, True, True, False], [True] * 5])
    strategy = InfoGain(candidate_number=4, position_temperature=0.2, threshold=0.8, variant="info_gain",
                        parallel_threshold=0.9)
    assert strategy.dynamic_steps
    ctx = context(logits, masked, 1)
    ctx.num_to_commit = torch.tensor([1, 1])
    proposal = strategy.propose(ctx)
    # row 0: both masked positions above 0.9 at once (k is 1), no candidate evaluated
    assert proposal.commit[0, 0].tolist() == [False, True, False, True, False]
    assert proposal.valid[0].tolist() == [True, False, False, False] and proposal.bypass.tolist() == [True, False]
    # row 1: nothing reaches 0.9 (uniform), so its lookahead runs for k = 1 with every candidate
    assert proposal.commit[1, 0].sum() == 1 and proposal.valid[1].sum() > 1


@pytest.mark.parametrize("settings,message", [
    (dict(parallel_threshold=0), "parallel_threshold=0 is invalid; allowed: a probability in (0, 1]"),
    (dict(parallel_threshold=1.5), "parallel_threshold=1.5 is invalid"),
    (dict(parallel_threshold="0.9"), "parallel_threshold='0.9' is invalid"),
    (dict(mode="fast_dllm", parallel_threshold=0.9), "parallel_threshold=0.9 is invalid; allowed: unset for "
                                                      "mode=fast_dllm"),
])
def test_bad_parallel_threshold_is_one_clear_line(settings, message):
    from lm_eval_infogain.sampling.config import SamplerConfig

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        SamplerConfig(**settings)


def test_parallel_threshold_takes_fewer_forwards_on_the_sudoku_model():
    """tiny-llada-sudoku is confident on most cells: committing all of them at once saves forwards, and
    every output is complete; with tau = 1 nothing qualifies and the decode is Info-Gain's, step for step
    (a dynamic block of width steps is the schedule's one token per step)."""
    from lm_eval_infogain.models.registry import load
    from lm_eval_infogain.sampling.config import SamplerConfig
    from lm_eval_infogain.sampling.loop import generate
    from lm_eval_infogain.tasks import sudoku

    adapter, tokenizer = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    prompts = [tokenizer(sudoku.doc_to_text(doc), add_special_tokens=False)["input_ids"]
               for doc in sudoku.load_dataset()["test"].select(range(8))]
    base = dict(gen_length=24, steps=24, block_length=24, use_cache="none")
    seeds = list(range(len(prompts)))
    plain, plain_stats = generate(adapter, prompts, SamplerConfig(**base), seeds)
    parallel, parallel_stats = generate(adapter, prompts, SamplerConfig(parallel_threshold=0.9, **base), seeds)
    strict, strict_stats = generate(adapter, prompts, SamplerConfig(parallel_threshold=1.0, **base), seeds)
    assert all(adapter.spec.mask_id not in row and len(row) == 24 for row in parallel)
    assert sum(row["nfe"] for row in parallel_stats) < 0.75 * sum(row["nfe"] for row in plain_stats)
    assert strict == plain and [row["nfe"] for row in strict_stats] == [row["nfe"] for row in plain_stats]


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


# ---------------------------------------------------------------- H_next inside the loop

GEN, BLOCK = 16, 8  # two blocks: while decoding the first, the second is masked after it


def reference_entropy(logits: torch.Tensor) -> float:
    return float(torch.distributions.Categorical(logits=logits.double()).entropy())


class Lookahead:
    """A Decoder at the start of the first block of one prompt, its forwards and its choice recorded."""

    def __init__(self, adapter, prompt, **settings):
        from lm_eval_infogain.sampling.config import SamplerConfig
        from lm_eval_infogain.sampling.loop import Decoder, build_canvas

        config = SamplerConfig(mode="info_gain", gen_length=GEN, steps=GEN, block_length=BLOCK, **settings)
        self.canvas = build_canvas([prompt], GEN, adapter.spec, "cpu")
        self.decoder = Decoder(adapter, config, self.canvas, [torch.Generator().manual_seed(0)])
        self.block = (self.canvas.prompt_length, self.canvas.prompt_length + BLOCK)
        self.forwards = []  # (logits_start, logits [R, W, V]) of every forward
        forward = self.decoder.forward

        def recorded(ids, rows, window, logits_range, *args, **kwargs):
            hidden = forward(ids, rows, window, logits_range, *args, **kwargs)  # [R, W, C]
            self.forwards.append((logits_range[0], self.decoder.logits(hidden)))  # [R, W, V]
            return hidden

        self.decoder.forward = recorded
        self.next_entropy_means = []
        choose = self.decoder.strategy.choose
        self.decoder.strategy.choose = lambda ctx, proposal, means: (
            self.next_entropy_means.append(means[0].clone()) or choose(ctx, proposal, means))
        self.logits = self.decoder.start_block(*self.block, torch.tensor([True]))

    def evaluate(self, commit_sets: list[list[int]], tokens: list[dict[int, int]] | None = None):
        """Evaluates candidates committing block offsets commit_sets (with x0, or the given tokens);
        returns (H_next [N] the strategy chose with, the proposal, the winner [1])."""
        from lm_eval_infogain.sampling.strategies import Proposal

        k = len(commit_sets[0])
        self.ctx = self.decoder.step_context(self.logits, *self.block, torch.tensor([k]))
        commit = torch.zeros(1, len(commit_sets), BLOCK, dtype=torch.bool)  # [1, N, Lb]
        proposed = self.ctx.tokens[:, None].repeat(1, len(commit_sets), 1)  # [1, N, Lb]
        for candidate, offsets in enumerate(commit_sets):
            commit[0, candidate, offsets] = True
            for offset, token in (tokens[candidate] if tokens else {}).items():
                proposed[0, candidate, offset] = token
        proposal = Proposal(commit, proposed, torch.ones(1, len(commit_sets), dtype=torch.bool))
        winner, _ = self.decoder.evaluate(self.ctx, proposal, self.logits, *self.block)
        return self.next_entropy_means[-1], proposal, winner

    def state(self, proposal, candidate: int) -> torch.Tensor:
        """The canvas [T] with the candidate's tokens written in, nothing else changed."""
        ids = self.canvas.ids[0].clone()
        start, end = self.block
        ids[start:end] = torch.where(proposal.commit[0, candidate], proposal.tokens[0, candidate], ids[start:end])
        return ids


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@torch.no_grad()
def test_next_entropy_is_the_mean_over_every_masked_position_of_the_generation(tiny, prompts, cache):
    adapter = tiny[0]
    lookahead = Lookahead(adapter, prompts[1], use_cache=cache, early_stop=False)
    means, proposal, _ = lookahead.evaluate([[0, 1], [2, 5], [3, 7]])
    (_, block_start_logits), (start, candidate_logits) = lookahead.forwards  # [1, T - P, V], [3, W, V]
    prompt_length, total = lookahead.canvas.prompt_length, lookahead.canvas.ids.shape[1]
    assert start == prompt_length and block_start_logits.shape[1] == GEN
    # none and prefix recompute every position to the end; dual only the block
    assert candidate_logits.shape[1] == (BLOCK if cache == "dual" else GEN)
    for candidate in range(3):
        ids = lookahead.state(proposal, candidate)
        entropies = []
        for position in range(prompt_length, total):
            if ids[position] != adapter.spec.mask_id:
                continue
            offset = position - prompt_length
            fresh = offset < candidate_logits.shape[1]  # else: as computed at the block's start
            logits = candidate_logits[candidate, offset] if fresh else block_start_logits[0, offset]
            entropies.append(reference_entropy(logits))
        assert len(entropies) == GEN - 2  # the divisor counts every masked position of the generation
        assert math.isclose(float(means[candidate]), sum(entropies) / len(entropies), rel_tol=1e-5)


@torch.no_grad()
def test_early_stop_fills_after_the_winner_not_inside_the_candidates(tiny, prompts):
    adapter = tiny[0]
    eos, mask_id = adapter.spec.eos_id, adapter.spec.mask_id
    lookahead = Lookahead(adapter, prompts[0], use_cache="none", early_stop=True)
    # candidate 0 writes EOS at offset 1; candidate 1 commits two ordinary tokens
    means, proposal, _ = lookahead.evaluate([[0, 1], [2, 3]], tokens=[{1: eos}, {2: 7, 3: 8}])
    _, candidate_logits = lookahead.forwards[1]  # [2, GEN, V], none: the whole generation
    ids = lookahead.state(proposal, 0)
    masked = (ids[lookahead.canvas.prompt_length:] == mask_id).nonzero().flatten().tolist()
    assert len(masked) == GEN - 2  # the EOS candidate still sees its masks after the EOS ...
    expected = sum(reference_entropy(candidate_logits[0, offset]) for offset in masked) / len(masked)
    assert math.isclose(float(means[0]), expected, rel_tol=1e-5)
    assert float(means[0]) > 0.1  # ... where filling them with EOS would leave none: an H_next of 0
    # the winner is filled once committed
    lookahead.decoder.commit(lookahead.ctx, proposal, torch.tensor([0]), *lookahead.block)
    generation = lookahead.canvas.ids[0, lookahead.canvas.prompt_length:].tolist()
    assert generation[1:] == [eos] * (GEN - 1) and generation[0] != mask_id
