"""compile=true (sampling/compiled.py): the compiled forward at a few static shapes.

The padding is checked with torch.compile's "eager" backend and a backend that counts graphs (dynamo's
tracing and guards, no code generation: fast); the generated code with inductor on the bundled
tiny-llada-sudoku, whose few graphs are compiled once per module (inductor's C++ compile is slow on a loaded
CPU). Compiled logits match eager ones to INDUCTOR_TOLERANCE: inductor fuses and reorders float32 sums.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.base import ModelAdapter
from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling import compiled
from lm_eval_infogain.sampling.compiled import CompiledAdapter
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate

REPO = Path(__file__).resolve().parent.parent
INDUCTOR_TOLERANCE = 1e-4  # largest |compiled - eager| logit allowed, float32 (logits of order 1)

TEXTS = ["Solve: 1 2 3 4", "Write a story about a lighthouse.", "0123 4567 89"]
# the same three lengths' canvases fall in one padded length; these are longer, in the next one
LONGER_TEXTS = ["Write a story about a lighthouse keeper who counts ships at night, and the sea around him" * 2,
                "0123 4567 89 0123 4567 89 0123 4567 89 0123 4567 89 0123 4567 89 0123 4567 89"]


class GraphCounter:
    """A torch.compile backend that runs the traced graph as it is and counts the graphs dynamo compiles."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return graph_module.forward


def tokenize(tokenizer, texts):
    """Token ids of each text, cut to a multiple of 4 tokens: a block-causal model's canvas holds prompts whose
    lengths agree modulo its block size (4 in the tiny models), so these decode as one batch in every model."""
    return [ids[:len(ids) - len(ids) % 4] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


SETTINGS = [("prefix", "rest"), ("prefix", "block"), ("dual", "rest"), ("dual", "block"), ("none", "rest")]


@pytest.mark.parametrize("arch", ["llada", "dream", "sdar"])
def test_padded_shapes_give_eager_tokens_with_bounded_graphs(arch):
    """Every cache mode and lookahead window, three prompts of different lengths, four blocks: the tokens of
    the padded forward (traced by dynamo, run eagerly) are the eager sampler's, and the graphs are bounded
    by the module docstring's count; a second batch whose canvas pads to the same length compiles nothing new.
    Padding changes how the attention kernel blocks its sums (differences of 1e-6 in float32), which flips
    the random models' near-ties; in float64 it does not."""
    adapter, tokenizer = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
    adapter = ModelAdapter(adapter.model.double(), adapter.spec)  # no near-ties: see below
    counter = GraphCounter()
    compiled_adapter = CompiledAdapter(adapter, backend=counter)
    prompts = tokenize(tokenizer, TEXTS)
    for use_cache, window in SETTINGS if arch == "llada" else SETTINGS[::2]:
        if use_cache not in adapter.spec.cache_modes:
            continue
        config = SamplerConfig(mode="info_gain", use_cache=use_cache, lookahead_window=window, gen_length=32,
                               steps=16, block_length=8, position_temperature=0.5, threshold=0.95)
        before = counter.graphs
        expected, expected_stats = generate(adapter, prompts, config, [1, 2, 3])
        got, got_stats = generate(compiled_adapter, prompts, config, [1, 2, 3])
        assert got == expected, (use_cache, window)
        assert [row["nfe"] for row in got_stats] == [row["nfe"] for row in expected_stats]
        # cache forms (whole, subset of rows, shared view, none) x widths: the padded canvas, the block and
        # under prefix the four widths 32 - 8j (+1 for Dream), padded to one multiple of 64; here <= 2 per form
        assert counter.graphs - before <= 6, (use_cache, window, counter.graphs - before)
        again = counter.graphs
        generate(compiled_adapter, prompts[::-1], config, [4, 5, 6])  # other rows and draws, the same shapes
        assert counter.graphs == again, (use_cache, window)
    total = counter.graphs
    assert total <= 12, total
    # a longer canvas pads to another length: at most the same kinds of graphs again, once
    config = SamplerConfig(mode="info_gain", use_cache="prefix", gen_length=32, steps=16, block_length=8,
                           position_temperature=0.5, threshold=0.95)
    longer = tokenize(tokenizer, LONGER_TEXTS + TEXTS[:1])
    assert generate(compiled_adapter, longer, config, [1, 2, 3])[0] == generate(adapter, longer, config, [1, 2, 3])[0]
    assert counter.graphs - total <= 3


def test_a_users_lookahead_with_more_candidates_than_candidate_number_compiles_to_eager_tokens():
    """compile=true lays a lookahead's candidates out in slots per prompt: as many as the strategy proposes
    (here a user's strategy with 12), not the built-in's candidate_number (8)."""
    adapter, tokenizer = load("tiny-random-llada", dtype="float32", device="cpu")
    adapter = ModelAdapter(adapter.model.double(), adapter.spec)  # no near-ties: see above
    config = SamplerConfig(mode="lm_eval_infogain.examples.margin_lookahead:MarginLookahead", use_cache="prefix",
                           gen_length=16, steps=8, block_length=8, strategy_options={"candidates": 12, "spread": 1.0})
    prompts = tokenize(tokenizer, TEXTS)
    expected = generate(adapter, prompts, config, [1, 2, 3])[0]
    assert generate(CompiledAdapter(adapter, backend="eager"), prompts, config, [1, 2, 3])[0] == expected


def test_without_padding_dynamo_compiles_per_block():
    """The count above can fail: the same decode through torch.compile of the plain forward compiles a graph
    for nearly every block and lookahead row count."""
    adapter, tokenizer = load("tiny-random-llada", dtype="float32", device="cpu")
    counter = GraphCounter()
    plain = torch.compile(adapter.forward_hidden, backend=counter, dynamic=False)

    class PlainCompiled:
        spec, device, dtype, head, output_head, new_cache = adapter.spec, adapter.device, adapter.dtype, \
            adapter.head, adapter.output_head, adapter.new_cache
        forward_hidden = staticmethod(plain)

    config = SamplerConfig(mode="info_gain", use_cache="prefix", gen_length=32, steps=16, block_length=8,
                           position_temperature=0.5, threshold=0.95)
    with torch._dynamo.config.patch(recompile_limit=256):
        generate(PlainCompiled(), tokenize(tokenizer, TEXTS), config, [1, 2, 3])
    assert counter.graphs > 12


@pytest.fixture(scope="module")
def sudoku():
    """tiny-llada-sudoku eager and compiled with inductor (its graphs compile at the first decode)."""
    adapter, tokenizer = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    return adapter, CompiledAdapter(adapter), tokenizer


def test_inductor_logits_match_eager(sudoku):
    adapter, compiled_adapter, tokenizer = sudoku
    prompt = tokenize(tokenizer, ["1 2 . 4 | 3 . 1 2 | . 1 2 3 | 2 3 4 ."])[0]
    canvas = torch.tensor([prompt + [adapter.spec.mask_id] * 24])  # [1, T]
    positions = torch.arange(canvas.shape[1])[None]  # [1, T]
    key_mask = torch.ones_like(canvas, dtype=torch.bool)  # [1, T]
    total, start = canvas.shape[1], len(prompt)
    with torch.inference_mode():
        caches = [adapter.new_cache(1, total), compiled_adapter.new_cache(1, total)]
        outputs = [model.head(model.forward_hidden(canvas, positions, key_mask, cache, 0, start, total))
                   for model, cache in zip((adapter, compiled_adapter), caches)]
        # the block's step forward, reading the keys the first forward wrote
        canvas[0, start] = 7
        outputs += [model.head(model.forward_hidden(canvas[:, start:], positions, key_mask, cache, start, start))
                    for model, cache in zip((adapter, compiled_adapter), caches)]
    for eager_logits, compiled_logits in zip(outputs[::2], outputs[1::2]):
        assert compiled_logits.shape == eager_logits.shape
        assert (compiled_logits - eager_logits).abs().max() < INDUCTOR_TOLERANCE
    assert (outputs[0] - outputs[2]).abs().max() > 100 * INDUCTOR_TOLERANCE  # the commit changed the logits


def test_compile_value_is_checked():
    with pytest.raises(UsageError, match=r"compile='yes' is invalid; allowed: true \| false"):
        MDMInfoGainLM(pretrained="tiny-random-llada", compile="yes")


def test_compile_refuses_a_model_it_cannot_compile():
    with pytest.raises(UsageError, match="compile=True is invalid; allowed: false for this model"):
        MDMInfoGainLM(pretrained="oracle-sudoku", compile=True)


def cli_samples(tmp_path, model_args: str) -> dict[int, list]:
    output = tmp_path / model_args.replace(",", "_").replace("=", "-")
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain", "--model_args",
               f"pretrained=tiny-llada-sudoku,{model_args}", "--tasks", "sudoku_4x4", "--limit", "3",
               "--output_path", str(output), "--log_samples"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = next(output.rglob("samples_sudoku_4x4_*.jsonl")).read_text().splitlines()
    return {row["doc_id"]: row["resps"] for row in map(json.loads, lines)}


# The padding is covered in every cache mode cheaply above; this compiles with inductor in fresh processes
# (a cold compile is tens of seconds a graph on two cores), so it runs one cache mode.
@pytest.mark.slow
def test_stock_cli_compiled_answers_are_eager_ones(tmp_path):
    model_args = "mode=info_gain,use_cache=prefix"
    assert cli_samples(tmp_path, model_args + ",compile=true") == cli_samples(tmp_path, model_args)


def test_padded_length_leaves_room_for_every_widened_window():
    for canvas in range(1, 300):
        length = compiled.padded_length(canvas)
        for start in range(canvas):
            assert start + compiled.round_up(canvas - start, compiled.WIDTH_QUANTUM) <= length


TINY_BENCH = ["--prompt", "8", "--gen", "8", "--block", "4", "--steps", "8", "--repeats", "1", "--compile",
              "--compile-backend", "eager"]  # the script's path in seconds: no code generation


def run_bench(*args: str) -> None:
    subprocess.run([sys.executable, "bench/sampler.py", *args], cwd=REPO, check=True, capture_output=True, text=True,
                   timeout=600)


def test_cpu_bench_compile_ratios_are_the_medians_of_one_run(tmp_path):
    """`python bench/sampler.py --compile` on a very small model: eager and compiled cells of one run, their
    ratios, and the other keys of the output file left as they were."""
    output = tmp_path / "bench.json"
    output.write_text(json.dumps({"prefix_speedup": 4.5}))
    run_bench("--layers", "1", "--hidden", "32", "--heads", "2", "--vocab", "64", "--batch", "2", *TINY_BENCH,
              "--output", str(output))
    report = json.loads(output.read_text())
    assert report["prefix_speedup"] == 4.5
    ratios = report["compile"]
    eager, compiled_cells = ratios["eager"], ratios["compiled"]
    assert set(eager) == set(compiled_cells) == {"original_prefix", "original_prefix_batch2", "info_gain_prefix_rest",
                                                 "info_gain_prefix_block"}
    for name, speedup in ratios["compiled_speedup_over_eager"].items():
        assert speedup == eager[name]["seconds"] / compiled_cells[name]["seconds"]
        assert eager[name]["nfe"] == compiled_cells[name]["nfe"] == 8
    one, two = compiled_cells["original_prefix"]["seconds"], compiled_cells["original_prefix_batch2"]["seconds"]
    assert ratios["batch2_throughput_gain"]["compiled"] == 2 * one / two


def test_gpu_bench_grid_times_each_cell_compiled_too(tmp_path):
    """`python bench/sampler.py --device cuda --shape llada-8b` (compiled beside eager by default on a GPU); here
    the same code on a tiny shape on CPU, with --compile."""
    output = tmp_path / "bench-gpu.json"
    run_bench("--device", "cpu", "--shape", "tiny", "--modes", "original,info_gain", "--caches", "prefix",
              "--batches", "1", "--candidates", "2", *TINY_BENCH, "--output", str(output))
    rows = json.loads(output.read_text())["rows"]
    assert [(row["mode"], row["lookahead_window"]) for row in rows] == [
        ("original", "rest"), ("info_gain", "rest"), ("info_gain", "block")]
    for row in rows:
        assert row["compiled_speedup_over_eager"] == round(row["seconds"] / row["compiled"]["seconds"], 3)
        assert row["compiled"]["tok_per_s"] == round(8 / row["compiled"]["seconds"], 1)
