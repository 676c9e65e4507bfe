"""The lm_eval command line that reproduces a task of a results file, rebuilt from what lm-eval recorded."""

import json
import shlex
from pathlib import Path

from lm_eval_infogain.leaderboard.files import model_args_dict


DEFAULT_SEEDS = ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
# Keys lm-eval itself puts in a task's recorded metadata (besides the model_args it merges in).
LM_EVAL_METADATA_KEYS = {"version", "config_source"}


def command(data: dict, task: str, results_path: Path) -> str:
    """The lm_eval command line that reproduces a task of a results file, from what lm-eval recorded."""
    config = data.get("config", {})
    model_args = config.get("model_args")
    if isinstance(model_args, dict):
        model_args = ",".join(f"{key}={format_value(value)}" for key, value in model_args.items())
    parts = ["lm_eval", "--model", str(config.get("model")), "--model_args", model_args or "", "--tasks", task]
    metadata = cli_metadata(data, task)
    if metadata:
        parts += ["--metadata", json.dumps(metadata)]
    shots = data.get("n-shot", {}).get(task)
    if shots is not None:
        parts += ["--num_fewshot", str(shots)]
    if config.get("batch_size") is not None:
        parts += ["--batch_size", format_value(config["batch_size"])]
    if config.get("limit") is not None:
        parts += ["--limit", format_value(config["limit"])]
    if config.get("gen_kwargs"):
        parts += ["--gen_kwargs", ",".join(f"{k}={format_value(v)}" for k, v in config["gen_kwargs"].items())]
    if data.get("chat_template") is not None:
        parts.append("--apply_chat_template")
    if data.get("fewshot_as_multiturn"):
        parts.append("--fewshot_as_multiturn")
    if data.get("system_instruction"):
        parts += ["--system_instruction", data["system_instruction"]]
    if all(config.get(key) is not None for key in DEFAULT_SEEDS):
        parts += ["--seed", ",".join(format_value(config[key]) for key in DEFAULT_SEEDS)]
    parts += ["--output_path", results_path.parent.parent.as_posix()]
    if any(results_path.parent.glob(f"samples_{task}_*.jsonl")):
        parts.append("--log_samples")
    return shlex.join(parts)


def cli_metadata(data: dict, task: str) -> dict:
    """What `--metadata` gave the task: lm-eval records it merged with the model_args and the YAML's version."""
    metadata = data.get("configs", {}).get(task, {}).get("metadata") or {}
    model_args = model_args_dict(data.get("config", {}).get("model_args"))
    return {key: value for key, value in metadata.items() if key not in model_args.keys() | LM_EVAL_METADATA_KEYS}


def format_value(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
