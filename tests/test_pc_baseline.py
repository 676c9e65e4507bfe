"""pc_sampler's f_bg table: the CLI counts what the tokenizer produces; load_baseline smooths and validates."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from lm_eval_infogain.models.registry import resolve_pretrained
from lm_eval_infogain.pc_baseline import load_baseline

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = "tiny-random-llada"
LINES = ["The answer is: 44-15=29", "", "Write a story about a lighthouse.", "0123 café naïve ✓", "the the the"]
CORPUS_LINES = LINES * 250  # 1250 lines: more than one tokenizer batch (LINES_PER_BATCH = 1024)


def build(tmp_path: Path, corpus: bytes | None, *extra: str) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess on corpus.txt; corpus None means the input file does not exist."""
    input_path = tmp_path / "corpus.txt"
    if corpus is not None:
        input_path.write_bytes(corpus)
    command = [sys.executable, "-m", "lm_eval_infogain.pc_baseline", "--tokenizer", TOKENIZER,
               "--input", str(input_path), "--output", str(tmp_path / "freq.json"), *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_pretrained(TOKENIZER))


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("table")
    result = build(tmp_path, "".join(line + "\n" for line in CORPUS_LINES).encode("utf-8"))
    assert result.returncode == 0, result.stderr
    return tmp_path / "freq.json"


@pytest.fixture(scope="module")
def expected_counts(tokenizer) -> Counter:
    # Independent count: each line as written to the file, its newline included, no special tokens.
    counts = Counter()
    for line in CORPUS_LINES:
        counts.update(tokenizer(line + "\n", add_special_tokens=False)["input_ids"])
    return counts


def test_cli_counts_match_direct_tokenization(table_path, expected_counts):
    table = json.loads(table_path.read_text())
    assert table["tokenizer"] == TOKENIZER
    assert table["source"] == "corpus.txt"
    assert {int(key): count for key, count in table["counts"].items()} == dict(expected_counts)
    assert table["total"] == sum(expected_counts.values()) == sum(table["counts"].values())
    assert list(table["counts"]) == [str(token_id) for token_id in sorted(expected_counts)]  # sorted by id
    assert not list(table_path.parent.glob("*.tmp"))  # the atomic write left no temp file


def test_load_baseline_is_smoothed_distribution(table_path, expected_counts, tokenizer):
    vocab_size = len(tokenizer)
    frequencies = load_baseline(table_path, vocab_size)  # [V]
    assert frequencies.shape == (vocab_size,) and frequencies.dtype == torch.float32
    assert frequencies.sum().item() == pytest.approx(1.0, abs=1e-5)
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    seen[list(expected_counts)] = True
    assert seen.any() and not seen.all()
    unseen_frequency = frequencies[~seen]
    assert (unseen_frequency > 0).all() and torch.isfinite(frequencies.log()).all()
    assert unseen_frequency.max() < frequencies[seen].min()
    most_common_id, _ = expected_counts.most_common(1)[0]
    assert frequencies.argmax().item() == most_common_id


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


BAD_TABLES = {
    "not_json.json": ("{not json", "not JSON"),
    "list.json": ([1, 2], "JSON object"),
    "no_total.json": ({"counts": {"1": 2}}, "total"),
    "no_counts.json": ({"total": 2}, "counts"),
    "counts_list.json": ({"total": 2, "counts": [2]}, "counts"),
    "id_too_big.json": ({"total": 2, "counts": {"10": 2}}, "outside [0, 10)"),
    "id_negative.json": ({"total": 2, "counts": {"-1": 2}}, "outside [0, 10)"),
    "id_not_int.json": ({"total": 2, "counts": {"a": 2}}, "not an int"),
    "total_zero.json": ({"total": 0, "counts": {}}, "positive int"),
    "total_float.json": ({"total": 2.0, "counts": {"1": 2}}, "positive int"),
    "count_float.json": ({"total": 2, "counts": {"1": 2.5}}, "non-negative int"),
    "count_bool.json": ({"total": 1, "counts": {"1": True}}, "non-negative int"),
    "count_negative.json": ({"total": 1, "counts": {"1": 2, "2": -1}}, "non-negative int"),
    "total_mismatch.json": ({"total": 5, "counts": {"1": 2}}, "sum of counts"),
}


@pytest.mark.parametrize("name", BAD_TABLES)
def test_load_baseline_rejects_bad_file(tmp_path, name):
    content, problem = BAD_TABLES[name]
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:  # one line
        load_baseline(write(tmp_path, name, content), vocab_size=10)
    assert name in str(error.value) and problem in str(error.value)


def test_load_baseline_rejects_missing_file(tmp_path):
    with pytest.raises(ValueError, match="missing.json: no such file"):
        load_baseline(tmp_path / "missing.json", vocab_size=10)


@pytest.mark.parametrize("corpus, problem", [(None, "no such file"), (b"", "empty corpus")])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, corpus, problem):
    result = build(tmp_path, corpus)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "corpus.txt" in error_lines[0] and problem in error_lines[0]
    assert not (tmp_path / "freq.json").exists()


def test_cli_rejects_non_utf8_corpus(tmp_path):
    result = build(tmp_path, b"fine line\n\xff\xfe bad\n")
    assert result.returncode == 2 and "line 2 is not UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "freq.json").exists()
