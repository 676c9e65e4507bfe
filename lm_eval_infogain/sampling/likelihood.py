"""log p(continuation | context) of a masked diffusion model: the Monte Carlo ELBO of LLaDA's paper.

A masked diffusion model has no left-to-right factorisation, so the exact log-likelihood is out of
reach; lm-eval's `loglikelihood` gets the evidence lower bound instead, estimated by Monte Carlo.

The estimator (LLaDA, Nie et al. 2025: the "lower variance" form of its likelihood bound). For a
continuation x of L tokens after a context c, one draw picks l uniformly in 1..L, masks l of the L
tokens chosen uniformly without replacement (the set S), and returns

    (L / l) * sum_{i in S} log p(x_i | c, x with S masked)

Its expectation is sum_l (1/l) E_{|S|=l}[sum_{i in S} log p(...)], which equals the t-form of the ELBO,
E_{t~U(0,1]}[(1/t) sum_i 1[i masked at rate t] log p(...)] (integrate t^(l-1) (1-t)^(L-l) over t), so
every draw is an unbiased estimate of the ELBO and the mean of draws is too. The ELBO is <= log p.

Variance reduction: the `num_draws` values of l are stratified. Draw k takes u_k in ((k)/n, (k+1)/n]
and l_k = ceil(u_k * L), so the draws cover small and large mask ratios evenly instead of clumping;
each u_k is uniform in its stratum, so the mean over k is still unbiased. With fixed logits that give
every token the same log-probability, every draw returns exactly L * log p (no variance at all).

Block-causal models (SDAR, TraDo) decode one attention block at a time with the earlier blocks clean,
and were trained that way; their ELBO is the sum over the continuation's segments (its parts in each
attention block, the first one sharing its block with the context's tail) of each segment's ELBO given
the clean tokens before it. The same draw covers it: the token index j = ceil(u * L) falls in segment
s, whose tokens before it are clean, and l = j - (tokens before s) of its tokens are masked; later
segments stay clean and unseen (later blocks). Segment s is then chosen with probability L_s / L and
l is uniform in 1..L_s, so the weight L / l again makes each draw unbiased for the sum of the segment
ELBOs. A bidirectional model has one segment, and the draw is exactly the one above.

`is_greedy`: every segment, fully masked with the clean segments before it (one forward row per
segment; a single row for a bidirectional model), is filled by the argmax with the continuation (the
teacher-forced analogue of a causal model's greedy check).

Each request draws from its own generator (its seed), before batching; the rows of all requests are
then forwarded `rows_per_forward` at a time in left-padded canvases, so a result does not depend on
which requests share a forward (up to float rounding of padded attention).
"""

import bisect
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lm_eval_infogain.sampling.loop import build_canvas
from lm_eval_infogain.sampling.memory import split_on_out_of_memory


@dataclass(frozen=True)
class ScoringRequest:
    context: list[int]  # at least one token
    continuation: list[int]  # at least one token
    seed: int


@dataclass(frozen=True)
class Row:
    """One forward row: a request with some of its continuation masked."""

    request: int  # index into the requests
    masked: torch.Tensor  # [L] bool, True where the continuation token is masked
    weight: float  # L / l for an ELBO draw; 0.0 for an is_greedy row
    greedy: bool


def segment_bounds(context_length: int, continuation_length: int, block_size: int | None) -> list[int]:
    """Continuation indices where segments start, plus the end: [0, ..., L].

    A segment is the continuation's part in one attention block (positions count from the context's
    first token); a bidirectional model has the one segment [0, L).
    """
    if block_size is None:
        return [0, continuation_length]
    first_boundary = block_size - context_length % block_size
    inner = range(first_boundary, continuation_length, block_size)
    return [0, *inner, continuation_length]


def mask_counts(length: int, num_draws: int, generator: torch.Generator, stratified: bool = True) -> torch.Tensor:
    """j in 1..length for each draw [N]: stratified (draw k's u in (k/N, (k+1)/N]) or iid uniform."""
    u = 1 - torch.rand(num_draws, generator=generator, dtype=torch.float64)  # [N] in (0, 1]
    if stratified:
        u = (torch.arange(num_draws, dtype=torch.float64) + u) / num_draws  # [N] draw k in (k/N, (k+1)/N]
    return torch.ceil(u * length).long().clamp(1, length)  # [N]


def elbo_rows(request: int, continuation_length: int, bounds: list[int], num_draws: int,
              generator: torch.Generator, stratified: bool = True) -> list[Row]:
    """`num_draws` rows of one request, each masking l random tokens of one segment (module docstring)."""
    counts = mask_counts(continuation_length, num_draws, generator, stratified)  # [N]
    order = torch.rand(num_draws, continuation_length, generator=generator).argsort(-1)  # [N, L] per-draw shuffle
    rows = []
    for draw, count in enumerate(counts.tolist()):
        segment = next(s for s in range(len(bounds) - 1) if count <= bounds[s + 1])
        start, end = bounds[segment], bounds[segment + 1]
        num_masked = count - start
        in_segment = order[draw][(order[draw] >= start) & (order[draw] < end)]  # the segment's tokens, shuffled
        masked = torch.zeros(continuation_length, dtype=torch.bool)
        masked[in_segment[:num_masked]] = True
        rows.append(Row(request, masked, continuation_length / num_masked, greedy=False))
    return rows


def greedy_rows(request: int, continuation_length: int, bounds: list[int]) -> list[Row]:
    """One row per segment with that segment fully masked (later segments are unseen by the model)."""
    rows = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        masked = torch.zeros(continuation_length, dtype=torch.bool)
        masked[start:end] = True
        rows.append(Row(request, masked, 0.0, greedy=True))
    return rows


@torch.inference_mode()
def score_rows(adapter, requests: list[ScoringRequest], rows: list[Row]) -> list[tuple[float, bool]]:
    """One forward of `rows` in a left-padded canvas: per row, (sum of log p over its masked tokens, whether
    the argmax hits every masked token).

    The sequences are context + continuation, left-padded so that every continuation ends the canvas;
    logits are computed for the last `width` positions only (the longest continuation).
    """
    spec, device = adapter.spec, adapter.device
    sequences, width = [], max(len(requests[row.request].continuation) for row in rows)
    targets = torch.zeros(len(rows), width, dtype=torch.long)  # [R, W] right-aligned continuations
    masked = torch.zeros(len(rows), width, dtype=torch.bool)  # [R, W]
    for index, row in enumerate(rows):
        request = requests[row.request]
        length = len(request.continuation)
        continuation = torch.tensor(request.continuation, dtype=torch.long)  # [L]
        sequences.append(request.context + continuation.masked_fill(row.masked, spec.mask_id).tolist())
        targets[index, width - length:] = continuation
        masked[index, width - length:] = row.masked
    canvas = build_canvas(sequences, 0, spec, device)
    total = canvas.ids.shape[1]
    logits = adapter.forward(canvas.ids, canvas.positions, canvas.key_mask, None, 0, total - width, total)  # [R, W, V]
    targets, masked = targets.to(device), masked.to(device)
    token_logits = logits.gather(-1, targets[..., None]).squeeze(-1)  # [R, W]
    log_probs = token_logits - logits.logsumexp(-1)  # [R, W]
    masked_log_prob = torch.where(masked, log_probs, 0.0).double().sum(-1)  # [R]
    argmax_hit = ((logits.argmax(-1) == targets) | ~masked).all(-1)  # [R]
    return list(zip(masked_log_prob.tolist(), argmax_hit.tolist()))


def rows_of(requests: list[ScoringRequest], num_draws: int, block_size: int | None, stratified: bool) -> list[Row]:
    """Every request's ELBO draws and is_greedy rows, request after request."""
    rows = []
    for index, request in enumerate(requests):
        length = len(request.continuation)
        bounds = segment_bounds(len(request.context), length, block_size)
        generator = torch.Generator().manual_seed(request.seed)
        rows += elbo_rows(index, length, bounds, num_draws, generator, stratified)
        rows += greedy_rows(index, length, bounds)
    return rows


def loglikelihoods(adapter, requests: list[ScoringRequest], num_draws: int, rows_per_forward: int,
                   on_done: Callable[[int], None] = lambda count: None,
                   stratified: bool = True) -> list[tuple[float, bool]]:
    """(ELBO estimate of log p(continuation | context), is_greedy) per request, in the requests' order.

    Requests are scored longest first, so a forward holds sequences of similar length; `on_done(n)`
    is told each time n more requests are finished (a progress bar).
    """
    for request in requests:
        if not request.context or not request.continuation:
            raise ValueError(f"context ({len(request.context)} tokens) and continuation "
                             f"({len(request.continuation)} tokens) must both be non-empty")
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context) - len(requests[i].continuation))
    ordered = [requests[i] for i in order]
    rows = rows_of(ordered, num_draws, adapter.spec.attention_block_size, stratified)
    rows_per_request = [0] * len(ordered)  # [N]
    for row in rows:
        rows_per_request[row.request] += 1
    request_ends = list(itertools.accumulate(rows_per_request))  # [N] row index after each request's last row
    estimates = torch.zeros(len(ordered), dtype=torch.float64)  # [N requests]
    greedy = torch.ones(len(ordered), dtype=torch.bool)  # [N requests]
    finished = 0
    for first in range(0, len(rows), rows_per_forward):
        chunk = rows[first:first + rows_per_forward]
        scored = split_on_out_of_memory(functools.partial(score_rows, adapter, ordered), chunk, adapter.device,
                                        "scoring {} rows in one forward")
        for row, (log_prob, hit) in zip(chunk, scored):
            if row.greedy:
                greedy[row.request] &= hit
            else:
                estimates[row.request] += row.weight * log_prob / num_draws
        done = bisect.bisect_right(request_ends, first + len(chunk))
        on_done(done - finished)
        finished = done
    results = [None] * len(requests)
    for position, index in enumerate(order):
        results[index] = (float(estimates[position]), bool(greedy[position]))
    return results

