"""Request planning for the mdm_infogain backend: what each request decodes with and how its text is made.

A task's gen_kwargs (stop strings, generation length and its aliases, temperature, top_k, top_p, and a user
strategy's `sampler.<name>` options) become the SamplerConfig of its requests, checked before any request is
decoded; prompts are encoded (chat template, left truncation to the model's length) and answers cut at the
first stop id and stop string. Every request is seeded from the run's seed and the request itself (task,
document, request index, repeat).
"""

import dataclasses
import hashlib
import logging

import jinja2
import torch
from lm_eval.models.utils import (
    handle_stop_sequences, maybe_truncate, normalize_gen_kwargs, postprocess_generated_text,
)

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.sampling.config import (TEMPERATURE_ALLOWED, SamplerConfig, check, is_int, is_number,
                                              is_temperature)
from lm_eval_infogain.sampling.loop import block_ranges
from lm_eval_infogain.sampling.modes import OPTION_PREFIX, split_options

logger = logging.getLogger(__name__)

# lm-eval's names of the generation length, in the priority order of its normalize_gen_kwargs
MAX_TOKEN_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
KNOWN_GEN_KWARGS = {"until", "temperature", "do_sample", "top_k", "top_p", *MAX_TOKEN_KEYS}


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


def steps_for_length(config: SamplerConfig, gen_length: int) -> int:
    """The steps a generation of gen_length tokens runs (a task's max_gen_toks may shorten it): each block
    keeps config.steps_per_block, at most one per token of a shorter last block (loop.decode_block).
    Counted for a prompt that ends on a block boundary; dynamic modes take as many as their rule needs."""
    return sum(min(config.steps_per_block, end - start)
               for start, end in block_ranges(0, gen_length, config.block_length))


class RequestPlanning:
    """The backend's requests: their seeds, settings, prompts and answers. Mixed into MDMInfoGainLM, whose
    sampler, adapter, tokenizer, given_seed and warned set it reads."""

    @property
    def seed(self) -> int:
        """The run's seed: seed= when given, else the torch seed lm-eval's --seed (simple_evaluate's
        torch_random_seed) set, read as requests run. So a model built in Python before simple_evaluate
        seeds as the CLI does, not from the random seed torch drew when its process started."""
        return torch.initial_seed() if self.given_seed is None else self.given_seed

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        if not self.tokenizer.chat_template:
            raise UsageError(f"--apply_chat_template was given but pretrained={self.pretrained!r} has no chat template")
        try:
            return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except jinja2.TemplateError as error:  # a syntax error, or a raise_exception() of the template
            raise UsageError(f"pretrained={self.pretrained!r}: its chat template (chat_template.jinja or "
                             f"tokenizer_config.json) cannot be applied: {type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}") from None

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
        ignored = sorted(key for key in set(gen_kwargs) - KNOWN_GEN_KWARGS if not key.startswith(OPTION_PREFIX))
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
        """(stop strings, generation length, SamplerConfig) that a request with these gen_kwargs decodes with.
        Its `sampler.<name>` keys set a user strategy's options over model_args' (checked by the config)."""
        until, gen_length, temperature, top_k, top_p = self.request_settings(gen_kwargs)
        options = split_options(gen_kwargs)[1]
        config = dataclasses.replace(self.sampler, temperature=temperature, top_k=top_k, top_p=top_p,
                                     strategy_options=self.sampler.strategy_options | options)
        return until, gen_length, config

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
