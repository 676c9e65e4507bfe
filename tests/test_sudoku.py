"""The 4x4 Sudoku task: generator, data splits, user CSV, scorer, and loading through lm-eval's TaskManager."""

import itertools
import re
import time
from pathlib import Path

import numpy as np
import pytest

from lm_eval_infogain.tasks import sudoku

TASK_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs"

PUZZLE = "2000010004101004"
SOLUTION = "2341412334121234"
GRID = "2341\n4123\n3412\n1234"


def cells(grid: str) -> list[int]:
    return [int(digit) for digit in grid]


# ---------------------------------------------------------------- generator


def test_generated_puzzles_have_one_solution_that_keeps_the_givens():
    for row in sudoku.generate_puzzles(100, seed=7):
        puzzle, solution = row["Puzzle"], row["Solution"]
        assert len(puzzle) == 16 and set(puzzle) <= set("01234")
        assert puzzle.count("0") == sudoku.DEFAULT_NUM_BLANKS
        assert sudoku.count_solutions(cells(puzzle)) == 1
        assert sudoku.is_solved_grid(cells(solution))
        assert sudoku.keeps_givens(puzzle, solution)


@pytest.mark.parametrize("num_blanks", [0, 4, 8, 11, 12])
def test_number_of_blanks_is_exact_and_solution_stays_unique(num_blanks):
    for row in sudoku.generate_puzzles(20, seed=3, num_blanks=num_blanks):
        assert row["Puzzle"].count("0") == num_blanks
        assert sudoku.count_solutions(cells(row["Puzzle"])) == 1


def test_too_many_blanks_is_refused():
    with pytest.raises(ValueError, match="num_blanks=13"):
        sudoku.generate_puzzles(1, seed=0, num_blanks=13)


def test_count_solutions_sees_a_second_solution():
    assert sudoku.count_solutions([0] * 16) == 2  # stops counting at the limit
    assert sudoku.count_solutions(cells(SOLUTION)) == 1


def test_generator_is_deterministic_per_seed_and_leaves_global_random_alone():
    import random

    random.seed(99)
    before = random.random()
    random.seed(99)
    first = sudoku.generate_puzzles(30, seed=5)
    assert random.random() == before
    assert sudoku.generate_puzzles(30, seed=5) == first
    assert sudoku.generate_puzzles(30, seed=6) != first


def test_generated_puzzles_are_distinct():
    puzzles = [row["Puzzle"] for row in sudoku.generate_puzzles(500, seed=1234)]
    assert len(set(puzzles)) == 500


# ---------------------------------------------------------------- data set


def test_default_dataset_has_500_test_puzzles_and_a_disjoint_train_split(monkeypatch):
    monkeypatch.delenv(sudoku.CSV_ENV_VAR, raising=False)
    dataset = sudoku.load_dataset()
    assert len(dataset["test"]) == 500
    assert len(dataset["train"]) == sudoku.DEFAULT_NUM_TRAIN
    assert not set(dataset["train"]["Puzzle"]) & set(dataset["test"]["Puzzle"])
    assert sudoku.load_dataset()["test"]["Puzzle"] == dataset["test"]["Puzzle"]


def test_metadata_sets_size_and_seed_and_other_keys_are_ignored(monkeypatch):
    monkeypatch.delenv(sudoku.CSV_ENV_VAR, raising=False)
    # lm-eval passes --model_args and its own keys along with --metadata; `seed` is the backend's.
    dataset = sudoku.load_dataset(sudoku_num_puzzles=12, sudoku_seed=9, seed=1, version=1.0, pretrained="x")
    assert dataset["test"]["Puzzle"] == [row["Puzzle"] for row in sudoku.generate_puzzles(12, seed=9)]


def test_distinct_puzzle_counts_match_an_independent_count_over_all_grids():
    # Every complete grid, from the rows that are permutations of 1-4; a blank set leaves one solution
    # iff no other grid agrees with this one on every given cell.
    rows = list(itertools.permutations([1, 2, 3, 4]))
    grids = np.array([sum(four, ()) for four in itertools.product(rows, repeat=4)
                      if sudoku.is_solved_grid(list(sum(four, ())))])  # [288, 16]
    assert len(grids) == 288
    blank_sets = np.arange(1 << 16)  # bit c set: cell c is blank
    blanks_per_set = np.array([bin(blanks).count("1") for blanks in range(1 << 16)])
    counts = np.zeros(17, dtype=np.int64)
    for grid in grids:
        differing = np.unique(((grids != grid) * (1 << np.arange(16))).sum(axis=1))[1:]  # [287 or fewer]
        ambiguous = np.zeros(1 << 16, dtype=bool)
        for cells_that_differ in differing:
            ambiguous |= (blank_sets & cells_that_differ) == cells_that_differ
        counts += np.bincount(blanks_per_set[~ambiguous], minlength=17)
    assert tuple(counts[: sudoku.MAX_BLANKS + 1]) == sudoku.DISTINCT_PUZZLES
    assert not counts[sudoku.MAX_BLANKS + 1:].any()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"sudoku_num_puzzles": 100_000_000}, "sudoku_num_puzzles=100000000 is invalid; allowed: an integer in "
                                              "1..99950 (at most 100,000 generated puzzles with 10 blanks"),
        ({"sudoku_num_train": 100_000_000}, "sudoku_num_train=100000000 is invalid; allowed: an integer in 1..99999"),
        ({"sudoku_num_blanks": 0}, "sudoku_num_puzzles=500 is invalid; allowed: an integer in 1..94 (at most 144"),
        ({"sudoku_num_blanks": 12, "sudoku_num_puzzles": 20_000}, "allowed: an integer in 1..12814"),
    ],
)
def test_more_puzzles_than_the_generation_limit_are_refused_at_once(metadata, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape(message)):
        sudoku.load_dataset(**metadata)
    assert time.perf_counter() - start < 1


def test_generation_limit_is_half_the_distinct_puzzles_at_most_100000():
    assert [sudoku.generation_limit(blanks) for blanks in (0, 2, 10, 11, 12)] == [144, 17280, 100_000, 100_000, 12864]


def test_misspelled_or_invalid_metadata_is_an_error():
    with pytest.raises(ValueError, match="unknown sudoku metadata sudoku_cvs"):
        sudoku.load_dataset(sudoku_cvs="x.csv")
    with pytest.raises(ValueError, match="sudoku_num_puzzles='5'"):
        sudoku.load_dataset(sudoku_num_puzzles="5")


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_user_csv_replaces_the_test_split_by_metadata_or_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(sudoku.CSV_ENV_VAR, raising=False)
    rows = sudoku.generate_puzzles(3, seed=42)
    path = write_csv(tmp_path / "mine.csv", ["Puzzle,Solution"] + [f"{r['Puzzle']},{r['Solution']}" for r in rows])

    by_metadata = sudoku.load_dataset(sudoku_csv=str(path))
    assert by_metadata["test"].to_list() == rows
    assert not set(by_metadata["train"]["Puzzle"]) & {r["Puzzle"] for r in rows}

    monkeypatch.setenv(sudoku.CSV_ENV_VAR, str(path))
    assert sudoku.load_dataset()["test"].to_list() == rows


def test_train_split_skips_puzzles_that_the_user_csv_tests(tmp_path, monkeypatch):
    monkeypatch.delenv(sudoku.CSV_ENV_VAR, raising=False)
    default_train = sudoku.load_dataset(sudoku_num_puzzles=1)["train"].to_list()
    first = default_train[0]
    path = write_csv(tmp_path / "overlap.csv", ["Puzzle,Solution", f"{first['Puzzle']},{first['Solution']}"])
    train = sudoku.load_dataset(sudoku_csv=str(path))["train"]["Puzzle"]
    assert first["Puzzle"] not in train
    assert len(train) == sudoku.DEFAULT_NUM_TRAIN


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["Puzzle,Solution", f"{PUZZLE},{SOLUTION}", f"200001000410100,{SOLUTION}"],
            "line 3: Puzzle '200001000410100' has 15 characters",
        ),
        (["Puzzle,Solution", f"2000010004101005,{SOLUTION}"], "line 2: Puzzle '2000010004101005' contains '5'"),
        (["Puzzle,Solution", f"{PUZZLE},2341412334121204"], "line 2: Solution '2341412334121204' contains '0'"),
        (["Puzzle,Solution", f"{PUZZLE}"], "line 2: Solution '' has 0 characters"),
        (["Quiz,Solution", f"{PUZZLE},{SOLUTION}"], "line 2: header ['Quiz', 'Solution'] lacks column(s) Puzzle"),
        (["Puzzle,Solution"], "no records"),
        # two 2s in the first row: no grid completes these givens
        (["Puzzle,Solution", f"{PUZZLE},{SOLUTION}", f"2200000000000000,{SOLUTION}"],
         "line 3: Puzzle '2200000000000000' has no solution: its givens contradict each other"),
        # two 1s in the top-left box, in different rows and columns
        (["Puzzle,Solution", f"1000010000000000,{SOLUTION}"], "line 2: Puzzle '1000010000000000' has no solution"),
        # each row, column and box alone is fine, yet no completion exists
        (["Puzzle,Solution", f"1200003000000000,{SOLUTION}"], "line 2: Puzzle '1200003000000000' has no solution"),
        (["Puzzle,Solution", f"{PUZZLE},1234341221434321"], "line 2: Solution '1234341221434321' does not solve"),
        (["Puzzle,Solution", f"{PUZZLE},2341412334121243"], "line 2: Solution '2341412334121243' does not solve"),
    ],
)
def test_malformed_csv_is_one_clear_value_error(tmp_path, lines, message):
    path = write_csv(tmp_path / "bad.csv", lines)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        sudoku.load_dataset(sudoku_csv=str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_csv_that_is_not_utf8_or_holds_a_huge_field_is_one_line_naming_file_and_line(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"Puzzle,Solution\n{PUZZLE},{SOLUTION}\n{PUZZLE},{SOLUTION} caf\xe9\n".encode("latin-1"))
    huge = write_csv(tmp_path / "huge.csv", ["Puzzle,Solution", f"{PUZZLE},{SOLUTION}", f"{PUZZLE},{'1' * 10_000_000}"])
    for path, message in ((latin1, "line 3: byte 0xe9 is not UTF-8; save the file as UTF-8"),
                          (huge, "line 3: field larger than field limit")):
        with pytest.raises(ValueError, match=message) as error:
            sudoku.load_dataset(sudoku_csv=str(path))
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_csv_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        sudoku.load_dataset(sudoku_csv=str(tmp_path / "absent.csv"))


# ---------------------------------------------------------------- prompt and scorer


def test_prompt_shows_the_rules_the_grid_and_the_answer_tags():
    text = sudoku.doc_to_text({"Puzzle": PUZZLE, "Solution": SOLUTION})
    assert "2000\n0100\n0410\n1004\n" in text
    assert "2x2 box" in text and "<answer>" in text and "</answer>" in text
    assert sudoku.doc_to_target({"Puzzle": PUZZLE, "Solution": SOLUTION}) == f"<answer>{SOLUTION}</answer>"


@pytest.mark.parametrize(
    "response",
    [
        f"<answer>{SOLUTION}</answer>",
        f"<answer>{SOLUTION}",  # cut at the stop string </answer>
        f"Let me think.\n<answer>\n{GRID}\n</answer>",
        f"<answer>{PUZZLE}</answer> no wait <answer>{SOLUTION}",  # the last answer counts
        f"<ANSWER> {' '.join(SOLUTION)} </ANSWER>",
        f"The solved grid is:\n{GRID}\n",
        "Filled in:\n2 3 4 1\n4 1 2 3\n3 4 1 2\n1 2 3 4",
        f"The answer is {SOLUTION}.",
        SOLUTION,
    ],
)
def test_score_accepts_a_correct_answer_in_any_format(response):
    assert sudoku.score_answer(PUZZLE, response)


def test_score_accepts_any_valid_solution_not_only_the_reference():
    # Few givens leave two solutions; the scorer checks the rules, so both count.
    puzzle = "0000000034121234"
    other = "2143432134121234"
    assert other != SOLUTION and sudoku.keeps_givens(puzzle, other)
    assert sudoku.score_answer(puzzle, f"<answer>{SOLUTION}</answer>")
    assert sudoku.score_answer(puzzle, f"<answer>{other}</answer>")


@pytest.mark.parametrize(
    ("grid", "broken_rule"),
    [
        ("1313242431314242", "rows"),  # columns and boxes hold 1-4, rows do not
        ("1234341212343412", "columns"),  # rows and boxes hold 1-4, columns do not
        ("1234234134124123", "boxes"),  # rows and columns hold 1-4, the top-left box does not
    ],
)
def test_each_rule_is_checked_on_its_own(grid, broken_rule):
    groups = {"rows": sudoku.UNITS[0:4], "columns": sudoku.UNITS[4:8], "boxes": sudoku.UNITS[8:12]}
    for rule, units in groups.items():
        holds = all(sorted(grid[cell] for cell in unit) == list("1234") for unit in units)
        assert holds == (rule != broken_rule)
    assert not sudoku.score_answer("0" * 16, f"<answer>{grid}</answer>")


def test_a_changed_given_is_rejected_even_in_a_valid_grid():
    valid_grid = "1234341221434321"  # the puzzle's first cell is a given 2
    assert sudoku.is_solved_grid(cells(valid_grid))
    assert not sudoku.score_answer(PUZZLE, f"<answer>{valid_grid}</answer>")


@pytest.mark.parametrize(
    "response",
    [
        "<answer>2341412334121243</answer>",  # last row's 3 and 4 swapped: columns 3 and 4 repeat
        f"<answer>{SOLUTION[:15]}</answer>",  # 15 digits
        f"<answer>{SOLUTION}1</answer>",  # 17 digits
        f"{SOLUTION}1",  # 17 digits, no tag
        "<answer>2341412334121235</answer>",  # digit 5
        f"<answer>{SOLUTION.replace('3', '0')}</answer>",  # blanks left
        "",
        "<answer></answer>",
        "<answer>",
        "I cannot solve this puzzle.",
        "<answer>two three four one</answer>",
        f"<answer>no idea</answer> {SOLUTION}",  # the tag wins; its content is not an answer
    ],
)
def test_score_rejects_wrong_or_unreadable_answers(response):
    assert not sudoku.score_answer(PUZZLE, response)


def test_process_results_reports_acc():
    doc = {"Puzzle": PUZZLE, "Solution": SOLUTION}
    assert sudoku.process_results(doc, [f"<answer>{SOLUTION}"]) == {"acc": 1}
    assert sudoku.process_results(doc, ["<answer>1111"]) == {"acc": 0}


# ---------------------------------------------------------------- lm-eval end to end


@pytest.fixture(scope="module")
def loaded_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_CONFIGS), include_defaults=False, metadata={"sudoku_num_puzzles": 8})
    assert {"sudoku_4x4", "sudoku_4x4_fewshot"} <= set(manager.all_subtasks)
    assert not any(name.startswith("_") for name in manager.all_tasks)  # the shared _default file is no task
    return manager.load(["sudoku_4x4", "sudoku_4x4_fewshot"])["tasks"]


@pytest.mark.parametrize(("name", "shots"), [("sudoku_4x4", 0), ("sudoku_4x4_fewshot", 5)])
def test_task_manager_builds_prompts_with_the_puzzle(loaded_tasks, name, shots):
    task = loaded_tasks[name]
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=2)
    assert task.config.num_fewshot == shots
    assert len(task.eval_docs) == 8
    for instance in task.instances:
        doc = instance.doc
        prompt, gen_kwargs = instance.args
        assert prompt.endswith(sudoku.doc_to_text(doc))
        assert sudoku.grid_lines(doc["Puzzle"]) in prompt
        assert prompt.count("</answer>\n\n") == shots  # one solved example per shot
        assert gen_kwargs["until"] == ["</answer>"] and gen_kwargs["do_sample"] is False
        assert task.process_results(doc, [f"<answer>{doc['Solution']}"]) == {"acc": 1}


def test_few_shot_examples_come_from_train_not_test(loaded_tasks):
    task = loaded_tasks["sudoku_4x4_fewshot"]
    task.set_fewshot_seed(1234)
    test_puzzles = set(task.eval_docs["Puzzle"])
    doc = task.eval_docs[0]
    prompt = task.fewshot_context(doc, num_fewshot=5)
    shown = {"".join(chunk.split("\n")[1:5]) for chunk in prompt.split("\n\n")}
    assert len(shown) == 6 and shown & test_puzzles == {doc["Puzzle"]}


def test_task_manager_passes_the_csv_path_through_metadata(tmp_path):
    from lm_eval.tasks import TaskManager

    rows = sudoku.generate_puzzles(2, seed=11)
    path = write_csv(tmp_path / "paper.csv", ["Puzzle,Solution"] + [f"{r['Puzzle']},{r['Solution']}" for r in rows])
    manager = TaskManager(include_path=str(TASK_CONFIGS), include_defaults=False, metadata={"sudoku_csv": str(path)})
    task = manager.load("sudoku_4x4")["tasks"]["sudoku_4x4"]
    assert task.eval_docs.to_list() == rows
