"""Predicted 8B tok/s of the dynamic-step samplers, from the cost model and a trained tiny model's steps.

    python bench/dynamic_steps.py results/runs-parallel/tiny-llada-sudoku/sudoku_4x4

The cost model (results/cost-8b.json) prices a step of the loop at 8B shapes, but it takes its path
through the loop from a random model, whose confidence never reaches a threshold: its info_gain looks
ahead on every step, its fast_dllm commits one token per step. How many steps a trained model takes,
and how many candidate rows each step forwards, is measured here instead, on the runs of one task in
a folder of runs (one sub-folder per sampler, each with the decode_stats.jsonl of `--log_samples`
runs on the same documents and batches):
- forwards per generated token = NFE / gen_length of the run;
- candidate rows per forward = tokens forwarded per forward / the canvas width of that document,
  which a run that forwards one row per step gives (fast_dllm's or original's, in the same folder).
An 8B step with r rows is priced between the cost model's 1-row step (original) and its N-row
lookahead step (info_gain, N candidates) in proportion to r - 1 (a forward's FLOPs and bytes are linear
in its rows); a 256-token decode takes 256 x forwards-per-token such steps. This assumes the 8B model
commits as fast as the tiny one on its task: a scenario, not a measurement. Beside it, the same scenario
with the lookahead on every step (an Info-Gain run's forwards all carrying N rows, what the cost table's
info_gain rows price), and a calibration line: the scenario's price of fast_dllm on an A100 beside the
throughput Fast-dLLM published for its own A100 run (PUBLISHED_FAST_DLLM).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import cost_model

ONE_ROW_MODES = ("fast_dllm", "original")  # runs that forward one row per step: their width is the canvas
# Fast-dLLM (Wu et al., arXiv:2505.22618), Table 1: LLaDA-8B-Instruct, GSM8K (5-shot), generation length 256,
# block 32, KV cache + confidence-aware parallel decoding (threshold 0.9), one NVIDIA A100 80GB.
PUBLISHED_FAST_DLLM = {"tok_per_s": 54.4, "device": "a100",
                       "setting": "LLaDA-8B, GSM8K 5-shot, generation 256, cache + parallel (threshold 0.9), A100"}


def read_runs(folder: Path) -> dict[str, dict]:
    """sampler folder name -> {"config": the results' sampler config, "docs": doc_id -> decode stats}."""
    runs = {}
    for stats_file in sorted(folder.glob("*/decode_stats.jsonl")):
        results = sorted(stats_file.parent.glob("*/results_*.json"))
        if not results:
            raise SystemExit(f"{stats_file.parent}: no results_*.json beside decode_stats.jsonl")
        config = json.loads(results[-1].read_text())["config"]["sampler"]
        docs = {}
        for line in stats_file.read_text().splitlines():
            record = json.loads(line)
            docs[record["doc_id"], record["repeat"]] = record
        runs[stats_file.parent.name] = {"config": config, "docs": docs}
    return runs


def canvas_widths(runs: dict[str, dict]) -> dict:
    """(doc_id, repeat) -> tokens per forward of a one-row run on that document."""
    for name, run in runs.items():
        if run["config"]["mode"] in ONE_ROW_MODES:
            return {key: doc["tokens_forwarded"] / doc["nfe"] for key, doc in run["docs"].items()}
    raise SystemExit(f"no run of a one-row mode ({' | '.join(ONE_ROW_MODES)}) in the folder: it gives the "
                     "canvas width that turns tokens forwarded into rows")


def step_mix(run: dict, widths: dict) -> dict:
    """Mean forwards per generated token and candidate rows per forward over the run's documents."""
    docs = [(key, doc) for key, doc in run["docs"].items() if key in widths]
    gen_length = run["config"]["gen_length"]
    return {
        "documents": len(docs),
        "forwards_per_token": statistics.fmean(doc["nfe"] / gen_length for _, doc in docs),
        "rows_per_forward": statistics.fmean(doc["tokens_forwarded"] / doc["nfe"] / widths[key] for key, doc in docs),
    }


def cost_cell(cells: dict[tuple, dict], model: str, mode: str, cache: str, batch: int, candidates: int) -> dict:
    """The cost model's row of one cell (cells: cost_model.rows_by_cell of its output)."""
    cell = cells.get((model, mode, cache, batch, candidates, "rest"))
    if cell is None:
        raise SystemExit(f"results cost file has no cell {model} {mode} use_cache={cache} batch={batch} N={candidates}")
    return cell


def predict(mix: dict, one_row: dict, lookahead: dict, candidates: int, gen_tokens: int) -> dict:
    """ms per step and tok/s per device for a decode with this step mix (see the module docstring)."""
    share = (mix["rows_per_forward"] - 1) / (candidates - 1)
    steps = gen_tokens * mix["forwards_per_token"]
    prediction = {}
    for device, ms_one in one_row["ms_per_step"].items():
        ms = ms_one + share * (lookahead["ms_per_step"][device] - ms_one)
        prediction[device] = {"ms_per_step": round(ms, 3),
                              "tok_per_s": round(one_row["batch"] * gen_tokens / (steps * ms / 1e3), 1)}
    return prediction


def main():
    parser = argparse.ArgumentParser(description="Predicted 8B tok/s of dynamic-step samplers from the cost model "
                                                 "and a trained tiny model's measured steps.")
    parser.add_argument("runs", type=Path, help="a task's folder of runs, one sub-folder per sampler")
    parser.add_argument("--cost", type=Path, default=Path("results/cost-8b.json"))
    parser.add_argument("--model", default="llada-8b")
    parser.add_argument("--cache", default="prefix")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args()
    runs = read_runs(args.runs)
    if not runs:
        raise SystemExit(f"{args.runs}: no */decode_stats.jsonl")
    cost = json.loads(args.cost.read_text())
    cells = cost_model.rows_by_cell(cost["rows"])
    one_row = cost_cell(cells, args.model, "original", args.cache, args.batch, 1)
    lookahead = cost_cell(cells, args.model, "info_gain", args.cache, args.batch, args.candidates)
    widths = canvas_widths(runs)
    gen_tokens = cost["settings"]["gen_length"]
    print(f"{args.model}, use_cache={args.cache}, batch {args.batch}, {gen_tokens} tokens; step mix from {args.runs}")
    print("scenario, not a measurement: roofline step times x the tiny model's steps (bench/README.md)")
    print("| sampler | documents | forwards/token | rows/forward | ms/step H100 | ms/step H200 | tok/s H100 | tok/s H200 "
          f"| tok/s H100, lookahead every step ({args.candidates} rows) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        mix = step_mix(run, widths)
        prediction = predict(mix, one_row, lookahead, args.candidates, gen_tokens)
        every_step = "-"
        if run["config"]["mode"] == "info_gain":
            every_step = predict({**mix, "rows_per_forward": args.candidates}, one_row, lookahead, args.candidates,
                                 gen_tokens)["h100"]["tok_per_s"]
        print(f"| {name} | {mix['documents']} | {mix['forwards_per_token']:.3f} | {mix['rows_per_forward']:.2f} | "
              f"{prediction['h100']['ms_per_step']} | {prediction['h200']['ms_per_step']} | "
              f"{prediction['h100']['tok_per_s']} | {prediction['h200']['tok_per_s']} | {every_step} |")
    print_calibration(runs, widths, one_row, lookahead, args.candidates, gen_tokens)
    return 0


def print_calibration(runs, widths, one_row, lookahead, candidates: int, gen_tokens: int) -> None:
    """The scenario's fast_dllm on the device of Fast-dLLM's published run, beside its published tok/s, and the
    forwards per token at which the roofline step would match it."""
    device = PUBLISHED_FAST_DLLM["device"]
    fast = [run for run in runs.values() if run["config"]["mode"] == "fast_dllm"]
    if not fast or device not in one_row["ms_per_step"]:
        return
    mix = step_mix(fast[0], widths)
    predicted = predict(mix, one_row, lookahead, candidates, gen_tokens)[device]["tok_per_s"]
    published = PUBLISHED_FAST_DLLM["tok_per_s"]
    matching = 1e3 / (published * one_row["ms_per_step"][device])
    print(f"calibration, {PUBLISHED_FAST_DLLM['setting']}: published {published} tok/s; this scenario "
          f"({mix['forwards_per_token']:.3f} forwards/token, the cost model's A100 roofline of a {one_row['use_cache']} "
          f"step, {one_row['ms_per_step'][device]} ms) predicts {predicted} tok/s; the roofline step matches the "
          f"published rate at {matching:.2f} forwards/token")


if __name__ == "__main__":
    sys.exit(main())
