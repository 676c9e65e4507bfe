"""The built-in score-based modes, and the helpers any strategy may use (top-k without host syncs,
per-prompt noise, token draws, top-k/top-p filters).

Each mode is a class of the public contract (contract.py), built by the loop exactly as a user's strategy
is: it sees a `StepContext` (the block's logits and what derives from them) and returns a `Proposal`.
Score-based modes propose one candidate: the k best positions by their score, or as many as a count rule
says. Info-Gain (info_gain.py) proposes several and declares `needs_lookahead`, so the loop evaluates them
in one batched forward and lets it choose. The loop owns blocks, schedule, cache and stats; no strategy has
a loop of its own.
"""

import functools

import torch

from lm_eval_infogain.sampling.contract import Option, Proposal, StepContext, Strategy

NEG_INF = float("-inf")


def top_k_mask(scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the k[b] highest-scoring eligible positions of each row, without host syncs."""
    scores = scores.masked_fill(~eligible, NEG_INF)  # [..., L]
    order = scores.argsort(dim=-1, descending=True, stable=True)  # [..., L]
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                             .expand_as(order).contiguous())  # [..., L]
    return (ranks < k[..., None]) & eligible


def uniform_noise(generators, shape, device) -> torch.Tensor:
    """[B, *shape] uniform(0, 1) noise in float64, each row from its own prompt's generator."""
    rows = [torch.rand(shape, generator=g, device=device, dtype=torch.float64) for g in generators]
    return torch.stack(rows).clamp_(min=1e-20, max=1 - 1e-16)


def gumbel_noise(generators, shape, device) -> torch.Tensor:
    """[B, *shape] standard Gumbel noise in float64 (low-precision Gumbel-max hurts quality)."""
    return -torch.log(-torch.log(uniform_noise(generators, shape, device)))


def sample_tokens(logits, generators, temperature: float) -> torch.Tensor:
    """argmax(logits / T + Gumbel) in float64; plain argmax at T = 0. logits [B, ..., V] -> [B, ...]."""
    if temperature == 0:
        return logits.argmax(-1)
    noise = gumbel_noise(generators, logits.shape[1:], logits.device)
    return (logits.double() / temperature + noise).argmax(-1)


def keep_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """logits [..., V] with every token below the k-th largest logit set to -inf (ties with it kept)."""
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # [..., 1]
    return logits.masked_fill(logits < kth, NEG_INF)


def keep_top_p(logits: torch.Tensor, scaled: torch.Tensor, top_p: float) -> torch.Tensor:
    """logits [..., V] with -inf outside the nucleus of softmax(scaled): the most likely tokens until their
    probability exceeds top_p, the one that crosses it included (so at least one token)."""
    sorted_scaled, order = scaled.sort(dim=-1, descending=True)  # [..., V]
    sorted_probs = sorted_scaled.softmax(-1)  # [..., V]
    better_mass = sorted_probs.cumsum(-1) - sorted_probs  # [..., V] probability of the tokens ranked above
    remove = torch.zeros_like(better_mass, dtype=torch.bool).scatter_(-1, order, better_mass > top_p)  # [..., V]
    return logits.masked_fill(remove, NEG_INF)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None, temperature: float) -> torch.Tensor:
    """Dream's `diffusion_generate` filter: top_p's nucleus (of the distribution tokens are drawn from,
    at this temperature), then top_k; removed tokens get -inf. Unset (None) filters nothing.
    logits [..., V] -> [..., V]: the distribution that gives confidence, entropy and the drawn tokens."""
    if top_p is not None and top_p < 1:
        logits = keep_top_p(logits, logits / temperature if temperature > 0 else logits, top_p)
    if top_k is not None:
        logits = keep_top_k(logits, top_k)
    return logits


def confidence_score(ctx: StepContext) -> torch.Tensor:
    return ctx.confidence


def random_score(ctx: StepContext) -> torch.Tensor:
    return uniform_noise(ctx.generators, ctx.masked.shape[1:], ctx.masked.device).float()


def neg_entropy_score(ctx: StepContext) -> torch.Tensor:
    return -ctx.entropy


def margin_score(ctx: StepContext) -> torch.Tensor:
    top2 = ctx.probs.topk(2, dim=-1).values  # [B, Lb, 2]
    return top2[..., 0] - top2[..., 1]


def pc_score(ctx: StepContext, background_log_freq: torch.Tensor, decay: float, cap: float) -> torch.Tensor:
    """PC-sampler: exp(-decay * offset in block) * min(cap, -confidence * log f_bg(x0))."""
    offsets = torch.arange(ctx.tokens.shape[-1], device=ctx.tokens.device)  # [Lb]
    content = (-ctx.confidence * background_log_freq[ctx.tokens]).clamp(max=cap)  # [B, Lb]
    return torch.exp(-decay * offsets) * content


def sorted_masked(values: torch.Tensor, masked: torch.Tensor, descending: bool) -> torch.Tensor:
    """values of the masked positions sorted per row; unmasked ones pushed to the end as +-inf."""
    fill = NEG_INF if descending else float("inf")
    return values.masked_fill(~masked, fill).sort(dim=-1, descending=descending).values  # [B, Lb]


def at_least_one(count: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Every row with a masked position commits at least one token per step."""
    return torch.maximum(count, masked.any(-1).long())


def fast_dllm_threshold_count(ctx: StepContext, threshold: float) -> torch.Tensor:
    """Fast-dLLM threshold rule: every position with confidence >= threshold, and the most confident."""
    return at_least_one((ctx.masked & (ctx.confidence >= threshold)).sum(-1), ctx.masked)


def fast_dllm_factor_count(ctx: StepContext, factor: float) -> torch.Tensor:
    """Fast-dLLM factor rule: the largest n with c(j) >= 1 - factor / (j + 1) for every j <= n."""
    confidence = sorted_masked(ctx.confidence, ctx.masked, descending=True)  # [B, Lb]
    rank = torch.arange(1, confidence.shape[-1] + 1, device=confidence.device)  # n = 1..Lb
    holds = confidence >= 1 - factor / (rank + 1)  # [B, Lb]
    return at_least_one(holds.long().cumprod(-1).sum(-1), ctx.masked)


def entropy_budget_count(ctx: StepContext, gamma: float) -> torch.Tensor:
    """EB-sampler: the longest prefix (by ascending entropy) whose entropy sum minus its largest <= gamma."""
    entropy = sorted_masked(ctx.entropy, ctx.masked, descending=False)  # [B, Lb]
    before_largest = entropy.cumsum(-1) - entropy  # ascending, so the largest is the last one
    holds = before_largest <= gamma  # [B, Lb]; NaN (inf - inf) past the masked ones compares False
    return at_least_one(holds.long().cumprod(-1).sum(-1), ctx.masked)


class ScoreStrategy(Strategy):
    """Commit the masked positions with the highest score: the schedule's k of them, or as many as
    a `count` rule says (Fast-dLLM, EB-sampler), in which case a block takes as many steps as it needs."""

    def __init__(self, score, count=None):
        self.score = score
        self.count = count
        self.dynamic_steps = count is not None

    def propose(self, ctx: StepContext) -> Proposal:
        # A rule's count is never capped by the schedule (Fast-dLLM transfers every position its rule
        # admits). A dynamic block's schedule gives k = 1 per step and everything on its last step, so
        # as a floor it only guarantees that the block ends.
        count = ctx.num_to_commit if self.count is None else torch.maximum(self.count(ctx), ctx.num_to_commit)
        commit = top_k_mask(self.score(ctx), ctx.masked, count)  # [B, Lb]
        valid = torch.ones(commit.shape[0], 1, dtype=torch.bool, device=commit.device)
        return Proposal(commit[:, None], ctx.tokens[:, None], valid)


class Original(ScoreStrategy):
    """LLaDA's low-confidence remasking: the k most confident positions."""

    def __init__(self):
        super().__init__(confidence_score)


class Random(ScoreStrategy):
    """k positions drawn uniformly (LLaDA's random remasking)."""

    def __init__(self):
        super().__init__(random_score)


class Entropy(ScoreStrategy):
    """The k positions of lowest entropy."""

    def __init__(self):
        super().__init__(neg_entropy_score)


class Margin(ScoreStrategy):
    """The k positions of largest top-1 minus top-2 probability."""

    def __init__(self):
        super().__init__(margin_score)


class FastDLLM(ScoreStrategy):
    """Fast-dLLM's parallel decoding: the threshold rule, or the factor rule when factor is set."""

    options = {"threshold": Option(0.8, float, "commit every position at least this confident"),
               "factor": Option(None, float, "the factor rule's f (unset: the threshold rule)")}

    def __init__(self, threshold: float, factor: float | None):
        if factor is None:
            super().__init__(confidence_score, lambda ctx: fast_dllm_threshold_count(ctx, threshold))
        else:
            super().__init__(confidence_score, lambda ctx: fast_dllm_factor_count(ctx, factor))


class EBSampler(ScoreStrategy):
    """EB-sampler: the lowest-entropy positions within an entropy budget."""

    options = {"gamma": Option(0.01, float, "the entropy budget")}

    def __init__(self, gamma: float):
        super().__init__(neg_entropy_score, lambda ctx: entropy_budget_count(ctx, gamma))


@functools.lru_cache(maxsize=4)
def background_log_frequencies(path: str, vocab_size: int, device: str) -> torch.Tensor:
    """log f_bg [V] of pc_sampler's baseline file, read once per (file, vocabulary, device)."""
    # imported here: pc_baseline imports the model registry, which imports config, which imports the modes
    from lm_eval_infogain.pc_baseline import load_baseline

    return load_baseline(path, vocab_size).log().to(device)


class PCSampler(ScoreStrategy):
    """PC-sampler: position-aware calibration of confidence by a background token frequency."""

    options = {"pc_baseline": Option(None, str, "token-frequency JSON (python -m lm_eval_infogain.pc_baseline)"),
               "pc_lambda": Option(0.25, float, "position decay"),
               "pc_alpha": Option(10.0, float, "cap on -confidence * log f_bg")}

    def __init__(self, background_log_freq: torch.Tensor, pc_lambda: float, pc_alpha: float):
        super().__init__(lambda ctx: pc_score(ctx, background_log_freq, pc_lambda, pc_alpha))

    @classmethod
    def from_options(cls, options: dict, spec, device) -> "PCSampler":
        log_freq = background_log_frequencies(options["pc_baseline"], spec.vocab_size, str(device))
        return cls(log_freq, options["pc_lambda"], options["pc_alpha"])
