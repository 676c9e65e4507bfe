"""compile=true: the model's forward through torch.compile, at a few static shapes.

Dynamo compiles a graph per distinct set of input shapes, and a CUDA graph replays only the shapes it
recorded. The loop's forwards come in many shapes: rows from 1 to B x N (a lookahead's candidates),
windows that shrink block by block, canvases as long as each batch's prompts. CompiledAdapter pads every
forward to one of a few, so that a decode compiles a bounded number of graphs:

- canvas: the cache, the key mask and the positions are `padded_length(T)` long (T rounded up to a
  multiple of WIDTH_QUANTUM, plus WIDTH_QUANTUM); positions past T are padding (key mask False).
- window: one that ends at the canvas end (use_cache none and prefix, a bidirectional block start) is
  widened to a multiple of WIDTH_QUANTUM, into that slack: its extra positions write keys/values only into
  the slack. So is every window of a block-causal model (SDAR, TraDo): no position attends to a later block,
  and a position's cached keys/values are written again before any later block reads them. A bidirectional
  window that ends inside the canvas (dual, lookahead_window=block) keeps its width: widening it would
  change what the block attends to.
- rows: lookahead candidates are laid out N slots per prompt over the whole cache (B x N rows, an empty
  slot repeating one of its prompt's rows, or row 0 for a prompt with none); rows that write a subset of
  the cache are padded to B by repeating the last one (the same keys/values written to the same row);
  without a cache, rows are padded to a power of two.
- the window's start is a symbolic int (torch.compiler.config.dynamic_sources): one graph serves every block.

Padding never reaches a real position's hidden state: padded keys are masked out, padded queries and rows
are dropped. A decode of B prompts therefore compiles at most one graph per (cache form, window width): cache
forms are the whole cache, a subset of its rows, the shared lookahead view and no cache; widths are the
padded canvas, the block (its last one may be shorter) and, under `prefix`, one per distinct padded
`gen_length - j * block_length + logits_shift` (tests/test_compile.py counts them). A new canvas length
bucket adds graphs of the same kinds.

The cache is kept for the next decode of the same shape. On CUDA the graphs run as CUDA graphs (torch.compile
mode="reduce-overhead"), and the cache, which they write, is marked a static address: kept, it needs no new
recording. A CUDA graph holds its window start as a constant, so each graph is recorded once per block start
it meets (torch records one per distinct int input). No GPU has run this path yet: `bench/sampler.py
--device cuda` times it.
"""

import torch
import torch._dynamo

from lm_eval_infogain.models.layers import logits_hidden
from lm_eval_infogain.sampling.cache import KVCache, RowsCache, SharedCache

# granularity of padded window widths and canvas lengths (positions)
WIDTH_QUANTUM = 64
# graphs one compiled forward may hold; past it dynamo would fall back to eager silently, so it raises
RECOMPILE_LIMIT = 256


def round_up(value: int, quantum: int) -> int:
    return -(-value // quantum) * quantum


def padded_length(canvas_length: int) -> int:
    """Length of the cache, key mask and positions of a canvas of `canvas_length`: room for any widened window."""
    return round_up(canvas_length, WIDTH_QUANTUM) + WIDTH_QUANTUM


def pad_right(values: torch.Tensor, length: int, fill) -> torch.Tensor:
    """values [R, L] widened to [R, length] with `fill`."""
    filler = torch.full((values.shape[0], length - values.shape[1]), fill, dtype=values.dtype, device=values.device)
    return torch.cat([values, filler], dim=1)


def repeat_last_row(values: torch.Tensor, count: int) -> torch.Tensor:
    """values [R, ...] padded to [count, ...] with copies of its last row."""
    return torch.cat([values, values[-1:].expand(count - len(values), *values.shape[1:])])


class PaddedCache(KVCache):
    """The cache of a compiled decode: its forwards get the forms of fixed shape of the module docstring."""

    def for_forward(self, rows: torch.Tensor, writes: bool, slots: int):
        """As KVCache.for_forward, in fixed-shape forms: the whole cache when every row writes, a RowsCache of the
        rows that write, else a SharedCache over the whole cache with `slots` slots per prompt (no host sync)."""
        if writes:
            return self if len(rows) == self.batch_size else RowsCache(self, rows)
        slot_of = torch.arange(len(rows), device=rows.device) - torch.searchsorted(rows, rows)  # [R]
        return SharedCache(self, rows, slot_of, slots)


def dense_layout(shared: SharedCache) -> torch.Tensor:
    """For each of the P x slots rows of the dense layout, the index of the candidate row [R] that fills it:
    the candidate itself in its own slot, else its prompt's first candidate (row 0 for a prompt with none)."""
    prompts, device = shared.cache.batch_size, shared.prompt_of.device
    first = torch.searchsorted(shared.prompt_of, torch.arange(prompts, device=device))  # [P]
    clamped = first.clamp(max=len(shared.prompt_of) - 1)
    first = torch.where(shared.prompt_of[clamped] == torch.arange(prompts, device=device), clamped, 0)  # [P]
    source = first.repeat_interleave(shared.slots)  # [P * slots]
    source[shared.prompt_of * shared.slots + shared.slot_of] = torch.arange(len(shared.prompt_of), device=device)
    return source


class CompiledAdapter:
    """An adapter of one of the project's model classes (base.ModelAdapter) whose forward runs compiled, at the
    padded shapes of the module docstring. Logits and caches are the eager adapter's, to float tolerance."""

    def __init__(self, adapter, backend: str = "inductor"):
        self.eager = adapter
        self.model, self.spec, self.device, self.dtype = adapter.model, adapter.spec, adapter.device, adapter.dtype
        self.cuda_graphs = self.device.type == "cuda" and backend == "inductor"
        self.compiled = torch.compile(self.window_hidden, backend=backend, dynamic=False,
                                      mode="reduce-overhead" if self.cuda_graphs else None)
        self.kept_cache = None  # the last cache, reused by the next decode of its shape (see new_cache)

    def window_hidden(self, input_ids, positions, key_mask, cache, window_start):
        """Final hidden states [R, W, C] of every position of the window [window_start, +W): the compiled graph."""
        shift = self.spec.logits_shift
        return self.model.window_hidden(input_ids, positions, key_mask, cache, window_start, window_start + shift,
                                        window_start + input_ids.shape[1] + shift, self.spec.attention_block_size)

    def forward_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        """As base.Adapter.forward_hidden, through the compiled graph of the padded shapes."""
        rows, width = input_ids.shape
        canvas = positions.shape[1]
        length = padded_length(canvas)
        widens = window_start + width == canvas or self.spec.attention_block_size is not None
        padded_width = round_up(width, WIDTH_QUANTUM) if widens else width
        input_ids = pad_right(input_ids, padded_width, self.spec.pad_id)  # [R, W']
        step = torch.arange(1, length - canvas + 1, device=positions.device)  # padding continues the positions
        positions = torch.cat([positions, positions[:, -1:] + step], dim=1)  # [R, length]
        key_mask = pad_right(key_mask, length, False)  # [R, length]
        cache, source, keep = self.padded_rows(cache, rows, input_ids.device)
        with torch.compiler.config.patch(dynamic_sources="L['window_start']"), \
                torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
            hidden = self.compiled(input_ids[source], positions[source], key_mask[source], cache, window_start)
        end = window_start + width + self.spec.logits_shift if logits_end is None else logits_end
        # hidden[keep] is a copy: a CUDA graph overwrites its output buffer at its next replay
        return logits_hidden(hidden[keep], window_start, logits_start, end, self.spec.logits_shift)

    @staticmethod
    def padded_rows(cache, rows: int, device):
        """(the cache of the padded rows, source [R'] picking the padded rows from the R real ones, keep [R]
        picking the real rows' results from the padded ones)."""
        real = torch.arange(rows, device=device)
        if isinstance(cache, SharedCache):
            source = dense_layout(cache)
            keep = cache.prompt_of * cache.slots + cache.slot_of
            prompts = cache.cache.batch_size
            dense = SharedCache(cache.cache, torch.arange(prompts, device=device).repeat_interleave(cache.slots),
                                torch.arange(cache.slots, device=device).repeat(prompts), cache.slots)
            return dense, source, keep
        if isinstance(cache, RowsCache):
            count = cache.cache.batch_size
            return RowsCache(cache.cache, repeat_last_row(cache.rows, count)), repeat_last_row(real, count), real
        if cache is None:
            count = 1 << (rows - 1).bit_length()
            return None, repeat_last_row(real, count), real
        assert cache.batch_size == rows, f"a writing forward of {rows} rows over a cache of {cache.batch_size}"
        return cache, real, real

    def forward(self, *args, **kwargs):
        """Logits of whole windows (the likelihood's forward, once per request): eager."""
        return self.eager.forward(*args, **kwargs)

    def head(self, hidden):
        return self.eager.head(hidden)

    def output_head(self):
        return self.eager.output_head()

    def new_cache(self, batch: int, length: int) -> KVCache:
        """A cache of padded_length(length) positions. The last one is kept and handed to the next decode of the
        same shape (a decode writes every position before it attends to it), so that on CUDA, where its buffers
        are static addresses of the CUDA graphs, the graphs need not be recorded again."""
        length = padded_length(length)
        kept = self.kept_cache
        if kept is not None and kept.batch_size == batch and kept.keys[0].shape[2] == length:
            return kept
        self.kept_cache = None  # freed before the next one is allocated
        eager = self.eager.new_cache(batch, length)
        self.kept_cache = PaddedCache(eager.keys, eager.values)
        if self.cuda_graphs:
            for buffer in self.kept_cache.keys + self.kept_cache.values:
                torch._dynamo.mark_static_address(buffer)
        return self.kept_cache
