"""The stock lm-eval CLI runs mdm_infogain end to end (subprocesses, the installed package)."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FAST_ARGS = "pretrained=tiny-random-llada,gen_length=32,steps=16,block_length=16"


def run(command: list[str], cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def lm_eval_command(python: str, model_args: str, output: Path, *extra: str) -> list[str]:
    return [python, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", model_args,
            "--tasks", "sudoku_4x4", "--limit", "4", "--output_path", str(output), "--log_samples", *extra]


def results_and_samples(output: Path) -> tuple[dict, dict[int, str]]:
    results = json.loads(next(output.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(output.rglob("samples_sudoku_4x4_*.jsonl")).read_text().splitlines()]
    return results, {sample["doc_id"]: sample["resps"] for sample in samples}


def test_interpreter_start_hook_does_not_import_torch(tmp_path):
    probe = "import sys; print('lm_eval_infogain' in sys.modules, 'torch' in sys.modules)"
    assert run([sys.executable, "-c", probe], tmp_path).stdout.split() == ["True", "False"]


def test_stock_cli_runs_backend_and_records_settings(tmp_path):
    stats_file = tmp_path / "decode_stats.jsonl"
    model_args = FAST_ARGS + f",mode=info-gain,use_cache=prefix,decode_stats={stats_file}"
    run(lm_eval_command(sys.executable, model_args, tmp_path / "out"), tmp_path)
    results, samples = results_and_samples(tmp_path / "out")
    assert sorted(samples) == [0, 1, 2, 3]
    config = results["config"]
    assert config["sampler"]["mode"] == "info_gain" and config["sampler"]["use_cache"] == "prefix"
    assert config["lm_eval_infogain_version"] and 0 < config["decode_stats_mean"]["sudoku_4x4"]["nfe"] <= 16
    stats = [json.loads(line) for line in stats_file.read_text().splitlines()]
    assert sorted(row["doc_id"] for row in stats) == [0, 1, 2, 3] and {row["task"] for row in stats} == {"sudoku_4x4"}
    assert "acc" in results["results"]["sudoku_4x4"] or "acc,none" in results["results"]["sudoku_4x4"]


@pytest.mark.parametrize("arch", ["mmada", "dream", "sdar", "trado"])
def test_stock_cli_runs_every_architecture(tmp_path, arch):
    model_args = FAST_ARGS.replace("tiny-random-llada", f"tiny-random-{arch}") + ",mode=info-gain"
    run(lm_eval_command(sys.executable, model_args, tmp_path / "out", "--apply_chat_template"), tmp_path)
    results, samples = results_and_samples(tmp_path / "out")
    assert sorted(samples) == [0, 1, 2, 3]
    assert results["config"]["sampler"]["use_cache"] == "prefix"
    assert results["config"]["model_type"] == {"mmada": "mmada", "dream": "Dream"}.get(arch, "sdar")


def test_include_path_and_chat_template(tmp_path):
    output = tmp_path / "out"
    run(lm_eval_command(sys.executable, FAST_ARGS, output, "--include_path", str(REPO / "task_configs"),
                        "--apply_chat_template"), tmp_path)
    sample = json.loads(next(output.rglob("samples_sudoku_4x4_*.jsonl")).read_text().splitlines()[0])
    prompt = sample["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>")


def copy_of_repo(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__", ".venv", "out*")
    return Path(shutil.copytree(REPO, destination, ignore=ignore))


@pytest.mark.slow
def test_fresh_virtualenv_pip_install_then_stock_cli(tmp_path):
    """A real `pip install .` (then `pip install -e .`) into a new virtualenv; the stock CLI finds everything."""
    source = copy_of_repo(tmp_path / "src")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    python = str(bin_dir / "python")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    run([python, "-m", "pip", "install", "--quiet", "torch==2.13.0"], tmp_path, env, timeout=1200)
    run([python, "-m", "pip", "install", "--quiet", str(source)], tmp_path, env, timeout=1200)
    output = tmp_path / "out"
    run([str(bin_dir / "lm_eval"), *lm_eval_command(python, FAST_ARGS, output / "cli")[3:]], tmp_path, env)
    run(lm_eval_command(python, FAST_ARGS, output / "module"), tmp_path, env)
    run([str(bin_dir / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         *lm_eval_command(python, FAST_ARGS, output / "accelerate")[1:]], tmp_path, env)
    assert len(list(output.rglob("results_*.json"))) == 3
    # an editable install finds the same entry points: its console script is enough to show it
    run([python, "-m", "pip", "install", "--quiet", "-e", str(source)], tmp_path, env, timeout=1200)
    run([str(bin_dir / "lm_eval"), *lm_eval_command(python, FAST_ARGS, output / "editable")[3:]], tmp_path, env)
    assert len(list((output / "editable").rglob("results_*.json"))) == 1


def test_the_readme_first_command_solves_puzzles(tmp_path):
    """The README's first command, run as written: both samplers of the trained model print a non-zero acc."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- first-command -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracies = [float(line.split("|")[7]) for line in result.stdout.splitlines()
                  if line.startswith("|sudoku_4x4") and "|acc " in line]
    assert len(accuracies) == 2 and all(value > 0 for value in accuracies), result.stdout


def test_batch_size_auto_from_the_cli_records_the_size_it_found(tmp_path):
    """--batch_size auto --max_batch_size 4: on the CPU all 4 fit; the results say so, and every answer is the
    one --batch_size 4 gives (here in this process, on the project's tasks only, the CLI's default seeds;
    one thread in both, as conftest says)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_infogain.lm_eval_hook import task_configs_dir

    output = tmp_path / "out"
    result = run([sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
                  "pretrained=tiny-llada-sudoku", "--tasks", "sudoku_4x4", "--limit", "8", "--batch_size", "auto", "--max_batch_size", "4",
                  "--output_path", str(output), "--log_samples"], tmp_path, os.environ | {"OMP_NUM_THREADS": "1"})
    assert "batch_size: auto (4)" in result.stdout
    results, samples = results_and_samples(output)
    config = results["config"]
    assert config["batch_size_per_canvas"] == 4 and config["batch_size_auto"] is True
    assert config["batch_sizes"] == [4]
    fixed = lm_eval.simple_evaluate(model="mdm_infogain", model_args="pretrained=tiny-llada-sudoku,batch_size=4,"
                                    "device=cpu", tasks=["sudoku_4x4"], limit=8, log_samples=True,
                                    task_manager=TaskManager(include_path=task_configs_dir(), include_defaults=False))
    assert samples == {row["doc_id"]: row["resps"] for row in fixed["samples"]["sudoku_4x4"]}
    assert sorted(samples) == list(range(8))
