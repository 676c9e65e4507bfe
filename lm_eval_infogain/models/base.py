"""The adapter contract: the one seam between the sampler and an architecture.

The sampler only ever calls `forward_hidden`, `head`, `output_head` and `new_cache` and reads the `ModelSpec`;
it never asks which model it drives. Logits returned by `forward` are aligned so that logits[:, j] predicts the
token at canvas position logits_start + j (an architecture's own shift is applied inside the model).

Each architecture's model class (llada.py, dream.py, sdar.py) provides `window_logits` with the
signature of `Adapter.forward` plus an `attention_block_size` argument, `window_hidden` (the same, before
the LM head), `head_logits`, `output_head` (the head as a sampling.head.OutputHead) and
`cache_geometry() -> (layers, kv_heads, head_dim)`, plus the attributes `logits_shift` and
`attention_block_size` (the model's own blocks); `ModelAdapter` turns it into an adapter, whose attention
blocks are its spec's (see `with_attention_block`).
"""

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch

from lm_eval_infogain.sampling.cache import KVCache
from lm_eval_infogain.sampling.config import check
from lm_eval_infogain.sampling.head import OutputHead


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

    def output_head(self) -> OutputHead | None:
        """The head `head` applies, as weights (sampling.head), so that the sampler can stream entropies over
        the vocabulary; None where `forward_hidden` returns logits already (remote code, exact models)."""
        ...

    def new_cache(self, batch: int, length: int) -> KVCache: ...

    # Optional: an exact model's (models/oracle.py) diagnostics of a batch of decodes,
    # (prompts, generated ids, decode stats rows with the commit trace) -> rows. None (or absent): none.
    exact_diagnostics = None


class ModelAdapter:
    """The sampler's view of one of the project's own model classes."""

    exact_diagnostics = None  # a trained model's decodes have no exact diagnostics (see Adapter)

    def __init__(self, model, spec: ModelSpec):
        self.model = model
        self.spec = spec
        self.device = model.device
        self.dtype = model.dtype

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model.window_logits(input_ids, positions, key_mask, cache, window_start, logits_start,
                                        logits_end, attention_block_size=self.spec.attention_block_size)

    def forward_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model.window_hidden(input_ids, positions, key_mask, cache, window_start, logits_start,
                                        logits_end, attention_block_size=self.spec.attention_block_size)

    def head(self, hidden):
        return self.model.head_logits(hidden)

    def output_head(self):
        return self.model.output_head()

    def new_cache(self, batch, length):
        layers, kv_heads, head_dim = self.model.cache_geometry()
        return KVCache.allocate(layers, batch, kv_heads, length, head_dim, self.dtype, self.device)


# Where a block-causal model's (SDAR, TraDo) attention blocks come from. "decoding": the decoding
# block_length, as the official generate.py builds its mask (the default); "model": config.json's
# block_size, the blocks the model was trained with. They agree when block_length is left at its default.
ATTENTION_BLOCK_READINGS = ("decoding", "model")


def with_attention_block(adapter, reading: str | None, block_length: int | None):
    """(adapter whose spec carries the attention block size of `reading`, the reading; None if bidirectional).

    reading None means "decoding" for a block-causal model; a bidirectional one has no attention blocks
    and refuses any reading. block_length None: not given, i.e. the model's own block size.
    """
    size = adapter.spec.attention_block_size
    if size is None:
        check(reading is None, "attention_block", reading,
              "unset for a bidirectional model (it chooses the attention blocks of SDAR and TraDo)")
        return adapter, None
    reading = "decoding" if reading is None else reading
    check(reading in ATTENTION_BLOCK_READINGS, "attention_block", reading, " | ".join(ATTENTION_BLOCK_READINGS))
    if reading == "model" or block_length is None:
        return adapter, reading
    return ModelAdapter(adapter.model, dataclasses.replace(adapter.spec, attention_block_size=block_length)), reading
