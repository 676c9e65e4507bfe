"""MMaDA (Gen-Verse/MMaDA-8B-MixCoT), text generation: the LLaDA backbone with a vocabulary extended
by the image codebook (wte and the LM head have `embedding_size` = llm_vocab_size + codebook_size rows).

Same parameter names, mask id and layer math as LLaDA; only the config differs. Like the reference
text sampler, the image-token rows stay in the logits.
"""

from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM


class MMaDAConfig(LLaDAConfig):
    model_type = "mmada"

    def __init__(self, vocab_size=134656, embedding_size=134656, llm_vocab_size=126464, codebook_size=8192,
                 num_vq_tokens=1024, new_vocab_size=134656, num_new_special_tokens=0, **kwargs):
        self.llm_vocab_size = llm_vocab_size
        self.codebook_size = codebook_size
        self.num_vq_tokens = num_vq_tokens
        self.new_vocab_size = new_vocab_size
        self.num_new_special_tokens = num_new_special_tokens
        super().__init__(vocab_size=vocab_size, embedding_size=embedding_size, **kwargs)


class MMadaModelLM(LLaDAModelLM):
    """The official top-level class name (model.transformer.* keys, as LLaDA)."""

    config_class = MMaDAConfig
