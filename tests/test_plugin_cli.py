"""A user's strategy through the stock CLI: `mode=<module:Class>` runs, the results JSON names it, --use_cache
refuses a rerun with another option or an edited file, and its runs pair with Info-Gain in the leaderboard."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_infogain.leaderboard.cli import main as leaderboard
from test_plugin import USER_MODULE  # tests/ is on the path (pytest prepends a test file's folder)

EXAMPLE = "lm_eval_infogain.examples.margin_lookahead:MarginLookahead"


def lm_eval(model_args: str, tasks: str, limit: int, output: Path, *extra: str, pythonpath: Path | None = None):
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", model_args,
               "--tasks", tasks, "--limit", str(limit), "--output_path", str(output), "--log_samples", *extra]
    env = os.environ | ({"PYTHONPATH": f"{pythonpath}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
                        if pythonpath else {})
    return subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=600)


def results_json(output: Path) -> dict:
    return json.loads(next(output.rglob("results_*.json")).read_text())


def last_line(run: subprocess.CompletedProcess) -> str:
    return run.stderr.strip().splitlines()[-1]


def test_the_example_runs_is_named_and_a_changed_option_is_refused_by_the_cache(tmp_path):
    args = f"pretrained=tiny-llada-sudoku,mode={EXAMPLE}"
    cache = tmp_path / "cache"
    first = lm_eval(args, "sudoku_4x4", 20, tmp_path / "first", "--use_cache", str(cache))
    assert first.returncode == 0, first.stderr[-3000:]
    config = results_json(tmp_path / "first")["config"]
    assert config["sampler"]["mode"] == EXAMPLE
    assert config["sampler"]["strategy_options"] == {"candidates": 4, "spread": 0.1}
    assert config["strategy"]["import_path"] == EXAMPLE and len(config["strategy"]["file_sha256"]) == 64
    assert len(config["decode_stats_per_request"]) == 20
    changed = lm_eval(f"{args},sampler.spread=0.3", "sudoku_4x4", 20, tmp_path / "changed", "--use_cache", str(cache))
    assert changed.returncode == 2
    assert "sampler.strategy_options.spread: 0.1 -> 0.3" in last_line(changed)
    assert last_line(changed).startswith("mdm_infogain: --use_cache file")


def test_an_edited_strategy_file_is_a_changed_setting_and_gen_kwargs_set_options(tmp_path):
    (tmp_path / "my_rule.py").write_text(USER_MODULE)
    args, cache = "pretrained=tiny-llada-sudoku,mode=my_rule:MostConfident", tmp_path / "cache"
    first = lm_eval(args, "sudoku_4x4", 2, tmp_path / "first", "--use_cache", str(cache),
                    "--gen_kwargs", "sampler.scale=2", pythonpath=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    per_task = results_json(tmp_path / "first")["config"]["sampler_per_task"]["sudoku_4x4"]
    assert per_task["strategy_options"]["scale"] == 2.0
    with (tmp_path / "my_rule.py").open("a") as rule:
        rule.write("# tuned\n")
    edited = lm_eval(args, "sudoku_4x4", 2, tmp_path / "edited", "--use_cache", str(cache),
                     "--gen_kwargs", "sampler.scale=2", pythonpath=tmp_path)
    assert edited.returncode == 2 and "strategy.file_sha256" in last_line(edited)


@pytest.fixture(scope="module")
def oracle_board(tmp_path_factory):
    """The example at two spreads and Info-Gain on the same 12 puzzles of sudoku_4x4_many (the exact model),
    and their leaderboard."""
    root = tmp_path_factory.mktemp("oracle")
    base = "pretrained=oracle-sudoku,use_cache=none,steps=12"
    for name, args in (("spread01", f"mode={EXAMPLE}"), ("spread05", f"mode={EXAMPLE},sampler.spread=0.5"),
                       ("info_gain", "mode=info_gain")):
        run = lm_eval(f"{base},{args}", "sudoku_4x4_many", 12, root / name)
        assert run.returncode == 0, run.stderr[-3000:]
    leaderboard([str(root), "-o", str(root / "board")])
    return json.loads((root / "board" / "leaderboard.json").read_text())


def test_runs_on_the_exact_model_get_labels_by_option_and_pair_with_info_gain(oracle_board):
    labels = {row["results_file"].split("/")[0]: row["label"] for row in oracle_board["rows"]}
    assert labels["spread01"] == f"{EXAMPLE}/none sampler.spread=0.1"
    assert labels["spread05"] == f"{EXAMPLE}/none sampler.spread=0.5"
    pairs = {(item["challenger"], item["baseline"]): item for item in oracle_board["comparisons"]
             if item["metric"] == "acc"}
    example_vs_info_gain = [item for (challenger, baseline), item in pairs.items()
                            if {challenger.split(" ")[0], baseline} == {EXAMPLE, "info_gain"}
                            or {challenger, baseline.split(" ")[0]} == {EXAMPLE, "info_gain"}]
    assert len(example_vs_info_gain) == 2 and all(item["paired"] and item["n"] == 12 for item in example_vs_info_gain)
