"""The lm-eval backend `mdm_infogain`: model_args -> adapter + SamplerConfig; requests -> batches -> text.

    lm_eval --model mdm_infogain --model_args pretrained=tiny-random-llada,mode=info-gain --tasks sudoku_4x4

The model is loaded once, in __init__; the class keeps lm-eval's contract and mixes in request planning,
the batch-size search, data parallelism and the run's records (their own modules). generate_until groups requests by gen_kwargs (lm-eval's
Collator, longest prompt first), decodes `batch_size` prompts per canvas (batch_size=auto: the most that
fit, found before the first batch) and cuts each answer at the first stop id and stop string.
loglikelihood (multiple choice) and loglikelihood_rolling return the Monte Carlo ELBO of
sampling/likelihood.py. Every request draws its randomness from its own generator,
seeded from the run's seed and the request (task, document, request index, repeat), so outputs do not
depend on batch size, request order or the number of processes.
"""

import dataclasses
import functools
import logging
import time
from collections import Counter

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from lm_eval_infogain import request_cache
from lm_eval_infogain.batch_size_search import BatchSizeSearch, parse_batch_size
from lm_eval_infogain.data_parallel import DataParallel, choose_device
from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.models.base import ModelAdapter, with_attention_block
from lm_eval_infogain.models.registry import (DEFAULT_PRETRAINED, adapt_built_model, built_model_folder,
                                              built_model_name, checkpoint_sampler_defaults, load)
from lm_eval_infogain.request_planning import RequestPlanning, request_seed, steps_for_length
from lm_eval_infogain.run_records import RunRecords
from lm_eval_infogain.sampling.config import SamplerConfig, check, fit_to_model, is_int
from lm_eval_infogain.sampling.compiled import CompiledAdapter
from lm_eval_infogain.sampling.likelihood import ScoringRequest, loglikelihoods
from lm_eval_infogain.sampling.loop import generate
from lm_eval_infogain.sampling.modes import OPTION_PREFIX, split_options
from lm_eval_infogain.sampling.strategies import background_log_frequencies

logger = logging.getLogger(__name__)

SAMPLER_KEYS = tuple(field.name for field in dataclasses.fields(SamplerConfig))
HARNESS_KEYS = ("pretrained", "tokenizer", "arch", "trust_remote_code", "peft", "max_new_tokens", "batch_size",
                "max_batch_size", "dtype", "device", "seed", "decode_stats", "mc_num", "mc_batch_size",
                "attention_block", "oracle_noise", "compile")
# Keys that lm-eval's CLI passes next to --model_args (from --batch_size, --max_batch_size, --device, with
# its defaults when not given) and that our README also lists as model_args.
CLI_KEYS = ("batch_size", "max_batch_size", "device")


def default_pretrained(pretrained: str | None) -> str:
    """pretrained as given, or the default model, said at warning level: it has random weights."""
    if pretrained is None or pretrained == "":
        logger.warning("pretrained was not given: running the default %s (random weights, for smoke tests); "
                       "name a model with --model_args pretrained=...", DEFAULT_PRETRAINED)
        return DEFAULT_PRETRAINED
    return pretrained


def sampler_config(sampler_args: dict, max_new_tokens: int | None = None) -> SamplerConfig:
    """model_args' sampler keys -> SamplerConfig (before fit_to_model); sampler_args gains what aliases set.
    `sampler.<name>` keys are the options of a user's strategy (SamplerConfig.strategy_options)."""
    given, options = split_options(sampler_args)
    for key in sampler_args.keys() - given.keys():
        del sampler_args[key]
    unknown = sorted(set(sampler_args) - set(SAMPLER_KEYS))
    if unknown:
        raise UsageError(f"unknown model_args key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(HARNESS_KEYS + SAMPLER_KEYS)}, {OPTION_PREFIX}<option> (a strategy "
                         "loaded by import path or entry point)")
    if options:
        sampler_args["strategy_options"] = sampler_args.get("strategy_options", {}) | options
    if max_new_tokens is not None:  # alias of gen_length (the seed README's name)
        check(is_int(max_new_tokens) and max_new_tokens >= 1, "max_new_tokens", max_new_tokens, "an integer >= 1")
        if "gen_length" in sampler_args and sampler_args["gen_length"] != max_new_tokens:
            raise UsageError(f"max_new_tokens={max_new_tokens!r} and gen_length={sampler_args['gen_length']!r} "
                             "disagree; give one of them")
        sampler_args["gen_length"] = max_new_tokens
    if sampler_args.get("use_cache", "prefix") is None:  # lm-eval parses the string 'none' as None
        sampler_args["use_cache"] = "none"
    return SamplerConfig(**sampler_args)


def steps_that_run(config: SamplerConfig) -> SamplerConfig:
    """A step commits at least one token, so steps beyond gen_length run as gen_length steps: the config
    says what runs (the outputs are the same), with a warning."""
    if config.steps <= config.gen_length:
        return config
    logger.warning("steps=%d exceeds gen_length=%d: a step commits at least one token, so %d steps run and are "
                   "recorded", config.steps, config.gen_length, config.gen_length)
    return dataclasses.replace(config, steps=config.gen_length)


@register_model("mdm_infogain")
class MDMInfoGainLM(RequestPlanning, BatchSizeSearch, DataParallel, RunRecords, LM):
    """lm-eval's contract: the model and its settings are built once, here; requests are planned
    (request_planning.py), batched (batch_size_search.py), shared among processes (data_parallel.py) and
    recorded (run_records.py) by the mixins."""

    def __init__(self, pretrained: str | None = None, arch: str | None = None, trust_remote_code=False,
                 peft: str | None = None, batch_size=1, max_batch_size=None, dtype: str = "auto",
                 device: str | None = None, seed: int | None = None, max_new_tokens: int | None = None,
                 decode_stats: str | None = None, mc_num: int = 128, mc_batch_size: int = 32,
                 attention_block: str | None = None, tokenizer=None, oracle_noise=None,
                 compile=False, **sampler_args):  # noqa: A002 (compile: the model_args key)
        # the harness keys as given (here, before any other name is bound, locals() holds just the parameters)
        self.model_args = {key: value for key, value in locals().items() if key in HARNESS_KEYS}
        super().__init__()
        # pretrained may be a model built in Python (with tokenizer=), as lm-eval's hf model allows
        self.built_model = None if pretrained is None or isinstance(pretrained, str) else pretrained
        if self.built_model is not None:
            pretrained = built_model_name(self.built_model)
        self.model_args["tokenizer"] = getattr(tokenizer, "name_or_path", tokenizer)
        pretrained = self.model_args["pretrained"] = default_pretrained(pretrained)
        # The checkpoint's own defaults (generation_config.json) under the model_args given; a built model's
        # come from the folder it was loaded from, as the CLI would read them.
        checkpoint_defaults = checkpoint_sampler_defaults(
            pretrained if self.built_model is None else built_model_folder(self.built_model))
        if max_new_tokens is not None:
            checkpoint_defaults.pop("gen_length", None)
        sampler_args = checkpoint_defaults | sampler_args
        self.sampler = sampler_config(sampler_args, max_new_tokens)
        self.batch_size_per_canvas, self.max_batch_size = parse_batch_size(batch_size, max_batch_size)
        self.batch_size_is_auto = self.batch_size_per_canvas is None
        self.batch_sizes: dict[int, int] = {}  # lm-eval's record of the sizes auto found (results' batch_sizes)
        self.generate_until_calls = 0
        check(is_int(mc_num) and mc_num >= 1, "mc_num", mc_num, "an integer >= 1")
        check(is_int(mc_batch_size) and mc_batch_size >= 1, "mc_batch_size", mc_batch_size, "an integer >= 1")
        self.mc_num, self.mc_batch_size = mc_num, mc_batch_size
        check(seed is None or is_int(seed), "seed", seed, "an integer")
        self.given_seed = seed
        self.accelerator = self.setup_data_parallel()
        self.decode_stats_path = self.stats_path(decode_stats)  # a bad path fails before the model loads
        self.pretrained = pretrained
        check(isinstance(trust_remote_code, bool), "trust_remote_code", trust_remote_code, "True or False")
        check(isinstance(compile, bool), "compile", compile, "true | false")
        if self.built_model is not None:
            self.adapter, self.tokenizer = adapt_built_model(self.built_model, tokenizer,
                                                             choose_device(device, self.accelerator))
        else:
            self.adapter, self.tokenizer = load(pretrained, dtype=dtype, device=choose_device(device, self.accelerator),
                                                arch=arch, trust_remote_code=trust_remote_code, peft=peft,
                                                tokenizer=tokenizer, oracle_noise=oracle_noise)
        given_block_length = self.sampler.block_length if "block_length" in sampler_args else None
        self.adapter, self.model_args["attention_block"] = with_attention_block(self.adapter, attention_block,
                                                                                given_block_length)
        self.sampler = steps_that_run(fit_to_model(self.sampler, set(sampler_args), self.adapter.spec))
        if compile:  # sampling/compiled.py: torch.compile at a few static shapes
            check(isinstance(self.adapter, ModelAdapter), "compile", compile,
                  "false for this model (true compiles the project's own LLaDA, MMaDA, Dream, SDAR and TraDo classes)")
            self.adapter = CompiledAdapter(self.adapter)
        self._device = self.adapter.device
        if self.sampler.mode == "pc_sampler":  # a bad baseline file fails now, not at the first request
            background_log_frequencies(self.sampler.pc_baseline, self.adapter.spec.vocab_size, str(self.device))
        self.decode_stats: list[dict] = []  # this process's requests
        self.run_decode_stats: dict[tuple, dict] = {}  # every process's, on the first one (see gather_decode_stats)
        self.task_samplers: dict[str, dict] = {}  # the settings each task's requests decoded with
        self.requests_of_call = None  # see generate_until
        self.warned: set[str] = set()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """lm-eval's CLI passes batch_size, max_batch_size and device (its defaults when not given) next to
        --model_args; lm-eval's own version would call us with both (a TypeError). The model_args value wins,
        as our README lists these keys as model_args, with a note when the CLI's value differs."""
        cli_values = {key: value for key, value in (additional_config or {}).items() if value is not None}
        for key in sorted(set(arg_dict) & set(cli_values) & set(CLI_KEYS)):
            if str(arg_dict[key]) != str(cli_values[key]):
                logger.warning("model_args %s=%s is used; the CLI's --%s %s is not", key, arg_dict[key], key,
                               cli_values[key])
        return cls(**(cli_values | arg_dict))

    # --- requests ---
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(ELBO estimate of log p(continuation | context), is_greedy) per request; see sampling/likelihood.py."""
        scoring = [ScoringRequest(*self.encode_pair(*instance.args), request_seed(self.seed, instance, 0))
                   for instance in requests]
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc="Running loglikelihood requests")
        results = loglikelihoods(self.adapter, scoring, self.mc_num, self.mc_batch_size, progress.update)
        progress.close()
        for instance, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", instance.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The ELBO of each whole text, as lm-eval's causal models chunk it: disjoint windows of at most the
        model's max length, each scored given the window before it (the first given the prefix token)."""
        scoring, owners = [], []
        for index, instance in enumerate(requests):
            (text,) = instance.args
            windows = get_rolling_token_windows(self.encode(text), self.prefix_token_id,
                                                self.adapter.spec.max_length, context_len=1)
            for window, (context, continuation) in enumerate(map(make_disjoint_window, windows)):
                scoring.append(ScoringRequest(context, continuation, request_seed(self.seed, instance, window)))
                owners.append(index)
        progress = tqdm(total=len(scoring), disable=disable_tqdm or self.rank != 0,
                        desc="Running loglikelihood_rolling windows")
        window_results = loglikelihoods(self.adapter, scoring, self.mc_num, self.mc_batch_size, progress.update)
        progress.close()
        totals = [0.0] * len(requests)
        for owner, (log_prob, _) in zip(owners, window_results):
            totals[owner] += log_prob
        for instance, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", instance.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self.generate_until_calls += 1  # lm_eval_hook makes a rank whose requests were all cached join in
        # every request of lm-eval's call, those its --use_cache answered too (set by lm_eval_hook)
        requests_of_call, self.requests_of_call = self.requests_of_call or requests, None
        for instance in requests:  # every request's gen_kwargs are checked before any is decoded
            self.request_sampler(instance.args[1])
        if self.batch_size_per_canvas is None and (requests or self.world_size > 1):  # every rank joins the gather
            self.batch_size_per_canvas = self.largest_batch_that_fits(requests)
        repeats = Counter()
        items = []
        for instance in requests:
            key = (instance.task_name, instance.doc_id, instance.idx)
            request = {"task": instance.task_name, "doc_id": instance.doc_id, "idx": instance.idx,
                       "repeat": repeats[key]}
            items.append((*instance.args, request_seed(self.seed, instance, repeats[key]), request))
            repeats[key] += 1
        collator = Collator(items, sort_fn=lambda item: (-len(item[0]), item[0]), group_by="gen_kwargs",
                            group_fn=lambda item: item[1])
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc="Running generate_until requests")
        answers = []
        for chunk in collator.get_batched(n=self.batch_size_per_canvas):
            contexts, all_gen_kwargs, seeds, request_keys = zip(*chunk)
            until, gen_length, config = self.request_sampler(all_gen_kwargs[0])
            ran = dataclasses.asdict(config) | {"gen_length": gen_length, "steps": steps_for_length(config, gen_length)}
            self.task_samplers.update((key["task"], ran) for key in request_keys)
            prompts = [self.encode_prompt(context, gen_length) for context in contexts]
            started = time.perf_counter()
            diagnose = getattr(self.adapter, "exact_diagnostics", None)  # an exact model's, from the commit trace
            decode = generate if diagnose is None else functools.partial(generate, trace=True)
            generated, stats = decode(self.adapter, prompts, config, list(seeds), gen_length)
            seconds = (time.perf_counter() - started) / len(prompts)  # a batch's time, shared equally
            if diagnose is not None:
                stats = diagnose(prompts, generated, stats)
            rows = [key | row | {"seconds": seconds} for key, row in zip(request_keys, stats)]
            self.record_stats(rows)
            for context, gen_kwargs, ids, row in zip(contexts, all_gen_kwargs, generated, rows):
                answer = self.decode_answer(ids, until)
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
                request_cache.store_stats(self.cache_hook.dbdict, (context, gen_kwargs), row)
                progress.update(1)
            self.commit_cache()
        progress.close()
        decoded = self.decode_stats[len(self.decode_stats) - len(requests):]
        self.gather_decode_stats(decoded + self.cached_decode_stats(requests_of_call, decoded))
        return collator.get_original(answers)


