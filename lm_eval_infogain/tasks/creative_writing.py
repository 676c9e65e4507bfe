"""Creative writing: story prompts, the instruction, and judge-free text metrics.

A prompts file line carries one of two fields:
- `prompt`: the full instruction, sent to the model unchanged (the paper's `creativity_writing.jsonl`,
  fields `prompt` and `source`, is such a file: each prompt already asks for the story);
- `premise`: a bare story premise, which our instruction wraps ("Write a story of about 500 words for
  this writing prompt:", the premise, a newline).
Each doc is {"id": ..., "premise": ..., "prompt": ...} with the other field None, and `doc_to_text`
sends `prompt` as it is or wraps `premise`. Offline (task `creative_writing`), the docs are the 200
premises in task_configs/creative_writing/prompts.jsonl, or a user's file; online (task
`creative_writing_online`), `process_online_docs` turns a public WritingPrompts data set (whose column
`prompt` holds premises) into premise docs. Story quality is judged separately, by an LLM judge
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

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.tasks import common

TARGET_WORDS = 500
PROMPTS_ENV_VAR = "CREATIVE_WRITING_PROMPTS"
METADATA_KEYS = ("creative_writing_prompts",)
PROMPT_FIELDS = ("prompt", "premise")  # a full instruction, or a premise our instruction wraps
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# WritingPrompts premises start with a tag such as "[ WP ]" or "[EU]"; the story instruction replaces it.
PREMISE_TAG = re.compile(r"^\s*(?:\[\s*\w+\s*\]\s*)+")


# ---------------------------------------------------------------- data


def bundled_prompts_path():
    return resources.files("lm_eval_infogain.task_configs") / "creative_writing" / "prompts.jsonl"


def read_prompts(path) -> list[dict]:
    """Docs from a JSONL (or CSV) whose records each carry a `prompt` (sent verbatim) or a `premise` (wrapped)."""
    docs = []
    for line_number, record in common.read_records(path, "creative writing prompts file"):
        given = {field: common.first_field(record, (field,)) for field in PROMPT_FIELDS}
        present = [field for field, value in given.items() if value is not None]
        if len(present) != 1:
            problem = "both fields prompt and premise" if present else "no field prompt or premise"
            raise UsageError(f"creative writing prompts file {path}, line {line_number}: {problem}; "
                             "allowed: `prompt` (a full instruction, sent unchanged) or `premise` (a story premise)")
        # A prompt is the instruction as its author wrote it: not even its surrounding whitespace is ours to trim.
        prompt = record["prompt"] if present == ["prompt"] else None
        if prompt is not None and not isinstance(prompt, str):
            raise UsageError(f"creative writing prompts file {path}, line {line_number}: "
                             f"prompt {prompt!r} is not text; allowed: a JSON string")
        docs.append({"id": len(docs), "premise": given["premise"], "prompt": prompt})
    return docs


def load_dataset(**metadata) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset` hook: split `test`, the bundled premises or a user's.

    Our metadata key (optional; other keys are lm-eval's or the backend's and are ignored):
      creative_writing_prompts  a JSONL (or CSV) of prompts or premises that replaces the bundled ones
                                (else the environment variable CREATIVE_WRITING_PROMPTS)
    """
    common.reject_unknown_keys(metadata, "creative_writing_", METADATA_KEYS)
    path = common.user_file(metadata, "creative_writing_prompts", PROMPTS_ENV_VAR)
    if path:
        docs = read_prompts(path)
    else:
        with resources.as_file(bundled_prompts_path()) as bundled:
            docs = read_prompts(bundled)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def clean_premise(text: str) -> str:
    return PREMISE_TAG.sub("", text).strip()


def process_online_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """WritingPrompts rows (one per story, so premises repeat) -> one doc per distinct premise, in order."""
    if "prompt" not in dataset.column_names:
        raise UsageError(f"the online writing-prompts data set has columns {dataset.column_names}; expected 'prompt'")
    cleaned = dict.fromkeys(clean_premise(text) for text in dataset["prompt"])  # distinct, in order of appearance
    premises = [premise for premise in cleaned if premise]
    return datasets.Dataset.from_list([{"id": index, "premise": premise, "prompt": None}
                                       for index, premise in enumerate(premises)])


# ---------------------------------------------------------------- prompt


def doc_to_text(doc: dict) -> str:
    """A doc's own `prompt` unchanged, else our instruction around its `premise`.

    `get`: samples logged before docs carried `prompt` hold only `premise`, and the judge reads them too.
    """
    if doc.get("prompt") is not None:
        return doc["prompt"]
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
