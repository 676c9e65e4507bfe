"""Sampler speed, side by side in one run: every mode, cache modes, Info-Gain's cost, batching.

    python bench/sampler.py                 # CPU, float32 -> results/bench-cpu.json
    python bench/sampler.py --device cuda --dtype bfloat16 --output results/bench-gpu.json

A random-weight LLaDA (4 layers, hidden 256 by default) decodes a 512-token prompt into 256 tokens in
blocks of 32. Each measurement is the median wall time of --repeats runs; ratios are computed from
medians taken in the same run, so they compare like with like on one machine at one moment.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from lm_eval_infogain import __version__
from lm_eval_infogain.models.base import ModelAdapter, ModelSpec
from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate

MODES = {
    "original": {}, "random": {}, "entropy": {}, "margin": {},
    "fast_dllm": {"threshold": 0.9}, "eb_sampler": {"gamma": 0.01},
    "info_gain": {"candidate_number": 8, "threshold": 0.8}, "lookum": {"candidate_number": 8, "threshold": 0.8},
}


def random_llada(args) -> ModelAdapter:
    vocab = args.vocab
    config = LLaDAConfig(d_model=args.hidden, n_heads=args.heads, n_layers=args.layers,
                         mlp_hidden_size=args.mlp or 4 * args.hidden, vocab_size=vocab,
                         mask_token_id=vocab - 1, eos_token_id=vocab - 2, pad_token_id=vocab - 2)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LLaDAModelLM(config)
    model.to(dtype=getattr(torch, args.dtype)).eval()
    spec = ModelSpec(mask_id=vocab - 1, eos_id=vocab - 2, pad_id=vocab - 2, vocab_size=vocab,
                     stop_ids=(vocab - 2,), max_length=1 << 16)
    return ModelAdapter(model, spec)


def measure(adapter, prompts, config, repeats: int) -> dict:
    """Median wall time over `repeats` runs (after one warm-up), and the mean NFE per prompt."""
    seeds = list(range(len(prompts)))
    generate(adapter, prompts, config, seeds)  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        _, stats = generate(adapter, prompts, config, seeds)
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "nfe": statistics.mean(s["nfe"] for s in stats),
            "batch": len(prompts)}


def machine(device: str) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "lm_eval_infogain": __version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main():
    parser = argparse.ArgumentParser(description="Sampler speed ratios on a random-weight LLaDA.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=None, help="MLP width (default 4 x hidden)")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--steps", type=int, default=256, help="denoising steps (the paper's: one per token)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("results/bench-cpu.json"))
    args = parser.parse_args()

    adapter = random_llada(args)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, args.vocab - 2, (args.prompt,), generator=generator).tolist()
               for _ in range(args.batch)]
    base = dict(gen_length=args.gen, steps=args.steps, block_length=args.block)
    run = lambda mode, cache="prefix", batch=1: measure(  # noqa: E731
        adapter, prompts[:batch], SamplerConfig(mode=mode, use_cache=cache, **MODES[mode], **base), args.repeats)

    caches = {cache: run("original", cache) for cache in ("none", "prefix", "dual")}
    print("caches", json.dumps(caches), flush=True)
    modes = {mode: (caches["prefix"] if mode == "original" else run(mode)) for mode in MODES}
    print("modes", json.dumps(modes), flush=True)
    batched = run("original", "prefix", args.batch)
    print("batched", json.dumps(batched), flush=True)
    report = {
        "prefix_speedup": caches["none"]["seconds"] / caches["prefix"]["seconds"],
        "dual_speedup": caches["none"]["seconds"] / caches["dual"]["seconds"],
        "infogain_over_original": modes["info_gain"]["seconds"] / modes["original"]["seconds"],
        "batch8_throughput_gain": (args.batch / batched["seconds"]) / (1 / caches["prefix"]["seconds"]),
        "caches_original": caches, "modes_prefix": modes, f"original_prefix_batch{args.batch}": batched,
        "settings": vars(args) | {"output": str(args.output)}, "machine": machine(args.device),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: round(v, 2) for k, v in report.items() if isinstance(v, float)}, indent=2))


if __name__ == "__main__":
    main()
