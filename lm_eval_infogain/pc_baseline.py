"""Build and load pc_sampler's background token-frequency table f_bg.

pc_sampler (position- and content-aware remasking) scores each masked position i of the current block as

    score_i = exp(-lambda * i) * min(alpha, -c_i * log f_bg(x0_i))

where i is the offset inside the block, c_i the model's confidence in its prediction x0_i, and f_bg(x0_i)
the frequency of token x0_i in a reference corpus. The -log f_bg factor down-weights tokens that are
merely common (spaces, punctuation, "the") so that confident but uninformative tokens are not committed first.

This module owns both ends of that table:

    python -m lm_eval_infogain.pc_baseline --tokenizer tiny-random-llada --input corpus.txt --output freq.json

counts the model tokenizer's ids over a UTF-8 text file (line by line, newline included, no special tokens)
and writes {"tokenizer", "source", "total", "counts": {"<id>": count}}; `load_baseline` reads it back as a
smoothed frequency tensor of the model's vocabulary size.
"""

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from lm_eval_infogain.errors import UsageError
# Imported for its side effect too: it registers our model types with AutoConfig, which AutoTokenizer reads.
from lm_eval_infogain.models.registry import resolve_pretrained

LINES_PER_BATCH = 1024  # batched calls to the fast tokenizer; memory stays bounded by one batch of lines


def count_tokens(tokenizer, input_path: Path) -> Counter:
    """Token id -> count over the file, one line at a time, so only the counts are held in memory."""
    counts = Counter()
    batch = []
    # Binary mode: the progress bar counts bytes, and "\r\n" stays as written (text mode would rewrite it).
    with open(input_path, "rb") as file, tqdm(total=input_path.stat().st_size, unit="B", unit_scale=True,
                                              desc=f"counting {input_path.name}") as progress:
        for line_number, raw_line in enumerate(file, start=1):
            batch.append(decode_line(raw_line, input_path, line_number))
            progress.update(len(raw_line))
            if len(batch) == LINES_PER_BATCH:
                add_batch(counts, tokenizer, batch)
                batch = []
        add_batch(counts, tokenizer, batch)
    return counts


def decode_line(raw_line: bytes, input_path: Path, line_number: int) -> str:
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{input_path}: line {line_number} is not UTF-8 ({error.reason})") from error


def add_batch(counts: Counter, tokenizer, lines: list[str]) -> None:
    if lines:
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            counts.update(ids)


def write_table(output_path: Path, tokenizer_name: str, source: str, counts: Counter) -> None:
    """Write the JSON table atomically: a crash or full disk leaves the old file (or none), never half of one."""
    table = {
        "tokenizer": tokenizer_name,
        "source": source,
        "total": sum(counts.values()),
        "counts": {str(token_id): counts[token_id] for token_id in sorted(counts)},  # numeric order, not lexical
    }
    # The temp file sits in the output's directory so os.replace is a same-filesystem (atomic) rename.
    handle, temp_name = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(table, file, indent=1)
            file.write("\n")
        os.replace(temp_name, output_path)
    except BaseException:
        os.unlink(temp_name)
        raise


def load_baseline(path, vocab_size: int) -> torch.Tensor:
    """f_bg as a float tensor [vocab_size]: (count + 1) / (total + vocab_size).

    Add-one smoothing gives ids the corpus never showed a small positive frequency, so log f_bg stays finite,
    and the result still sums to 1. Any malformed file raises ValueError naming the file and the problem.
    """
    path = Path(path)
    counts, total = read_table(path)
    frequencies = torch.ones(vocab_size, dtype=torch.float64)  # [V] the add-one
    for token_id, count in counts.items():
        if not 0 <= token_id < vocab_size:
            raise UsageError(f"{path}: token id {token_id} is outside [0, {vocab_size})")
        frequencies[token_id] += count
    return (frequencies / (total + vocab_size)).float()  # [V]


def read_table(path: Path) -> tuple[dict[int, int], int]:
    """(token id -> count, total) from the JSON file, with its structure and counts checked."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not JSON ({error})") from error
    if not isinstance(table, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(table).__name__}")
    missing = [key for key in ("total", "counts") if key not in table]
    if missing:
        raise UsageError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(table["counts"], dict):
        raise UsageError(f"{path}: 'counts' must be an object of token id -> count")
    total = table["total"]
    if not is_count(total) or total <= 0:
        raise UsageError(f"{path}: total must be a positive int, got {total!r}")
    counts = {parse_id(path, key): check_count(path, key, value) for key, value in table["counts"].items()}
    if sum(counts.values()) != total:  # otherwise the frequencies would not sum to 1
        raise UsageError(f"{path}: total {total} != sum of counts {sum(counts.values())}")
    return counts, total


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true would pass as int 1


def parse_id(path: Path, key: str) -> int:
    try:
        return int(key)
    except ValueError as error:
        raise UsageError(f"{path}: token id {key!r} is not an int") from error


def check_count(path: Path, key: str, value) -> int:
    if not is_count(value) or value < 0:
        raise UsageError(f"{path}: count of token {key} must be a non-negative int, got {value!r}")
    return value


def parse_args(argv=None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m lm_eval_infogain.pc_baseline",
        description="Count the model tokenizer's token ids over a text corpus: pc_sampler's f_bg table.",
    )
    parser.add_argument("--tokenizer", required=True,
                        help="what pretrained= accepts: directory, hub id or bundled short name")
    parser.add_argument("--input", required=True, type=Path, help="UTF-8 text corpus")
    parser.add_argument("--output", required=True, type=Path, help="JSON table to write")
    return parser, parser.parse_args(argv)


def main(argv=None) -> None:
    parser, args = parse_args(argv)
    # Check the cheap things before loading the tokenizer or reading the corpus.
    if not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    if args.input.stat().st_size == 0:
        parser.error(f"--input {args.input}: empty corpus")
    if not args.output.parent.is_dir():
        parser.error(f"--output {args.output}: directory {args.output.parent} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(args.tokenizer))
    except (OSError, ValueError) as error:  # transformers' "not found / not a tokenizer"; reported, not swallowed
        parser.error(f"--tokenizer {args.tokenizer!r}: cannot load ({str(error).splitlines()[0]})")
    try:
        counts = count_tokens(tokenizer, args.input)
    except ValueError as error:  # a line that is not UTF-8
        parser.error(str(error))
    if not counts:
        parser.error(f"--input {args.input}: empty corpus (no tokens)")
    write_table(args.output, args.tokenizer, args.input.name, counts)
    print(f"{args.output}: {sum(counts.values())} tokens, {len(counts)} distinct ids")


if __name__ == "__main__":
    main()
