"""Cost model of the sampler loop at 8B shapes, without the weights: FLOPs, bytes and peak memory per step.

    python bench/cost_model.py              # -> results/cost-8b.json and the table of bench/README.md

The project's own loop (`loop.Decoder`) runs on LLaDA-8B-, Dream-7B- and SDAR-8B-shaped models built
on the `meta` device: every tensor has its real shape and dtype (bf16 weights and cache, fp32 logits)
and no data. The loop's data-dependent choices (which candidates are forwarded, when a block ends)
come from a real CPU run of a small random model of the same architecture with the same generation,
block, steps, batch and sampler settings (and a 64-token prompt: the choices depend on logits, not on
the prompt's length): that run records the result of every data-dependent op (nonzero, boolean
indexing, a tensor read as a Python number) and the meta run replays them in order, so it takes
exactly the same path through the loop code, whatever that code is.

Counted per step (the work between two commits; a block's first forward goes to its first step):
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` (matrix products and attention, 2 per multiply-add);
- bytes: every op's reads plus writes, an upper bound on memory traffic (no cache reuse between ops);
  see `CostMode` for the rules. Attention counts as one fused kernel (q, k, v, mask in; out out), as
  FlashAttention / memory-efficient SDPA run it on a GPU, not the scores matrix of the math fallback;
  the lookahead's split attention is the memory-efficient kernel itself on meta (as on a GPU), so its
  log-sum-exp output is counted too;
- peak memory: the largest sum of live tensor storages (weights included) at any point of the decode.
Roofline time of a step on a device = max(FLOPs / peak bf16 FLOP/s, bytes / HBM bandwidth), summed over
the decode's steps. One model forward per distinct shape is run on meta; repeats reuse its counts.
"""

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import json
import multiprocessing
import platform
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

from lm_eval_infogain import __version__
from lm_eval_infogain.models.base import ModelAdapter, ModelSpec
from lm_eval_infogain.models.dream import DreamConfig, DreamModel
from lm_eval_infogain.models.layers import Rotary
from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.models.registry import supported_cache_modes
from lm_eval_infogain.models.sdar import SDARConfig, SDARForCausalLM
from lm_eval_infogain.sampling.cache import SharedCache
from lm_eval_infogain.sampling.config import LOOKAHEAD_WINDOWS, SamplerConfig, check
from lm_eval_infogain.sampling.loop import Decoder, block_ranges, build_canvas

aten = torch.ops.aten

# The released configs (ARCHITECTURES.md): each config class's defaults are its 8B checkpoint's. Entries:
# (model class, config class, config overrides, the config key of the layer count).
# `tiny` is the bundled tiny random LLaDA's shape, for tests and CPU runs of the same code.
SHAPES = {
    "llada-8b": (LLaDAModelLM, LLaDAConfig, {}, "n_layers"),
    "dream-7b": (DreamModel, DreamConfig, {}, "num_hidden_layers"),
    "sdar-8b": (SDARForCausalLM, SDARConfig, {}, "num_hidden_layers"),
    "tiny": (LLaDAModelLM, LLaDAConfig, dict(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=500,
                                             mask_token_id=2, eos_token_id=1, pad_token_id=1), "n_layers"),
}
# The models whose CPU runs record the loop's choices: the same architecture (Dream's shifted windows,
# SDAR's block-causal ones) at the smallest size, random weights, so that a batch-8 Info-Gain decode of a
# 512-token prompt records in seconds.
SPECIAL_IDS = dict(mask_token_id=63, eos_token_id=62, pad_token_id=62)
QWEN_RECORDING = dict(hidden_size=16, num_attention_heads=1, num_key_value_heads=1, head_dim=16, intermediate_size=32,
                      num_hidden_layers=1, vocab_size=64, bos_token_id=62, **SPECIAL_IDS)
RECORDING_PROMPT = 64  # tokens; a block-causal model's block size divides it, as it does 512
RECORDING_CONFIGS = {
    LLaDAModelLM: dict(d_model=16, n_heads=1, n_layers=1, mlp_hidden_size=32, vocab_size=64, **SPECIAL_IDS),
    DreamModel: QWEN_RECORDING,
    SDARForCausalLM: QWEN_RECORDING,
}
# Sampler settings per mode (bench/sampler.py uses the same); candidates are set per grid cell.
MODE_SETTINGS = {"original": {}, "fast_dllm": {"threshold": 0.9}, "info_gain": {"threshold": 0.8}}
# Peak dense BF16 tensor throughput (no sparsity) and HBM bandwidth.
DEVICES = {
    "a100": {"name": "NVIDIA A100 SXM 80GB", "bf16_flops_per_s": 312e12, "hbm_bytes_per_s": 2.039e12,
             "source": "NVIDIA A100 Tensor Core GPU datasheet: A100 80GB SXM, BF16 Tensor Core 312 TFLOPS "
                       "(624 with sparsity), GPU memory bandwidth 2,039 GB/s"},
    "h100": {"name": "NVIDIA H100 SXM", "bf16_flops_per_s": 989e12, "hbm_bytes_per_s": 3.35e12,
             "source": "NVIDIA H100 Tensor Core GPU datasheet: H100 SXM, BF16 Tensor Core 1,979 TFLOPS with "
                       "sparsity (989 dense), GPU memory bandwidth 3.35 TB/s"},
    "h200": {"name": "NVIDIA H200 SXM", "bf16_flops_per_s": 989e12, "hbm_bytes_per_s": 4.8e12,
             "source": "NVIDIA H200 Tensor Core GPU datasheet: H200 SXM, BF16 Tensor Core 1,979 TFLOPS with "
                       "sparsity (989 dense), GPU memory bandwidth 4.8 TB/s"},
}
COUNTED = (
    "Per step (the work between two commits of the loop; a block's first forward goes to its first step), "
    "everything the loop does on tensors: model forwards (FLOPs from FlopCounterMode: matrix products and "
    "attention), cache allocation, writes and copies, the step's logits work (LM head, softmax, entropy, "
    "sampling, candidate proposal, the lookahead's entropies streamed over the vocabulary, logit copies). Two byte "
    "columns. Eager (bytes, gb_per_step): each op's reads plus writes, as eager PyTorch runs them with no reuse "
    "between kernels: every tensor argument is read whole (a broadcast dimension once, a gather "
    "(embedding, index, index_select, gather) reads what it writes), every output is written, an indexed "
    "write (copy_, index_put_, index_add_, scatter_) writes its source's size; views move nothing, and a cast or "
    "reshape that copies is a copy (under inference_mode they reach the counter declared as aliases: the "
    "storages decide); attention is one fused kernel (q, k, v, mask read, output written; the lookahead's split "
    "attention also writes its log-sum-exp). Fused floor (floor_bytes, floor_gb_per_step): what each model "
    "forward, and the step's work outside its forwards, moves at least if it runs as one fused kernel: every "
    "region of a tensor it did not create that it reads, once (weights once, the KV cache once, its inputs), "
    "every region of such a tensor it writes, once (new keys/values), every tensor it creates that outlives it, "
    "once (its outputs); intermediates cost nothing. The two bracket HBM traffic; the roofline is computed with "
    "each (ms_per_step, floor_ms_per_step). forward_gb_per_step is the model forwards' share of gb_per_step, "
    "loop_gb_per_step the rest. Peak memory is the largest sum of live tensor storages, bf16 weights included.")
NOT_COUNTED = (
    "Elementwise FLOPs (softmax, entropy, norms: their cost shows in bytes); kernel launch and host-device "
    "sync latency (a few per step, larger than the roofline time for small steps: eager PyTorch launches about "
    "2,000 kernels per 8B forward); caching between kernels (L2) beyond what the fused floor assumes; allocator "
    "fragmentation and CUDA context (peak is live tensors only); the tokenizer and lm-eval. The loop's "
    "data-dependent choices are those of a small model whose output head is zero (recorded with a 64-token "
    "prompt, the same schedule otherwise; see recording_adapter): no confidence reaches info_gain's bypass or "
    "fast_dllm's threshold, so info_gain looks ahead on every step and fast_dllm commits one token per step (the "
    "most expensive path of both); a trained 8B model commits more per step in fast_dllm and takes info_gain's "
    "bypass on some steps. early_stop is off: every block of the generation is decoded.")


def tensors_in(tree) -> list[torch.Tensor]:
    """The tensors of a nested list/tuple/dict of op arguments or outputs."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in tensors_in(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in tensors_in(item)]
    return []


def addressed_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the elements a tensor addresses: a broadcast (stride 0) dimension counts once."""
    elements = 1
    for size, stride in zip(tensor.shape, tensor.stride()):
        elements *= size if stride != 0 else 1
    return elements * tensor.element_size()


GATHER_OPS = {aten.embedding.default, aten.index.Tensor, aten.index_select.default, aten.gather.default}
INDEXED_WRITE_OPS = {aten.copy_.default, aten.index_put_.default, aten.index_add_.default, aten.scatter_.src,
                     aten.scatter_.value}
NO_TRAFFIC_OPS = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default}


def aliases(func, args, kwargs, outputs) -> bool:
    """True for an op whose outputs are views of its inputs. Under torch.inference_mode a cast (`aten.to`) or
    a reshape reaches the counter undecomposed and declared as a possible alias even where it copies: the
    storages, not the declaration, say which it did."""
    if not getattr(func, "is_view", False):
        return False
    inputs = {t.untyped_storage()._cdata for t in tensors_in((args, kwargs))}
    return all(t.untyped_storage()._cdata in inputs for t in tensors_in(outputs))


def op_bytes(func, args, kwargs, outputs) -> int:
    """Bytes an op reads plus writes, by the rules of COUNTED."""
    if func in NO_TRAFFIC_OPS or aliases(func, args, kwargs, outputs):
        return 0
    inputs = tensors_in((args, kwargs))
    written = sum(addressed_bytes(t) for t in tensors_in(outputs))
    if func in INDEXED_WRITE_OPS:  # the destination is written where the source says, not read
        source = sum(addressed_bytes(t) for t in inputs[1:] if t.dtype not in (torch.long, torch.bool))
        return source + min(written, source) + sum(addressed_bytes(t) for t in inputs[1:]
                                                    if t.dtype in (torch.long, torch.bool))
    read = sum(addressed_bytes(t) for t in inputs)
    if func in GATHER_OPS:  # the source is read only where the index points
        read = sum(min(addressed_bytes(t), written) for t in inputs)
    return read + written


# storage -> a number of its own: an address (`_cdata`) names a storage only while it lives, the next
# storage allocated there gets the same one, so a scope that reads both would count them as one
STORAGE_NUMBERS = weakref.WeakKeyDictionary()
NEXT_STORAGE_NUMBER = itertools.count()


def storage_number(tensor: torch.Tensor) -> int:
    """The number of the tensor's storage, never given to another storage in this process."""
    storage = tensor.untyped_storage()
    if storage not in STORAGE_NUMBERS:
        STORAGE_NUMBERS[storage] = next(NEXT_STORAGE_NUMBER)
    return STORAGE_NUMBERS[storage]


def region(tensor: torch.Tensor) -> tuple:
    """What a tensor addresses of its storage: (storage, first element, bytes addressed); a transposed or
    otherwise permuted view of the same elements is the same region."""
    return storage_number(tensor), tensor.storage_offset(), addressed_bytes(tensor)


def span(tensor: torch.Tensor) -> tuple[int, int] | None:
    """[start, end) bytes of its storage that a tensor covers without gaps, or None where it has gaps (a
    strided window of the cache) or repeats (a broadcast)."""
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()) if size > 0)
    start = tensor.storage_offset() * tensor.element_size()
    end = start + (last + 1) * tensor.element_size()
    return (start, end) if tensor.numel() and end - start == addressed_bytes(tensor) else None


def union_bytes(intervals) -> int:
    """Bytes covered by [start, end) intervals, overlaps once."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start >= reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


class FusedFloor:
    """Bytes a scope of work (one model forward, or one step's work outside its forwards) moves at least if all
    of it runs as one fused kernel: every distinct region of a storage it did not create that it reads, once
    (the weights once, the cache once, its inputs); every distinct region of such a storage it writes (the
    cache's new keys/values), once; every storage it creates that outlives it (its outputs), once. Whatever it
    creates and frees inside costs nothing. A lower bound on HBM traffic, where op_bytes is an upper one."""

    def __init__(self):
        self.born = weakref.WeakSet()  # storages created in the scope (by object: a freed one's address is reused)
        self.regions = {}  # region -> bytes, read or written
        self.spans = {}  # storage -> gapless [start, end) byte spans read

    def note(self, func, args, kwargs, outputs) -> None:
        if aliases(func, args, kwargs, outputs):
            return
        if func in NO_TRAFFIC_OPS:
            self.note_born(outputs)
            return
        inputs, written = tensors_in((args, kwargs)), tensors_in(outputs)
        reads = inputs[1:] if func in INDEXED_WRITE_OPS else inputs
        gathered = sum(addressed_bytes(t) for t in written)
        for tensor in reads:
            self.note_region(tensor, min(addressed_bytes(tensor), gathered) if func in GATHER_OPS
                             else addressed_bytes(tensor))
        for tensor in written:
            if self.is_born(tensor):
                continue
            if tensor.untyped_storage()._cdata in {t.untyped_storage()._cdata for t in inputs}:  # in place
                source = [t for t in inputs[1:] if t.dtype not in (torch.long, torch.bool)]
                size = sum(addressed_bytes(t) for t in source) if func in INDEXED_WRITE_OPS else addressed_bytes(tensor)
                self.regions[("written",) + region(tensor)] = size
            else:
                self.note_born([tensor])

    def note_fused(self, inputs, output) -> None:
        """A fused kernel (attention): its inputs read, its output created."""
        for tensor in inputs:
            self.note_region(tensor, addressed_bytes(tensor))
        self.note_born([output])

    def note_region(self, tensor, size: int) -> None:
        """A read of `size` bytes of a tensor the scope did not create: a gapless one by its byte span (slices of
        a weight and the whole weight are the weight once), any other by its region."""
        if self.is_born(tensor):
            return
        covered = span(tensor) if size == addressed_bytes(tensor) else None
        if covered is not None:
            self.spans.setdefault(storage_number(tensor), set()).add(covered)
        else:
            self.regions[region(tensor)] = max(size, self.regions.get(region(tensor), 0))

    def note_born(self, outputs) -> None:
        for tensor in tensors_in(outputs):
            self.born.add(tensor.untyped_storage())

    def is_born(self, tensor) -> bool:
        return tensor.untyped_storage() in self.born

    def total(self) -> int:
        """The floor of the scope: its regions, plus what it created that is still alive."""
        return (sum(self.regions.values()) + sum(union_bytes(spans) for spans in self.spans.values())
                + sum(storage.nbytes() for storage in self.born))


class CostMode(TorchDispatchMode):
    """Sums each op's bytes (op_bytes), each scope's fused floor (FusedFloor) and tracks live tensor storages
    and their peak.

    A storage counts from the op that creates it until Python frees it (weakref on the storage, which
    views share). `fused()` suspends both, for a kernel whose inside should not count (attention).
    """

    def __init__(self, baseline_bytes: int = 0):
        super().__init__()
        self.bytes = 0
        self.live = baseline_bytes
        self.peak = baseline_bytes
        self.seen = weakref.WeakSet()
        self.suspended = False
        self.floor = FusedFloor()

    def close_floor(self) -> int:
        """The fused floor of the work since the last call (or the start); a new scope begins."""
        total, self.floor = self.floor.total(), FusedFloor()
        return total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        outputs = func(*args, **kwargs)
        if not self.suspended:
            self.bytes += op_bytes(func, args, kwargs, outputs)
            self.floor.note(func, args, kwargs, outputs)
            self.track(outputs, inputs=tensors_in((args, kwargs)))
        return outputs

    def track(self, outputs, inputs=()) -> None:
        """Count the storages the op created. One it wrote in place or returned a view of is an input's: it
        was allocated before (a forward writing into the cache does not allocate the cache again)."""
        existing = {tensor.untyped_storage() for tensor in inputs}
        for tensor in tensors_in(outputs):
            storage = tensor.untyped_storage()
            if storage in self.seen or storage in existing:
                continue
            self.seen.add(storage)
            self.live += storage.nbytes()
            weakref.finalize(storage, self.release, storage.nbytes())
        self.peak = max(self.peak, self.live)

    def release(self, size: int) -> None:
        self.live -= size

    @contextlib.contextmanager
    def fused(self):
        self.suspended = True
        try:
            yield
        finally:
            self.suspended = False


class FusedAttention(TorchFunctionMode):
    """Counts scaled_dot_product_attention as one kernel: FLOPs still come from the counter (the math
    fallback's two batched products equal a fused kernel's), bytes are q, k, v, mask and output only."""

    def __init__(self):
        super().__init__()
        self.cost = None

    @contextlib.contextmanager
    def counting_into(self, cost: CostMode):
        """Active, adding attention's bytes to `cost` (the previous target is restored after)."""
        previous, self.cost = self.cost, cost
        try:
            with self if previous is None else contextlib.nullcontext():  # entered once, however nested
                yield
        finally:
            self.cost = previous

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        with self.cost.fused():
            output = func(*args, **kwargs)
        inputs = [t for t in tensors_in((args, kwargs))]
        self.cost.bytes += sum(addressed_bytes(t) for t in inputs) + addressed_bytes(output)
        self.cost.floor.note_fused(inputs, output)
        self.cost.track(output)
        return output


def has_bool_index(args) -> bool:
    return any(t.dtype == torch.bool for t in tensors_in(args[1]))


# A tensor read as a Python number: on CPU `bool(t)` dispatches is_nonzero, which the flop counter
# decomposes into _local_scalar_dense on meta; one name for all of them keeps the two runs aligned.
SCALAR_OPS = {aten.is_nonzero.default, aten.item.default, aten._local_scalar_dense.default}


def data_dependent(func, args) -> str | None:
    """The event name of an op whose result (shape or Python value) depends on tensor data, which meta
    tensors do not have; None for any other op."""
    if func in SCALAR_OPS:
        return "scalar"
    if func is aten.nonzero.default:
        return str(func)
    if func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and has_bool_index(args):
        return str(func)
    return None


@dataclass
class Recording:
    """Results of the data-dependent ops of one run of the loop, in order: (event name, value), the value
    being a Python number for "scalar", else the number of True / nonzero elements (the one dimension
    of the result that data decides; the others follow from the inputs' shapes)."""

    events: list = field(default_factory=list)


class Recorder(TorchDispatchMode):
    """Runs ops as they are and notes each data-dependent one's result shape or value."""

    def __init__(self, recording: Recording):
        super().__init__()
        self.recording = recording

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        outputs = func(*args, **(kwargs or {}))
        event = data_dependent(func, args)
        if event:
            self.recording.events.append((event, outputs if event == "scalar" else selected_count(func, args)))
        return outputs


class Replayer(TorchDispatchMode):
    """Answers each data-dependent op on meta tensors with the recorded result of the same op."""

    def __init__(self, recording: Recording):
        super().__init__()
        self.events = iter(recording.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        event = data_dependent(func, args)
        if not event:
            return func(*args, **kwargs)
        name, result = next(self.events, ("the end of the recording", None))
        if name != event:
            raise RuntimeError(f"the meta run left the recorded path: it ran {func}, the recording has {name}")
        if event == "scalar":
            return result
        if func is aten.index_put_.default:  # in place: shape unchanged, nothing to compute without data
            return args[0]
        if func is aten.nonzero.default:
            return torch.empty(result, args[0].dim(), dtype=torch.long, device=args[0].device)
        mask = boolean_mask(args)
        return torch.empty(result, *args[0].shape[mask.dim():], dtype=args[0].dtype, device=args[0].device)


def boolean_mask(args) -> torch.Tensor:
    """The mask of `tensor[mask]` (aten.index with one boolean index, the form the loop uses)."""
    indices = args[1]
    if len(indices) != 1 or indices[0] is None or indices[0].dtype != torch.bool:
        raise RuntimeError(f"boolean indexing other than tensor[mask] is not replayed: indices {indices}")
    return indices[0]


def selected_count(func, args) -> int:
    """The data-decided dimension of a nonzero or tensor[mask] result: how many elements are selected."""
    mask = args[0] if func is aten.nonzero.default else boolean_mask(args)
    return int(mask.count_nonzero())


class StepDecoder(Decoder):
    """The loop's Decoder unchanged, telling `on_step` when each step's commit is done."""

    def __init__(self, *args, on_step, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_step = on_step

    def commit(self, *args, **kwargs):
        super().commit(*args, **kwargs)
        self.on_step()


def run_loop(adapter, prompts: list[list[int]], config: SamplerConfig, on_step=lambda: None) -> None:
    """decode_canvas's path through the loop (canvas, per-prompt generators, blocks), without reading the
    result back. Generators stay on the CPU: meta tensors draw from them as CPU tensors would."""
    canvas = build_canvas(prompts, config.gen_length, adapter.spec, adapter.device)
    generators = [torch.Generator().manual_seed(seed) for seed in range(len(prompts))]
    decoder = StepDecoder(adapter, config, canvas, generators, on_step=on_step)
    for start, end in block_ranges(canvas.prompt_length, config.gen_length, config.block_length,
                                   adapter.spec.attention_block_size):
        decoder.decode_block(start, end)


def build_model(model_cls, config, device, dtype):
    """One of the project's model classes with random (on meta: no) weights, and its ModelSpec."""
    with torch.device(device):
        model = model_cls(config)
    model.to(dtype=dtype).eval()
    place_rotary_tables(model, device)
    vocab = getattr(config, "embedding_size", None) or config.vocab_size
    spec = ModelSpec(mask_id=config.mask_token_id, eos_id=config.eos_token_id, pad_id=config.pad_token_id,
                     vocab_size=vocab, stop_ids=(config.eos_token_id,), max_length=1 << 16,
                     logits_shift=model.logits_shift, attention_block_size=model.attention_block_size,
                     cache_modes=supported_cache_modes(True, model.attention_block_size))
    return model, spec


def place_rotary_tables(model, device) -> None:
    """Move the RoPE tables (plain tensors, not buffers) to the device now: the model would move them with
    its first forward, a copy that only that one forward would count."""
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, Rotary):
                value.inv_freq = value.inv_freq.to(device)


def shape_config(shape: str, **changes):
    _, config_cls, overrides, _ = SHAPES[shape]
    return config_cls(**(overrides | changes))


def random_prompts(spec: ModelSpec, batch: int, length: int) -> list[list[int]]:
    """Seeded prompts of ordinary tokens (no mask, EOS or PAD id)."""
    special = {spec.mask_id, spec.eos_id, spec.pad_id}
    ordinary = torch.tensor([i for i in range(min(spec.vocab_size, 4096)) if i not in special])
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(ordinary), (batch, length), generator=generator)
    return ordinary[picks].tolist()


@dataclass(frozen=True)
class Counts:
    flops: int
    bytes: int
    peak: int  # of live bytes allocated during the forward
    floor: int = 0  # fused floor (FusedFloor) of the forward

    def toward(self, other: "Counts", times: int) -> "Counts":
        """self + times * (other - self): a count linear in rows or layers, from its values at 1 and 2."""
        return Counts(*(a + times * (b - a) for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def first_rows(value, count: int):
    """The first `count` batch rows of a forward argument: a tensor, a list or dataclass of them (the
    cache), anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value[:count]
    if isinstance(value, list):
        return [first_rows(item, count) for item in value]
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: first_rows(getattr(value, f.name), count)
                                             for f in dataclasses.fields(value)})
    return value


class ForwardCounts:
    """Counts of the model's own forward at any number of rows R and layers L, from runs of 1- and
    2-layer models of the same shape on 1 and 2 rows: FLOPs and bytes are linear in R for a given L and
    in L for a given R (the layers are identical and rows never interact), so bilinear extrapolation is
    exact; the peak is linear in R and the same for any L >= 2.
    Lookahead candidates that share their prompts' cache (cache.SharedCache) do interact: a prompt's
    candidates are grouped into one attention over its cache, so their counts depend on how many prompts
    and slots they fill, not linearly on R; such a forward runs at its own R (still 1 and 2 layers).
    Runs are remembered by the forward's shape; each one runs with the loop's counters set aside."""

    def __init__(self, shape: str, attention: "FusedAttention"):
        model_cls, _, _, layer_key = SHAPES[shape]
        self.layers = getattr(shape_config(shape), layer_key)
        self.adapters = {count: ModelAdapter(*build_model(model_cls, shape_config(shape, **{layer_key: count}),
                                                          "meta", torch.bfloat16)) for count in (1, 2)}
        self.attention = attention
        self.runs = {}  # (shape key, rows, layers) -> (Counts, logits shape, logits dtype)

    def __call__(self, args: tuple, method: str = "forward") -> tuple[Counts, tuple, torch.dtype]:
        """method: the adapter's `forward` (logits) or `forward_hidden` (the hidden states before the head)."""
        input_ids, positions, _, cache, *window = args
        rows = input_ids.shape[0]
        key = (method, tuple(input_ids.shape[1:]), tuple(positions.shape[1:]), type(cache).__name__, *window)
        measured = (1, min(rows, 2))
        if isinstance(cache, SharedCache):
            key, measured = key + (cache.cache.batch_size, cache.slots, rows), (rows, rows)
        at = {(r, layers): self.run(key, args, r, layers) for r in set(measured) for layers in (1, 2)}
        first, second = (self.all_layers(at[r, 1][0], at[r, 2][0]) for r in measured)
        logits_shape, dtype = at[measured[0], 1][1:]
        return first.toward(second, rows - measured[0]), (rows, *logits_shape[1:]), dtype

    def all_layers(self, one: Counts, two: Counts) -> Counts:
        """FLOPs and bytes grow by one layer's each layer; the peak does not (a layer's activations are
        freed when the next one runs), so the 2-layer model's stands for all."""
        return dataclasses.replace(one.toward(two, self.layers - 1), peak=two.peak)

    def run(self, key, args, rows: int, layers: int):
        if (key, rows, layers) not in self.runs:
            self.runs[key, rows, layers] = count_forward(self.adapters[layers], [first_rows(arg, rows) for arg in args],
                                                         self.attention, key[0])
        return self.runs[key, rows, layers]


def count_forward(adapter, args, attention: "FusedAttention", method: str = "forward"
                  ) -> tuple[Counts, tuple, torch.dtype]:
    """Counts of one adapter.forward(*args) (or forward_hidden), with any counters already running set
    aside; and the output's shape and dtype."""
    cost, flops = CostMode(), FlopCounterMode(display=False)
    with _disable_current_modes(), flops, cost, attention.counting_into(cost):
        logits = getattr(adapter, method)(*args)
    return Counts(flops.get_total_flops(), cost.bytes, cost.peak, cost.close_floor()), tuple(logits.shape), logits.dtype


class MeasuredAdapter:
    """The adapter the meta run's loop drives: each forward adds the counts ForwardCounts gives for its
    shape and returns logits of the right shape (no data)."""

    def __init__(self, model, spec, cost: CostMode, forward_counts: ForwardCounts):
        self.model, self.spec, self.cost, self.forward_counts = model, spec, cost, forward_counts
        self.device, self.dtype = model.device, model.dtype
        self.forward_flops = 0  # the loop's own ops go through the loop's flop counter; forwards add here
        self.forward_bytes = 0  # of cost.bytes, the forwards' share (the rest is the loop's own work)
        self.forward_floor = 0  # the forwards' fused floors (the loop's own work has its own: cost.close_floor)
        self.forwards = 0

    def new_cache(self, batch, length):
        return ModelAdapter(self.model, self.spec).new_cache(batch, length)

    def forward(self, *args):
        return self.measured("forward", args)

    def forward_hidden(self, *args):
        return self.measured("forward_hidden", args)

    def head(self, hidden):
        """The LM head on the hidden states the step keeps: on the meta model, so the loop's own counters
        count it (the head's weight read once per call)."""
        return self.model.head_logits(hidden)

    def output_head(self):
        """The meta model's head, which the loop streams its entropies over (sampling/head.py): counted by
        the loop's own counters too."""
        return self.model.output_head()

    def measured(self, method: str, args: tuple):
        self.forwards += 1
        counts, logits_shape, dtype = self.forward_counts(args, method)
        self.forward_flops += counts.flops
        self.forward_bytes += counts.bytes
        self.forward_floor += counts.floor
        self.cost.bytes += counts.bytes
        self.cost.peak = max(self.cost.peak, self.cost.live + counts.peak)
        with self.cost.fused():  # an allocation, not traffic: the counted bytes include the logits' write
            logits = torch.empty(logits_shape, dtype=dtype, device=self.device)
        self.cost.track(logits)
        return logits


@functools.lru_cache(maxsize=None)
def recording_adapter(model_cls) -> ModelAdapter:
    """The recording model, its output head zero: every logit is 0, so that no choice of the loop depends on
    floating-point rounding (which differs between machines, and so did the recorded path): tokens are
    argmax ties (the lowest id), confidences 1/V below every threshold (Info-Gain looks ahead on every step,
    fast_dllm commits one token per step: the most expensive path of both), every candidate's H_next is the
    same (the first wins), and which positions the candidates pick comes from the seeded Gumbel draws."""
    torch.manual_seed(0)
    config = model_cls.config_class(**RECORDING_CONFIGS[model_cls])
    model, spec = build_model(model_cls, config, "cpu", torch.float32)
    with torch.no_grad():
        model.output_head().weight.zero_()
    return ModelAdapter(model, spec)


def record(shape: str, batch: int, prompt_length: int, config: SamplerConfig) -> Recording:
    """The data-dependent results of a CPU run of the shape's recording model with these settings and a
    prompt of at most RECORDING_PROMPT tokens: the loop's choices depend on the logits, not on how long
    the prompt is (the windows do, and the meta run computes those itself)."""
    adapter = recording_adapter(SHAPES[shape][0])
    recording = Recording()
    with torch.inference_mode(), Recorder(recording):
        run_loop(adapter, random_prompts(adapter.spec, batch, min(prompt_length, RECORDING_PROMPT)), config)
    return recording


def weight_bytes(model) -> int:
    return sum(t.nbytes for t in (*model.parameters(), *model.buffers()))


def measure_cell(shape: str, model, spec, config: SamplerConfig, batch: int, prompt_length: int,
                 forward_counts: ForwardCounts) -> dict:
    """Counts of one grid cell: the loop replayed on the meta model along a recorded CPU run's path."""
    recording = record(shape, batch, prompt_length, config)
    steps = []
    cost = CostMode(baseline_bytes=weight_bytes(model))
    flop_counter = FlopCounterMode(display=False)
    adapter = MeasuredAdapter(model, spec, cost, forward_counts)
    marks = {"flops": 0, "bytes": 0, "forward_bytes": 0, "forward_floor": 0}

    def end_step():
        now = {"flops": flop_counter.get_total_flops() + adapter.forward_flops, "bytes": cost.bytes,
               "forward_bytes": adapter.forward_bytes, "forward_floor": adapter.forward_floor}
        flops, traffic, forward_traffic, forward_floor = (now[key] - marks[key] for key in marks)
        steps.append((flops, traffic, forward_traffic, forward_floor + cost.close_floor()))
        marks.update(now)

    with torch.inference_mode(), Replayer(recording), flop_counter, cost, forward_counts.attention.counting_into(cost):
        run_loop(adapter, random_prompts(spec, batch, prompt_length), config, end_step)
    return summarise(steps, cost.peak, adapter.forwards, batch, config.gen_length, weight_bytes(model))


def roofline_seconds(steps: list[tuple[int, int]], device: dict) -> float:
    """The sum over steps (FLOPs, bytes) of max(FLOPs / peak FLOP/s, bytes / bandwidth)."""
    return sum(max(flops / device["bf16_flops_per_s"], traffic / device["hbm_bytes_per_s"]) for flops, traffic in steps)


def summarise(steps: list[tuple[int, int, int, int]], peak: int, forwards: int, batch: int, gen_length: int,
              weights: int) -> dict:
    """Per-step means and the roofline time on each device of DEVICES, with the eager bytes and with the
    fused floor. steps: (FLOPs, bytes, the forwards' share of those bytes, fused floor) of each step."""
    count = len(steps)
    flops, traffic, forward_traffic, floor = (sum(column) for column in zip(*steps))
    seconds = {device: roofline_seconds([(f, b) for f, b, _, _ in steps], spec) for device, spec in DEVICES.items()}
    floor_seconds = {device: roofline_seconds([(f, b) for f, _, _, b in steps], spec)
                     for device, spec in DEVICES.items()}
    return {
        "steps": count, "forwards": forwards, "flops": flops, "bytes": traffic, "floor_bytes": floor,
        "gflops_per_step": round(flops / count / 1e9, 2), "gb_per_step": round(traffic / count / 1e9, 3),
        "floor_gb_per_step": round(floor / count / 1e9, 3),
        "forward_gb_per_step": round(forward_traffic / count / 1e9, 3),
        "loop_gb_per_step": round((traffic - forward_traffic) / count / 1e9, 3),
        "peak_gb": round(peak / 1e9, 2), "weights_gb": round(weights / 1e9, 2), "peak_bytes": peak,
        "weight_bytes": weights,
        "ms_per_step": {device: round(s / count * 1e3, 3) for device, s in seconds.items()},
        "tok_per_s": {device: round(batch * gen_length / s, 1) for device, s in seconds.items()},
        "floor_ms_per_step": {device: round(s / count * 1e3, 3) for device, s in floor_seconds.items()},
        "floor_tok_per_s": {device: round(batch * gen_length / s, 1) for device, s in floor_seconds.items()},
    }


def row_cell(row: dict) -> tuple:
    """An output row's grid cell (model, mode, use_cache, batch, candidates, lookahead_window); a row written
    before lookahead_window existed is `rest`."""
    return (row["model"], row["mode"], row["use_cache"], row["batch"], row["candidates"],
            row.get("lookahead_window", "rest"))


def rows_by_cell(rows: list[dict]) -> dict[tuple, dict]:
    """Output rows by their grid cell (row_cell)."""
    return {row_cell(row): row for row in rows}


def grid(modes, caches, batches, candidates, windows=("rest",)) -> list[tuple[str, str, int, int, str]]:
    """(mode, use_cache, batch, candidates, lookahead_window) cells: candidates other than 1 only for info_gain,
    lookahead_window=block only for info_gain with the prefix cache (under dual its windows are rest's; a
    block-causal model's windows end with the block either way: see `same_windows`)."""
    return [(mode, cache, batch, number, window) for mode in modes for cache in caches for batch in batches
            for number in (candidates if mode == "info_gain" else [1])
            for window in (windows if mode == "info_gain" and cache == "prefix" else ["rest"])]


def same_windows(spec: ModelSpec, window: str) -> bool:
    """True where lookahead_window=block forwards what rest does: a block-causal model's every window ends
    with the block."""
    return window == "block" and spec.attention_block_size is not None


def sampler_config(mode: str, cache: str, candidates: int, args, window: str = "rest") -> SamplerConfig:
    return SamplerConfig(mode=mode, use_cache=cache, candidate_number=candidates, gen_length=args.gen,
                         steps=args.steps, block_length=args.block, early_stop=False, lookahead_window=window,
                         **MODE_SETTINGS[mode])


def parse_list(text: str, allowed, key: str, convert=str) -> list:
    """A comma-separated option's values, each one checked against `allowed`."""
    try:
        values = [convert(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"{key}={text!r} is invalid; allowed: comma-separated {convert.__name__} values") from None
    for value in values:
        check(value in allowed, key, value, " | ".join(map(str, allowed)))
    return values


def main():
    parser = argparse.ArgumentParser(description="FLOPs, bytes, peak memory and roofline time per step of the "
                                                 "sampler loop at 8B shapes (meta tensors, no weights).")
    parser.add_argument("--shapes", default="llada-8b,dream-7b,sdar-8b", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--modes", default=",".join(MODE_SETTINGS))
    parser.add_argument("--caches", default="none,prefix,dual")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--candidates", default="1,8", help="info_gain's candidate numbers")
    parser.add_argument("--windows", default="rest,block", help="info_gain's lookahead_window values (prefix cache)")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--output", type=Path, default=Path("results/cost-8b.json"))
    parser.add_argument("--jobs", type=int, default=1, help="cells measured side by side in this many processes")
    parser.add_argument("--resume", action="store_true",
                        help="keep --output's rows of the same settings and measure only the missing cells")
    parser.add_argument("--print", dest="print_only", type=Path, default=None,
                        help="print the table and ratios of this earlier output, computing nothing")
    args = parser.parse_args()
    if args.print_only is not None:
        rows = json.loads(args.print_only.read_text())["rows"]
        print(markdown_table(rows), *ratio_lines(rows), sep="\n")
        return
    try:
        shapes = parse_list(args.shapes, SHAPES, "--shapes")
        modes = parse_list(args.modes, MODE_SETTINGS, "--modes")
        caches = parse_list(args.caches, ("none", "prefix", "dual"), "--caches")
        batches = parse_list(args.batches, range(1, 1025), "--batches", int)
        candidates = parse_list(args.candidates, range(1, 65), "--candidates", int)
        windows = parse_list(args.windows, LOOKAHEAD_WINDOWS, "--windows")
        check(args.prompt >= 1, "--prompt", args.prompt, "an integer >= 1")
        check(args.jobs >= 1, "--jobs", args.jobs, "an integer >= 1")
        sampler_config("original", "none", 1, args)  # gen, block and steps checked once, up front
    except ValueError as error:
        parser.error(str(error))

    started = time.perf_counter()
    cells = [(shape, *cell) for shape in shapes for cell in grid(modes, caches, batches, candidates, windows)
             if kept_cell(shape, *cell)]
    done = earlier_rows(args) if args.resume else {}
    rows = [done[cell] for cell in cells if cell in done]  # grid order: the kept rows first, then the new ones
    missing = [cell for cell in cells if cell not in done]
    print(f"{len(cells)} cells, {len(rows)} kept from {args.output}, {len(missing)} to measure", flush=True)
    with worker_pool(args.jobs) as pool:
        for row in (pool.map if pool else map)(cell_row, missing, itertools.repeat(args)):  # in grid order
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_report(args, rows, shapes, started, complete=False)  # a long run keeps what it has
    order = {cell: index for index, cell in enumerate(cells)}
    rows.sort(key=lambda row: order[row_cell(row)])
    write_report(args, rows, shapes, started, complete=True)
    print(markdown_table(rows), *ratio_lines(rows), sep="\n")


def worker_pool(jobs: int):
    """--jobs processes (spawned: torch does not survive a fork well), or none for one job."""
    if jobs == 1:
        return contextlib.nullcontext()
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def kept_cell(shape: str, mode: str, cache: str, batch: int, number: int, window: str) -> bool:
    """False for a cell the model cannot run, or one that would repeat another: dual caches positions after
    the block, which block-causal attention never reads."""
    spec = shape_model(shape)[1]
    return cache in spec.cache_modes and not same_windows(spec, window)


def earlier_rows(args) -> dict:
    """--output's rows by cell, where it was written with this run's settings (else none: a changed setting
    changes every count)."""
    if not args.output.exists():
        return {}
    earlier = json.loads(args.output.read_text())
    same = (earlier.get("settings", {}).get(key) for key in ("prompt", "gen_length", "block_length", "steps"))
    if list(same) != [args.prompt, args.gen, args.block, args.steps] or earlier.get("counted") != COUNTED:
        return {}
    return rows_by_cell(earlier["rows"])


@functools.cache
def shape_model(shape: str):
    """(meta model, spec, ForwardCounts) of a shape, built once per process."""
    model, spec = build_model(SHAPES[shape][0], shape_config(shape), "meta", torch.bfloat16)
    return model, spec, ForwardCounts(shape, FusedAttention())


def cell_row(cell: tuple, args) -> dict:
    """One grid cell's row (run in a worker process with --jobs)."""
    shape, mode, cache, batch, number, window = cell
    model, spec, forward_counts = shape_model(shape)
    config = sampler_config(mode, cache, number, args, window)
    row = {"model": shape, "mode": mode, "use_cache": cache, "batch": batch, "candidates": number,
           "lookahead_window": window}
    return row | measure_cell(shape, model, spec, config, batch, args.prompt, forward_counts)


def write_report(args, rows: list[dict], shapes: list[str], started: float, complete: bool) -> None:
    report = {
        "rows": rows, "complete": complete, "counted": COUNTED, "not_counted": NOT_COUNTED, "devices": DEVICES,
        "settings": {"prompt": args.prompt, "gen_length": args.gen, "block_length": args.block, "steps": args.steps,
                     "mode_settings": MODE_SETTINGS, "early_stop": False, "temperature": 0.0,
                     "dtype": "bfloat16 weights and cache, float32 logits",
                     "recorded_with": {SHAPES[shape][0].__name__: RECORDING_CONFIGS[SHAPES[shape][0]]
                                       for shape in shapes},
                     "recording_prompt": min(args.prompt, RECORDING_PROMPT)},
        "command": " ".join(["python bench/cost_model.py", *sys.argv[1:]]), "lm_eval_infogain": __version__,
        "torch": torch.__version__, "machine": platform.platform(), "seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")


def per_step(row: dict, key: str) -> float:
    return row[key] / row["steps"]


def ratio_lines(rows: list[dict]) -> list[str]:
    """Each info_gain row's FLOPs and bytes per step over original's in the same model, cache and batch."""
    originals = {(r["model"], r["use_cache"], r["batch"]): r for r in rows if r["mode"] == "original"}
    lines = []
    for row in rows:
        original = originals.get((row["model"], row["use_cache"], row["batch"]))
        if row["mode"] == "info_gain" and original is not None:
            flops, traffic = (per_step(row, key) / per_step(original, key) for key in ("flops", "bytes"))
            line = (f"{row['model']} info_gain {row['use_cache']} batch {row['batch']} N {row['candidates']} "
                    f"{row.get('lookahead_window', 'rest')}: {flops:.2f}x original's FLOPs/step, "
                    f"{traffic:.2f}x its eager bytes/step")
            if "floor_bytes" in row:  # outputs from before the fused floor have none
                line += (f", {per_step(row, 'floor_bytes') / per_step(original, 'floor_bytes'):.2f}x its fused-floor "
                         f"bytes/step; {row['floor_ms_per_step']['h100']} ms/step on an H100 at the fused floor "
                         f"({row['ms_per_step']['h100']} eager)")
            lines.append(line)
    return lines


def markdown_table(rows: list[dict]) -> str:
    """Per step: FLOPs, eager and fused-floor bytes, peak; roofline ms/step with each (H100, H200)."""
    header = ("| model | mode | cache | batch | N | lookahead | GFLOPs/step | eager GB/step | floor GB/step | peak GB "
              "| ms/step H100 eager | ms/step H100 floor | ms/step H200 eager | ms/step H200 floor |\n"
              "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor_ms = lambda row, device: row.get("floor_ms_per_step", {}).get(device, "-")  # noqa: E731
    lines = [f"| {r['model']} | {r['mode']} | {r['use_cache']} | {r['batch']} | {r['candidates']} | "
             f"{r.get('lookahead_window', 'rest') if r['mode'] == 'info_gain' else '-'} | "
             f"{r['gflops_per_step']} | {r['gb_per_step']} | {r.get('floor_gb_per_step', '-')} | {r['peak_gb']} | "
             f"{r['ms_per_step']['h100']} | {floor_ms(r, 'h100')} | {r['ms_per_step']['h200']} | "
             f"{floor_ms(r, 'h200')} |" for r in rows]  # rows of an output from before the fused floor: "-"
    return "\n".join([header, *lines])


if __name__ == "__main__":
    main()
