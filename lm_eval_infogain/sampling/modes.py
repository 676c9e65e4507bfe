"""Which strategy class a mode names, and how the loop builds it: the built-ins' table, and a user's
strategy found by `mode=package.module:ClassName` or by an entry point of the group
`lm_eval_infogain.samplers`, checked against the contract (contract.py), with its options checked against
its declarations and its identity (import path, version, file digest) for the records. Every mode, built-in
or not, is built by `build`: `Class.from_options(checked options, spec, device)`, its returns checked.

Every failure is one line naming the mode: a malformed import path, a module that cannot be imported, a
class that is missing or does not follow the contract, an unknown option or one of the wrong type, and, at
the first step, a return value of the wrong type or shape (`Checked`).
"""

import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import re
from pathlib import Path

import torch

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.sampling import strategies
from lm_eval_infogain.sampling.contract import Option, Proposal, StepContext
from lm_eval_infogain.sampling.info_gain import InfoGain

ENTRY_POINT_GROUP = "lm_eval_infogain.samplers"
OPTION_PREFIX = "sampler."  # model_args / gen_kwargs key prefix of a user strategy's options
DOTTED_NAME = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
CONTRACT = "see lm_eval_infogain.sampling.contract"


# canonical built-in mode name (config.MODE_ALIASES) -> its class
BUILTIN_STRATEGIES = {
    "original": strategies.Original,
    "random": strategies.Random,
    "entropy": strategies.Entropy,
    "margin": strategies.Margin,
    "fast_dllm": strategies.FastDLLM,
    "eb_sampler": strategies.EBSampler,
    "pc_sampler": strategies.PCSampler,
    "info_gain": InfoGain,
}


def strategy_class(mode: str):
    """The class of a canonical built-in mode or of a user's (which plugin_class has already found)."""
    return BUILTIN_STRATEGIES[mode] if mode in BUILTIN_STRATEGIES else plugin_class(mode)


def build(mode: str, options: dict, spec, device):
    """The strategy a mode names, for these options (given ones; defaults fill the rest), checked at
    every step: the one path by which the loop builds every strategy."""
    chosen = strategy_class(mode)
    prefix = "" if mode in BUILTIN_STRATEGIES else OPTION_PREFIX  # a built-in's options are model_args
    return Checked(chosen.from_options(check_options(chosen, mode, options, prefix), spec, device), mode)


def split_options(args: dict) -> tuple[dict, dict]:
    """model_args or gen_kwargs -> (the other keys, {name: value} of their `sampler.<name>` keys)."""
    options = {key[len(OPTION_PREFIX):]: value for key, value in args.items() if key.startswith(OPTION_PREFIX)}
    return {key: value for key, value in args.items() if not key.startswith(OPTION_PREFIX)}, options


def is_import_path(mode: str) -> bool:
    return ":" in str(mode)


def entry_point(name: str):
    """The installed entry point `name` of the group, or None."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
    return next(iter(found), None)


def installed_names() -> list[str]:
    return sorted(point.name for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def import_class(mode: str, path: str):
    """The attribute `module:Name` names; one line for a malformed path, a failed import or a missing name."""
    module_name, _, class_name = path.partition(":")
    if not (re.fullmatch(DOTTED_NAME, module_name) and re.fullmatch(DOTTED_NAME, class_name)):
        raise UsageError(f"mode={mode!r} is not an import path; allowed: package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure of the user's module at import: reported, with its cause
        raise UsageError(f"mode={mode}: module {module_name!r} cannot be imported ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error
    strategy_class = module
    for part in class_name.split("."):
        if not hasattr(strategy_class, part):
            raise UsageError(f"mode={mode}: module {module_name!r} has no {class_name!r}")
        strategy_class = getattr(strategy_class, part)
    return strategy_class


@functools.lru_cache(maxsize=None)
def plugin_class(mode: str):
    """The class a non-built-in mode names (an import path, else an entry point), checked to follow the
    contract. Looked up once per process: a config is validated again at every dataclasses.replace."""
    if is_import_path(mode):
        strategy_class = import_class(mode, mode)
    else:
        point = entry_point(mode)
        if point is None:
            return None
        strategy_class = import_class(mode, point.value)
    check_follows_contract(strategy_class, mode)
    return strategy_class


def check_follows_contract(strategy_class, mode: str) -> None:
    """A class that cannot run as a strategy is refused when the mode is named, not at the first step."""
    def refuse(what: str):
        raise UsageError(f"mode={mode}: {what} ({CONTRACT})")

    if not isinstance(strategy_class, type):
        refuse(f"{strategy_class!r} is not a class")
    name = strategy_class.__name__
    if not callable(getattr(strategy_class, "propose", None)):
        refuse(f"{name} has no propose(ctx) method")
    if not callable(getattr(strategy_class, "from_options", None)):
        refuse(f"{name} has no from_options(options, spec, device) classmethod (subclass "
               "lm_eval_infogain.sampling.contract.Strategy to inherit it)")
    if getattr(strategy_class, "needs_lookahead", False) and not callable(getattr(strategy_class, "choose", None)):
        refuse(f"{name} sets needs_lookahead but has no choose(ctx, proposal, next_entropy_mean) method")
    options = getattr(strategy_class, "options", {})
    if not (isinstance(options, dict) and all(isinstance(option, Option) for option in options.values())):
        refuse(f"{name}.options is not a dict of lm_eval_infogain.sampling.contract.Option")


def check_options(strategy_class, mode: str, given: dict, prefix: str = OPTION_PREFIX) -> dict:
    """A value for every option the class declares: the given one (checked) or its default. An unknown name
    or a value of the wrong type is one line naming it and what is allowed."""
    options = getattr(strategy_class, "options", {})
    unknown = sorted(set(given) - set(options))
    if unknown:
        allowed = "; ".join(f"{prefix}{key} ({option.describe()})" for key, option in options.items())
        raise UsageError(f"{', '.join(prefix + key for key in unknown)}: not an option of mode={mode}; allowed: "
                         f"{allowed or 'none (it declares no options)'}")
    for key, value in given.items():
        option = options[key]
        if not option.accepts(value):
            raise UsageError(f"{prefix}{key}={value!r} is invalid; allowed: a {option.type.__name__}"
                             f"{' or none' if option.default is None else ''} (an option of mode={mode})")
    return {key: option.converted(given.get(key, option.default)) for key, option in options.items()}


def file_sha256(path: str | None) -> str | None:
    return None if path is None or not Path(path).is_file() else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def distribution_version(module_name: str, point) -> tuple[str | None, str | None]:
    """(distribution, version) that installed the strategy's module, where one did."""
    if point is not None and point.dist is not None:
        return point.dist.name, point.dist.version
    top = module_name.partition(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    return (names[0], importlib.metadata.version(names[0])) if names else (None, None)


def plugin_identity(mode: str) -> dict:
    """What names a user's strategy in the results and the resume-cache key: its import path, the
    distribution and version that installed it (None for a module only on the path) and the sha256 of its
    module's file, so that an edit to the file is a changed setting even at the same version."""
    strategy_class = plugin_class(mode)
    point = None if is_import_path(mode) else entry_point(mode)
    import_path = f"{strategy_class.__module__}:{strategy_class.__qualname__}"
    distribution, version = distribution_version(strategy_class.__module__, point)
    try:
        source = inspect.getsourcefile(strategy_class)
    except (TypeError, OSError):  # a class of a module without a file (a notebook's __main__)
        source = None
    return {"import_path": import_path, "entry_point": None if point is None else point.name,
            "distribution": distribution, "version": version, "file_sha256": file_sha256(source)}


def check_tensor(value, mode: str, what: str, shape: tuple, dtype: torch.dtype) -> None:
    if not (isinstance(value, torch.Tensor) and tuple(value.shape) == shape and value.dtype == dtype):
        got = f"{list(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise UsageError(f"mode={mode}: {what} must be a {list(shape)} {dtype} tensor, got {got} ({CONTRACT})")


class Checked:
    """A strategy whose returns are checked against the contract at every step (shapes and dtypes: no host
    sync), so that a wrong one is one line naming the mode at the first step, not an error deep in the loop."""

    def __init__(self, strategy, mode: str):
        self.strategy, self.mode = strategy, mode
        self.needs_lookahead = bool(getattr(strategy, "needs_lookahead", False))
        self.dynamic_steps = bool(getattr(strategy, "dynamic_steps", False))

    def propose(self, ctx: StepContext) -> Proposal:
        proposal = self.strategy.propose(ctx)
        if not isinstance(proposal, Proposal):
            raise UsageError(f"mode={self.mode}: propose returned {type(proposal).__name__}, not a "
                             f"lm_eval_infogain.sampling.contract.Proposal ({CONTRACT})")
        batch, width = ctx.masked.shape
        commit = proposal.commit
        number = commit.shape[1] if isinstance(commit, torch.Tensor) and commit.dim() == 3 else 1
        check_tensor(commit, self.mode, "Proposal.commit", (batch, number, width), torch.bool)
        check_tensor(proposal.tokens, self.mode, "Proposal.tokens", (batch, number, width), ctx.tokens.dtype)
        check_tensor(proposal.valid, self.mode, "Proposal.valid", (batch, number), torch.bool)
        if proposal.bypass is not None:
            check_tensor(proposal.bypass, self.mode, "Proposal.bypass", (batch,), torch.bool)
        return proposal

    def choose(self, ctx: StepContext, proposal: Proposal, next_entropy_mean: torch.Tensor) -> torch.Tensor:
        winner = self.strategy.choose(ctx, proposal, next_entropy_mean)
        check_tensor(winner, self.mode, "choose's winner", (ctx.masked.shape[0],), torch.long)
        return winner
