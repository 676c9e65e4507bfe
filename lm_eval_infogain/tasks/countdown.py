"""Countdown: reach a target from three numbers with + - * /. A seeded generator, the prompt, and two scorers.

An instance is the string "n1,n2,n3,target" (the paper's schema, target last), e.g. "15,44,79,50"; its
reference answer is a chain of binary steps separated by commas, e.g. "44-15=29,79-29=50". The task
YAMLs in task_configs/countdown/ reference `load_dataset`, `doc_to_text`, `doc_to_target` and
`process_results`.

Instances: three numbers drawn from 1..99, combined by two random steps (the first two numbers, then
the result with the third) whose results are positive integers; the final value is the target, kept
when it lies in 1..100 and is not one of the numbers. Everything is drawn from a `random.Random(seed)`.
Smaller ranges (metadata `countdown_max_number`, `countdown_max_target`) make an easier variant.

`acc` (ours, strict) reads the text after the last "The answer is" to the end of that line, by this
grammar (whitespace is free between tokens; "×" "÷" "−" "–" read as * / - -):

    answer_line := "answer is" [":"] answer [sentence]          (case-insensitive, as in "The answer is:")
    answer      := markdown* ( "[" body "]" | "<" body ">" | body ) markdown* ["."]
    markdown    := "*" | "`" | "$"
    body        := chain | expression ["=" number]
    chain       := step ("," step)+
    step        := number op number "=" number
    op          := "+" | "-" | "*" | "/"
    expression  := product (("+" | "-") product)*
    product     := atom (("*" | "/") atom)*
    atom        := number | "(" expression ")"
    sentence    := ("." | "," | ";" | "!") whitespace+ letter <anything to the end of the line>
    number      := 1 to 6 digits                               (and `answer` at most 200 characters)

The brackets and angle brackets admit `[44-15=29,79-29=50]` and our prompt's `<steps>` placeholder
filled in place; `sentence` admits a remark after the answer ("..., which is the target."). The answer
is right when, in a chain, every step is true, has a positive integer result and uses numbers still
available (the given ones and the results of earlier steps, each used at most once) and the last result
is the target; for a single expression, when it uses given numbers (each at most once), every
intermediate value is a positive integer, a stated result is true, and its value is the target.
Anything else (names, `**`, decimals, unbalanced parentheses, text without the separating punctuation)
makes the answer wrong. Answers are parsed by this grammar, never evaluated as Python.

`acc_paper_rule` (the paper's checker, `countdown_check` in its `src/utils/eval_utils.py`, rule by rule;
not ours, only for comparing with the paper's numbers): see `paper_rule_is_correct`. It accepts answers
that `acc` rejects (numbers used twice or never given, the reference chain written anywhere in the
reasoning) and rejects some that `acc` accepts (`79-(44-15)`, whose parentheses it deletes).
"""

import operator
import random
import re
from collections import Counter
from collections.abc import Callable
from itertools import combinations

import datasets

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.tasks import common

NUM_NUMBERS = 3
MIN_NUMBER, MAX_NUMBER = 1, 99
MIN_TARGET, MAX_TARGET = 1, 100
DEFAULT_NUM_INSTANCES = 500
DEFAULT_NUM_TRAIN = 50  # few-shot pool; the few-shot task draws 3 per prompt
DEFAULT_SEED = 1234
FILE_ENV_VAR = "COUNTDOWN_FILE"
METADATA_KEYS = ("countdown_file", "countdown_num_instances", "countdown_seed", "countdown_num_train",
                 "countdown_max_number", "countdown_max_target")
# Field names accepted in a user's file: ours first, then the generic names other releases use.
INSTANCE_FIELDS = ("instance", "input")
REFERENCE_FIELDS = ("reference", "output")

OPERATORS = ("+", "-", "*", "/")
# The answer grammar reads numbers of at most this many digits, so no instance, step or result may be longer.
MAX_NUMBER_DIGITS = 6
# Numbers in a user's instance (the paper's have 3): the solvability check searches every chain, which
# takes milliseconds for 5 numbers and seconds for 6.
MAX_NUMBERS_PER_INSTANCE = 5


# ---------------------------------------------------------------- arithmetic shared by generator and scorers


def positive_integer_result(symbol: str, left: int, right: int) -> int | None:
    """`left symbol right` when it is a positive integer (the rule for every step), else None."""
    if symbol == "/":
        return left // right if right != 0 and left % right == 0 and left // right > 0 else None
    result = {"+": operator.add, "-": operator.sub, "*": operator.mul}[symbol](left, right)
    return result if result > 0 else None


# ---------------------------------------------------------------- generator


def random_step(rng: random.Random, first: int, second: int) -> tuple[str, int] | None:
    """A random operation on the two numbers in a random order: ("a op b=c", c), or None if c is not allowed."""
    left, right = (first, second) if rng.random() < 0.5 else (second, first)
    symbol = rng.choice(OPERATORS)
    result = positive_integer_result(symbol, left, right)
    return None if result is None else (f"{left}{symbol}{right}={result}", result)


def make_instance(rng: random.Random, max_number: int = MAX_NUMBER, max_target: int = MAX_TARGET) -> dict:
    """One instance whose reference chain uses all three numbers (each in 1..max_number) and reaches a
    target in 1..max_target."""
    if max_number < 2 or max_target < 3:
        raise UsageError(f"max_number={max_number}, max_target={max_target} leave no instance; "
                         "allowed: max_number >= 2, max_target >= 3")
    while True:  # most draws overshoot the target range or divide inexactly; draw again then
        numbers = [rng.randint(MIN_NUMBER, max_number) for _ in range(NUM_NUMBERS)]
        first, second, third = rng.sample(numbers, NUM_NUMBERS)
        step_one = random_step(rng, first, second)
        if step_one is None:
            continue
        step_two = random_step(rng, step_one[1], third)
        if step_two is None:
            continue
        target = step_two[1]
        if MIN_TARGET <= target <= max_target and target not in numbers:
            return make_doc(numbers, target, f"{step_one[0]},{step_two[0]}")


def make_doc(numbers: list[int], target: int, reference: str) -> dict:
    return {
        "instance": ",".join(str(number) for number in [*numbers, target]),
        "numbers": numbers,
        "target": target,
        "reference": reference,
    }


def instance_key(doc: dict) -> tuple:
    """The same puzzle whatever the order its numbers are listed in."""
    return tuple(sorted(doc["numbers"])), doc["target"]


def generate_instances(count: int, seed: int | str, exclude: frozenset = frozenset(), **options) -> list[dict]:
    """`count` distinct instances, none of whose key is in `exclude`; the same for the same seed.
    `options` are make_instance's ranges (generator_options)."""
    return common.draw_distinct(lambda rng: make_instance(rng, **options), instance_key, count, seed, exclude)


def generator_options(metadata: dict) -> dict:
    """make_instance's keyword arguments from the task metadata (countdown_max_number, countdown_max_target)."""
    return {"max_number": common.int_option(metadata, "countdown_max_number", MAX_NUMBER, minimum=2),
            "max_target": common.int_option(metadata, "countdown_max_target", MAX_TARGET, minimum=3)}


# ---------------------------------------------------------------- data set for lm-eval


def parse_instance(text: str) -> tuple[list[int], int]:
    """(numbers, target) of "n1,...,nk,target"; a ValueError saying what is wrong otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if not 3 <= len(parts) <= MAX_NUMBERS_PER_INSTANCE + 1 or not all(part.isdigit() for part in parts):
        raise UsageError(f"instance {text[:60]!r} is not 'n1,n2,...,target': 2 to {MAX_NUMBERS_PER_INSTANCE} "
                         "numbers and a target, whole numbers only")
    too_long = [part for part in parts if len(part) > MAX_NUMBER_DIGITS]
    if too_long:
        raise UsageError(f"instance {text[:60]!r} has a number of {len(too_long[0])} digits; "
                         f"allowed: at most {MAX_NUMBER_DIGITS} (the longest number an answer may hold)")
    values = [int(part) for part in parts]
    if min(values) < 1:
        raise UsageError(f"instance {text!r} has a 0; numbers and target must be positive")
    return values[:-1], values[-1]


def is_solvable(numbers: list[int], target: int) -> bool:
    """Whether some answer exists that `acc` accepts: the target is a given number, or a chain of steps
    (each on two available numbers, with a positive integer result an answer can write) reaches it."""
    tried: set[tuple[int, ...]] = set()

    def search(available: tuple[int, ...]) -> bool:
        if target in available:
            return True
        if available in tried:
            return False
        tried.add(available)
        for first, second in combinations(range(len(available)), 2):
            rest = available[:first] + available[first + 1:second] + available[second + 1:]
            for left, right in ((available[first], available[second]), (available[second], available[first])):
                for symbol in OPERATORS:
                    result = positive_integer_result(symbol, left, right)
                    writable = result is not None and result < 10**MAX_NUMBER_DIGITS
                    if writable and search(tuple(sorted((*rest, result)))):
                        return True
        return False

    return search(tuple(sorted(numbers)))


def read_instance_file(path: str) -> list[dict]:
    """Docs from a user's CSV or JSONL with an `instance` (or `input`) field; `reference` (or `output`) is optional.

    An instance that no answer can solve would score 0 whatever the model writes: it is refused."""
    docs = []
    for line_number, record in common.read_records(path, "countdown file"):
        instance = common.first_field(record, INSTANCE_FIELDS)
        if instance is None:
            raise UsageError(f"countdown file {path}, line {line_number}: no field {' or '.join(INSTANCE_FIELDS)}")
        try:
            numbers, target = parse_instance(instance)
        except ValueError as error:
            raise UsageError(f"countdown file {path}, line {line_number}: {error}") from None
        if not is_solvable(numbers, target):
            raise UsageError(f"countdown file {path}, line {line_number}: instance {instance!r} has no solution "
                             "(no chain of + - * / with positive whole results reaches the target); remove it")
        docs.append(make_doc(numbers, target, common.first_field(record, REFERENCE_FIELDS) or ""))
    return docs


def load_dataset(**metadata) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset` hook: splits `test` (the instances to solve) and `train` (few-shot examples).

    Our metadata keys (all optional; other keys are lm-eval's or the backend's and are ignored):
      countdown_file           a CSV or JSONL of instances that replaces the generated test split
                               (else the environment variable COUNTDOWN_FILE, else generated instances)
      countdown_num_instances  generated test instances (500)   countdown_seed  their seed (1234)
      countdown_num_train      few-shot pool size (50)
      countdown_max_number     largest given number (99)      countdown_max_target  largest target (100)
    The train split is generated from its own seed and never repeats a test instance.
    """
    common.reject_unknown_keys(metadata, "countdown_", METADATA_KEYS)
    seed = common.int_option(metadata, "countdown_seed", DEFAULT_SEED, minimum=0)
    num_train = common.int_option(metadata, "countdown_num_train", DEFAULT_NUM_TRAIN, minimum=1)
    options = generator_options(metadata)
    path = common.user_file(metadata, "countdown_file", FILE_ENV_VAR)
    if path:
        test = read_instance_file(path)
    else:
        count = common.int_option(metadata, "countdown_num_instances", DEFAULT_NUM_INSTANCES, minimum=1)
        test = generate_instances(count, seed, **options)
    train = generate_instances(num_train, f"{seed}-train", exclude=frozenset(instance_key(doc) for doc in test),
                               **options)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(test), "train": datasets.Dataset.from_list(train)})


# ---------------------------------------------------------------- prompt


def listed(numbers: list[int]) -> str:
    words = [str(number) for number in numbers]
    return ", ".join(words[:-1]) + " and " + words[-1]


def doc_to_text(doc: dict) -> str:
    """The rules, the numbers and the target, and the form of the final line.

    It starts with "Question:", the YAML's stop string, so generation ends where a model would begin
    inventing the next question; it ends with a newline and the YAML sets `target_delimiter: ""`.
    """
    return (
        f"Question: Using the numbers {listed(doc['numbers'])}, make {doc['target']}. "
        "You may add, subtract, multiply and divide (+, -, *, /); use each number at most once; "
        "every intermediate result must be a positive whole number. Show your reasoning, then end with "
        "one line of the form\nThe answer is: <steps>\n"
        "where <steps> lists each operation as x op y=result, separated by commas, for example 3*4=12,12+5=17.\n"
    )


def doc_to_target(doc: dict) -> str:
    """A worked answer built from the reference chain: one sentence per step, then the answer line."""
    if not doc["reference"]:
        return ""
    steps = doc["reference"].split(",")
    sentences = [re.sub(r"([-+*/=])", r" \1 ", step) + "." for step in steps]
    sentences[-1] = sentences[-1][:-1] + ", the target."
    return "\n".join(sentences) + f"\nThe answer is: {doc['reference']}"


# ---------------------------------------------------------------- answer grammar

# Bounds that keep parsing and evaluation small whatever a model writes: no real answer comes near them.
MAX_ANSWER_CHARS = 200
MAX_NESTING = 10  # parentheses; also bounds the parser's recursion depth
ANSWER_LINE = re.compile(r"answer is\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
TOKEN = re.compile(r"\s*(?:(\d+)|([-+*/()=]))")
# Signs a model may print for the four operations.
SIGN_SPELLINGS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-"})
# A remark after the answer: punctuation, whitespace, then a word ("..., which is the target.").
TRAILING_SENTENCE = re.compile(r"[.,;!]\s+[^\W\d_].*$")
# Wrappers a model puts around the whole answer: brackets, or our prompt's <steps> placeholder filled in.
WRAPPERS = (("[", "]"), ("<", ">"))


class InvalidAnswer(ValueError):
    """The answer text is not in the grammar or breaks a rule; the scorers turn it into a 0."""


# A parsed expression: a number, or (operator, left, right).
Node = int | tuple[str, "Node", "Node"]


def tokenize(text: str) -> list[str]:
    text = text.translate(SIGN_SPELLINGS)
    tokens, position, depth = [], 0, 0
    while position < len(text.rstrip()):
        match = TOKEN.match(text, position)
        if match is None:
            raise InvalidAnswer(f"unexpected {text[position:position + 10]!r}")
        token = match.group(1) or match.group(2)
        if len(token) > MAX_NUMBER_DIGITS:
            raise InvalidAnswer(f"number {token[:10]}... is too long")
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth > MAX_NESTING:
            raise InvalidAnswer(f"parentheses nested deeper than {MAX_NESTING}")
        tokens.append(token)
        position = match.end()
    return tokens


def parse_expression(tokens: list[str]) -> Node:
    """The whole token list as one expression, by this grammar:

    expression := product (("+" | "-") product)*
    product    := atom (("*" | "/") atom)*
    atom       := number | "(" expression ")"
    """
    node, position = parse_sum(tokens, 0)
    if position != len(tokens):
        raise InvalidAnswer(f"unexpected {tokens[position]!r}")
    return node


def parse_sum(tokens: list[str], position: int) -> tuple[Node, int]:
    return parse_chain(tokens, position, "+-", parse_product)


def parse_product(tokens: list[str], position: int) -> tuple[Node, int]:
    return parse_chain(tokens, position, "*/", parse_atom)


def parse_chain(tokens: list[str], position: int, symbols: str, parse_operand: Callable) -> tuple[Node, int]:
    """Operands joined left-associatively by any of `symbols`."""
    node, position = parse_operand(tokens, position)
    while position < len(tokens) and tokens[position] in symbols:
        right, next_position = parse_operand(tokens, position + 1)
        node, position = (tokens[position], node, right), next_position
    return node, position


def parse_atom(tokens: list[str], position: int) -> tuple[Node, int]:
    if position >= len(tokens):
        raise InvalidAnswer("the expression ends early")
    token = tokens[position]
    if token.isdigit():
        return int(token), position + 1
    if token == "(":
        node, position = parse_sum(tokens, position + 1)
        if position >= len(tokens) or tokens[position] != ")":
            raise InvalidAnswer("unbalanced parenthesis")
        return node, position + 1
    raise InvalidAnswer(f"unexpected {token!r}")


def parse_side(text: str) -> Node:
    tokens = tokenize(text)
    if not tokens:
        raise InvalidAnswer("empty expression")
    return parse_expression(tokens)


def split_step(step: str) -> tuple[str, int | None]:
    """("expression", stated result) of "expression = result", or ("expression", None) without "="."""
    sides = step.split("=")
    if len(sides) > 2:
        raise InvalidAnswer(f"step {step!r} has more than one '='")
    if len(sides) == 1:
        return step, None
    stated = parse_side(sides[1])
    if not isinstance(stated, int):
        raise InvalidAnswer(f"step {step!r} states a result that is not a number")
    return sides[0], stated


def evaluate(node: Node, combine: Callable):
    """The value of `node`, combining operands with `combine(symbol, left, right)` (None = not allowed)."""
    if isinstance(node, int):
        return node
    symbol, left, right = node
    value = combine(symbol, evaluate(left, combine), evaluate(right, combine))
    if value is None:
        raise InvalidAnswer(f"{symbol} gives a value that is not allowed")
    return value


def leaves(node: Node) -> list[int]:
    return [node] if isinstance(node, int) else leaves(node[1]) + leaves(node[2])


# ---------------------------------------------------------------- scorers


def extract_answer(response: str) -> str | None:
    """The answer of the last "answer is" line, without a trailing sentence, markdown, final period or wrapper."""
    matches = ANSWER_LINE.findall(response)
    if not matches:
        return None
    answer = TRAILING_SENTENCE.sub("", matches[-1]).strip().strip("*`$ ").rstrip(".").strip()
    for opening, closing in WRAPPERS:
        if answer.startswith(opening) and answer.endswith(closing):
            answer = answer[1:-1].strip()
    return answer if 0 < len(answer) <= MAX_ANSWER_CHARS else None


def take(available: Counter, numbers: list[int]) -> None:
    """Use up `numbers` from the multiset `available`; InvalidAnswer if one is not (or no longer) there."""
    for number in numbers:
        if available[number] == 0:
            raise InvalidAnswer(f"{number} is not available")
        available[number] -= 1


def chain_value(steps: list[str], numbers: list[int]) -> int:
    """The last result of a chain of true binary steps over the available numbers."""
    available = Counter(numbers)
    value = None
    for step in steps:
        expression, stated = split_step(step)
        node = parse_side(expression)
        if stated is None or isinstance(node, int) or not all(isinstance(side, int) for side in node[1:]):
            raise InvalidAnswer(f"step {step!r} is not 'x op y=result'")
        take(available, leaves(node))
        value = evaluate(node, positive_integer_result)
        if value != stated:
            raise InvalidAnswer(f"step {step!r} is false")
        available[value] += 1
    return value


def expression_value(answer: str, numbers: list[int]) -> int:
    """The value of one expression over the given numbers (each at most once), optionally followed by "= result"."""
    expression, stated = split_step(answer)
    node = parse_side(expression)
    take(Counter(numbers), leaves(node))
    value = evaluate(node, positive_integer_result)
    if stated is not None and stated != value:
        raise InvalidAnswer(f"{answer!r} is false")
    return value


def is_correct(answer: str, numbers: list[int], target: int) -> bool:
    """The strict rule (`acc`): a valid step chain, or a single valid expression, that reaches `target`."""
    steps = answer.split(",")
    try:
        value = chain_value(steps, numbers) if len(steps) > 1 else expression_value(answer, numbers)
    except InvalidAnswer:
        return False
    return value == target


# ---------------------------------------------------------------- the paper's checker (acc_paper_rule)

PAPER_TOLERANCE = 1e-3
# Rule 3: the answer text after the first "The answer is" (or, second, the Chinese "答案" forms), up to a
# newline or a period, and the characters a formula may hold.
PAPER_ANSWER_LINE = re.compile(r"[Tt]he answer is[:\s]*([^\n.]*)")
PAPER_CHINESE_ANSWER_LINE = re.compile(r"答案[是为]?[:：\s]*([^\n.]*)")
PAPER_FORMULA_CHARACTERS = r"0-9+\-*/×÷=,;，；\s"
PAPER_NOT_FORMULA = re.compile(f"[^{PAPER_FORMULA_CHARACTERS}]")
PAPER_FORMULA_RUN = re.compile(f"[{PAPER_FORMULA_CHARACTERS}]+")
PAPER_STEP_SEPARATORS = re.compile(r"[,;，；]")
# Rule 4: the first "a op b" in a piece, with an optional "= c". A match starts only where a run of digits
# starts (the same first match, found in linear time in a long run of digits).
PAPER_STEP = re.compile(r"(?<!\d)(\d+)\s*([-+*/×÷])\s*(\d+)(?:\s*=\s*(\d+))?")
PAPER_OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "×": operator.mul,
                    "/": operator.truediv, "÷": operator.truediv}


class PaperDivisionByZero(ValueError):
    """Rule 4: a division by zero anywhere in the formula makes the whole answer wrong."""


def paper_formula(response: str) -> str | None:
    """Rule 3: the formula text of the answer line (English pattern, then Chinese), else the longest
    run of formula characters anywhere in the response; None when there is none."""
    formula = ""
    english = PAPER_ANSWER_LINE.search(response)
    if english:
        formula = PAPER_NOT_FORMULA.sub("", english.group(1))
    if not re.search(r"[=,;，；]", formula):
        chinese = PAPER_CHINESE_ANSWER_LINE.search(response)
        if chinese:
            formula = PAPER_NOT_FORMULA.sub("", chinese.group(1))
    if formula.strip():
        return formula
    runs = PAPER_FORMULA_RUN.findall(response)
    return max(runs, key=len) if runs else None


def paper_step_result(piece: str, running: float | None) -> float | None:
    """Rule 4 for one piece: the new running result (unchanged when the piece has no step or a false one)."""
    match = PAPER_STEP.search(piece)
    if match is None:
        return running
    left, symbol, right, stated = match.groups()
    if symbol in "/÷" and float(right) == 0:
        raise PaperDivisionByZero(piece)
    # Floats, as the 0.001 tolerance implies; a huge number becomes inf and compares unequal, never raises.
    value = PAPER_OPERATIONS[symbol](float(left), float(right))
    if stated is None:
        return value
    return float(stated) if abs(float(stated) - value) <= PAPER_TOLERANCE else running


def paper_rule_is_correct(response: str, reference: str, target: int) -> bool:
    """The paper's checker, rule by rule (`acc_paper_rule`):

    1. an empty response or reference is wrong;
    2. with all whitespace removed from both, the reference anywhere in the response is right;
    3. the formula is `paper_formula(response)`; none is wrong;
    4. each piece of the formula between `,` or `;` (ASCII or full-width) updates the running result by
       its first step `a op b [= c]`: a division by zero makes the answer wrong, a step whose stated c
       is off by more than 0.001 is skipped, else the running result becomes c (or a op b);
    5. right iff a running result exists and equals the target within 0.001. Which numbers were used,
       and how often, is never checked.
    """
    if not response or not reference:
        return False
    if re.sub(r"\s", "", reference) in re.sub(r"\s", "", response):
        return True
    formula = paper_formula(response)
    if formula is None:
        return False
    running = None
    try:
        for piece in PAPER_STEP_SEPARATORS.split(formula):
            running = paper_step_result(piece, running)
    except PaperDivisionByZero:
        return False
    return running is not None and abs(running - target) <= PAPER_TOLERANCE


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """lm-eval hook: `results` holds the one generation for `doc`."""
    answer = extract_answer(results[0])
    return {
        "acc": int(answer is not None and is_correct(answer, doc["numbers"], doc["target"])),
        "acc_paper_rule": int(paper_rule_is_correct(results[0], doc["reference"], doc["target"])),
    }
