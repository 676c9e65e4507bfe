"""The Qwen2/Qwen3 decoder that Dream and SDAR/TraDo share, in the Hugging Face parameter layout:
model.{embed_tokens, layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj[, q_norm, k_norm],
post_attention_layernorm, mlp.{gate,up,down}_proj}, norm} and a separate lm_head.

Dream is Qwen2 (biases on q/k/v, none on o), SDAR is Qwen3 (per-head RMSNorm on q and k before RoPE,
explicit head_dim, biases on q/k/v/o when attention_bias). RoPE is Qwen's: cos/sin cast to the
activation dtype, rope_scaling through transformers' own initialisers. The architecture files choose
the attention layout, the attention pattern (bidirectional or block-causal) and the logit shift.
"""

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from lm_eval_infogain.models.layers import (
    RMSNorm, Rotary, apply_rotary, attend, attention_mask, check_config_values, logits_hidden, split_heads,
)
from lm_eval_infogain.sampling.config import check
from lm_eval_infogain.sampling.head import OutputHead

# Keys that released configs carry but that mean nothing at inference here (attention backends, training
# switches); `attn_implementation: flex_attention` would even make transformers refuse to build the model.
IGNORED_CONFIG_KEYS = ("attn_implementation", "fuse_cross_entropy", "debug", "ep_size", "micro_forward",
                       "skip_checkpoint", "use_deepep")
# Math-changing keys of the official Qwen-style configurations -> the values this implementation computes
# (hidden_act: any activation of transformers' ACT2FN, as the official code; rope_scaling: see layers.Rotary).
IMPLEMENTED_VALUES = {"use_sliding_window": (False,), "tie_word_embeddings": (False,)}


class QwenStyleConfig(PretrainedConfig):
    """Hugging Face Qwen2/Qwen3 field names plus the masked-diffusion ones (mask_token_id, block_size)."""
    shape_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "vocab_size")  # what config.json must give
    rope_scaling = None  # shadows transformers' alias of rope_parameters: the official key, kept as written

    def __init__(self, vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
                 max_position_embeddings=32768, initializer_range=0.02, rms_norm_eps=1e-6, use_cache=False,
                 tie_word_embeddings=False, rope_theta=1000000.0, rope_scaling=None, use_sliding_window=False,
                 sliding_window=None, max_window_layers=None, attention_dropout=0.0, mask_token_id=None,
                 bos_token_id=None, eos_token_id=None, pad_token_id=None, **kwargs):
        for key in IGNORED_CONFIG_KEYS:
            kwargs.pop(key, None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = num_hidden_layers if max_window_layers is None else max_window_layers
        self.attention_dropout = attention_dropout
        self.mask_token_id = mask_token_id
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id


def check_qwen_config(config: QwenStyleConfig) -> None:
    """Refuse what the official Qwen-style code would compute differently from this implementation."""
    check_config_values(config, IMPLEMENTED_VALUES)
    check(isinstance(config.hidden_act, str) and config.hidden_act in ACT2FN, "config.json hidden_act",
          config.hidden_act, "an activation of transformers' ACT2FN, e.g. silu")


@dataclass(frozen=True)
class AttentionLayout:
    """What tells the families' attention apart: biases (Qwen2: q/k/v only; Qwen3: all four or none, from
    attention_bias) and Qwen3's per-head q/k RMSNorm."""

    qkv_bias: bool
    o_bias: bool
    qk_norm: bool


class QwenAttention(nn.Module):
    def __init__(self, config: QwenStyleConfig, layout: AttentionLayout):
        super().__init__()
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=layout.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=layout.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=layout.qkv_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=layout.o_bias)
        if layout.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qk_norm = layout.qk_norm

    def forward(self, h, rotary, mask, cache, layer, window_start):
        queries = split_heads(self.q_proj(h), self.heads, self.head_dim)  # [B, H, W, D]
        keys = split_heads(self.k_proj(h), self.kv_heads, self.head_dim)  # [B, Hkv, W, D]
        values = split_heads(self.v_proj(h), self.kv_heads, self.head_dim)  # [B, Hkv, W, D]
        if self.qk_norm:  # Qwen3: per-head norm before RoPE
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        cos, sin = rotary
        queries = apply_rotary(queries, cos, sin, full_precision=False)
        keys = apply_rotary(keys, cos, sin, full_precision=False)
        attended = attend(queries, keys, values, mask, cache, layer, window_start)  # [B, H, W, D]
        return self.o_proj(attended.transpose(1, 2).flatten(2))  # [B, W, C]


class QwenMLP(nn.Module):
    def __init__(self, config: QwenStyleConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class QwenDecoderLayer(nn.Module):
    def __init__(self, config: QwenStyleConfig, layout: AttentionLayout):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = QwenAttention(config, layout)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = QwenMLP(config)

    def forward(self, x, rotary, mask, cache, layer, window_start):
        x = x + self.self_attn(self.input_layernorm(x), rotary, mask, cache, layer, window_start)
        return x + self.mlp(self.post_attention_layernorm(x))  # [B, W, C]


class QwenModel(nn.Module):
    """`model.*` of the checkpoint: embeddings, decoder layers, final norm."""

    def __init__(self, config: QwenStyleConfig, layout: AttentionLayout):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(QwenDecoderLayer(config, layout) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class QwenStyleLM:
    """The shared body of DreamModel and SDARForCausalLM (mixed into their PreTrainedModel classes).

    Subclasses provide `attention_layout(config)` and set `logits_shift` and `attention_block_size` (an
    instance attribute for SDAR, whose block size comes from its config).
    """

    logits_shift = 0
    attention_block_size = None

    def build(self, config: QwenStyleConfig):
        check_qwen_config(config)
        self.model = QwenModel(config, self.attention_layout(config))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings)

    def init_module_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def window_logits(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None,
                      attention_block_size=None):
        """Logits [B, W', V] of canvas positions [logits_start, logits_end); see base.Adapter.forward."""
        return self.head_logits(self.window_hidden(input_ids, positions, key_mask, cache, window_start, logits_start,
                                                   logits_end, attention_block_size))

    def head_logits(self, hidden):
        """Final hidden states [..., C] -> float logits [..., V]."""
        return self.output_head().logits(hidden)

    def output_head(self) -> OutputHead:
        return OutputHead(self.lm_head.weight, self.lm_head.bias)

    def window_hidden(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None,
                      attention_block_size=None):
        """The final hidden states [B, W', C] (after the norm) that `head_logits` turns into logits."""
        window = (window_start, window_start + input_ids.shape[1])
        mask = attention_mask(key_mask, positions, window, cache is not None, attention_block_size)
        rotary = self.rotary.cos_sin(positions[:, window[0]:window[1]])
        x = self.model.embed_tokens(input_ids)  # [B, W, C]
        for layer, decoder_layer in enumerate(self.model.layers):
            x = decoder_layer(x, rotary, mask, cache, layer, window_start)
        hidden = logits_hidden(x, window_start, logits_start, logits_end, self.logits_shift)  # [B, W', C]
        return self.model.norm(hidden)  # [B, W', C]

    def cache_geometry(self) -> tuple[int, int, int]:
        config = self.config
        return config.num_hidden_layers, config.num_key_value_heads, config.head_dim
