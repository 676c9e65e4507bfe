"""A local checkpoint folder's files, checked before transformers reads them.

Each problem is one line naming the folder and the file: an empty folder, a missing or unparsable
config.json, a missing or corrupt tokenizer.json, a truncated or foreign safetensors file, a shard that
the index names but the folder lacks. Only headers are read (safetensors' own header parser), so the
check costs milliseconds even for 16 GB of shards.
"""

import json
from pathlib import Path

from safetensors import safe_open
from tokenizers import Tokenizer

from lm_eval_infogain.errors import UsageError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SINGLE_SAFETENSORS = "model.safetensors"
# Files from which transformers can build a tokenizer when tokenizer.json is absent (slow tokenizers).
OTHER_TOKENIZER_FILES = ("vocab.json", "tokenizer.model", "vocab.txt")
# safetensors dtypes of integer tensors (quantized weights): the models compute in floating point, and a
# cast of int8 codes to float would run a model that only produces noise
INTEGER_DTYPES = ("BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64")


class CheckpointFileError(UsageError):
    def __init__(self, pretrained: str, file: str, problem: str):
        super().__init__(f"pretrained={pretrained!r}: {file} {problem}")


def check_folder(pretrained: str, path: str) -> dict[str, str]:
    """Check the folder at `path` (what `pretrained` resolved to); returns {weight name: file holding it}.

    A path that is not a local folder (a hub id) is left to transformers: returns {}.
    """
    folder = Path(path)
    if not folder.is_dir():
        return {}
    if not any(folder.iterdir()):
        raise CheckpointFileError(pretrained, path, "is an empty directory; a checkpoint folder holds config.json, "
                                  "tokenizer.json and model.safetensors (or its shards)")
    config = read_json(pretrained, folder, "config.json")
    if not isinstance(config, dict):
        raise CheckpointFileError(pretrained, str(folder / "config.json"), f"holds a JSON {type(config).__name__}, "
                                  "not an object of settings; re-download or rewrite it")
    check_tokenizer(pretrained, folder)
    return weight_files(pretrained, folder)


def read_json(pretrained: str, folder: Path, name: str) -> dict:
    file = folder / name
    if not file.is_file():
        raise CheckpointFileError(pretrained, str(file), "is missing")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFileError(pretrained, str(file), f"is not valid JSON ({error}); "
                                  "re-download or rewrite it") from None


def check_tokenizer(pretrained: str, folder: Path) -> None:
    """tokenizer.json must parse as a `tokenizers` file; without it, another file a tokenizer is built from."""
    tokenizer_json = folder / "tokenizer.json"
    if (folder / "tokenizer_config.json").exists():
        read_json(pretrained, folder, "tokenizer_config.json")
    if not tokenizer_json.exists():
        if not any((folder / name).exists() for name in OTHER_TOKENIZER_FILES):
            raise CheckpointFileError(pretrained, str(tokenizer_json), "is missing (and so are "
                                      f"{', '.join(OTHER_TOKENIZER_FILES)}): the folder has no tokenizer")
        return
    try:
        Tokenizer.from_file(str(tokenizer_json))
    except Exception as error:  # tokenizers raises its own Exception type, with serde's message
        raise CheckpointFileError(pretrained, str(tokenizer_json), f"cannot be read as a tokenizer "
                                  f"({str(error).splitlines()[0]}); re-download or rebuild it") from None


def weight_files(pretrained: str, folder: Path) -> dict[str, str]:
    """{weight name: file} from the safetensors headers (sharded through the index, or one file)."""
    if (folder / SAFETENSORS_INDEX).exists():
        index = read_json(pretrained, folder, SAFETENSORS_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointFileError(pretrained, str(folder / SAFETENSORS_INDEX), "has no weight_map")
        shards = sorted(set(weight_map.values()))
    elif (folder / SINGLE_SAFETENSORS).exists():
        shards = [SINGLE_SAFETENSORS]
    elif any(folder.glob("*.bin")):
        return {}  # a legacy PyTorch checkpoint: transformers reads it (unpickling cannot be checked cheaply)
    else:
        raise CheckpointFileError(pretrained, str(folder / SINGLE_SAFETENSORS), "is missing (and there is no "
                                  f"{SAFETENSORS_INDEX}): the folder has no weights")
    return {name: str(folder / shard) for shard in shards for name in safetensors_names(pretrained, folder / shard)}


def safetensors_names(pretrained: str, file: Path) -> list[str]:
    """The tensor names in a safetensors header; a missing, truncated or foreign file, or an integer
    (quantized) tensor, is one line."""
    if not file.is_file():
        raise CheckpointFileError(pretrained, str(file), "is missing")
    try:
        with safe_open(str(file), framework="pt") as tensors:
            dtypes = {name: tensors.get_slice(name).get_dtype() for name in tensors.keys()}
    except Exception as error:  # safetensors raises SafetensorError, not a subclass of a builtin error
        raise CheckpointFileError(pretrained, str(file), f"is not a readable safetensors file ({error}): truncated "
                                  "(an interrupted download or copy) or not safetensors at all; re-download it") from None
    integer = [name for name, dtype in dtypes.items() if dtype in INTEGER_DTYPES]
    if integer:
        raise CheckpointFileError(pretrained, str(file), f"holds integer weights ({integer[0]}: {dtypes[integer[0]]}); "
                                  "allowed: floating-point weights (F32, F16, BF16): quantized checkpoints are not "
                                  "supported")
    return list(dtypes)
