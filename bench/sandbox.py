"""Code-task sandbox speed, old against new in one run: programs per second on the code-task fixtures.

    python bench/sandbox.py                 # -> results/bench-sandbox.json

The programs are the fixtures' correct solutions with their tests (humaneval_local: prompt, canonical
solution, test, check; mbpp_local: code, test_list), each run --repeats times. Three ways, in turns so
that a change in the machine's load hits all of them alike:
- old: the in-process guard alone, one program after another (lm-eval scores one document at a time);
- bubblewrap_one_at_a_time: the bubblewrap sandbox the same way;
- bubblewrap_side_by_side: the bubblewrap sandbox through `code_metrics.run_ahead`, as the code tasks run.
The rate of each is the median over --rounds rounds; the target is new >= half of old.

    python bench/sandbox.py --baseline before.json --note "..."

compares the side-by-side rate with that of an earlier run (`before.json`, written by this benchmark
at an earlier commit, in the same sitting: on a shared machine the load moves between sittings),
round by round; the target for a change of the sandbox is at least 0.8 of the baseline.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from lm_eval_infogain.tasks import code_metrics
from lm_eval_infogain.tasks.sandbox import Sandbox, Status, run_program

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def fixture_programs() -> list[str]:
    humaneval = [json.loads(line) for line in (FIXTURES / "humaneval_test.jsonl").read_text().splitlines()]
    mbpp = [json.loads(line) for line in (FIXTURES / "mbpp_test.jsonl").read_text().splitlines()]
    return ([code_metrics.program(doc["prompt"] + doc["canonical_solution"],
                                  f"{doc['test']}\ncheck({doc['entry_point']})") for doc in humaneval]
            + [code_metrics.program(doc["code"], "\n".join(doc["test_list"])) for doc in mbpp])


def one_at_a_time(sandbox: Sandbox):
    def run(programs: list[str]) -> None:
        statuses = {run_program(source, sandbox=sandbox).status for source in programs}
        assert statuses == {Status.PASSED}, statuses

    return run


def side_by_side(programs: list[str]) -> None:
    """What a code task does; the programs differ by a comment, so run_ahead runs each one."""
    code_metrics.run_ahead(programs)
    assert all(code_metrics.outcomes_run_ahead.values())


def baseline_comparison(baseline: dict, rates: dict, medians: dict) -> dict:
    """Side by side, this run against the baseline's: the ratio of medians, and of each round with the
    baseline's round of the same number (their range is the spread the machine's load gave)."""
    before = baseline["rounds"]["bubblewrap_side_by_side"]
    return {"programs_per_second": baseline["programs_per_second"],
            "rounds_side_by_side": before,
            "side_by_side_over_baseline": medians["bubblewrap_side_by_side"]
            / baseline["programs_per_second"]["bubblewrap_side_by_side"],
            "round_ratios": [after / earlier for after, earlier in zip(rates["bubblewrap_side_by_side"], before)]}


def main() -> None:
    parser = argparse.ArgumentParser(description="Programs per second: the in-process guard against bubblewrap.")
    parser.add_argument("--repeats", type=int, default=5, help="copies of each fixture program per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("results/bench-sandbox.json"))
    parser.add_argument("--baseline", type=Path, help="this benchmark's JSON from an earlier commit, to compare with")
    parser.add_argument("--note", default="", help="what the machine was doing, kept in the JSON")
    args = parser.parse_args()
    if os.environ.get("MDM_INFOGAIN_UNSAFE_SANDBOX", "") not in ("", "0"):
        raise SystemExit("unset MDM_INFOGAIN_UNSAFE_SANDBOX: this benchmark runs both sandboxes itself")
    fixtures = fixture_programs()
    programs = [f"{source}\n# copy {copy}" for copy in range(args.repeats) for source in fixtures]
    ways = {"old": one_at_a_time(Sandbox.GUARD_ONLY),
            "bubblewrap_one_at_a_time": one_at_a_time(Sandbox.BUBBLEWRAP),
            "bubblewrap_side_by_side": side_by_side}
    rates = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            start = time.perf_counter()
            run(programs)
            rates[name].append(len(programs) / (time.perf_counter() - start))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "programs_per_second": medians,
        "new_over_old": medians["bubblewrap_side_by_side"] / medians["old"],
        "new_one_at_a_time_over_old": medians["bubblewrap_one_at_a_time"] / medians["old"],
        "rounds": rates,
        "settings": {"programs": len(programs), "fixture_programs": len(fixtures), "repeats": args.repeats,
                     "rounds": args.rounds, "programs_per_cpu": code_metrics.PROGRAMS_PER_CPU},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": len(os.sched_getaffinity(0)), "load_average_1min": os.getloadavg()[0]},
    }
    if args.baseline is not None:
        report["baseline"] = baseline_comparison(json.loads(args.baseline.read_text()), rates, medians)
    if args.note:
        report["note"] = args.note
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"programs_per_second": {name: round(rate, 1) for name, rate in medians.items()},
                      "new_over_old": round(report["new_over_old"], 2),
                      "new_one_at_a_time_over_old": round(report["new_one_at_a_time_over_old"], 2),
                      **({"side_by_side_over_baseline": round(report["baseline"]["side_by_side_over_baseline"], 2),
                          "round_ratios": [round(ratio, 2) for ratio in report["baseline"]["round_ratios"]]}
                         if args.baseline is not None else {})}, indent=2))


if __name__ == "__main__":
    main()
