"""gsm8k_local, minerva_math500_local, humaneval_local, mbpp_local: lm-eval's built-ins on local JSONL files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from lm_eval_infogain.tasks import code_metrics, offline, sandbox

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
OFFLINE_CONFIGS = REPO / "task_configs" / "offline"
# The cheapest decoding: these runs check the plumbing (prompts, filters, metric names), not the sampler.
FAST_ARGS = "pretrained=tiny-random-llada,gen_length=16,steps=8,block_length=16,mode=original"
DATA = {
    "gsm8k_local_jsonl": FIXTURES / "gsm8k_test.jsonl",
    "gsm8k_local_train_jsonl": FIXTURES / "gsm8k_train.jsonl",
    "minerva_math500_local_jsonl": FIXTURES / "math500_test.jsonl",
    "humaneval_local_jsonl": FIXTURES / "humaneval_test.jsonl",
    "mbpp_local_jsonl": FIXTURES / "mbpp_test.jsonl",
}
METADATA = {key: str(path) for key, path in DATA.items()}
BUILTINS = {
    "gsm8k_local": "gsm8k/gsm8k.yaml",
    "minerva_math500_local": "minerva_math/minerva_math500.yaml",
    "humaneval_local": "humaneval/humaneval.yaml",
    "mbpp_local": "mbpp/mbpp.yaml",
}
# Keys a local copy sets itself instead of taking the built-in's.
REPLACED = {"task", "metadata", *offline.NOT_INHERITED}
CODE_TASK_REPLACED = {"metric_list", "filter_list", "fewshot_config"}
METRICS = {
    "gsm8k_local": {"exact_match,strict-match", "exact_match,flexible-extract"},
    "minerva_math500_local": {"exact_match,none", "math_verify,none"},
    "humaneval_local": {"pass@1,create_test"},
    "mbpp_local": {"pass_at_1,none"},
}


@pytest.fixture(autouse=True)
def no_data_in_environment(monkeypatch):
    for key in DATA:
        monkeypatch.delenv(key.upper(), raising=False)


def load_tasks(names: list[str], metadata: dict) -> dict:
    """Only the offline folder is indexed: quicker than the full index, which one test covers."""
    manager = TaskManager(include_path=str(OFFLINE_CONFIGS), include_defaults=False, metadata=metadata)
    return manager.load(names)["tasks"]


@pytest.fixture(scope="module")
def tasks() -> dict:
    return load_tasks(list(BUILTINS), METADATA)


def docs(task) -> list[dict]:
    return list(task.eval_docs)


def scores(task, doc: dict, response: str) -> dict:
    """What lm-eval's evaluator records for one generation: each filter, then process_results."""
    instance = Instance("generate_until", doc, ("", {}), 0, metadata=(task.config.task, 0, 1))
    instance.resps = [response]
    results = {}
    for ensemble in task._filters:
        ensemble.apply([instance])
        for metric, value in task.process_results(doc, [instance.filtered_resps[ensemble.name]]).items():
            results[f"{metric},{ensemble.name}"] = value
    return results


# ---------------------------------------------------------------- loading


def test_default_task_manager_finds_and_builds_every_local_task():
    """No --include_path: the package's hook adds task_configs/ to lm-eval's own index."""
    manager = TaskManager(metadata=METADATA)
    assert set(BUILTINS) <= set(manager.all_subtasks)
    loaded = manager.load(list(BUILTINS))["tasks"]
    for name, data_key in [("gsm8k_local", "gsm8k_local_jsonl"), ("humaneval_local", "humaneval_local_jsonl")]:
        lines = DATA[data_key].read_text().splitlines()
        assert len(loaded[name].eval_docs) == len(lines)


def same_setting(ours, builtin) -> bool:
    """`builtin` from lm-eval's loader without resolving functions: a `!function` is '<dir>/<module>.<name>'."""
    if isinstance(builtin, dict):
        return builtin.keys() <= ours.keys() and all(same_setting(ours[key], builtin[key]) for key in builtin)
    if isinstance(builtin, list):
        return len(ours) == len(builtin) and all(map(same_setting, ours, builtin))
    if isinstance(builtin, str) and builtin.startswith(str(offline.BUILTIN_TASKS_DIR) + os.sep):
        module, name = builtin.rsplit(".", 1)
        module_path = Path(module).relative_to(offline.BUILTIN_TASKS_DIR).parts
        expected_module = ".".join(("lm_eval", "tasks", *module_path))
        return callable(ours) and ours.__name__ == name and ours.__module__ == expected_module
    return ours == builtin


@pytest.mark.parametrize("name", list(BUILTINS))
def test_local_task_keeps_every_builtin_setting_it_does_not_replace(tasks, name):
    path = offline.BUILTIN_TASKS_DIR / BUILTINS[name]
    builtin = load_yaml(path, resolve_func=False)
    replaced = REPLACED | (CODE_TASK_REPLACED if name in ("humaneval_local", "mbpp_local") else set())
    config = tasks[name].config
    kept = {key: value for key, value in builtin.items() if key not in replaced}
    assert kept, name
    for key, value in kept.items():
        ours = getattr(config, key)
        ours = ours if not hasattr(ours, "__dataclass_fields__") else vars(ours)
        assert same_setting(ours, value), f"{name}.{key}: {ours!r} != {value!r}"
    assert config.metadata["version"] == builtin["metadata"]["version"]
    assert config.dataset_path is None and not config.tag


@pytest.mark.parametrize("name", ["humaneval_local", "mbpp_local"])
def test_code_tasks_are_marked_unsafe_and_never_import_the_hub_metric(tasks, name):
    assert tasks[name].UNSAFE_CODE
    assert "lm_eval.tasks.humaneval.utils" not in sys.modules and "lm_eval.tasks.mbpp.utils" not in sys.modules


@pytest.mark.parametrize("name", ["humaneval_local", "mbpp_local"])
def test_code_tasks_record_their_sandbox(tasks, name):
    assert tasks[name].config.metadata["sandbox"] == "bubblewrap"


def test_a_code_task_without_bwrap_stops_when_built_naming_bubblewrap(monkeypatch, tmp_path):
    monkeypatch.delenv("MDM_INFOGAIN_UNSAFE_SANDBOX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sandbox.SandboxUnavailable, match="inside bubblewrap, but bwrap is not on PATH"):
        load_tasks(["humaneval_local"], METADATA)


def test_a_code_task_with_the_unsafe_opt_in_records_the_guard(monkeypatch, tmp_path):
    monkeypatch.setenv("MDM_INFOGAIN_UNSAFE_SANDBOX", "1")
    monkeypatch.setenv("PATH", str(tmp_path))
    task = load_tasks(["mbpp_local"], METADATA)["mbpp_local"]
    assert task.config.metadata["sandbox"] == "in-process guard only (unsafe)"
    doc = docs(task)[0]
    assert task.process_results(doc, [doc["code"]]) == {"pass_at_1": 1.0}


def test_mbpp_few_shot_examples_are_lm_evals():
    samples = offline.mbpp_fewshot_samples()
    assert [sample["task_id"] for sample in samples] == [2, 3, 4]
    assert all(sample["is_fewshot"] and len(sample["test_list"]) == 3 for sample in samples)


@pytest.mark.parametrize("name", ["gsm8k_local", "minerva_math500_local"])
def test_prompts_and_scores_equal_the_builtin_task_on_the_same_documents(tasks, name):
    """The built-in itself, built by lm-eval's own loader and given our documents instead of the hub's."""
    ours = tasks[name]
    config = load_yaml(offline.BUILTIN_TASKS_DIR / BUILTINS[name], resolve_func=True)
    config["custom_dataset"] = lambda **_: ours.dataset
    builtin = ConfigurableTask(config=config)
    for task in (ours, builtin):
        task.set_fewshot_seed(1234)
    for doc in docs(ours):
        assert ours.fewshot_context(doc, num_fewshot=ours.config.num_fewshot) == builtin.fewshot_context(
            doc, num_fewshot=builtin.config.num_fewshot
        )
        answer = doc["answer"].split("#### ")[-1] if name == "gsm8k_local" else doc["answer"]
        response = f"#### {answer}\nFinal Answer: The final answer is ${answer}$. I hope it is correct."
        assert scores(ours, doc, response) == scores(builtin, doc, response)


# ---------------------------------------------------------------- data files and errors


def test_missing_data_path_is_one_clear_error_naming_both_ways():
    with pytest.raises(ValueError) as error:
        load_tasks(["gsm8k_local"], {})
    message = str(error.value)
    assert "GSM8K_LOCAL_JSONL=" in message and '--metadata \'{"gsm8k_local_jsonl"' in message and "\n" not in message


def test_environment_variable_names_the_file(monkeypatch):
    monkeypatch.setenv("MBPP_LOCAL_JSONL", str(DATA["mbpp_local_jsonl"]))
    task = load_tasks(["mbpp_local"], {})["mbpp_local"]
    assert [doc["task_id"] for doc in docs(task)] == [9001, 9002, 9003]


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question": "q"}'], r"line 1: missing field\(s\) answer; each record needs question, answer"),
        (['{"question": "q", "answer": "a"}', "{not json"], "line 2: not valid JSON"),
        (['{"question": "q", "answer": 7}'], "line 1: field answer is int, expected a string"),
        (['["q", "a"]'], "line 1: expected a JSON object, got list"),
        ([""], "no records"),
    ],
)
def test_malformed_file_is_one_clear_error_naming_file_and_line(tmp_path, lines, message):
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message) as error:
        load_tasks(["gsm8k_local"], {"gsm8k_local_jsonl": path})
    assert path in str(error.value) and "\n" not in str(error.value)


ARC_RECORD = {"id": "a", "question": "q", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"answerKey": "C"}, r"answerKey 'C' is not among the choices' labels \['A', 'B'\]"),
        ({"choices": {"text": ["x"], "label": ["A", "B"]}}, "choices must hold two lists of equal length"),
    ],
)
def test_arc_answer_key_outside_the_labels_is_one_clear_error(tmp_path, edit, message):
    path = write_lines(tmp_path / "arc.jsonl", [json.dumps(ARC_RECORD), json.dumps(ARC_RECORD | edit)])
    with pytest.raises(ValueError, match="line 2: " + message) as error:
        load_tasks(["arc_easy_local"], {"arc_easy_local_jsonl": path})
    assert path in str(error.value) and "\n" not in str(error.value)


def test_absent_file_and_misspelled_key_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_tasks(["gsm8k_local"], {"gsm8k_local_jsonl": str(tmp_path / "absent.jsonl")})
    with pytest.raises(ValueError, match="unknown gsm8k_local metadata gsm8k_local_jsnl; allowed: gsm8k_local_jsonl"):
        load_tasks(["gsm8k_local"], {**METADATA, "gsm8k_local_jsnl": "x"})


def test_gsm8k_without_train_file_runs_zero_shot_and_refuses_shots_clearly():
    task = load_tasks(["gsm8k_local"], {"gsm8k_local_jsonl": str(DATA["gsm8k_local_jsonl"])})["gsm8k_local"]
    doc = docs(task)[0]
    assert task.fewshot_context(doc, num_fewshot=0) == f"Question: {doc['question']}\nAnswer:"
    with pytest.raises(ValueError, match="5-shot prompts draw from the train split: set GSM8K_LOCAL_TRAIN_JSONL="):
        task.fewshot_context(doc, num_fewshot=5)


def test_gsm8k_few_shot_examples_come_from_the_train_file(tasks):
    task = tasks["gsm8k_local"]
    task.set_fewshot_seed(1234)
    prompt = task.fewshot_context(docs(task)[0], num_fewshot=5)
    train_lines = DATA["gsm8k_local_train_jsonl"].read_text().splitlines()
    train_questions = [json.loads(line)["question"] for line in train_lines]
    assert prompt.count("Question:") == 6 and all(question in prompt for question in train_questions)


# ---------------------------------------------------------------- scorers


def test_gsm8k_scores_right_wrong_and_malformed_answers(tasks):
    task = tasks["gsm8k_local"]
    doc = docs(task)[0]  # answer 22
    assert scores(task, doc, "72 - 50 = 22 muffins.\n#### 22") == {"exact_match,strict-match": 1.0,
                                                                   "exact_match,flexible-extract": 1.0}
    assert scores(task, doc, "So 22 muffins are left.") == {"exact_match,strict-match": 0.0,
                                                            "exact_match,flexible-extract": 1.0}
    assert set(scores(task, doc, "72 - 50 = 23.\n#### 23").values()) == {0.0}
    assert set(scores(task, doc, "I do not know.").values()) == {0.0}


RIGHT = {"exact_match": 1, "math_verify": 1}
WRONG = {"exact_match": 0, "math_verify": 0}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Final Answer: The final answer is $\\frac{7}{8}$. I hope it is correct.", RIGHT),
        ("Final Answer: The final answer is $0.875$. I hope it is correct.", RIGHT),
        ("Final Answer: The final answer is $\\frac{5}{8}$. I hope it is correct.", WRONG),
        ("I think it is about seven eighths", WRONG),
        ("Final Answer: The final answer is $\\frac{7}{$. I hope", WRONG),
    ],
)
def test_math_scores_with_minervas_equivalence(tasks, response, expected):
    task = tasks["minerva_math500_local"]
    doc = docs(task)[0]  # 7/8
    assert doc["answer"] == "\\frac{7}{8}"
    assert task.process_results(doc, [response]) == expected


def test_humaneval_pass_at_1_is_1_for_canonical_solutions_and_0_for_wrong_ones(tasks):
    task = tasks["humaneval_local"]
    for doc in docs(task):
        assert task.process_results(doc, [[doc["prompt"] + doc["canonical_solution"]]]) == {"pass@1": 1.0}
        assert scores(task, doc, doc["canonical_solution"]) == {"pass@1,create_test": 1.0}
        assert scores(task, doc, "    return None\n") == {"pass@1,create_test": 0.0}
        assert scores(task, doc, "    return (\n") == {"pass@1,create_test": 0.0}  # a syntax error


def test_mbpp_pass_at_1_is_1_for_reference_code_and_0_for_wrong_code(tasks):
    task = tasks["mbpp_local"]
    for doc in docs(task):
        assert task.process_results(doc, [doc["code"]]) == {"pass_at_1": 1.0}
        wrong = doc["code"].replace("return ", "return not ", 1)
        assert scores(task, doc, wrong) == {"pass_at_1,none": 0.0}
        assert scores(task, doc, "def broken(:\n") == {"pass_at_1,none": 0.0}


@pytest.mark.parametrize("name", ["humaneval_local", "mbpp_local"])
def test_code_tasks_run_their_programs_ahead_with_the_same_scores(tasks, name, monkeypatch):
    """After apply_filters, process_results answers from the programs run side by side, running none."""
    task = tasks[name]
    right = {"humaneval_local": "canonical_solution", "mbpp_local": "code"}[name]
    responses = [(doc, doc[right]) for doc in docs(task)]
    responses += [(doc, "def broken(:\n") for doc in docs(task)]
    instances = []
    for index, (doc, response) in enumerate(responses):
        instance = Instance("generate_until", doc, ("", {}), 0, metadata=(name, index, 1))
        instance.resps = [response]
        instances.append(instance)
    monkeypatch.setattr(task, "_instances", instances, raising=False)
    task.apply_filters()
    assert len(code_metrics.outcomes_run_ahead) == len(responses)
    monkeypatch.setattr(code_metrics, "program_passes", lambda source: pytest.fail("ran a program again"))
    expected = [1.0] * len(docs(task)) + [0.0] * len(docs(task))
    scored = [task.process_results(instance.doc, [next(iter(instance.filtered_resps.values()))])
              for instance in instances]
    assert [next(iter(score.values())) for score in scored] == expected


def test_pass_at_k_estimator_over_several_samples():
    assert code_metrics.estimate_pass_at_k(num_samples=4, num_correct=1, k=1) == 0.25
    assert code_metrics.estimate_pass_at_k(num_samples=4, num_correct=1, k=2) == 0.5
    assert code_metrics.estimate_pass_at_k(num_samples=4, num_correct=3, k=2) == 1.0
    result = code_metrics.pass_at_k(["assert f() == 1"], [["def f(): return 1", "def f(): return 2"]], k=[1, 2, 5])
    assert result == {"pass@1": 0.5, "pass@2": 1.0}  # no pass@5 from two samples, as in code_eval


# ---------------------------------------------------------------- the stock CLI


def lm_eval(output: Path, tasks: str, *extra: str, env=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", FAST_ARGS,
               "--tasks", tasks, "--limit", "2", "--output_path", str(output), "--log_samples", *extra]
    return subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=600)


def test_stock_cli_runs_every_local_task(tmp_path):
    """Data paths through --metadata, except mbpp's, through its environment variable."""
    metadata = {key: value for key, value in METADATA.items() if key != "mbpp_local_jsonl"}
    env = {**os.environ, "MBPP_LOCAL_JSONL": METADATA["mbpp_local_jsonl"]}
    result = lm_eval(tmp_path / "out", ",".join(BUILTINS), "--confirm_run_unsafe_code",
                     "--metadata", json.dumps(metadata), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    for name, metrics in METRICS.items():
        assert metrics <= results["results"][name].keys(), (name, results["results"][name])
        samples = next((tmp_path / "out").rglob(f"samples_{name}_*.jsonl")).read_text().splitlines()
        assert {json.loads(sample)["doc_id"] for sample in samples} == {0, 1}
    for name in ("humaneval_local", "mbpp_local"):
        assert results["configs"][name]["metadata"]["sandbox"] == "bubblewrap"


def test_stock_cli_without_bwrap_ends_with_one_line_naming_bubblewrap(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "MDM_INFOGAIN_UNSAFE_SANDBOX"}
    env["PATH"] = str(tmp_path)  # no bwrap (the interpreter is called by its full path)
    result = lm_eval(tmp_path / "out", "humaneval_local", "--confirm_run_unsafe_code", "--metadata",
                     json.dumps(METADATA), env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "mdm_infogain: code tasks run generated programs inside bubblewrap, but bwrap is not on PATH")


def test_stock_cli_refuses_code_tasks_without_confirm_run_unsafe_code(tmp_path):
    result = lm_eval(tmp_path / "out", "humaneval_local", "--metadata", json.dumps(METADATA))
    assert result.returncode != 0
    assert "humaneval_local which is marked as unsafe" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("results_*.json"))
