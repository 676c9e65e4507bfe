"""Data parallelism with the stock CLI: `accelerate launch --multi_gpu --num_processes 2 -m lm_eval` on a
machine without a GPU (two CPU processes joined over gloo) splits the requests between the ranks, and
every sample's output is the one a single process gives.

Each launch starts two interpreters that each index lm-eval's tasks, so the default run covers the
main mode (Info-Gain with its lookahead, whose candidates draw from each request's own generator even at
temperature 0); every other mode is a launch of its own, marked slow.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager

from lm_eval_infogain.lm_eval_hook import task_configs_dir

TASK, LIMIT = "sudoku_4x4", 4
BASE_ARGS = "pretrained=tiny-random-llada,gen_length=16,steps=8,block_length=8,temperature=0"
MODES = {
    "info_gain": "mode=info_gain,threshold=0.99",
    "lookum": "mode=info_gain,variant=lookum,threshold=0.99",
    "original": "mode=original",
    "random": "mode=random",
    "entropy": "mode=entropy",
    "margin": "mode=margin",
    "fast_dllm": "mode=fast_dllm,threshold=0.3",
    "fast_dllm_factor": "mode=fast_dllm,factor=1.0",
    "eb_sampler": "mode=eb_sampler,gamma=1.0",
    "pc_sampler": "mode=pc_sampler,pc_baseline={pc_baseline}",
}
ACCELERATE = Path(sys.executable).with_name("accelerate")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def model_args(mode: str, pc_baseline: str) -> str:
    return f"{BASE_ARGS},{MODES[mode].format(pc_baseline=pc_baseline)}"


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def launch_two_processes(args: str, output: Path, stats: Path) -> subprocess.CompletedProcess:
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", f"{args},decode_stats={stats}",
               "--tasks", TASK, "--limit", str(LIMIT), "--output_path", str(output), "--log_samples"]
    # no GPU even where there is one; one thread, as this process (conftest), so float sums agree
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def project_tasks() -> TaskManager:
    """Only the project's tasks: a single-process reference need not index lm-eval's thousands."""
    return TaskManager(include_path=task_configs_dir(), include_defaults=False)


def single_process_samples(args: str, tasks: TaskManager) -> dict[int, list]:
    """The same evaluation in this one process (the CLI's default seeds)."""
    results = lm_eval.simple_evaluate(model="mdm_infogain", model_args=args + ",device=cpu", tasks=[TASK],
                                      limit=LIMIT, log_samples=True, task_manager=tasks)
    return {row["doc_id"]: row["resps"] for row in results["samples"][TASK]}


def check_two_processes_match_one(mode: str, pc_baseline: str, tasks: TaskManager, tmp_path: Path,
                                  extra_args: str = "") -> dict:
    """The two processes' results JSON, once their samples are checked against one process's."""
    if not torch.distributed.is_gloo_available():
        pytest.fail("torch was built without gloo, which CPU data parallelism needs")
    args, stats = model_args(mode, pc_baseline) + extra_args, tmp_path / "stats.jsonl"
    run = launch_two_processes(args, tmp_path / "out", stats)
    assert run.returncode == 0, run.stderr[-3000:]
    # each rank decoded its own share, and the shares make up the whole
    shares = [{row["doc_id"] for row in json_lines(stats.with_name(f"stats.jsonl.rank{rank}"))} for rank in (0, 1)]
    assert all(shares) and not shares[0] & shares[1] and shares[0] | shares[1] == set(range(LIMIT))
    rows = json_lines(next((tmp_path / "out").rglob(f"samples_{TASK}_*.jsonl")))
    assert {row["doc_id"]: row["resps"] for row in rows} == single_process_samples(args, tasks)
    return json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())


def test_two_processes_split_the_requests_and_match_one(pc_baseline_file, project_tasks, tmp_path):
    """With batch_size=auto: the processes agree on the size (gathered) and decode as one process would."""
    results = check_two_processes_match_one("info_gain", pc_baseline_file, project_tasks, tmp_path,
                                            ",batch_size=auto,max_batch_size=2")
    assert results["config"]["batch_size_per_canvas"] == 2 and results["config"]["batch_size_auto"] is True


@pytest.mark.slow
@pytest.mark.parametrize("mode", [mode for mode in MODES if mode != "info_gain"])
def test_two_processes_match_one_in_every_mode(mode, pc_baseline_file, project_tasks, tmp_path):
    check_two_processes_match_one(mode, pc_baseline_file, project_tasks, tmp_path)


RANK_AT_EXIT = """
import atexit, torch
from lm_eval_infogain.harness import MDMInfoGainLM
lm = MDMInfoGainLM.__new__(MDMInfoGainLM)  # only the data-parallel set-up, no model
lm.accelerator = lm.setup_data_parallel()
assert (lm.rank, lm.world_size, torch.distributed.get_backend()) == ({rank}, 2, "gloo")
atexit._run_exitfuncs()  # what the interpreter runs as it shuts down
print("group alive after exit handlers:", torch.distributed.is_initialized())
"""


def test_each_rank_destroys_its_gloo_group_before_interpreter_shutdown():
    """Gloo's threads can abort a rank (SIGABRT) that shuts down with its process group still alive."""
    port = free_port()
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen([sys.executable, "-c", RANK_AT_EXIT.format(rank=rank)], text=True,
                              env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], [err[-2000:] for _, err in outputs]
    assert all("group alive after exit handlers: False" in out for out, _ in outputs), outputs
