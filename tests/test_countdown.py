"""The countdown task: generator, splits, user files, the strict scorer, the paper's rule, loading through lm-eval."""

import json
import operator
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_eval_infogain.tasks import countdown

TASK_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs"

NUMBERS, TARGET = [15, 44, 79], 50
DOC = {"instance": "15,44,79,50", "numbers": NUMBERS, "target": TARGET, "reference": "44-15=29,79-29=50"}


def follows_the_rules(numbers: list[int], target: int, chain: str) -> bool:
    """An independent check of a reference chain: plain regex and int arithmetic, nothing from the module."""
    functions = {"+": operator.add, "-": operator.sub, "*": operator.mul}
    available = Counter(numbers)
    value = None
    for step in chain.split(","):
        left, symbol, right, result = re.fullmatch(r"(\d+)([-+*/])(\d+)=(\d+)", step).groups()
        left, right, result = int(left), int(right), int(result)
        available.subtract([left, right])
        if min(available.values()) < 0:
            return False
        if symbol == "/":
            value = left // right if left % right == 0 else None
        else:
            value = functions[symbol](left, right)
        if value is None or value != result or value <= 0:
            return False
        available[value] += 1
    return value == target


# ---------------------------------------------------------------- generator


def test_generated_instances_are_solved_by_their_reference():
    for doc in countdown.generate_instances(300, seed=7):
        numbers, target = doc["numbers"], doc["target"]
        assert len(numbers) == 3 and all(1 <= number <= 99 for number in numbers)
        assert 1 <= target <= 100 and target not in numbers
        assert doc["instance"] == ",".join(map(str, [*numbers, target]))
        assert len(doc["reference"].split(",")) == 2  # both steps, all three numbers
        assert follows_the_rules(numbers, target, doc["reference"])
        assert countdown.process_results(doc, [f"The answer is: {doc['reference']}"])["acc"] == 1


def test_smaller_ranges_from_metadata_make_an_easier_variant(monkeypatch):
    monkeypatch.delenv(countdown.FILE_ENV_VAR, raising=False)
    splits = countdown.load_dataset(countdown_max_number=9, countdown_max_target=20, countdown_num_instances=300)
    for doc in [*splits["test"], *splits["train"]]:
        assert all(1 <= number <= 9 for number in doc["numbers"]) and 1 <= doc["target"] <= 20
        assert follows_the_rules(doc["numbers"], doc["target"], doc["reference"])
    assert max(doc["target"] for doc in splits["test"]) > 9  # targets are not capped by the numbers' range
    with pytest.raises(ValueError, match="countdown_max_number=1 is invalid"):
        countdown.load_dataset(countdown_max_number=1)


def test_generator_is_deterministic_per_seed_and_leaves_global_random_alone():
    random.seed(99)
    before = random.random()
    random.seed(99)
    first = countdown.generate_instances(40, seed=5)
    assert random.random() == before
    assert countdown.generate_instances(40, seed=5) == first
    assert countdown.generate_instances(40, seed=6) != first
    assert len({countdown.instance_key(doc) for doc in first}) == 40


def test_train_split_is_disjoint_from_test_even_with_numbers_reordered(monkeypatch):
    monkeypatch.delenv(countdown.FILE_ENV_VAR, raising=False)
    splits = countdown.load_dataset(countdown_num_instances=200, countdown_num_train=50)
    test = {(tuple(sorted(doc["numbers"])), doc["target"]) for doc in splits["test"]}
    train = {(tuple(sorted(doc["numbers"])), doc["target"]) for doc in splits["train"]}
    assert len(test) == 200 and len(train) == 50 and not test & train


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"countdown_seeds": 1}, "unknown countdown metadata countdown_seeds"),
        ({"countdown_num_train": 0}, "countdown_num_train=0 is invalid"),
        ({"countdown_seed": "7"}, "countdown_seed='7' is invalid"),
    ],
)
def test_bad_metadata_is_one_clear_error(metadata, message):
    with pytest.raises(ValueError, match=message):
        countdown.load_dataset(**metadata)


def test_other_metadata_keys_are_ignored(monkeypatch):
    monkeypatch.delenv(countdown.FILE_ENV_VAR, raising=False)
    splits = countdown.load_dataset(pretrained="tiny-random-llada", seed=3, countdown_num_instances=2)
    assert len(splits["test"]) == 2


# ---------------------------------------------------------------- user files


def test_user_file_replaces_the_test_split_by_metadata_or_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(countdown.FILE_ENV_VAR, raising=False)
    jsonl = tmp_path / "paper.jsonl"
    jsonl.write_text('{"input": "15,44,79,50", "output": "44-15=29,79-29=50"}\n\n{"instance": "3,4,5,6,7"}\n')
    csv = tmp_path / "mine.csv"
    csv.write_text('instance\n"15,44,79,50"\n')

    docs = countdown.load_dataset(countdown_file=str(jsonl))["test"].to_list()
    assert docs[0] == DOC
    assert docs[1]["numbers"] == [3, 4, 5, 6] and docs[1]["target"] == 7 and docs[1]["reference"] == ""

    monkeypatch.setenv(countdown.FILE_ENV_VAR, str(csv))
    splits = countdown.load_dataset()
    assert splits["test"]["instance"] == ["15,44,79,50"]
    assert ([15, 44, 79], 50) not in [(sorted(doc["numbers"]), doc["target"]) for doc in splits["train"]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"instance": "15,44,79,50"}\n{"instance": "15,44,x,50"}\n',
         "line 2: instance '15,44,x,50' is not"),
        ("a.jsonl", '{"instance": "15,0,79,50"}\n', "line 1: instance '15,0,79,50' has a 0"),
        ("a.jsonl", '{"instance": "50"}\n', "line 1: instance '50' is not"),
        ("a.jsonl", '{"numbers": [1, 2]}\n', "line 1: no field instance or input"),
        ("a.jsonl", "not json\n", "line 1: not JSON"),
        ("a.jsonl", "[1, 2]\n", "line 1: expected a JSON object"),
        ("a.csv", 'puzzle\n"1,2,3"\n', "line 2: no field instance or input"),
        ("a.csv", "instance\n", "no records"),
        ("a.txt", "15,44,79,50\n", "unknown extension '.txt'; allowed: .csv, .jsonl"),
        ("a.jsonl", '{"instance": "15,44,79,50"}\n{"instance": "1,1,1,99"}\n',
         "line 2: instance '1,1,1,99' has no solution (no chain of + - * / with positive whole results"),
        ("a.csv", 'instance\n"15,44,79,50"\n"2,3,7"\n', "line 3: instance '2,3,7' has no solution"),
        ("a.jsonl", '{"instance": "15,44,' + "9" * 41 + ',50"}\n',
         "line 1: instance '15,44," + "9" * 41 + ",50' has a number of 41 digits; allowed: at most 6"),
        ("a.jsonl", '{"instance": "1,2,3,4,5,6,7"}\n', "line 1: instance '1,2,3,4,5,6,7' is not 'n1,n2,...,target': "
                                                       "2 to 5 numbers and a target"),
        ("a.jsonl", '{"instance": "15,44,79,50"}\n{"instance": "' + "1," * 5_000_000 + '2"}\n',
         "line 2: field 'instance' holds 10,000,001 characters; allowed: at most 131,072"),
        ("a.csv", 'instance\n"15,44,79,50"\n"' + "1," * 5_000_000 + '2"\n', "line 3: field larger than field limit"),
    ],
)
def test_malformed_user_file_is_one_clear_value_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        countdown.load_dataset(countdown_file=str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("a.jsonl", b'{"instance": "15,44,79,50"}\n{"instance": "15,44,79,50", "note": "caf\xe9"}\n', 2),
        ("a.csv", b'instance,note\n"15,44,79,50",ok\n"15,44,79,50",caf\xe9\n', 3),  # Latin-1, not UTF-8
    ],
)
def test_user_file_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"line {line}: byte 0xe9 is not UTF-8; save the file as UTF-8")):
        countdown.load_dataset(countdown_file=str(path))


@pytest.mark.parametrize(
    ("numbers", "target", "solvable"),
    [
        ([15, 44, 79], 50, True),
        ([2, 3], 6, True),
        ([2, 3], 7, False),  # 5, 1, 6 or no whole quotient
        ([5, 7], 7, True),  # the target is given: "The answer is: 7"
        ([1, 1, 1], 99, False),
        ([3, 4, 5, 6], 7, True),
        ([4, 6], 2, True),  # 6-4
        ([4, 6], 24, True),
        ([7, 2], 1, False),  # 7/2 is not whole; 7-2=5, 7+2=9, 7*2=14
    ],
)
def test_solvability_follows_the_strict_rules(numbers, target, solvable):
    assert countdown.is_solvable(numbers, target) is solvable


def test_generated_instances_are_solvable():
    assert all(countdown.is_solvable(doc["numbers"], doc["target"]) for doc in countdown.generate_instances(200, 3))


def test_missing_user_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        countdown.load_dataset(countdown_file=str(tmp_path / "absent.jsonl"))


# ---------------------------------------------------------------- prompt


def test_prompt_shows_numbers_target_and_answer_line_and_target_is_a_worked_answer():
    text = countdown.doc_to_text(DOC)
    assert text.startswith("Question: Using the numbers 15, 44 and 79, make 50.")
    assert "\nThe answer is: <steps>\n" in text and text.endswith("\n")
    assert countdown.doc_to_target(DOC) == "44 - 15 = 29.\n79 - 29 = 50, the target.\nThe answer is: 44-15=29,79-29=50"


# ---------------------------------------------------------------- strict scorer

REFERENCE = DOC["reference"]
# The other chain that reaches 50: a reference that none of the answers below writes out.
OTHER_REFERENCE = "79-44=35,35+15=50"


def scores(response: str, numbers=NUMBERS, target=TARGET, reference=REFERENCE) -> tuple[int, int]:
    doc = {"numbers": numbers, "target": target, "reference": reference}
    result = countdown.process_results(doc, [response])
    assert set(result) == {"acc", "acc_paper_rule"}
    return result["acc"], result["acc_paper_rule"]


@pytest.mark.parametrize(
    ("response", "paper"),
    [
        ("The answer is: 44-15=29,79-29=50", 1),
        ("First 44 - 15 = 29.\nThen 79 - 29 = 50.\nThe answer is: 44 - 15 = 29, 79 - 29 = 50.", 1),
        # acc reads the last answer line; the paper's rule the first, "15-44=": running result -29
        ("the answer is 15-44=... no.\nThe answer is: **44-15=29,79-29=50**", 0),
        ("The answer is: 79-(44-15)", 0),  # one expression
        ("The answer is: 79 - (44 - 15) = 50", 0),
        ("The answer is: 79−(44−15)", 0),  # a typographic minus
        ("The answer is: 44-15=29,79-29=50\n\nQuestion", 1),
    ],
)
def test_strict_score_accepts_right_answers(response, paper):
    assert scores(response, reference=OTHER_REFERENCE) == (1, paper)


@pytest.mark.parametrize(
    "response",
    [
        "The answer is: [44-15=29,79-29=50]",  # the bracketed form the paper's prompt shows
        "The answer is: [44-15=29, 79-29=50].",
        "The answer is: <44-15=29,79-29=50>",  # our prompt's <steps> placeholder, filled in place
        "The answer is: **<44-15=29,79-29=50>**",
        "The answer is: 44-15=29,79-29=50, which is the target.",  # a trailing sentence
        "The answer is: 44-15=29,79-29=50. That uses every number once!",
        "The answer is: [79-(44-15)]; so we reach 50",
    ],
)
def test_strict_score_accepts_harmless_wrappers_and_a_trailing_sentence(response):
    assert scores(response)[0] == 1


@pytest.mark.parametrize(
    "response",
    [
        "The answer is: [44-15=29,79-29=51]",  # a wrapper does not make a wrong chain right
        "The answer is: <44+15=59,79-29=50>",
        "The answer is: 44-15=29, so 79-29=50",  # the sentence cuts the chain to its first step
        "The answer is: 79-29=50. Here 29 comes from 44-15",  # 29 is not a given number
        "The answer is: 79-(44-15) or 50",  # a remark without separating punctuation
        "The answer is: [44-15=29,79-29=50",  # an unclosed bracket
        "The answer is: <steps>",
    ],
)
def test_strict_score_rejects_wrong_answers_inside_wrappers_and_sentences(response):
    assert scores(response)[0] == 0


def test_strict_score_accepts_a_chain_through_a_division_and_unused_numbers():
    chain = "12/4=3,3*7=21"
    assert scores(f"The answer is: {chain}", numbers=[12, 4, 7, 99], target=21, reference=chain) == (1, 1)
    assert scores("The answer is: 6*7=42", numbers=[6, 7, 5], target=42, reference="6*7=42") == (1, 1)  # 5 unused


@pytest.mark.parametrize(
    "response",
    [
        "The answer is: 44-15=29,79-29=51",  # last value is not the target
        "The answer is: 44+15=59,79-29=50",  # 29 was never computed
        "The answer is: 44-15=28,79-28=51",  # a false step
        "The answer is: 79+29=108",  # a single wrong step
        "The answer is: 79-44",  # an expression with the wrong value
        "The answer is: 79-(44-15)=51",  # the stated result is wrong
        "The answer is:",
        "The answer is: fifty",
        "I think it is 44-15=29,79-29=50",  # no answer line
        "",
    ],
)
def test_strict_score_rejects_wrong_answers(response):
    assert scores(response)[0] == 0


@pytest.mark.parametrize(
    ("response", "paper"),
    [
        ("The answer is: 44-15=29,29-15=14,14+36=50", 1),  # reuses 15 and brings 36 out of nowhere
        ("The answer is: 25+25=50", 1),  # numbers that were never given
        ("The answer is: 79-(15+15-1)", 0),  # parentheses deleted: 79-15 = 64
        ("The answer is: 44-15=29,79-29-0=50", 1),  # first match 79-29 without a result: 50
        ("The answer is: 79-29=50,44-15=29", 0),  # running result ends at 29
        ("The answer is: 44-15=29,79-29=50,50=50", 1),  # the reference is in the response
        ("The answer is: 15-44=-29,79+(-29)=50", 0),  # running result -29; "79+-29" has no match
        ("The answer is: 44/15=2.93,79-29=50", 0),  # the formula ends at the period: 44/15=2 is false
        ("The answer is: 100/2=50", 1),
        ("The answer is: 44-15=29=29,79-29=50", 1),
    ],
)
def test_strict_score_rejects_rule_breaking_answers_that_the_paper_rule_may_accept(response, paper):
    assert scores(response) == (0, paper)


@pytest.mark.parametrize(
    "response",
    [
        "The answer is: __import__('os').system('echo hacked')",
        "The answer is: 79-(44-15) or __import__('os')",
        "The answer is: 9**9**9",
        "The answer is: 9**9**9**9**9=50",
        "The answer is: 44/(15-15)=50",
        "The answer is: 50/0",
        "The answer is: 79-(44-15",
        "The answer is: ((((79))))-)((",
        "The answer is: " + "(" * 98 + "49" + ")" * 98,  # deep nesting that fits in the length limit
        "The answer is: " + "(" * 150 + "50" + ")" * 150,  # longer than any answer may be
        "The answer is: " + "9" * 5000,
        "The answer is: " + "9*" * 90 + "9",
        "The answer is: " + "9" * 400 + "*" + "9" * 400 + "=50",  # floats overflow to inf in the paper rule
        "The answer is: 1e3",
        "The answer is: 50.0",
        "The answer is: [50]",
        "The answer is: lambda: 50",
    ],
)
def test_adversarial_answers_are_rejected_quickly_without_running_anything(response, capfd):
    start = time.perf_counter()
    assert scores(response) == (0, 0)
    assert time.perf_counter() - start < 0.5
    assert "hacked" not in capfd.readouterr().out


ANSWER_ALPHABET = st.sampled_from(list("0123456789+-*/()=, .xe_[]<>;") + ["15", "44", "79", "50", "**", "×", "÷"])


@settings(max_examples=300, deadline=None)
@given(st.lists(ANSWER_ALPHABET, max_size=80).map("".join))
def test_any_answer_text_is_scored_without_raising(answer):
    result = countdown.process_results(DOC, [f"The answer is: {answer}"])
    assert set(result) == {"acc", "acc_paper_rule"} and set(result.values()) <= {0, 1}


# ---------------------------------------------------------------- the paper's rule, rule by rule


def paper(response: str, reference: str = OTHER_REFERENCE, target: int = TARGET) -> int:
    return scores(response, target=target, reference=reference)[1]


def test_paper_rule_1_empty_response_or_reference_is_wrong():
    assert paper("") == 0
    assert scores("The answer is: 44-15=29,79-29=50", reference="") == (1, 0)


def test_paper_rule_2_reference_anywhere_in_the_response_is_right_whatever_the_answer_line():
    reasoning = "Try 44 - 15 = 29,\n 79 - 29 = 50 and check.\nThe answer is: 7"
    assert scores(reasoning, reference=REFERENCE) == (0, 1)  # whitespace removed from both
    assert paper("I think it is 44-15=29,79-29=50", reference=REFERENCE) == 1
    assert paper("Try 44-15=29, then 79-29=50.\nThe answer is: 7", reference=REFERENCE) == 0  # not contiguous


def test_paper_rule_3_formula_is_the_first_answer_line_up_to_a_newline_or_period():
    assert paper("The answer is: 44-15=29,79-29=51\nThe answer is: 44-15=29,79-29=50") == 0  # the first counts
    assert paper("the answer is 44-15=29,79-29=50") == 1  # the case of T is free
    assert paper("THE ANSWER IS 7\nwe had 79-29=50") == 1  # not an answer line: the longest run " 79-29=50"
    assert paper("The answer is: 44-15=29. Then 79-29=50") == 0  # up to the period: 29
    assert paper("The answer is:\n44-15=29,79-29=50") == 1  # ":" and whitespace after it are skipped


def test_paper_rule_3_characters_outside_the_formula_alphabet_are_deleted():
    # the words are deleted: "44-15  29" gives 29, " 79-29  50" gives 50
    assert paper("The answer is: steps 44-15 is 29, 79-29 gives 50") == 1
    assert paper("The answer is: 44-15=29,79-29=50 (so 50)") == 1


def test_paper_rule_3_chinese_answer_line_when_the_english_one_has_no_step_separator():
    assert paper("答案是 44-15=29，79-29=50") == 1  # full-width comma
    assert paper("The answer is: 50\n答案：44-15=29；79-29=50") == 1  # replaces "50", which has no = , ;
    assert paper("The answer is: 44-15=29\n答案为 79-29=50") == 0  # English has "=": Chinese not tried


def test_paper_rule_3_longest_run_only_when_no_formula_text_is_left():
    assert paper("Steps: 44-15=29, 79-29=50 works") == 1
    assert paper("The answer is: fifty\nsince 79-29=50") == 1  # the answer line leaves nothing
    assert paper("The answer is: 25+25\nsince 79-29=50") == 1  # formula "25+25": no fallback, 50
    assert paper("The answer is: 25+24\nsince 79-29=50") == 0
    assert paper("no digits at all") == 0


def test_paper_rule_4_division_by_zero_anywhere_makes_the_answer_wrong():
    assert paper("The answer is: 79-29=50,5/0") == 0
    assert paper("The answer is: 5/0,79-29=50") == 0
    assert paper("The answer is: 79-29=50,5÷0=7") == 0


def test_paper_rule_4_false_steps_are_skipped_and_pieces_without_a_step_ignored():
    assert paper("The answer is: 79-29=50,1+1=3") == 1  # the false last step is skipped
    assert paper("The answer is: 44-15=29,79-29=49") == 0  # skipped: running result stays 29
    assert paper("The answer is: 44-15=29,79-30=50") == 0  # the stated result alone does not count
    assert paper("The answer is: 79-29=50,,;50") == 1


def test_paper_rule_4_step_without_a_stated_result_and_other_signs():
    assert paper("The answer is: 44-15, 79-29") == 1
    assert paper("The answer is: 10×5=50") == 1
    assert paper("The answer is: 100÷2") == 1
    assert paper("The answer is: 200/4=50") == 1
    assert paper("The answer is: 7/2=3.5") == 0  # formula "7/2=3": false, skipped; no running result


def test_paper_rule_5_numbers_used_are_never_checked_and_a_result_is_needed():
    assert paper("The answer is: 49+1=50", target=50) == 1
    assert paper("The answer is: 50") == 0  # no step, so no running result
    assert paper("The answer is: 44-15=29,79-29=50", target=51, reference="x") == 0


@pytest.mark.parametrize(
    ("response", "numbers", "target", "expected"),
    [
        ("The answer is: 12/3=4,20+4=25", [12, 3, 20], 24, (0, 0)),  # false last step skipped: 4 != 24
        ("The answer is: [44-15=29,79-29=50]", NUMBERS, TARGET, (1, 1)),
        ("The answer is: 44-15=29,79-29=50. We used every number once.", NUMBERS, TARGET, (1, 1)),
        ("The answer is: 44-15=29,79-29=50 and we are done", NUMBERS, TARGET, (0, 1)),
        ("The answer is: 79-(44-15)=50", NUMBERS, TARGET, (1, 0)),  # read as 79-44-15=50: running 35
        ("The answer is: 79−(44−15)=50", NUMBERS, TARGET, (1, 0)),  # a Unicode minus is deleted
    ],
)
def test_paper_rule_consequences_listed_in_tasks_md(response, numbers, target, expected):
    assert scores(response, numbers=numbers, target=target, reference=OTHER_REFERENCE) == expected


# ---------------------------------------------------------------- lm-eval


@pytest.fixture(scope="module")
def loaded_tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_CONFIGS / "countdown"), include_defaults=False,
                          metadata={"countdown_num_instances": 8})
    assert {"countdown", "countdown_fewshot"} <= set(manager.all_subtasks)
    assert not any(name.startswith("_") for name in manager.all_tasks)
    return manager.load(["countdown", "countdown_fewshot"])["tasks"]


@pytest.mark.parametrize(("name", "shots"), [("countdown", 0), ("countdown_fewshot", 3)])
def test_task_manager_builds_prompts_from_train_examples(loaded_tasks, name, shots):
    task = loaded_tasks[name]
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=2)
    assert task.config.num_fewshot == shots and len(task.eval_docs) == 8
    test_instances = set(task.eval_docs["instance"])
    for instance in task.instances:
        prompt, gen_kwargs = instance.args
        assert prompt.endswith(countdown.doc_to_text(instance.doc))
        assert prompt.count("Question:") == shots + 1 and len(re.findall(r"\nThe answer is: \d", prompt)) == shots
        shown = set(re.findall(r"numbers (\d+), (\d+) and (\d+), make (\d+)", prompt))
        assert len(shown) == shots + 1
        assert {",".join(numbers) for numbers in shown} & test_instances == {instance.doc["instance"]}
        assert gen_kwargs["until"] == ["Question:"] and gen_kwargs["do_sample"] is False
        assert task.process_results(instance.doc, [f"The answer is: {instance.doc['reference']}"]) == {
            "acc": 1, "acc_paper_rule": 1}


def test_task_manager_passes_the_user_file_through_metadata(tmp_path):
    from lm_eval.tasks import TaskManager

    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps({"input": "15,44,79,50"}) + "\n")
    manager = TaskManager(include_path=str(TASK_CONFIGS / "countdown"), include_defaults=False,
                          metadata={"countdown_file": str(path)})
    task = manager.load("countdown")["tasks"]["countdown"]
    assert task.eval_docs["instance"] == ["15,44,79,50"]
