"""Dream (Dream-org/Dream-v0-Instruct-7B): a bidirectional Qwen2 with biases on q/k/v.

Dream was initialised from an autoregressive model and keeps its alignment: the hidden state at
position i-1 predicts the token at position i (position 0 predicts itself). The shift happens here,
in `window_logits`, so the sampler never sees it; a window must therefore start one position before
the first logit it asks for (the loop does this from `ModelSpec.logits_shift`).
"""

from transformers import PreTrainedModel

from lm_eval_infogain.models.layers import WholeSequenceForward
from lm_eval_infogain.models.qwen import QwenStyleConfig, QwenStyleLM


class DreamConfig(QwenStyleConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0, rms_norm_eps=1e-6,
                 max_position_embeddings=131072, mask_token_id=151666, bos_token_id=151643,
                 eos_token_id=151643, pad_token_id=151643, **kwargs):
        super().__init__(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads, rope_theta=rope_theta, rms_norm_eps=rms_norm_eps,
                         max_position_embeddings=max_position_embeddings, mask_token_id=mask_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)


class DreamModel(QwenStyleLM, WholeSequenceForward, PreTrainedModel):
    """The official top-level class name; checkpoint keys read model.* and lm_head.weight."""

    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["QwenDecoderLayer"]
    qkv_bias = True
    logits_shift = 1

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.build(config)
        self.post_init()

    def _init_weights(self, module):
        self.init_module_weights(module)
