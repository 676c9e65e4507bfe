"""Every sampler option, validated once, with one-line errors naming the key, value and what is allowed."""

import dataclasses
from dataclasses import dataclass, field

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.sampling import modes
from lm_eval_infogain.sampling.contract import is_int, is_number  # noqa: F401  (their home for the package)

# mode names users type (seed README and ALGORITHM.md spellings) -> canonical strategy name
MODE_ALIASES = {
    "original": "original",
    "confidence": "original",
    "low_confidence": "original",
    "random": "random",
    "entropy": "entropy",
    "margin": "margin",
    "fast_dllm": "fast_dllm",
    "fastdllm": "fast_dllm",
    "eb_sampler": "eb_sampler",
    "eb": "eb_sampler",
    "pc_sampler": "pc_sampler",
    "pc": "pc_sampler",
    "info_gain": "info_gain",
    "infogain": "info_gain",
    "lookum": "info_gain",
}
VARIANTS = ("info_gain", "lookum")
CACHE_MODES = ("none", "prefix", "dual")
# What top_k/top_p filter. "draw" (the Info-Gain paper's pipeline): only the drawn tokens and their
# confidence; every entropy (C, H_next) and probability (the bypass test) comes from the model's logits.
# "all": those too, from the filtered and renormalised distribution.
FILTER_SCOPES = ("draw", "all")
# what a lookahead candidate recomputes: the cache mode's window ("rest": the paper's) or the block alone
LOOKAHEAD_WINDOWS = ("rest", "block")


def canonical_mode(mode: str) -> str:
    """'info-gain', 'Info_Gain', 'lookum' ... -> the built-in strategy's canonical name; a user's strategy
    (`package.module:ClassName` or an installed entry point's name) -> its name as given, once its class is
    found and follows the contract (modes.plugin_class)."""
    key = str(mode).strip().lower().replace("-", "_")
    if key in MODE_ALIASES:
        return MODE_ALIASES[key]
    if modes.plugin_class(str(mode).strip()) is not None:
        return str(mode).strip()
    installed = modes.installed_names()
    raise UsageError(f"mode={mode!r} is unknown; allowed: {', '.join(MODE_ALIASES)} ('-' and '_' are "
                     f"interchangeable), package.module:ClassName, or an installed {modes.ENTRY_POINT_GROUP} "
                     f"entry point ({', '.join(installed) if installed else 'none installed'})")


def check(condition: bool, key: str, value, allowed: str) -> None:
    if not condition:
        raise UsageError(f"{key}={value!r} is invalid; allowed: {allowed}")


# Bounds past which a float setting can only be a typo or an overflow, never a study's choice.
# Temperatures: below 1e-3 the logits / temperature overflow float16/bfloat16 (1e-320 even float32: token 0
# wins every position); above 100 every distribution is uniform to float precision.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 100.0
MAX_PENALTY = 1e4  # a logit offset beyond any logit a model produces; larger only risks overflow
MAX_SCALE = 1e4  # gamma, pc_lambda, pc_alpha, factor: decays, budgets and caps of order 1 in the papers
# Info-Gain scores each candidate with one lookahead forward: a few hundred is already far past any useful
# lookahead, and 1e8 candidates would fail as an allocation error that does not name the key.
MAX_CANDIDATES = 1024


def is_temperature(value) -> bool:
    """0 or a number in [MIN_TEMPERATURE, MAX_TEMPERATURE] (a temperature divides logits or scores)."""
    return is_number(value) and (value == 0 or MIN_TEMPERATURE <= value <= MAX_TEMPERATURE)


TEMPERATURE_RANGE = f"a number in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"
TEMPERATURE_ALLOWED = f"0 (greedy) or {TEMPERATURE_RANGE}"


@dataclass(frozen=True)
class SamplerConfig:
    """How one generation is decoded. Defaults follow the paper's reasoning/code settings."""

    mode: str = "info_gain"
    variant: str = "info_gain"
    candidate_number: int = 8
    position_temperature: float = 0.2
    threshold: float = 0.8
    # info_gain/lookum (ours, not the paper's): commit every masked block position with confidence >= this
    # at once, no lookahead; the lookahead runs only on steps where none reaches it (dynamic steps)
    parallel_threshold: float | None = None
    use_cache: str = "prefix"
    # info_gain/lookum (ours, not the paper's): "block" forwards a lookahead's candidates over the block only,
    # attending to the positions after it through cached keys/values (loop.Decoder.lookahead_window)
    lookahead_window: str = "rest"
    temperature: float = 0.0
    gen_length: int = 256
    steps: int = 256
    block_length: int = 32
    factor: float | None = None  # fast_dllm: None = threshold rule, else the factor rule
    gamma: float = 0.01  # eb_sampler's entropy budget
    pc_lambda: float = 0.25  # pc_sampler's position decay exp(-lambda * offset in block)
    pc_alpha: float = 10.0  # pc_sampler's cap on -confidence * log f_bg
    pc_baseline: str | None = None  # pc_sampler's token-frequency JSON (python -m lm_eval_infogain.pc_baseline)
    early_stop: bool = True  # once EOS is committed, later masked positions become EOS
    eos_penalty: float = 0.0  # subtracted from the EOS logit at every forward (every mode alike)
    pad_penalty: float = 0.0  # subtracted from the PAD logit too; both when PAD is EOS (the paper's pipeline)
    top_k: int | None = None  # keep the k most likely tokens (Dream's diffusion_generate); None keeps all
    top_p: float | None = None  # keep the nucleus of this probability (applied before top_k); None keeps all
    filter_scope: str = "draw"  # what top_k/top_p filter: see FILTER_SCOPES
    # a user's strategy's options (model_args/gen_kwargs `sampler.<name>`), every declared one once checked
    strategy_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if str(self.mode).strip().lower() == "lookum":  # LookUM is Info-Gain's variant, also accepted as a mode
            object.__setattr__(self, "variant", "lookum")
        object.__setattr__(self, "mode", canonical_mode(self.mode))
        check(isinstance(self.strategy_options, dict), "strategy_options", self.strategy_options,
              f"a dict of option name -> value (model_args {modes.OPTION_PREFIX}<name>=<value>)")
        if self.is_builtin and self.strategy_options:
            name, value = next(iter(self.strategy_options.items()))
            raise UsageError(f"{modes.OPTION_PREFIX}{name}={value!r} is invalid; allowed: none for the built-in "
                             f"mode={self.mode}: {modes.OPTION_PREFIX}<name> keys are options of a strategy loaded "
                             "by import path or entry point; a built-in's options are model_args")
        if not self.is_builtin:
            object.__setattr__(self, "strategy_options", modes.check_options(
                modes.plugin_class(self.mode), self.mode, self.strategy_options))
        check(self.variant in VARIANTS, "variant", self.variant, " | ".join(VARIANTS))
        check(is_int(self.candidate_number) and 1 <= self.candidate_number <= MAX_CANDIDATES, "candidate_number",
              self.candidate_number,
              f"an integer in [1, {MAX_CANDIDATES}] (each candidate costs one lookahead forward)")
        check(is_temperature(self.position_temperature), "position_temperature",
              self.position_temperature, f"0 (no lookahead) or {TEMPERATURE_RANGE}")
        check(is_number(self.threshold) and 0 <= self.threshold <= 1, "threshold", self.threshold,
              "a probability in [0, 1]")
        check(self.parallel_threshold is None or (is_number(self.parallel_threshold)
                                                  and 0 < self.parallel_threshold <= 1),
              "parallel_threshold", self.parallel_threshold, "a probability in (0, 1], or unset")
        check(self.parallel_threshold is None or self.mode == "info_gain", "parallel_threshold",
              self.parallel_threshold, f"unset for mode={self.mode} (it is an option of info_gain and lookum)")
        check(self.use_cache in CACHE_MODES, "use_cache", self.use_cache, " | ".join(CACHE_MODES))
        check(self.lookahead_window in LOOKAHEAD_WINDOWS, "lookahead_window", self.lookahead_window,
              " | ".join(LOOKAHEAD_WINDOWS))
        check(self.lookahead_window == "rest" or self.mode == "info_gain", "lookahead_window", self.lookahead_window,
              f"rest for mode={self.mode} (block is an option of info_gain and lookum)")
        check(self.lookahead_window == "rest" or self.use_cache != "none", "lookahead_window", self.lookahead_window,
              "rest with use_cache=none (block reads the positions after the block from the cache: use_cache="
              "prefix or dual)")
        check(is_temperature(self.temperature), "temperature", self.temperature, TEMPERATURE_ALLOWED)
        check(self.factor is None or (is_number(self.factor) and 0 < self.factor <= MAX_SCALE), "factor", self.factor,
              f"a number in (0, {MAX_SCALE:g}], or unset for fast_dllm's threshold rule")
        for key, bound in (("gamma", MAX_SCALE), ("pc_lambda", MAX_SCALE), ("pc_alpha", MAX_SCALE),
                           ("eos_penalty", MAX_PENALTY), ("pad_penalty", MAX_PENALTY)):
            value = getattr(self, key)
            check(is_number(value) and 0 <= value <= bound, key, value, f"a number in [0, {bound:g}]")
        check(self.mode != "pc_sampler" or isinstance(self.pc_baseline, str), "pc_baseline", self.pc_baseline,
              "a token-frequency JSON file for mode=pc_sampler (build one with python -m lm_eval_infogain.pc_baseline)")
        check(self.top_k is None or (is_int(self.top_k) and self.top_k >= 1), "top_k", self.top_k,
              "an integer >= 1, or unset for no top-k filtering")
        check(self.top_p is None or (is_number(self.top_p) and 0 < self.top_p <= 1), "top_p", self.top_p,
              "a probability in (0, 1], or unset for no nucleus filtering")
        check(self.filter_scope in FILTER_SCOPES, "filter_scope", self.filter_scope, " | ".join(FILTER_SCOPES))
        check(isinstance(self.early_stop, bool), "early_stop", self.early_stop, "true | false")
        for key in ("gen_length", "steps", "block_length"):
            value = getattr(self, key)
            check(is_int(value) and value >= 1, key, value, "an integer >= 1")
        check(self.gen_length % self.block_length == 0, "gen_length", self.gen_length,
              f"a multiple of block_length={self.block_length}")
        check(self.steps % self.num_blocks == 0, "steps", self.steps,
              f"a multiple of the number of blocks gen_length/block_length={self.num_blocks}")

    @property
    def is_builtin(self) -> bool:
        return self.mode in modes.BUILTIN_STRATEGIES

    def strategy_option_values(self) -> dict:
        """The options the strategy is built with: a built-in's are the fields of the names it declares."""
        if not self.is_builtin:
            return self.strategy_options
        return {name: getattr(self, name) for name in modes.BUILTIN_STRATEGIES[self.mode].options}

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks


def fit_to_model(config: SamplerConfig, given: set[str], spec) -> SamplerConfig:
    """The config for this model: its own defaults for what the user left out, and its limits checked.

    A block-causal model (SDAR, TraDo) decodes one of its attention blocks at a time unless told
    otherwise; a model without a cache of ours (trust_remote_code) runs with use_cache=none.
    """
    defaults = {}
    if spec.attention_block_size is not None and "block_length" not in given:
        defaults["block_length"] = spec.attention_block_size
    if config.use_cache not in spec.cache_modes and "use_cache" not in given:
        defaults["use_cache"] = spec.cache_modes[0]
    config = dataclasses.replace(config, **defaults)
    check(config.use_cache in spec.cache_modes, "use_cache", config.use_cache,
          f"{' | '.join(spec.cache_modes)} for this model"
          + (" (dual caches positions after the block, which block-causal attention never reads)"
             if spec.attention_block_size else ""))
    check(config.gen_length < spec.max_length, "gen_length", config.gen_length,
          f"fewer tokens than the model's max length {spec.max_length}, which also holds the prompt")
    if spec.attention_block_size is not None:
        check(config.block_length % spec.attention_block_size == 0, "block_length", config.block_length,
              f"a multiple of the model's attention block size {spec.attention_block_size}")
    return config
