"""Python helpers that the task YAMLs in task_configs/ reference: data generators and scorers."""
