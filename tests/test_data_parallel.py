"""Data parallelism with the stock CLI: `accelerate launch --multi_gpu --num_processes 2 -m lm_eval` on a
machine without a GPU (two CPU processes joined over gloo) splits the requests between the ranks, and
every sample's output is the one a single process gives.

Each launch starts two interpreters that each index lm-eval's tasks, so the default run covers the
main mode (Info-Gain with its lookahead, whose candidates draw from each request's own generator even at
temperature 0); every other mode is a launch of its own, marked slow.
"""

import json
import os
import signal
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
    "user_strategy": "mode=lm_eval_infogain.examples.margin_lookahead:MarginLookahead,sampler.spread=0.5",
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


def launch_two_processes(args: str, output: Path, stats: Path, *cli: str, timeout: int = 600
                         ) -> subprocess.CompletedProcess:
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", f"{args},decode_stats={stats}",
               "--tasks", TASK, "--limit", str(LIMIT), "--output_path", str(output), "--log_samples", *cli]
    # no GPU even where there is one; one thread, as this process (conftest), so float sums agree
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    try:
        return subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_processes_mentioning(str(stats))  # the ranks run in sessions of their own: the launcher's kill misses them
        raise


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line contains `text` (Linux /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except OSError:
            pass  # gone meanwhile


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
def test_a_rank_whose_requests_were_all_cached_still_joins_the_other_in_its_gathers(pc_baseline_file, tmp_path):
    """A resumed --use_cache run where rank 0 finished its share before the crash: lm-eval's CachingLM
    does not call generate_until on that rank, while rank 1 decodes and gathers its decode stats and
    its batch_size=auto with every rank; without rank 0 joining in, rank 1 would wait for ever."""
    args = model_args("info_gain", pc_baseline_file) + ",batch_size=auto,max_batch_size=2"
    cache = tmp_path / "cache"
    first = launch_two_processes(args, tmp_path / "first", tmp_path / "first.jsonl", "--use_cache", str(cache))
    assert first.returncode == 0, first.stderr[-3000:]
    (tmp_path / "cache_rank1.db").unlink()  # rank 1 lost its answers; rank 0 has all of its own
    try:
        resumed = launch_two_processes(args, tmp_path / "resumed", tmp_path / "resumed.jsonl", "--use_cache",
                                       str(cache), timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the resumed two-process run hung: rank 1 waited in a gather rank 0 never joined")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stats = {rank: tmp_path / f"resumed.jsonl.rank{rank}" for rank in (0, 1)}
    decoded = {rank: json_lines(path) if path.exists() else [] for rank, path in stats.items()}
    assert not decoded[0] and decoded[1]  # only rank 1 computed anything
    samples = {run: {row["doc_id"]: row["resps"] for row in json_lines(next((tmp_path / run).rglob("samples_*.jsonl")))}
               for run in ("first", "resumed")}
    assert samples["resumed"] == samples["first"] and len(samples["first"]) == LIMIT


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
