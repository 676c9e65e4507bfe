"""python -m lm_eval_infogain.leaderboard over real lm-eval output of the bundled tiny model."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from lm_eval.utils import simple_parse_args_string

from lm_eval_infogain.leaderboard.board import build
from lm_eval_infogain.leaderboard.cli import main
from lm_eval_infogain.leaderboard.files import LeaderboardError
from lm_eval_infogain.leaderboard.pairing import compare
from lm_eval_infogain.leaderboard.statistics import paired_statistics

FAST_ARGS = "pretrained=tiny-random-llada,gen_length=32,steps=16,block_length=16"
SAMPLERS = {"original": "original/prefix", "info_gain": "info_gain/prefix"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One lm-eval run (mode=original, 2 sudoku puzzles) and a copy of it relabelled as an info_gain run with
    other numbers (a second real run would double the time), and the leaderboard of both."""
    root = tmp_path_factory.mktemp("runs")
    out = root / "tiny-random-llada" / "sudoku_4x4" / "original"
    out.mkdir(parents=True)
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
               f"{FAST_ARGS},mode=original,decode_stats={out / 'decode_stats.jsonl'}", "--tasks", "sudoku_4x4",
               "--limit", "2", "--output_path", str(out), "--log_samples"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    relabel(out, out.parent / "info_gain")
    board_dir = root.parent / f"{root.name}-board"
    result = subprocess.run([sys.executable, "-m", "lm_eval_infogain.leaderboard", str(root), "-o", str(board_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, board_dir, json.loads((board_dir / "leaderboard.json").read_text())


RELABELLED_ACC = {0: 1, 1: 0}  # the relabelled run's per-document acc (mean 0.5)


def relabel(run: Path, copy: Path) -> None:
    """A copy of `run` that reads as a mode=info_gain run with acc 0.5 (doc 0 right, doc 1 wrong) and twice
    the NFE of each request."""
    shutil.copytree(run, copy)
    results_path = next(copy.rglob("results_*.json"))
    results = json.loads(results_path.read_text())
    results["config"]["model_args"] |= {"mode": "info_gain", "decode_stats": str(copy / "decode_stats.jsonl")}
    results["config"]["sampler"]["mode"] = "info_gain"
    results["results"]["sudoku_4x4"] |= {"acc,none": 0.5, "acc_stderr,none": 0.5}
    results_path.write_text(json.dumps(results))
    samples_path = next(copy.rglob("samples_sudoku_4x4_*.jsonl"))
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    samples_path.write_text("".join(json.dumps(sample | {"acc": RELABELLED_ACC[sample["doc_id"]]}) + "\n"
                                    for sample in samples))
    requests = [json.loads(line) for line in (copy / "decode_stats.jsonl").read_text().splitlines()]
    (copy / "decode_stats.jsonl").write_text("".join(json.dumps(row | {"nfe": 2 * row["nfe"]}) + "\n"
                                                     for row in requests))


def stats_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_carry_the_results_and_decode_stats(runs):
    root, _, board = runs
    assert board["reference_rows"] == []
    assert {row["sampler"] for row in board["rows"]} == set(SAMPLERS.values())
    for mode, label in SAMPLERS.items():
        (row,) = [row for row in board["rows"] if row["sampler"] == label]
        results_path = next((root / "tiny-random-llada" / "sudoku_4x4" / mode).rglob("results_*.json"))
        results = json.loads(results_path.read_text())
        task = results["results"]["sudoku_4x4"]
        assert (row["model"], row["task"], row["metric"], row["filter"]) == ("tiny-random-llada", "sudoku_4x4", "acc",
                                                                             "none")
        assert row["value"] == task["acc,none"] and row["stderr"] == task["acc_stderr,none"]
        assert row["n"] == results["n-samples"]["sudoku_4x4"]["effective"] == 2
        requests = stats_lines(results_path.parent.parent / "decode_stats.jsonl")
        assert row["decode_stats_requests"] == len(requests) == 2
        assert row["mean_nfe"] == pytest.approx(sum(r["nfe"] for r in requests) / 2)
        assert row["mean_cumulative_entropy"] == pytest.approx(sum(r["cumulative_entropy"] for r in requests) / 2)
        assert row["decode_stats_source"].startswith("model_args")
        assert row["lm_eval_version"] == results["lm_eval_version"] == "0.4.13"
        assert row["sampler_config"] == results["config"]["sampler"] and row["machine"]
        assert row["results_file"] == results_path.relative_to(root).as_posix()


def test_command_reproduces_the_run(runs):
    root, _, board = runs
    for row in board["rows"]:
        results = json.loads((root / row["results_file"]).read_text())
        words = shlex.split(row["command"])
        assert words[:3] == ["lm_eval", "--model", "mdm_infogain"]
        option = dict(zip(words, words[1:])).get
        assert simple_parse_args_string(option("--model_args")) == results["config"]["model_args"]
        assert (option("--tasks"), option("--limit"), option("--num_fewshot")) == ("sudoku_4x4", "2", "0")
        assert "--log_samples" in words and "--apply_chat_template" not in words
        assert "--metadata" not in words  # the recorded metadata holds only model_args and lm-eval's own keys


def test_command_gives_back_the_metadata_a_task_variant_was_run_with(runs, tmp_path):
    root, _, _ = runs
    results_path = next((root / "tiny-random-llada" / "sudoku_4x4" / "original").rglob("results_*.json"))
    results = json.loads(results_path.read_text())
    results["configs"]["sudoku_4x4"]["metadata"] |= {"sudoku_num_blanks": 6}
    copy = tmp_path / "run" / results_path.parent.name / results_path.name
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(results))
    (row,) = build([tmp_path / "run"], [])["rows"]
    words = shlex.split(row["command"])
    assert json.loads(dict(zip(words, words[1:]))["--metadata"]) == {"sudoku_num_blanks": 6}


def test_readme_chart_and_deterministic_output(runs, tmp_path):
    root, board_dir, board = runs
    readme = (board_dir / "README.md").read_text()
    for row in board["rows"]:
        assert f"| tiny-random-llada | sudoku_4x4 | {row['label']} | acc |" in readme
        assert row["command"] in readme
    assert (board_dir / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = [(row["model"], row["task"], row["sampler"], row["metric"]) for row in board["rows"]]
    assert keys == sorted(keys)
    main([str(root), "-o", str(tmp_path)])  # same input, same bytes
    for name in ("leaderboard.json", "README.md"):
        assert (tmp_path / name).read_bytes() == (board_dir / name).read_bytes()


def test_readme_says_whether_info_gain_is_above_original_document_by_document(runs):
    root, board_dir, board = runs
    results_path = next((root / "tiny-random-llada" / "sudoku_4x4" / "original").rglob("results_*.json"))
    original_value = json.loads(results_path.read_text())["results"]["sudoku_4x4"]["acc,none"]
    samples_path = next((root / "tiny-random-llada" / "sudoku_4x4" / "original").rglob("samples_*.jsonl"))
    original_acc = {sample["doc_id"]: sample["acc"] for sample in map(json.loads, samples_path.read_text().splitlines())}
    (item,) = board["comparisons"]
    expected = "above" if 0.5 > original_value else "below" if 0.5 < original_value else "equal"
    assert (item["task"], item["metric"], item["use_cache"], item["verdict"]) == ("sudoku_4x4", "acc", "prefix",
                                                                                expected)
    assert (item["challenger"], item["baseline"], item["paired"], item["n"]) == ("info_gain", "original", True, 2)
    assert item["difference"] == pytest.approx(0.5 - original_value)
    wins = sum(RELABELLED_ACC[doc] > original_acc[doc] for doc in original_acc)
    losses = sum(RELABELLED_ACC[doc] < original_acc[doc] for doc in original_acc)
    assert (item["challenger_only"], item["baseline_only"]) == (wins, losses)
    readme = (board_dir / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("- tiny-random-llada / sudoku_4x4, acc"))
    assert f"info_gain 0.5 is **{expected}** original" in line
    assert f"on the same 2 documents (digest {item['documents']}; paired stderr" in line
    assert "exact McNemar p = " in line


def test_mcnemar_counts_the_discordant_documents_only():
    """10 documents: the challenger alone right on 6, the baseline alone on 1, both right on 3. Exact McNemar:
    a two-sided binomial test of 6 successes in 7 at p = 1/2: (1 + 7 + 7 + 1) / 2^7 = 0.125."""
    challenger = numpy.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=float)
    baseline = numpy.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    result = paired_statistics(challenger, baseline, list(range(10)))
    assert (result["challenger_only"], result["baseline_only"]) == (6, 1)
    assert result["p_value"] == pytest.approx(16 / 128)
    assert result["discordant_doc_ids"] == [0, 1, 2, 3, 4, 5, 6]
    differences = challenger - baseline
    assert result["difference"] == pytest.approx(0.5)
    assert result["difference_stderr"] == pytest.approx(differences.std(ddof=1) / 10 ** 0.5)
    assert result["verdict"] == "above"
    low, high = result["ci95"]  # resampling the 10 documents: the differences' mean 0.5 lies inside
    assert -1 <= low < 0.5 < high <= 1


def test_paired_stderr_is_smaller_than_the_independent_one_for_correlated_runs():
    """Two runs that agree on 95 of 100 documents: the paired stderr sees only the 5 discordant ones."""
    rng = numpy.random.default_rng(1)
    baseline = (rng.random(100) < 0.5).astype(float)
    challenger = baseline.copy()
    challenger[:5] = 1 - challenger[:5]
    paired = paired_statistics(challenger, baseline, list(range(100)))["difference_stderr"]
    independent = (challenger.var(ddof=1) / 100 + baseline.var(ddof=1) / 100) ** 0.5
    assert paired < independent / 3


def test_continuous_metrics_get_a_paired_bootstrap_interval():
    rng = numpy.random.default_rng(2)
    baseline = rng.normal(10, 3, size=200)
    challenger = baseline + 1.0 + rng.normal(0, 0.1, size=200)  # shifted by 1 document by document
    result = paired_statistics(challenger, baseline, list(range(200)))
    assert result["test"] == "paired bootstrap" and result["differing_documents"] == 200
    low, high = result["ci95"]
    assert low < result["difference"] < high and 0.95 < low and high < 1.05
    assert paired_statistics(challenger, baseline, list(range(200))) == result  # fixed seed: same bytes


def test_comparison_pairs_runs_of_one_cache_mode_and_falls_back_to_independent_stderrs():
    def row(sampler, value, stderr=0.05, model="m", date="2026-01-01"):
        return {"model": model, "task": "t", "metric": "acc", "filter": "none", "sampler": sampler, "value": value,
                "stderr": stderr, "mean_cumulative_entropy": 1.0, "date": date, "named_settings": "",
                "documents": None, "results_file": f"{model}/{sampler}/results.json"}

    rows = [row("info_gain/prefix", 0.4), row("original/prefix", 0.5), row("info_gain/none", 0.3, stderr=None),
            row("original/none", 0.3), row("info_gain/dual", 0.9), row("original/prefix", 0.9, model="other")]
    found = {(item["model"], item["use_cache"]): item for item in compare(rows, [None] * len(rows))}
    assert set(found) == {("m", "prefix"), ("m", "none")}  # no original/dual; no info_gain for "other"
    assert (found["m", "prefix"]["verdict"], found["m", "none"]["verdict"]) == ("below", "equal")
    assert found["m", "prefix"]["difference"] == pytest.approx(-0.1) and not found["m", "prefix"]["paired"]
    assert found["m", "prefix"]["difference_stderr"] == pytest.approx(0.05 * 2 ** 0.5)
    assert found["m", "none"]["difference_stderr"] is None


def test_every_pair_of_samplers_is_compared_with_the_baseline_second():
    def row(sampler, value):
        return {"model": "m", "task": "t", "metric": "acc", "filter": "none", "sampler": sampler, "value": value,
                "stderr": 0.1, "mean_cumulative_entropy": 1.0, "date": "2026-01-01", "named_settings": "",
                "documents": "d1", "results_file": f"{sampler}/results.json"}

    rows = [row("entropy/none", 0.3), row("info_gain/none", 0.4), row("original/none", 0.5)]
    documents = [{(0, "h"): 0.0, (1, "g"): 1.0}, {(0, "h"): 1.0, (1, "g"): 0.0}, {(0, "h"): 1.0, (1, "g"): 1.0}]
    pairs = [(item["challenger"], item["baseline"]) for item in compare(rows, documents)]
    assert pairs == [("entropy", "original"), ("info_gain", "original"), ("entropy", "info_gain")]


def edited_copy(run: Path, copy: Path, edit) -> tuple[Path, dict]:
    """A copy of an lm-eval run whose results JSON `edit` changed in place: (results path, results)."""
    shutil.copytree(run, copy)
    results_path = next(copy.rglob("results_*.json"))
    results = json.loads(results_path.read_text())
    edit(results)
    results_path.write_text(json.dumps(results))
    return results_path, results


def test_predict_only_runs_are_left_out(runs, tmp_path):
    root, _, _ = runs
    edited_copy(root / "tiny-random-llada" / "sudoku_4x4" / "original", tmp_path / "run",
                lambda results: results["results"].update(
                    sudoku_4x4={"alias": "sudoku_4x4", "bypass,none": 999, "bypass_stderr,none": "N/A"}))
    assert build([tmp_path / "run"], [])["rows"] == []  # lm-eval's placeholder 999 is no measurement


def test_decode_stats_found_by_name_then_from_config(runs, tmp_path):
    root, _, _ = runs
    run = tmp_path / "run"
    results_path, results = edited_copy(root / "tiny-random-llada" / "sudoku_4x4" / "info_gain", run,
                                        lambda results: results["config"]["model_args"].pop("decode_stats"))
    stats = run / "decode_stats.jsonl"
    stats.rename(run / "decode_stats_sudoku.jsonl")
    lines = (run / "decode_stats_sudoku.jsonl").read_text()
    (run / "decode_stats_sudoku.jsonl").write_text(lines + lines)  # a request logged twice counts once
    (row,) = build([tmp_path], [])["rows"]
    assert row["decode_stats_source"] == "next_to_results: run/decode_stats_sudoku.jsonl"
    assert row["decode_stats_requests"] == 2
    (run / "decode_stats_sudoku.jsonl").unlink()
    (row,) = build([tmp_path], [])["rows"]
    requests = results["config"]["decode_stats_per_request"]
    assert [(request["task"], request["doc_id"]) for request in requests] == [("sudoku_4x4", 0), ("sudoku_4x4", 1)]
    assert row["decode_stats_source"] == "config.decode_stats_per_request"
    assert row["mean_nfe"] == sum(request["nfe"] for request in requests) / 2
    del results["config"]["decode_stats_per_request"]  # a results file written before the list existed
    results_path.write_text(json.dumps(results))
    (row,) = build([tmp_path], [])["rows"]
    means = results["config"]["decode_stats_mean"]["sudoku_4x4"]
    assert row["decode_stats_source"] == "config.decode_stats_mean" and row["mean_nfe"] == means["nfe"]


def test_reference_rows_stay_apart(runs, tmp_path):
    root, _, _ = runs
    reference = tmp_path / "reference" / "paper.json"
    reference.parent.mkdir()
    reference.write_text(json.dumps({"source": "a test table", "rows": [
        {"model": "tiny-random-llada", "task": "sudoku_4x4", "sampler": "info_gain/prefix", "metric": "acc",
         "value": 0.5, "nfe": 16}]}))
    main([str(root), "-o", str(tmp_path)])  # default: <output>/reference/*.json
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert {row["kind"] for row in board["rows"]} == {"measured"}
    assert [(row["kind"], row["value"], row["source"]) for row in board["reference_rows"]] == [
        ("reference", 0.5, "a test table")]
    assert "## Published (reference, not measured here)" in (tmp_path / "README.md").read_text()
    reference.write_text(json.dumps({"rows": []}))
    with pytest.raises(LeaderboardError, match="needs a 'source'"):
        build([root], [reference])


def test_folder_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(SystemExit) as error:
            main([str(folder), "-o", str(tmp_path / "out")])
        message = str(error.value.code)
        assert message.startswith("leaderboard: ") and str(folder) in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_a_one_line_error(runs, tmp_path):
    root, _, _ = runs
    existing = tmp_path / "board.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as error:
        main([str(root), "-o", str(existing)])
    message = str(error.value.code)
    assert message.startswith("leaderboard: -o ") and "is a file; allowed: a folder" in message
    assert existing.read_text() == "{}"


def test_retired_metrics_of_older_runs_are_left_out_and_named(runs, tmp_path):
    """A run scored before acc_last_step_equals_target was replaced by acc_paper_rule."""
    root, _, _ = runs
    run = tmp_path / "run"
    edited_copy(root / "tiny-random-llada" / "sudoku_4x4" / "original", run,
                lambda results: results["results"]["sudoku_4x4"].update({
                    "acc_last_step_equals_target,none": 0.5, "acc_last_step_equals_target_stderr,none": 0.1}))
    main([str(run), "-o", str(tmp_path / "board")])
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert {row["metric"] for row in board["rows"]} == {"acc"}
    assert list(board["retired_metrics"]) == ["acc_last_step_equals_target"]
    readme = (tmp_path / "board" / "README.md").read_text()
    assert "| acc_last_step_equals_target |" not in readme
    assert "Left out, metrics no longer computed: `acc_last_step_equals_target` (" in readme


def test_info_gain_with_parallel_commits_is_a_sampler_of_its_own():
    from lm_eval_infogain.leaderboard import sampler_label

    plain = {"sampler": {"mode": "info_gain", "variant": "info_gain", "use_cache": "none", "parallel_threshold": None}}
    parallel = {"sampler": {**plain["sampler"], "parallel_threshold": 0.9}}
    lookum = {"sampler": {**parallel["sampler"], "variant": "lookum"}}
    assert [sampler_label(config) for config in (plain, parallel, lookum)] == [
        "info_gain/none", "info_gain+parallel0.9/none", "lookum+parallel0.9/none"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """fast_dllm at threshold 0.8 and 0.9 on the same 2 sudoku puzzles, and on countdown's default data and its
    countdown_max_number=9 variant (2 instances each): three lm-eval runs and their leaderboard."""
    root = tmp_path_factory.mktemp("variants")
    for name, threshold, tasks, metadata in (("a", 0.8, "sudoku_4x4,countdown", []),
                                             ("b", 0.9, "sudoku_4x4", []),
                                             ("c", 0.8, "countdown", ["--metadata", '{"countdown_max_number": 9}'])):
        command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
                   f"{FAST_ARGS},mode=fast_dllm,threshold={threshold}", "--tasks", tasks, *metadata, "--limit", "2",
                   "--output_path", str(root / name), "--log_samples"]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    main([str(root), "-o", str(root / "board")])
    return root, json.loads((root / "board" / "leaderboard.json").read_text())


def logged_documents(root: Path, run: str, task: str) -> set:
    (path,) = (root / run).rglob(f"samples_{task}_*.jsonl")
    return {(sample["doc_id"], sample["doc_hash"]) for sample in map(json.loads, path.read_text().splitlines())}


def test_runs_that_differ_get_labels_that_say_how_and_only_same_document_runs_are_paired(variants):
    root, board = variants
    labels = {(row["task"], row["results_file"].split("/")[0]): row["label"] for row in board["rows"]}
    assert labels[("sudoku_4x4", "a")] == "fast_dllm/prefix threshold=0.8"
    assert labels[("sudoku_4x4", "b")] == "fast_dllm/prefix threshold=0.9"
    assert logged_documents(root, "a", "countdown") != logged_documents(root, "c", "countdown")
    default_data, small_numbers = labels[("countdown", "a")], labels[("countdown", "c")]
    assert default_data.startswith("fast_dllm/prefix countdown_max_number=default docs=")
    assert small_numbers.startswith("fast_dllm/prefix countdown_max_number=9 docs=")
    assert default_data.split("docs=")[1] != small_numbers.split("docs=")[1]
    assert len(set(labels.values())) == 4
    readme = (root / "board" / "README.md").read_text()
    assert all(f"| {label} |" in readme for label in labels.values())
    assert logged_documents(root, "a", "sudoku_4x4") == logged_documents(root, "b", "sudoku_4x4")
    (item,) = board["comparisons"]  # countdown's runs scored other documents: not compared
    assert (item["task"], item["challenger"], item["baseline"]) == ("sudoku_4x4", "fast_dllm threshold=0.8",
                                                                   "fast_dllm threshold=0.9")
    assert item["paired"] and item["n"] == 2
    assert board["duplicates"] == []


def test_runs_with_the_same_settings_are_all_rows_and_the_compared_one_is_named(variants, tmp_path):
    root, _ = variants
    shutil.copytree(root / "b", tmp_path / "b")
    (results_path,) = (root / "b").rglob("results_*.json")
    later = tmp_path / "b-again" / results_path.parent.name / results_path.name.replace("results_2", "results_3")
    later.parent.mkdir(parents=True)
    shutil.copy(results_path, later)
    results = json.loads(later.read_text())
    later.write_text(json.dumps(results | {"date": results["date"] + 60}))
    (samples,) = (root / "b").rglob("samples_sudoku_4x4_*.jsonl")
    shutil.copy(samples, later.parent / samples.name.replace("_2", "_3", 1))
    board = build([tmp_path], [])
    assert [row["label"] for row in board["rows"]] == ["fast_dllm/prefix"] * 2  # nothing differs: no setting named
    (duplicate,) = board["duplicates"]
    assert duplicate["results_files"] == [results_path.relative_to(root).as_posix(),
                                          later.relative_to(tmp_path).as_posix()]
    assert duplicate["compared"] == later.relative_to(tmp_path).as_posix()


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("runs, board", [("results/runs", "results"), ("results/runs-parallel", "results/runs-parallel"),
                                         ("results/runs-parallel-500", "results/runs-parallel-500"),
                                         ("results/runs-500", "results/runs-500"),
                                         ("results/runs-plugin", "results/runs-plugin")])
def test_committed_leaderboards_are_what_the_command_writes(runs, board, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the commands in the board name the runs' folders relative to the checkout
    main([runs, "-o", str(tmp_path)])
    for name in ("leaderboard.json", "README.md"):
        assert (tmp_path / name).read_text() == (ROOT / board / name).read_text(), name


def test_tiny_models_quotes_the_parallel_threshold_board():
    """results/tiny-models.md's 500-document table and paired comparisons are what the board of
    results/runs-parallel-500 holds."""
    from lm_eval_infogain.leaderboard.readme import fmt, interval_text

    text = (ROOT / "results" / "tiny-models.md").read_text()
    board = json.loads((ROOT / "results" / "runs-parallel-500" / "leaderboard.json").read_text())
    for row in board["rows"]:
        if row["metric"] == "acc":
            assert f"| {fmt(row['value'])} | {fmt(row['stderr'])} | {fmt(row['mean_nfe'])} |" in text, row["label"]
    against_parallel = [item for item in board["comparisons"]
                        if item["metric"] == "acc" and item["baseline"].startswith("info_gain+parallel0.9")]
    assert len(against_parallel) == 4
    for item in against_parallel:
        quoted = f"stderr {fmt(item['difference_stderr'], 2)}, {interval_text(item)}, p = {fmt(item['p_value'], 2)}"
        assert quoted in " ".join(text.split()), quoted
    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `parallel_threshold`")]
    for item in [item for item in against_parallel if item["model"] == "tiny-llada-sudoku"]:
        assert f"paired stderr {fmt(item['difference_stderr'], 2)}, 95% interval {interval_text(item)}" in line


def test_readme_and_tiny_models_quote_info_gain_against_original_on_500_documents():
    """Info-Gain against confidence order on every test document, as results/runs-500's board holds it."""
    from lm_eval_infogain.leaderboard.readme import fmt, interval_text

    board = json.loads((ROOT / "results" / "runs-500" / "leaderboard.json").read_text())
    pairs = [item for item in board["comparisons"] if (item["challenger"], item["baseline"]) == ("info_gain", "original")]
    assert {(item["task"], item["metric"]) for item in pairs} == {
        ("sudoku_4x4", "acc"), ("countdown", "acc"), ("countdown", "acc_paper_rule")}
    for name in ("README.md", "results/tiny-models.md"):
        text = " ".join((ROOT / name).read_text().split())
        for item in pairs:
            quoted = f"paired stderr {fmt(item['difference_stderr'], 2)}, paired 95% interval {interval_text(item)}"
            assert quoted in text, (name, quoted)
