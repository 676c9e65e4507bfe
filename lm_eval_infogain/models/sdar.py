"""SDAR (JetLM/SDAR-8B-Chat) and TraDo (Gen-Verse/TraDo-8B-Instruct, the same architecture): a Qwen3
decoder with block-causal attention.

Blocks of `config.block_size` positions, counted from the first token of the sequence: a token
attends bidirectionally inside its block and to every earlier block, never to a later one. Logits are
not shifted. Because a finished block's keys/values depend only on it and earlier blocks, caching them
is exact (the loop commits them when a block is complete). The model's own blocks are config.block_size;
a run may attend in its decoding blocks instead, as the official generate.py does
(base.with_attention_block, model_arg attention_block).
"""

from transformers import PreTrainedModel

from lm_eval_infogain.models.layers import WholeSequenceForward
from lm_eval_infogain.models.layers import check_config_values
from lm_eval_infogain.models.qwen import AttentionLayout, QwenStyleConfig, QwenStyleLM


class SDARConfig(QwenStyleConfig):
    """The official SDAR configuration's keys (Qwen3's plus block_size and mask_token_id), defaulting to
    SDAR-8B-Chat's values."""

    model_type = "sdar"

    def __init__(self, vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0,
                 rms_norm_eps=1e-6, max_position_embeddings=32768, attention_bias=False, block_size=4,
                 mask_token_id=151669, bos_token_id=151643, eos_token_id=151643, pad_token_id=151643, **kwargs):
        self.attention_bias = attention_bias
        self.block_size = block_size
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, head_dim=head_dim, rope_theta=rope_theta,
                         rms_norm_eps=rms_norm_eps, max_position_embeddings=max_position_embeddings,
                         mask_token_id=mask_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id, **kwargs)


# SDAR always normalises q and k (Qwen3); its official code reads no qk_norm key.
IMPLEMENTED_VALUES = {"attention_bias": (False, True), "qk_norm": (None, True)}


class SDARForCausalLM(QwenStyleLM, WholeSequenceForward, PreTrainedModel):
    """The official top-level class name; checkpoint keys read model.* and lm_head.weight."""

    config_class = SDARConfig
    base_model_prefix = "model"
    _no_split_modules = ["QwenDecoderLayer"]

    def __init__(self, config: SDARConfig):
        check_config_values(config, IMPLEMENTED_VALUES)
        super().__init__(config)
        self.attention_block_size = config.block_size  # the model's own; see base.with_attention_block
        self.build(config)
        self.post_init()

    @staticmethod
    def attention_layout(config: SDARConfig) -> AttentionLayout:
        return AttentionLayout(qkv_bias=config.attention_bias, o_bias=config.attention_bias, qk_norm=True)

    def _init_weights(self, module):
        self.init_module_weights(module)
