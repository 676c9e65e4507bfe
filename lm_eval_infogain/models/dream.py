"""Dream (Dream-org/Dream-v0-Instruct-7B): a bidirectional Qwen2 with biases on q/k/v.

Dream was initialised from an autoregressive model and keeps its alignment: the hidden state at
position i-1 predicts the token at position i (position 0 predicts itself). The shift happens here,
in `window_logits`, so the sampler never sees it; a window must therefore start one position before
the first logit it asks for (the loop does this from `ModelSpec.logits_shift`).
"""

from transformers import PreTrainedModel

from lm_eval_infogain.models.layers import WholeSequenceForward, check_config_values
from lm_eval_infogain.models.qwen import AttentionLayout, QwenStyleConfig, QwenStyleLM
from lm_eval_infogain.sampling.config import check


class DreamConfig(QwenStyleConfig):
    """The official Dream configuration's keys (Qwen2's plus mask_token_id), defaulting to Dream-v0-7B's values."""

    model_type = "Dream"

    def __init__(self, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0, rms_norm_eps=1e-6,
                 max_position_embeddings=131072, max_window_layers=28, mask_token_id=151666, bos_token_id=151643,
                 eos_token_id=151643, pad_token_id=151643, **kwargs):
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, rope_theta=rope_theta, rms_norm_eps=rms_norm_eps,
                         max_position_embeddings=max_position_embeddings, max_window_layers=max_window_layers,
                         mask_token_id=mask_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id, **kwargs)


# Dream's official attention (Qwen2) has fixed biases and reads no attention_bias or qk_norm; a config
# that sets them asks for a model that code would not build.
NOT_READ_BY_DREAM = {"attention_bias": (None, False), "qk_norm": (None, False)}


class DreamModel(QwenStyleLM, WholeSequenceForward, PreTrainedModel):
    """The official top-level class name; checkpoint keys read model.* and lm_head.weight."""

    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["QwenDecoderLayer"]
    logits_shift = 1

    def __init__(self, config: DreamConfig):
        check_config_values(config, NOT_READ_BY_DREAM)
        heads_width = config.hidden_size // config.num_attention_heads  # Qwen2: head_dim is never read from config
        check(config.head_dim == heads_width, "config.json head_dim", config.head_dim,
              f"{heads_width} (hidden_size / num_attention_heads, what Dream's official code uses)")
        super().__init__(config)
        self.build(config)
        self.post_init()

    @staticmethod
    def attention_layout(config: DreamConfig) -> AttentionLayout:
        return AttentionLayout(qkv_bias=True, o_bias=False, qk_norm=False)

    def _init_weights(self, module):
        self.init_module_weights(module)
