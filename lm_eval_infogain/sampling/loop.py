"""The one decoding loop: blocks -> steps -> propose -> evaluate -> commit, for every strategy,
cache mode and architecture.

Order of operations for a batch of prompts (left-padded into one canvas, generation masked):
1. For each semi-autoregressive block, one forward of the whole canvas gives the block's first
   logits (and, with a cache, fills it; keys outside the recomputed window then stay as they were).
2. Each step: x0, confidence and entropy from the block's logits; the strategy proposes one or more
   candidate commit sets per prompt (the k of the linear schedule, all that is left on the last
   step, or as many as a dynamic rule such as Fast-dLLM's threshold says).
3. Every valid candidate whose next state still has masks in the block is forwarded in ONE batched
   call over the window of the cache mode: the whole canvas (`none`), block start to the end
   (`prefix`) or the block alone (`dual`). The candidates of a prompt share its cache (read once per
   prompt, never copied: cache.SharedCache); with lookahead_window=block a prompt's several candidates
   forward the block alone (two calls then, each row in one: still one forward per step), its one
   candidate the cache mode's window. A lookahead strategy picks its winner from their H_next, whose
   entropies are computed from the hidden states at the positions still masked, for prompts with
   several candidates only (the others have one candidate), streamed over the vocabulary from the
   adapter's output head (sampling/head.py). The winner is committed (then early stop fills EOS after
   its first EOS) and its block's logits, the only ones computed from the candidates' hidden states, are
   the next step's: one forward per step, and none for a prompt whose block is complete.
Rows move in lock-step through blocks; each row's random draws come from its own generator, so a
prompt's output does not depend on its batch.
Out of memory: a forward retries its rows in smaller chunks; a batch that still does not fit is split
into halves down to single prompts (`decode_splitting`), with the same outputs. `probe_batch` runs a
batch's costliest work with neither retry, so that the batch-size search (batch_size=auto) sees the error.

Architectures differ only through their ModelSpec. A shifted model (Dream) has its cached windows start
one position before the block. A block-causal model (SDAR, TraDo) never needs what follows the block:
every window ends with it, and with a cache the block-start forward recomputes only what is not final
yet (the finished block: its keys/values are committed then), so caching is exact for it.
"""

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

from lm_eval_infogain.sampling import modes
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.head import head_stats
from lm_eval_infogain.sampling.info_gain import entropy
from lm_eval_infogain.sampling.memory import split_on_out_of_memory
from lm_eval_infogain.sampling.strategies import NEG_INF, StepContext, filter_logits, sample_tokens

logger = logging.getLogger(__name__)

# fp32 logits in one chunk of H_next's entropies (256 MiB; the entropy's temporaries are a few times that)
LOGITS_CHUNK_ELEMENTS = 1 << 26


def entropy_in_chunks(values: torch.Tensor, to_logits, vocab_size: int) -> torch.Tensor:
    """Entropy [R, W] of to_logits(values) for values [R, W, ...], a chunk of positions at a time, so that
    the fp32 logits [R, W, V] and the entropy's temporaries never exist for every position at once."""
    rows, width = values.shape[:2]
    chunk = max(1, LOGITS_CHUNK_ELEMENTS // (rows * vocab_size))
    pieces = [entropy(to_logits(values[:, start:start + chunk])) for start in range(0, width, chunk)]
    return torch.cat(pieces, dim=1) if pieces else torch.zeros(rows, 0, device=values.device)


def linear_schedule(num_masked: int, steps: int) -> list[int]:
    """Tokens to commit at each step: even split, the remainder one extra on the first steps."""
    base, remainder = divmod(num_masked, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def block_ranges(prompt_length: int, gen_length: int, block_length: int,
                 attention_block_size: int | None = None) -> list[tuple[int, int]]:
    """[start, end) canvas indices of the semi-autoregressive blocks; the last one may be shorter.

    For a block-causal model the blocks follow its own attention blocks: the first one only fills the
    rest of the block the prompt ends in (the prompt's tail shares it), so that every later one starts
    on a block boundary (canvas indices are block-aligned, see `generate`).
    """
    start, end = prompt_length, prompt_length + gen_length
    ranges = []
    if attention_block_size and start % attention_block_size:
        first_end = min(end, start + attention_block_size - start % attention_block_size)
        ranges.append((start, first_end))
        start = first_end
    ranges += [(block, min(block + block_length, end)) for block in range(start, end, block_length)]
    return ranges


def align_down(index: int, size: int | None) -> int:
    return index if size is None else index - index % size


def make_strategy(config: SamplerConfig, spec=None, device="cpu"):
    """The config's strategy, built-in or a user's, by the one public path (modes.build)."""
    return modes.build(config.mode, config.strategy_option_values(), spec, device)


def replace_rows(logits: torch.Tensor, rows: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """The next step's logits: fresh ones for the rows that were forwarded, the old ones elsewhere
    (rows whose block is complete, which no later step of the block reads)."""
    next_logits = logits.clone()
    next_logits[rows] = new_logits
    return next_logits


@dataclass
class DecodeStats:
    """Per-prompt counters. NFE counts forward calls a prompt took part in (a batched lookahead is one)."""

    nfe: torch.Tensor  # [B] long
    tokens_forwarded: torch.Tensor  # [B] long, non-padding positions pushed through the model (all candidates)
    cumulative_entropy: torch.Tensor  # [B] float, sum of the entropy of each token when committed
    bypass_tokens: torch.Tensor  # [B] long, tokens Info-Gain committed by its high-confidence bypass

    def row(self, index: int) -> dict:
        return {"nfe": int(self.nfe[index]), "tokens_forwarded": int(self.tokens_forwarded[index]),
                "cumulative_entropy": float(self.cumulative_entropy[index]),
                "bypass_tokens": int(self.bypass_tokens[index])}


@dataclass
class CommitTrace:
    """Opt-in record of the decode order: per generated position, the step that committed it and the
    entropy of its distribution at that step. Steps count the loop's commits over all blocks, from 0;
    a position filled by early stop (EOS after EOS) gets the step of the fill and no entropy (NaN)."""

    step: torch.Tensor  # [B, G] long, -1 until committed
    entropy: torch.Tensor  # [B, G] float64, NaN until committed by the strategy
    steps_taken: int = 0

    @classmethod
    def empty(cls, batch: int, gen_length: int, device) -> "CommitTrace":
        step = torch.full((batch, gen_length), -1, dtype=torch.long, device=device)  # [B, G]
        return cls(step, torch.full(step.shape, float("nan"), dtype=torch.float64, device=device))

    def record(self, was_masked, is_masked, commit, entropy, block_offset: int) -> None:
        """was_masked / is_masked [B, G]: generation masks around one commit; commit, entropy [B, Lb]."""
        newly = was_masked & ~is_masked  # [B, G]
        self.step[newly] = self.steps_taken
        block = self.entropy[:, block_offset:block_offset + commit.shape[1]]  # [B, Lb] view
        chosen = commit & newly[:, block_offset:block_offset + commit.shape[1]]  # [B, Lb]
        block.copy_(torch.where(chosen, entropy.double(), block))
        self.steps_taken += 1

    def row(self, index: int) -> dict:
        entropies = self.entropy[index].tolist()
        return {"commit_step": self.step[index].tolist(),
                "commit_entropy": [None if math.isnan(value) else value for value in entropies]}


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

    def __init__(self, adapter, config: SamplerConfig, canvas: Canvas, generators, trace: bool = False,
                 retry_out_of_memory: bool = True):
        self.adapter = adapter
        self.retry_out_of_memory = retry_out_of_memory  # False: out of memory is raised at once (probe_batch)
        self.config = config
        self.strategy = make_strategy(config, adapter.spec, adapter.device)
        self.canvas = canvas
        self.generators = generators
        batch, total = canvas.ids.shape
        zeros = lambda dtype: torch.zeros(batch, dtype=dtype, device=canvas.ids.device)  # noqa: E731
        self.stats = DecodeStats(zeros(torch.long), zeros(torch.long), zeros(torch.float64), zeros(torch.long))
        self.cache = adapter.new_cache(batch, total) if config.use_cache != "none" else None
        self.block_size = adapter.spec.attention_block_size
        self.cache_final_until = 0  # block-causal: the cache holds final keys/values before this index
        self.unrefreshed_entropy = None  # [B, S] a lookahead's entropies after its step window, see start_block
        # candidates per prompt of the step being evaluated: compile=true lays a lookahead's out in this many
        # slots per prompt (the strategy's own N, which a user's strategy may set past candidate_number)
        self.candidate_slots = 1
        self.trace = CommitTrace.empty(batch, total - canvas.prompt_length, canvas.ids.device) if trace else None

    def block_start_window(self, block_end: int) -> tuple[int, int]:
        """[start, end) of the canvas the forward at a block's start computes.

        Bidirectional: the whole canvas (it refreshes every cached key). Block-causal: nothing after the
        block matters; with a cache, only what is not final yet (this also commits the finished block).
        """
        if self.block_size is None:
            return 0, self.canvas.ids.shape[1]
        return (0 if self.cache is None else self.cache_final_until), block_end

    def step_window(self, block_start: int, block_end: int) -> tuple[int, int]:
        """[start, end) of the canvas a within-block forward recomputes, per cache mode.

        A shifted model (Dream) reads the logit of block_start from block_start - 1, so its cached
        windows start there. A block-causal model recomputes from the start of the attention block the
        current block lies in (the prompt's tail shares the first one) up to the block's end.
        """
        if self.block_size is not None:
            return (0 if self.cache is None else align_down(block_start, self.block_size)), block_end
        total, start = self.canvas.ids.shape[1], block_start - self.adapter.spec.logits_shift
        return {"none": (0, total), "prefix": (start, total), "dual": (start, block_end)}[self.config.use_cache]

    def lookahead_window(self, block_start: int, block_end: int) -> tuple[int, int]:
        """[start, end) of the canvas a lookahead's candidates recompute: the step window (`rest`, the
        paper's), or with lookahead_window=block the block alone, which attends to the positions after it
        through the cache (`dual`'s window: under `dual`, and for block-causal models, the two agree)."""
        start, end = self.step_window(block_start, block_end)
        return (start, min(end, block_end)) if self.config.lookahead_window == "block" else (start, end)

    def logits_end(self, block_start: int, block_end: int) -> int:
        """Logits are needed for the block only, except by a lookahead, which also scores the masked
        positions after it (as far as its window reaches)."""
        return self.lookahead_window(block_start, block_end)[1] if self.strategy.needs_lookahead else block_end

    def forward(self, ids, rows, window, logits_range, share_cache: bool, counted=None):
        """Forward canvas rows `rows` (ids [R, T]) over `window`; the hidden states [R, logits_end -
        logits_start, C] that `logits` (or `entropies`) turns into logits.

        share_cache: `rows` are distinct (increasing), so the forward writes its window into their cache
        rows; otherwise (lookahead candidates, non-decreasing rows) they share their prompts' cache
        without writing into it (cache.SharedCache).
        On out-of-memory the rows are retried in halves, down to one at a time, with a warning (unless
        retry_out_of_memory is False).
        Stats go to the rows where `counted` [R] is True (all by default): a row that has finished
        only rides along in a batched forward and would not have needed it on its own.
        """
        chunk = len(rows)
        while True:
            try:
                pieces = [self.forward_chunk(ids[i:i + chunk], rows[i:i + chunk], window, logits_range,
                                             self.chunk_cache(rows[i:i + chunk], share_cache))
                          for i in range(0, len(rows), chunk)]
                break
            except torch.OutOfMemoryError:
                if chunk == 1 or not self.retry_out_of_memory:
                    raise
                chunk = (chunk + 1) // 2
                logger.warning("out of memory forwarding %d sequences; retrying %d at a time", len(rows), chunk)
                if self.adapter.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.count(rows, window, counted)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def chunk_cache(self, rows, share_cache: bool):
        if self.cache is None:
            return None
        return self.cache.for_forward(rows, share_cache, self.candidate_slots)

    def forward_chunk(self, ids, rows, window, logits_range, cache):
        window_start, window_end = window
        return self.adapter.forward_hidden(
            ids[:, window_start:window_end], self.canvas.positions[rows], self.canvas.key_mask[rows], cache,
            window_start, *logits_range,
        )

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits [..., V] (fp32) the strategies see for hidden states [..., C]: the LM head, then the
        EOS/PAD penalties; the top-k/top-p filter too with filter_scope=all (else step_context filters the
        draw alone)."""
        logits = self.adapter.head(hidden)  # [..., V]
        spec, config = self.adapter.spec, self.config
        logits[..., spec.eos_id] -= config.eos_penalty
        logits[..., spec.pad_id] -= config.pad_penalty  # PAD = EOS loses both, as in the paper's pipeline
        return self.filtered(logits) if config.filter_scope == "all" else logits

    def filtered(self, logits: torch.Tensor) -> torch.Tensor:
        return filter_logits(logits, self.config.top_k, self.config.top_p, self.config.temperature)

    def entropies(self, hidden: torch.Tensor) -> torch.Tensor:
        """Entropy [R, W] of the logits of hidden states [R, W, C]: streamed over the vocabulary from the
        adapter's output head (head.head_stats: the head's weights read once, no fp32 logits of every
        position), else (no output head, or filter_scope=all with top_k/top_p, whose filter needs each
        position's whole distribution) from the logits a chunk of positions at a time (entropy_in_chunks)."""
        if hidden.shape[:-1].numel() == 0:  # nothing to score (a window that ends where the logits do)
            return hidden.new_zeros(hidden.shape[:-1], dtype=torch.float32)
        head = self.adapter.output_head()
        if head is None or self.filters_entropies():
            return entropy_in_chunks(hidden, self.logits, self.adapter.spec.vocab_size)
        spec, config = self.adapter.spec, self.config
        penalties = ((spec.eos_id, config.eos_penalty), (spec.pad_id, config.pad_penalty))  # as `logits` applies them
        return head_stats(hidden.flatten(0, -2), head, penalties).entropy.view(hidden.shape[:-1])

    def filters_entropies(self) -> bool:
        config = self.config
        return config.filter_scope == "all" and (config.top_k is not None or config.top_p is not None)

    def count(self, rows, window, counted):
        window_start, window_end = window
        real_tokens = self.canvas.key_mask[rows, window_start:window_end].sum(-1)  # [R], padding not counted
        if counted is not None:
            rows, real_tokens = rows[counted], real_tokens[counted]
        self.stats.nfe[rows] += 1  # a prompt's candidates share one batched forward: one NFE
        self.stats.tokens_forwarded.index_add_(0, rows, real_tokens)

    def step_context(self, logits, block_start, block_end, num_to_commit) -> StepContext:
        """The step's view of the block's logits [B, Lb, V], which it takes over (they serve this step only)."""
        probs = torch.softmax(logits, dim=-1)  # [B, Lb, V]
        block_entropy = entropy(logits)  # [B, Lb]
        # filter_scope=draw: top_k/top_p filter only the draw (the tokens and their confidence)
        draw_logits = self.filtered(logits) if self.config.filter_scope == "draw" else logits  # [B, Lb, V]
        draw_probs = probs if draw_logits is logits else torch.softmax(draw_logits, dim=-1)  # [B, Lb, V]
        # The mask token is never a prediction: committed, it would leave its position masked for good.
        # Probabilities and entropies above keep it; the tokens' logits lose it, in place (no copy).
        mask_id = torch.tensor([self.adapter.spec.mask_id], device=logits.device)
        token_logits = draw_logits.index_fill_(-1, mask_id, NEG_INF)  # [B, Lb, V]
        tokens = sample_tokens(token_logits, self.generators, self.config.temperature)  # [B, Lb]
        masked = self.canvas.ids[:, block_start:block_end] == self.adapter.spec.mask_id  # [B, Lb]
        return StepContext(
            logits=token_logits, probs=probs, masked=masked,
            num_to_commit=torch.minimum(num_to_commit, masked.sum(-1)), tokens=tokens,
            confidence=draw_probs.gather(-1, tokens[..., None]).squeeze(-1), entropy=block_entropy,
            generators=self.generators, temperature=self.config.temperature,
        )

    def fill_after_eos(self, ids: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Early stop: once a row of ids [R, T] has EOS in its generation, every masked position after it
        becomes EOS; only in the rows where `rows` [R] is True, if given."""
        if not self.config.early_stop:
            return
        spec, generation = self.adapter.spec, ids[:, self.canvas.prompt_length:]  # [R, G] view
        fill = ((generation == spec.eos_id).cumsum(-1) > 0) & (generation == spec.mask_id)  # [R, G]
        generation.masked_fill_(fill if rows is None else fill & rows[:, None], spec.eos_id)

    def next_states(self, rows, commit, tokens, block_start, block_end, chosen) -> torch.Tensor:
        """Canvases [R, T] of canvas rows `rows` with commit [R, Lb] filled by tokens [R, Lb].

        Early stop fills only the states already chosen (`chosen` [R]): those are the next canvases.
        A lookahead candidate is scored as it would be committed, masks after its EOS included; the fill
        comes once the winner is committed (the paper's pipeline).
        """
        ids = self.canvas.ids[rows].clone()  # [R, T]
        block = ids[:, block_start:block_end]
        ids[:, block_start:block_end] = torch.where(commit, tokens, block)
        self.fill_after_eos(ids, chosen)
        return ids

    def next_entropy_mean(self, ids, rows, hidden, block_start, scored) -> torch.Tensor:
        """H_next [R] of each forwarded state ids [R, T] where scored [R] (0 elsewhere): the mean entropy over
        every position of the generation still masked in it. hidden [R, W, C] are the hidden states of the
        W positions from the block's start that the forward computed; the positions after those that the
        block-start forward reached (`dual`, lookahead_window=block: those after the block) enter with
        their entropy at that forward, the same for every candidate of a prompt, and count in the divisor.
        Entropies are computed at the still-masked positions of scored rows only (a committed position adds
        0 to the sum; a row with one candidate needs no H_next)."""
        width = hidden.shape[1]
        still_masked = ids[:, block_start:block_start + width + self.unrefreshed_entropy.shape[1]] \
            == self.adapter.spec.mask_id  # [R, W + S]
        computed = still_masked[:, :width] & scored[:, None]  # [R, W]
        entropies = torch.zeros(computed.shape, device=hidden.device)  # [R, W] fp32
        entropies[computed] = self.entropies(hidden[computed][None])[0]  # [M] (host sync: M)
        entropies = torch.cat([entropies, self.unrefreshed_entropy[rows]], dim=1)  # [R, W + S]
        return (entropies * still_masked).sum(-1) / still_masked.sum(-1).clamp(min=1)

    def evaluate(self, ctx, proposal, logits, block_start, block_end):
        """One batched forward over every candidate worth it; returns (winner [B], next logits [B, ...]).

        A candidate is forwarded when it is valid and leaves masks in the block; a row with none keeps
        its old logits, which no later step of this block reads (its block is complete).
        """
        batch, num_candidates, _ = proposal.commit.shape
        self.candidate_slots = num_candidates
        flat = proposal.valid.flatten().nonzero().squeeze(1)  # [R] (host syncs: a few per step)
        rows = flat // num_candidates  # [R]
        decided = proposal.valid.sum(-1) == 1  # [B] rows whose one candidate is their winner
        ids = self.next_states(rows, proposal.commit.flatten(0, 1)[flat], proposal.tokens.flatten(0, 1)[flat],
                               block_start, block_end, decided[rows])  # [R, T]
        leaves_masks = (ids[:, block_start:block_end] == self.adapter.spec.mask_id).any(-1)  # [R]
        flat, rows, ids = flat[leaves_masks], rows[leaves_masks], ids[leaves_masks]
        winner = torch.zeros(batch, dtype=torch.long, device=flat.device)
        if flat.numel() == 0:  # every row's block is complete
            return winner, logits
        one_per_row = flat.numel() == batch and bool((rows == torch.arange(batch, device=rows.device)).all())
        looks_ahead = ~decided[rows]  # [R]
        if self.lookahead_window(block_start, block_end) == self.step_window(block_start, block_end):
            block_hidden, mean_entropy = self.forward_states(ids, rows, self.step_window(block_start, block_end),
                                                             block_start, block_end, one_per_row, looks_ahead)
        else:
            block_hidden, mean_entropy = self.forward_split(ids, rows, looks_ahead, block_start, block_end)
        if mean_entropy is None:  # no row looks ahead: every forwarded state is its row's winner
            new_logits = self.logits(block_hidden)  # [R, Lb, V]
            return winner, new_logits if one_per_row else replace_rows(logits, rows, new_logits)
        next_entropy = torch.zeros(batch * num_candidates, device=flat.device).index_put_((flat,), mean_entropy)
        winner = self.strategy.choose(ctx, proposal, next_entropy.view(batch, num_candidates))  # [B]
        slot = torch.full((batch * num_candidates,), -1, dtype=torch.long, device=flat.device)
        slot[flat] = torch.arange(flat.numel(), device=flat.device)
        winner_slot = slot.view(batch, num_candidates).gather(1, winner[:, None]).squeeze(1)  # [B], -1: none
        evaluated = winner_slot >= 0
        return winner, replace_rows(logits, evaluated, self.logits(block_hidden[winner_slot[evaluated]]))

    def forward_states(self, ids, rows, window, block_start, block_end, share_cache: bool, scored):
        """Hidden states [R, Lb, C] of the block in states ids [R, T] of canvas rows `rows`, forwarded over
        `window`, and a lookahead strategy's H_next [R] of the rows where scored [R] (else None). The block's
        logits are left to the caller: a lookahead needs the winner's only."""
        scored = scored if self.strategy.needs_lookahead and scored.any() else None
        logits_end = block_end if scored is None else self.logits_end(block_start, block_end)
        hidden = self.forward(ids, rows, window, (block_start, logits_end), share_cache)
        if scored is None:
            return hidden[:, :block_end - block_start], None
        return hidden[:, :block_end - block_start], self.next_entropy_mean(ids, rows, hidden, block_start, scored)

    def forward_split(self, ids, rows, looks_ahead, block_start, block_end):
        """forward_states where the lookahead window is not the step window (lookahead_window=block under
        `prefix`): states of rows with one candidate (looks_ahead [R] False) are forwarded over the step
        window, as a plain step's, and write their keys/values into the cache (so a later lookahead of the
        block attends to the positions after it as the latest such forward computed them); lookahead
        candidates over the block only. Returns (hidden states [R, Lb, C], H_next [R], 0 where not scored)."""
        block_hidden, mean_entropy = None, torch.zeros(len(rows), device=rows.device)
        parts = ((~looks_ahead, self.step_window(block_start, block_end), True),
                 (looks_ahead, self.lookahead_window(block_start, block_end), False))
        for part, window, single in parts:
            if not part.any():
                continue
            part_hidden, part_entropy = self.forward_states(ids[part], rows[part], window, block_start, block_end,
                                                            share_cache=single, scored=looks_ahead[part])
            if block_hidden is None:
                block_hidden = part_hidden.new_empty(len(rows), *part_hidden.shape[1:])  # [R, Lb, C]
            block_hidden[part] = part_hidden
            if part_entropy is not None:
                mean_entropy[part] = part_entropy
        return block_hidden, mean_entropy

    def commit(self, ctx, proposal, winner, block_start, block_end):
        pick = lambda t: t[torch.arange(t.shape[0], device=t.device), winner]  # noqa: E731  [B, Lb]
        commit, tokens = pick(proposal.commit), pick(proposal.tokens)
        if self.trace is not None:
            was_masked = self.canvas.ids[:, self.canvas.prompt_length:] == self.adapter.spec.mask_id  # [B, G]
        block = self.canvas.ids[:, block_start:block_end]
        self.canvas.ids[:, block_start:block_end] = torch.where(commit, tokens, block)
        self.fill_after_eos(self.canvas.ids)
        self.stats.cumulative_entropy += (ctx.entropy * commit).sum(-1).double()
        if self.trace is not None:
            is_masked = self.canvas.ids[:, self.canvas.prompt_length:] == self.adapter.spec.mask_id  # [B, G]
            self.trace.record(was_masked, is_masked, commit, ctx.entropy, block_start - self.canvas.prompt_length)
        if proposal.bypass is not None:
            self.stats.bypass_tokens += commit.sum(-1) * proposal.bypass

    def start_block(self, block_start, block_end, has_masks) -> torch.Tensor:
        """The block's first logits [B, Lb, V], from one forward of the block-start window.

        A lookahead keeps the entropies of the positions after the step window that this forward reaches
        (`dual`: the ones after the block), for H_next: within the block nothing recomputes them.
        """
        step_end = self.logits_end(block_start, block_end)
        end = self.block_start_window(block_end)[1] if self.strategy.needs_lookahead else step_end
        all_rows = torch.arange(self.canvas.ids.shape[0], device=self.canvas.ids.device)
        hidden = self.forward(self.canvas.ids, all_rows, self.block_start_window(block_end), (block_start, end),
                              share_cache=True, counted=has_masks)  # [B, end - block_start, C]
        self.cache_final_until = align_down(block_start, self.block_size)
        self.unrefreshed_entropy = self.entropies(hidden[:, step_end - block_start:])  # [B, end - step_end]
        return self.logits(hidden[:, :block_end - block_start])

    def decode_block(self, block_start, block_end, max_steps: int | None = None):
        """The block's steps, or its first max_steps of them (probe_batch)."""
        width = block_end - block_start
        dynamic = getattr(self.strategy, "dynamic_steps", False)
        # a dynamic rule commits at least one token per step: `width` steps always end the block
        steps = width if dynamic else min(self.config.steps_per_block, width)
        batch = self.canvas.ids.shape[0]
        all_rows = torch.arange(batch, device=self.canvas.ids.device)
        has_masks = (self.canvas.ids[:, block_start:block_end] == self.adapter.spec.mask_id).any(-1)  # [B]
        if not has_masks.any():  # every row stopped early (EOS filled the rest)
            return
        logits = self.start_block(block_start, block_end, has_masks)  # [B, Lb, V]
        for step, count in enumerate(linear_schedule(width, steps)):
            last = step == steps - 1
            # the last step commits everything left in the block
            num_to_commit = torch.full((batch,), width if last else count, device=all_rows.device)
            ctx = self.step_context(logits, block_start, block_end, num_to_commit)
            proposal = self.strategy.propose(ctx)
            winner = torch.zeros(batch, dtype=torch.long, device=all_rows.device)
            if not last:
                winner, logits = self.evaluate(ctx, proposal, logits, block_start, block_end)
            self.commit(ctx, proposal, winner, block_start, block_end)
            if step + 1 == max_steps:
                break
            if not (self.canvas.ids[:, block_start:block_end] == self.adapter.spec.mask_id).any():
                break  # dynamic rules and early stop can finish a block before its last step


@torch.inference_mode()
def generate(adapter, prompts: list[list[int]], config: SamplerConfig, seeds: list[int],
             gen_length: int | None = None, trace: bool = False) -> tuple[list[list[int]], list[dict]]:
    """Decode a batch of tokenized prompts; returns the generated ids and per-prompt stats.

    gen_length (<= config.gen_length) shortens the generation, e.g. to a task's max_gen_toks; blocks
    keep config.block_length and each keeps config.steps_per_block steps (the last may be shorter).
    A block-causal model's blocks count from each prompt's first token, so one canvas holds only
    prompts whose lengths agree modulo its block size: then their blocks line up (left padding is a
    whole number of blocks) and so do the semi-autoregressive blocks of the loop.
    trace=True adds each prompt's decode order to its stats (`commit_step`, `commit_entropy`: see CommitTrace).
    """
    gen_length = config.gen_length if gen_length is None else gen_length
    size = adapter.spec.attention_block_size
    groups: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(0 if size is None else len(prompt) % size, []).append(index)
    generated, stats = [None] * len(prompts), [None] * len(prompts)
    for indices in groups.values():
        group_generated, group_stats = decode_splitting(adapter, [prompts[i] for i in indices], config,
                                                        [seeds[i] for i in indices], gen_length, trace)
        for index, ids, row in zip(indices, group_generated, group_stats):
            generated[index], stats[index] = ids, row
    return generated, stats


def decode_splitting(adapter, prompts, config, seeds, gen_length, trace=False) -> tuple[list[list[int]], list[dict]]:
    """decode_canvas, retried in halves (down to one prompt) when the batch runs out of memory.

    The forward already retries its own rows in smaller chunks; this covers what lies outside it (the
    cache allocation, the step's softmax over [B, Lb, V], a forward that fails even one row at a time).
    Each half starts afresh from its prompts and seeds, and every row draws from its own generator, so
    the outputs are those of the whole batch.
    """
    def decode(batch: list[tuple[list[int], int]]) -> list[tuple[list[int], dict]]:
        batch_prompts, batch_seeds = zip(*batch)
        return list(zip(*decode_canvas(adapter, list(batch_prompts), config, list(batch_seeds), gen_length, trace)))

    results = split_on_out_of_memory(decode, list(zip(prompts, seeds)), adapter.device,
                                     "decoding a batch of {} prompts")
    return [generated for generated, _ in results], [stats for _, stats in results]


def decode_canvas(adapter, prompts, config, seeds, gen_length, trace=False, max_steps_per_block=None,
                  retry_out_of_memory=True) -> tuple[list[list[int]], list[dict]]:
    """One padded canvas through the loop, block after block (each block's first max_steps_per_block steps
    only, when given)."""
    device = adapter.device
    canvas = build_canvas(prompts, gen_length, adapter.spec, device)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    decoder = Decoder(adapter, config, canvas, generators, trace, retry_out_of_memory)
    for start, end in block_ranges(canvas.prompt_length, gen_length, config.block_length,
                                   adapter.spec.attention_block_size):
        decoder.decode_block(start, end, max_steps_per_block)
    generated = canvas.ids[:, canvas.prompt_length:].tolist()
    stats = [decoder.stats.row(i) for i in range(len(prompts))]
    if decoder.trace is not None:
        stats = [row | decoder.trace.row(i) for i, row in enumerate(stats)]
    return generated, stats


@torch.inference_mode()
def probe_batch(adapter, prompt: list[int], config: SamplerConfig, gen_length: int, batch_size: int) -> None:
    """The costliest work of a batch of `batch_size` prompts as long as `prompt`, with out of memory raised
    (torch.OutOfMemoryError), never retried in smaller pieces: the batch-size search's test of a size.

    A canvas of copies of `prompt` runs every block's block-start forward and first step: that step forwards
    every candidate of a lookahead (the most rows of the block), and the widest windows are at the first
    block (bidirectional models) or the last one (block-causal without a cache). Early stop is off and
    Info-Gain's confidence shortcuts nearly so (threshold and parallel_threshold 1: only a probability that
    rounds to 1 takes them), so that no row skips a block or its lookahead as a real prompt's decode may.
    """
    worst = dataclasses.replace(config, early_stop=False)
    if config.mode == "info_gain":
        worst = dataclasses.replace(worst, threshold=1.0,
                                    parallel_threshold=None if config.parallel_threshold is None else 1.0)
    decode_canvas(adapter, [prompt] * batch_size, worst, list(range(batch_size)), gen_length, max_steps_per_block=1,
                  retry_out_of_memory=False)
