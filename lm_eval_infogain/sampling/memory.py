"""Out of memory outside a forward: run a batch again as halves, down to single items, with a warning."""

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)


def split_on_out_of_memory(run: Callable[[list], list], items: list, device: torch.device, what: str) -> list:
    """run(items) -> one result per item; when it runs out of memory, the concatenated runs of two halves.

    Halving goes down to single items; only a single item that does not fit is raised. `run` must give an
    item the same result whatever items share its batch (each has its own seed). `what` describes the
    batch for the warning, with {} for its size.
    """
    try:
        return run(items)
    except torch.OutOfMemoryError:
        if len(items) == 1:
            raise
    # retried outside the except block: its traceback holds the failed batch's tensors
    half = (len(items) + 1) // 2
    logger.warning("out of memory %s; retrying as %d and %d", what.format(len(items)), half, len(items) - half)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the failed batch's blocks back before the halves allocate
    return (split_on_out_of_memory(run, items[:half], device, what)
            + split_on_out_of_memory(run, items[half:], device, what))
