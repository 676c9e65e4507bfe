"""lm-eval task YAMLs of the project, installed as lm_eval_infogain.task_configs."""
