"""The creative-writing judge against a fake OpenAI-compatible server on 127.0.0.1 (a thread of this process)."""

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lm_eval_infogain import judge

KEY = "sk-fake-Qz7Lm3Rk9Tx2Wv5Pn8"  # distinctive, so any leak is found by a plain substring search
KEY_ENV = "JUDGE_TEST_KEY"
MARKER = "(a vivid story)"  # the fake judge prefers the story that holds it
UNREADABLE = "(garbled)"  # the fake judge answers a story holding it without a verdict or scores


def altered_forms(key: str) -> list[str]:
    """The key as servers also echo it: base64 (of an Authorization header), shortened."""
    return [base64.b64encode(f"Bearer {key}".encode()).decode(), f"{key[:3]}...{key[-4:]}"]


class FakeJudge:
    """POST /v1/chat/completions. Pairwise: picks the response holding MARKER (tie if both or neither), or
    always "A" when `biased`. Single: scores 8 with MARKER, else 4. Fails the first `fail_first` requests with
    a 500; answers 401 (echoing the presented key, as some servers do) to any key other than KEY."""

    def __init__(self, fail_first=0, biased=False, delay=0.0, echo_key=False, raw=None):
        self.fail_first, self.biased, self.delay, self.echo_key = fail_first, biased, delay, echo_key
        self.raw = raw  # (content type, body) answered to every request instead of a chat completion
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        handler = type("Handler", (Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def reply(self, request: dict, presented_key: str) -> str:
        content = request["messages"][-1]["content"]
        echo = f" (request signed {presented_key})" + "".join(f", {form}" for form in altered_forms(presented_key)) \
            if self.echo_key else ""
        if "[Response B]" not in content:
            story = content.split("[Story]")[1]
            if UNREADABLE in story:
                return "I liked it."
            score = 8 if MARKER in story else 4
            scores = {criterion: score for criterion in judge.CRITERIA}
            return f"Here are my scores{echo}:\n```json\n{json.dumps({**scores, 'explanation': 'fine'})}\n```"
        before_b, after_b = content.split("[Response B]")
        if UNREADABLE in content:
            return "Both are interesting in their own way."
        if self.biased:
            return f"The first one reads better{echo}.\nVerdict: A"
        has_a, has_b = MARKER in before_b, MARKER in after_b
        verdict = "A" if has_a and not has_b else "B" if has_b and not has_a else "tie"
        return f"Response {verdict} is more vivid{echo}.\n**Verdict: {verdict}**"


class Handler(BaseHTTPRequestHandler):
    fake: FakeJudge

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        presented_key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.fake.lock:
            self.fake.requests.append(body)
            attempt = len(self.fake.requests)
        time.sleep(self.fake.delay)
        if self.path != "/v1/chat/completions":
            return self.answer(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        if presented_key != KEY:
            return self.answer(401, {"error": {"message": f"Incorrect API key provided: {presented_key}",
                                               "type": "invalid_request_error", "code": "invalid_api_key"}})
        if attempt <= self.fake.fail_first:
            return self.answer(500, {"error": {"message": "the judge is overloaded", "type": "server_error"}})
        if self.fake.raw is not None:
            return self.answer(200, *self.fake.raw)
        content = self.fake.reply(body, presented_key)
        self.answer(200, {
            "id": f"chatcmpl-{attempt}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

    def answer(self, status: int, payload, content_type="application/json"):
        data = (json.dumps(payload) if isinstance(payload, dict) else payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client hung up first: the timeout test
            pass

    def log_message(self, *args):  # keep the test output quiet
        pass


PREMISES = ["A door appears in the sea.", "The moon writes a letter.", "A clock runs backward.", "Bees hold a vote."]


def write_samples(path: Path, stories: list[str], premises=PREMISES) -> Path:
    """A samples file in the layout lm-eval's --log_samples writes for creative_writing."""
    lines = []
    for doc_id, (premise, text) in enumerate(zip(premises, stories, strict=True)):
        doc = {"id": doc_id, "premise": premise}
        lines.append(json.dumps({
            "doc_id": doc_id, "doc": doc, "target": "",
            "arguments": {"gen_args_0": {"arg_0": f"Write a story ... {premise}\n", "arg_1": {"until": []}}},
            "resps": [[text]], "filtered_resps": [text], "filter": "none",
            "metrics": ["words"], "doc_hash": "x", "prompt_hash": "y", "target_hash": "z", "words": 3,
        }))
    path.write_text("\n".join(lines) + "\n")
    return path


# Doc 0: both marked (tie), docs 1 and 2: only A's (A wins), doc 3: only B's (B wins).
STORIES_A = [f"Alpha zero {MARKER}", f"Alpha one {MARKER}", f"Alpha two {MARKER}", "Alpha three"]
STORIES_B = [f"Beta zero {MARKER}", "Beta one", "Beta two", f"Beta three {MARKER}"]


@pytest.fixture
def samples(tmp_path):
    return write_samples(tmp_path / "a.jsonl", STORIES_A), write_samples(tmp_path / "b.jsonl", STORIES_B)


@pytest.fixture(autouse=True)
def judge_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def judge_args(endpoint: str, samples_a: Path, samples_b: Path | None, output: Path, *extra: str) -> list[str]:
    pair = ["--b", str(samples_b)] if samples_b else ["--single"]
    return ["--a", str(samples_a), *pair, "--endpoint", endpoint, "--model", "fake-judge",
            "--api-key-env", KEY_ENV, "--output", str(output), *extra]


def error_of(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        judge.main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("judge: ") and "\n" not in message and KEY not in message
    return message


# ---------------------------------------------------------------- pairwise


def test_pairwise_win_rate_from_both_orders(samples, tmp_path, capsys):
    output = tmp_path / "report.json"
    with FakeJudge() as fake:
        judge.main(judge_args(fake.endpoint, *samples, output, "--workers", "2"))
    report = json.loads(output.read_text())
    summary = report["summary"]
    # prompt scores 0.5, 1, 1, 0 -> 2.5 / 4; Wilson 95% for 0.625 over 4 trials, worked out by hand
    assert summary["win_rate_a"] == pytest.approx(0.625)
    assert summary["ci95"] == pytest.approx([0.2194, 0.9081], abs=1e-4)
    assert summary["judgments"] == {"a_wins": 4, "b_wins": 2, "ties": 2, "unreadable": 0}
    assert summary["prompts"] == summary["prompts_scored"] == 4 and summary["prompts_where_orders_disagree"] == 0
    assert "win rate of A 62.5% (95% CI 21.9%-90.8%, Wilson) over 4 of 4 prompts" in capsys.readouterr().out

    assert len(fake.requests) == 8
    for premise, story_a, story_b in zip(PREMISES, STORIES_A, STORIES_B, strict=True):
        asked = [request["messages"][-1]["content"] for request in fake.requests
                 if premise in request["messages"][-1]["content"]]
        first_shown = sorted("a" if content.index(story_a) < content.index(story_b) else "b" for content in asked)
        assert first_shown == ["a", "b"]  # asked once in each order
        assert all(request["model"] == "fake-judge" and request["temperature"] == 0 for request in fake.requests)
    assert {(j["doc_id"], j["shown_first"]) for j in report["judgments"]} == {(d, s) for d in range(4) for s in "ab"}


def test_a_judge_that_always_picks_the_first_story_gives_an_even_split(samples, tmp_path):
    output = tmp_path / "report.json"
    with FakeJudge(biased=True) as fake:
        judge.main(judge_args(fake.endpoint, *samples, output))
    summary = json.loads(output.read_text())["summary"]
    assert summary["win_rate_a"] == 0.5 and summary["prompts_where_orders_disagree"] == 4
    assert summary["judgments"] == {"a_wins": 4, "b_wins": 4, "ties": 0, "unreadable": 0}


def test_unreadable_verdicts_are_counted_and_left_out_of_the_win_rate(tmp_path):
    samples_a = write_samples(tmp_path / "a.jsonl", [f"A0 {MARKER}", f"A1 {UNREADABLE}", "A2", "A3"])
    samples_b = write_samples(tmp_path / "b.jsonl", ["B0", "B1", "B2", f"B3 {MARKER}"])
    output = tmp_path / "report.json"
    with FakeJudge() as fake:
        judge.main(judge_args(fake.endpoint, samples_a, samples_b, output))
    summary = json.loads(output.read_text())["summary"]
    assert summary["judgments"] == {"a_wins": 2, "b_wins": 2, "ties": 2, "unreadable": 2}
    assert summary["prompts_scored"] == 3 and summary["win_rate_a"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_a_server_error_is_retried(samples, tmp_path):
    output = tmp_path / "report.json"
    with FakeJudge(fail_first=1) as fake:
        judge.main(judge_args(fake.endpoint, *samples, output, "--retries", "2", "--workers", "1"))
    assert len(fake.requests) == 9  # 8 judgments plus the retried 500
    assert json.loads(output.read_text())["summary"]["win_rate_a"] == pytest.approx(0.625)


def test_the_key_is_masked_in_every_output_even_when_the_server_echoes_it(samples, tmp_path):
    """A real process, so stdout, stderr (progress bar, logging) and the report are all seen."""
    output = tmp_path / "report.json"
    env = {**os.environ, KEY_ENV: KEY, "OPENAI_LOG": "debug"}
    with FakeJudge(echo_key=True, fail_first=1) as fake:
        result = subprocess.run([sys.executable, "-m", "lm_eval_infogain.judge",
                                 *judge_args(fake.endpoint, *samples, output, "--retries", "1")],
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    report = output.read_text()
    assert "request signed ***" in report  # the echo happened and was masked
    for text in (result.stdout, result.stderr, report):
        assert KEY not in text and not any(form in text for form in altered_forms(KEY))
    assert "judging" in result.stderr and "win rate of A 62.5%" in result.stdout


def test_a_rejected_key_is_one_clear_error_without_the_key(samples, tmp_path, monkeypatch):
    wrong_key = "sk-wrong-Hh4Jj6Kk8Ll0"
    monkeypatch.setenv(KEY_ENV, wrong_key)
    with FakeJudge() as fake:
        with pytest.raises(SystemExit) as exit_info:
            judge.main(judge_args(fake.endpoint, *samples, tmp_path / "report.json"))
    message = str(exit_info.value.code)
    assert message == (f"judge: the judge endpoint {fake.endpoint} rejected the API key in ${KEY_ENV} (HTTP 401); "
                       "check that variable")
    assert wrong_key not in message and not (tmp_path / "report.json").exists()


def test_endpoint_down_is_one_clear_error(samples, tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = error_of(judge_args(f"http://127.0.0.1:{port}/v1", *samples, tmp_path / "r.json", "--retries", "1"))
    assert f"cannot reach the judge endpoint http://127.0.0.1:{port}/v1 (tried 2 times)" in message


def test_a_slow_endpoint_times_out_with_a_clear_error(samples, tmp_path):
    with FakeJudge(delay=2.0) as fake:
        message = error_of(judge_args(fake.endpoint, *samples, tmp_path / "r.json",
                                      "--timeout", "0.3", "--retries", "0"))
    assert "did not answer within 0.3 s (tried 1 times)" in message


def test_a_missing_key_variable_is_a_clear_error_before_any_request(samples, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with FakeJudge() as fake:
        message = error_of(judge_args(fake.endpoint, *samples, tmp_path / "r.json"))
    assert f"environment variable {KEY_ENV} that should hold the judge's API key is not set" in message
    assert fake.requests == []


# ---------------------------------------------------------------- input files


def test_files_with_different_doc_ids_are_refused(tmp_path):
    samples_a = write_samples(tmp_path / "a.jsonl", STORIES_A)
    samples_b = write_samples(tmp_path / "b.jsonl", STORIES_B[:3], premises=PREMISES[:3])
    message = error_of(judge_args("http://127.0.0.1:9/v1", samples_a, samples_b, tmp_path / "r.json"))
    assert "different doc_ids: only in A [3], only in B []" in message


def test_files_with_different_prompts_are_refused(tmp_path):
    samples_a = write_samples(tmp_path / "a.jsonl", STORIES_A)
    samples_b = write_samples(tmp_path / "b.jsonl", STORIES_B, premises=[*PREMISES[:3], "Something else."])
    assert "doc_id 3 holds different prompts" in error_of(judge_args("http://127.0.0.1:9/v1", samples_a, samples_b,
                                                                     tmp_path / "r.json"))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"doc_id": 0, "doc": {"Puzzle": "1234"}, "filtered_resps": ["x"]}', "its doc has no 'premise'"),
        ('{"doc": {"premise": "p"}, "filtered_resps": ["x"]}', "no integer doc_id"),
        ('{"doc_id": 0, "doc": {"premise": "p"}, "filtered_resps": []}', "filtered_resps does not hold"),
        ("not json", "not JSON"),
    ],
)
def test_a_file_that_is_not_creative_writing_samples_is_refused(tmp_path, samples, line, problem):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    message = error_of(judge_args("http://127.0.0.1:9/v1", bad, samples[1], tmp_path / "r.json"))
    assert f"samples file {bad}, line 1: {problem}" in message


def test_pairwise_needs_b_and_single_refuses_it(samples, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        judge.main(judge_args("http://x/v1", samples[0], samples[1], tmp_path / "r.json", "--single"))
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        judge.main(["--a", str(samples[0]), "--endpoint", "http://x/v1", "--model", "m"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------- single-story mode


def test_single_mode_scores_each_story(tmp_path, capsys):
    samples_a = write_samples(tmp_path / "a.jsonl", [f"A0 {MARKER}", f"A1 {MARKER}", "A2", "A3", f"A4 {UNREADABLE}"],
                              premises=[*PREMISES, "One more premise."])
    output = tmp_path / "report.json"
    with FakeJudge() as fake:
        judge.main(judge_args(fake.endpoint, samples_a, None, output))
    report = json.loads(output.read_text())
    assert len(fake.requests) == 5 and report["mode"] == "single"
    summary = report["summary"]
    assert (summary["stories"], summary["stories_scored"], summary["unreadable"]) == (5, 4, 1)
    # scores 8, 8, 4, 4: mean 6, sample sd sqrt(16/3), 95% half width 1.96 * sd / 2
    for criterion in judge.CRITERIA:
        assert summary["criteria"][criterion]["mean"] == 6
        assert summary["criteria"][criterion]["ci95"] == pytest.approx([3.7368, 8.2632], abs=1e-3)
    assert [j["scores"] and j["scores"]["overall"] for j in report["judgments"]] == [8, 8, 4, 4, None]
    assert "overall 6.00 (95% CI 3.74-8.26) over 4 stories; unreadable replies: 1" in capsys.readouterr().out


# ---------------------------------------------------------------- reply parsing


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A is better.\nVerdict: A", "A"),
        ("Verdict: B", "B"),
        ("**Verdict:** B", "B"),
        ("Verdict: **Tie**", "tie"),
        ("VERDICT: tie.", "tie"),
        ("Final verdict - Response A", "A"),
        ("The verdict is B.", "B"),
        ("Verdict: [A]", "A"),
        ("I first thought Verdict: A, but on reflection\nVerdict: B", "B"),  # the last one counts
        ("Verdict: Again, both are weak.", None),
        ("verdict: a tie", None),  # lower-case a is the article, not response A
        ("B is clearly better.", None),
        ("", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert judge.parse_verdict(reply) == verdict


def test_parse_scores_needs_every_criterion_in_range():
    good = {criterion: 7 for criterion in judge.CRITERIA}
    assert judge.parse_scores("Sure!\n```json\n" + json.dumps(good) + "\n```") == good
    assert judge.parse_scores(json.dumps({**good, "coherence": 11})) is None
    assert judge.parse_scores(json.dumps({**good, "overall": True})) is None
    assert judge.parse_scores(json.dumps({key: value for key, value in good.items() if key != "engagement"})) is None
    assert judge.parse_scores("{not json}") is None and judge.parse_scores("no object") is None


def test_wilson_interval_matches_a_hand_computed_case():
    # 8 wins of 10: center (0.8 + 0.19207) / 1.38415 = 0.71674,
    # half width 1.95996 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658
    low, high = judge.wilson_interval(0.8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


@pytest.mark.parametrize("wins, trials", [(0, 5), (3, 7), (8, 10), (40, 40)])
def test_wilson_interval_equals_scipys_for_whole_wins(wins, trials):
    from scipy import stats

    interval = stats.binomtest(wins, trials).proportion_ci(method="wilson")
    assert judge.wilson_interval(wins / trials, trials) == pytest.approx([interval.low, interval.high])


def test_importing_the_judge_does_not_import_openai():
    probe = "import sys, lm_eval_infogain.judge; print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False"], result.stderr[-2000:]



def test_a_judge_without_any_readable_verdict_fails_in_one_line_and_keeps_the_report(tmp_path):
    samples_a = write_samples(tmp_path / "a.jsonl", [f"A{doc} {UNREADABLE}" for doc in range(4)])
    samples_b = write_samples(tmp_path / "b.jsonl", [f"B{doc}" for doc in range(4)])
    output = tmp_path / "report.json"
    with FakeJudge() as fake:
        message = error_of(judge_args(fake.endpoint, samples_a, samples_b, output))
    assert message == ("judge: none of the 8 replies of 'fake-judge' held a readable verdict (the first: 'Both are "
                       f"interesting in their own way.'); every reply is in {output}")
    assert json.loads(output.read_text())["summary"]["judgments"]["unreadable"] == 8


@pytest.mark.parametrize("raw", [("application/json", json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                                                   "model": "m", "choices": []})),
                                 ("text/html", "<html><body>Welcome to the proxy</body></html>")])
def test_an_endpoint_answering_no_chat_completion_is_one_line(samples, tmp_path, raw):
    with FakeJudge(raw=raw) as fake:
        message = error_of(judge_args(fake.endpoint, *samples, tmp_path / "report.json", "--retries", "0"))
    assert message == (f"judge: the judge endpoint {fake.endpoint} answered without a chat completion for model "
                       "'fake-judge' (no choices: a web page, or not an OpenAI-compatible API?); --endpoint is the "
                       "API's base URL, e.g. http://host:port/v1")


def test_an_output_that_is_a_directory_is_refused_before_any_request(samples, tmp_path):
    with FakeJudge() as fake:
        message = error_of(judge_args(fake.endpoint, *samples, tmp_path))
    assert message == f"judge: --output {tmp_path} is a directory; allowed: the path of the JSON report file"
    assert not fake.requests
