"""The functions the countdown YAMLs name with `!function utils.<name>`; they live in tasks/countdown.py."""

from lm_eval_infogain.tasks.countdown import doc_to_target, doc_to_text, load_dataset, process_results

__all__ = ["doc_to_target", "doc_to_text", "load_dataset", "process_results"]
