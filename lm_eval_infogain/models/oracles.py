"""`pretrained=oracle-<name>` -> (OracleAdapter, tokenizer): the exact models of oracle.py by short name.

Their folders in assets/ hold only generation_config.json (the sampler defaults: one answer, one block,
one token per step, use_cache=none); the tokenizer is tiny-llada-sudoku's, whose vocabulary covers the
digits and the sudoku prompt, so the models read the project's tasks unchanged.
"""

import importlib
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from lm_eval_infogain.models.oracle import OracleAdapter, check_noise, oracle_spec

# name -> (module, class), imported when the model is loaded: the sudoku oracle reads the sudoku task's
# helpers, which need lm-eval's datasets, and the registry must import where only torch and transformers
# are installed (bench/ on a bare GPU machine)
ORACLES = {"oracle-sudoku": ("oracle_sudoku", "SudokuOracle"), "oracle-hmm": ("oracle_hmm", "HMMOracle")}
ASSETS = Path(__file__).resolve().parent.parent / "assets"
ORACLE_FOLDERS = {name: ASSETS / name for name in ORACLES}
TOKENIZER = ASSETS / "tiny-llada-sudoku"
MAX_LENGTH = 1024


def load_oracle(pretrained: str, device: str, noise) -> tuple[OracleAdapter, object]:
    # the class tokenizer_config.json names, read directly: AutoTokenizer would first read the folder's model
    # config (a `llada` model, which transformers does not know until the registry registers it) and warn
    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER)
    module, name = ORACLES[pretrained]
    distribution = getattr(importlib.import_module(f"lm_eval_infogain.models.{module}"), name)(tokenizer)
    spec = oracle_spec(tokenizer, MAX_LENGTH)
    return OracleAdapter(distribution, spec, check_noise(noise), torch.device(device)), tokenizer
