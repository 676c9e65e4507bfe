"""Building blocks shared by the architectures: RMSNorm, rotary embedding, attention masks and
windowed attention against the sampler's cache."""

import torch
import torch.nn.functional as F
from torch import nn

from lm_eval_infogain.sampling.cache import KVCache


class RMSNorm(nn.Module):
    """RMS normalisation computed in fp32, cast back, then scaled (LLaDA / Qwen convention)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x):
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rotary_cos_sin(positions, head_dim: int, theta: float):
    """cos/sin tables [B, 1, W, D] in fp32 for absolute positions [B, W] (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[..., None] * inv_freq  # [B, W, D/2]
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, W, D]
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin, full_precision: bool = True):
    """Rotate x [B, H, W, D]: in fp32 then cast back (LLaDA's rope_full_precision), or in x's own dtype
    with cos/sin cast to it (Qwen / Dream / SDAR)."""
    work = x.float() if full_precision else x
    cos, sin = cos.to(work.dtype), sin.to(work.dtype)
    half = work.shape[-1] // 2
    rotated = torch.cat([-work[..., half:], work[..., :half]], dim=-1)
    return (work * cos + rotated * sin).to(x.dtype)


def attention_mask(key_mask, positions, window: tuple[int, int], cached: bool, block_size: int | None):
    """Bool [B, 1, W, K], True = attend, for the queries of canvas window [start, end).

    key_mask and positions [B, T] describe the whole canvas. The keys are the whole canvas when a
    cache holds them, else the window itself. block_size None: bidirectional, only padding is hidden.
    Otherwise block-causal (SDAR): blocks of `block_size` positions counted from each prompt's first
    token; a query sees its own block and earlier ones, never a later one.
    """
    start, end = window
    keys = slice(None) if cached else slice(start, end)
    mask = key_mask[:, None, None, keys]  # [B, 1, 1, K]
    if block_size is None:
        return mask
    query_block = positions[:, start:end] // block_size  # [B, W]
    key_block = positions[:, keys] // block_size  # [B, K]
    return mask & (key_block[:, None, None, :] <= query_block[:, None, :, None])  # [B, 1, W, K]


def attend(queries, keys, values, mask, cache: KVCache | None, layer: int, window_start: int):
    """Attention of the window's queries [B, H, W, D] over the canvas.

    keys/values [B, H_kv, W, D] are the window's. With a cache they are written into it first and
    the queries see the whole cached canvas. mask comes from `attention_mask`.
    """
    if cache is not None:
        keys, values = cache.write(layer, window_start, keys, values)  # [B, H_kv, T, D]
    return F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=mask, is_causal=False, enable_gqa=queries.shape[1] != keys.shape[1],
    )  # [B, H, W, D]


def split_heads(x, heads: int, head_dim: int):
    batch, width, _ = x.shape
    return x.view(batch, width, heads, head_dim).transpose(1, 2)  # [B, H, W, D]


def logits_hidden(hidden, window_start: int, logits_start: int, logits_end: int | None, shift: int):
    """The hidden states [B, W', C] whose logits are wanted for canvas positions [logits_start, logits_end).

    shift 1 (Dream): position i is predicted from position i-1, position 0 from itself; the window
    must then start before logits_start unless it is the canvas start.
    """
    end = hidden.shape[1] if logits_end is None else logits_end - window_start
    first = logits_start - window_start - shift
    if first >= 0:
        return hidden[:, first:end - shift]
    if logits_start != 0:
        raise ValueError(f"a shifted model needs the window to start before logits_start={logits_start}")
    return torch.cat([hidden[:, :1], hidden[:, :end - shift]], dim=1)


class WholeSequenceForward:
    """`model(input_ids, key_mask)`: logits [B, L, V] of whole sequences, no cache (tests, lm-eval-style use).

    Mixed into each architecture's top-level class, which provides `window_logits`.
    """

    def forward(self, input_ids, key_mask=None):
        if key_mask is None:
            key_mask = torch.ones_like(input_ids, dtype=torch.bool)
        positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L] counted from the first real token
        return self.window_logits(input_ids, positions, key_mask, None, 0, 0)
