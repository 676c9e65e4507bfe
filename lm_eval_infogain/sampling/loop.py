"""The one decoding loop: blocks -> steps -> propose -> evaluate -> commit, for every strategy,
cache mode and architecture.

Order of operations for a batch of prompts (left-padded into one canvas, generation masked):
1. For each semi-autoregressive block, one forward of the whole canvas gives the block's first
   logits (and, with `prefix`, fills the cache whose keys before the block stay fixed).
2. Each step: x0, confidence and entropy from the block's logits; the strategy proposes one or more
   candidate commit sets per prompt (the k of the linear schedule; all that is left on the last step).
3. Unless it is the block's last step, every valid candidate's next state is forwarded in ONE
   batched call (window per cache mode: the whole canvas for `none`, block start to end for
   `prefix`); a lookahead strategy picks its winner from those logits, the others have one
   candidate. The winner is committed and its logits are the next step's: one forward per step.
Rows move in lock-step through blocks and steps; each row's random draws come from its own
generator, so a prompt's output does not depend on its batch.
"""

from dataclasses import dataclass

import torch

from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.info_gain import InfoGain, entropy
from lm_eval_infogain.sampling.strategies import SCORE_STRATEGIES, ScoreStrategy, StepContext, sample_tokens


def linear_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens to commit at each step: even split, the remainder one extra on the first steps."""
    base, remainder = divmod(num_masked, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def block_ranges(gen_length: int, block_length: int) -> list[tuple[int, int]]:
    """[start, end) offsets of the blocks in the generated region; the last one may be shorter."""
    return [(start, min(start + block_length, gen_length)) for start in range(0, gen_length, block_length)]


def make_strategy(config: SamplerConfig):
    if config.mode == "info_gain":
        return InfoGain(config.candidate_number, config.position_temperature, config.threshold, config.variant)
    return ScoreStrategy(SCORE_STRATEGIES[config.mode])


@dataclass
class DecodeStats:
    """Per-prompt counters. NFE counts forward calls a prompt took part in (a batched lookahead is one)."""

    nfe: torch.Tensor  # [B] long
    tokens_forwarded: torch.Tensor  # [B] long, positions pushed through the model (all candidates)
    cumulative_entropy: torch.Tensor  # [B] float, sum of the entropy of each token when committed

    def row(self, index: int) -> dict:
        return {"nfe": int(self.nfe[index]), "tokens_forwarded": int(self.tokens_forwarded[index]),
                "cumulative_entropy": float(self.cumulative_entropy[index])}


@dataclass
class Canvas:
    ids: torch.Tensor  # [B, T] prompt (left-padded) + generation
    positions: torch.Tensor  # [B, T] absolute positions, counted from each prompt's first real token
    key_mask: torch.Tensor  # [B, T] False on padding
    prompt_length: int  # P: the generation starts at canvas index P


def build_canvas(prompts: list[list[int]], gen_length: int, spec, device) -> Canvas:
    prompt_length = max(len(p) for p in prompts)
    total = prompt_length + gen_length
    ids = torch.full((len(prompts), total), spec.mask_id, dtype=torch.long, device=device)  # [B, T]
    key_mask = torch.ones_like(ids, dtype=torch.bool)  # [B, T]
    for row, prompt in enumerate(prompts):
        pad = prompt_length - len(prompt)
        ids[row, :pad] = spec.pad_id
        key_mask[row, :pad] = False
        ids[row, pad:prompt_length] = torch.tensor(prompt, dtype=torch.long, device=device)
    positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, T]
    return Canvas(ids, positions, key_mask, prompt_length)


class Decoder:
    """Runs one batch through the loop; holds the per-batch state the step functions share."""

    def __init__(self, adapter, config: SamplerConfig, canvas: Canvas, generators):
        self.adapter = adapter
        self.config = config
        self.strategy = make_strategy(config)
        self.canvas = canvas
        self.generators = generators
        batch, total = canvas.ids.shape
        zeros = lambda dtype: torch.zeros(batch, dtype=dtype, device=canvas.ids.device)  # noqa: E731
        self.stats = DecodeStats(zeros(torch.long), zeros(torch.long), zeros(torch.float64))
        self.cache = adapter.new_cache(batch, total) if config.use_cache != "none" else None

    def forward(self, ids, rows, window_start, logits_start, cache):
        """Forward `ids` [R, W] (canvas rows `rows`) over [window_start, T); logits from logits_start."""
        canvas = self.canvas
        logits = self.adapter.forward(
            ids[:, window_start:], canvas.positions[rows, window_start:], canvas.key_mask[rows],
            cache, window_start, logits_start,
        )  # [R, T - logits_start, V]
        self.stats.nfe[rows] += 1  # a prompt's candidates share one batched forward: one NFE
        self.stats.tokens_forwarded.index_add_(0, rows, torch.full_like(rows, ids.shape[1] - window_start))
        return logits

    def step_context(self, logits, block_start, block_end, num_to_commit) -> StepContext:
        width = block_end - block_start
        block_logits = logits[:, :width]  # [B, Lb, V]
        probs = torch.softmax(block_logits, dim=-1)  # [B, Lb, V]
        tokens = sample_tokens(block_logits, self.generators, self.config.temperature)  # [B, Lb]
        masked = self.canvas.ids[:, block_start:block_end] == self.adapter.spec.mask_id  # [B, Lb]
        remaining = masked.sum(-1)  # [B]
        return StepContext(
            logits=block_logits, probs=probs, masked=masked,
            num_to_commit=torch.minimum(num_to_commit, remaining), tokens=tokens,
            confidence=probs.gather(-1, tokens[..., None]).squeeze(-1), entropy=entropy(block_logits),
            generators=self.generators, temperature=self.config.temperature,
        )

    def evaluate(self, ctx, proposal, block_start, block_end):
        """One batched forward over every valid candidate's next state; returns (winner [B], logits)."""
        batch, num_candidates, _ = proposal.commit.shape
        flat = proposal.valid.flatten().nonzero().squeeze(1)  # [R] (one host sync per step)
        rows = flat // num_candidates  # [R]
        ids = self.canvas.ids[rows].clone()  # [R, T]
        commit = proposal.commit.flatten(0, 1)[flat]  # [R, Lb]
        block = ids[:, block_start:block_end]
        ids[:, block_start:block_end] = torch.where(commit, proposal.tokens.flatten(0, 1)[flat], block)
        window_start = 0 if self.cache is None else block_start
        cache = self.cache if (self.cache is None or flat.numel() == batch) else self.cache.select_rows(rows)
        if flat.numel() == batch:  # one candidate per row: no lookahead, candidate 0 wins
            return torch.zeros(batch, dtype=torch.long, device=flat.device), self.forward(
                ids, rows, window_start, block_start, cache)
        logits = self.forward(ids, rows, window_start, block_start, cache)  # [R, T - block_start, V]
        still_masked = ids[:, block_start:] == self.adapter.spec.mask_id  # [R, T - block_start]
        mean_entropy = (entropy(logits) * still_masked).sum(-1) / still_masked.sum(-1).clamp(min=1)  # [R]
        next_entropy = torch.zeros(batch * num_candidates, device=logits.device).index_put_((flat,), mean_entropy)
        winner = self.strategy.choose(ctx, proposal, next_entropy.view(batch, num_candidates))  # [B]
        winner_slot = torch.full((batch * num_candidates,), -1, dtype=torch.long, device=flat.device)
        winner_slot[flat] = torch.arange(flat.numel(), device=flat.device)
        return winner, logits[winner_slot.view(batch, num_candidates).gather(1, winner[:, None]).squeeze(1)]

    def commit(self, ctx, proposal, winner, block_start, block_end):
        pick = lambda t: t[torch.arange(t.shape[0], device=t.device), winner]  # noqa: E731  [B, Lb]
        commit, tokens = pick(proposal.commit), pick(proposal.tokens)
        block = self.canvas.ids[:, block_start:block_end]
        self.canvas.ids[:, block_start:block_end] = torch.where(commit, tokens, block)
        self.stats.cumulative_entropy += (ctx.entropy * commit).sum(-1).double()

    def decode_block(self, block_start, block_end):
        steps = min(self.config.steps_per_block, block_end - block_start)
        batch = self.canvas.ids.shape[0]
        all_rows = torch.arange(batch, device=self.canvas.ids.device)
        logits = self.forward(self.canvas.ids, all_rows, 0, block_start, self.cache)  # [B, T - start, V]
        for step, count in enumerate(linear_schedule(block_end - block_start, steps)):
            last = step == steps - 1
            # the last step commits everything left in the block
            num_to_commit = torch.full((batch,), block_end - block_start if last else count, device=all_rows.device)
            ctx = self.step_context(logits, block_start, block_end, num_to_commit)
            proposal = self.strategy.propose(ctx)
            if last:
                winner = torch.zeros(batch, dtype=torch.long, device=all_rows.device)
            else:
                winner, logits = self.evaluate(ctx, proposal, block_start, block_end)
            self.commit(ctx, proposal, winner, block_start, block_end)


@torch.inference_mode()
def generate(adapter, prompts: list[list[int]], config: SamplerConfig, seeds: list[int],
             gen_length: int | None = None) -> tuple[list[list[int]], list[dict]]:
    """Decode a batch of tokenized prompts; returns the generated ids and per-prompt stats.

    gen_length (<= config.gen_length) shortens the generation, e.g. to a task's max_gen_toks; blocks
    keep config.block_length and each keeps config.steps_per_block steps (the last may be shorter).
    """
    gen_length = config.gen_length if gen_length is None else gen_length
    device = adapter.device
    canvas = build_canvas(prompts, gen_length, adapter.spec, device)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    decoder = Decoder(adapter, config, canvas, generators)
    for start, end in block_ranges(gen_length, config.block_length):
        decoder.decode_block(canvas.prompt_length + start, canvas.prompt_length + end)
    generated = canvas.ids[:, canvas.prompt_length:].tolist()
    return generated, [decoder.stats.row(i) for i in range(len(prompts))]
