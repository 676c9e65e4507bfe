"""Exact models: adapters whose logits are the log of a known distribution's exact conditionals.

`pretrained=oracle-sudoku` (oracle_sudoku.py) and `pretrained=oracle-hmm` (oracle_hmm.py) run behind the
adapter contract of base.py like any checkpoint. A forward reads the whole canvas (no cache: `use_cache=none`
only) and returns, at every masked position i, log p(x_i | every visible token) of the distribution (log 0 =
-inf for impossible tokens); at a visible position, the log of the one-hot of its own token. The sampler is
then the only variable, and what the best output is, is known.

Each distribution provides
- `log_marginals(canvas [R, T]) -> [R, T, V]` as above (its own documented output when the visible tokens
  have probability 0: a canvas with no consistent completion),
- `log_evidence(canvas [R, T]) -> [R]`: the log-probability of every visible token (up to a constant), -inf
  if impossible; log p(answer | prompt) is its difference between the canvas and the prompt alone,
- `best_log_prob(prompt [1, P], answer_length)`: log p(the most likely answer | prompt) (MAP; None when
  there are too many answers to enumerate),
- `alphabet`: the token ids an answer position can take with positive probability (where noise applies).

`oracle_noise=σ` makes the model imperfect in a controlled way: at every masked position, Gaussian noise of
standard deviation σ is added to the log-marginals of the alphabet tokens, which are then renormalised (a
token of probability 0 stays impossible). The noise is a function of the canvas (seeded by its tokens), so
the same canvas always gets the same logits, as from a trained model; the diagnostics use the exact truth.

`exact_diagnostics` replays a decode from its commit trace (the canvas before step s is the prompt plus every
token committed before s) and gives, per request: the output's exact log-probability and its gap to the MAP,
the number of steps whose committed tokens contradict each other or the canvas (joint probability 0 given a
consistent canvas), and the summed KL divergence between the joint of each step's committed positions and
the product of their marginals (0 when one token is committed per step).
"""

import hashlib
import itertools
import math
from types import SimpleNamespace

import torch
from torch import nn

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.models.base import ModelSpec
from lm_eval_infogain.sampling.config import check, is_number

# The most value combinations a step's committed positions are enumerated over for its joint-vs-product KL;
# a step that commits more (e.g. fast_dllm's threshold rule) gets no KL term (the diagnostic says how many).
MAX_JOINT_COMBINATIONS = 4096
MAX_NOISE = 100.0


class OracleAdapter:
    """The sampler's view of an exact distribution (see the module docstring)."""

    def __init__(self, distribution, spec: ModelSpec, noise: float, device: torch.device):
        self.model = distribution
        self.spec = spec
        self.noise = noise
        self.device = device
        self.dtype = torch.float32

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        if cache is not None or window_start != 0 or input_ids.shape[1] != key_mask.shape[1]:
            raise UsageError("an exact model reads the whole canvas: use_cache=none")
        log_probs = self.model.log_marginals(input_ids, logits_start)  # [R, T - logits_start, V]
        if self.noise > 0:
            log_probs = self.noisy(input_ids, log_probs, logits_start)
        return log_probs[:, :None if logits_end is None else logits_end - logits_start].to(input_ids.device)

    def forward_hidden(self, *args):
        """No hidden states: the logits stand in for them, and `head` keeps them."""
        return self.forward(*args)

    def head(self, logits):
        return logits

    def output_head(self):
        return None  # no head to stream over: the sampler takes the logits `head` keeps

    def new_cache(self, batch, length):
        raise UsageError("an exact model reads the whole canvas: use_cache=none")

    def noisy(self, canvas: torch.Tensor, log_probs: torch.Tensor, start: int) -> torch.Tensor:
        """log_probs [R, W, V] of canvas [R, T] positions start.. with seeded Gaussian noise on the alphabet's
        log-marginals at masked positions."""
        canvas = canvas.cpu()
        alphabet = torch.tensor(self.model.alphabet)
        noise = torch.stack([torch.randn(canvas.shape[1], len(alphabet), generator=canvas_generator(row))
                             for row in canvas])[:, start:]  # [R, W, A]
        masked = (canvas[:, start:] == self.spec.mask_id)[..., None]  # [R, W, 1]
        noisy = log_probs.clone()
        noisy[..., alphabet] = log_probs[..., alphabet] + self.noise * noise * masked  # [R, T, A]
        return torch.log_softmax(noisy, dim=-1)  # -inf stays -inf

    def exact_diagnostics(self, prompt: list[int], generated: list[int], row: dict) -> dict:
        """The decode stats `row` (with the commit trace, which this drops) plus the exact diagnostics."""
        steps = row.pop("commit_step")
        row.pop("commit_entropy")
        return row | replay_diagnostics(self.model, self.spec.mask_id, prompt, generated, steps)


def canvas_generator(row: torch.Tensor) -> torch.Generator:
    """A generator seeded by the tokens of one canvas row: the noise of a canvas never changes."""
    digest = hashlib.sha256(row.to(torch.int64).numpy().tobytes()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def check_noise(noise) -> float:
    if isinstance(noise, str):
        try:
            noise = float(noise)
        except ValueError:
            pass
    check(is_number(noise) and math.isfinite(noise) and 0 <= noise <= MAX_NOISE, "oracle_noise", noise,
          f"a number in 0..{MAX_NOISE:g} (standard deviation of the noise on the exact log-marginals)")
    return float(noise)


def oracle_spec(tokenizer, max_length: int) -> ModelSpec:
    return ModelSpec(mask_id=tokenizer.mask_token_id, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                     vocab_size=len(tokenizer), stop_ids=(tokenizer.eos_token_id,), max_length=max_length,
                     cache_modes=("none",))


class Distribution(nn.Module):
    """What the harness reads of a model (config.model_type, parameters: none) around an exact distribution."""

    def __init__(self, model_type: str):
        super().__init__()
        self.config = SimpleNamespace(model_type=model_type)


# ---------------------------------------------------------------- diagnostics


def replay_diagnostics(distribution, mask_id: int, prompt: list[int], generated: list[int],
                       commit_step: list[int]) -> dict:
    """Exact diagnostics of one decode, from its commit trace (see the module docstring)."""
    prompt_t = torch.tensor(prompt, dtype=torch.long)
    generated_t = torch.tensor(generated, dtype=torch.long)
    steps_t = torch.tensor(commit_step, dtype=torch.long)
    num_steps = int(steps_t.max()) + 1 if len(commit_step) else 0
    gen = torch.where(steps_t[None] < torch.arange(num_steps + 1)[:, None], generated_t, mask_id)  # [S + 1, G]
    canvases = torch.cat([prompt_t.expand(num_steps + 1, -1), gen], dim=1)  # [S + 1, T]; row s: before step s
    evidence = distribution.log_evidence(canvases).double()  # [S + 1]
    log_probs = evidence - distribution.log_evidence(prompt_t[None]).double()  # [S + 1] log p(visible | prompt)
    output_log_prob = float(log_probs[-1])
    best = distribution.best_log_prob(prompt_t[None], len(generated))
    contradictions = int(((log_probs[:-1] > -math.inf) & (log_probs[1:] == -math.inf)).sum())
    kl, skipped = joint_product_kl(distribution, canvases, steps_t, len(prompt), evidence)
    finite = math.isfinite(output_log_prob)
    return {"exact_log_prob": output_log_prob if finite else None,
            "exact_map_gap": best - output_log_prob + 0.0 if finite and best is not None else None,
            "exact_contradictions": contradictions,
            "exact_joint_kl": kl, "exact_joint_kl_steps_skipped": skipped}


def joint_product_kl(distribution, canvases, commit_step, prompt_length, evidence) -> tuple[float, int]:
    """Sum over steps of KL(joint of the committed positions || product of their marginals), given the canvas
    before the step; (sum, steps left out: from a canvas of probability 0, or too many combinations)."""
    marginals = distribution.log_marginals(canvases[:-1], prompt_length).double()  # [S, G, V]
    total, skipped = 0.0, 0
    for step in range(canvases.shape[0] - 1):
        positions = (commit_step == step).nonzero().squeeze(1).tolist()  # generation indices
        supports = [(marginals[step, p] > -math.inf).nonzero().squeeze(1).tolist() for p in positions]
        random_positions = [(p, s) for p, s in zip(positions, supports) if len(s) > 1]
        if len(random_positions) < 2:
            continue  # one uncertain position: joint = product
        combinations = math.prod(len(s) for _, s in random_positions)
        if evidence[step] == -math.inf or combinations > MAX_JOINT_COMBINATIONS:
            skipped += 1
            continue
        values = torch.tensor(list(itertools.product(*(s for _, s in random_positions))))  # [C, k]
        where = torch.tensor([p for p, _ in random_positions])  # [k] generation indices
        filled = canvases[step].expand(len(values), -1).clone()  # [C, T]
        filled[:, where + prompt_length] = values
        joint = distribution.log_evidence(filled).double() - evidence[step]  # [C] log p(values | canvas)
        product = marginals[step, where, values].sum(-1)  # [C]
        kept = joint > -math.inf
        total += float((joint[kept].exp() * (joint[kept] - product[kept])).sum())
    return total, skipped


def check_answer_prompt(found: torch.Tensor, what: str) -> None:
    if not bool(found.all()):
        raise UsageError(f"an exact model was given a prompt it cannot read; allowed: {what}")
