"""countdown, countdown_fewshot and creative_writing through the stock lm-eval CLI, found without --include_path.

One CLI run covers the three tasks (each run pays several seconds to index lm-eval's task folder);
creative_writing reads a prompts file in the schema of the paper's creativity_writing.jsonl.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_infogain import judge

TASKS = ("countdown", "countdown_fewshot", "creative_writing")
METRICS = {
    "countdown": ("acc", "acc_paper_rule"),
    "countdown_fewshot": ("acc", "acc_paper_rule"),
    "creative_writing": ("words", "distinct_1", "distinct_2", "repetition_4gram"),
}
SHOTS = {"countdown": 0, "countdown_fewshot": 3, "creative_writing": 0}
# Full instructions in the paper's schema (`prompt`, `source`), with spacing and line breaks of their own.
PAPER_PROMPTS = [
    {"prompt": "Please write a story of around 500 words based on the following premise.\n\n"
               "Premise: A cartographer maps a city that does not exist yet.\n\nStory:",
     "source": "writingprompts"},
    {"prompt": "  You are a novelist. Continue from this idea:\tThe moon sends a letter.  ",
     "source": "writingprompts"},
]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("tasks_cli")
    prompts = output / "creativity_writing.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in PAPER_PROMPTS))
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain",
               "--model_args", "pretrained=tiny-random-llada,gen_length=32,steps=16,block_length=16",
               "--tasks", ",".join(TASKS), "--limit", "2", "--output_path", str(output), "--log_samples",
               "--metadata", json.dumps({"creative_writing_prompts": str(prompts)})]
    result = subprocess.run(command, cwd=output, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return output


def samples_of(output: Path, task: str) -> list[dict]:
    path = next(output.rglob(f"samples_{task}_2*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("task", TASKS)
def test_results_hold_the_task_metrics_as_means_of_the_samples(cli_run, task):
    results = json.loads(next(cli_run.rglob("results_*.json")).read_text())
    samples = samples_of(cli_run, task)
    assert sorted(sample["doc_id"] for sample in samples) == [0, 1]
    assert results["n-shot"][task] == SHOTS[task]
    for metric in METRICS[task]:
        value = results["results"][task][f"{metric},none"]
        assert value == pytest.approx(statistics.fmean(sample[metric] for sample in samples))


def test_creative_writing_sends_the_papers_prompts_unchanged_with_its_sampling_settings(cli_run):
    results = json.loads(next(cli_run.rglob("results_*.json")).read_text())
    gen_kwargs = results["configs"]["creative_writing"]["generation_kwargs"]
    assert gen_kwargs["do_sample"] is True and gen_kwargs["temperature"] == 0.7 and gen_kwargs["until"] == []
    logged = {sample["doc_id"]: sample["arguments"]["gen_args_0"]["arg_0"]
              for sample in samples_of(cli_run, "creative_writing")}
    assert logged == {index: line["prompt"] for index, line in enumerate(PAPER_PROMPTS)}


def test_the_judge_reads_the_samples_file_the_cli_wrote(cli_run):
    path = next(cli_run.rglob("samples_creative_writing_2*.jsonl"))
    samples = judge.read_samples(path)
    pairs = judge.paired_stories(samples, samples)
    assert [story_a.doc_id for story_a, _ in pairs] == [0, 1]
    assert pairs[0][0].writing_prompt == PAPER_PROMPTS[0]["prompt"].strip()
