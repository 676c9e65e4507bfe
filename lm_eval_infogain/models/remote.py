"""The adapter for a checkpoint of an architecture we do not know, run through its own code
(transformers AutoModel with trust_remote_code). It supports no cache and no logit shift: every
forward is the whole canvas, and the model is asked for logits as a plain `model(input_ids,
attention_mask)` call.
"""


class RemoteCodeAdapter:
    def __init__(self, model, spec):
        self.model = model
        self.spec = spec
        self.device = model.device
        self.dtype = model.dtype

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        if cache is not None or window_start != 0 or input_ids.shape[1] != key_mask.shape[1]:
            raise ValueError("a trust_remote_code model runs without a cache: use_cache=none")
        attention_mask = None if bool(key_mask.all()) else key_mask.long()
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = output.logits if hasattr(output, "logits") else output[0]
        return logits[:, logits_start:logits_end].float()

    def forward_hidden(self, *args):
        """No hidden states of a foreign model: its logits stand in for them, and `head` keeps them."""
        return self.forward(*args)

    def head(self, logits):
        return logits

    def output_head(self):
        return None  # no head to stream over: the sampler takes the logits `head` keeps

    def new_cache(self, batch, length):
        raise ValueError("a trust_remote_code model runs without a cache: use_cache=none")
