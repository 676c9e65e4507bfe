"""Resuming with lm-eval's request cache (--use_cache): a killed run keeps its finished requests, a
rerun of the same command computes only the rest, and a cache made with other settings is refused."""

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lm_eval
import pytest
from lm_eval.api.model import CachingLM
from lm_eval.tasks import TaskManager
from sqlitedict import SqliteDict

from lm_eval_infogain.harness import HARNESS_KEYS, SAMPLER_KEYS, MDMInfoGainLM
from lm_eval_infogain.run_records import OUTPUT_NEUTRAL_KEYS
from lm_eval_infogain.lm_eval_hook import task_configs_dir
from lm_eval_infogain.request_cache import SETTINGS_KEY, STATS_PREFIX, flatten

TASK, LIMIT = "sudoku_4x4", 4
# Small enough that the run is mostly start-up, yet each request takes a forward pass per step, so the
# run is still going when the first answer is committed. (Greedy, as the task asks: lm-eval's cache
# never reuses the answer of a request with do_sample=true.)
MODEL_ARGS = "pretrained=tiny-random-llada,gen_length=8,steps=4,block_length=8,mode=info_gain"


ONE_THREAD = os.environ | {"OMP_NUM_THREADS": "1"}  # as this process (conftest), so float sums agree


def command(model_args: str, cache: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", model_args,
            "--tasks", TASK, "--limit", str(LIMIT), "--use_cache", str(cache),
            "--output_path", str(output), "--log_samples"]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def samples(output: Path) -> dict[int, list]:
    rows = [json.loads(line) for line in next(output.rglob(f"samples_{TASK}_*.jsonl")).read_text().splitlines()]
    return {row["doc_id"]: row["resps"] for row in rows}


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def uninterrupted_run() -> tuple[dict[int, list], list[dict]]:
    """(samples, decode stats per request) of the same evaluation in this process, without a cache (the
    CLI's default seeds); only the project's tasks are indexed, which saves indexing lm-eval's thousands."""
    tasks = TaskManager(include_path=task_configs_dir(), include_defaults=False)
    results = lm_eval.simple_evaluate(model="mdm_infogain", model_args=MODEL_ARGS + ",device=cpu", tasks=[TASK],
                                      limit=LIMIT, log_samples=True, task_manager=tasks)
    return ({row["doc_id"]: row["resps"] for row in results["samples"][TASK]},
            without_seconds(results["config"]["decode_stats_per_request"]))


def cached_answers(db: Path) -> int:
    if not db.exists():
        return 0
    with SqliteDict(str(db), flag="r") as cache:
        return sum(1 for key in cache.keys() if key != SETTINGS_KEY and not key.startswith(STATS_PREFIX))


def wait_for(condition, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_killed_run_resumes_without_recomputing_and_matches_an_uninterrupted_run(tmp_path):
    stats = tmp_path / "stats.jsonl"
    cache, db = tmp_path / "cache" / "run", tmp_path / "cache" / "run_rank0.db"
    resumed = command(MODEL_ARGS + f",decode_stats={stats}", cache, tmp_path / "resumed")

    log = tmp_path / "killed.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(resumed, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=ONE_THREAD, start_new_session=True)
    # A request's stats line is written just before its answer is committed: wait for the line (cheap to
    # poll), then for the commit, and kill at once; the other requests are still to come.
    wait_for(lambda: lines(stats) >= 1, process)
    wait_for(lambda: cached_answers(db) >= 1, process)
    assert process.poll() is None, f"the run ended before it could be killed: {log.read_text()[-3000:]}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_before = cached_answers(db)
    assert 0 < done_before < LIMIT
    stats_before = lines(stats)

    rerun = subprocess.run(resumed, cwd=tmp_path, env=ONE_THREAD, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert lines(stats) - stats_before == LIMIT - done_before  # only the missing requests ran
    assert cached_answers(db) == LIMIT

    resumed_samples = samples(tmp_path / "resumed")
    expected_samples, expected_stats = uninterrupted_run()
    assert len(resumed_samples) == LIMIT and resumed_samples == expected_samples
    # the requests answered from the cache keep the decode stats stored with their answers
    config = json.loads(next((tmp_path / "resumed").rglob("results_*.json")).read_text())["config"]
    assert without_seconds(config["decode_stats_per_request"]) == expected_stats
    assert config["decode_stats_mean"][TASK]["requests"] == LIMIT


FAST = "pretrained=tiny-random-llada,gen_length=32,steps=16,block_length=16,device=cpu"


def caching_lm(model_args: str, db: Path) -> CachingLM:
    return CachingLM(MDMInfoGainLM.create_from_arg_string(FAST + "," + model_args), str(db))


@pytest.mark.parametrize("changed", ["mode=original", "seed=2", "use_cache=dual", "temperature=0.5", "dtype=bfloat16",
                                     "eos_penalty=1", "pad_penalty=1", "early_stop=False", "mc_num=64",
                                     "mc_batch_size=8", "candidate_number=4"])
def test_a_cache_made_with_other_settings_is_refused(tmp_path, changed):
    db = tmp_path / "cache.db"
    caching_lm("seed=1", db).dbdict.close()
    # the same settings reopen it, whatever the batch size and stats file
    caching_lm(f"seed=1,batch_size=3,decode_stats={tmp_path / 'stats.jsonl'}", db).dbdict.close()
    with pytest.raises(ValueError, match=f"^--use_cache file {db} holds answers made with other settings") as error:
        caching_lm(f"seed=1,{changed}", db)
    assert changed.split("=")[0] in str(error.value) and "\n" not in str(error.value)
    if changed == "mode=original":
        assert "(sampler.mode: 'info_gain' -> 'original')" in str(error.value)


def test_a_cache_filled_by_something_else_is_refused(tmp_path):
    db = tmp_path / "cache.db"
    with SqliteDict(str(db), autocommit=True) as cache:
        cache["0" * 64] = "an answer of another model"
    with pytest.raises(ValueError, match="did not record its settings"):
        caching_lm("seed=1", db)


def test_every_output_changing_model_arg_is_in_the_recorded_settings():
    """A model_arg added later is recorded unless it is declared output-neutral: the recorded settings
    come from the lists of keys that the constructor accepts."""
    lm = MDMInfoGainLM.create_from_arg_string(FAST)
    parameters = set(inspect.signature(MDMInfoGainLM.__init__).parameters) - {"self", "sampler_args"}
    assert parameters == set(HARNESS_KEYS)  # every harness key is one the settings are taken from
    recorded = flatten(json.loads(json.dumps(lm.output_settings())))
    # a user strategy's options are recorded one by one, sampler.strategy_options.<name> (test_plugin_cli.py)
    for key in set(HARNESS_KEYS + SAMPLER_KEYS) - set(OUTPUT_NEUTRAL_KEYS) - {"strategy_options"}:
        assert key in recorded or f"sampler.{key}" in recorded, key
    assert not set(OUTPUT_NEUTRAL_KEYS) & set(recorded)
