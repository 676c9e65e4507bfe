"""The sampler from Python, outside lm-eval: `InfoGainSampler(model, tokenizer).sample(input_ids, ...)`.

    from lm_eval_infogain.api import InfoGainSampler

    sampler = InfoGainSampler.from_pretrained("tiny-llada-sudoku")
    out = sampler.sample(sampler.tokenizer("Solve ...")["input_ids"], max_new_tokens=24, steps=24, block_size=24)
    print(out.text[0], out.stats[0]["nfe"])

The keyword names are those of the Info-Gain paper's standalone sampler (`max_new_tokens`, `block_size`,
`variant`, ...); every other sampler option of the backend (`mode`, `use_cache`, `temperature`,
`eos_penalty`, ...) is accepted under its model_args name (`mode` also as a strategy class), and a user
strategy's options either as
`strategy_options={"spread": 0.2}` or as `**{"sampler.spread": 0.2}`. It runs the same loop as the lm-eval backend
(every mode, cache mode and batch; the backend seeds each request from the run's seed and the request, here
`seed` does). A prompt is a list of token ids, or a batch of them (lists of different lengths, or a 2-D tensor
with an optional attention_mask marking padding to drop).
"""

import dataclasses
from dataclasses import dataclass

import torch

from lm_eval_infogain.models.registry import checkpoint_sampler_defaults, load
from lm_eval_infogain.sampling.config import SamplerConfig, check, fit_to_model
from lm_eval_infogain.sampling.loop import generate
from lm_eval_infogain.sampling.modes import OPTION_PREFIX, split_options

# the paper's standalone-sampler names -> ours
KEYWORD_NAMES = {"max_new_tokens": "gen_length", "block_size": "block_length"}


@dataclass
class SampleOutput:
    ids: list[list[int]]  # per prompt, the generated ids (gen_length of them, EOS fill included)
    text: list[str] | None  # per prompt, the answer decoded up to its first stop id (None without a tokenizer)
    stats: list[dict]  # per prompt: nfe, tokens_forwarded, cumulative_entropy, bypass_tokens (+ trace)
    config: SamplerConfig  # what ran


class InfoGainSampler:
    """The project's decoding loop over a loaded model: `model` is an adapter from
    `lm_eval_infogain.models.registry.load` (or `InfoGainSampler.from_pretrained`)."""

    def __init__(self, model, tokenizer=None, **defaults):
        check(hasattr(model, "spec") and hasattr(model, "forward") and hasattr(model, "new_cache"), "model",
              type(model).__name__, "an adapter from lm_eval_infogain.models.registry.load (or use "
              "InfoGainSampler.from_pretrained)")
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = self.sampler_args(defaults)

    @classmethod
    def from_pretrained(cls, pretrained: str, dtype: str = "auto", device: str | None = None, **defaults):
        """Load a checkpoint (directory, hub id or short name such as `tiny-llada-sudoku`); its
        generation_config.json sampler_defaults apply under `defaults` and each call's keywords."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        adapter, tokenizer = load(pretrained, dtype=dtype, device=device)
        return cls(adapter, tokenizer, **(checkpoint_sampler_defaults(pretrained) | cls.sampler_args(defaults)))

    @staticmethod
    def sampler_args(keywords: dict) -> dict:
        """Keywords in either naming -> SamplerConfig fields; an unknown one is an error, never ignored."""
        fields = {field.name for field in dataclasses.fields(SamplerConfig)}
        keywords, options = split_options(keywords)
        args = {KEYWORD_NAMES.get(key, key): value for key, value in keywords.items()}
        unknown = sorted(set(args) - fields)
        check(not unknown, "keyword", ", ".join(unknown),
              f"{', '.join(sorted(fields | set(KEYWORD_NAMES)))}, or {OPTION_PREFIX}<option> (a user strategy's)")
        if options:
            args["strategy_options"] = args.get("strategy_options", {}) | options
        if isinstance(args.get("mode"), type):
            args["mode"] = import_path_of(args["mode"])
        return args

    def sample(self, input_ids, attention_mask=None, seed: int | list[int] = 0, trace: bool = False,
               **keywords) -> SampleOutput:
        """Decode one prompt or a batch; `seed` (one, or one per prompt) seeds each prompt's own generator,
        so a prompt's output does not depend on its batch. trace=True adds the decode order to the stats."""
        given = self.sampler_args(keywords)
        options = self.defaults.get("strategy_options", {}) | given.get("strategy_options", {})
        args = self.defaults | given | ({"strategy_options": options} if options else {})
        config = fit_to_model(SamplerConfig(**args), set(args), self.model.spec)
        prompts = prompt_lists(input_ids, attention_mask)
        seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
        check(len(seeds) == len(prompts), "seed", seed, f"one integer, or one per prompt ({len(prompts)})")
        generated, stats = generate(self.model, prompts, config, seeds, trace=trace)
        return SampleOutput(generated, self.answers(generated), stats, config)

    def answers(self, generated: list[list[int]]) -> list[str] | None:
        if self.tokenizer is None:
            return None
        stop_ids = set(self.model.spec.stop_ids)
        ends = [next((i for i, token in enumerate(ids) if token in stop_ids), len(ids)) for ids in generated]
        return [self.tokenizer.decode(ids[:end], skip_special_tokens=True) for ids, end in zip(generated, ends)]


def import_path_of(strategy_class: type) -> str:
    """mode=<a class>: its import path 'module:Class', by which the loop finds it (and the run records it). A
    class at the top level of a module or of a notebook (module __main__) has one; one defined inside a function
    has none."""
    path = f"{strategy_class.__module__}:{strategy_class.__qualname__}"
    check("<locals>" not in strategy_class.__qualname__, "mode", path,
          "a strategy class defined at the top level of a module or notebook, or an import path 'package.module:Class'")
    return path


def prompt_lists(input_ids, attention_mask=None) -> list[list[int]]:
    """One prompt (ids) or a batch (list of lists, or a [B, L] tensor whose attention_mask 0s are padding)."""
    if isinstance(input_ids, torch.Tensor):
        check(input_ids.dim() in (1, 2), "input_ids", tuple(input_ids.shape), "a [L] or [B, L] tensor")
        rows = input_ids.view(-1, input_ids.shape[-1]).tolist()
        if attention_mask is not None:
            keep = attention_mask.view(len(rows), -1).bool().tolist()
            rows = [[token for token, kept in zip(row, mask) if kept] for row, mask in zip(rows, keep)]
    else:
        rows = [list(input_ids)] if input_ids and isinstance(input_ids[0], int) else [list(row) for row in input_ids]
    check(bool(rows) and all(rows), "input_ids", "an empty prompt", "at least one token per prompt")
    return rows
