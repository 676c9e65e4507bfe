"""The creative_writing tasks: bundled and user prompts, the online data mapping, the metrics, lm-eval loading."""

import json
from pathlib import Path

import datasets
import pytest

from lm_eval_infogain.tasks import creative_writing

TASK_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs"


# ---------------------------------------------------------------- prompts


def test_bundled_prompts_are_200_distinct_premises(monkeypatch):
    monkeypatch.delenv(creative_writing.PROMPTS_ENV_VAR, raising=False)
    docs = creative_writing.load_dataset()["test"].to_list()
    premises = [doc["premise"] for doc in docs]
    assert len(premises) == 200 and len(set(premises)) == 200
    assert [doc["id"] for doc in docs] == list(range(200))
    assert all(len(premise.split()) >= 8 and premise.endswith((".", '"')) for premise in premises)


def test_bundled_prompts_file_is_shipped_in_the_installed_package():
    path = creative_writing.bundled_prompts_path()
    assert path.is_file() and sum(1 for line in path.read_text().splitlines() if line.strip()) == 200


def test_user_premises_replace_the_bundled_ones_by_metadata_or_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(creative_writing.PROMPTS_ENV_VAR, raising=False)
    path = tmp_path / "mine.jsonl"
    records = [{"premise": "A cat runs for mayor."}, {"premise": " A dog objects. "}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    expected = [{"id": 0, "premise": "A cat runs for mayor.", "prompt": None},
                {"id": 1, "premise": "A dog objects.", "prompt": None}]
    assert creative_writing.load_dataset(creative_writing_prompts=str(path))["test"].to_list() == expected
    monkeypatch.setenv(creative_writing.PROMPTS_ENV_VAR, str(path))
    assert creative_writing.load_dataset()["test"].to_list() == expected


# Two lines in the schema of the paper's creativity_writing.jsonl (`prompt`, `source`): each prompt is
# already the whole instruction, with its own wording, spacing and line breaks.
PAPER_SCHEMA_LINES = [
    {"prompt": "Please write a story of around 500 words based on the following premise.\n\n"
               "Premise: A cartographer maps a city that does not exist yet.\n\nStory:",
     "source": "writingprompts"},
    {"prompt": "  You are a novelist. Continue from this idea:\tThe moon sends a letter.  ",
     "source": "writingprompts"},
]


def write_paper_schema_file(path: Path) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in PAPER_SCHEMA_LINES))
    return path


def test_prompt_lines_reach_the_model_unchanged_and_only_premises_get_our_instruction(tmp_path):
    path = write_paper_schema_file(tmp_path / "creativity_writing.jsonl")
    docs = creative_writing.load_dataset(creative_writing_prompts=str(path))["test"].to_list()
    assert [creative_writing.doc_to_text(doc) for doc in docs] == [line["prompt"] for line in PAPER_SCHEMA_LINES]
    assert [doc["premise"] for doc in docs] == [None, None]

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(PAPER_SCHEMA_LINES[0]) + "\n" + json.dumps({"premise": "Rain falls up."}) + "\n")
    texts = [creative_writing.doc_to_text(doc)
             for doc in creative_writing.load_dataset(creative_writing_prompts=str(mixed))["test"]]
    assert texts == [PAPER_SCHEMA_LINES[0]["prompt"],
                     "Write a story of about 500 words for this writing prompt:\nRain falls up.\n"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"story": "Once upon a time"}\n', "line 1: no field prompt or premise; allowed: `prompt`"),
        ('{"premise": "ok"}\n{"prompt": "Write.", "premise": "ok"}\n', "line 2: both fields prompt and premise"),
        ('{"prompt": 7}\n', "line 1: prompt 7 is not text; allowed: a JSON string"),
        ('{"premise": "ok"}\n{"premise": \n', "line 2: not JSON"),
        ('{"premise": "ok"}\n{"prompt": "' + "x" * 200_000 + '"}\n',
         "line 2: field 'prompt' holds 200,000 characters; allowed: at most 131,072"),
        ("", "no records"),
    ],
)
def test_malformed_user_prompts_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        creative_writing.load_dataset(creative_writing_prompts=str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unknown_metadata_key_is_refused():
    with pytest.raises(ValueError, match="unknown creative_writing metadata creative_writing_prompt; allowed"):
        creative_writing.load_dataset(creative_writing_prompt="x.jsonl")


def test_online_rows_become_one_doc_per_premise_without_tags():
    rows = datasets.Dataset.from_dict({
        "prompt": ["[ WP ] A door appears.", "[ WP ] A door appears.", "[EU] [ TT ] Rain falls up.", "[ WP ]  "],
        "story": ["one", "two", "three", "four"],
    })
    docs = creative_writing.process_online_docs(rows).to_list()
    assert docs == [{"id": 0, "premise": "A door appears.", "prompt": None},
                    {"id": 1, "premise": "Rain falls up.", "prompt": None}]


def test_online_data_with_other_columns_is_one_clear_error():
    with pytest.raises(ValueError, match=r"has columns \['text'\]; expected 'prompt'"):
        creative_writing.process_online_docs(datasets.Dataset.from_dict({"text": ["x"]}))


def test_instruction_asks_for_about_500_words_for_the_premise():
    expected = "Write a story of about 500 words for this writing prompt:\nA cat runs for mayor.\n"
    assert creative_writing.doc_to_text({"id": 0, "premise": "A cat runs for mayor.", "prompt": None}) == expected
    # A doc logged before docs carried `prompt` (the judge reads old samples files) reads the same.
    assert creative_writing.doc_to_text({"id": 0, "premise": "A cat runs for mayor."}) == expected


# ---------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 12 words; 5 distinct words; 6 of 11 bigrams distinct; 3 of 9 4-grams repeat an earlier one
        ("The cat sat on the mat. The cat sat on the mat!",
         {"words": 12, "distinct_1": 5 / 12, "distinct_2": 6 / 11, "repetition_4gram": 3 / 9}),
        # apostrophes stay inside words, case and punctuation are ignored: 4 words, all distinct
        ("Don't panic -- DON'T panic", {"words": 4, "distinct_1": 2 / 4, "distinct_2": 2 / 3, "repetition_4gram": 0.0}),
        ("one two three four five", {"words": 5, "distinct_1": 1.0, "distinct_2": 1.0, "repetition_4gram": 0.0}),
        ("go go go go go go", {"words": 6, "distinct_1": 1 / 6, "distinct_2": 1 / 5, "repetition_4gram": 2 / 3}),
        ("Hello", {"words": 1, "distinct_1": 1.0, "distinct_2": 0.0, "repetition_4gram": 0.0}),
        ("", {"words": 0, "distinct_1": 0.0, "distinct_2": 0.0, "repetition_4gram": 0.0}),
        ("!!! ... ???", {"words": 0, "distinct_1": 0.0, "distinct_2": 0.0, "repetition_4gram": 0.0}),
    ],
)
def test_text_metrics_on_hand_counted_texts(text, expected):
    metrics = creative_writing.process_results({"id": 0, "premise": "x"}, [text])
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name


# ---------------------------------------------------------------- lm-eval


def test_task_manager_indexes_both_tasks_and_builds_offline_requests():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_CONFIGS / "creative_writing"), include_defaults=False)
    assert {"creative_writing", "creative_writing_online"} <= set(manager.all_subtasks)
    assert not any(name.startswith("_") for name in manager.all_tasks)
    task = manager.load("creative_writing")["tasks"]["creative_writing"]
    task.build_all_requests(limit=3)
    assert len(task.eval_docs) == 200 and len(task.instances) == 3
    for instance in task.instances:
        prompt, gen_kwargs = instance.args
        assert prompt == creative_writing.doc_to_text(instance.doc)
        assert gen_kwargs == {"until": [], "do_sample": True, "temperature": 0.7, "max_gen_toks": 512}
    assert sorted(task.aggregation()) == ["distinct_1", "distinct_2", "repetition_4gram", "words"]
    assert task.higher_is_better()["repetition_4gram"] is False


def test_online_yaml_is_a_valid_task_config_naming_the_public_data_set():
    from lm_eval.config.task import TaskConfig
    from lm_eval.tasks._yaml_loader import load_yaml

    # Building the task would download the data set; the merged YAML and its TaskConfig need no network.
    config = TaskConfig(**load_yaml(TASK_CONFIGS / "creative_writing" / "creative_writing_online.yaml"))
    assert config.task == "creative_writing_online"
    assert config.dataset_path == "euclaise/writingprompts" and config.test_split == "test"
    assert config.custom_dataset is None and config.generation_kwargs["temperature"] == 0.7
    rows = datasets.Dataset.from_dict({"prompt": ["[ WP ] A door appears."], "story": ["..."]})
    assert config.process_docs(rows).to_list() == [{"id": 0, "premise": "A door appears.", "prompt": None}]
    metrics = [metric["metric"] for metric in config.metric_list]
    assert metrics == ["words", "distinct_1", "distinct_2", "repetition_4gram"]
