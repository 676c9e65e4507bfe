"""Info-Gain sampling and its LookUM variant (arXiv:2602.18176).

Each step is a three-part cycle:
1. propose: candidate 0 commits the k most confident masked positions (tokens x0); candidates
   1..N-1 draw fresh tokens (identical to x0 at temperature 0) and pick k positions by top-k of
   c_i / T_pos + Gumbel. Duplicate position sets are dropped.
2. evaluate: the loop runs ONE batched forward over every candidate's next state.
3. choose: J(a) = -C(a) - H_next(a) (info_gain) or J(a) = -H_next(a) (lookum), where C(a) is the
   sum of the current entropies of the positions a commits and H_next(a) the mean entropy of the
   positions of the generation still masked after a (in every cache mode; loop.next_entropy_mean).
   Information gain is H(now) - H_next(a); H(now) is the same for every candidate, so it drops out.
   The winner's logits serve the next step: one forward per step.
Shortcuts with no lookahead: the block's last step commits everything left; if any masked position
has top-1 probability >= threshold, the min(k, |S|) most confident of those S are committed; with
<= k masked positions, N <= 1 or T_pos <= 0 the k most confident are committed.

Parallel commits (`parallel_threshold` tau; ours, not the paper's): every masked position of the block
whose x0 has confidence >= tau is committed at once, with no lookahead, as Fast-dLLM's threshold rule
does; only a step where none reaches tau runs the cycle above. The block's steps are then dynamic: as
many as it needs, each committing at least the schedule's one token of a dynamic block.
"""

import torch

from lm_eval_infogain.sampling.contract import Option, Proposal, StepContext, Strategy
from lm_eval_infogain.sampling.strategies import NEG_INF, gumbel_noise, sample_tokens, top_k_mask


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis, computed in fp32. [..., V] -> [...].
    A token filtered out (logit -inf, see strategies.filter_logits) has p = 0 and adds nothing."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [..., V]
    return -(log_probs.exp() * log_probs.clamp(min=torch.finfo(torch.float32).min)).sum(-1)


def duplicate_candidates(commit: torch.Tensor) -> torch.Tensor:
    """[B, N, L] commit sets -> [B, N] True where an earlier candidate has the same position set."""
    same = (commit[:, :, None] == commit[:, None]).all(-1)  # [B, N, N]: same[b, j, i]
    earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=commit.device).tril(-1)  # i < j
    return (same & earlier).any(-1)


def score_candidates(current_entropy, commit, next_entropy_mean, variant: str) -> torch.Tensor:
    """J per candidate [B, N]: current_entropy [B, L], commit [B, N, L], next_entropy_mean [B, N]."""
    if variant == "lookum":
        return -next_entropy_mean
    committed_uncertainty = (commit * current_entropy[:, None]).sum(-1)  # [B, N]  C(a)
    return -committed_uncertainty - next_entropy_mean


class InfoGain(Strategy):
    needs_lookahead = True
    options = {
        "candidate_number": Option(8, int, "candidates per step, the first the k most confident"),
        "position_temperature": Option(0.2, float, "T_pos of the candidates' Gumbel-top-k positions"),
        "threshold": Option(0.8, float, "commit the confident ones without lookahead when any reaches it"),
        "variant": Option("info_gain", str, "info_gain: J = -C - H_next; lookum: J = -H_next"),
        "parallel_threshold": Option(None, float, "commit every position this confident at once (ours)"),
    }

    def __init__(self, candidate_number: int, position_temperature: float, threshold: float, variant: str,
                 parallel_threshold: float | None = None):
        self.candidate_number = candidate_number
        self.position_temperature = position_temperature
        self.threshold = threshold
        self.variant = variant
        self.parallel_threshold = parallel_threshold
        self.dynamic_steps = parallel_threshold is not None

    def propose(self, ctx: StepContext) -> Proposal:
        k = ctx.num_to_commit  # [B]
        masked = ctx.masked  # [B, L]
        remaining = masked.sum(-1)  # [B]
        confident = masked & (ctx.probs.amax(-1) >= self.threshold)  # [B, L]  S
        bypass = confident.any(-1) & (k < remaining)  # [B]
        first = torch.where(
            bypass[:, None],
            top_k_mask(ctx.confidence, confident, torch.minimum(k, confident.sum(-1))),
            top_k_mask(ctx.confidence, masked, k),
        )  # [B, L]; on the last step k == remaining, so this commits everything left
        if self.parallel_threshold is not None:
            parallel = masked & (ctx.confidence >= self.parallel_threshold)  # [B, L]
            in_parallel = parallel.any(-1) & (k < remaining)  # [B]
            first = torch.where(in_parallel[:, None], parallel, first)  # [B, L]
            bypass = bypass | in_parallel
        extra = self.candidate_number - 1
        # Random draws happen every step whatever the row decides, so a prompt's stream of noise
        # (and so its output) does not depend on the other prompts in its batch.
        position_noise = gumbel_noise(ctx.generators, (extra, masked.shape[1]), masked.device).float()  # [B, N-1, L]
        fresh_tokens = sample_tokens(ctx.logits[:, None].expand(-1, extra, -1, -1), ctx.generators,
                                     ctx.temperature) if extra else ctx.tokens[:, None][:, :0]  # [B, N-1, L]
        lookahead = ~bypass & (k < remaining) & (extra > 0) & (self.position_temperature > 0)  # [B]
        if extra and self.position_temperature > 0:
            scores = ctx.confidence[:, None] / self.position_temperature + position_noise  # [B, N-1, L]
            others = top_k_mask(scores, masked[:, None].expand_as(scores), k[:, None].expand(-1, extra))
        else:
            others = torch.zeros_like(position_noise, dtype=torch.bool)
        commit = torch.cat([first[:, None], others], dim=1)  # [B, N, L]
        tokens = torch.cat([ctx.tokens[:, None], fresh_tokens], dim=1)  # [B, N, L]
        valid = torch.cat([torch.ones_like(lookahead[:, None]), lookahead[:, None].expand(-1, extra)], dim=1)
        valid &= ~duplicate_candidates(commit)
        return Proposal(commit, tokens, valid, bypass=bypass)

    def choose(self, ctx: StepContext, proposal: Proposal, next_entropy_mean: torch.Tensor) -> torch.Tensor:
        """Index [B] of the argmax-J valid candidate; next_entropy_mean [B, N] (ignored where invalid)."""
        objective = score_candidates(ctx.entropy, proposal.commit, next_entropy_mean, self.variant)
        return objective.masked_fill(~proposal.valid, NEG_INF).argmax(-1)
