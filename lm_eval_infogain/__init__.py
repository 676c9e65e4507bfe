"""Info-Gain and baseline samplers for masked diffusion language models, as an lm-eval backend.

Importing this package is cheap on purpose: the interpreter-start hook (lm_eval_hook.py) imports
it, so nothing here may pull in torch or lm_eval.
"""

__version__ = "0.1.0"
