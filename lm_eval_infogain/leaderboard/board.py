"""Every run under some folders, labelled, paired and compared: the board that the outputs render."""

from pathlib import Path

from lm_eval_infogain.leaderboard.files import find_results
from lm_eval_infogain.leaderboard.labels import duplicate_runs, label_runs
from lm_eval_infogain.leaderboard.pairing import BASELINE, compare, document_values
from lm_eval_infogain.leaderboard.runs import RETIRED_METRICS, read_reference, rows_of_run, sort_key


def build(folders: list[Path], reference_files: list[Path]) -> dict:
    measured = [(row, folder) for folder, path in find_results(folders) for row in rows_of_run(folder, path)]
    label_runs([row for row, _ in measured])
    measured.sort(key=lambda pair: sort_key(pair[0]))
    kept = [(row, folder) for row, folder in measured if row["metric"] not in RETIRED_METRICS]
    rows = [row for row, _ in kept]
    documents = [document_values(folder / row["samples_file"], row["metric"], row["filter"])
                 if row["samples_file"] else None for row, folder in kept]
    retired = sorted({row["metric"] for row, _ in measured} & RETIRED_METRICS.keys())
    return {"rows": rows, "comparisons": compare(rows, documents, BASELINE), "duplicates": duplicate_runs(rows),
            "reference_rows": read_reference(reference_files),
            "retired_metrics": {metric: RETIRED_METRICS[metric] for metric in retired}}
