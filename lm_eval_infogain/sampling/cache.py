"""The key/value cache the sampler owns: preallocated per-layer buffers written by position.

One cache serves every cache mode. A forward always computes a *window* of the canvas and writes the
window's keys/values into the buffers, then attends over the whole buffer. The mode only decides the
window (see loop.py): `none` forwards the whole canvas without a cache, `prefix` the positions from
the current block to the end, `dual` the current block only. Keys are stored after RoPE.
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

    def select_rows(self, rows: torch.Tensor) -> "KVCache":
        """A cache for the given batch rows (one batched copy; used for lookahead candidates)."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values])
