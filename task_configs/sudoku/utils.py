"""The functions the sudoku YAMLs name with `!function utils.<name>`; they live in lm_eval_infogain.tasks.sudoku."""

from lm_eval_infogain.tasks.sudoku import (
    doc_to_target, doc_to_text, load_dataset, load_many_solution_dataset, process_results,
)

__all__ = ["doc_to_target", "doc_to_text", "load_dataset", "load_many_solution_dataset", "process_results"]
