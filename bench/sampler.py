"""Sampler speed, side by side in one run: every mode, cache modes, Info-Gain's cost, batching.

    python bench/sampler.py                 # CPU, float32 -> results/bench-cpu.json
    python bench/sampler.py --device cuda --shape llada-8b   # GPU, bf16 -> results/bench-gpu.json

A random-weight LLaDA (4 layers, hidden 256 by default) decodes a 512-token prompt into 256 tokens in
blocks of 32. Each measurement is the median wall time of --repeats runs; ratios are computed from
medians taken in the same run, so they compare like with like on one machine at one moment.

With --shape (a shape of bench/cost_model.py: llada-8b, dream-7b, sdar-8b, or tiny for a CPU run of the
same code) the model has that shape's random bf16 weights and the run times the cost model's grid
(mode x use_cache x batch x candidates x lookahead_window, through the same loop driver), writing ms/step
and tok/s beside the cost model's prediction for the device (--prediction, results/cost-8b.json by default);
on a GPU each cell also runs compiled (compile=true, CUDA graphs), beside the eager time.

--compile (without --shape) times eager against compiled on the CPU ratios' model instead: original (batch 1
and --batch) and Info-Gain with lookahead_window rest and block, and adds the speed-ups to --output's
"compile" key, leaving its other keys as they are.
"""

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import cost_model
from lm_eval_infogain import __version__
from lm_eval_infogain.models import layers
from lm_eval_infogain.models.base import ModelAdapter, ModelSpec
from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.sampling.compiled import CompiledAdapter
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


def measure_interleaved(decodes: dict, repeats: int) -> dict:
    """measure() of each named decode (adapter, prompts, config), their runs interleaved (one of each, `repeats`
    times, after a warm-up of each), so that every median, and so every ratio of two, samples the same moments
    of a machine whose load changes."""
    times, nfe = {name: [] for name in decodes}, {}
    for adapter, prompts, config in decodes.values():
        generate(adapter, prompts, config, list(range(len(prompts))))  # warm-up: compiles the compiled graphs
    for _ in range(repeats):
        for name, (adapter, prompts, config) in decodes.items():
            synchronize(adapter.device)
            start = time.perf_counter()
            _, stats = generate(adapter, prompts, config, list(range(len(prompts))))
            synchronize(adapter.device)
            times[name].append(time.perf_counter() - start)
            nfe[name] = statistics.mean(row["nfe"] for row in stats)
    return {name: {"seconds": statistics.median(runs), "nfe": nfe[name], "batch": len(decodes[name][1]), "runs": runs}
            for name, runs in times.items()}


def machine(device: str) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "lm_eval_infogain": __version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def timed_decode(adapter, prompts, config) -> tuple[float, int]:
    """Wall seconds and loop steps of one decode through the cost model's loop driver."""
    steps = []
    synchronize(adapter.device)
    start = time.perf_counter()
    with torch.inference_mode():
        cost_model.run_loop(adapter, prompts, config, lambda: steps.append(1))
    synchronize(adapter.device)
    return time.perf_counter() - start, len(steps)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def predictions(path: Path) -> dict:
    """The cost model's rows by (model, mode, use_cache, batch, candidates); empty without the file."""
    if not path.exists():
        return {}
    return cost_model.rows_by_cell(json.loads(path.read_text())["rows"])


def device_key(name: str) -> str | None:
    """The cost model's device (h100, h200) a device name is, if any."""
    return next((key for key in cost_model.DEVICES if key in name.lower()), None)


# Largest differences allowed between the fused split attention and fp32 maths, by the inputs' dtype
FUSED_ATTENTION_TOLERANCE = {"bfloat16": 2e-2, "float16": 5e-3, "float32": 1e-4}


def fused_attention_check(device: str, dtype: str) -> dict:
    """The split attention the lookahead runs (`layers.attention_with_lse`: on a GPU the memory-efficient
    kernel and its log-sum-exp) against the same maths unfused in fp32, on lookahead-shaped inputs: a
    left-padded row, a block-causal mask per query and a query that sees no key. The tests run on CPUs,
    so this is where the GPU path is checked; a difference above FUSED_ATTENTION_TOLERANCE stops the run."""
    generator = torch.Generator().manual_seed(0)
    queries, keys, values = (torch.randn(2, 8, width, 128, generator=generator) for width in (96, 300, 300))
    padded = torch.ones(2, 1, 1, 300, dtype=torch.bool)
    padded[1, ..., :37] = False
    block_causal = (torch.arange(300) // 32 <= torch.arange(96)[:, None] // 32 + 6).expand(2, 1, 96, 300).clone()
    block_causal[0, 0, 5] = False
    errors = {}
    for name, mask in (("padded", padded), ("block_causal", block_causal)):
        fused = layers.attention_with_lse(*(t.to(device, getattr(torch, dtype)) for t in (queries, keys, values)),
                                          mask.to(device))
        exact = layers.unfused_attention_with_lse(queries, keys, values, mask, ~mask.any(-1, keepdim=True))
        for part, got, want in zip(("output", "lse"), fused, exact):
            got = got.float().cpu()
            assert got.isneginf().equal(want.isneginf()), f"{name} {part}: -inf where the exact one is not"
            finite = want.isfinite()
            errors[f"{name}_{part}"] = (got[finite] - want[finite]).abs().max().item()
    worst = max(errors.values())
    if worst > FUSED_ATTENTION_TOLERANCE[dtype]:
        raise SystemExit(f"fused split attention on {device} ({dtype}) is {worst:.3g} off exact fp32 attention "
                         f"(allowed {FUSED_ATTENTION_TOLERANCE[dtype]}): {errors}")
    return {"max_abs_error": errors, "tolerance": FUSED_ATTENTION_TOLERANCE[dtype], "dtype": dtype}


def time_shape_grid(args) -> dict:
    """ms/step and tok/s of every cell of the cost model's grid on a --shape model with random weights,
    after `fused_attention_check`."""
    attention_check = fused_attention_check(args.device, args.dtype)
    print(json.dumps({"fused_attention_check": attention_check}), flush=True)
    model_cls = cost_model.SHAPES[args.shape][0]
    torch.manual_seed(0)
    model, spec = cost_model.build_model(model_cls, cost_model.shape_config(args.shape), args.device,
                                         getattr(torch, args.dtype))
    adapter = ModelAdapter(model, spec)
    compiled = CompiledAdapter(adapter, args.compile_backend) if args.compile else None
    predicted, device_name = predictions(args.prediction), machine(args.device).get("gpu", "cpu")
    rows = []
    for mode, cache, batch, number, window in cost_model.grid(args.modes, args.caches, args.batches, args.candidates,
                                                              args.windows):
        if cache not in spec.cache_modes or cost_model.same_windows(spec, window):
            continue
        config = cost_model.sampler_config(mode, cache, number, args, window)
        prompts = cost_model.random_prompts(spec, batch, args.prompt)
        timed_decode(adapter, prompts, dataclasses.replace(config, gen_length=args.block, steps=config.steps_per_block))
        if adapter.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        runs = [timed_decode(adapter, prompts, config) for _ in range(args.repeats)]
        seconds, steps = statistics.median(s for s, _ in runs), runs[0][1]
        row = {"model": args.shape, "mode": mode, "use_cache": cache, "batch": batch, "candidates": number,
               "lookahead_window": window, "steps": steps, "seconds": seconds, "ms_per_step": round(seconds / steps * 1e3, 3),
               "tok_per_s": round(batch * args.gen / seconds, 1)}
        if adapter.device.type == "cuda":
            row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        if compiled is not None:
            row["compiled"] = time_compiled(compiled, prompts, config, args, batch)
            row["compiled_speedup_over_eager"] = round(seconds / row["compiled"]["seconds"], 3)
        row["predicted"] = prediction_of(predicted.get((args.shape, mode, cache, batch, number, window)), device_name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "device": device_name, "prediction_file": str(args.prediction),
            "settings": settings(args), "fused_attention_check": attention_check,
            "machine": machine(args.device), "date": time.strftime("%Y-%m-%d")}


def time_compiled(compiled, prompts, config, args, batch) -> dict:
    """A cell's median time through the compiled forward, after a whole decode that compiles (or records, as
    CUDA graphs) every shape the decode takes."""
    first, _ = timed_decode(compiled, prompts, config)
    runs = [timed_decode(compiled, prompts, config) for _ in range(args.repeats)]
    seconds, steps = statistics.median(s for s, _ in runs), runs[0][1]
    return {"seconds": seconds, "ms_per_step": round(seconds / steps * 1e3, 3),
            "tok_per_s": round(batch * args.gen / seconds, 1), "first_decode_seconds": round(first, 3)}


def compile_ratios(adapter, prompts, base, args) -> dict:
    """Eager against compiled (compile=true) on the ratios' model, every cell's runs interleaved
    (measure_interleaved): original at batch 1 and --batch, Info-Gain with lookahead_window rest and block at
    batch 1."""
    compiled = CompiledAdapter(adapter, args.compile_backend)
    cells = {"original_prefix": ("original", 1, {}), f"original_prefix_batch{args.batch}": ("original", args.batch, {}),
             "info_gain_prefix_rest": ("info_gain", 1, {}),
             "info_gain_prefix_block": ("info_gain", 1, {"lookahead_window": "block"})}
    adapters = {"eager": adapter, "compiled": compiled}
    decodes = {(kind, name): (adapters[kind], prompts[:batch],
                              SamplerConfig(mode=mode, use_cache="prefix", **MODES[mode], **base, **extra))
               for name, (mode, batch, extra) in cells.items() for kind in adapters}
    measured = measure_interleaved(decodes, args.repeats)
    report = {kind: {name: measured[kind, name] for name in cells} for kind in adapters}
    print(json.dumps(report), flush=True)
    eager, compiled_cells = report["eager"], report["compiled"]
    report["compiled_speedup_over_eager"] = {name: eager[name]["seconds"] / compiled_cells[name]["seconds"]
                                             for name in cells}
    batched = f"original_prefix_batch{args.batch}"
    report[f"batch{args.batch}_throughput_gain"] = {
        kind: args.batch * report[kind]["original_prefix"]["seconds"] / report[kind][batched]["seconds"]
        for kind in ("eager", "compiled")}
    report["infogain_block_over_original"] = {
        kind: report[kind]["info_gain_prefix_block"]["seconds"] / report[kind]["original_prefix"]["seconds"]
        for kind in ("eager", "compiled")}
    return report | {"backend": args.compile_backend, "settings": settings(args), "machine": machine(args.device),
                     "date": time.strftime("%Y-%m-%d")}


def prediction_of(row: dict | None, device_name: str) -> dict | None:
    """The cost model's ms/step, tok/s and peak GB for this cell: on this device if it is one the cost
    model knows, else on each of its devices."""
    if row is None:
        return None
    key = device_key(device_name)
    pick = (lambda by_device: by_device[key]) if key else (lambda by_device: by_device)  # noqa: E731
    return {"ms_per_step": pick(row["ms_per_step"]), "tok_per_s": pick(row["tok_per_s"]), "peak_gb": row["peak_gb"],
            "steps": row["steps"]}


def main():
    parser = argparse.ArgumentParser(description="Sampler speed ratios on a random-weight LLaDA.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="float32 by default, bfloat16 with --shape")
    parser.add_argument("--shape", default=None, choices=list(cost_model.SHAPES),
                        help="time the cost model's grid on this shape (random weights) instead of the ratios")
    parser.add_argument("--modes", default=",".join(cost_model.MODE_SETTINGS), help="with --shape")
    parser.add_argument("--caches", default="none,prefix,dual", help="with --shape")
    parser.add_argument("--batches", default="1,8", help="with --shape")
    parser.add_argument("--candidates", default="1,8", help="with --shape: info_gain's candidate numbers")
    parser.add_argument("--windows", default="rest,block", help="with --shape: info_gain's lookahead_window values")
    parser.add_argument("--prediction", type=Path, default=Path("results/cost-8b.json"),
                        help="with --shape: the cost model's output to set beside the measurements")
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
    parser.add_argument("--repeats", type=int, default=None, help="3 by default, 1 with --shape")
    parser.add_argument("--lookahead-only", action="store_true",
                        help="time original and info_gain (lookahead_window rest and block) only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time the compiled forward (compile=true) beside eager; with --shape on by default on "
                             "a GPU; without --shape only eager against compiled, into --output's 'compile' key")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend of --compile ('eager' checks the script in seconds)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results/bench-cpu.json by default, results/bench-gpu.json with --shape on a GPU")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.shape is not None:
        if args.output is None and not args.device.startswith("cuda"):
            parser.error(f"--device={args.device!r} with --shape needs --output: results/bench-gpu.json holds GPU "
                         "runs only")
        try:
            args.modes = cost_model.parse_list(args.modes, cost_model.MODE_SETTINGS, "--modes")
            args.caches = cost_model.parse_list(args.caches, ("none", "prefix", "dual"), "--caches")
            args.batches = cost_model.parse_list(args.batches, range(1, 1025), "--batches", int)
            args.candidates = cost_model.parse_list(args.candidates, range(1, 65), "--candidates", int)
            args.windows = cost_model.parse_list(args.windows, cost_model.LOOKAHEAD_WINDOWS, "--windows")
        except ValueError as error:
            parser.error(str(error))
        args.dtype, args.repeats = args.dtype or "bfloat16", args.repeats or 1
        args.compile = args.device.startswith("cuda") if args.compile is None else args.compile
        args.output = args.output or Path("results/bench-gpu.json")
        write(args.output, time_shape_grid(args))
        return
    args.dtype, args.repeats = args.dtype or "float32", args.repeats or 3
    args.output = args.output or Path("results/bench-cpu.json")

    adapter = random_llada(args)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, args.vocab - 2, (args.prompt,), generator=generator).tolist()
               for _ in range(args.batch)]
    base = dict(gen_length=args.gen, steps=args.steps, block_length=args.block)
    run = lambda mode, cache="prefix", batch=1, **extra: measure(  # noqa: E731
        adapter, prompts[:batch], SamplerConfig(mode=mode, use_cache=cache, **MODES[mode], **base, **extra),
        args.repeats)

    if args.compile:
        report = json.loads(args.output.read_text()) if args.output.exists() else {}
        write(args.output, report | {"compile": compile_ratios(adapter, prompts, base, args)})
        return
    if args.lookahead_only:
        write(args.output, lookahead_ratios(run, args))
        return
    caches = {cache: run("original", cache) for cache in ("none", "prefix", "dual")}
    print("caches", json.dumps(caches), flush=True)
    modes = {mode: (caches["prefix"] if mode == "original" else run(mode)) for mode in MODES}
    print("modes", json.dumps(modes), flush=True)
    info_gain_block = run("info_gain", lookahead_window="block")
    print("info_gain lookahead_window=block", json.dumps(info_gain_block), flush=True)
    batched = run("original", "prefix", args.batch)
    print("batched", json.dumps(batched), flush=True)
    report = {
        "prefix_speedup": caches["none"]["seconds"] / caches["prefix"]["seconds"],
        "dual_speedup": caches["none"]["seconds"] / caches["dual"]["seconds"],
        "infogain_over_original": modes["info_gain"]["seconds"] / modes["original"]["seconds"],
        "infogain_block_over_original": info_gain_block["seconds"] / modes["original"]["seconds"],
        "batch8_throughput_gain": (args.batch / batched["seconds"]) / (1 / caches["prefix"]["seconds"]),
        "caches_original": caches, "modes_prefix": modes, "info_gain_prefix_lookahead_block": info_gain_block,
        f"original_prefix_batch{args.batch}": batched,
        "settings": settings(args), "machine": machine(args.device),
        "date": time.strftime("%Y-%m-%d"),
    }
    kept = json.loads(args.output.read_text()).get("compile") if args.output.exists() else None
    write(args.output, report | ({"compile": kept} if kept else {}))  # --compile's own run, kept as it was
    print(json.dumps({k: round(v, 2) for k, v in report.items() if isinstance(v, float)}, indent=2))


def lookahead_ratios(run, args) -> dict:
    """Only Info-Gain's cost over original (prefix cache, batch 1), with lookahead_window rest and block: the
    part of the full run that a busy machine can time in a few minutes."""
    original, info_gain, block = run("original"), run("info_gain"), run("info_gain", lookahead_window="block")
    report = {"infogain_over_original": info_gain["seconds"] / original["seconds"],
              "infogain_block_over_original": block["seconds"] / original["seconds"]}
    print(json.dumps({key: round(value, 2) for key, value in report.items()}), flush=True)
    return report | {"modes_prefix": {"original": original, "info_gain": info_gain},
                     "info_gain_prefix_lookahead_block": block, "settings": settings(args),
                     "machine": machine(args.device), "date": time.strftime("%Y-%m-%d")}


def settings(args) -> dict:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
