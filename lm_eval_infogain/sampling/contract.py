"""The strategy contract: what a sampler of masked positions sees at each step and what it returns.

Every mode, built-in or a user's, is a class that follows it; the loop (loop.py) owns blocks, schedule,
cache, forwards and stats, and asks the strategy only which positions to commit:

1. The loop builds the strategy once per batch: `Class.from_options(options, spec, device)`, where
   `options` holds a value for every name the class declares in `options` (each an `Option`: default,
   type, help), checked against those declarations when the mode is named (sampling/plugins.py): an
   unknown name or a value of the wrong type is refused in one line before anything runs. `spec` is the
   model's ModelSpec (vocab_size, mask_id, eos_id, ...) and `device` where the step's tensors live.
2. Each step it calls `propose(ctx: StepContext) -> Proposal`: one or more candidate commit sets per
   prompt, as tensors (no host syncs needed). Candidate 0 must be valid in every row.
3. A strategy with `needs_lookahead = True` has each prompt's valid candidates forwarded in one batched
   call (only rows with two or more valid candidates), then `choose(ctx, proposal, next_entropy_mean)`
   returns the winner per prompt, [B] long, from H_next [B, N]: the mean entropy of the generation's
   positions still masked after each candidate (meaningless where a candidate is invalid). Without
   lookahead the loop commits candidate 0.
4. `dynamic_steps = True`: the strategy commits as many positions as its own rule says (at least
   `ctx.num_to_commit`, which is then 1 except on the block's last step, where it is all that is left) and
   a block takes as many steps as it needs; otherwise it commits the schedule's k per step.

Randomness comes from `ctx.generators` (one per prompt; strategies.uniform_noise and gumbel_noise draw
from them): draw the same amount every step whatever a row decides, so that a prompt's output does not
depend on the other prompts of its batch.

A user's strategy is named by `mode=package.module:ClassName`, or by a short name that an installed
package registers in the entry-point group `lm_eval_infogain.samplers`; its options are
`sampler.<name>=<value>` keys of model_args or gen_kwargs (plain key=value pairs read the same through every
lm-eval parser; `simple_parse_args_string` splits a model_args string on every comma, so a dict value with
commas would not survive it). A built-in mode's options are the model_args
(SamplerConfig fields) of the same names. lm_eval_infogain/examples/margin_lookahead.py is a complete one.
"""

import math
from dataclasses import dataclass

import torch


@dataclass
class StepContext:
    logits: torch.Tensor  # [B, Lb, V] logits of the block's positions that tokens are drawn from (mask token -inf)
    probs: torch.Tensor  # [B, Lb, V] softmax of the model's logits (mask token included)
    masked: torch.Tensor  # [B, Lb] bool, still masked
    num_to_commit: torch.Tensor  # [B] long, k of this step (all that is left on a block's last step)
    tokens: torch.Tensor  # [B, Lb] long, x0: the proposed token per position
    confidence: torch.Tensor  # [B, Lb] softmax probability of x0
    entropy: torch.Tensor  # [B, Lb] entropy of probs, fp32
    generators: list[torch.Generator]  # one per prompt: its draws never depend on the batch
    temperature: float


@dataclass
class Proposal:
    commit: torch.Tensor  # [B, N, Lb] bool, positions each candidate commits
    tokens: torch.Tensor  # [B, N, Lb] long, tokens each candidate writes there
    valid: torch.Tensor  # [B, N] bool, candidates worth evaluating (candidate 0 always is)
    bypass: torch.Tensor | None = None  # [B] bool, rows committing by a shortcut that skips the lookahead (stats)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float: inf and nan are never a meaningful setting (inf temperature gives NaN scores)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Option:
    """One option a strategy declares: its default (None: unset unless given) and its type, one of bool, int,
    float, str (an int is accepted for a float and stored as one). Ranges are the strategy's to check, in
    its constructor, with a UsageError (lm_eval_infogain.errors) naming the option."""

    default: object
    type: type
    help: str = ""

    def __post_init__(self):
        if self.type not in (bool, int, float, str):
            raise TypeError(f"Option type must be bool, int, float or str, not {self.type!r}")

    def describe(self) -> str:
        return f"{self.type.__name__}, default {self.default!r}" + (f": {self.help}" if self.help else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.default is None
        return {bool: lambda: isinstance(value, bool), int: lambda: is_int(value),
                float: lambda: is_number(value), str: lambda: isinstance(value, str)}[self.type]()

    def converted(self, value):
        return float(value) if self.type is float and value is not None else value


class Strategy:
    """Base class of the strategies: the contract's attributes with their defaults. A subclass writes

        def propose(self, ctx: StepContext) -> Proposal
        def choose(self, ctx: StepContext, proposal: Proposal, next_entropy_mean: torch.Tensor) -> torch.Tensor
            # [B] long winner index; only with needs_lookahead = True

    (the base defines neither, so that a class missing one is refused when its mode is named)."""

    needs_lookahead: bool = False
    dynamic_steps: bool = False
    options: dict[str, Option] = {}

    @classmethod
    def from_options(cls, options: dict, spec, device) -> "Strategy":
        """The strategy for these checked options (every declared name, defaults filled in). Override it to
        read a file or the model's vocabulary once; this one calls cls(**options)."""
        return cls(**options)
