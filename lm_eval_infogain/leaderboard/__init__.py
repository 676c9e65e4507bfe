"""One table of every lm-eval run under a folder: leaderboard.json, a markdown README and a chart.

    python -m lm_eval_infogain.leaderboard results/runs/ -o results/ [--reference results/reference/paper.json]

Input: lm-eval `--output_path` folders, searched recursively for `results_*.json`. Each metric of each
task of each results file gives one row: model, task, sampler (`mode/use_cache`, `lookum` for
Info-Gain's LookUM variant), label, metric and filter, value, stderr, n (samples evaluated), the lm-eval
command that reproduces it (rebuilt from the file's `config`), the lm-eval and package versions, the
run's date and machine (from lm-eval's `pretty_env_info`: the GPU models, else the CPU model).

Labels: a row's label is its sampler followed by every setting in which its run differs from another
run of the same model and task (`settings` in the row: the effective sampler settings, other
model_args, gen_kwargs, task metadata, shots, chat template, seeds, and `docs`, a digest of the ids
and text of the documents scored, from the `--log_samples` file), e.g. `fast_dllm/none threshold=0.9`.
The table, the chart and the comparisons use it. Runs with the same label (same settings, same
documents) all stay rows; `duplicates` names them and which one the comparisons use (the latest).

Decode stats (mean NFE, mean cumulative entropy, mean tokens forwarded, mean seconds per request) come
from the per-request JSONL of the `decode_stats=<file>` model arg, found in this order:
1. the file named in the results' `config.model_args.decode_stats` (and its `.rank<N>` siblings under
   `accelerate launch`), as written, or relative to the run's output_path;
2. else any `decode_stats*.jsonl` (and `.rank<N>`) next to the results file or in its output_path
   (the folder given to `--output_path`, one above the results file);
3. else the results' own per-request stats, `config.decode_stats_per_request` (every process's);
4. else the results' `config.decode_stats_mean` (written before the per-request list existed: under
   `accelerate launch`, only the first process's share of the requests).
Only the lines of the row's task count; a request logged twice (a rerun appending to the same file)
counts once, its last line. `decode_stats_source` says which of the four a row used.

Reference rows (published numbers, never measured here) come from `--reference` JSON files, by default
every `*.json` in `<output>/reference/`, each `{"source": "...", "rows": [{"model", "task", "sampler",
"metric", "value", optional "nfe", "note"}]}`. They are kept apart: `reference_rows` in the JSON, their
own table in the README, hollow markers in the chart.

Output (same input, same bytes): `leaderboard.json`, `README.md` and `leaderboard.png` (metric against
mean NFE with stderr bars, one panel per model, task and metric, one colour and marker per sampler;
`--predict_only` runs, which have no metric, are left out) in the output folder.

Paired comparisons: runs on the same documents (equal `docs` digests) are compared document by
document, from the runs' `--log_samples` files (`samples_file` in a row); runs on other documents are
never compared. For every pair of labels of one model, task, metric, filter, cache mode and set of
documents, `comparisons` in the JSON has the mean per-document difference, its paired standard
error and its 95% paired bootstrap interval, and for 0/1 metrics an exact McNemar test (a binomial test
on the documents only one of the two got right, which it lists). A run without samples falls back to
the runs' own stderrs treated as independent, and says so. The README lists every pair, and states
Info-Gain against confidence order (`original`) in words.

Modules: files (reading lm-eval's output), decode_stats, commands (the command that reproduces a run),
labels (settings, document digests, labels), runs (rows), statistics (paired_statistics: McNemar and
paired bootstrap), pairing (which runs are compared), board (build), readme and chart (the outputs), cli.
"""

from lm_eval_infogain.leaderboard.board import build
from lm_eval_infogain.leaderboard.cli import main
from lm_eval_infogain.leaderboard.runs import sampler_label
from lm_eval_infogain.leaderboard.statistics import paired_statistics

__all__ = ["build", "main", "paired_statistics", "sampler_label"]
