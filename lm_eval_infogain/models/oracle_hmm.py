"""`oracle-hmm`: a hidden Markov source over the digits 1-4, with exact posteriors by forward-backward.

Four hidden states with the transition and emission tables below (a draw from a Dirichlet(0.6) prior,
rounded to two decimals, every entry at least 0.01), the first state uniform. Every sequence has positive
probability, and the joint is far from the product of its marginals: after a prefix, the 8 per-position
most likely digits are mostly not the most likely 8-digit continuation (tests/test_oracle.py checks it on
the task's first documents), so tokens committed together from their marginals do worse than the joint
allows.

The chain is the canvas's tail after its last token that is neither a digit 1-4 nor the mask: the prompt
of the `oracle_hmm` task ends with a line of observed digits, and the generation continues it. A masked
position is a hidden emission; its marginal given every visible digit is sum_k p(state k | visible) E[k, x]
(forward-backward in log space, batched over canvases). `continuation_log_probs` enumerates every
continuation of a prefix (4^length of them, level by level) for the MAP, the entropy and the task's scores.
"""

import math

import torch

from lm_eval_infogain.models.oracle import Distribution, check_answer_prompt

DIGITS = "1234"
STATES = len(DIGITS)
TRANSITION = ((0.01, 0.01, 0.20, 0.78), (0.44, 0.01, 0.33, 0.22), (0.21, 0.42, 0.31, 0.06),
              (0.66, 0.17, 0.04, 0.13))  # [from state, to state]
EMISSION = ((0.01, 0.60, 0.31, 0.08), (0.01, 0.51, 0.10, 0.38), (0.01, 0.46, 0.37, 0.16),
            (0.69, 0.06, 0.12, 0.13))  # [state, digit 1-4]
MAX_ENUMERATED = 1 << 20  # continuations enumerated for the MAP (4^10)
ENUMERATION_CHUNK = 25  # prefixes enumerated together (25 x 4^8 x 4 float64: 52 MB)


def parameters() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log initial [K], log transition [K, K] (from, to), log emission [K, A]), float64."""
    initial = torch.full((STATES,), 1 / STATES, dtype=torch.float64)
    return initial.log(), torch.tensor(TRANSITION, dtype=torch.float64).log(), \
        torch.tensor(EMISSION, dtype=torch.float64).log()


def continuation_log_probs(prefixes: list[list[int]], length: int) -> torch.Tensor:
    """log p(continuation | prefix) [D, 4^length] for every continuation of each of D prefixes of one length
    (digits 1-4), indexed by the continuation read as a base-4 number (digit 1 = 0, the first digit most
    significant).

    Level by level in probability space (float64; no continuation is below 0.01^(2 length)): the joint of the
    sequences so far and the state, times the transition, times each digit's emission."""
    log_initial, log_transition, log_emission = parameters()
    transition, emission = log_transition.exp(), log_emission.exp()
    digits = torch.tensor(prefixes, dtype=torch.long).view(len(prefixes), -1) - 1  # [D, P]
    belief = log_initial.exp().expand(len(prefixes), -1)  # [D, K] p(state) before the first emission
    for position in range(digits.shape[1]):
        belief = (belief @ transition if position else belief) * emission[:, digits[:, position]].T
    belief = (belief / belief.sum(-1, keepdim=True))[:, None]  # [D, 1, K] p(state at the prefix's end | prefix)
    for position in range(length):
        moved = belief @ transition if digits.shape[1] or position else belief  # [D, N, K]
        belief = (moved[:, :, None, :] * emission.T[None, None]).flatten(1, 2)  # [D, N * A, K]
    return belief.sum(-1).log()


def sequence_log_prob(prefix: list[int], continuation: list[int]) -> float:
    """log p(continuation | prefix) of one continuation (forward algorithm)."""
    log_initial, log_transition, log_emission = parameters()

    def evidence(digits: list[int]) -> torch.Tensor:
        alpha = log_initial
        for position, digit in enumerate(digits):
            moved = torch.logsumexp(alpha[:, None] + log_transition, dim=0) if position else alpha
            alpha = moved + log_emission[:, digit - 1]
        return torch.logsumexp(alpha, dim=0)

    return float(evidence(prefix + continuation) - evidence(prefix))


class HMMOracle(Distribution):
    def __init__(self, tokenizer):
        super().__init__("oracle_hmm")
        self.vocab_size = len(tokenizer)
        self.mask_id = tokenizer.mask_token_id
        digit_ids = tokenizer(DIGITS, add_special_tokens=False)["input_ids"]
        self.alphabet = digit_ids
        symbol_of = torch.full((self.vocab_size,), -1, dtype=torch.long)  # token -> digit index; -1 none
        symbol_of[digit_ids] = torch.arange(STATES)
        self.symbol_of = symbol_of
        self.log_initial, self.log_transition, self.log_emission = parameters()

    def chain(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(start of the chain [R], emission log-likelihoods [R, T, K]: 0 at masked positions)."""
        symbols = self.symbol_of[canvas]  # [R, T]
        outside = (symbols < 0) & (canvas != self.mask_id)
        index = torch.arange(canvas.shape[1])
        start = torch.where(outside, index, -1).max(-1).values + 1  # [R]
        check_answer_prompt(start > 0, "a prompt that ends with a line of digits 1-4 (the oracle_hmm task's)")
        emission = self.log_emission.T[symbols.clamp(min=0)]  # [R, T, K]
        return start, torch.where((symbols >= 0)[..., None], emission, 0.0)

    def forward_backward(self, canvas: torch.Tensor):
        """(log alpha, log beta) [R, T, K] over each row's chain (zeros before its start)."""
        start, emission = self.chain(canvas.cpu())
        first = int(start.min())
        return self.forward_messages(start, emission, first), self.backward_messages(emission, first)

    def forward_messages(self, start: torch.Tensor, emission: torch.Tensor, first: int) -> torch.Tensor:
        """log alpha [R, T, K] of chains from start [R] with emission log-likelihoods [R, T, K]."""
        rows, total, _ = emission.shape
        alpha = torch.zeros(rows, total, STATES, dtype=torch.float64)
        for t in range(first, total):
            moved = torch.logsumexp(alpha[:, t - 1, :, None] + self.log_transition, dim=1) if t else 0.0  # [R, K]
            here = torch.where((start == t)[:, None], self.log_initial, moved) + emission[:, t]
            alpha[:, t] = torch.where((t >= start)[:, None], here, 0.0)
        return alpha

    def backward_messages(self, emission: torch.Tensor, first: int) -> torch.Tensor:
        """log beta [R, T, K] (zeros before `first`)."""
        beta = torch.zeros_like(emission)
        for t in range(emission.shape[1] - 2, first - 1, -1):
            beta[:, t] = torch.logsumexp(self.log_transition + (emission[:, t + 1] + beta[:, t + 1])[:, None], dim=2)
        return beta

    def log_marginals(self, canvas: torch.Tensor, start: int = 0) -> torch.Tensor:
        canvas = canvas.cpu()
        alpha, beta = self.forward_backward(canvas)
        state = torch.log_softmax(alpha[:, start:] + beta[:, start:], dim=-1)  # [R, W, K] p(state | the rest)
        digit = torch.logsumexp(state[..., None] + self.log_emission, dim=2).float()  # [R, W, A]
        canvas = canvas[:, start:]
        log_probs = torch.full((*canvas.shape, self.vocab_size), -math.inf)  # [R, T, V]
        log_probs.scatter_(2, canvas[..., None], 0.0)  # visible: its own token
        masked = canvas == self.mask_id  # [R, T]
        cells = torch.full((int(masked.sum()), self.vocab_size), -math.inf)  # [M, V]
        cells[:, self.alphabet] = digit[masked]
        log_probs[masked] = cells
        return log_probs

    def log_evidence(self, canvas: torch.Tensor) -> torch.Tensor:
        """[R] log p(every visible digit of the chain)."""
        start, emission = self.chain(canvas.cpu())  # no backward messages needed
        return torch.logsumexp(self.forward_messages(start, emission, int(start.min()))[:, -1], dim=-1)

    def best_log_probs(self, prompts: torch.Tensor, answer_length: int) -> list[float | None]:
        """Per prompt [R, P], the largest log p(continuation | its chain), by enumeration (None past
        MAX_ENUMERATED continuations)."""
        if STATES ** answer_length > MAX_ENUMERATED:
            return [None] * len(prompts)
        prompts = prompts.cpu()
        starts, symbols = self.chain(prompts)[0].tolist(), self.symbol_of[prompts]
        return best_continuation_log_probs([tuple((row[start:] + 1).tolist()) for row, start in zip(symbols, starts)],
                                           answer_length)


BEST_FOUND: dict[tuple[tuple[int, ...], int], float] = {}  # (prefix, length) -> MAP log-probability


def best_continuation_log_probs(prefixes: list[tuple[int, ...]], length: int) -> list[float]:
    """max over continuations of log p(continuation | prefix), per prefix: an enumeration of 4^length
    continuations (ENUMERATION_CHUNK prefixes at a time), done once per prefix and process (a grid decodes
    the same documents in every cell)."""
    missing = sorted({prefix for prefix in prefixes if (prefix, length) not in BEST_FOUND})
    for begin in range(0, len(missing), ENUMERATION_CHUNK):
        chunk = missing[begin:begin + ENUMERATION_CHUNK]
        for prefix, table in zip(chunk, continuation_log_probs([list(p) for p in chunk], length)):
            BEST_FOUND[prefix, length] = float(table.max())
    return [BEST_FOUND[prefix, length] for prefix in prefixes]
