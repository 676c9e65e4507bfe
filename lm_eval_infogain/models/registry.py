"""`pretrained=` -> (adapter, tokenizer): short names, the architecture table, dtype, device, peft.

The architecture is read from the checkpoint's config.json (`model_type`, then `architectures`, then
`auto_map`), or named with `arch=`. A checkpoint none of these recognise raises, naming the known
architectures, unless `trust_remote_code=True`: then transformers' AutoModel runs the checkpoint's own
code, without a cache (never a guess from a name substring, never a default mask id).
"""

import difflib
import json
import logging
import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, GenerationConfig, PretrainedConfig
from transformers.utils import logging as hf_logging

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.models.base import ModelAdapter, ModelSpec
from lm_eval_infogain.models.checkpoint import check_folder
from lm_eval_infogain.models.dream import DreamModel
from lm_eval_infogain.models.llada import LLaDAModelLM
from lm_eval_infogain.models.mmada import MMadaModelLM
from lm_eval_infogain.models.oracles import ORACLE_FOLDERS, ORACLES, load_oracle
from lm_eval_infogain.models.remote import RemoteCodeAdapter
from lm_eval_infogain.models.sdar import SDARForCausalLM
from lm_eval_infogain.sampling.config import check

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# arch name -> our model class (TraDo is the SDAR architecture, named apart for its short names).
ARCHITECTURES = {"llada": LLaDAModelLM, "mmada": MMadaModelLM, "dream": DreamModel, "sdar": SDARForCausalLM,
                 "trado": SDARForCausalLM}
HUB_IDS = {"llada": "GSAI-ML/LLaDA-8B-Instruct", "dream": "Dream-org/Dream-v0-Instruct-7B",
           "sdar": "JetLM/SDAR-8B-Chat", "trado": "Gen-Verse/TraDo-8B-Instruct", "mmada": "Gen-Verse/MMaDA-8B-MixCoT"}
# Short names of the bundled models: random weights per architecture, and LLaDA trained on a task (train_tiny.py).
BUNDLED = {f"tiny-random-{arch}": ASSETS / f"tiny-random-{arch}" for arch in ARCHITECTURES} | {
    name: ASSETS / name for name in ("tiny-llada-sudoku", "tiny-llada-countdown")}
# What runs when pretrained= is not given (said at warning level): a smoke test, never a result.
DEFAULT_PRETRAINED = "tiny-random-llada"
# AutoTokenizer / AutoConfig read config.json too; let them know our model types.
for model_cls in ARCHITECTURES.values():
    AutoConfig.register(model_cls.config_class.model_type, model_cls.config_class, exist_ok=True)

DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_pretrained(pretrained: str, key: str = "pretrained") -> str:
    """A short name (llada, tiny-random-dream, oracle-sudoku, ...) -> its hub id or bundled directory; anything else
    is a path or hub id (org/name), as for transformers. A name with no '/' that is neither a short name
    nor a folder (a typo of a short name) is refused at once, not tried on the hub (minutes of retries)."""
    resolved = BUNDLED.get(pretrained) or ORACLE_FOLDERS.get(pretrained) or HUB_IDS.get(pretrained)
    if resolved is not None:
        return str(resolved)
    if "/" not in pretrained and not Path(pretrained).exists():
        short_names = [*BUNDLED, *ORACLE_FOLDERS, *HUB_IDS]
        close = difflib.get_close_matches(pretrained, short_names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"allowed: a folder, a hub id org/name or {', '.join(short_names)}"
        raise UsageError(f"{key}={pretrained!r}: no such folder or short name: {hint}")
    return pretrained


def short_name_arch(pretrained: str) -> str | None:
    """The architecture a short name implies (it tells TraDo from SDAR, which share a config)."""
    for arch in ARCHITECTURES:
        if pretrained in (arch, f"tiny-random-{arch}"):
            return arch
    return None


def detect_architecture(config_dict: dict) -> str | None:
    """Our arch name for a config.json: its model_type, else its architectures, else its auto_map."""
    by_model_type = {cls.config_class.model_type.lower(): arch for arch, cls in ARCHITECTURES.items()}
    by_class_name = {cls.__name__: arch for arch, cls in ARCHITECTURES.items()}
    model_type = str(config_dict.get("model_type", "")).lower()
    if model_type in by_model_type:
        return by_model_type[model_type]
    class_names = list(config_dict.get("architectures") or [])
    auto_map = config_dict.get("auto_map") or {}
    class_names += [ref.rsplit(".", 1)[-1] for ref in auto_map.values() if isinstance(ref, str)]
    return next((by_class_name[name] for name in class_names if name in by_class_name), None)


def resolve_dtype(name: str, checkpoint_dtype, device: torch.device) -> torch.dtype:
    """'auto' keeps the checkpoint's dtype on GPUs and uses float32 on CPU (bf16 matmuls are slow there)."""
    if name not in DTYPES:
        raise UsageError(f"dtype={name!r} is invalid; allowed: {' | '.join(DTYPES)}")
    if DTYPES[name] is not None:
        return DTYPES[name]
    if device.type == "cpu" or checkpoint_dtype is None:
        return torch.float32
    return getattr(torch, checkpoint_dtype) if isinstance(checkpoint_dtype, str) else checkpoint_dtype


# generation_config.json may hold {"sampler_defaults": {...}} with these keys: the checkpoint's own
# defaults for our sampler (train_tiny writes them). A sub-dict, so that transformers' own keys of the
# same name (use_cache: true) never read as ours.
SAMPLER_DEFAULTS_KEY = "sampler_defaults"
GENERATION_DEFAULT_KEYS = ("gen_length", "steps", "block_length", "use_cache")
GENERATION_CONFIG_NAME = "generation_config.json"


def generation_config(path: str) -> dict:
    """The checkpoint's generation_config.json as a dict; empty when it has none (or no path: a built model)."""
    if not path:
        return {}
    try:
        return GenerationConfig.from_pretrained(path).to_dict()
    except OSError:  # no generation_config.json
        return {}


def checkpoint_sampler_defaults(pretrained: str | None) -> dict:
    """Sampler settings the checkpoint's generation_config.json names under "sampler_defaults" (gen_length,
    steps, block_length, use_cache), e.g. the answer length a train_tiny model learnt; model_args win.
    None (a built model with no checkpoint folder) has none.

    A local generation_config.json that cannot be read or parsed is an error naming it: dropping it would
    silently run with other settings than the checkpoint's own.
    """
    if pretrained is None:
        return {}
    path = resolve_pretrained(pretrained)
    local_file = Path(path) / GENERATION_CONFIG_NAME
    if local_file.is_file():
        try:
            json.loads(local_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"pretrained={pretrained!r}: {local_file} cannot be read as JSON "
                             f"({str(error).splitlines()[0]}); fix or delete it") from None
    defaults = generation_config(path).get(SAMPLER_DEFAULTS_KEY) or {}
    unknown = sorted(set(defaults) - set(GENERATION_DEFAULT_KEYS))
    if unknown:
        raise UsageError(f"pretrained={pretrained!r}: generation_config.json {SAMPLER_DEFAULTS_KEY} has unknown "
                         f"key(s) {', '.join(unknown)}; allowed: {', '.join(GENERATION_DEFAULT_KEYS)}")
    return dict(defaults)


def stop_ids(config, tokenizer, generation: dict) -> tuple[int, ...]:
    """EOS of the config and tokenizer plus generation_config.json's eos list (e.g. end-of-turn)."""
    ids = [getattr(config, "eos_token_id", None), tokenizer.eos_token_id]
    generation_eos = generation.get("eos_token_id")
    ids += generation_eos if isinstance(generation_eos, list) else [generation_eos]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def model_spec(config, tokenizer, path: str, model=None) -> ModelSpec:
    """The ids and facts the sampler needs; model None: a trust_remote_code model (no cache, no shift)."""
    mask_id = getattr(config, "mask_token_id", None)
    if mask_id is None:
        mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise UsageError(f"pretrained={path!r} has no mask token (config.mask_token_id or tokenizer.mask_token); "
                         "a masked diffusion model needs one")
    eos_id = config.eos_token_id if getattr(config, "eos_token_id", None) is not None else tokenizer.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    pad_id = getattr(config, "pad_token_id", None)
    pad_id = eos_id if pad_id is None else pad_id
    block_size = None if model is None else model.attention_block_size
    vocab_size = getattr(config, "embedding_size", None) or config.vocab_size  # rows of the LM head
    if len(tokenizer) > vocab_size:  # its highest ids would index past the embedding
        raise UsageError(f"pretrained={path!r}: the tokenizer (tokenizer.json) has {len(tokenizer)} tokens but the "
                         f"model has {vocab_size} embedding rows (config.json vocab_size); they do not belong together")
    for name, token_id in (("mask", mask_id), ("eos", eos_id), ("pad", pad_id)):
        if not 0 <= token_id < vocab_size:  # e.g. an architecture's default id in a config that omits its own
            raise UsageError(f"pretrained={path!r}: the {name} token id {token_id} is outside the vocabulary "
                             f"(size {vocab_size}); set {name}_token_id in config.json")
    return ModelSpec(
        mask_id=mask_id, eos_id=eos_id, pad_id=pad_id, vocab_size=vocab_size,
        stop_ids=stop_ids(config, tokenizer, generation_config(path)),
        max_length=getattr(config, "max_sequence_length", None) or getattr(config, "max_position_embeddings", 4096),
        logits_shift=0 if model is None else model.logits_shift, attention_block_size=block_size,
        cache_modes=supported_cache_modes(model is not None, block_size),
    )


def supported_cache_modes(own_model: bool, block_size: int | None) -> tuple[str, ...]:
    if not own_model:
        return ("none",)
    if block_size is not None:  # dual caches positions after the block, which block-causal attention never reads
        return ("none", "prefix")
    return ("none", "prefix", "dual")


def check_config_keys(config_dict: dict, config_class, arch: str, pretrained: str) -> None:
    """The shape keys the architecture reads must be in config.json: a missing one would silently take
    the 8B default and build a model of the wrong size (e.g. arch= naming another family). Each is a
    positive integer: another value would fail deep inside the model's construction."""
    missing = [key for key in config_class.shape_keys if key not in config_dict]
    if missing:
        raise UsageError(f"pretrained={pretrained!r}: config.json lacks {', '.join(missing)}, which arch={arch!r} "
                         "reads; is arch= right?")
    for key in config_class.shape_keys:
        value = config_dict[key]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise UsageError(f"pretrained={pretrained!r}: config.json {key}={value!r} is invalid; allowed: an "
                             "integer >= 1")


# Checkpoint weights that the official code does not use either, by name pattern, with the reason.
KNOWN_UNUSED_WEIGHTS = {
    r"(^|\.)rotary_emb\.inv_freq$": "RoPE tables that older checkpoints saved; the official code recomputes "
                                    "them from the config (a non-persistent buffer)",
}


def check_weights(info: dict, pretrained: str, weight_files: dict[str, str]) -> None:
    """Every parameter comes from the checkpoint with its shape, and every checkpoint weight is used: a
    half-random model would only produce noise, an unused weight means the model is not the one saved."""
    def file_of(name: str) -> str:
        return weight_files.get(name, "the checkpoint")

    if info["mismatched_keys"]:
        name, saved, built = sorted(info["mismatched_keys"])[0]
        raise UsageError(f"pretrained={pretrained!r}: {file_of(name)} holds {name} of shape {list(saved)}, but "
                         f"config.json makes it {list(built)}; the config (sizes, vocab_size) and the weights disagree")
    if info["missing_keys"]:
        names = sorted(info["missing_keys"])
        raise UsageError(f"pretrained={pretrained!r} lacks {len(names)} weight(s) this architecture needs, e.g. "
                         f"{', '.join(names[:3])}; is arch= right?")
    unused = sorted(name for name in info["unexpected_keys"]
                    if not any(re.search(pattern, name) for pattern in KNOWN_UNUSED_WEIGHTS))
    if unused:
        raise UsageError(f"pretrained={pretrained!r}: {file_of(unused[0])} holds {len(unused)} weight(s) the model "
                         f"does not use, e.g. {', '.join(unused[:3])}; config.json does not describe these weights "
                         "(is arch= right? a key such as attention_bias missing?)")


def apply_peft(model, peft_dir: str):
    """Load a LoRA (or other peft) adapter and merge it into the weights: no adapter cost per forward.
    A folder that is not an adapter, or an adapter of another model, is one line naming it."""
    from peft import PeftModel

    folder = Path(peft_dir)
    if not folder.is_dir() and (peft_dir.count("/") != 1 or peft_dir.startswith((".", "/", "~"))):
        raise UsageError(f"peft={peft_dir!r}: no such adapter folder; allowed: a peft adapter folder or hub id org/name")
    if folder.is_dir() and not (folder / "adapter_config.json").is_file():
        raise UsageError(f"peft={peft_dir!r}: {folder / 'adapter_config.json'} is missing: not a peft adapter folder "
                         "(a model folder is pretrained=)")
    try:
        return PeftModel.from_pretrained(model, peft_dir).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as error:  # no such hub id; target modules or shapes not the model's
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        message = next((line for line in lines if line.startswith("size mismatch")), lines[0])  # torch's many lines
        raise UsageError(f"peft={peft_dir!r} cannot be applied to this model: {message}") from None


def checkpoint_or_error(read, pretrained: str, key: str = "pretrained"):
    """Run a transformers loading call; a missing or unreadable file, or a config value refused by the model
    class, becomes one line naming the checkpoint. Transformers' own load report is silenced: check_weights
    says what matters in one line."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return read()
    except OSError as error:
        raise UsageError(f"{key}={pretrained!r} could not be loaded: {str(error).splitlines()[0]}") from None
    except ValueError as error:  # ours are one line already; transformers' may run over several
        message = (str(error).splitlines() or [type(error).__name__])[0]
        raise UsageError(message if message.startswith(f"{key}=") else f"{key}={pretrained!r}: {message}") \
            from None
    finally:
        hf_logging.set_verbosity(level)


def check_finite_logits(adapter, pretrained: str, weight_files: dict[str, str]) -> None:
    """One forward of two masked positions, once at load: NaN or inf weights, or a config value such as
    rope_theta NaN, give non-finite logits, and every answer would be empty. Nothing is checked while decoding.
    On failure the weights are searched for the first non-finite one, to name the file to suspect."""
    spec, device = adapter.spec, adapter.device
    ids = torch.full((1, 2), spec.mask_id, dtype=torch.long, device=device)  # [1, 2]
    with torch.inference_mode():
        logits = adapter.forward(ids, torch.arange(2, device=device)[None], torch.ones_like(ids, dtype=torch.bool),
                                 None, 0, spec.logits_shift)  # [1, 2 - shift, V]
    if bool(torch.isfinite(logits).all()):
        return
    damaged = next((name for name, tensor in adapter.model.state_dict().items()
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())), None)
    if damaged is not None:
        raise UsageError(f"pretrained={pretrained!r}: the first forward gives non-finite logits; "
                         f"{weight_files.get(damaged, 'the checkpoint')} holds non-finite values in {damaged}: "
                         "the weights are damaged; re-download or re-save them")
    raise UsageError(f"pretrained={pretrained!r}: the first forward gives non-finite logits though every weight is "
                     f"finite; suspect config.json (rope_theta, the norm eps, rope_scaling), or dtype {adapter.dtype} "
                     "too narrow for the activations")


def built_base(model):
    """The model class of ours inside a model built in Python (a peft model wraps one), or a one-line error."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    classes = tuple(dict.fromkeys(ARCHITECTURES.values()))
    if not isinstance(base, classes):
        raise UsageError(f"pretrained={type(model).__name__} is invalid; allowed: a checkpoint directory, hub id or "
                         f"short name, or a built model of class {', '.join(c.__name__ for c in classes)} (or a peft "
                         "model around one) with tokenizer=")
    return base


def built_model_name(model) -> str:
    """How results and the request cache name a model passed as an object rather than a checkpoint path."""
    base = built_base(model)
    return f"<in-memory {type(base).__name__}: {getattr(base.config, '_name_or_path', '') or 'unsaved'}>"


def built_model_folder(model) -> str | None:
    """The checkpoint folder a model built in Python was loaded from (its config's _name_or_path), None
    when it has none (built from a config, or loaded from the hub)."""
    path = getattr(built_base(model).config, "_name_or_path", "") or ""
    return path if os.path.isdir(path) else None


def adapt_built_model(model, tokenizer, device: str):
    """(adapter, tokenizer) of a model already built in Python (HFLM's `pretrained=<PreTrainedModel>`): one
    of this package's model classes, or a peft model around one (its adapters stay live, unmerged)."""
    base = built_base(model)
    if tokenizer is None:
        raise UsageError(f"pretrained={type(model).__name__} was given as a built model without tokenizer=; allowed: "
                         "its tokenizer object, or a path or hub id to load it from")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    base.to(torch.device(device)).eval()
    adapter = ModelAdapter(base, model_spec(base.config, tokenizer, built_model_folder(model) or "", base))
    check_finite_logits(adapter, built_model_name(model), {})
    return adapter, tokenizer


def load_tokenizer(tokenizer: str, trust_remote_code: bool = False):
    """The tokenizer of a folder, hub id or short name given as tokenizer=."""
    return checkpoint_or_error(lambda: AutoTokenizer.from_pretrained(resolve_pretrained(tokenizer, "tokenizer"),
                                                                     trust_remote_code=trust_remote_code),
                               tokenizer, "tokenizer")


def load(pretrained: str, dtype: str = "auto", device: str = "cpu", arch: str | None = None,
         trust_remote_code: bool = False, peft: str | None = None, tokenizer=None, oracle_noise=None):
    """Load a checkpoint in its official layout, or an exact model (oracles.py); returns (adapter, tokenizer).
    tokenizer: another tokenizer than the checkpoint's (an object, or a folder, hub id or short name to load
    it from), as HFLM allows."""
    if pretrained in ORACLES:
        for key, value in (("arch", arch), ("peft", peft), ("trust_remote_code", trust_remote_code or None),
                           ("tokenizer", tokenizer)):
            check(value is None, key, value, f"unset for the exact model {pretrained}")
        return load_oracle(pretrained, device, 0.0 if oracle_noise is None else oracle_noise)
    check(oracle_noise is None, "oracle_noise", oracle_noise, f"unset except for the exact models {', '.join(ORACLES)}")
    path = resolve_pretrained(pretrained)
    if arch is not None and arch not in ARCHITECTURES:
        raise UsageError(f"arch={arch!r} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    weight_files = check_folder(pretrained, path)  # a local folder's files, one line per problem
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(path)
    except OSError as error:
        raise UsageError(f"pretrained={pretrained!r}: no config.json found at {path!r} ({error})") from None
    arch = arch or short_name_arch(pretrained) or detect_architecture(config_dict)
    torch_device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, config_dict.get("dtype") or config_dict.get("torch_dtype"), torch_device)
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer, trust_remote_code)
    elif tokenizer is None:
        tokenizer = checkpoint_or_error(lambda: AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
                                        pretrained)
    if arch is None:
        if not trust_remote_code:
            raise UsageError(f"pretrained={pretrained!r} has model_type={config_dict.get('model_type')!r}, which is "
                             f"not a known architecture ({', '.join(ARCHITECTURES)}); name one with arch=, or pass "
                             "trust_remote_code=True to run the checkpoint's own code (no cache)")
        logger.warning("pretrained=%r is not a known architecture: running its own code through AutoModel "
                       "(trust_remote_code), without a cache", pretrained)
        model = checkpoint_or_error(lambda: AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch_dtype),
                                    pretrained)
        model = apply_peft(model, peft) if peft else model
        model.to(torch_device).eval()
        adapter = RemoteCodeAdapter(model, model_spec(model.config, tokenizer, path))
        check_finite_logits(adapter, pretrained, weight_files)
        return adapter, tokenizer
    model_cls = ARCHITECTURES[arch]
    check_config_keys(config_dict, model_cls.config_class, arch, pretrained)
    model, info = checkpoint_or_error(lambda: model_cls.from_pretrained(
        path, dtype=torch_dtype, output_loading_info=True, ignore_mismatched_sizes=True), pretrained)
    check_weights(info, pretrained, weight_files)
    model = apply_peft(model, peft) if peft else model
    model.to(torch_device).eval()
    adapter = ModelAdapter(model, model_spec(model.config, tokenizer, path, model))
    check_finite_logits(adapter, pretrained, weight_files)
    return adapter, tokenizer
