"""Bad inputs get one line naming the value and what is allowed; the stock CLI prints only that line
(exit 2); no input gives a silent wrong answer (stale cache, non-finite temperature, corrupt files)."""

import argparse
import base64
import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lm_eval.api.model import CachingLM
from safetensors import safe_open
from sqlitedict import SqliteDict

from lm_eval_infogain import judge, request_cache
from lm_eval_infogain.errors import USAGE_EXIT_STATUS, UsageError
from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.registry import BUNDLED, DEFAULT_PRETRAINED

TESTS = Path(__file__).resolve().parent
FAST = "gen_length=32,steps=16,block_length=16,device=cpu"


def make_lm(args: str, cli_values: dict | None = None) -> MDMInfoGainLM:
    return MDMInfoGainLM.create_from_arg_string(f"pretrained=tiny-random-llada,{FAST},{args}", cli_values)


def one_line_usage_error(call) -> str:
    with pytest.raises(UsageError) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def lm_eval_cli(model_args: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args", model_args,
               "--tasks", "sudoku_4x4", "--limit", "2", *extra]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- the stock CLI: one line, exit 2


def test_the_cli_prints_one_line_and_exits_2_for_a_bad_model_arg(tmp_path):
    result = lm_eval_cli(f"{FAST},temperature=inf", tmp_path)
    assert result.returncode == USAGE_EXIT_STATUS
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "mdm_infogain: temperature=inf is invalid; allowed: 0 (greedy) or a number in [0.001, 100]")


@pytest.mark.parametrize("model_args, line", [
    ("pretrained=/nonexistent/checkpoint", "mdm_infogain: pretrained='/nonexistent/checkpoint': no config.json found"),
    ("pretrained=tiny-random-llada,dtype=int8", "mdm_infogain: dtype='int8' is invalid"),
])
def test_the_cli_prints_one_line_for_a_checkpoint_error_too(tmp_path, model_args, line):
    result = lm_eval_cli(model_args, tmp_path)
    assert result.returncode == USAGE_EXIT_STATUS and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(line)


def command_raising(error: Exception) -> argparse.Namespace:
    def run(args):
        raise error

    return argparse.Namespace(func=run)


def test_other_exceptions_keep_their_traceback(capsys):
    """The CLI's wrapper turns only a UsageError into one line: a bug must still show where it is."""
    from lm_eval._cli.harness import HarnessCLI

    cli = HarnessCLI()
    with pytest.raises(RuntimeError, match="a bug"):
        cli.execute(command_raising(RuntimeError("a bug")))
    with pytest.raises(SystemExit) as exit_info:
        cli.execute(command_raising(UsageError("x=1 is invalid")))
    assert exit_info.value.code == USAGE_EXIT_STATUS
    assert capsys.readouterr().err == "mdm_infogain: x=1 is invalid\n"


def test_device_and_batch_size_in_model_args_win_over_the_cli_flags(tmp_path):
    output = tmp_path / "out"
    result = lm_eval_cli(f"{FAST},batch_size=2,device=cpu", tmp_path, "--batch_size", "1", "--device", "cuda:0",
                         "--output_path", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads(next(output.rglob("results_*.json")).read_text())["config"]
    assert config["batch_size_per_canvas"] == 2
    assert "model_args batch_size=2 is used; the CLI's --batch_size 1 is not" in result.stderr


def test_cli_values_fill_what_model_args_leave_out(caplog):
    with caplog.at_level(logging.WARNING):
        lm = make_lm("batch_size=3", {"batch_size": "1", "max_batch_size": None, "device": "cpu"})
    assert lm.batch_size_per_canvas == 3 and lm.device.type == "cpu"
    assert "model_args batch_size=3 is used; the CLI's --batch_size 1 is not" in caplog.messages
    assert make_lm("", {"batch_size": "4", "device": "cpu"}).batch_size_per_canvas == 4


# ---------------------------------------------------------------- model_args refused at construction


@pytest.mark.parametrize("args, message", [
    ("temperature=inf", "temperature=inf is invalid; allowed: 0 (greedy) or a number in [0.001, 100]"),
    ("temperature=nan", "temperature=nan is invalid"),
    ("temperature=1e-320", "temperature=1e-320 is invalid"),
    ("temperature=1000", "temperature=1000 is invalid"),
    ("position_temperature=inf", "position_temperature=inf is invalid; allowed: 0 (no lookahead) or a number in"),
    ("position_temperature=1e-9", "position_temperature=1e-09 is invalid"),
    ("threshold=nan", "threshold=nan is invalid; allowed: a probability in [0, 1]"),
    ("gamma=inf", "gamma=inf is invalid; allowed: a number in [0, 10000]"),
    ("pc_lambda=nan", "pc_lambda=nan is invalid"),
    ("pc_alpha=1e300", "pc_alpha=1e+300 is invalid"),
    ("factor=inf", "factor=inf is invalid; allowed: a number in (0, 10000]"),
    ("eos_penalty=1e5", "eos_penalty=100000.0 is invalid; allowed: a number in [0, 10000]"),
    ("pad_penalty=-inf", "pad_penalty=-inf is invalid"),
    ("candidate_number=100000000", "candidate_number=100000000 is invalid; allowed: an integer in [1, 1024] "
                                   "(each candidate costs one lookahead forward)"),
    ("max_batch_size=-5", "max_batch_size=-5 is invalid; allowed: an integer >= 1"),
    ("max_batch_size=many", "max_batch_size='many' is invalid"),
    ("batch_size=8,max_batch_size=4", "batch_size=8 is invalid; allowed: at most max_batch_size=4"),
    ("batch_size=auto:4", "batch_size='auto:4' is invalid; allowed: an integer >= 1 or auto (the largest that fits"),
    ("batch_size=auto:0", "batch_size='auto:0' is invalid"),
    ("batch_size=auto,max_batch_size=0", "max_batch_size=0 is invalid; allowed: an integer >= 1"),
])
def test_non_finite_and_absurd_values_are_refused(args, message):
    assert message in one_line_usage_error(lambda: make_lm(args))


# ---------------------------------------------------------------- damaged checkpoints through the stock CLI

# Runs the stock CLI's entry point once per argv in one interpreter (lm-eval's task index built once), and
# writes [exit status, last stderr line, whether a traceback was printed] per argv as JSON.
STOCK_CLI_ROWS = """
import contextlib, functools, io, json, sys
from lm_eval.tasks._index import TaskIndex
index = functools.lru_cache(TaskIndex.build)
TaskIndex.build = staticmethod(lambda paths, **options: index(tuple(paths), **options))
from lm_eval.__main__ import cli_evaluate
argvs, outcomes_file, outcomes = json.loads(sys.argv[1]), sys.argv[2], []
for argv in argvs:
    sys.argv = ["lm_eval", "--model", "mdm_infogain", "--tasks", "sudoku_4x4", "--limit", "1", *argv]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            cli_evaluate()
            status = 0
        except SystemExit as exit:
            status = exit.code
    lines = stderr.getvalue().strip().splitlines()
    outcomes.append([status, lines[-1] if lines else "", "Traceback" in stderr.getvalue()])
open(outcomes_file, "w").write(json.dumps(outcomes))
"""


def damaged_checkpoints(folder: Path) -> Path:
    """Copies of tiny-random-llada, each damaged in one way, and LoRA adapters of it (one with foreign targets)."""
    import peft
    import torch
    from safetensors.torch import load_file, save_file

    from lm_eval_infogain.models.registry import load

    def copy(name: str) -> Path:
        return Path(shutil.copytree(BUNDLED["tiny-random-llada"], folder / name))

    def change_weights(name: str, change) -> None:
        weights = load_file(copy(name) / "model.safetensors")
        first = sorted(weights)[0]
        weights[first] = change(weights[first])
        save_file(weights, folder / name / "model.safetensors", metadata={"format": "pt"})

    def change_config(name: str, change) -> None:
        config = json.loads((copy(name) / "config.json").read_text())
        (folder / name / "config.json").write_text(json.dumps(change(config)))  # NaN is written as NaN

    change_weights("nan_weights", lambda tensor: torch.full_like(tensor, float("nan")))
    change_weights("int8_weights", lambda tensor: tensor.to(torch.int8))
    change_config("nan_rope_theta", lambda config: config | {"rope_theta": float("nan")})
    change_config("list_config", lambda config: [config])
    change_config("words_for_numbers", lambda config: config | {"n_layers": "two"})
    (copy("broken_template") / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }")
    (copy("own_template") / "chat_template.jinja").write_text("{% for m in messages %}OWN {{ m['content'] }}{% endfor %}")
    model = load("tiny-random-llada", dtype="float32", device="cpu")[0].model
    peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(folder / "lora")
    shutil.copytree(folder / "lora", folder / "lora_foreign_targets")
    config_file = folder / "lora_foreign_targets" / "adapter_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"target_modules": ["no_such_proj"]}))
    return folder


def test_damaged_checkpoints_adapters_and_names_are_one_line_through_the_stock_cli(tmp_path):
    """Each of these once decoded empty answers with acc 0 (NaN or integer weights, rope_theta NaN), ended in
    a traceback (a list config.json, a word for a number, a broken chat template, every peft error) or in
    minutes of hub retries (a typo of a short name). A tokenizer folder beside pretrained is honoured."""
    folder = damaged_checkpoints(tmp_path / "models")
    fast = "gen_length=8,steps=8,block_length=8"
    rows = [
        (f"pretrained={folder}/nan_weights", "the first forward gives non-finite logits; "
         f"{folder}/nan_weights/model.safetensors holds non-finite values in "),
        (f"pretrained={folder}/int8_weights", f"{folder}/int8_weights/model.safetensors holds integer weights ("),
        (f"pretrained={folder}/nan_rope_theta", "the first forward gives non-finite logits though every weight is "
         "finite; suspect config.json (rope_theta, the norm eps, rope_scaling)"),
        (f"pretrained={folder}/list_config", "config.json holds a JSON list, not an object of settings"),
        (f"pretrained={folder}/words_for_numbers", "config.json n_layers='two' is invalid; allowed: an integer >= 1"),
        (f"pretrained={folder}/broken_template,{fast}", "its chat template (chat_template.jinja or "
         "tokenizer_config.json) cannot be applied: TemplateSyntaxError"),
        ("peft=/nonexistent/adapter", "peft='/nonexistent/adapter': no such adapter folder"),
        (f"peft={folder}/nan_weights", f"{folder}/nan_weights/adapter_config.json is missing: not a peft adapter folder"),
        (f"peft={folder}/lora_foreign_targets", "cannot be applied to this model: Target modules {'no_such_proj'} "
         "not found in the base model"),
        (f"pretrained=tiny-random-mmada,peft={folder}/lora", "cannot be applied to this model: size mismatch for "),
        ("max_new_tokens=0", "max_new_tokens=0 is invalid; allowed: an integer >= 1"),
        ("pretrained=tiny-llada-sudokuu", "pretrained='tiny-llada-sudokuu': no such folder or short name: did you "
         "mean tiny-llada-sudoku?"),
        ("tokenizer=tiny-random-dreamm", "tokenizer='tiny-random-dreamm': no such folder or short name: did you mean "
         "tiny-random-dream?"),
        (f"tokenizer={folder}/own_template,{fast}", None),  # honoured: the run's prompts use its chat template
    ]
    argvs = [["--model_args", args, "--apply_chat_template", "--output_path", str(tmp_path / "out"), "--log_samples"]
             for args, _ in rows]
    outcomes_file = tmp_path / "outcomes.json"
    result = subprocess.run([sys.executable, "-c", STOCK_CLI_ROWS, json.dumps(argvs), str(outcomes_file)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for (args, fragment), (status, last_line, traceback) in zip(rows, json.loads(outcomes_file.read_text()),
                                                                strict=True):
        if fragment is None:
            assert status == 0, (args, last_line)
            continue
        assert status == USAGE_EXIT_STATUS and not traceback and last_line.startswith("mdm_infogain: "), (args, last_line)
        assert fragment in last_line, (args, last_line)
    sample = json.loads(next((tmp_path / "out").rglob("samples_sudoku_4x4_*.jsonl")).read_text().splitlines()[0])
    assert sample["arguments"]["gen_args_0"]["arg_0"].startswith("OWN ")


def test_a_decode_stats_directory_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from lm_eval_infogain import harness

    monkeypatch.setattr(harness, "load", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    message = one_line_usage_error(lambda: make_lm(f"decode_stats={tmp_path}"))
    allowed = "a file (not a directory) in an existing directory"
    assert message == f"decode_stats='{tmp_path}' is invalid; allowed: {allowed}"


@pytest.mark.parametrize("pretrained", [None, ""])
def test_an_omitted_pretrained_says_which_model_runs(caplog, pretrained):
    with caplog.at_level(logging.WARNING):
        lm = MDMInfoGainLM(pretrained=pretrained, device="cpu", gen_length=32, steps=16, block_length=16)
    assert lm.pretrained == DEFAULT_PRETRAINED
    assert any(f"running the default {DEFAULT_PRETRAINED} (random weights" in message for message in caplog.messages)


@pytest.mark.parametrize("content", ['{"eos_token_id": [1,', "", "\xff\xfe not text"])
def test_a_corrupt_generation_config_is_an_error_naming_the_file(tmp_path, content):
    model = Path(shutil.copytree(BUNDLED["tiny-llada-sudoku"], tmp_path / "model"))
    (model / "generation_config.json").write_bytes(content.encode("latin-1"))
    message = one_line_usage_error(lambda: MDMInfoGainLM(pretrained=str(model), device="cpu"))
    assert message.startswith(f"pretrained='{model}': {model / 'generation_config.json'} cannot be read as JSON (")
    assert message.endswith("); fix or delete it")


# ---------------------------------------------------------------- gen_kwargs


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 1e-320, -1.0])
def test_non_finite_gen_kwargs_temperature_is_refused(temperature):
    lm = make_lm("")
    message = one_line_usage_error(lambda: lm.request_settings({"until": [], "temperature": temperature}))
    assert message.startswith(f"gen_kwargs temperature={temperature!r} is invalid; allowed: 0 (greedy)")


def test_mask_token_text_in_a_prompt_is_warned_about_once(caplog):
    lm = make_lm("")
    with caplog.at_level(logging.WARNING):
        with_mask = [lm.encode("Solve <|mdm_mask|> now"), lm.encode("and <|mdm_mask|> again")]
        lm.encode("no mask here")
    assert all(lm.adapter.spec.mask_id in ids for ids in with_mask)
    warnings = [message for message in caplog.messages if "mask token's text" in message]
    assert warnings == ["a prompt holds the mask token's text '<|mdm_mask|>'; it is encoded as the mask id, so the "
                        "model treats that position as masked, not as text"]


# ---------------------------------------------------------------- the request cache (--use_cache)


def caching_lm(pretrained: str, db: Path) -> CachingLM:
    return CachingLM(MDMInfoGainLM.create_from_arg_string(f"pretrained={pretrained},{FAST},seed=1"), str(db))


def rewrite_one_tensor_in_place(weights: Path) -> str:
    """Overwrite the bytes of one tensor, as a retrain into the same folder would: same size, same header."""
    with safe_open(str(weights), framework="pt") as checkpoint:
        name = sorted(checkpoint.keys())[0]
    header_length = int.from_bytes(weights.read_bytes()[:8], "little")
    start, end = json.loads(weights.read_bytes()[8:8 + header_length])[name]["data_offsets"]
    with weights.open("r+b") as file:
        file.seek(8 + header_length + start)
        file.write(bytes(end - start))  # zeros
    return name


def test_a_cache_made_before_the_weights_changed_in_place_is_refused(tmp_path):
    model = Path(shutil.copytree(BUNDLED["tiny-random-llada"], tmp_path / "model"))
    db = tmp_path / "cache.db"
    caching_lm(str(model), db).dbdict.close()
    caching_lm(str(model), db).dbdict.close()  # the same files: accepted
    size = (model / "model.safetensors").stat().st_size
    rewrite_one_tensor_in_place(model / "model.safetensors")
    assert (model / "model.safetensors").stat().st_size == size
    message = one_line_usage_error(lambda: caching_lm(str(model), db))
    assert message.startswith(f"--use_cache file {db} holds answers made with other settings "
                              "(model_identity.folder_digest:")


@pytest.mark.parametrize("changed_file", ["config.json", "generation_config.json", "tokenizer.json",
                                          "chat_template.jinja", "model.safetensors"])
def test_the_model_identity_covers_each_checkpoint_file(tmp_path, changed_file):
    model = Path(shutil.copytree(BUNDLED["tiny-random-llada"], tmp_path / "model"))
    before = request_cache.model_identity(str(model))
    with (model / changed_file).open("ab") as file:
        file.write(b" ")
    assert request_cache.model_identity(str(model)) != before


def test_the_model_identity_reads_the_header_and_ends_of_large_weight_files(tmp_path):
    weights = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4 << 20))
    before = request_cache.file_digest(weights)
    with weights.open("r+b") as file:
        file.seek(-10, 2)
        file.write(b"\1")
    assert request_cache.file_digest(weights) != before


def test_a_hub_id_that_is_not_cached_is_identified_by_its_id():
    assert request_cache.model_identity("no-such-org/no-such-model") == {"hub_id": "no-such-org/no-such-model"}


def test_a_cached_hub_snapshot_is_found_by_its_commit(monkeypatch, tmp_path):
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = tmp_path / "models--org--adapter"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "adapter_config.json").write_text("{}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert request_cache.hub_snapshot("org/adapter") == repo / "snapshots" / "0123abcd"
    assert request_cache.hub_snapshot("org/other") is None


def test_a_cached_hub_id_is_identified_by_its_commit_and_files(monkeypatch, tmp_path):
    snapshot = Path(shutil.copytree(BUNDLED["tiny-random-llada"], tmp_path / "snapshots" / "0123abcd"))
    monkeypatch.setattr(request_cache, "hub_snapshot", lambda repo_id: snapshot)
    identity = request_cache.model_identity("org/model")
    assert identity == {"hub_id": "org/model", "commit": "0123abcd",
                        "folder_digest": request_cache.folder_digest(snapshot)}


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_cache_file_is_one_line_naming_it(tmp_path, damage):
    db = tmp_path / "cache.db"
    caching_lm("tiny-random-llada", db).dbdict.close()
    with SqliteDict(str(db)) as cache:
        for index in range(200):
            cache[f"{index:064d}"] = "an answer " * 100
        cache.commit()
    data = db.read_bytes()
    db.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"not a database" * 100)
    message = one_line_usage_error(lambda: caching_lm("tiny-random-llada", db))
    assert message.startswith(f"--use_cache file {db} is damaged (")
    assert message.endswith("); delete it to recompute its answers, or use another --use_cache path")


def test_the_cli_names_a_damaged_cache_file_in_one_line(tmp_path):
    db = tmp_path / "cache_rank0.db"
    db.write_bytes(b"not a database" * 100)
    result = lm_eval_cli(FAST, tmp_path, "--use_cache", str(tmp_path / "cache"))
    assert result.returncode == USAGE_EXIT_STATUS and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mdm_infogain: --use_cache file {db} is damaged (file is not a database); delete it to recompute its "
        "answers, or use another --use_cache path")


def test_a_cache_file_in_use_by_another_run_is_refused(tmp_path):
    db = tmp_path / "cache_rank0.db"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lm_eval_infogain.request_cache import claim
        claim({str(db)!r})
        print("claimed", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        message = one_line_usage_error(lambda: request_cache.claim(str(db)))
        assert message == (f"--use_cache file {db} is in use by another run (it holds {db}.lock); wait for that run "
                           "to end, or use another --use_cache path")
    finally:
        holder.kill()
        holder.wait()
    request_cache.claim(str(db))  # the lock ends with the process that held it, however it ended
    request_cache.claim(str(db))  # and this process may open its own file again


# ---------------------------------------------------------------- the judge


KEY = "sk-proj-Qz7Lm3Rk9Tx2Wv5Pn8CRET"


@pytest.mark.parametrize("echo", [
    KEY,
    base64.b64encode(KEY.encode()).decode(),
    base64.b64encode(f"Bearer {KEY}".encode()).decode(),  # the key inside a longer base64 text
    base64.urlsafe_b64encode(f"x:{KEY}".encode()).decode(),
    "sk-...CRET",
    "sk-proj-********************CRET",
    "****CRET",
    "sk-proj-Qz7L…",
])
def test_the_judge_masks_every_form_of_the_key(echo):
    masked = judge.mask(f"Incorrect API key provided: {echo}. See docs.", KEY)
    assert echo not in masked and "CRET" not in masked and "Qz7L" not in masked
    assert masked.startswith("Incorrect API key provided: ") and judge.MASK in masked
    assert judge.mask("a story... with an ending****", KEY) == "a story... with an ending****"


def test_the_judge_masks_the_url_quoted_key():
    key = "sk-ab+cd/ef=gh12345"
    assert judge.mask("GET /v1?key=sk-ab%2Bcd%2Fef%3Dgh12345&x=1", key) == f"GET /v1?key={judge.MASK}&x=1"


@pytest.mark.parametrize("endpoint", ["api.openai.com/v1", "ftp://host/v1", "http://", "http://host:port/v1",
                                      "localhost:8000"])
def test_an_invalid_judge_endpoint_is_one_line(tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        judge.main(["--a", str(samples), "--single", "--endpoint", endpoint, "--model", "m",
                    "--api-key-env", "JUDGE_TEST_KEY", "--output", str(tmp_path / "r.json")])
    assert str(exit_info.value.code) == (f"judge: --endpoint {endpoint!r} is not an http(s) URL with a host; "
                                         "e.g. https://api.openai.com/v1 or http://localhost:8000/v1")


# ---------------------------------------------------------------- the table of bad inputs


TABLE = TESTS / "BAD_INPUTS.md"
ROW = re.compile(r"^\| `(?P<input>[^`]+)` \| (?P<message>.+) \| `(?P<test>tests/\S+\.py)` \|$")


def table_rows() -> list[dict]:
    return [match.groupdict() for line in TABLE.read_text().splitlines() if (match := ROW.match(line))]


def test_the_bad_inputs_table_lists_over_80_inputs_each_asserted_by_its_test():
    """Each row's message fragment (between the backquotes) is written in the test file it names."""
    rows = table_rows()
    assert len(rows) >= 80 and len({(row["input"], row["test"]) for row in rows}) == len(rows)
    for row in rows:
        test_source = (TESTS.parent / row["test"]).read_text()
        fragment = re.search(r"`([^`]+)`", row["message"]).group(1).replace("\\|", "|")  # markdown's escaped pipe
        assert fragment in test_source, (row, fragment)
