"""batch_size=auto for the mdm_infogain backend: the most prompts per canvas that fit, found once per run.

From max_batch_size down in halves, each size is tried on copies of the costliest request
(loop.probe_batch) until one does not run out of memory; under `accelerate launch` every process
takes the smallest size any of them found.
"""

import logging

import torch
from accelerate.utils import find_executable_batch_size

from lm_eval_infogain.sampling.config import SamplerConfig, check, is_int
from lm_eval_infogain.sampling.loop import probe_batch

logger = logging.getLogger(__name__)

# batch_size=auto starts its search here when max_batch_size is not given (lm-eval's hf model's default)
DEFAULT_MAX_BATCH_SIZE = 64
BATCH_SIZE_ALLOWED = "an integer >= 1 or auto (the largest that fits, found once per run; auto:N is not supported)"


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


class BatchSizeSearch:
    """batch_size=auto. Mixed into MDMInfoGainLM, whose requests, max_batch_size and processes it reads."""

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
