"""The lm-eval backend `mdm_infogain`: model_args -> adapter + SamplerConfig; requests -> batches -> text.

    lm_eval --model mdm_infogain --model_args pretrained=tiny-random-llada,mode=info-gain --tasks sudoku_4x4

The model is loaded once, in __init__. generate_until groups requests by gen_kwargs (lm-eval's
Collator, longest prompt first), decodes `batch_size` prompts per canvas (batch_size=auto: the most that
fit, found before the first batch) and cuts each answer at the first stop id and stop string.
loglikelihood (multiple choice) and loglikelihood_rolling return the Monte Carlo ELBO of
sampling/likelihood.py. Every request draws its randomness from its own generator,
seeded from the run's seed and the request (task, document, request index, repeat), so outputs do not
depend on batch size, request order or the number of processes.
"""

import atexit
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import torch
from accelerate.utils import find_executable_batch_size
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    Collator, handle_stop_sequences, maybe_truncate, normalize_gen_kwargs, postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from lm_eval_infogain import __version__, request_cache
from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.models.base import with_attention_block
from lm_eval_infogain.models.oracle import OracleAdapter
from lm_eval_infogain.models.registry import (DEFAULT_PRETRAINED, adapt_built_model, built_model_name,
                                              checkpoint_sampler_defaults, load, resolve_pretrained)
from lm_eval_infogain.sampling.config import (TEMPERATURE_ALLOWED, SamplerConfig, check, fit_to_model, is_int,
                                              is_number, is_temperature)
from lm_eval_infogain.sampling.likelihood import ScoringRequest, loglikelihoods
from lm_eval_infogain.sampling.loop import background_log_frequencies, generate, probe_batch

logger = logging.getLogger(__name__)

SAMPLER_KEYS = tuple(field.name for field in dataclasses.fields(SamplerConfig))
HARNESS_KEYS = ("pretrained", "tokenizer", "arch", "trust_remote_code", "peft", "max_new_tokens", "batch_size",
                "max_batch_size", "dtype", "device", "seed", "decode_stats", "mc_num", "mc_batch_size",
                "attention_block", "oracle_noise")
# model_args that never change an answer: a --use_cache file filled with other values of them still
# answers this run. Every other model_arg is part of the settings the cache file records.
OUTPUT_NEUTRAL_KEYS = ("batch_size", "max_batch_size", "device", "decode_stats")
# lm-eval's names of the generation length, in the priority order of its normalize_gen_kwargs
MAX_TOKEN_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
KNOWN_GEN_KWARGS = {"until", "temperature", "do_sample", "top_k", "top_p", *MAX_TOKEN_KEYS}
# Keys that lm-eval's CLI passes next to --model_args (from --batch_size, --max_batch_size, --device, with
# its defaults when not given) and that our README also lists as model_args.
CLI_KEYS = ("batch_size", "max_batch_size", "device")
# batch_size=auto starts its search here when max_batch_size is not given (lm-eval's hf model's default)
DEFAULT_MAX_BATCH_SIZE = 64
BATCH_SIZE_ALLOWED = "an integer >= 1 or auto (the largest that fits, found once per run; auto:N is not supported)"


def request_seed(run_seed: int, instance, repeat: int) -> int:
    """A 63-bit seed that names the request, not its place in a batch or on a rank."""
    key = f"{run_seed}|{instance.task_name}|{instance.doc_id}|{instance.idx}|{repeat}|{instance.args[0]}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 1


def check_gen_kwarg(condition: bool, key: str, value, allowed: str) -> None:
    """check() for a task's gen_kwargs (or --gen_kwargs): the message says where the value came from."""
    check(condition, f"gen_kwargs {key}", value, allowed)


def stop_strings(until) -> list[str]:
    """gen_kwargs' `until` as a list; an empty or non-string stop would fail only when the first answer is cut."""
    check_gen_kwarg(until is None or isinstance(until, str) or (
        isinstance(until, list) and all(isinstance(stop, str) and stop for stop in until)),
        "until", until, "a string or a list of non-empty strings")
    return handle_stop_sequences(until, eos=None)


def positive_int(key: str, value) -> int:
    """An integer >= 1, also from the CLI's string form ('8')."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    check(is_int(value) and value >= 1, key, value, "an integer >= 1")
    return value


def parse_batch_size(batch_size, max_batch_size) -> tuple[int | None, int | None]:
    """(prompts per canvas, max_batch_size): batch_size, which max_batch_size (when given) bounds.

    batch_size=auto gives None: the size is searched for before the first batch, from max_batch_size
    (DEFAULT_MAX_BATCH_SIZE when not given) down. lm-eval's auto:N re-detects N times as the requests
    get shorter; here one size, found on the longest request, serves the whole run, so auto:N is refused
    rather than read as auto.
    """
    if max_batch_size is not None:
        max_batch_size = positive_int("max_batch_size", max_batch_size)
    if batch_size == "auto":
        return None, DEFAULT_MAX_BATCH_SIZE if max_batch_size is None else max_batch_size
    if isinstance(batch_size, str) and batch_size.isdigit():
        batch_size = int(batch_size)
    check(is_int(batch_size) and batch_size >= 1, "batch_size", batch_size, BATCH_SIZE_ALLOWED)
    check(max_batch_size is None or batch_size <= max_batch_size, "batch_size", batch_size,
          f"at most max_batch_size={max_batch_size}")
    return batch_size, max_batch_size


DEVICE_TYPES = ("cpu", "cuda", "mps")


def choose_device(requested: str | None, accelerator) -> str:
    """The device to run on. Under `accelerate launch` each process takes its own.

    lm-eval's CLI passes device='cuda:0' unless told otherwise; like its `hf` model, a machine
    without CUDA then runs on the CPU (with a warning rather than a crash).
    """
    if accelerator is not None:
        return str(accelerator.device)
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    allowed = "cpu | cuda | cuda:N (N below the number of GPUs) | mps"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise UsageError(f"device={requested!r} is invalid; allowed: {allowed}") from None
    check(device.type in DEVICE_TYPES, "device", requested, allowed)
    if device.type == "cuda" and not torch.cuda.is_available():
        logger.warning("device=%r is not available on this machine; using cpu", requested)
        return "cpu"
    check(device.type != "cuda" or (device.index or 0) < torch.cuda.device_count(), "device", requested,
          f"{allowed}; this machine has {torch.cuda.device_count()} GPU(s)")
    check(device.type != "mps" or torch.backends.mps.is_available(), "device", requested,
          f"{allowed}; mps is not available on this machine")
    return requested


def default_pretrained(pretrained: str | None) -> str:
    """pretrained as given, or the default model, said at warning level: it has random weights."""
    if pretrained is None or pretrained == "":
        logger.warning("pretrained was not given: running the default %s (random weights, for smoke tests); "
                       "name a model with --model_args pretrained=...", DEFAULT_PRETRAINED)
        return DEFAULT_PRETRAINED
    return pretrained


def sampler_config(sampler_args: dict, max_new_tokens: int | None = None) -> SamplerConfig:
    """model_args' sampler keys -> SamplerConfig (before fit_to_model); sampler_args gains what aliases set."""
    unknown = sorted(set(sampler_args) - set(SAMPLER_KEYS))
    if unknown:
        raise UsageError(f"unknown model_args key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(HARNESS_KEYS + SAMPLER_KEYS)}")
    if max_new_tokens is not None:  # alias of gen_length (the seed README's name)
        if "gen_length" in sampler_args and sampler_args["gen_length"] != max_new_tokens:
            raise UsageError(f"max_new_tokens={max_new_tokens!r} and gen_length={sampler_args['gen_length']!r} "
                             "disagree; give one of them")
        sampler_args["gen_length"] = max_new_tokens
    if sampler_args.get("use_cache", "prefix") is None:  # lm-eval parses the string 'none' as None
        sampler_args["use_cache"] = "none"
    return SamplerConfig(**sampler_args)


@register_model("mdm_infogain")
class MDMInfoGainLM(LM):
    def __init__(self, pretrained: str | None = None, arch: str | None = None, trust_remote_code=False,
                 peft: str | None = None, batch_size=1, max_batch_size=None, dtype: str = "auto",
                 device: str | None = None, seed: int | None = None, max_new_tokens: int | None = None,
                 decode_stats: str | None = None, mc_num: int = 128, mc_batch_size: int = 32,
                 attention_block: str | None = None, tokenizer=None, oracle_noise=None, **sampler_args):
        # the harness keys as given (here, before any other name is bound, locals() holds just the parameters)
        self.model_args = {key: value for key, value in locals().items() if key in HARNESS_KEYS}
        super().__init__()
        # pretrained may be a model built in Python (with tokenizer=), as lm-eval's hf model allows
        self.built_model = None if pretrained is None or isinstance(pretrained, str) else pretrained
        if self.built_model is not None:
            pretrained = built_model_name(self.built_model)
            self.model_args["tokenizer"] = getattr(tokenizer, "name_or_path", tokenizer)
        pretrained = self.model_args["pretrained"] = default_pretrained(pretrained)
        # The checkpoint's own defaults (generation_config.json) under the model_args given.
        checkpoint_defaults = {} if self.built_model is not None else checkpoint_sampler_defaults(pretrained)
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
        # lm-eval's --seed seeds torch before building the model, so it reaches us through torch.
        self.seed = torch.initial_seed() if seed is None else seed
        self.accelerator = self.setup_data_parallel()
        self.decode_stats_path = self.stats_path(decode_stats)  # a bad path fails before the model loads
        self.pretrained = pretrained
        check(isinstance(trust_remote_code, bool), "trust_remote_code", trust_remote_code, "True or False")
        if self.built_model is not None:
            self.adapter, self.tokenizer = adapt_built_model(self.built_model, tokenizer,
                                                             choose_device(device, self.accelerator))
        else:
            self.adapter, self.tokenizer = load(pretrained, dtype=dtype, device=choose_device(device, self.accelerator),
                                                arch=arch, trust_remote_code=trust_remote_code, peft=peft,
                                                oracle_noise=oracle_noise)
        given_block_length = self.sampler.block_length if "block_length" in sampler_args else None
        self.adapter, self.model_args["attention_block"] = with_attention_block(self.adapter, attention_block,
                                                                                given_block_length)
        self.sampler = fit_to_model(self.sampler, set(sampler_args), self.adapter.spec)
        self._device = self.adapter.device
        if self.sampler.mode == "pc_sampler":  # a bad baseline file fails now, not at the first request
            background_log_frequencies(self.sampler.pc_baseline, self.adapter.spec.vocab_size, str(self.device))
        self.decode_stats: list[dict] = []  # this process's requests
        self.run_decode_stats: dict[tuple, dict] = {}  # every process's, on the first one (see gather_decode_stats)
        self.task_samplers: dict[str, SamplerConfig] = {}  # what each task's requests decoded with
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

    def stats_path(self, path: str | None) -> Path | None:
        """Where per-request decode stats go, one JSONL file per process (rank suffix when several)."""
        if path is None:
            return None
        path = Path(path)
        check(path.parent.is_dir() and not path.is_dir(), "decode_stats", str(path),
              "a file (not a directory) in an existing directory")
        return path.with_name(f"{path.name}.rank{self.rank}") if self.world_size > 1 else path

    def setup_data_parallel(self):
        """Under `accelerate launch`, each process takes its share of the requests (lm-eval's rank/world_size)."""
        self._rank, self._world_size = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        from accelerate import Accelerator

        # Without CUDA, accelerate joins the processes only when told to run on the CPU (gloo); otherwise each
        # would see itself alone and run every request.
        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        if self._world_size != int(os.environ["WORLD_SIZE"]):
            raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but accelerate joined {self._world_size} "
                               "process(es); every process would run every request")
        if torch.distributed.get_backend() == "gloo":
            # Gloo's worker threads still hold tensors when a rank's interpreter shuts down, and freeing them
            # then aborts the process (SIGABRT) now and then, after its work is done. Destroying the group
            # while Python is alive avoids it. Not for NCCL: a rank leaving on an error could hang there.
            atexit.register(accelerator.state.destroy_process_group)
        return accelerator

    # --- lm-eval distributed primitives (used by the evaluator to gather results) ---
    def all_gather(self, tensor):
        return tensor if self.world_size <= 1 else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst=0):
        if self.world_size <= 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=gathered, dst=dst)
        return gathered

    def barrier(self):
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()

    # --- chat template ---
    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        if not self.tokenizer.chat_template:
            raise UsageError(f"--apply_chat_template was given but pretrained={self.pretrained!r} has no chat template")
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

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

    @property
    def prefix_token_id(self) -> int:
        """The context of an empty one (lm-eval's convention): BOS, or EOS when the tokenizer has none."""
        bos = self.tokenizer.bos_token_id
        return self.adapter.spec.eos_id if bos is None else bos

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.adapter.spec.mask_id in ids:  # the tokenizer reads the mask token's text as the mask id
            mask_text = self.tokenizer.convert_ids_to_tokens(self.adapter.spec.mask_id)
            self.warn_once(f"a prompt holds the mask token's text {mask_text!r}; it is encoded as the mask id, so "
                           "the model treats that position as masked, not as text")
        return ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, continuation), split as lm-eval's causal models split them.

        The context's trailing spaces move to the continuation; the continuation is what the whole text
        adds to the context's tokens; an empty context is the prefix token. A context too long for the
        model loses its start.
        """
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.prefix_token_id], self.encode(continuation)
        context_ids = self.encode(context)
        continuation_ids = self.encode(context + continuation)[len(context_ids):]
        room = self.adapter.spec.max_length - len(continuation_ids)
        check(room >= 1, "continuation", continuation[:40], f"at most {self.adapter.spec.max_length - 1} tokens")
        if len(context_ids) > room:
            self.warn_once(f"loglikelihood contexts are left-truncated to fit the model max length "
                           f"{self.adapter.spec.max_length}")
        return context_ids[-room:], continuation_ids

    def warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            logger.warning(message)

    def request_settings(self, gen_kwargs: dict) -> tuple[list[str], int, float, int | None, float | None]:
        """(stop strings, generation length, temperature, top_k, top_p) of a request's gen_kwargs.

        Task gen_kwargs win over model_args (lm-eval's convention); model_args fill what a task leaves out.
        lm-eval's normalize_gen_kwargs (as its `hf` model) reads the length's aliases (max_new_tokens, ...)
        and do_sample=false as greedy, once our checks passed: it converts with int() and float(), so a bad
        value would fail inside it with a traceback.
        """
        ignored = sorted(set(gen_kwargs) - KNOWN_GEN_KWARGS)
        if ignored:
            self.warn_once(f"gen_kwargs {', '.join(ignored)} have no meaning for mdm_infogain and are ignored")
        until = stop_strings(gen_kwargs.get("until"))
        for key in MAX_TOKEN_KEYS:
            value = gen_kwargs.get(key, 1)
            check_gen_kwarg(is_int(value) and value >= 1, key, value, "an integer >= 1")
        temperature = gen_kwargs.get("temperature", self.sampler.temperature)
        check_gen_kwarg(is_temperature(temperature), "temperature", temperature, TEMPERATURE_ALLOWED)
        do_sample = gen_kwargs.get("do_sample")
        check_gen_kwarg(do_sample is None or isinstance(do_sample, bool), "do_sample", do_sample, "true | false")
        known = {key: value for key, value in gen_kwargs.items() if key in KNOWN_GEN_KWARGS and key != "until"}
        settings = normalize_gen_kwargs(known | {"temperature": temperature}, self.sampler.gen_length)
        temperature, max_gen_toks = float(settings["temperature"]), settings["max_gen_toks"]
        if temperature != self.sampler.temperature:
            self.warn_once(f"task gen_kwargs set temperature={temperature} (model_args temperature="
                           f"{self.sampler.temperature}); the task's value is used")
        top_k = gen_kwargs.get("top_k", self.sampler.top_k)
        check_gen_kwarg(top_k is None or (is_int(top_k) and top_k >= 1), "top_k", top_k, "an integer >= 1")
        top_p = gen_kwargs.get("top_p", self.sampler.top_p)
        check_gen_kwarg(top_p is None or (is_number(top_p) and 0 < top_p <= 1), "top_p", top_p, "a number in (0, 1]")
        for key, value in (("top_k", top_k), ("top_p", top_p)):
            if value != getattr(self.sampler, key):
                self.warn_once(f"task gen_kwargs set {key}={value} (model_args {key}="
                               f"{getattr(self.sampler, key)}); the task's value is used")
        return until, min(max_gen_toks, self.sampler.gen_length), temperature, top_k, top_p

    def request_sampler(self, gen_kwargs: dict):
        """(stop strings, generation length, SamplerConfig) that a request with these gen_kwargs decodes with."""
        until, gen_length, temperature, top_k, top_p = self.request_settings(gen_kwargs)
        return until, gen_length, dataclasses.replace(self.sampler, temperature=temperature, top_k=top_k, top_p=top_p)

    def encode_prompt(self, context: str, gen_length: int) -> list[int]:
        ids = self.encode(context)
        if not ids:
            raise UsageError("an empty prompt was given; masked diffusion needs at least one prompt token")
        room = self.adapter.spec.max_length - gen_length
        if len(ids) > room:  # lm-eval's own helper warns per prompt; once per run is enough
            self.warn_once(f"prompts longer than {room} tokens are left-truncated (model max length "
                           f"{self.adapter.spec.max_length} minus generation {gen_length})")
        return maybe_truncate(ids, gen_length, self.adapter.spec.max_length, side="left", verbose=False)[0]

    def decode_answer(self, ids: list[int], until: list[str]) -> str:
        stop_ids = set(self.adapter.spec.stop_ids)
        end = next((i for i, token in enumerate(ids) if token in stop_ids), len(ids))
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=True)
        return postprocess_generated_text(text, until, None)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        self.generate_until_calls += 1  # lm_eval_hook makes a rank whose requests were all cached join in
        for instance in requests:  # every request's gen_kwargs are checked before any is decoded
            self.request_settings(instance.args[1])
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
            self.task_samplers.update((key["task"], config) for key in request_keys)
            prompts = [self.encode_prompt(context, gen_length) for context in contexts]
            started = time.perf_counter()
            exact = isinstance(self.adapter, OracleAdapter)  # its decode stats gain the exact diagnostics
            decode = functools.partial(generate, trace=True) if exact else generate  # (replayed from the trace)
            generated, stats = decode(self.adapter, prompts, config, list(seeds), gen_length)
            seconds = (time.perf_counter() - started) / len(prompts)  # a batch's time, shared equally
            if exact:
                stats = list(map(self.adapter.exact_diagnostics, prompts, generated, stats))
            self.record_stats([key | row | {"seconds": seconds} for key, row in zip(request_keys, stats)])
            for context, gen_kwargs, ids in zip(contexts, all_gen_kwargs, generated):
                answer = self.decode_answer(ids, until)
                answers.append(answer)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), answer)
                progress.update(1)
            self.commit_cache()
        progress.close()
        self.gather_decode_stats(self.decode_stats[len(self.decode_stats) - len(requests):])
        return collator.get_original(answers)

    def costliest_request(self, requests) -> tuple[list[int], int, SamplerConfig] | None:
        """(prompt ids, generation length, sampler) of the request with the longest canvas (prompt and
        generation), None when there are no requests."""
        canvases = []
        for context, gen_kwargs in (instance.args for instance in requests):
            _, gen_length, config = self.request_sampler(gen_kwargs)
            canvases.append((self.encode_prompt(context, gen_length), gen_length, config))
        return max(canvases, key=lambda canvas: len(canvas[0]) + canvas[1], default=None)

    def largest_batch_that_fits(self, requests) -> int:
        """batch_size=auto: the most prompts per canvas, at most max_batch_size, that the costliest request's
        work (loop.probe_batch on copies of it) fits, found once and kept for the run. Every process takes
        the smallest size any of them found (as lm-eval's hf model), so that all batch alike."""
        costliest = self.costliest_request(requests)
        size = self.max_batch_size if costliest is None else self.search_batch_size(*costliest)
        if self.world_size > 1:
            size = int(self.all_gather(torch.tensor([size], device=self.device)).min())
        if costliest is not None:
            prompt, gen_length, _ = costliest
            logger.info("batch_size=auto: %d prompts per canvas (max_batch_size=%d), the most that fit the "
                        "longest request (%d prompt + %d generated tokens)", size, self.max_batch_size,
                        len(prompt), gen_length)
        self.batch_sizes = {0: size}
        return size

    def search_batch_size(self, prompt: list[int], gen_length: int, config: SamplerConfig) -> int:
        """From max_batch_size down in halves to the first size whose probe does not run out of memory
        (accelerate's find_executable_batch_size, as lm-eval's hf model); 1 if none fits, as there.

        Halves, as accelerate did up to 1.6 and as the loop splits a batch: its default since 1.7, 10% less
        per failure, would probe up to 24 sizes from 64. Called directly, not as a decorator with arguments,
        which drops reduce_batch_size_fn in some versions.
        """
        size = self.max_batch_size

        def halve() -> int:
            nonlocal size
            size //= 2
            return size

        def fits(batch_size: int) -> int:
            probe_batch(self.adapter, prompt, config, gen_length, batch_size)
            return batch_size

        try:
            return find_executable_batch_size(fits, starting_batch_size=size, reduce_batch_size_fn=halve)()
        except RuntimeError as error:
            if "No executable batch size found" not in str(error):
                raise
        logger.warning("batch_size=auto: even one prompt of the longest request (%d prompt + %d generated "
                       "tokens) ran out of memory in the probe; decoding one prompt per canvas", len(prompt),
                       gen_length)
        return 1

    def gather_decode_stats(self, rows: list[dict]) -> None:
        """Every process's stats of one generate_until call, kept by the first process for the results JSON.
        Each process calls generate_until once per request type, so all of them reach this gather; a
        request that lm-eval repeats on two processes to even out their shares is kept once."""
        gathered = self.gather_object(rows)
        if self.rank == 0:
            for row in (row for part in gathered for row in part):
                self.run_decode_stats[(row["task"], row["doc_id"], row["idx"], row["repeat"])] = row

    # --- lm-eval's request cache (--use_cache), see request_cache.py ---
    def set_cache_hook(self, cache_hook) -> None:
        """Called by lm-eval's CachingLM with the cache file: refuse one made with other settings."""
        if cache_hook.dbdict is not None:
            request_cache.guard(cache_hook.dbdict, self.output_settings())
        super().set_cache_hook(cache_hook)

    def output_settings(self) -> dict:
        """What decides the answers: every model_arg but OUTPUT_NEUTRAL_KEYS (sampler keys as fitted to the
        model, the seed as drawn), what they resolve to (model type, dtype, the checkpoint's and peft
        adapter's files) and the software versions."""
        given = {key: value for key, value in self.model_args.items() if key not in OUTPUT_NEUTRAL_KEYS}
        info = self.get_model_info()
        for key in ("decode_stats_mean", "decode_stats_per_request", "sampler_per_task", "batch_size_per_canvas",
                    "batch_size_auto", "pretrained_path", "device", "device_used"):
            info.pop(key)  # stats, what requests have run so far, where the checkpoint and the process live
        peft = self.model_args["peft"]
        identity = (request_cache.weights_identity(self.adapter.model) if self.built_model is not None
                    else request_cache.model_identity(resolve_pretrained(self.pretrained)))
        identities = {"model_identity": identity,
                      "peft_identity": None if peft is None else request_cache.model_identity(peft)}
        return given | info | identities | {"device_type": self.device.type,
                                            "lm_eval_version": importlib.metadata.version("lm_eval")}

    def commit_cache(self) -> None:
        """Make a finished batch's answers durable, so a run killed later keeps them."""
        if self.cache_hook.dbdict is not None:
            self.cache_hook.dbdict.commit()

    def get_model_info(self) -> dict:
        """Everything that decides the outputs, defaults included, for lm-eval's results JSON."""
        config = self.adapter.model.config
        return {
            "lm_eval_infogain_version": __version__,
            "pretrained": self.pretrained,
            "pretrained_path": resolve_pretrained(self.pretrained),
            "model_type": config.model_type,
            "model_dtype": str(self.adapter.dtype),
            "model_num_parameters": sum(p.numel() for p in self.adapter.model.parameters()),
            "attention_block": self.model_args["attention_block"],  # block-causal models: whose blocks
            "attention_block_size": self.adapter.spec.attention_block_size,
            "device": str(self.device),
            "seed": self.seed,
            "batch_size_per_canvas": self.batch_size_per_canvas,  # None until batch_size=auto has found it
            # True: batch_size_per_canvas is what batch_size=auto found (at most max_batch_size)
            "batch_size_auto": self.batch_size_is_auto,
            "mc_num": self.mc_num,
            "mc_batch_size": self.mc_batch_size,
            "sampler": dataclasses.asdict(self.sampler),
            "sampler_per_task": self.sampler_per_task(),
            # lm-eval writes its own --device over "device" in the results; this is where the model ran
            "device_used": str(self.device),
            "decode_stats_mean": self.mean_decode_stats(),
            # per request, to join with lm-eval's samples by (task, doc_id, repeat): NFE, tokens forwarded,
            # cumulative entropy, bypass tokens, seconds
            "decode_stats_per_request": [row for _, row in sorted(self.run_decode_stats.items(), key=str)],
        }

    def sampler_per_task(self) -> dict:
        """The settings a task's gen_kwargs changed ({} when it ran with `sampler` as it is)."""
        base = dataclasses.asdict(self.sampler)
        return {task: {key: value for key, value in dataclasses.asdict(config).items() if base[key] != value}
                for task, config in sorted(self.task_samplers.items())}

    def record_stats(self, rows: list[dict]) -> None:
        """Keep per-request stats, and append them to the JSONL file at once: a crash loses nothing."""
        self.decode_stats.extend(rows)
        if self.decode_stats_path is not None:
            with self.decode_stats_path.open("a") as stats_file:
                stats_file.writelines(json.dumps(row) + "\n" for row in rows)

    def mean_decode_stats(self) -> dict:
        """Per task: the mean of every numeric stat over its requests (those of every process)."""
        by_task: dict[str, list[dict]] = {}
        for row in self.run_decode_stats.values():
            by_task.setdefault(row["task"], []).append(row)
        numeric = ("nfe", "tokens_forwarded", "cumulative_entropy", "bypass_tokens", "seconds")
        return {task: {key: sum(row[key] for row in rows) / len(rows) for key in numeric} | {"requests": len(rows)}
                for task, rows in by_task.items()}
