"""The functions oracle_hmm.yaml names with `!function utils.<name>`; they live in lm_eval_infogain.tasks.oracle_hmm."""

from lm_eval_infogain.tasks.oracle_hmm import doc_to_target, doc_to_text, load_dataset, process_results

__all__ = ["doc_to_target", "doc_to_text", "load_dataset", "process_results"]
