"""Building blocks shared by the architectures: RMSNorm, rotary embedding, attention masks and
windowed attention against the sampler's cache."""

import json

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.sampling.cache import KVCache, SharedCache
from lm_eval_infogain.sampling.config import check


def check_config_values(config, implemented: dict) -> None:
    """Refuse, in one line, a config.json value of a math-changing key that this implementation does not
    compute (the official code would compute something else). implemented: key -> the values computed."""
    for key, values in implemented.items():
        value = getattr(config, key, None)
        check(any(value == allowed and type(value) is type(allowed) for allowed in values), f"config.json {key}",
              value, " | ".join(json.dumps(allowed) for allowed in values) + " (what this implementation computes)")


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


# rope_scaling types whose frequencies depend only on the config (transformers computes them); the others
# ("dynamic", "longrope") change them with the sequence length, which a canvas cached in windows cannot follow.
ROPE_SCALING_TYPES = ("linear", "yarn", "llama3")


class Rotary:
    """RoPE of one model: inverse frequencies [D/2] in fp32 and the scale of cos/sin (yarn's attention factor).

    Unscaled RoPE is theta^(-2i/D). A `rope_scaling` dict (Hugging Face format) goes through transformers'
    own initialisers (modeling_rope_utils.ROPE_INIT_FUNCTIONS), as in the official Qwen2/Qwen3 code. Not a
    module: `model.double()` must not turn the table into float64.
    """

    def __init__(self, head_dim: int, theta: float, rope_scaling: dict | None = None,
                 max_position_embeddings: int | None = None):
        # on the CPU explicitly: from_pretrained builds models under a meta-device context
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device="cpu").float() / head_dim))  # [D/2]
        self.scale = 1.0
        if rope_scaling is not None:
            self.inv_freq, self.scale = scaled_rope(head_dim, theta, rope_scaling, max_position_embeddings)

    def cos_sin(self, positions):
        """cos/sin tables [B, 1, W, D] in fp32 for absolute positions [B, W] (rotate-half layout)."""
        if self.inv_freq.device != positions.device:  # moved once, with the first forward on a device
            self.inv_freq = self.inv_freq.to(positions.device)
        angles = positions.float()[..., None] * self.inv_freq  # [B, W, D/2]
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, W, D]
        return angles.cos() * self.scale, angles.sin() * self.scale


def scaled_rope(head_dim: int, theta: float, rope_scaling: dict, max_position_embeddings: int | None):
    """(inv_freq [D/2], cos/sin scale) of a `rope_scaling` dict, from transformers' RoPE initialisers."""
    allowed = f"null or a dict whose type is one of {', '.join(ROPE_SCALING_TYPES)}"
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type")) if isinstance(rope_scaling, dict) else None
    check(rope_type in ROPE_SCALING_TYPES, "config.json rope_scaling", rope_scaling, allowed)
    if rope_type in ("yarn", "llama3") and max_position_embeddings is not None:  # transformers 5's default
        rope_scaling = {"original_max_position_embeddings": max_position_embeddings} | rope_scaling
    try:  # transformers validates the fields when the config is built
        shape = PretrainedConfig(hidden_size=head_dim, num_attention_heads=1, head_dim=head_dim,
                                 max_position_embeddings=max_position_embeddings,
                                 rope_parameters={**rope_scaling, "rope_type": rope_type, "rope_theta": theta})
        with torch.device("cpu"):  # from_pretrained builds models under a meta-device context
            inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](shape, "cpu")
    except (KeyError, TypeError, ValueError) as error:  # e.g. no "factor"
        raise UsageError(f"config.json rope_scaling={rope_scaling!r} is invalid ({type(error).__name__}: "
                         f"{error}); allowed: {allowed} with that type's fields") from None
    return inv_freq.float(), float(scale)


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


def attend(queries, keys, values, mask, cache: KVCache | SharedCache | None, layer: int, window_start: int):
    """Attention of the window's queries [B, H, W, D] over the canvas.

    keys/values [B, H_kv, W, D] are the window's. With a cache they are written into it first and
    the queries see the whole cached canvas; lookahead candidates share theirs (`attend_shared`).
    mask comes from `attention_mask`.
    """
    if isinstance(cache, SharedCache):
        return attend_shared(queries, keys, values, mask, cache, layer, window_start)
    if cache is not None:
        keys, values = cache.write(layer, window_start, keys, values)  # [B, H_kv, T, D]
    return F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=mask, is_causal=False, enable_gqa=queries.shape[1] != keys.shape[1],
    )  # [B, H, W, D]


# dtypes the GPU's memory-efficient attention kernel takes
FUSED_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def attention_with_lse(queries, keys, values, mask):
    """Softmax attention of queries [B, H, Q, D] over keys/values [B, H, K, D] where mask [B, 1, Q|1, K] is
    True: (output [B, H, Q, D], log-sum-exp of the scores [B, H, Q, 1]), one part of an attention whose
    key set is split, for `attend_shared` to merge. A query that sees no key gets output 0 and
    log-sum-exp -inf, so that the merge gives it no weight.

    Each device runs the fused kernel F.scaled_dot_product_attention itself picks there with a mask and
    that also returns the log-sum-exp: flash attention for CPU; memory-efficient attention on a GPU (and
    on `meta`, where the cost model stands in for one). What no fused kernel takes (float64 off the CPU,
    a head size the GPU kernel cannot align) runs unfused, scores in fp32 or float64.
    """
    sees_none = ~mask.any(-1, keepdim=True)  # [B, 1, Q|1, 1]
    if queries.device.type == "cpu":
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            queries, keys, values, attn_mask=additive_bias(mask, queries.dtype, align=1))
    elif queries.dtype in FUSED_GPU_DTYPES and queries.shape[-1] % 8 == 0:
        output, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            queries, keys, values, additive_bias(mask, queries.dtype, align=8).expand(
                *queries.shape[:3], keys.shape[2]), compute_log_sumexp=True)[:2]
        lse = lse[..., :queries.shape[2]]  # the kernel pads its queries to a multiple of 32
    else:
        return unfused_attention_with_lse(queries, keys, values, mask, sees_none)
    return output.masked_fill(sees_none, 0), lse[..., None].masked_fill(sees_none, float("-inf"))


def additive_bias(mask, dtype, align: int):
    """mask [B, 1, Q|1, K] as 0 / -inf in `dtype`, its rows stored `align`-element aligned (the
    memory-efficient kernel reads its bias in aligned vectors; SDPA pads it the same way)."""
    *lead, keys = mask.shape
    padded = -(-keys // align) * align
    bias = torch.full((*lead, padded), float("-inf"), dtype=dtype, device=mask.device)
    return bias[..., :keys].masked_fill_(mask, 0.0)


def unfused_attention_with_lse(queries, keys, values, mask, sees_none):
    work = torch.promote_types(queries.dtype, torch.float32)
    scores = (queries.to(work) * queries.shape[-1] ** -0.5) @ keys.to(work).transpose(-1, -2)  # [B, H, Q, K]
    scores.masked_fill_(~mask, float("-inf"))
    lse = scores.logsumexp(-1, keepdim=True)  # [B, H, Q, 1]
    weights = scores.sub_(lse.clamp(min=torch.finfo(work).min)).exp_()  # [B, H, Q, K]
    return (weights @ values.to(work)).masked_fill(sees_none, 0), lse


def attend_shared(queries, keys, values, mask, shared: SharedCache, layer: int, window_start: int):
    """Attention of lookahead candidates (queries [R, H, W, D], their window's keys/values [R, H_kv, W, D],
    mask [R, 1, W|1, T] over the canvas) with their prompts' cache read once per prompt, copied for none.

    A candidate sees its prompt's cached keys outside the window and its own window's keys. The two
    parts are computed apart and merged with their log-sum-exps (cascade / Hydragen attention): the
    cached part with the queries of all a prompt's candidates side by side (and a key head's query
    heads too), one attention per prompt and key head; the window part per candidate.
    """
    rows, heads, width, head_dim = queries.shape
    cached_keys, cached_values = shared.cache.keys[layer], shared.cache.values[layer]  # [P, H_kv, T, D]
    prompts, kv_heads, total, _ = cached_keys.shape
    group, slots = heads // kv_heads, shared.slots
    # cached part: queries [P, H_kv, G*M*W, D] of each prompt's (up to M) candidates side by side
    if shared.dense:
        grouped = queries.reshape(prompts, slots, heads, width, head_dim)  # [P, M, H, W, D]
    else:
        grouped = queries.new_zeros(prompts, slots, heads, width, head_dim)  # [P, M, H, W, D]
        grouped[shared.prompt_of, shared.slot_of] = queries
    grouped = grouped.view(prompts, slots, kv_heads, group, width, head_dim).permute(0, 2, 3, 1, 4, 5)
    grouped = grouped.reshape(prompts, kv_heads, group * slots * width, head_dim)  # [P, H_kv, G*M*W, D]
    prompt_mask = mask.new_zeros(prompts, 1, mask.shape[2], total)  # [P, 1, W|1, T]
    prompt_mask[shared.prompt_of] = mask  # the same for all a prompt's candidates
    prompt_mask[..., window_start:window_start + width] = False  # the window's keys are each candidate's own
    if mask.shape[2] > 1:  # a mask per query (block-causal): the same for every slot and query head
        prompt_mask = prompt_mask[:, :, None].expand(-1, -1, group * slots, -1, -1).flatten(2, 3)
    cached_out, cached_lse = attention_with_lse(grouped, cached_keys, cached_values, prompt_mask)

    def per_candidate(part):  # [P, H_kv, G*M*W, X] -> [R, H, W, X]
        part = part.view(prompts, kv_heads, group, slots, width, -1).permute(0, 3, 1, 2, 4, 5)
        if shared.dense:
            return part.reshape(rows, heads, width, -1)
        return part.reshape(prompts, slots, heads, width, -1)[shared.prompt_of, shared.slot_of]

    cached_out, cached_lse = per_candidate(cached_out), per_candidate(cached_lse)  # [R, H, W, D | 1]
    # window part: each candidate's own keys
    own_keys, own_values = (keys, values) if group == 1 else (keys.repeat_interleave(group, 1),
                                                              values.repeat_interleave(group, 1))  # [R, H, W, D]
    own_out, own_lse = attention_with_lse(queries, own_keys, own_values,
                                          mask[..., window_start:window_start + width])  # [R, H, W, D | 1]
    # the cached part's share of each query's softmax mass, exp(cached_lse - logaddexp(cached_lse, own_lse)),
    # weighs the two parts in one pass; in the model's dtype, whose rounding each part's output already has
    cached_share = torch.sigmoid(cached_lse - own_lse)  # [R, H, W, 1]
    merged = torch.lerp(own_out, cached_out.to(own_out.dtype), cached_share.to(own_out.dtype))  # [R, H, W, D]
    return merged.to(queries.dtype)


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
    """`model(input_ids, key_mask)`: logits [B, L, V] of whole sequences, no cache (tests, lm-eval-style use),
    under the model's own attention blocks (config block_size for SDAR).

    Mixed into each architecture's top-level class, which provides `window_logits`.
    """

    def forward(self, input_ids, key_mask=None):
        if key_mask is None:
            key_mask = torch.ones_like(input_ids, dtype=torch.bool)
        positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L] counted from the first real token
        return self.window_logits(input_ids, positions, key_mask, None, 0, 0,
                                  attention_block_size=self.attention_block_size)
