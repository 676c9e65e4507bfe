"""LLaDA (GSAI-ML/LLaDA-8B-Instruct), in the official checkpoint layout.

A bidirectional Llama-style transformer with OLMo parameter names:
model.transformer.{wte, blocks[i].{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj,
up_proj, ff_out}, ln_f, ff_out}. `ff_proj` is the SiLU-gated branch; the top-level `ff_out` is the
LM head (absent when weight_tying). Logits are not shifted: position i predicts token i.
"""

import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from lm_eval_infogain.models.layers import (
    RMSNorm, WholeSequenceForward, apply_rotary, attend, attention_mask, logits_hidden, rotary_cos_sin, split_heads,
)


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
    shape_keys = ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size")  # what config.json must give

    def __init__(
        self,
        d_model=4096,
        n_heads=32,
        n_kv_heads=None,
        n_layers=32,
        mlp_hidden_size=12288,
        vocab_size=126464,
        embedding_size=None,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        weight_tying=False,
        max_sequence_length=4096,
        mask_token_id=126336,
        eos_token_id=126081,
        pad_token_id=126081,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.weight_tying = weight_tying
        self.tie_word_embeddings = weight_tying
        self.max_sequence_length = max_sequence_length
        self.mask_token_id = mask_token_id
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id


class LLaDABlock(nn.Module):
    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.d_model // config.n_heads
        kv_width = self.n_kv_heads * self.head_dim
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.k_proj = nn.Linear(config.d_model, kv_width, bias=False)
        self.v_proj = nn.Linear(config.d_model, kv_width, bias=False)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, config.d_model, bias=False)

    def forward(self, x, rotary, mask, cache, layer, window_start):
        h = self.attn_norm(x)  # [B, W, C]
        cos, sin = rotary
        queries = apply_rotary(split_heads(self.q_proj(h), self.n_heads, self.head_dim), cos, sin)  # [B, H, W, D]
        keys = apply_rotary(split_heads(self.k_proj(h), self.n_kv_heads, self.head_dim), cos, sin)  # [B, Hkv, W, D]
        values = split_heads(self.v_proj(h), self.n_kv_heads, self.head_dim)  # [B, Hkv, W, D]
        attended = attend(queries, keys, values, mask, cache, layer, window_start)  # [B, H, W, D]
        x = x + self.attn_out(attended.transpose(1, 2).flatten(2))  # [B, W, C]
        h = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))  # [B, W, C]


class LLaDAModel(nn.Module):
    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.embedding_size, config.d_model),
            blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
        )
        if not config.weight_tying:
            modules["ff_out"] = nn.Linear(config.d_model, config.embedding_size, bias=False)
        self.transformer = nn.ModuleDict(modules)

    def lm_head(self, hidden):
        if self.config.weight_tying:
            return F.linear(hidden, self.transformer.wte.weight)
        return self.transformer.ff_out(hidden)

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        """Logits [B, W', V] of canvas positions [logits_start, logits_end); see base.Adapter.forward."""
        return self.head(self.hidden(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end))

    def head(self, hidden):
        """Final hidden states [..., C] -> float logits [..., V]."""
        return self.lm_head(hidden).float()

    def hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        """The final hidden states [B, W', C] (after ln_f) that `head` turns into `forward`'s logits."""
        config = self.config
        window = (window_start, window_start + input_ids.shape[1])
        mask = attention_mask(key_mask, positions, window, cache is not None, block_size=None)
        rotary = rotary_cos_sin(positions[:, window[0]:window[1]], config.d_model // config.n_heads,
                                config.rope_theta)
        x = self.transformer.wte(input_ids)  # [B, W, C]
        for layer, block in enumerate(self.transformer.blocks):
            x = block(x, rotary, mask, cache, layer, window_start)
        hidden = logits_hidden(x, window_start, logits_start, logits_end, shift=0)  # [B, W', C]
        return self.transformer.ln_f(hidden)  # [B, W', C]


class LLaDAModelLM(WholeSequenceForward, PreTrainedModel):
    """The official top-level class name; holds `model` so checkpoint keys read model.transformer.*."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]
    logits_shift = 0
    attention_block_size = None  # bidirectional

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def window_logits(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end)

    def window_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        return self.model.hidden(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end)

    def head_logits(self, hidden):
        return self.model.head(hidden)

    def cache_geometry(self) -> tuple[int, int, int]:
        config = self.config
        return config.n_layers, config.n_kv_heads, config.d_model // config.n_heads
