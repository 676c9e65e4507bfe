"""Strategies written against the public contract (lm_eval_infogain.sampling.contract), as a user writes
theirs; each runs with `mode=lm_eval_infogain.examples.<module>:<ClassName>`."""
