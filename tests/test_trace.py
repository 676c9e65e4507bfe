"""The opt-in decode-order trace of the loop, and python -m lm_eval_infogain.trace."""

import json
import math

import pytest

from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate
from lm_eval_infogain.trace import main

GEN = 32


def test_original_with_one_step_per_position_commits_one_position_per_step(tiny, prompts):
    adapter, _ = tiny
    config = SamplerConfig(mode="original", gen_length=GEN, steps=GEN, block_length=16, early_stop=False)
    _, stats = generate(adapter, prompts[:2], config, [1, 2], trace=True)
    for row in stats:
        assert sorted(row["commit_step"]) == list(range(GEN))  # each position once, one per step
        assert max(row["commit_step"][:16]) < min(row["commit_step"][16:])  # block 0 before block 1
        assert all(value is not None and math.isfinite(value) and value >= 0 for value in row["commit_entropy"])
        assert sum(row["commit_entropy"]) == pytest.approx(row["cumulative_entropy"], rel=1e-5)


@pytest.mark.parametrize("mode,cache", [("info_gain", "prefix"), ("fast_dllm", "dual")])
def test_every_position_is_committed_once_within_the_steps(tiny, prompts, mode, cache):
    adapter, _ = tiny
    config = SamplerConfig(mode=mode, use_cache=cache, gen_length=GEN, steps=16, block_length=16)
    batch, seeds = prompts[:2], [3, 4]  # two prompt lengths: the canvas has padding
    generated, stats = generate(adapter, batch, config, seeds, trace=True)
    plain_generated, plain_stats = generate(adapter, batch, config, seeds)
    most_steps = GEN if mode == "fast_dllm" else 16  # a dynamic rule may take up to one step per position
    assert generated == plain_generated  # tracing changes nothing
    for row, plain in zip(stats, plain_stats):
        assert "commit_step" not in plain and row == plain | {key: row[key] for key in ("commit_step",
                                                                                        "commit_entropy")}
        assert len(row["commit_step"]) == GEN and all(0 <= step < most_steps for step in row["commit_step"])
        chosen = [value for value in row["commit_entropy"] if value is not None]  # None: filled by early stop
        assert sum(chosen) == pytest.approx(row["cumulative_entropy"], rel=1e-5)


def test_cli_writes_png_html_and_json_for_two_samplers(tmp_path):
    out = tmp_path / "pictures" / "trace.png"
    main(["--model_args", f"pretrained=tiny-random-llada,gen_length={GEN},steps=16,block_length=16,device=cpu",
          "--prompt", "Solve: 1 2 3 4", "--compare", "mode=original,steps=32,early_stop=False", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = out.with_suffix(".html").read_text()
    traces = json.loads(out.with_suffix(".json").read_text())["traces"]
    assert [trace["sampler"] for trace in traces] == ["info_gain/prefix", "original/prefix"]
    assert sorted(traces[1]["commit_step"]) == list(range(GEN))
    for trace in traces:
        assert len(trace["commit_step"]) == len(trace["tokens"]) == GEN
        assert f"<h2>{trace['sampler']}: NFE {trace['nfe']}" in page
    assert page.count('class="tok"') == 2 * GEN


def test_compare_takes_sampler_keys_only(tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["--model_args", "pretrained=tiny-random-llada,gen_length=32,steps=32,block_length=16", "--prompt", "x",
              "--compare", "pretrained=tiny-random-dream", "--out", str(tmp_path / "t.png")])
    assert str(error.value.code).startswith("trace: --compare takes sampler keys only") and "pretrained" in str(
        error.value.code)


def test_compared_panel_keeps_the_checkpoint_defaults_and_says_what_differs(tmp_path):
    """tiny-llada-sudoku's generation_config sets gen_length 24 and use_cache none; a comparison that
    changes only the mode must decode with those too, not with the model_args defaults (256, prefix)."""
    out = tmp_path / "trace.png"
    main(["--model_args", "pretrained=tiny-llada-sudoku,device=cpu", "--prompt", "1234\n3412\n0000\n0000",
          "--compare", "mode=original", "--out", str(out)])
    first, second = json.loads(out.with_suffix(".json").read_text())["traces"]
    assert first["settings"]["gen_length"] == 24 and first["settings"]["use_cache"] == "none"
    assert {key for key in first["settings"] if first["settings"][key] != second["settings"][key]} == {"mode"}
    assert second["differs"] == {"mode": "original"} and len(second["tokens"]) == 24
    assert "differs only in: mode=original" in out.with_suffix(".html").read_text()


@pytest.fixture(scope="module")
def sudoku_run(tmp_path_factory):
    """A real lm-eval run of the trained sudoku model, 3 puzzles, with --log_samples."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("sudoku_run")
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
               "pretrained=tiny-llada-sudoku,mode=info_gain", "--device", "cpu", "--tasks", "sudoku_4x4",
               "--limit", "3", "--output_path", str(out), "--log_samples"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return next(out.rglob("samples_sudoku_4x4_*.jsonl"))


def test_a_logged_benchmark_item_is_traced_as_it_ran(sudoku_run, tmp_path):
    out = tmp_path / "item.png"
    main(["--samples", str(sudoku_run), "--doc_id", "2", "--compare", "mode=original", "--out", str(out)])
    record = json.loads(out.with_suffix(".json").read_text())
    logged = next(json.loads(line) for line in sudoku_run.read_text().splitlines() if json.loads(line)["doc_id"] == 2)
    assert record["prompt"] == logged["arguments"]["gen_args_0"]["arg_0"]
    assert record["request"]["logged_answer"] == logged["resps"][0][0]
    assert record["request"]["reproduces_logged_answer"] is True
    first, second = record["traces"]
    assert second["differs"] == {"mode": "original"} and first["settings"]["gen_length"] == 24


def test_a_task_document_is_traced_with_the_prompt_the_task_builds(sudoku_run, tmp_path):
    out = tmp_path / "task.png"
    main(["--model_args", "pretrained=tiny-llada-sudoku,mode=info_gain,device=cpu", "--task", "sudoku_4x4",
          "--doc_id", "1", "--out", str(out)])
    record = json.loads(out.with_suffix(".json").read_text())
    logged = next(json.loads(line) for line in sudoku_run.read_text().splitlines() if json.loads(line)["doc_id"] == 1)
    assert record["prompt"] == logged["arguments"]["gen_args_0"]["arg_0"]
    assert record["request"]["answer"] == logged["resps"][0][0]  # same seed as the CLI's default run


@pytest.mark.parametrize("argv,message", [
    (["--samples", "x.jsonl"], "--samples and --task need --doc_id"),
    (["--prompt", "x"], "--model_args is needed"),
])
def test_trace_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_a_document_missing_from_the_samples_is_one_line(sudoku_run, tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["--samples", str(sudoku_run), "--doc_id", "99", "--out", str(tmp_path / "t.png")])
    assert str(error.value.code) == f"trace: --doc_id 99 is not in {sudoku_run}"


def test_a_task_lm_eval_does_not_know_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as error:
        main(["--model_args", "pretrained=tiny-random-llada", "--task", "sudoku_4x44", "--doc_id", "0",
              "--out", str(tmp_path / "t.png")])
    assert str(error.value.code) == "trace: --task 'sudoku_4x44' is not a task lm-eval knows: did you mean sudoku_4x4?"


def test_a_results_file_given_as_samples_is_named(tmp_path):
    results = tmp_path / "results_2026-01-01T00-00-00.json"
    results.write_text(json.dumps({"results": {}}, indent=2))
    with pytest.raises(SystemExit) as error:
        main(["--samples", str(results), "--doc_id", "0", "--out", str(tmp_path / "t.png")])
    assert str(error.value.code) == (f"trace: --samples {results} is not an lm-eval samples file (samples_<task>_<date>"
                                     ".jsonl of --log_samples, one JSON object a line): it holds '{'")
