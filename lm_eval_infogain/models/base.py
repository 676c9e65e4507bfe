"""The adapter contract: the one seam between the sampler and an architecture.

The sampler only ever calls `forward_hidden`, `head` and `new_cache` and reads the `ModelSpec`; it never asks which
model it drives. Logits returned by `forward` are aligned so that logits[:, j] predicts the token at
canvas position logits_start + j (an architecture's own shift is applied inside the model).

Each architecture's model class (llada.py, dream.py, sdar.py) provides `window_logits` with the
signature of `Adapter.forward`, `window_hidden` (the same, before the LM head), `head_logits`
and `cache_geometry() -> (layers, kv_heads, head_dim)`, plus the
class attributes `logits_shift` and `attention_block_size`; `ModelAdapter` turns it into an adapter.
"""

from dataclasses import dataclass
from typing import Protocol

import torch

from lm_eval_infogain.sampling.cache import KVCache


@dataclass(frozen=True)
class ModelSpec:
    mask_id: int
    eos_id: int
    pad_id: int
    vocab_size: int  # width of the logits (LM head rows)
    stop_ids: tuple[int, ...]  # ids that end an answer (EOS, end-of-turn)
    max_length: int  # longest canvas (prompt + generation) the model is meant for
    logits_shift: int = 0  # 1: the model predicts token i at position i-1 (Dream); the window starts earlier
    attention_block_size: int | None = None  # None: bidirectional; else block-causal blocks (SDAR, TraDo)
    cache_modes: tuple[str, ...] = ("none", "prefix", "dual")  # the use_cache values this model supports


class Adapter(Protocol):
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, W] the window of the canvas being computed
        positions: torch.Tensor,  # [B, T] absolute positions of the whole canvas
        key_mask: torch.Tensor,  # [B, T] True where a canvas position may be attended (not padding)
        cache: KVCache | None,  # None: keys are the window's own
        window_start: int,  # canvas index of the window's first position
        logits_start: int,  # canvas index from which logits are wanted (>= window_start + logits_shift)
        logits_end: int | None = None,  # canvas index where they stop (None: the window's end)
    ) -> torch.Tensor:  # [B, logits_end - logits_start, V] float logits
        ...

    def forward_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        """What `forward` computes before its LM head ([B, W', C]): `head` of it gives forward's logits,
        so a caller can turn positions into logits a chunk at a time."""
        ...

    def head(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., C] -> [..., V] float logits
        ...

    def new_cache(self, batch: int, length: int) -> KVCache: ...


class ModelAdapter:
    """The sampler's view of one of the project's own model classes."""

    def __init__(self, model, spec: ModelSpec):
        self.model = model
        self.spec = spec
        self.device = model.device
        self.dtype = model.dtype

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model.window_logits(input_ids, positions, key_mask, cache, window_start, logits_start,
                                        logits_end)

    def forward_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model.window_hidden(input_ids, positions, key_mask, cache, window_start, logits_start,
                                        logits_end)

    def head(self, hidden):
        return self.model.head_logits(hidden)

    def new_cache(self, batch, length):
        layers, kv_heads, head_dim = self.model.cache_geometry()
        return KVCache.allocate(layers, batch, kv_heads, length, head_dim, self.dtype, self.device)
