"""Creative writing: story prompts, the instruction, and judge-free text metrics.

Each doc is {"id": ..., "premise": ...}; the instruction asks for a story of about 500 words for the
premise. Offline (task `creative_writing`), the premises are the 200 in task_configs/creative_writing/
prompts.jsonl, or a user's file; online (task `creative_writing_online`), `process_online_docs` turns a
public WritingPrompts data set into the same docs. Story quality is judged separately, by an LLM judge
over the logged samples (`python -m lm_eval_infogain.judge`); the metrics here need no judge:

- `words`: the story's length in words (a word is a run of letters or digits, inner apostrophes kept);
- `distinct_1`, `distinct_2`: distinct unigrams (bigrams) over all unigrams (bigrams) of the story,
  lower-cased (Li et al., 2016), 0 for a story too short to have any;
- `repetition_4gram`: the fraction of the story's 4-grams that repeat an earlier 4-gram of the same
  story, i.e. 1 - distinct-4; 0 for a story shorter than four words.
lm-eval averages each over the stories (aggregation `mean`).
"""

import re
from importlib import resources

import datasets

from lm_eval_infogain.tasks import common

TARGET_WORDS = 500
PROMPTS_ENV_VAR = "CREATIVE_WRITING_PROMPTS"
METADATA_KEYS = ("creative_writing_prompts",)
# Field names accepted for the premise in a user's file, and in the online data set (its column `prompt`).
PREMISE_FIELDS = ("premise", "prompt")
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# WritingPrompts premises start with a tag such as "[ WP ]" or "[EU]"; the story instruction replaces it.
PREMISE_TAG = re.compile(r"^\s*(?:\[\s*\w+\s*\]\s*)+")


# ---------------------------------------------------------------- data


def bundled_prompts_path():
    return resources.files("lm_eval_infogain.task_configs") / "creative_writing" / "prompts.jsonl"


def read_premises(path) -> list[dict]:
    """Docs from a JSONL (or CSV) of premises, each record with a `premise` (or `prompt`) field."""
    docs = []
    for line_number, record in common.read_records(path, "creative writing prompts file"):
        premise = common.first_field(record, PREMISE_FIELDS)
        if premise is None:
            raise ValueError(f"creative writing prompts file {path}, line {line_number}: "
                             f"no field {' or '.join(PREMISE_FIELDS)}")
        docs.append({"id": len(docs), "premise": premise})
    return docs


def load_dataset(**metadata) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset` hook: split `test`, the bundled premises or a user's.

    Our metadata key (optional; other keys are lm-eval's or the backend's and are ignored):
      creative_writing_prompts  a JSONL (or CSV) of premises that replaces the bundled ones
                                (else the environment variable CREATIVE_WRITING_PROMPTS)
    """
    common.reject_unknown_keys(metadata, "creative_writing_", METADATA_KEYS)
    path = common.user_file(metadata, "creative_writing_prompts", PROMPTS_ENV_VAR)
    if path:
        docs = read_premises(path)
    else:
        with resources.as_file(bundled_prompts_path()) as bundled:
            docs = read_premises(bundled)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def clean_premise(text: str) -> str:
    return PREMISE_TAG.sub("", text).strip()


def process_online_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """WritingPrompts rows (one per story, so premises repeat) -> one doc per distinct premise, in order."""
    if "prompt" not in dataset.column_names:
        raise ValueError(f"the online writing-prompts data set has columns {dataset.column_names}; expected 'prompt'")
    cleaned = dict.fromkeys(clean_premise(text) for text in dataset["prompt"])  # distinct, in order of appearance
    premises = [premise for premise in cleaned if premise]
    return datasets.Dataset.from_list([{"id": index, "premise": premise} for index, premise in enumerate(premises)])


# ---------------------------------------------------------------- prompt


def doc_to_text(doc: dict) -> str:
    return f"Write a story of about {TARGET_WORDS} words for this writing prompt:\n{doc['premise']}\n"


def doc_to_target(doc: dict) -> str:
    """No reference story: the task is scored by the text metrics and, separately, by a judge."""
    return ""


# ---------------------------------------------------------------- metrics


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[start : start + n]) for start in range(len(tokens) - n + 1)]


def distinct(tokens: list[str], n: int) -> float:
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(tokens: list[str], n: int = 4) -> float:
    return 1.0 - distinct(tokens, n) if len(tokens) >= n else 0.0


def text_metrics(text: str) -> dict[str, float]:
    tokens = words(text)
    return {
        "words": len(tokens),
        "distinct_1": distinct(tokens, 1),
        "distinct_2": distinct(tokens, 2),
        "repetition_4gram": repetition(tokens, 4),
    }


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook: `results` holds the one generation for `doc`."""
    return text_metrics(results[0])
