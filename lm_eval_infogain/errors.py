"""The one exception type for a bad input the user can fix (a model_arg, a gen_kwarg, a file, a flag).

A ValueError subclass, so callers of lm_eval.simple_evaluate that catch ValueError still catch it. Its
message is one line naming the bad value and what is allowed; the stock `lm_eval` CLI prints only that
line (`mdm_infogain: <message>`) and exits with status 2 (see lm_eval_hook.py), while any other
exception keeps its traceback. No torch or lm_eval import here: the interpreter-start hook imports it.
"""

USAGE_EXIT_STATUS = 2  # argparse's status for a bad command line


class UsageError(ValueError):
    """A bad input, told in one line: what was given and what is allowed."""
