"""The LM head and what the sampler reads of its distribution, streamed over the vocabulary.

A lookahead needs, at each still-masked position of each candidate, one number of the model's distribution:
its entropy. Computing it from the logits means writing fp32 logits [positions, V] and reading them back a
few times; `head_stats` instead computes the logits a slice of the vocabulary at a time from the head's
weights (each slice read once for all positions, so the weights once per call) and keeps per position a
running maximum m, the sum s of exp(logit - m) and the sum t of exp(logit - m) * (logit - m), from which

    entropy = log s - t / s        (nats; the same as -sum p log p)

and, beside it, the top-1 probability, the argmax (the mask token excluded, as the sampler never proposes it)
and that token's probability. Only a slice's fp32 logits [positions, chunk] ever exist.

A vocabulary that fits in one slice (the bundled tiny models') takes the step's own formulas on its logits
instead, so that their decodes are bitwise those of the logits path: the streamed sums agree with it to
about 1e-6 nats, and a random tiny model's near-uniform distributions give candidates H_next values closer
than that, whose order rounding could swap.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lm_eval_infogain.sampling.info_gain import entropy

# vocabulary rows per slice of the head, and at most this many fp32 logits in one slice (256 MiB)
VOCAB_CHUNK = 1 << 14
MAX_CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class OutputHead:
    """An LM head as data: logits = (hidden @ weight.T + bias) * scale in the weight's dtype, then fp32, which is
    how each of the project's models computes them (none has a logit softcap)."""

    weight: torch.Tensor  # [V, C]
    bias: torch.Tensor | None = None  # [V]
    scale: float | None = None  # LLaDA's scale_logits: 1 / sqrt(d_model)

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def logits(self, hidden: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """fp32 logits [..., end - start] of vocabulary rows [start, end) for hidden states [..., C]."""
        bias = None if self.bias is None else self.bias[start:end]
        logits = F.linear(hidden, self.weight[start:end], bias)
        return (logits if self.scale is None else logits * self.scale).float()


@dataclass
class HeadStats:
    entropy: torch.Tensor  # [M] fp32, nats
    top_probability: torch.Tensor  # [M] the largest probability (the mask token included)
    tokens: torch.Tensor  # [M] long, argmax of the logits with the mask token excluded
    confidence: torch.Tensor  # [M] probability of `tokens`


def head_stats(hidden: torch.Tensor, head: OutputHead, penalties: tuple[tuple[int, float], ...] = (),
               mask_id: int | None = None) -> HeadStats:
    """HeadStats of the distributions softmax(head(hidden)) for hidden states [M, C].

    penalties: (token, amount) pairs subtracted from those tokens' logits in this order (the sampler's EOS and
    PAD penalties; the order matters to rounding when PAD is EOS). The mask token keeps its probability in
    the distribution (entropy, top-1 probability, confidence's denominator) and is only excluded from the
    argmax. Equal to the same quantities of the full fp32 logits up to the summation order (see tests/test_head.py).
    """
    rows = hidden.shape[0]
    chunk = max(1, min(VOCAB_CHUNK, MAX_CHUNK_ELEMENTS // max(rows, 1)))
    if chunk >= head.vocab_size:  # one slice: the step's own formulas, bitwise those of the logits path
        return whole_vocabulary_stats(penalised_logits(hidden, head, penalties, 0, head.vocab_size), mask_id)
    running = None
    for start in range(0, head.vocab_size, chunk):
        end = min(start + chunk, head.vocab_size)
        running = merge(running, slice_stats(penalised_logits(hidden, head, penalties, start, end), start, mask_id))
    maximum, total, weighted, best, token = running
    return HeadStats(entropy=total.log() - weighted / total, top_probability=total.reciprocal(), tokens=token,
                     confidence=(best - maximum).exp() / total)


def penalised_logits(hidden, head: OutputHead, penalties, start: int, end: int) -> torch.Tensor:
    """fp32 logits [M, end - start] of vocabulary rows [start, end), the penalties subtracted."""
    logits = head.logits(hidden, start, end)
    for token, amount in penalties:
        if start <= token < end:
            logits[:, token - start] -= amount
    return logits


def whole_vocabulary_stats(logits: torch.Tensor, mask_id: int | None) -> HeadStats:
    """HeadStats from the whole fp32 logits [M, V], as the loop's step computes them."""
    probs = logits.softmax(-1)  # [M, V]
    entropies = entropy(logits)  # [M]
    if mask_id is not None:
        logits[:, mask_id] = float("-inf")
    tokens = logits.argmax(-1)  # [M]
    return HeadStats(entropy=entropies, top_probability=probs.amax(-1), tokens=tokens,
                     confidence=probs.gather(-1, tokens[:, None]).squeeze(-1))


def slice_stats(logits: torch.Tensor, start: int, mask_id: int | None) -> tuple:
    """(max m, sum exp(l - m), sum exp(l - m) (l - m), best non-mask logit, its token) of fp32 logits [M, c] of
    vocabulary rows start..; a -inf logit (a penalty of inf cannot happen: penalties are finite) adds 0."""
    maximum = logits.amax(-1)  # [M]
    shifted = logits - maximum[:, None]  # [M, c]
    weights = shifted.exp()  # [M, c]
    weighted = (weights * shifted.nan_to_num(neginf=0.0)).sum(-1)  # [M]
    total = weights.sum(-1)  # [M]
    if mask_id is not None and start <= mask_id < start + logits.shape[1]:
        logits[:, mask_id - start] = float("-inf")  # not a proposal (its probability is in `total` already)
    token = logits.argmax(-1)  # [M], the first of equal maxima
    best = logits.gather(-1, token[:, None]).squeeze(-1)  # [M]
    return maximum, total, weighted, best, token + start


def merge(running: tuple | None, piece: tuple) -> tuple:
    """Running stats of the slices so far and the next slice's (both as slice_stats returns them): rescale
    both sums to the larger maximum; an argmax tie keeps the earlier token, as torch.argmax does."""
    if running is None:
        return piece
    (max_a, total_a, weighted_a, best_a, token_a), (max_b, total_b, weighted_b, best_b, token_b) = running, piece
    maximum = torch.maximum(max_a, max_b)
    rescaled = []
    for old_max, total, weighted in ((max_a, total_a, weighted_a), (max_b, total_b, weighted_b)):
        shift = old_max - maximum  # <= 0: exp(l - m) = exp(l - old_max) exp(shift), l - m = (l - old_max) + shift
        factor = shift.exp()
        rescaled.append((total * factor, (weighted + total * shift) * factor))
    later = best_b > best_a
    return (maximum, rescaled[0][0] + rescaled[1][0], rescaled[0][1] + rescaled[1][1],
            torch.where(later, best_b, best_a), torch.where(later, token_b, token_a))
