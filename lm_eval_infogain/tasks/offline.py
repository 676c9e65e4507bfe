"""Offline copies of lm-eval's built-in tasks: the built-in YAML, with the data read from local JSONL files.

A task YAML in task_configs/offline/ names this module's `LocalDataTask` as its `class:` and a built-in
YAML (relative to lm-eval's tasks folder) as `include_builtin:`. lm-eval 0.4.13 resolves `include:`
relative to the including file, so a plain include cannot reach lm-eval's own folder from an installed
or editable copy of this package; `LocalDataTask` does the include itself, with lm-eval's merge rule
(the including file's keys win), then:
- drops the built-in's hub coordinates (dataset_path, dataset_name, dataset_kwargs) and its tags, so
  the copy joins none of the built-in's groups;
- reads (its `download`) each split the built-in uses from a JSONL file in the schema of the built-in's data set:
  the test split from `--metadata '{"<task>_jsonl": PATH}'` or the environment variable `<TASK>_JSONL`,
  another split (gsm8k's few-shot `train`) from `<task>_<split>_jsonl` or `<TASK>_<SPLIT>_JSONL`.
  Only the test file is required; asking for few-shot examples without their file is an error.
Function references (`!function`) of the built-in are imported only when the copy keeps them, so the
code tasks, which replace every function of lm-eval's humaneval and mbpp utils (those import
`evaluate.load("code_eval")`, which needs the Hugging Face hub), never import those modules.
A code task (`unsafe_code: true`) checks its sandbox when it is built, before any request is decoded
(bubblewrap must run here, unless the unsafe opt-in chose the in-process guard), and records it in its
config's metadata, `"sandbox"`, with the layers in force on this machine, `"sandbox_layers"`, which the
results JSON shows under `configs.<task>.metadata`. Once its
filters ran, it runs every program its metric will score side by side (`code_metrics.run_ahead`).
"""

import ast
import functools
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import lm_eval.tasks
import yaml
from lm_eval.api.task import ConfigurableTask

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.lm_eval_hook import task_configs_dir
from lm_eval_infogain.tasks import code_metrics
from lm_eval_infogain.tasks.sandbox import require_sandbox, sandbox_layers

BUILTIN_TASKS_DIR = Path(lm_eval.tasks.__file__).parent
# Keys of a built-in that a copy reading local files must not inherit.
NOT_INHERITED = ("tag", "group", "task_list", "dataset_path", "dataset_name", "dataset_kwargs")
TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}
# Field -> JSON type of each record, per (dataset_path, dataset_name) of the built-ins we copy.
SCHEMAS = {
    ("openai/gsm8k", "main"): {"question": str, "answer": str},
    ("HuggingFaceH4/MATH-500", "default"): {
        "problem": str, "solution": str, "answer": str, "subject": str, "level": int, "unique_id": str,
    },
    ("openai/openai_humaneval", None): {
        "task_id": str, "prompt": str, "canonical_solution": str, "test": str, "entry_point": str,
    },
    ("allenai/ai2_arc", "ARC-Easy"): {"id": str, "question": str, "choices": dict, "answerKey": str},
    ("google-research-datasets/mbpp", "full"): {
        "task_id": int, "text": str, "code": str, "test_list": list, "test_setup_code": str,
        "challenge_test_list": list,
    },
}


@dataclass(frozen=True)
class FunctionRef:
    """A `!function module.name` of a built-in YAML, imported only if the copy keeps it."""

    module: str  # dotted, e.g. lm_eval.tasks.minerva_math.utils
    name: str

    def resolve(self):
        return getattr(importlib.import_module(self.module), self.name)


def yaml_loader(directory: Path) -> type:
    package = ".".join(("lm_eval", "tasks", *directory.relative_to(BUILTIN_TASKS_DIR).parts))

    def function_ref(loader, node) -> FunctionRef:
        module, _, name = loader.construct_scalar(node).rpartition(".")
        return FunctionRef(f"{package}.{module}", name)

    class BuiltinLoader(yaml.SafeLoader):
        pass

    BuiltinLoader.add_constructor("!function", function_ref)
    return BuiltinLoader


def read_builtin_yaml(path: Path) -> dict:
    """A built-in task YAML with its includes merged in (lm-eval's rule: the including file wins)."""
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml_loader(path.parent))  # noqa: S506 (SafeLoader)
    includes = config.pop("include", [])
    merged = {}
    for include in [includes] if isinstance(includes, str) else includes:
        merged.update(read_builtin_yaml(path.parent / include))
    return {**merged, **config}


def resolve_functions(value):
    if isinstance(value, FunctionRef):
        return value.resolve()
    if isinstance(value, dict):
        return {key: resolve_functions(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_functions(item) for item in value]
    return value


def builtin_schema(builtin: dict, name: str) -> dict[str, type]:
    key = (builtin.get("dataset_path"), builtin.get("dataset_name"))
    if key not in SCHEMAS:
        raise UsageError(f"built-in {name} reads {key}, which has no local schema; known: {sorted(map(str, SCHEMAS))}")
    return SCHEMAS[key]


def metadata_key(task: str, split: str, test_split: str) -> str:
    return f"{task}_jsonl" if split == test_split else f"{task}_{split}_jsonl"


def how_to_set(task: str, split: str, test_split: str) -> str:
    key = metadata_key(task, split, test_split)
    return f"set {key.upper()}=/path/to/{split}.jsonl or pass --metadata '{{\"{key}\": \"/path/to/{split}.jsonl\"}}'"


def check_record(record, schema: dict[str, type], where: str) -> dict:
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [field for field in schema if field not in record]
    if missing:
        raise UsageError(f"{where}: missing field(s) {', '.join(missing)}; each record needs {', '.join(schema)}")
    for field, expected in schema.items():
        value = record[field]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UsageError(f"{where}: field {field} is {type(value).__name__}, expected {TYPE_NAMES[expected]}")
    if "answerKey" in schema:
        check_answer_key(record, where)
    return {field: record[field] for field in schema}  # extra fields dropped: every row needs the same columns


def check_answer_key(record: dict, where: str) -> None:
    """ARC: lm-eval's doc_to_target looks answerKey up among the choices' labels, and its doc_to_choice
    reads their texts: a key that is not a label would stop the run deep inside lm-eval."""
    labels, texts = record["choices"].get("label"), record["choices"].get("text")
    if not (isinstance(labels, list) and isinstance(texts, list) and len(labels) == len(texts) > 0):
        raise UsageError(f"{where}: choices must hold two lists of equal length, label and text; "
                         f"got {sorted(record['choices'])}")
    if record["answerKey"] not in labels:
        raise UsageError(f"{where}: answerKey {record['answerKey']!r} is not among the choices' labels {labels}")


def read_jsonl(path: str, schema: dict[str, type], task: str) -> list[dict]:
    """The records of a JSONL file, each checked against `schema`; a one-line ValueError otherwise."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{task}: data file {file}: no such file")
    records = []
    with file.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{task}: {file}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UsageError(f"{where}: not valid JSON ({error.msg})") from None
            records.append(check_record(record, schema, where))
    if not records:
        raise UsageError(f"{task}: data file {file}: no records")
    return records


class LocalDataTask(ConfigurableTask):
    """A built-in lm-eval task (its `include_builtin` YAML) whose splits are read from local JSONL files."""

    def __init__(self, config: dict) -> None:
        sandbox = require_sandbox() if config.get("unsafe_code") else None
        builtin_name = config["include_builtin"]
        builtin = read_builtin_yaml(BUILTIN_TASKS_DIR / builtin_name)
        self.local_schema = builtin_schema(builtin, builtin_name)
        own = {key: value for key, value in config.items() if key not in ("class", "include_builtin")}
        inherited = {key: value for key, value in builtin.items() if key not in NOT_INHERITED}
        metadata = {**builtin.get("metadata", {}), **own.get("metadata", {})}
        if sandbox is not None:
            metadata["sandbox"] = sandbox.value
            metadata["sandbox_layers"] = sandbox_layers(sandbox)
        super().__init__(config=resolve_functions({**inherited, **own, "metadata": metadata}))

    def apply_filters(self) -> None:
        super().apply_filters()
        if self.config.unsafe_code:
            code_metrics.run_ahead(self.programs_to_score())

    def programs_to_score(self) -> list[str]:
        """What the code metrics will run: each filtered candidate, then the document's tests (its target),
        as lm-eval's process_results passes them."""
        programs = []
        for instance in self.instances:
            tests = self.doc_to_target(instance.doc)
            for filtered in instance.filtered_resps.values():
                candidates = filtered if isinstance(filtered, list) else [filtered]
                programs += [code_metrics.program(candidate, tests) for candidate in candidates]
        return programs

    def split_names(self) -> list[str]:
        """The test split first, then every other split the configuration names."""
        config = self.config
        others = [config.training_split, config.validation_split, config.fewshot_split]
        return [config.test_split, *dict.fromkeys(split for split in others if split and split != config.test_split)]

    def download(self, dataset_kwargs=None, **kwargs) -> None:
        """Every split that has a file; the test split must have one."""
        task, metadata = self.config.task, self.config.metadata or {}
        test_split, *other_splits = self.split_names()
        keys = {split: metadata_key(task, split, test_split) for split in [test_split, *other_splits]}
        unknown = sorted(key for key in metadata if key.startswith(f"{task}_") and key not in keys.values())
        if unknown:
            raise UsageError(f"unknown {task} metadata {', '.join(unknown)}; allowed: {', '.join(keys.values())}")
        paths = {split: metadata.get(key) or os.environ.get(key.upper()) for split, key in keys.items()}
        if not paths[test_split]:
            raise UsageError(f"{task} reads its {test_split} split from a JSONL file: "
                             f"{how_to_set(task, test_split, test_split)}")
        self.dataset = datasets.DatasetDict({
            split: datasets.Dataset.from_list(read_jsonl(path, self.local_schema, task))
            for split, path in paths.items()
            if path
        })

    def has_training_docs(self) -> bool:
        """Only splits read from a file exist (a built-in may name train/validation splits not given)."""
        return self.config.training_split in self.dataset

    def has_validation_docs(self) -> bool:
        return self.config.validation_split in self.dataset

    def fewshot_split(self) -> str | None:
        """Where few-shot examples come from: the configured split, else lm-eval's rule (train, then validation)."""
        if self.fewshot_cfg.split is not None:
            return self.fewshot_cfg.split
        return self.config.validation_split if self.has_validation_docs() else self.config.training_split

    def lacks_fewshot_file(self) -> bool:
        split = self.fewshot_split()
        return split is not None and split not in self.dataset

    def fewshot_docs(self):
        if self.lacks_fewshot_file():
            return None  # fewshot_context explains, if shots are asked for
        return super().fewshot_docs()

    def fewshot_context(self, doc, num_fewshot, **kwargs):
        if num_fewshot > 0 and self.lacks_fewshot_file():
            split, task = self.fewshot_split(), self.config.task
            raise UsageError(f"{task}: {num_fewshot}-shot prompts draw from the {split} split: "
                             f"{how_to_set(task, split, self.config.test_split)}, or run with --num_fewshot 0")
        return super().fewshot_context(doc, num_fewshot=num_fewshot, **kwargs)


def check_sandbox_for(task_names) -> None:
    """Before the model is loaded: if `task_names` (lm-eval's `tasks`) names one of this package's code
    tasks, the sandbox must run here (require_sandbox raises its one-line reason otherwise)."""
    named = {name for name in task_names or [] if isinstance(name, str)}
    if named & code_task_names():
        require_sandbox()


@functools.cache
def code_task_names() -> frozenset[str]:
    """This package's tasks marked `unsafe_code: true`: those that run generated programs."""
    class TagsIgnored(yaml.SafeLoader):
        pass

    TagsIgnored.add_multi_constructor("!", lambda loader, suffix, node: None)
    configs = [yaml.load(path.read_text(encoding="utf-8"), Loader=TagsIgnored)  # noqa: S506 (SafeLoader)
               for path in Path(task_configs_dir()).glob("*/*.yaml")]
    return frozenset(config["task"] for config in configs if isinstance(config, dict) and config.get("unsafe_code"))


def mbpp_fewshot_samples() -> list[dict]:
    """The three solved problems lm-eval's mbpp shows, read from its utils.py without importing it.

    Importing lm_eval/tasks/mbpp/utils.py runs `evaluate.load("code_eval")`, which needs the hub; the
    examples are the literal list that its `list_fewshot_samples` returns.
    """
    path = BUILTIN_TASKS_DIR / "mbpp" / "utils.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and node.name == "list_fewshot_samples":
            returns = [statement for statement in node.body if isinstance(statement, ast.Return)]
            return ast.literal_eval(returns[-1].value)
    raise UsageError(f"{path} has no function list_fewshot_samples; expected lm-eval 0.4.13's mbpp task")
