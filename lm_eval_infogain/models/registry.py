"""`pretrained=` -> (adapter, tokenizer): short names, architecture table, dtype and device.

The architecture is read from the checkpoint's config.json `model_type`; an unknown one raises
with the list of known ones (never a guess from a name substring, never a default mask id).
"""

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig

from lm_eval_infogain.models.base import ModelSpec
from lm_eval_infogain.models.llada import LLaDAAdapter, LLaDAModelLM

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = {"tiny-random-llada": ASSETS / "tiny-random-llada"}
ARCHITECTURES = {"llada": (LLaDAModelLM, LLaDAAdapter)}
# AutoTokenizer / AutoConfig read config.json too; let them know our model types.
for model_cls, _ in ARCHITECTURES.values():
    AutoConfig.register(model_cls.config_class.model_type, model_cls.config_class, exist_ok=True)

DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_pretrained(pretrained: str) -> str:
    """A bundled short name -> its directory; anything else is a path or hub id, as for transformers."""
    return str(BUNDLED.get(pretrained, pretrained))


def resolve_dtype(name: str, config: PretrainedConfig, device: torch.device) -> torch.dtype:
    """'auto' keeps the checkpoint's dtype on GPUs and uses float32 on CPU (bf16 matmuls are slow there)."""
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is invalid; allowed: {' | '.join(DTYPES)}")
    if DTYPES[name] is not None:
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    checkpoint_dtype = getattr(config, "dtype", None) or torch.float32
    return getattr(torch, checkpoint_dtype) if isinstance(checkpoint_dtype, str) else checkpoint_dtype


def stop_ids(config, tokenizer, path: str) -> tuple[int, ...]:
    """EOS of the config and tokenizer plus generation_config.json's eos list (e.g. end-of-turn)."""
    ids = [config.eos_token_id, tokenizer.eos_token_id]
    try:
        generation_eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json: config and tokenizer EOS are all there is
        generation_eos = None
    ids += generation_eos if isinstance(generation_eos, list) else [generation_eos]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def model_spec(config, tokenizer, path: str) -> ModelSpec:
    mask_id = getattr(config, "mask_token_id", None)
    if mask_id is None:
        mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(f"pretrained={path!r} has no mask token (config.mask_token_id or tokenizer.mask_token)")
    eos_id = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
    pad_id = getattr(config, "pad_token_id", None)
    pad_id = eos_id if pad_id is None else pad_id
    return ModelSpec(
        mask_id=mask_id, eos_id=eos_id, pad_id=pad_id,
        vocab_size=getattr(config, "embedding_size", None) or config.vocab_size,  # rows of the LM head
        stop_ids=stop_ids(config, tokenizer, path), max_length=getattr(config, "max_sequence_length", 4096),
    )


def architecture_of(path: str) -> str:
    config_dict, _ = PretrainedConfig.get_config_dict(path)
    model_type = config_dict.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"pretrained={path!r} has model_type={model_type!r}; supported: {', '.join(ARCHITECTURES)}")
    return model_type


def load(pretrained: str, dtype: str = "auto", device: str = "cpu"):
    """Load a checkpoint in its official layout; returns (adapter, tokenizer)."""
    path = resolve_pretrained(pretrained)
    model_cls, adapter_cls = ARCHITECTURES[architecture_of(path)]
    config = model_cls.config_class.from_pretrained(path)
    torch_device = torch.device(device)
    model = model_cls.from_pretrained(path, dtype=resolve_dtype(dtype, config, torch_device))
    model.to(torch_device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return adapter_cls(model, model_spec(config, tokenizer, path)), tokenizer

