"""InfoGainSampler: the notebook interface over the loop, with the paper's standalone-sampler keywords."""

import random

import pytest
import torch

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate
from lm_eval_infogain.tasks import sudoku


@pytest.fixture(scope="module")
def sudoku_sampler():
    return InfoGainSampler.from_pretrained("tiny-llada-sudoku", dtype="float32", device="cpu")


def puzzle_prompts(count: int) -> list[tuple[dict, str]]:
    rng = random.Random(7)
    docs = [sudoku.make_puzzle(rng) for _ in range(count)]
    return [(doc, sudoku.doc_to_text(doc)) for doc in docs]


def test_the_trained_model_solves_puzzles_through_the_notebook_interface(sudoku_sampler):
    """The checkpoint's own defaults (gen 24, one token per step) apply; Info-Gain solves some puzzles."""
    docs = puzzle_prompts(8)
    ids = [sudoku_sampler.tokenizer(text, add_special_tokens=False)["input_ids"] for _, text in docs]
    out = sudoku_sampler.sample(ids, candidate_number=8, position_temperature=0.2, threshold=0.8,
                                variant="info_gain")
    assert out.config.gen_length == 24 and out.config.mode == "info_gain"
    assert [len(row) for row in out.ids] == [24] * 8
    solved = [sudoku.score_answer(doc["Puzzle"], text) for (doc, _), text in zip(docs, out.text)]
    assert sum(solved) >= 2, out.text
    assert all(row["nfe"] >= 1 and row["cumulative_entropy"] > 0 for row in out.stats)


def test_same_loop_as_the_backend_with_the_papers_keyword_names(sudoku_sampler):
    (_, text), = puzzle_prompts(1)
    ids = sudoku_sampler.tokenizer(text, add_special_tokens=False)["input_ids"]
    out = sudoku_sampler.sample(ids, max_new_tokens=24, steps=12, block_size=12, mode="original", seed=5)
    adapter, _ = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    config = SamplerConfig(mode="original", gen_length=24, steps=12, block_length=12, use_cache="none")
    expected, stats = generate(adapter, [ids], config, [5])
    assert out.ids == expected and out.stats == stats


def test_a_padded_tensor_batch_equals_prompt_by_prompt(sudoku_sampler):
    tokenizer = sudoku_sampler.tokenizer
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for _, text in puzzle_prompts(2)]
    ids[1] = ids[1][3:]  # two lengths
    width = max(map(len, ids))
    batch = torch.tensor([[0] * (width - len(row)) + row for row in ids])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])
    together = sudoku_sampler.sample(batch, attention_mask=mask, seed=[1, 2], mode="info_gain")
    alone = [sudoku_sampler.sample(row, seed=seed, mode="info_gain").ids[0] for row, seed in zip(ids, [1, 2])]
    assert together.ids == alone


@pytest.mark.parametrize("keywords,message", [
    ({"block_sise": 4}, "keyword='block_sise' is invalid"),
    ({"variant": "greedy"}, "variant='greedy' is invalid"),
    ({"seed": [1, 2]}, "seed=[1, 2] is invalid"),
])
def test_bad_keywords_are_one_line_errors(sudoku_sampler, keywords, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sudoku_sampler.sample([1, 2, 3], **keywords)


def test_a_model_that_is_not_an_adapter_is_refused():
    with pytest.raises(ValueError, match="model='Linear' is invalid; allowed: an adapter"):
        InfoGainSampler(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------- lm-eval's Python entry points


TASK, LIMIT = "sudoku_4x4", 4
# What the results record of the sampler and its seeding: the same on every path to the same run.
RECORDED = ("sampler", "sampler_per_task", "seed", "model_type", "model_dtype", "model_num_parameters",
            "attention_block", "batch_size_per_canvas", "mc_num", "mc_batch_size")


def cli_run(tmp_path) -> tuple[dict, dict]:
    """(samples by doc_id, config) of `lm_eval --model_args pretrained=tiny-llada-sudoku` (its default seeds)."""
    import json
    import os
    import subprocess
    import sys

    output = tmp_path / "cli"
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
               "pretrained=tiny-llada-sudoku,device=cpu", "--tasks", TASK, "--limit", str(LIMIT),
               "--output_path", str(output), "--log_samples"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in next(output.rglob(f"samples_{TASK}_*.jsonl")).read_text().splitlines()]
    config = json.loads(next(output.rglob("results_*.json")).read_text())["config"]
    return {row["doc_id"]: row["resps"] for row in rows}, config


def python_run(model, model_args: dict | None = None) -> tuple[dict, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_infogain.lm_eval_hook import task_configs_dir

    tasks = TaskManager(include_path=task_configs_dir(), include_defaults=False)
    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[TASK], limit=LIMIT,
                                      log_samples=True, task_manager=tasks)
    return {row["doc_id"]: row["resps"] for row in results["samples"][TASK]}, results["config"]


def test_the_cli_and_both_python_paths_give_the_same_samples_and_recorded_settings(tmp_path):
    """simple_evaluate with a built model in model_args takes the checkpoint's sampler_defaults (gen_length
    24, not 256), and an MDMInfoGainLM built before simple_evaluate seeds from its torch seed (the CLI's
    default 1234), not from the random one torch drew at start-up: Info-Gain draws even at temperature 0."""
    from lm_eval_infogain.harness import MDMInfoGainLM

    cli_samples, cli_config = cli_run(tmp_path)
    adapter, tokenizer = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    torch.manual_seed(987)  # a notebook's torch state when it builds the model
    paths = {"model_args": python_run("mdm_infogain", {"pretrained": adapter.model, "tokenizer": tokenizer,
                                                       "device": "cpu"}),
             "LM object": python_run(MDMInfoGainLM(pretrained="tiny-llada-sudoku", device="cpu"))}
    assert cli_config["sampler"]["gen_length"] == 24 and cli_config["seed"] == 1234
    for name, (samples, config) in paths.items():
        assert samples == cli_samples, name
        assert {key: config[key] for key in RECORDED} == {key: cli_config[key] for key in RECORDED}, name
