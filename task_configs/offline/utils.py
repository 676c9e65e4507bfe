"""The names the offline task YAMLs reference with `!function utils.<name>`; they live in lm_eval_infogain.tasks."""

from lm_eval_infogain.tasks.code_metrics import pass_at_1, pass_at_k, prompt_plus_completions
from lm_eval_infogain.tasks.offline import LocalDataTask, mbpp_fewshot_samples

__all__ = ["LocalDataTask", "mbpp_fewshot_samples", "pass_at_1", "pass_at_k", "prompt_plus_completions"]
