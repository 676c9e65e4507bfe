"""Building blocks shared by the architectures: RMSNorm, rotary embedding, windowed attention."""

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


def apply_rotary(x, cos, sin):
    """Rotate x [B, H, W, D] in fp32 and cast back (LLaDA's rope_full_precision)."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def attend(queries, keys, values, key_mask, cache: KVCache | None, layer: int, window_start: int):
    """Bidirectional attention of the window's queries over the canvas.

    queries [B, H, W, D]; keys/values [B, H_kv, W, D] of the window. With a cache the window's
    keys/values are written into it first and the queries see the whole cached canvas.
    key_mask [B, T] hides padding.
    """
    if cache is not None:
        keys, values = cache.write(layer, window_start, keys, values)  # [B, H_kv, T, D]
    attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, T]
    return F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=attn_mask, is_causal=False,
        enable_gqa=queries.shape[1] != keys.shape[1],
    )  # [B, H, W, D]
