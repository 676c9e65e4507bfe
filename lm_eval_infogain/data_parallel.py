"""Data parallelism for the mdm_infogain backend: the device of each process and lm-eval's primitives.

Under `accelerate launch` each process takes its own device and its share of the requests (lm-eval's
rank and world_size); all_gather, gather_object and barrier are what lm-eval's evaluator calls.
"""

import atexit
import logging
import os

import torch

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.sampling.config import check

logger = logging.getLogger(__name__)

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


class DataParallel:
    """Processes under `accelerate launch`. Mixed into MDMInfoGainLM (an lm-eval LM)."""

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
