"""The key/value cache the sampler owns: preallocated per-layer buffers written by position.

One cache serves every cache mode. A forward always computes a *window* of the canvas and writes the
window's keys/values into the buffers, then attends over the whole buffer. The mode only decides the
window (see loop.py): `none` forwards the whole canvas without a cache, `prefix` the positions from
the current block to the end, `dual` the current block only. Keys are stored after RoPE.
A lookahead's candidates do not write: they share their prompt's cache through a `SharedCache`.
"""

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    keys: list[torch.Tensor]  # per layer [B, H_kv, T, D]
    values: list[torch.Tensor]  # per layer [B, H_kv, T, D]

    @classmethod
    def allocate(cls, num_layers, batch, num_kv_heads, length, head_dim, dtype, device):
        shape = (batch, num_kv_heads, length, head_dim)
        make = lambda: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        return cls([make() for _ in range(num_layers)], [make() for _ in range(num_layers)])

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def write(self, layer: int, start: int, keys, values):
        """Store a window's keys/values [B, H_kv, W, D] at [start, start+W); return the full buffers."""
        end = start + keys.shape[2]
        self.keys[layer][:, :, start:end] = keys
        self.values[layer][:, :, start:end] = values
        return self.keys[layer], self.values[layer]

    def rows_view(self, start: int, end: int) -> "KVCache":
        """Batch rows [start, end) as views: writes through them land in this cache."""
        return KVCache([k[start:end] for k in self.keys], [v[start:end] for v in self.values])

    def for_forward(self, rows: torch.Tensor, writes: bool, slots: int) -> "KVCache | RowsCache | SharedCache":
        """The cache a forward of canvas rows `rows` [R] uses: rows it writes its window into, or (lookahead
        candidates, at most `slots` per prompt) a SharedCache of their prompts' rows. A cache of fixed-shape
        forms (sampling.compiled.PaddedCache) gives other forms of the same keys."""
        return self.writable_rows(rows) if writes else SharedCache.for_rows(self, rows)

    def writable_rows(self, rows: torch.Tensor) -> "KVCache | RowsCache":
        """Rows `rows` [R] (increasing) for a forward that writes its window into them: a view when they are
        consecutive, else a RowsCache."""
        first, last = int(rows[0]), int(rows[-1])  # host syncs: two per forward
        return self.rows_view(first, last + 1) if last - first + 1 == len(rows) else RowsCache(self, rows)


@dataclass
class RowsCache:
    """Rows `rows` [R] of a cache that are not consecutive, written in place. Rows picked by index are
    no view, so each layer's rows are gathered (one layer at a time) for the attention that follows a write."""

    cache: KVCache
    rows: torch.Tensor  # [R] long

    def write(self, layer: int, start: int, keys, values):
        """As KVCache.write: store [R, H_kv, W, D] at [start, start+W) of the rows; return their buffers."""
        end = start + keys.shape[2]
        self.cache.keys[layer][self.rows, :, start:end] = keys
        self.cache.values[layer][self.rows, :, start:end] = values
        return self.cache.keys[layer][self.rows], self.cache.values[layer][self.rows]  # [R, H_kv, T, D]


@dataclass
class SharedCache:
    """Lookahead candidates' view of the cache: several canvas states per prompt, one cache per prompt.

    Candidate r is a state of prompt `prompt_of[r]` (an index into `cache`'s rows) that differs from the
    cached canvas only inside the forward's window. It attends to its prompt's cached keys outside the
    window, read once for all the prompt's candidates, and to its own window's keys, which are never
    written into the cache (see layers.attend_shared). Candidates of a prompt are consecutive rows;
    `slot_of[r]` numbers them within their prompt, `slots` is the most any prompt has.
    `dense`: every prompt has `slots` candidates, so row r is (prompt r // slots, slot r % slots).
    """

    cache: KVCache  # rows: the prompts, whose cached canvas the candidates share
    prompt_of: torch.Tensor  # [R] long, non-decreasing
    slot_of: torch.Tensor  # [R] long
    slots: int

    @property
    def dense(self) -> bool:
        return len(self.prompt_of) == self.cache.keys[0].shape[0] * self.slots

    @classmethod
    def for_rows(cls, cache: KVCache, rows: torch.Tensor) -> "SharedCache":
        """Candidates of canvas rows `rows` [R] (non-decreasing): the view covers rows[0]..rows[-1] only."""
        first, last = int(rows[0]), int(rows[-1])  # host syncs: two per forward
        prompt_of = rows - first  # [R]
        slot_of = torch.arange(len(rows), device=rows.device) - torch.searchsorted(prompt_of, prompt_of)  # [R]
        return cls(cache.rows_view(first, last + 1), prompt_of, slot_of, int(slot_of.max()) + 1)
