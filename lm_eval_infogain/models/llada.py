"""LLaDA (GSAI-ML/LLaDA-8B-Instruct), in the official checkpoint layout.

A bidirectional Llama-style transformer with OLMo parameter names:
model.transformer.{wte, blocks[i].{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj,
up_proj, ff_out}, ln_f, ff_out}. `ff_proj` is the SiLU-gated branch; the top-level `ff_out` is the
LM head (absent when weight_tying). Logits are not shifted: position i predicts token i.
"""

import math

import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from lm_eval_infogain.models.layers import (
    RMSNorm, Rotary, WholeSequenceForward, apply_rotary, attend, attention_mask, check_config_values, logits_hidden,
    split_heads,
)
from lm_eval_infogain.sampling.config import check
from lm_eval_infogain.sampling.head import OutputHead


# Keys of the official configuration (configuration_llada.ModelConfig) that change the math -> the
# values this implementation computes; any other value is refused at load (see check_config_values).
IMPLEMENTED_VALUES = {
    "block_type": ("llama",),
    "activation_type": ("silu",),  # with the llama block: silu(ff_proj(x)) * up_proj(x)
    "layer_norm_type": ("rms",),
    "layer_norm_with_affine": (True,),
    "bias_for_layer_norm": (None, False),
    "attention_layer_norm": (False,),
    "include_bias": (False,),
    "include_qkv_bias": (False, True),
    "alibi": (False,),
    "rope": (True,),
    "rope_full_precision": (True, False),
    "scale_logits": (False, True),
    "input_emb_norm": (False, True),
    "weight_tying": (False, True),
    "multi_query_attention": (None, False, True),
    "rope_scaling": (None,),  # not an official LLaDA key: its code has no RoPE scaling
}


class LLaDAConfig(PretrainedConfig):
    """The official LLaDA configuration's keys (OLMo names), defaulting to LLaDA-8B-Instruct's values."""

    model_type = "llada"
    shape_keys = ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size")  # what config.json must give
    rope_scaling = None  # shadows transformers' alias of rope_parameters: a config.json key like any other

    def __init__(
        self,
        d_model=4096,
        n_heads=32,
        n_kv_heads=None,
        n_layers=32,
        mlp_ratio=4,
        mlp_hidden_size=12288,
        activation_type="silu",
        block_type="llama",
        block_group_size=1,
        alibi=False,
        alibi_bias_max=8.0,
        rope=True,
        rope_full_precision=True,
        flash_attention=False,
        attention_dropout=0.0,
        multi_query_attention=None,
        attention_layer_norm=False,
        residual_dropout=0.0,
        embedding_dropout=0.0,
        input_emb_norm=False,
        layer_norm_type="rms",
        layer_norm_with_affine=True,
        rms_norm_eps=1e-5,
        attention_layer_norm_with_affine=True,
        max_sequence_length=4096,
        rope_theta=500000.0,
        include_qkv_bias=False,
        include_bias=False,
        bias_for_layer_norm=False,
        scale_logits=False,
        vocab_size=126464,
        embedding_size=None,
        weight_tying=False,
        init_device="meta",
        init_fn="mitchell",
        init_std=0.02,
        init_cutoff_factor=None,
        precision="amp_bf16",
        use_cache=False,
        mask_token_id=126336,
        eos_token_id=126081,
        pad_token_id=126081,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size
        self.activation_type = activation_type
        self.block_type = block_type
        self.block_group_size = block_group_size
        self.alibi = alibi
        self.alibi_bias_max = alibi_bias_max
        self.rope = rope
        self.rope_full_precision = rope_full_precision
        self.flash_attention = flash_attention
        self.attention_dropout = attention_dropout
        self.multi_query_attention = multi_query_attention
        self.attention_layer_norm = attention_layer_norm
        self.residual_dropout = residual_dropout
        self.embedding_dropout = embedding_dropout
        self.input_emb_norm = input_emb_norm
        self.layer_norm_type = layer_norm_type
        self.layer_norm_with_affine = layer_norm_with_affine
        self.rms_norm_eps = rms_norm_eps
        self.attention_layer_norm_with_affine = attention_layer_norm_with_affine
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.include_qkv_bias = include_qkv_bias
        self.include_bias = include_bias
        self.bias_for_layer_norm = bias_for_layer_norm
        self.scale_logits = scale_logits
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size or vocab_size
        self.weight_tying = weight_tying
        self.tie_word_embeddings = weight_tying
        self.init_device = init_device
        self.init_fn = init_fn
        self.init_std = init_std
        self.init_cutoff_factor = init_cutoff_factor
        self.precision = precision
        self.use_cache = use_cache
        self.mask_token_id = mask_token_id
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    @property
    def kv_heads(self) -> int:
        """The official effective_n_kv_heads: n_kv_heads, else 1 under multi_query_attention, else n_heads."""
        if self.n_kv_heads is None:
            return 1 if self.multi_query_attention else self.n_heads
        implied = {True: 1, False: self.n_heads}.get(self.multi_query_attention, self.n_kv_heads)
        check(self.n_kv_heads == implied, "config.json n_kv_heads", self.n_kv_heads,
              f"{implied}, which multi_query_attention={self.multi_query_attention} implies")
        return self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        """mlp_hidden_size, else mlp_ratio * d_model (the official rule)."""
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model


class LLaDABlock(nn.Module):
    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.kv_heads
        self.head_dim = config.head_dim
        self.rope_full_precision = config.rope_full_precision
        kv_width = self.n_kv_heads * self.head_dim
        qkv_bias = config.include_qkv_bias  # include_bias (all linears) is refused by IMPLEMENTED_VALUES
        self.attn_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=qkv_bias)
        self.k_proj = nn.Linear(config.d_model, kv_width, bias=qkv_bias)
        self.v_proj = nn.Linear(config.d_model, kv_width, bias=qkv_bias)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.ff_norm = RMSNorm(config.d_model, config.rms_norm_eps)
        self.ff_proj = nn.Linear(config.d_model, config.mlp_width, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.mlp_width, bias=False)
        self.ff_out = nn.Linear(config.mlp_width, config.d_model, bias=False)

    def forward(self, x, rotary, mask, cache, layer, window_start):
        h = self.attn_norm(x)  # [B, W, C]
        cos, sin = rotary
        full = self.rope_full_precision
        queries = apply_rotary(split_heads(self.q_proj(h), self.n_heads, self.head_dim), cos, sin, full)  # [B, H, W, D]
        keys = apply_rotary(split_heads(self.k_proj(h), self.n_kv_heads, self.head_dim), cos, sin, full)  # [B, Hkv, W, D]
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
        self.rotary = Rotary(config.head_dim, config.rope_theta)

    def output_head(self) -> OutputHead:
        """The LM head: the embedding (weight_tying) or ff_out, scaled by 1 / sqrt(d_model) with scale_logits."""
        weight = self.transformer.wte.weight if self.config.weight_tying else self.transformer.ff_out.weight
        return OutputHead(weight, scale=1 / math.sqrt(self.config.d_model) if self.config.scale_logits else None)

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end,
                attention_block_size):
        """Logits [B, W', V] of canvas positions [logits_start, logits_end); see base.Adapter.forward."""
        return self.head(self.hidden(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end,
                                     attention_block_size))

    def head(self, hidden):
        """Final hidden states [..., C] -> float logits [..., V]."""
        return self.output_head().logits(hidden)

    def hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None,
               attention_block_size=None):
        """The final hidden states [B, W', C] (after ln_f) that `head` turns into `forward`'s logits."""
        window = (window_start, window_start + input_ids.shape[1])
        mask = attention_mask(key_mask, positions, window, cache is not None, attention_block_size)
        rotary = self.rotary.cos_sin(positions[:, window[0]:window[1]])
        x = self.transformer.wte(input_ids)  # [B, W, C]
        if self.config.input_emb_norm:  # Gemma-style embedding scale of the official code
            x = x * self.config.d_model ** 0.5
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
        check_config_values(config, IMPLEMENTED_VALUES)
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def window_logits(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None,
                      attention_block_size=None):
        return self.model(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end,
                          attention_block_size)

    def window_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None,
                      attention_block_size=None):
        return self.model.hidden(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end,
                                 attention_block_size)

    def head_logits(self, hidden):
        return self.model.head(hidden)

    def output_head(self) -> OutputHead:
        return self.model.output_head()

    def cache_geometry(self) -> tuple[int, int, int]:
        config = self.config
        return config.n_layers, config.kv_heads, config.head_dim
