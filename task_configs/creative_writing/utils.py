"""The functions the creative_writing YAMLs name with `!function utils.<name>`; see tasks/creative_writing.py."""

from lm_eval_infogain.tasks.creative_writing import (
    doc_to_target,
    doc_to_text,
    load_dataset,
    process_online_docs,
    process_results,
)

__all__ = ["doc_to_target", "doc_to_text", "load_dataset", "process_online_docs", "process_results"]
