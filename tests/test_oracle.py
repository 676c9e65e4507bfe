"""Exact models (oracle-sudoku, oracle-hmm): their conditionals and diagnostics against brute-force
enumeration, the many-solution sudoku variant, and oracle-sudoku through the stock CLI."""

import itertools
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.oracles import load_oracle
from lm_eval_infogain.tasks import sudoku


@pytest.fixture(scope="module")
def sudoku_oracle():
    return load_oracle("oracle-sudoku", "cpu", 0.0)


def sudoku_prompt(tokenizer, puzzle: str) -> list[int]:
    return tokenizer(sudoku.doc_to_text({"Puzzle": puzzle}), add_special_tokens=False)["input_ids"]


def answer_canvas(adapter, tokenizer, puzzle: str, answer: str) -> tuple[torch.Tensor, int]:
    """(canvas [1, T]: the prompt, then the answer template with `answer`'s digits, '0' = masked; prompt length)."""
    prompt = sudoku_prompt(tokenizer, puzzle)
    template = tokenizer(sudoku.doc_to_target({"Solution": answer.replace("0", "1")}),
                         add_special_tokens=False)["input_ids"]
    digits = iter(answer)
    digit_ids = set(tokenizer("1234", add_special_tokens=False)["input_ids"])
    ids = [adapter.spec.mask_id if token in digit_ids and next(digits) == "0" else token for token in template]
    return torch.tensor([prompt + ids + [adapter.spec.mask_id] * 2]), len(prompt)


def completions(cells: list[int]) -> list[list[int]]:
    """Every valid grid that keeps the non-zero cells, by backtracking (independent of the oracle's table)."""
    if 0 not in cells:
        return [list(cells)]
    cell = cells.index(0)
    found = []
    for digit in sudoku.allowed_digits(cells, cell):
        cells[cell] = digit
        found += completions(cells)
        cells[cell] = 0
    return found


@pytest.mark.parametrize("puzzle, answer", [
    ("0001000000000000", "0000000000000000"),  # one given: 72 completions
    ("0001000000000000", "2000000000000000"),  # and a visible answer digit
    ("1000000000000000", "0100000000000000"),  # a visible digit that contradicts a given (same row)
])
def test_sudoku_marginals_are_the_share_of_consistent_grids(sudoku_oracle, puzzle, answer):
    adapter, tokenizer = sudoku_oracle
    canvas, prompt_length = answer_canvas(adapter, tokenizer, puzzle, answer)
    log_probs = adapter.forward(canvas, None, torch.ones_like(canvas, dtype=torch.bool), None, 0, prompt_length)
    digit_ids = tokenizer("1234", add_special_tokens=False)["input_ids"]
    cells = [max(int(a), int(b)) for a, b in zip(puzzle, answer)]
    consistent = all(a == "0" or b == "0" for a, b in zip(puzzle, answer)) and completions(list(cells))
    grids = completions(list(cells)) if consistent else []
    for cell in (c for c in range(16) if answer[c] == "0"):
        expected = [sum(grid[cell] == d for grid in grids) / len(grids) for d in range(1, 5)] if grids \
            else [0.25] * 4  # no consistent grid: uniform over 1-4 (the documented output)
        got = log_probs[0, 3 + cell].exp()
        assert got[digit_ids].tolist() == pytest.approx(expected, abs=1e-6)
        assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)
    answer_tokens = tokenizer("<answer>", add_special_tokens=False)["input_ids"]
    assert log_probs[0, :3].argmax(-1).tolist() == answer_tokens and float(log_probs[0, :3].max(-1).values.sum()) == 0
    assert log_probs[0, -2:].argmax(-1).tolist() == [tokenizer.eos_token_id] * 2  # EOS after </answer>


def test_many_solution_puzzles_each_have_two_or_more_solutions_and_keep_their_solution():
    data = sudoku.load_many_solution_dataset(sudoku_num_puzzles=40)
    for row in data["test"]:
        assert row["Puzzle"].count("0") == sudoku.DEFAULT_MANY_SOLUTION_BLANKS
        assert sudoku.count_solutions([int(c) for c in row["Puzzle"]], limit=2) == 2
        assert sudoku.score_answer(row["Puzzle"], f"<answer>{row['Solution']}")
    assert not {row["Puzzle"] for row in data["test"]} & {row["Puzzle"] for row in data["train"]}


@pytest.mark.parametrize("metadata, message", [
    ({"sudoku_num_blanks": 7}, "sudoku_num_blanks=7 is invalid; allowed: an integer in 8..16"),
    ({"sudoku_num_puzzles": 10_000}, "sudoku_num_puzzles=10000 is invalid; allowed: an integer in 1..9950"),
])
def test_bad_many_solution_metadata_is_one_line(metadata, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        sudoku.load_many_solution_dataset(**metadata)


@pytest.mark.parametrize("args, message", [
    ("pretrained=oracle-sudoku,compile=true", "compile=True is invalid; allowed: false for this model"),
    ("pretrained=oracle-sudoku,oracle_noise=-1", "oracle_noise=-1 is invalid; allowed: a number in 0..100"),
    ("pretrained=oracle-hmm,oracle_noise=nan", "oracle_noise=nan is invalid"),
    ("pretrained=tiny-random-llada,oracle_noise=0.5", "oracle_noise=0.5 is invalid; allowed: unset except for"),
    ("pretrained=oracle-sudoku,peft=adapter", "peft='adapter' is invalid; allowed: unset for the exact model"),
])
def test_bad_exact_model_args_are_one_line(args, message):
    with pytest.raises(UsageError) as error:
        MDMInfoGainLM.create_from_arg_string(args + ",device=cpu")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_two_digits_per_step_can_contradict_and_a_lookahead_sees_it_coming():
    """One given, 2 tokens per step, greedy: confidence order commits tied digits together and contradicts
    itself; Info-Gain's lookahead sees the uniform output of a contradiction and avoids it."""
    sampler = InfoGainSampler.from_pretrained("oracle-sudoku", device="cpu")  # 24 tokens in one block
    adapter, tokenizer = sampler.model, sampler.tokenizer
    prompt = sudoku_prompt(tokenizer, "0001000000000000")
    answers = {}
    for mode in ("original", "info_gain"):
        out = sampler.sample(prompt, mode=mode, steps=12, trace=True)
        stats = adapter.exact_diagnostics([prompt], [out.ids[0]], [dict(out.stats[0])])[0]
        answers[mode] = (sudoku.score_answer("0001000000000000", out.text[0]), stats)
    assert answers["original"][0] is False and answers["original"][1]["exact_contradictions"] == 1
    assert answers["original"][1]["exact_log_prob"] is None
    solved, stats = answers["info_gain"]
    assert solved and stats["exact_contradictions"] == 0
    assert stats["exact_log_prob"] == pytest.approx(-math.log(len(completions(sudoku_cells("0001000000000000")))))
    assert stats["exact_map_gap"] == 0 and stats["exact_joint_kl"] > 0  # committed pairs were dependent


def exact_sampler(name: str, noise: float, **settings) -> InfoGainSampler:
    """The exact model `name` with oracle_noise `noise`, its own sampler defaults overridden by `settings`."""
    defaults = InfoGainSampler.from_pretrained(name, device="cpu").defaults | settings
    return InfoGainSampler(*load_oracle(name, "cpu", noise), **defaults)


def oracle_prompts(sampler, name: str, count: int) -> list[list[int]]:
    """The first `count` documents' prompts of the exact model's task, the first one made longer (two lengths)."""
    from lm_eval_infogain.tasks import oracle_hmm

    if name == "oracle-sudoku":
        texts = [sudoku.doc_to_text(doc) for doc in sudoku.load_many_solution_dataset(sudoku_num_puzzles=count)["test"]]
        texts[0] = "Solve.\n" + texts[0]
    else:
        texts = [oracle_hmm.doc_to_text(doc) for doc in oracle_hmm.load_dataset(oracle_hmm_num_docs=count)["test"]]
        texts[0] = "Go. " + texts[0]
    return [sampler.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.mark.parametrize("name, block_length, steps", [("oracle-sudoku", 8, 12), ("oracle-hmm", 4, 4)])
def test_a_cached_exact_model_decodes_what_the_uncached_one_does(name, block_length, steps):
    """The token cache (oracle.py) makes the caches exact (a batch of prompts of two lengths, noise on the
    logits): every sampler decodes under prefix, token for token, what it decodes without a cache; so do the
    samplers without a lookahead under dual. A lookahead under dual scores the block alone, whose argmax is
    that of lookahead_window=block under prefix (the entropies after the block are the same for every
    candidate in both: README), which an exact model shows token for token."""
    sampler = exact_sampler(name, 0.5, block_length=block_length)
    prompts = oracle_prompts(sampler, name, 12)
    decode = lambda **settings: sampler.sample(prompts, steps=steps, seed=list(range(len(prompts))), **settings).ids  # noqa: E731
    for mode in ("original", "entropy", "fast_dllm", "info_gain", "lookum"):
        variant = {"mode": "info_gain", "variant": "lookum"} if mode == "lookum" else {"mode": mode}
        assert decode(use_cache="prefix", **variant) == decode(use_cache="none", **variant), mode
        lookahead = mode in ("info_gain", "lookum")
        expected = decode(use_cache="prefix", lookahead_window="block", **variant) if lookahead else \
            decode(use_cache="none", **variant)
        assert decode(use_cache="dual", **variant) == expected, mode


def test_the_block_lookahead_under_prefix_differs_from_rest_on_an_exact_model():
    """Under prefix a candidate's entropies after the block are the step's own: on sudoku grids, where a digit
    in one block fixes cells in the next, some decodes must change (the measured effect: README)."""
    sampler = exact_sampler("oracle-sudoku", 1.0, block_length=8)
    prompts = oracle_prompts(sampler, "oracle-sudoku", 60)
    decode = lambda window: sampler.sample(prompts, mode="info_gain", use_cache="prefix", steps=12,  # noqa: E731
                                           lookahead_window=window, seed=list(range(len(prompts)))).ids
    assert decode("block") != decode("rest")


def sudoku_cells(puzzle: str) -> list[int]:
    return [int(c) for c in puzzle]


# ---------------------------------------------------------------- the stock CLI


@pytest.fixture(scope="module")
def sudoku_cli_run(tmp_path_factory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("oracle_cli")
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain",
               "--model_args", "pretrained=oracle-sudoku,mode=original", "--tasks", "sudoku_4x4,sudoku_4x4_many",
               "--limit", "50", "--batch_size", "50", "--output_path", str(output), "--log_samples"]
    result = subprocess.run(command, cwd=output, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return output, result.stdout


@pytest.mark.parametrize("task", ["sudoku_4x4", "sudoku_4x4_many"])
def test_exact_sudoku_marginals_one_token_per_step_solve_every_puzzle_through_the_cli(sudoku_cli_run, task):
    output, stdout = sudoku_cli_run
    assert re.search(rf"\|{task}\s*\|.*\|acc\s*\|↑\s*\|\s*1\|", stdout), stdout
    results = json.loads(next(output.rglob("results_*.json")).read_text())
    assert results["results"][task]["acc,none"] == 1.0
    samples = [json.loads(line) for line in next(output.rglob(f"samples_{task}_2*.jsonl")).read_text().splitlines()]
    stats = {row["doc_id"]: row for row in results["config"]["decode_stats_per_request"] if row["task"] == task}
    assert len(samples) == len(stats) == 50
    for sample in samples:
        row = stats[sample["doc_id"]]
        solutions = len(completions(sudoku_cells(sample["doc"]["Puzzle"])))
        assert (solutions == 1) == (task == "sudoku_4x4")
        assert row["exact_log_prob"] == pytest.approx(-math.log(solutions))
        assert (row["exact_map_gap"], row["exact_contradictions"], row["exact_joint_kl"]) == (0, 0, 0)


# ---------------------------------------------------------------- oracle-hmm against brute-force enumeration


def brute_force_joint(digits: list[int]) -> float:
    """p(every visible digit) of a chain (0 = masked), summing over every hidden path and masked value."""
    from lm_eval_infogain.models.oracle_hmm import EMISSION, STATES, TRANSITION

    total = 0.0
    for path in itertools.product(range(STATES), repeat=len(digits)):
        weight = 1 / STATES
        for position, (state, digit) in enumerate(zip(path, digits)):
            if position:
                weight *= TRANSITION[path[position - 1]][state]
            weight *= 1.0 if digit == 0 else EMISSION[state][digit - 1]
        total += weight
    return total


def hmm_canvas(tokenizer, mask_id, chain: list[int]) -> torch.Tensor:
    prompt = tokenizer("Continue:\n", add_special_tokens=False)["input_ids"]
    digit_ids = tokenizer("1234", add_special_tokens=False)["input_ids"]
    return torch.tensor([prompt + [mask_id if d == 0 else digit_ids[d - 1] for d in chain]])


@pytest.mark.parametrize("chain", [[2, 0, 4, 0, 0], [0, 0, 0], [1, 1, 0, 3, 0, 2]])
def test_hmm_marginals_equal_brute_force_enumeration(chain):
    adapter, tokenizer = load_oracle("oracle-hmm", "cpu", 0.0)
    canvas = hmm_canvas(tokenizer, adapter.spec.mask_id, chain)
    start = canvas.shape[1] - len(chain)
    log_probs = adapter.forward(canvas, None, torch.ones_like(canvas, dtype=torch.bool), None, 0, start)
    digit_ids = tokenizer("1234", add_special_tokens=False)["input_ids"]
    evidence = brute_force_joint(chain)
    for position in (p for p, d in enumerate(chain) if d == 0):
        expected = [brute_force_joint(chain[:position] + [d] + chain[position + 1:]) / evidence for d in range(1, 5)]
        assert log_probs[0, position, digit_ids].exp().tolist() == pytest.approx(expected, rel=1e-5)
    assert float(adapter.model.log_evidence(canvas)) == pytest.approx(math.log(evidence), rel=1e-9)


def test_hmm_continuation_table_and_task_scores_equal_enumeration():
    from lm_eval_infogain.models.oracle_hmm import continuation_log_probs, sequence_log_prob

    prefix = [3, 1]
    table = continuation_log_probs([prefix], 3)[0]
    for index, continuation in enumerate(itertools.product(range(1, 5), repeat=3)):
        expected = math.log(brute_force_joint(prefix + list(continuation)) / brute_force_joint(prefix))
        assert float(table[index]) == pytest.approx(expected, rel=1e-9)
        assert sequence_log_prob(prefix, list(continuation)) == pytest.approx(expected, rel=1e-9)


def test_hmm_diagnostics_equal_enumeration():
    """Two tokens per step on a 4-digit continuation: the output's log-probability, its gap to the MAP and
    each step's KL(joint || product of marginals) by enumeration over every continuation."""
    sampler = InfoGainSampler.from_pretrained("oracle-hmm", device="cpu")
    prompt = sampler.tokenizer("Continue:\n21", add_special_tokens=False)["input_ids"]
    out = sampler.sample(prompt, mode="original", max_new_tokens=4, steps=2, block_size=4, trace=True)
    stats = sampler.model.exact_diagnostics([prompt], [out.ids[0]], [dict(out.stats[0])])[0]
    generated, steps = [int(c) for c in out.text[0]], out.stats[0]["commit_step"]
    prefix = [2, 1]
    joint = {c: brute_force_joint(prefix + list(c)) / brute_force_joint(prefix)
             for c in itertools.product(range(1, 5), repeat=4)}
    assert stats["exact_log_prob"] == pytest.approx(math.log(joint[tuple(generated)]), rel=1e-9)
    assert stats["exact_map_gap"] == pytest.approx(math.log(max(joint.values()) / joint[tuple(generated)]), abs=1e-9)
    kl = 0.0
    for step in range(max(steps) + 1):
        fixed = {p: generated[p] for p in range(4) if steps[p] < step}
        committed = [p for p in range(4) if steps[p] == step]
        given = {c: w for c, w in joint.items() if all(c[p] == v for p, v in fixed.items())}
        pairs = {}
        for c, w in given.items():
            pairs[tuple(c[p] for p in committed)] = pairs.get(tuple(c[p] for p in committed), 0) + w
        total = sum(pairs.values())
        marginals = [{v: sum(w for c, w in pairs.items() if c[i] == v) / total for v in range(1, 5)}
                     for i in range(len(committed))]
        kl += sum(w / total * math.log(w / total / math.prod(m[v] for m, v in zip(marginals, c)))
                  for c, w in pairs.items())
    assert stats["exact_joint_kl"] == pytest.approx(kl, rel=1e-6) and kl > 0
    assert stats["exact_contradictions"] == 0


def test_hmm_per_position_best_digits_are_mostly_not_the_best_continuation():
    """What makes the source a test of parallel commits (the claim of models/oracle_hmm.py's docstring)."""
    from lm_eval_infogain.models.oracle_hmm import continuation_log_probs
    from lm_eval_infogain.tasks import oracle_hmm

    docs = oracle_hmm.load_dataset(oracle_hmm_num_docs=20)["test"]
    tables = continuation_log_probs([[int(d) for d in doc["prefix"]] for doc in docs], 8).exp().view(20, *(4,) * 8)
    differ = 0
    for doc, table in zip(docs, tables):
        per_position = "".join(str(int(table.sum(dim=tuple(j for j in range(8) if j != i)).argmax()) + 1)
                               for i in range(8))
        differ += per_position != doc["best"]
    assert differ > 10


def test_oracle_hmm_task_scores_equal_the_decode_diagnostics_through_the_cli(tmp_path):
    """The task's scores (forward algorithm on the answer text) and the oracle's replay diagnostics (on the
    generated ids) are two computations of the same exact log-probability."""
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
               "pretrained=oracle-hmm,mode=info_gain,steps=4,oracle_noise=1", "--tasks", "oracle_hmm",
               "--limit", "8", "--batch_size", "8", "--output_path", str(tmp_path), "--log_samples"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    stats = {row["doc_id"]: row for row in results["config"]["decode_stats_per_request"]}
    samples = [json.loads(line) for line in next(tmp_path.rglob("samples_oracle_hmm_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 8 and all(sample["valid"] == 1 for sample in samples)
    for sample in samples:
        assert sample["log_prob"] == pytest.approx(stats[sample["doc_id"]]["exact_log_prob"], abs=1e-6)
        assert sample["map_gap"] == pytest.approx(stats[sample["doc_id"]]["exact_map_gap"], abs=1e-6)
    assert any(sample["map_gap"] > 0 for sample in samples)  # noise and 2 tokens per step cost something



def test_loading_an_exact_model_prints_no_warning():
    """The oracles' tokenizer is read without the model config beside it (transformers would warn that it
    does not know the model type when the project's registry has not registered it)."""
    code = "from lm_eval_infogain.models.oracles import load_oracle; load_oracle('oracle-hmm', 'cpu', 0.0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""


# ---------------------------------------------------------------- the grid's fast paths against the plain ones


@pytest.mark.parametrize("name, mode, steps, noise", [("oracle-sudoku", "original", 12, 0.0),
                                                      ("oracle-hmm", "info_gain", 4, 1.0)])
def test_a_batch_of_diagnostics_equals_one_document_at_a_time(name, mode, steps, noise):
    """exact_diagnostics replays a batch in a few batched calls of the distribution: each row must be what
    the same replay of its document alone gives (prompts of two lengths: two groups)."""
    sampler = exact_sampler(name, noise)
    prompts = oracle_prompts(sampler, name, 6)
    assert len({len(prompt) for prompt in prompts}) == 2
    out = sampler.sample(prompts, mode=mode, steps=steps, trace=True, seed=list(range(len(prompts))))
    batched = sampler.model.exact_diagnostics(prompts, out.ids, [dict(row) for row in out.stats])
    alone = [sampler.model.exact_diagnostics([prompt], [ids], [dict(row)])[0]
             for prompt, ids, row in zip(prompts, out.ids, out.stats)]
    assert batched == alone
    assert all("commit_step" not in row and "exact_joint_kl" in row for row in batched)
    assert any(row["exact_joint_kl"] > 0 for row in batched)  # steps with joint terms were replayed


def test_the_grid_process_writes_what_the_stock_cli_writes(tmp_path):
    """python -m lm_eval_infogain.oracle_grid runs stock lm_eval arguments in one process: its results and
    samples files hold what `lm_eval` with the same arguments writes (times, dates and the addresses of
    functions aside), for a cell that comes second in the process (after the task index and environment
    report were made for the first)."""
    first = ("--model mdm_infogain --model_args pretrained=oracle-hmm,mode=original,steps=4 --tasks oracle_hmm "
             "--limit 4 --batch_size 4 --output_path first --log_samples")
    cell = ("--model mdm_infogain --model_args pretrained=oracle-sudoku,mode=info_gain,steps=12,oracle_noise=0.5 "
            "--tasks sudoku_4x4_many --limit 6 --batch_size 4 --output_path {} --log_samples")
    grid = subprocess.run([sys.executable, "-m", "lm_eval_infogain.oracle_grid"], cwd=tmp_path, text=True,
                          input=f"{first}\n{cell.format('grid')}\n", capture_output=True, timeout=600)
    assert grid.returncode == 0, grid.stderr[-3000:]
    stock = subprocess.run([sys.executable, "-m", "lm_eval", *cell.format("stock").split()], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert stock.returncode == 0, stock.stderr[-3000:]
    assert run_files(tmp_path / "grid") == run_files(tmp_path / "stock")


def run_files(folder: Path) -> dict:
    """What a run's results and samples files hold, less what differs between two runs of one command."""
    results = json.loads(next(folder.rglob("results_*.json")).read_text())
    for key in ("date", "total_evaluation_time_seconds"):
        results.pop(key)
    config = results["config"]
    for row in [*config["decode_stats_per_request"], *config["decode_stats_mean"].values()]:
        row.pop("seconds")
    results = json.loads(re.sub(r" at 0x[0-9a-f]+", "", json.dumps(results)))  # '<function f at 0x7f...>'
    samples = [json.loads(line) for path in sorted(folder.rglob("samples_*.jsonl"))
               for line in path.read_text().splitlines()]
    assert results["results"] and len(samples) == 6
    return {"results": results, "samples": samples}
