"""`oracle-hmm`: a hidden Markov source over the digits 1-4, with exact posteriors by forward-backward.

Four hidden states, one per digit. State k emits its own digit with probability 0.91 and each other digit
with 0.03; it moves on to k+1 or k+2 (mod 4) with probability 0.47 each, and stays or moves to k+3 with
0.03 each; the first state is uniform. Every sequence has positive probability, but the joint is far from
the product of its marginals: a digit is almost always followed by one of two others, so two neighbouring
positions, each fairly likely alone, are often jointly unlikely.

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
EMIT_OWN, EMIT_OTHER = 0.91, 0.03
MOVE_ON, MOVE_ELSE = 0.47, 0.03  # to k+1 and k+2; to k and k+3
MAX_ENUMERATED = 1 << 20  # continuations enumerated for the MAP (4^10)


def parameters() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log initial [K], log transition [K, K] (from, to), log emission [K, A]), float64."""
    emission = torch.full((STATES, STATES), EMIT_OTHER, dtype=torch.float64).fill_diagonal_(EMIT_OWN)
    steps = (torch.arange(STATES)[None] - torch.arange(STATES)[:, None]) % STATES  # [K, K] to - from
    transition = torch.where((steps == 1) | (steps == 2), MOVE_ON, MOVE_ELSE).double()
    initial = torch.full((STATES,), 1 / STATES, dtype=torch.float64)
    return initial.log(), transition.log(), emission.log()


def continuation_log_probs(prefix: list[int], length: int) -> torch.Tensor:
    """log p(continuation | prefix) [4^length] for every continuation of `prefix` (digits 1-4), indexed by
    the continuation read as a base-4 number (digit 1 = 0, the first digit most significant)."""
    log_initial, log_transition, log_emission = parameters()
    alpha = log_initial[None]  # [1, K] before the first emission
    for position, digit in enumerate(prefix):
        if position:
            alpha = torch.logsumexp(alpha[:, :, None] + log_transition, dim=1)
        alpha = alpha + log_emission[:, digit - 1]
    alpha = alpha - torch.logsumexp(alpha, dim=-1, keepdim=True)  # p(state | prefix)
    for position in range(length):
        if prefix or position:
            alpha = torch.logsumexp(alpha[:, :, None] + log_transition, dim=1)  # [N, K]
        alpha = (alpha[:, None, :] + log_emission.T[None]).flatten(0, 1)  # [N * A, K]
    return torch.logsumexp(alpha, dim=-1)


def sequence_index(digits: list[int]) -> int:
    return sum((digit - 1) * STATES ** power for power, digit in enumerate(reversed(digits)))


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
        rows, total, _ = emission.shape
        alpha, beta = torch.zeros(rows, total, STATES, dtype=torch.float64), torch.zeros_like(emission)
        first = int(start.min())
        for t in range(first, total):
            moved = torch.logsumexp(alpha[:, t - 1, :, None] + self.log_transition, dim=1) if t else 0.0  # [R, K]
            here = torch.where((start == t)[:, None], self.log_initial, moved) + emission[:, t]
            alpha[:, t] = torch.where((t >= start)[:, None], here, 0.0)
        for t in range(total - 2, first - 1, -1):
            beta[:, t] = torch.logsumexp(self.log_transition + (emission[:, t + 1] + beta[:, t + 1])[:, None], dim=2)
        return alpha, beta

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
        alpha, _ = self.forward_backward(canvas)
        return torch.logsumexp(alpha[:, -1], dim=-1)

    def best_log_prob(self, prompt: torch.Tensor, answer_length: int) -> float | None:
        if STATES ** answer_length > MAX_ENUMERATED:
            return None
        symbols = self.symbol_of[prompt[0].cpu()]
        start = int(self.chain(prompt.cpu())[0][0])
        prefix = (symbols[start:] + 1).tolist()
        return float(continuation_log_probs(prefix, answer_length).max())
