"""python -m lm_eval_infogain.leaderboard FOLDER... -o OUTPUT (the package docstring says what it writes)."""

import argparse
import json
import sys
from pathlib import Path

from lm_eval_infogain.leaderboard.board import build
from lm_eval_infogain.leaderboard.chart import chart
from lm_eval_infogain.leaderboard.files import LeaderboardError
from lm_eval_infogain.leaderboard.readme import markdown


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lm_eval_infogain.leaderboard",
                                     description="Collect lm-eval results and decode stats into one leaderboard.")
    parser.add_argument("folders", nargs="+", type=Path, help="lm-eval output folders, searched recursively")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for leaderboard.json, README.md and leaderboard.png")
    parser.add_argument("--reference", type=Path, action="append",
                        help="published numbers (JSON with 'source' and 'rows'); default: <output>/reference/*.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        sys.exit(f"leaderboard: -o {args.output} is a file; allowed: a folder (new or existing) for the board's files")
    references = args.reference
    if references is None:
        references = sorted((args.output / "reference").glob("*.json"))
    try:
        board = build(args.folders, references)
    except LeaderboardError as error:
        sys.exit(f"leaderboard: {error}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
    (args.output / "README.md").write_text(markdown(board), encoding="utf-8")
    chart(board, args.output / "leaderboard.png")
    print(f"{len(board['rows'])} rows ({len(board['reference_rows'])} reference) -> "
          f"{args.output / 'leaderboard.json'}, README.md, leaderboard.png")
