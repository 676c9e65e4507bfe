"""LLM judge of creative_writing stories over an OpenAI-compatible chat API (the paper used gpt-4o).

    python -m lm_eval_infogain.judge --a samples_A.jsonl --b samples_B.jsonl \\
        --endpoint https://api.openai.com/v1 --model gpt-4o [--output report.json]

--a and --b are lm-eval `--log_samples` files (samples_creative_writing_*.jsonl) of two runs on the
same prompts, paired by doc_id.

Pairwise (the paper's protocol): the judge sees the writing prompt and two stories, explains briefly
and ends with `Verdict: A`, `Verdict: B` or `Verdict: tie`. Every prompt is asked twice, once with
run A's story shown first and once with run B's, so the judge's position bias cancels. A prompt's
score for A is the mean of its readable verdicts (win 1, tie 0.5, loss 0); the win rate of A is the
mean over prompts. Its 95% interval is Wilson's score interval with one trial per scored prompt: exact
in spirit when every prompt is a clean win or loss, conservative when orders disagree or ties occur,
and, unlike the normal interval, never a single point at 0% or 100%.

Single (`--single`, --a only): the judge scores each story 1-10 on creativity, coherence, engagement,
writing quality and prompt adherence, plus overall, as a JSON object; the report gives each mean with
a 95% normal interval (mean +- 1.96 standard errors).

The API key is read only from the environment variable named by --api-key-env (OPENAI_API_KEY) and is
masked in everything this command prints or writes: verbatim, URL-quoted, base64-encoded (also inside a
longer base64 text) and shortened the way servers echo it (`sk-...CRET`, `sk-proj-****CRET`).
Requests time out after --timeout seconds and are retried --retries times with exponential backoff
(the openai client's own: connection errors, timeouts, 408, 409, 429 and 5xx).
"""

import argparse
import base64
import json
import math
import os
import re
import statistics
import sys
import urllib.parse
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from scipy import stats
from tqdm import tqdm

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.tasks import common
from lm_eval_infogain.tasks.creative_writing import doc_to_text

CRITERIA = ("creativity", "coherence", "engagement", "writing_quality", "prompt_adherence", "overall")
Z_95 = float(stats.norm.ppf(0.975))
MASK = "***"
SYSTEM_MESSAGE = "You are an experienced fiction editor. You judge short stories fairly, briefly and consistently."
# The last "Verdict: X" line; A and B must be capitals ("verdict: a tie" is a tie, not A), the rest any case.
VERDICT = re.compile(
    r"(?i:verdict)\s*(?:(?i:is)\s+)?[:=\-]?"  # "Verdict:", "verdict -", "The verdict is"
    r"[\s*_`'\"\[(]*(?:(?i:response|story)\s+)?"  # markdown, quotes, brackets, "Response"
    r"(?:(A|B)|((?i:tie)))(?!\w)"
)
JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class JudgeError(UsageError):
    """A problem the user must fix (input files, endpoint, key), told in one line."""


@dataclass(frozen=True)
class Story:
    doc_id: int
    writing_prompt: str
    text: str


# ---------------------------------------------------------------- samples files


def read_samples(path: Path) -> dict[int, dict]:
    """doc_id -> sample of an lm-eval --log_samples JSONL file of a creative_writing task."""
    try:
        records = common.read_records(path, "samples file")
    except ValueError as error:
        raise JudgeError(str(error)) from None
    samples: dict[int, dict] = {}
    for line_number, sample in records:
        problem = sample_problem(sample)
        if problem is None and sample["doc_id"] in samples:
            problem = f"doc_id {sample['doc_id']} appears twice"
        if problem:
            raise JudgeError(f"samples file {path}, line {line_number}: {problem}")
        samples[sample["doc_id"]] = sample
    return samples


def sample_problem(sample: dict) -> str | None:
    if not isinstance(sample.get("doc_id"), int):
        return "no integer doc_id; expected a line of an lm-eval --log_samples file"
    if not isinstance(sample.get("doc"), dict) or "premise" not in sample["doc"]:
        return "its doc has no 'premise'; expected samples of creative_writing or creative_writing_online"
    responses = sample.get("filtered_resps")
    if not isinstance(responses, list) or not responses or not isinstance(responses[0], str):
        return "filtered_resps does not hold the story text"
    return None


def story(sample: dict) -> Story:
    return Story(sample["doc_id"], doc_to_text(sample["doc"]).strip(), sample["filtered_resps"][0])


def preview(doc_ids: list[int]) -> str:
    shown = ", ".join(str(doc_id) for doc_id in doc_ids[:10])
    return f"[{shown}{', ...' if len(doc_ids) > 10 else ''}]"


def paired_stories(samples_a: dict[int, dict], samples_b: dict[int, dict]) -> list[tuple[Story, Story]]:
    """(A's story, B's story) per doc_id; a JudgeError when the files do not hold the same prompts."""
    only_a, only_b = sorted(samples_a.keys() - samples_b.keys()), sorted(samples_b.keys() - samples_a.keys())
    if only_a or only_b:
        raise JudgeError(f"the samples files hold different doc_ids: only in A {preview(only_a)}, "
                         f"only in B {preview(only_b)}; judge runs over the same prompts and --limit")
    for doc_id in sorted(samples_a):
        if samples_a[doc_id]["doc"] != samples_b[doc_id]["doc"]:
            raise JudgeError(f"doc_id {doc_id} holds different prompts in A and B; "
                             "were both runs on the same prompts file?")
    return [(story(samples_a[doc_id]), story(samples_b[doc_id])) for doc_id in sorted(samples_a)]


# ---------------------------------------------------------------- judge prompts and replies


def pairwise_messages(writing_prompt: str, first: str, second: str) -> list[dict]:
    request = (
        f"Two responses were written for this writing prompt.\n\n[Writing prompt]\n{writing_prompt}\n\n"
        f"[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
        "Which response is the better story for the prompt? Weigh creativity, coherence, engagement, writing "
        "quality and how well it follows the prompt; do not let the order of the responses or their length "
        "alone decide. Explain your judgement in a few sentences, then end with one line that is exactly "
        "`Verdict: A`, `Verdict: B` or `Verdict: tie`."
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": request}]


def single_messages(writing_prompt: str, text: str) -> list[dict]:
    keys = ", ".join(f'"{criterion}"' for criterion in CRITERIA)
    request = (
        f"Rate this story, written for the writing prompt below.\n\n[Writing prompt]\n{writing_prompt}\n\n"
        f"[Story]\n{text}\n\n"
        "Give each of creativity, coherence, engagement, writing quality, prompt adherence and an overall "
        "impression an integer score from 1 (poor) to 10 (excellent). Answer with only a JSON object with the "
        f'keys {keys} and a short "explanation" string.'
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": request}]


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "tie" from the reply's last verdict line; None when it has none."""
    matches = VERDICT.findall(reply)
    if not matches:
        return None
    letter, tie = matches[-1]
    return letter or tie.lower()


def parse_scores(reply: str) -> dict[str, float] | None:
    """The criterion scores of a single-story reply; None when it holds no JSON object with all of them in 1-10."""
    match = JSON_OBJECT.search(reply)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None  # an unreadable reply is an outcome we count, not a failure of the run
    if not isinstance(data, dict):
        return None
    scores = {criterion: data.get(criterion) for criterion in CRITERIA}
    in_range = all(isinstance(score, (int, float)) and not isinstance(score, bool) and 1 <= score <= 10
                   for score in scores.values())
    return scores if in_range else None


def score_for_a(verdict: str | None, a_shown_first: bool) -> float | None:
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if (verdict == "A") == a_shown_first else 0.0


# ---------------------------------------------------------------- statistics


# Not scipy's binomtest(k, n).proportion_ci(method="wilson"): it takes whole successes, and a pairwise
# win rate counts a tie (or a split between the two orders) as half a win.
def wilson_interval(rate: float, trials: int) -> list[float]:
    """Wilson's 95% score interval for a success rate over `trials` trials."""
    z2 = Z_95**2
    center = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half_width = Z_95 * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    return [max(0.0, center - half_width), min(1.0, center + half_width)]


def normal_interval(values: list[float]) -> list[float] | None:
    """95% normal interval of a mean (its standard error from the sample's standard deviation)."""
    if len(values) < 2:
        return None
    low, high = stats.norm.interval(0.95, loc=statistics.fmean(values), scale=stats.sem(values))
    return [float(low), float(high)]


def pairwise_summary(judgments: list[dict]) -> dict:
    scores_by_doc = defaultdict(list)
    for judgment in judgments:
        scores_by_doc[judgment["doc_id"]].append(judgment["score_a"])
    prompt_scores = [statistics.fmean(readable) for scores in scores_by_doc.values()
                     if (readable := [score for score in scores if score is not None])]
    outcomes = Counter({1.0: "a_wins", 0.0: "b_wins", 0.5: "ties", None: "unreadable"}[j["score_a"]] for j in judgments)
    win_rate = statistics.fmean(prompt_scores) if prompt_scores else None
    return {
        "win_rate_a": win_rate,
        "ci95": None if win_rate is None else wilson_interval(win_rate, len(prompt_scores)),
        "ci_method": "Wilson score interval, one trial per scored prompt (prompt score = mean of both orders)",
        "prompts": len(scores_by_doc),
        "prompts_scored": len(prompt_scores),
        "judgments": {name: outcomes[name] for name in ("a_wins", "b_wins", "ties", "unreadable")},
        "prompts_where_orders_disagree": sum(len({score for score in scores if score is not None}) > 1
                                             for scores in scores_by_doc.values()),
    }


def single_summary(judgments: list[dict]) -> dict:
    scored = [judgment["scores"] for judgment in judgments if judgment["scores"] is not None]
    means = {}
    for criterion in CRITERIA:
        values = [scores[criterion] for scores in scored]
        means[criterion] = {"mean": statistics.fmean(values) if values else None, "ci95": normal_interval(values)}
    return {"stories": len(judgments), "stories_scored": len(scored), "unreadable": len(judgments) - len(scored),
            "ci_method": "normal: mean +- 1.96 standard errors", "criteria": means}


# ---------------------------------------------------------------- the endpoint


class ChatJudge:
    """One judge model behind an OpenAI-compatible endpoint; `ask` turns API failures into one-line JudgeErrors."""

    def __init__(self, endpoint: str, model: str, api_key: str, key_env: str, timeout: float, retries: int):
        try:
            import openai  # the `judge` extra, imported here so the rest of the package runs without it
        except ImportError:
            raise JudgeError("the judge needs the openai package: pip install 'lm_eval_infogain[judge]'") from None
        self.openai = openai
        self.endpoint, self.model, self.key_env, self.timeout, self.retries = endpoint, model, key_env, timeout, retries
        self.client = openai.OpenAI(base_url=endpoint, api_key=api_key, timeout=timeout, max_retries=retries)

    def ask(self, messages: list[dict]) -> str:
        # `from None` everywhere: the openai errors carry the request, headers and key included.
        try:
            completion = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0)
        except self.openai.AuthenticationError:
            raise JudgeError(f"the judge endpoint {self.endpoint} rejected the API key in ${self.key_env} "
                             "(HTTP 401); check that variable") from None
        except self.openai.APITimeoutError:
            raise JudgeError(f"the judge endpoint {self.endpoint} did not answer within {self.timeout:g} s "
                             f"(tried {self.retries + 1} times); raise --timeout or check the server") from None
        except self.openai.APIConnectionError:
            raise JudgeError(f"cannot reach the judge endpoint {self.endpoint} (tried {self.retries + 1} times); "
                             "is the server up and the URL right (e.g. http://host:port/v1)?") from None
        except self.openai.APIStatusError as error:
            raise JudgeError(f"the judge endpoint {self.endpoint} answered HTTP {error.status_code} "
                             f"for model {self.model!r}: {error.message}") from None
        except self.openai.APIResponseValidationError:
            completion = None
        if not getattr(completion, "choices", None):  # e.g. `choices: []`, or a web page parsed as text
            raise JudgeError(f"the judge endpoint {self.endpoint} answered without a chat completion for model "
                             f"{self.model!r} (no choices: a web page, or not an OpenAI-compatible API?); "
                             "--endpoint is the API's base URL, e.g. http://host:port/v1")
        return completion.choices[0].message.content or ""


def ask_all(judge: ChatJudge, conversations: list[list[dict]], workers: int) -> list[str]:
    """The judge's replies, in order; the first failure stops the run (requests not yet sent are dropped)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(judge.ask, messages) for messages in conversations]
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="judging", unit="request"):
                future.result()
        finally:
            for future in futures:
                future.cancel()
    return [future.result() for future in futures]


def judge_pairs(judge: ChatJudge, pairs: list[tuple[Story, Story]], workers: int) -> list[dict]:
    """Two judgments per prompt, A's story shown first and then B's."""
    conversations, judgments = [], []
    for story_a, story_b in pairs:
        for a_first in (True, False):
            first, second = (story_a, story_b) if a_first else (story_b, story_a)
            conversations.append(pairwise_messages(story_a.writing_prompt, first.text, second.text))
            judgments.append({"doc_id": story_a.doc_id, "shown_first": "a" if a_first else "b"})
    for judgment, reply in zip(judgments, ask_all(judge, conversations, workers), strict=True):
        verdict = parse_verdict(reply)
        judgment.update(verdict=verdict, score_a=score_for_a(verdict, judgment["shown_first"] == "a"), reply=reply)
    return judgments


def judge_singles(judge: ChatJudge, stories: list[Story], workers: int) -> list[dict]:
    conversations = [single_messages(item.writing_prompt, item.text) for item in stories]
    replies = ask_all(judge, conversations, workers)
    return [{"doc_id": item.doc_id, "scores": parse_scores(reply), "reply": reply}
            for item, reply in zip(stories, replies, strict=True)]


# ---------------------------------------------------------------- command line


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def summary_line(report: dict) -> str:
    summary = report["summary"]
    if report["mode"] == "single":
        overall = summary["criteria"]["overall"]
        interval = "" if overall["ci95"] is None else " (95% CI {:.2f}-{:.2f})".format(*overall["ci95"])
        mean = "n/a" if overall["mean"] is None else f"{overall['mean']:.2f}"
        return (f"overall {mean}{interval} over {summary['stories_scored']} stories; "
                f"unreadable replies: {summary['unreadable']}")
    counts = summary["judgments"]
    if summary["win_rate_a"] is None:
        rate = "no readable verdicts"
    else:
        low, high = summary["ci95"]
        rate = f"win rate of A {percent(summary['win_rate_a'])} (95% CI {percent(low)}-{percent(high)}, Wilson)"
    return (f"{rate} over {summary['prompts_scored']} of {summary['prompts']} prompts; "
            f"judgments: A {counts['a_wins']}, B {counts['b_wins']}, tie {counts['ties']}, "
            f"unreadable {counts['unreadable']}")


# A shortened key as servers echo it: a start of the key (3+ characters, e.g. "sk-"), filler (3+ dots,
# stars or bullets, or an ellipsis) and an end of the key (4+), or the filler and the end alone ("****CRET").
FILLER = r"(?:[.*\u2022]{3,}|\u2026)"
MIN_PARTIAL_KEY = 8  # shorter keys have no start and end that are not also common text
MIN_BASE64_BYTES = 6  # a base64 run of fewer key bytes could match ordinary text


def base64_forms(secret: str) -> set[str]:
    """The key's base64 as it appears in any base64 text that holds it: one run per byte alignment (0, 1, 2),
    each cut to whole 3-byte groups, whose characters depend on the key alone; both alphabets."""
    raw = secret.encode()
    forms = set()
    for offset in range(3):
        aligned = raw[offset:len(raw) - (len(raw) - offset) % 3]
        if len(aligned) >= MIN_BASE64_BYTES:
            forms |= {base64.b64encode(aligned).decode(), base64.urlsafe_b64encode(aligned).decode()}
    return forms


def partial_key_pattern(secret: str) -> re.Pattern | None:
    if len(secret) < MIN_PARTIAL_KEY:
        return None
    starts = "|".join(re.escape(secret[:n]) for n in range(len(secret) - 1, 2, -1))
    ends = "|".join(re.escape(secret[-n:]) for n in range(len(secret) - 1, 3, -1))
    return re.compile(rf"(?:{starts}){FILLER}(?:{ends})?|{FILLER}(?:{ends})")


def mask(text: str, secret: str) -> str:
    """`text` with every form of the key a server may echo replaced by MASK (longest forms first)."""
    if not secret:
        return text
    for form in sorted({secret, urllib.parse.quote(secret, safe="")} | base64_forms(secret), key=len, reverse=True):
        text = text.replace(form, MASK)
    partial = partial_key_pattern(secret)
    return text if partial is None else partial.sub(MASK, text)


def check_endpoint(endpoint: str) -> None:
    """An http(s) URL with a host (and a numeric port, if any): anything else fails in the openai client
    with an error that does not name the flag."""
    try:
        url = urllib.parse.urlsplit(endpoint)
        url.port  # noqa: B018 (parsing the port raises on a non-numeric one)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise JudgeError(f"--endpoint {endpoint!r} is not an http(s) URL with a host; "
                         "e.g. https://api.openai.com/v1 or http://localhost:8000/v1")


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lm_eval_infogain.judge",
        description="Judge creative_writing samples with an LLM over an OpenAI-compatible API.",
    )
    parser.add_argument("--a", required=True, type=Path, help="samples JSONL of run A (lm-eval --log_samples)")
    parser.add_argument("--b", type=Path, help="samples JSONL of run B (pairwise mode)")
    parser.add_argument("--single", action="store_true", help="score each story of --a on its own instead")
    parser.add_argument("--endpoint", required=True, help="API base URL, e.g. https://api.openai.com/v1")
    parser.add_argument("--model", required=True, help="judge model name, e.g. gpt-4o")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--output", type=Path, default=Path("judge_report.json"),
                        help="JSON report (judge_report.json)")
    parser.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per request (120)")
    parser.add_argument("--retries", type=int_at_least(0), default=5, help="retries per request, with backoff (5)")
    parser.add_argument("--workers", type=int_at_least(1), default=4, help="requests in flight at once (4)")
    args = parser.parse_args(argv)
    if args.single == (args.b is not None):
        parser.error("give --b for pairwise judging, or --single without --b")
    return args


def run(args: argparse.Namespace, api_key: str) -> dict:
    check_endpoint(args.endpoint)
    samples_a = read_samples(args.a)
    pairs = None if args.single else paired_stories(samples_a, read_samples(args.b))
    judge = ChatJudge(args.endpoint, args.model, api_key, args.api_key_env, args.timeout, args.retries)
    report = {"mode": "single" if args.single else "pairwise", "judge_model": args.model, "endpoint": args.endpoint,
              "samples_a": str(args.a), "samples_b": None if args.single else str(args.b)}
    if args.single:
        judgments = judge_singles(judge, [story(sample) for _, sample in sorted(samples_a.items())], args.workers)
        return {**report, "summary": single_summary(judgments), "judgments": judgments}
    judgments = judge_pairs(judge, pairs, args.workers)
    return {**report, "summary": pairwise_summary(judgments), "judgments": judgments}


def readable_judgments(report: dict) -> int:
    """How many of the judge's replies held a verdict (pairwise) or every score (single)."""
    summary = report["summary"]
    return summary["stories_scored"] if report["mode"] == "single" else len(report["judgments"]) - \
        summary["judgments"]["unreadable"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "")
    try:
        if not api_key:
            raise JudgeError(f"the environment variable {args.api_key_env} that should hold the judge's API key is "
                             "not set (or empty); export it, or name another variable with --api-key-env")
        if args.output.is_dir():
            raise JudgeError(f"--output {args.output} is a directory; allowed: the path of the JSON report file")
        report = run(args, api_key)
    except JudgeError as error:
        sys.exit(f"judge: {mask(' '.join(str(error).split()), api_key)}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(mask(json.dumps(report, indent=2, ensure_ascii=False), api_key) + "\n", encoding="utf-8")
    if report["judgments"] and not readable_judgments(report):  # the report keeps every reply, to see why
        first_reply = " ".join(report["judgments"][0]["reply"].split())[:80]
        sys.exit(mask(f"judge: none of the {len(report['judgments'])} replies of {args.model!r} held a readable "
                      f"verdict (the first: {first_reply!r}); every reply is in {args.output}", api_key))
    print(mask(summary_line(report), api_key))
    print(f"report: {args.output}")


if __name__ == "__main__":
    main()
