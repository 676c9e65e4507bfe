"""The adapter contract: the one seam between the sampler and an architecture.

The sampler only ever calls `forward` and `new_cache` and reads the `ModelSpec`; it never asks which
model it drives. Logits returned by `forward` are aligned so that logits[:, i] predicts the token at
the i-th returned position (an architecture's own shift is applied inside its adapter).
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


class Adapter(Protocol):
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype

    def forward(
        self,
        input_ids: torch.Tensor,  # [B, W] the window of the canvas being computed
        positions: torch.Tensor,  # [B, W] absolute positions of the window
        key_mask: torch.Tensor,  # [B, T] True where a canvas position may be attended (not padding)
        cache: KVCache | None,  # None: the window is the whole canvas
        window_start: int,  # canvas index of the window's first position
        logits_start: int,  # canvas index from which logits are wanted (>= window_start)
        logits_end: int | None = None,  # canvas index where they stop (None: the window's end)
    ) -> torch.Tensor:  # [B, logits_end - logits_start, V] float logits
        ...

    def new_cache(self, batch: int, length: int) -> KVCache: ...
