"""Exact models: adapters whose logits are the log of a known distribution's exact conditionals.

`pretrained=oracle-sudoku` (oracle_sudoku.py) and `pretrained=oracle-hmm` (oracle_hmm.py) run behind the
adapter contract of base.py like any checkpoint. A forward reads the whole canvas and returns, at every masked
position i, log p(x_i | every visible token) of the distribution (log 0 = -inf for impossible tokens); at a
visible position, the log of the one-hot of its own token. The sampler is then the only variable, and what the
best output is, is known.

The cache of an exact model holds the canvas's tokens, where a transformer's holds keys and values: a forward
writes its window's tokens, and reads the rest of the canvas from the cache (lookahead candidates: from their
prompt's row, with their own window in place). The loop refreshes every position's tokens before it reads them
(the whole canvas at each block start, the block at every step), so `prefix` and `dual` decode exactly what
`none` does (tests/test_oracle.py), except where the sampler itself approximates: `lookahead_window=block`
under `prefix` gives every candidate the step's own entropies after the block, which this makes measurable.

Each distribution provides
- `log_marginals(canvas [R, T]) -> [R, T, V]` as above (its own documented output when the visible tokens
  have probability 0: a canvas with no consistent completion),
- `log_evidence(canvas [R, T]) -> [R]`: the log-probability of every visible token (up to a constant), -inf
  if impossible; log p(answer | prompt) is its difference between the canvas and the prompt alone,
- `best_log_probs(prompts [R, P], answer_length) -> [R]`: log p(the most likely answer | prompt) (MAP; None
  when there are too many answers to enumerate),
- `alphabet`: the token ids an answer position can take with positive probability (where noise applies).

`oracle_noise=σ` makes the model imperfect in a controlled way: at every masked position, Gaussian noise of
standard deviation σ is added to the log-marginals of the alphabet tokens, which are then renormalised (a
token of probability 0 stays impossible). The noise is a function of the canvas (seeded by its tokens), so
the same canvas always gets the same logits, as from a trained model; the diagnostics use the exact truth.

`exact_diagnostics` replays each decode of a batch from its commit trace (the canvas before step s is the
prompt plus every token committed before s; the whole batch in a few batched calls of the distribution) and
gives, per request: the output's exact log-probability and its gap to the MAP,
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
from lm_eval_infogain.sampling.cache import KVCache, SharedCache
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
        canvas = self.canvas(input_ids, key_mask.shape[1], cache, window_start)  # [R, T]
        log_probs = self.model.log_marginals(canvas, logits_start)  # [R, T - logits_start, V]
        if self.noise > 0:
            log_probs = self.noisy(canvas, log_probs, logits_start)
        end = window_start + input_ids.shape[1] if logits_end is None else logits_end
        return log_probs[:, :end - logits_start].to(input_ids.device)

    @staticmethod
    def canvas(window_ids: torch.Tensor, length: int, cache, window_start: int) -> torch.Tensor:
        """The whole canvas [R, length] of a forward of window_ids [R, W] at window_start (module docstring)."""
        if cache is None:
            if window_start != 0 or window_ids.shape[1] != length:
                raise UsageError("an exact model without a cache reads the whole canvas")
            return window_ids
        window = slice(window_start, window_start + window_ids.shape[1])
        if isinstance(cache, SharedCache):  # lookahead candidates: their prompt's canvas, their own window
            canvas = cache.cache.keys[0][cache.prompt_of, 0, :, 0].clone()  # [R, T]
            canvas[:, window] = window_ids
            return canvas
        tokens = window_ids[:, None, :, None]  # [R, 1, W, 1]: one layer, one head, a token per position
        return cache.write(0, window.start, tokens, tokens)[0][:, 0, :, 0]

    def forward_hidden(self, *args):
        """No hidden states: the logits stand in for them, and `head` keeps them."""
        return self.forward(*args)

    def head(self, logits):
        return logits

    def output_head(self):
        return None  # no head to stream over: the sampler takes the logits `head` keeps

    def new_cache(self, batch, length):
        return KVCache.allocate(1, batch, 1, length, 1, torch.long, self.device)  # tokens (module docstring)

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

    def exact_diagnostics(self, prompts: list[list[int]], generated: list[list[int]], rows: list[dict]) -> list[dict]:
        """The decode stats `rows` of a batch (with the commit traces, which this drops) plus the exact
        diagnostics (see base.ModelAdapter.exact_diagnostics)."""
        steps = [row["commit_step"] for row in rows]
        diagnostics = replay_diagnostics(self.model, self.spec.mask_id, prompts, generated, steps)
        kept = [{key: value for key, value in row.items() if key not in ("commit_step", "commit_entropy")}
                for row in rows]
        return [row | extra for row, extra in zip(kept, diagnostics)]


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
                     vocab_size=len(tokenizer), stop_ids=(tokenizer.eos_token_id,), max_length=max_length)


class Distribution(nn.Module):
    """What the harness reads of a model (config.model_type, parameters: none) around an exact distribution."""

    def __init__(self, model_type: str):
        super().__init__()
        self.config = SimpleNamespace(model_type=model_type)


# ---------------------------------------------------------------- diagnostics


def replay_diagnostics(distribution, mask_id: int, prompts: list[list[int]], generated: list[list[int]],
                       commit_steps: list[list[int]]) -> list[dict]:
    """Exact diagnostics of a batch of decodes, from their commit traces (see the module docstring); the
    decodes whose prompts and generations have one length are replayed together (one batched call of the
    distribution per quantity: a call per document and step would cost more than the decode)."""
    found = [None] * len(prompts)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (prompt, ids) in enumerate(zip(prompts, generated)):
        groups.setdefault((len(prompt), len(ids)), []).append(index)
    for indices in groups.values():
        rows = replay_group(distribution, mask_id, [prompts[i] for i in indices], [generated[i] for i in indices],
                            [commit_steps[i] for i in indices])
        for index, row in zip(indices, rows):
            found[index] = row
    return found


def replay_group(distribution, mask_id, prompts, generated, commit_steps) -> list[dict]:
    """replay_diagnostics of D decodes whose prompts (P tokens) and generations (G) have one length each."""
    prompt_t = torch.tensor(prompts, dtype=torch.long)  # [D, P]
    steps_t = torch.tensor(commit_steps, dtype=torch.long).view(len(prompts), -1)  # [D, G]
    canvases = [replay_canvases(prompt_t[d], torch.tensor(generated[d], dtype=torch.long), steps_t[d], mask_id)
                for d in range(len(prompts))]  # each [S_d + 1, T]; row s: the canvas before step s
    evidence = distribution.log_evidence(torch.cat(canvases)).double().split([len(c) for c in canvases])
    prompt_evidence = distribution.log_evidence(prompt_t).double()  # [D]
    best = distribution.best_log_probs(prompt_t, steps_t.shape[1])  # [D] floats or Nones
    kls = joint_product_kl(distribution, canvases, steps_t, prompt_t.shape[1], evidence)
    found = []
    for d, (kl, skipped) in enumerate(kls):
        log_probs = evidence[d] - prompt_evidence[d]  # [S + 1] log p(visible | prompt)
        output_log_prob = float(log_probs[-1])
        finite = math.isfinite(output_log_prob)
        found.append({
            "exact_log_prob": output_log_prob if finite else None,
            "exact_map_gap": best[d] - output_log_prob + 0.0 if finite and best[d] is not None else None,
            "exact_contradictions": int(((log_probs[:-1] > -math.inf) & (log_probs[1:] == -math.inf)).sum()),
            "exact_joint_kl": kl, "exact_joint_kl_steps_skipped": skipped})
    return found


def replay_canvases(prompt, generated, commit_step, mask_id) -> torch.Tensor:
    """[S + 1, T] the canvas before each of a decode's S steps, and after the last (prompt [P], generated and
    commit_step [G])."""
    num_steps = int(commit_step.max()) + 1 if len(commit_step) else 0
    gen = torch.where(commit_step[None] < torch.arange(num_steps + 1)[:, None], generated, mask_id)  # [S + 1, G]
    return torch.cat([prompt.expand(num_steps + 1, -1), gen], dim=1)


def joint_product_kl(distribution, canvases, commit_steps, prompt_length, evidence) -> list[tuple[float, int]]:
    """Per decode, the sum over its steps of KL(joint of the committed positions || product of their marginals),
    given the canvas before the step; (sum, steps left out: from a canvas of probability 0, or too many
    combinations). canvases and evidence: per decode, as in replay_group; commit_steps [D, G]."""
    before = torch.cat([c[:-1] for c in canvases])  # every canvas before a step
    marginals = distribution.log_marginals(before, prompt_length).split([len(c) - 1 for c in canvases])
    terms, fills = [], []  # per (decode, step) with a joint to enumerate: (decode, values' log-marginal sums)
    skipped = [0] * len(canvases)
    for d, (canvas, steps) in enumerate(zip(canvases, commit_steps)):
        for step in range(canvas.shape[0] - 1):
            positions = (steps == step).nonzero().squeeze(1).tolist()  # generation indices
            supports = [(marginals[d][step, p] > -math.inf).nonzero().squeeze(1).tolist() for p in positions]
            random_positions = [(p, s) for p, s in zip(positions, supports) if len(s) > 1]
            if len(random_positions) < 2:
                continue  # one uncertain position: joint = product
            combinations = math.prod(len(s) for _, s in random_positions)
            if evidence[d][step] == -math.inf or combinations > MAX_JOINT_COMBINATIONS:
                skipped[d] += 1
                continue
            values = torch.tensor(list(itertools.product(*(s for _, s in random_positions))))  # [C, k]
            where = torch.tensor([p for p, _ in random_positions])  # [k] generation indices
            filled = canvas[step].expand(len(values), -1).clone()  # [C, T]
            filled[:, where + prompt_length] = values
            fills.append(filled)
            product = marginals[d][step, where, values].double().sum(-1)  # [C]
            terms.append((d, step, product))
    totals = [0.0] * len(canvases)
    if fills:
        joints = distribution.log_evidence(torch.cat(fills)).double().split([len(f) for f in fills])
        for (d, step, product), joint_evidence in zip(terms, joints):
            joint = joint_evidence - evidence[d][step]  # [C] log p(values | canvas)
            kept = joint > -math.inf
            totals[d] += float((joint[kept].exp() * (joint[kept] - product[kept])).sum())
    return list(zip(totals, skipped))


def check_answer_prompt(found: torch.Tensor, what: str) -> None:
    if not bool(found.all()):
        raise UsageError(f"an exact model was given a prompt it cannot read; allowed: {what}")
