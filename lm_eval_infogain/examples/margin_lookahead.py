"""Margin order with a one-step lookahead, as a user would write it: one file, run by

    lm_eval --model mdm_infogain --tasks sudoku_4x4 --limit 20 --model_args \
        pretrained=tiny-llada-sudoku,mode=lm_eval_infogain.examples.margin_lookahead:MarginLookahead,sampler.spread=0.2
"""

import torch

from lm_eval_infogain.sampling.config import check
from lm_eval_infogain.sampling.contract import Option, Proposal, StepContext, Strategy
from lm_eval_infogain.sampling.info_gain import duplicate_candidates
from lm_eval_infogain.sampling.strategies import gumbel_noise, margin_score, top_k_mask


class MarginLookahead(Strategy):
    """Candidate 0 commits the k masked positions of largest margin (top-1 minus top-2 probability), the
    others the k largest of margin + spread * Gumbel noise; the loop forwards each distinct candidate once
    and the one that leaves the least mean entropy over the positions still masked (H_next) wins."""

    needs_lookahead = True
    options = {"candidates": Option(4, int, "commit sets tried per step; 1 is plain margin order"),
               "spread": Option(0.1, float, "scale of the Gumbel noise on the margins; 0 tries one set")}

    def __init__(self, candidates: int, spread: float):
        check(1 <= candidates <= 64, "sampler.candidates", candidates, "an integer in [1, 64]")
        check(spread >= 0, "sampler.spread", spread, "a number >= 0")
        self.candidates, self.spread = candidates, spread

    def propose(self, ctx: StepContext) -> Proposal:
        margin = margin_score(ctx)[:, None]  # [B, 1, L]
        # drawn every step, whatever a row needs: a prompt's noise never depends on its batch
        noise = gumbel_noise(ctx.generators, (self.candidates - 1, margin.shape[-1]), margin.device).float()
        scores = torch.cat([margin, margin + self.spread * noise], dim=1)  # [B, N, L]
        commit = top_k_mask(scores, ctx.masked[:, None].expand_as(scores), ctx.num_to_commit[:, None])  # [B, N, L]
        return Proposal(commit, ctx.tokens[:, None].expand_as(commit), ~duplicate_candidates(commit))

    def choose(self, ctx: StepContext, proposal: Proposal, next_entropy_mean: torch.Tensor) -> torch.Tensor:
        return next_entropy_mean.masked_fill(~proposal.valid, float("inf")).argmin(-1)  # [B]
