"""4x4 Sudoku: a seeded generator of unique-solution puzzles, the prompt, and a scorer that checks the rules.

A grid is a 16-character string read left to right, top to bottom, with '0' for a blank (the schema of
the paper's CSV: columns `Puzzle,Solution`). The task YAMLs in task_configs/sudoku/ reference
`load_dataset` (lm-eval's `custom_dataset` hook), `doc_to_text`, `doc_to_target` and `process_results`.

Puzzles: a random complete grid, then cells blanked one at a time in random order, each blank kept only
while the puzzle still has exactly one solution, until `num_blanks` cells are blank (default 10, i.e. 6
givens). Everything is drawn from a `random.Random(seed)`, so a seed names a data set.

The many-solution variant (task `sudoku_4x4_many`) blanks random cells of a random grid without the
uniqueness check, keeping only puzzles with at least two solutions (default 12 blanks, i.e. 4 givens: 4.1
solutions on average): the cells' exact marginals are spread, so digits committed together can contradict
each other (the exact model oracle-sudoku shows it). Its `Solution` is the grid it was drawn from, one of
several right answers.

Scoring is by the rules, never by comparison with `Solution` (a puzzle from a user's file might admit
more than one solution): the answer must fill every cell with 1-4, make every row, column and 2x2 box
a permutation of 1-4, and keep every given digit.
"""

import os
import random
import re

import datasets

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.tasks import common

SIZE = 4
BOX = 2
CELLS = SIZE * SIZE
DIGITS = range(1, SIZE + 1)

# 10 blanks = 6 givens. A greedy blanking pass reached at least 10 blanks on every one of 5,000 random
# (grid, order) draws we tried, so 10 is the hardest level that is reached at the first attempt; 11 and
# 12 blanks (5 and 4 givens, 12 is the most any 4x4 puzzle with a unique solution can have) need retries.
DEFAULT_NUM_BLANKS = 10
MAX_BLANKS = CELLS - 4
DEFAULT_NUM_PUZZLES = 500  # the size of the paper's test file
DEFAULT_NUM_TRAIN = 50  # few-shot pool; the few-shot task draws 5 per prompt
DEFAULT_SEED = 1234
CSV_ENV_VAR = "SUDOKU_4X4_CSV"
# Metadata keys carry a "sudoku_" prefix because lm-eval merges --model_args into the metadata that
# reaches load_dataset: an unprefixed `seed` would silently take the backend's sampling seed.
METADATA_KEYS = ("sudoku_csv", "sudoku_num_puzzles", "sudoku_seed", "sudoku_num_blanks", "sudoku_num_train")
# DISTINCT_PUZZLES[k]: the 4x4 puzzles with k blanks and exactly one solution, every one of which the
# generator can make (blanking a puzzle's blanks first reaches it). Counted over the 288 complete grids:
# a blank set leaves one solution iff it contains no set of cells where another grid differs.
DISTINCT_PUZZLES = (288, 4608, 34560, 161280, 522624, 1239552, 2204928, 2958336, 2961024, 2141184,
                    1041408, 284160, 25728)
# Most puzzles generated for one data set (test and train together): random draws find new puzzles
# quickly up to about half of the distinct ones and ever more slowly beyond; 100,000 (200 times the
# paper's 500) generate in seconds on one CPU core, where 100,000,000 would take hours.
MAX_GENERATED_PUZZLES = 100_000
# The many-solution variant: blanks allowed (fewer than 8 rarely leave two solutions) and its default.
MANY_SOLUTION_BLANKS = (8, CELLS)
DEFAULT_MANY_SOLUTION_BLANKS = 12
MAX_MANY_SOLUTION_PUZZLES = 10_000


def units() -> list[tuple[int, ...]]:
    """The 12 groups of cells that must each hold 1-4 once: 4 rows, 4 columns, 4 boxes."""
    rows = [tuple(row * SIZE + col for col in range(SIZE)) for row in range(SIZE)]
    cols = [tuple(row * SIZE + col for row in range(SIZE)) for col in range(SIZE)]
    boxes = [
        tuple((top + row) * SIZE + left + col for row in range(BOX) for col in range(BOX))
        for top in range(0, SIZE, BOX)
        for left in range(0, SIZE, BOX)
    ]
    return rows + cols + boxes


UNITS = units()
# PEERS[cell]: the other cells that share a row, column or box with it.
PEERS = [tuple(sorted({peer for unit in UNITS if cell in unit for peer in unit} - {cell})) for cell in range(CELLS)]


# ---------------------------------------------------------------- generator


def allowed_digits(cells: list[int], cell: int) -> list[int]:
    taken = {cells[peer] for peer in PEERS[cell]}
    return [digit for digit in DIGITS if digit not in taken]


def count_solutions(cells: list[int], limit: int = 2) -> int:
    """Number of completions of `cells` (0 = blank), counting no further than `limit`."""
    if 0 not in cells:
        return 1
    cell = cells.index(0)
    found = 0
    for digit in allowed_digits(cells, cell):
        cells[cell] = digit
        found += count_solutions(cells, limit - found)
        cells[cell] = 0
        if found >= limit:
            break
    return found


def fill_randomly(cells: list[int], rng: random.Random) -> bool:
    """Fill the blanks of `cells` in place with a random valid completion; False if there is none."""
    if 0 not in cells:
        return True
    cell = cells.index(0)
    candidates = allowed_digits(cells, cell)
    rng.shuffle(candidates)
    for digit in candidates:
        cells[cell] = digit
        if fill_randomly(cells, rng):
            return True
    cells[cell] = 0
    return False


def blank_cells(solution: list[int], rng: random.Random, num_blanks: int) -> list[int]:
    """Blank cells of `solution` in random order, skipping any blank that would allow a second solution."""
    puzzle = list(solution)
    order = list(range(CELLS))
    rng.shuffle(order)
    for cell in order:
        if puzzle.count(0) == num_blanks:
            break
        puzzle[cell] = 0
        if count_solutions(list(puzzle)) != 1:
            puzzle[cell] = solution[cell]
    return puzzle


def to_text(cells: list[int]) -> str:
    return "".join(str(digit) for digit in cells)


def make_puzzle(rng: random.Random, num_blanks: int = DEFAULT_NUM_BLANKS) -> dict[str, str]:
    """One puzzle with exactly `num_blanks` blanks and a unique solution: {"Puzzle": ..., "Solution": ...}."""
    if not 0 <= num_blanks <= MAX_BLANKS:
        raise UsageError(f"num_blanks={num_blanks!r} is invalid; allowed: 0..{MAX_BLANKS}")
    while True:  # an attempt falls short only when its removal order gets stuck early; draw again then
        solution = [0] * CELLS
        fill_randomly(solution, rng)
        puzzle = blank_cells(solution, rng, num_blanks)
        if puzzle.count(0) == num_blanks:
            return {"Puzzle": to_text(puzzle), "Solution": to_text(solution)}


def make_many_solution_puzzle(rng: random.Random, num_blanks: int = DEFAULT_MANY_SOLUTION_BLANKS) -> dict[str, str]:
    """One puzzle with `num_blanks` random blanks and at least two solutions; Solution is the grid it came from."""
    while True:
        solution = [0] * CELLS
        fill_randomly(solution, rng)
        puzzle = list(solution)
        for cell in rng.sample(range(CELLS), num_blanks):
            puzzle[cell] = 0
        if count_solutions(list(puzzle)) >= 2:
            return {"Puzzle": to_text(puzzle), "Solution": to_text(solution)}


def generate_puzzles(
    num_puzzles: int,
    seed: int | str,
    num_blanks: int = DEFAULT_NUM_BLANKS,
    exclude: frozenset[str] = frozenset(),
    many_solutions: bool = False,
) -> list[dict[str, str]]:
    """`num_puzzles` distinct puzzles, none of whose Puzzle string is in `exclude`; the same for the same seed."""
    make = make_many_solution_puzzle if many_solutions else make_puzzle
    return common.draw_distinct(lambda rng: make(rng, num_blanks), lambda row: row["Puzzle"], num_puzzles, seed,
                                exclude)


def generation_limit(num_blanks: int, many_solutions: bool = False) -> int:
    """The most puzzles (test and train together) generated with `num_blanks` blanks."""
    if many_solutions:
        return MAX_MANY_SOLUTION_PUZZLES
    return min(MAX_GENERATED_PUZZLES, DISTINCT_PUZZLES[num_blanks] // 2)


# ---------------------------------------------------------------- data set for lm-eval


def grid_problem(text: str, allowed: str) -> str | None:
    """Why `text` is not a grid of 16 digits from `allowed`, or None if it is one."""
    if len(text) != CELLS:
        return f"has {len(text)} characters, expected {CELLS}"
    bad = sorted({ch for ch in text if ch not in allowed})
    return f"contains {''.join(bad)!r}, allowed digits are {allowed}" if bad else None


def read_puzzle_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a user's `Puzzle,Solution` CSV; a one-line ValueError naming the file, line and problem otherwise."""
    rows = []
    for line_number, record in common.read_records(path, "sudoku CSV"):
        missing = [column for column in ("Puzzle", "Solution") if column not in record]
        if missing:
            raise UsageError(f"sudoku CSV {path}, line {line_number}: header {list(record)} lacks column(s) "
                             f"{', '.join(missing)}")
        row = {column: (record[column] or "").strip() for column in ("Puzzle", "Solution")}
        problem = row_problem(row)
        if problem:
            raise UsageError(f"sudoku CSV {path}, line {line_number}: {problem}")
        rows.append(row)
    return rows


def row_problem(row: dict[str, str]) -> str | None:
    """Why a user's puzzle row cannot be scored, or None: bad grids, givens with no solution, a wrong Solution."""
    for column, allowed in (("Puzzle", "01234"), ("Solution", "1234")):
        problem = grid_problem(row[column], allowed)
        if problem:
            return f"{column} {row[column]!r} {problem}"
    if count_solutions([int(digit) for digit in row["Puzzle"]], limit=1) == 0:
        return f"Puzzle {row['Puzzle']!r} has no solution: its givens contradict each other"
    if not (is_solved_grid([int(digit) for digit in row["Solution"]]) and keeps_givens(row["Puzzle"], row["Solution"])):
        return f"Solution {row['Solution']!r} does not solve Puzzle {row['Puzzle']!r}"
    return None


def generator_options(metadata: dict, many_solutions: bool = False) -> dict:
    """make_puzzle's (make_many_solution_puzzle's) keyword arguments from the task metadata (sudoku_num_blanks)."""
    if many_solutions:
        low, high = MANY_SOLUTION_BLANKS
        return {"num_blanks": common.int_option(metadata, "sudoku_num_blanks", DEFAULT_MANY_SOLUTION_BLANKS,
                                                minimum=low, maximum=high, why="many-solution puzzles")}
    return {"num_blanks": common.int_option(metadata, "sudoku_num_blanks", DEFAULT_NUM_BLANKS, minimum=0,
                                            maximum=MAX_BLANKS)}


def load_many_solution_dataset(**metadata) -> datasets.DatasetDict:
    """`load_dataset` for the many-solution variant (sudoku_4x4_many): the same keys, puzzles with >= 2 solutions."""
    return load_dataset(many_solutions=True, **metadata)


def load_dataset(many_solutions: bool = False, **metadata) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset` hook: splits `test` (the puzzles to solve) and `train` (few-shot examples).

    lm-eval calls this with the task's metadata, which holds --metadata merged over --model_args, so keys
    that are not ours arrive too and are ignored. Ours (all optional):
      sudoku_csv          a `Puzzle,Solution` CSV that replaces the generated test split
                          (else the environment variable SUDOKU_4X4_CSV, else generated puzzles)
      sudoku_num_puzzles  generated test puzzles (500)      sudoku_seed  seed of the test puzzles (1234)
      sudoku_num_blanks   blanks per generated puzzle (10)  sudoku_num_train  few-shot pool size (50)
    The train split is generated from its own seed and never repeats a test puzzle. Generated test and
    train puzzles together are at most `generation_limit(num_blanks)` (100,000 for 10 blanks).
    """
    common.reject_unknown_keys(metadata, "sudoku_", METADATA_KEYS)
    seed = common.int_option(metadata, "sudoku_seed", DEFAULT_SEED, minimum=0)
    num_blanks = generator_options(metadata, many_solutions)["num_blanks"]
    limit = generation_limit(num_blanks, many_solutions)
    why = f"at most {limit:,} generated puzzles with {num_blanks} blanks, test and train together"
    num_train = common.int_option(metadata, "sudoku_num_train", DEFAULT_NUM_TRAIN, minimum=1, maximum=limit - 1,
                                  why=why)
    csv_path = common.user_file(metadata, "sudoku_csv", CSV_ENV_VAR)
    if csv_path:
        test = read_puzzle_csv(csv_path)
    else:
        num_puzzles = common.int_option(metadata, "sudoku_num_puzzles", DEFAULT_NUM_PUZZLES, minimum=1,
                                        maximum=limit - num_train, why=why)
        test = generate_puzzles(num_puzzles, seed, num_blanks, many_solutions=many_solutions)
    test_puzzles = frozenset(row["Puzzle"] for row in test)
    train = generate_puzzles(num_train, f"{seed}-train", num_blanks, exclude=test_puzzles,
                             many_solutions=many_solutions)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(test), "train": datasets.Dataset.from_list(train)})


# ---------------------------------------------------------------- prompt


def grid_lines(grid: str) -> str:
    return "\n".join(grid[start : start + SIZE] for start in range(0, CELLS, SIZE))


def doc_to_text(doc: dict) -> str:
    """The rules, the puzzle as four lines of four digits, and where to put the answer.

    It ends with a newline and the YAML sets `target_delimiter: ""`, so a few-shot example and the
    question being asked end the same way.
    """
    return (
        "Solve this 4x4 Sudoku. Replace each 0 with a digit from 1 to 4 so that every row, "
        "every column and every 2x2 box contains 1, 2, 3 and 4 exactly once.\n"
        f"{grid_lines(doc['Puzzle'])}\n"
        "Write the solved grid as 16 digits, row by row, between <answer> and </answer>.\n"
    )


def doc_to_target(doc: dict) -> str:
    return f"<answer>{doc['Solution']}</answer>"


# ---------------------------------------------------------------- scoring

OPEN_TAG = re.compile(r"<answer>", re.IGNORECASE)
CLOSE_TAG = re.compile(r"</answer>", re.IGNORECASE)
GRID_ROW = r"[ \t]*[0-9](?:[ \t,|]*[0-9]){3}[ \t,|\r]*"  # four digits, maybe spaced: "1 2 3 4", "12|34"
GRID = re.compile(rf"^{GRID_ROW}\n{GRID_ROW}\n{GRID_ROW}\n{GRID_ROW}$", re.MULTILINE)
SIXTEEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{16}(?![0-9])")


def answer_digits(response: str) -> str | None:
    """The digits of the answer in `response`, or None when it has no recognisable answer.

    In order: the text after the last <answer> up to </answer> or the end (generation stops at the stop
    string "</answer>" and lm-eval removes it); else the last grid of four lines of four digits; else
    the last run of exactly 16 digits.
    """
    after_open = OPEN_TAG.split(response)
    if len(after_open) > 1:
        answer = CLOSE_TAG.split(after_open[-1])[0]
    else:
        matches = GRID.findall(response) or SIXTEEN_DIGITS.findall(response)
        if not matches:
            return None
        answer = matches[-1]
    return re.sub(r"[^0-9]", "", answer)


def is_solved_grid(cells: list[int]) -> bool:
    return len(cells) == CELLS and all(sorted(cells[cell] for cell in unit) == list(DIGITS) for unit in UNITS)


def keeps_givens(puzzle: str, answer: str) -> bool:
    return all(given == "0" or given == filled for given, filled in zip(puzzle, answer, strict=True))


def score_answer(puzzle: str, response: str) -> bool:
    """True iff `response` holds a completed grid that obeys the rules and keeps every given of `puzzle`."""
    digits = answer_digits(response)
    if digits is None or len(digits) != CELLS:
        return False
    return is_solved_grid([int(digit) for digit in digits]) and keeps_givens(puzzle, digits)


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """lm-eval hook: `results` holds the one generation for `doc`."""
    return {"acc": int(score_answer(doc["Puzzle"], results[0]))}
