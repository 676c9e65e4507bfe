"""bench/cost_model.py: its counts against a hand count of one forward, its extrapolation against a
direct count, its replay of the loop's choices, and a run of the whole command on a tiny grid."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lm_eval_infogain.models.llada import LLaDAModelLM

ROOT = Path(__file__).resolve().parent.parent


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


cost_model = load_bench("cost_model")
ARGS_TINY = type("Args", (), dict(gen=8, steps=8, block=4))  # bench/cost_model.py --gen 8 --steps 8 --block 4
# the `tiny` shape: LLaDA, hidden C, heads H, layers L, MLP width F, vocabulary V; bf16 weights on meta
C, H, L, F, V = 64, 4, 2, 128, 500
BF16 = 2


def tiny_adapter(layers: int = L):
    config = cost_model.shape_config("tiny", n_layers=layers)
    return cost_model.ModelAdapter(*cost_model.build_model(LLaDAModelLM, config, "meta", torch.bfloat16))


def whole_window_args(rows: int, width: int) -> list:
    """A forward of `rows` canvases of `width` positions, no cache, logits everywhere."""
    meta = dict(device="meta")
    return [torch.empty(rows, width, dtype=torch.long, **meta), torch.empty(rows, width, dtype=torch.long, **meta),
            torch.empty(rows, width, dtype=torch.bool, **meta), None, 0, 0, None]


def hand_flops(rows: int, width: int) -> int:
    """2 per multiply-add: q, k, v, out projections, the gated MLP, attention (scores and mix) per layer,
    then the LM head."""
    per_layer = 4 * 2 * rows * width * C * C + 3 * 2 * rows * width * C * F + 2 * 2 * rows * width * width * C
    return L * per_layer + 2 * rows * width * C * V


HAND_WEIGHT_BYTES = BF16 * (2 * V * C + L * (4 * C * C + 3 * C * F + 2 * C) + C)  # embedding, head, layers, ln_f


def test_weight_bytes_match_the_hand_count():
    assert cost_model.weight_bytes(tiny_adapter().model) == HAND_WEIGHT_BYTES


@pytest.mark.parametrize("rows, width", [(1, 24), (3, 40)])
def test_forward_flops_match_the_hand_count(rows, width):
    counts, shape, dtype = cost_model.count_forward(tiny_adapter(), whole_window_args(rows, width),
                                                    cost_model.FusedAttention())
    assert counts.flops == hand_flops(rows, width)
    assert shape == (rows, width, V) and dtype == torch.float32


def test_forward_reads_every_weight_once():
    # Without a cache every other byte grows with the window (attention counts as one fused kernel), so
    # bytes(W) = weights read + a * W + a few constants (the rotary table's frequencies): extrapolate to
    # W = 0. The embedding table is a gather: only its W looked-up rows are read, and they grow with W.
    attention = cost_model.FusedAttention()
    traffic = {width: cost_model.count_forward(tiny_adapter(), whole_window_args(1, width), attention)[0].bytes
               for width in (32, 64)}
    at_zero = 2 * traffic[32] - traffic[64]
    weights_read = HAND_WEIGHT_BYTES - BF16 * V * C
    assert weights_read <= at_zero <= weights_read + 1024


def test_rows_and_layers_extrapolate_exactly():
    # ForwardCounts measures 1- and 2-layer models on 1 and 2 rows; a 3-layer model on 3 rows, with a
    # cache and a window that starts inside the canvas, must count the same as a direct run.
    rows, total, start = 3, 48, 16
    forward_counts = cost_model.ForwardCounts("tiny", cost_model.FusedAttention())
    forward_counts.layers = 3
    direct = tiny_adapter(layers=3)
    meta = dict(device="meta")
    args = [torch.empty(rows, total - start, dtype=torch.long, **meta),
            torch.empty(rows, total, dtype=torch.long, **meta), torch.empty(rows, total, dtype=torch.bool, **meta),
            direct.new_cache(rows, total), start, start, start + 8]
    extrapolated, shape, _ = forward_counts(args)
    measured, direct_shape, _ = cost_model.count_forward(direct, args, forward_counts.attention)
    assert (extrapolated.flops, extrapolated.bytes) == (measured.flops, measured.bytes)
    assert shape == direct_shape == (rows, 8, V)


def test_shared_cache_forwards_count_as_a_direct_run():
    """Lookahead candidates sharing their prompts' cache (one prompt with 8, two prompts with 3 and 5): what
    ForwardCounts gives a 3-layer model equals a direct count (rows are not extrapolated there: the candidates
    of a prompt share one attention over its cache)."""
    from lm_eval_infogain.sampling.cache import SharedCache

    total, start, width = 48, 16, 8
    forward_counts = cost_model.ForwardCounts("tiny", cost_model.FusedAttention())
    forward_counts.layers = 3
    direct = tiny_adapter(layers=3)
    meta = dict(device="meta")
    for rows_of_prompts in ([0] * 8, [0, 0, 0, 1, 1, 1, 1, 1]):
        rows = torch.tensor(rows_of_prompts)
        prompts = int(rows.max()) + 1
        shared = SharedCache.for_rows(direct.new_cache(prompts, total), rows)
        args = [torch.empty(len(rows), width, dtype=torch.long, **meta),
                torch.empty(len(rows), total, dtype=torch.long, **meta),
                torch.empty(len(rows), total, dtype=torch.bool, **meta), shared, start, start, start + width]
        counted, _, _ = forward_counts(args, "forward_hidden")
        measured, _, _ = cost_model.count_forward(direct, args, forward_counts.attention, "forward_hidden")
        assert (counted.flops, counted.bytes, counted.floor) == (measured.flops, measured.bytes, measured.floor)


def test_a_cast_and_a_reshaping_copy_are_counted_under_inference_mode():
    """Under torch.inference_mode `aten.to` and `aten.reshape` reach the counter declared as aliases; a cast
    to fp32 of a bf16 [4, 8] reads 64 bytes and writes 128, a transposed reshape copies its 64 bytes; a real
    view still moves nothing."""
    x = torch.empty(4, 8, dtype=torch.bfloat16, device="meta")
    for expected, operation in ((64 + 128, lambda: x.float()), (64 + 64, lambda: x.t().reshape(32)),
                                (0, lambda: x.reshape(32)), (0, lambda: x.to(torch.bfloat16))):
        with torch.inference_mode(), cost_model.CostMode() as cost:
            operation()
        assert cost.bytes == expected


def test_the_fused_floor_reads_each_weight_once_and_frees_intermediates():
    """Two products with the same weight, an elementwise op between: eager counts every read and write, the
    floor the weight and the input once and the one output that outlives the scope."""
    weight = torch.empty(16, 32, dtype=torch.bfloat16, device="meta")  # 1 024 bytes
    inputs = torch.empty(4, 32, dtype=torch.bfloat16, device="meta")  # 256 bytes
    with cost_model.CostMode() as cost:
        kept = (inputs @ weight.t()).relu() @ weight  # [4, 16] (128 bytes, freed inside the scope), then [4, 32]
        floor = cost.close_floor()
    assert floor == 1024 + 256 + 256
    assert cost.bytes > 2 * 1024 + 256 + 128 + 128 + 128 + 256 and kept.shape == (4, 32)
    # the streamed head's way: the weight in two slices of rows, then whole: still the weight once
    with cost_model.CostMode() as cost:
        pieces = [inputs @ weight[:10].t(), inputs @ weight[10:].t(), inputs @ weight.t()]  # kept: 3 x [4, 10|6|16]
        floor = cost.close_floor()
    assert floor == 1024 + 256 + 2 * (4 * 10 + 4 * 6 + 4 * 16) and len(pieces) == 3


def test_the_fused_floor_of_a_forward_is_its_weights_inputs_and_output():
    """A whole-window forward without a cache: floor(W) = weights read once (the embedding's looked-up rows
    grow with W) + a W-linear part (ids, positions, mask in, logits out): extrapolated to W = 0, the weights
    but the embedding, within the rotary table's few bytes; below the eager bytes."""
    attention = cost_model.FusedAttention()
    counts = {width: cost_model.count_forward(tiny_adapter(), whole_window_args(1, width), attention)[0]
              for width in (32, 64)}
    at_zero = 2 * counts[32].floor - counts[64].floor
    weights_read = HAND_WEIGHT_BYTES - BF16 * V * C
    assert weights_read <= at_zero <= weights_read + 1024
    assert counts[64].floor >= weights_read + 64 * V * 4  # the fp32 logits are written
    assert all(c.floor < c.bytes for c in counts.values())


def test_the_recorded_path_does_not_depend_on_rounding():
    """The recording model's head is zero, so its choices depend on no float: perturbing every other weight
    (as another machine's rounding would, only far more) records the same events."""
    config = cost_model.sampler_config("info_gain", "prefix", 4, ARGS_TINY)
    adapter = cost_model.recording_adapter(LLaDAModelLM)
    prompts = cost_model.random_prompts(adapter.spec, 2, 16)
    recordings = []
    for noise in (0.0, 1e-2):
        model, spec = cost_model.build_model(LLaDAModelLM, adapter.model.config, "cpu", torch.float32)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                source = dict(adapter.model.named_parameters())[name]
                parameter.copy_(source + noise * torch.randn_like(source) * (source != 0))
        recording = cost_model.Recording()
        with torch.inference_mode(), cost_model.Recorder(recording):
            cost_model.run_loop(cost_model.ModelAdapter(model, spec), prompts, config)
        recordings.append(recording.events)
    assert recordings[0] == recordings[1] and len(recordings[0]) > 10


def test_bytes_rules_of_views_broadcasts_and_indexed_writes():
    aten = torch.ops.aten
    big = torch.empty(8, 1000, device="meta")  # 32 000 bytes
    row = torch.empty(1, 1000, device="meta")
    assert cost_model.op_bytes(aten.view.default, (big, [8000]), {}, big.view(8000)) == 0
    broadcast = row.expand(8, 1000)  # addresses 4 000 bytes, not 32 000
    assert cost_model.op_bytes(aten.add.Tensor, (big, broadcast), {}, big) == 32_000 + 4_000 + 32_000
    rows = torch.zeros(2, dtype=torch.long, device="meta")
    values = torch.empty(2, 1000, device="meta")  # index_put_ writes the two rows it is given, reads no more
    assert cost_model.op_bytes(aten.index_put_.default, (big, [rows], values), {}, big) == 8_000 + 8_000 + 16
    assert cost_model.op_bytes(aten.index.Tensor, (big, [rows]), {}, values) == 8_000 + 16 + 8_000


def test_replay_stops_where_the_meta_run_leaves_the_recorded_path():
    recording = cost_model.Recording([("aten.nonzero.default", (3, 1))])
    with cost_model.Replayer(recording), pytest.raises(RuntimeError, match="left the recorded path"):
        bool(torch.empty(2, dtype=torch.bool, device="meta").any())


def run_cost_model(tmp_path, *options) -> dict:
    """The command's output on the tiny shape (later options win: argparse keeps the last value)."""
    output = tmp_path / "cost.json"
    subprocess.run([sys.executable, "bench/cost_model.py", "--shapes", "tiny", "--prompt", "16", "--gen", "8",
                    "--block", "4", "--steps", "8", "--output", str(output), *options], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return json.loads(output.read_text())


def test_cost_model_on_a_tiny_grid(tmp_path):
    report = run_cost_model(tmp_path, "--modes", "original,info_gain", "--caches", "none,prefix", "--batches", "1,2",
                            "--candidates", "1,4")
    rows = {(r["mode"], r["use_cache"], r["batch"], r["candidates"], r["lookahead_window"]): r for r in report["rows"]}
    # original: 2 caches x 2 batches; info_gain also x 2 candidate numbers, and with prefix x 2 lookahead windows
    assert len(rows) == 4 + 8 + 4
    original = rows["original", "none", 1, 1, "rest"]
    # 2 blocks of 4 steps: a block-start forward, then one forward after every step but the last;
    # without a cache every forward is the whole canvas (24 positions) with the block's 4 logits.
    assert original["steps"] == 8 and original["forwards"] == 8
    one_forward = hand_flops(1, 24) - 2 * 24 * C * V + 2 * 4 * C * V
    assert original["flops"] == 8 * one_forward  # the loop's own work has no matrix products
    for row in report["rows"]:
        assert row["peak_bytes"] > row["weight_bytes"] == HAND_WEIGHT_BYTES
        assert row["bytes"] > row["forwards"] * (HAND_WEIGHT_BYTES - BF16 * V * C)  # every weight but the embedding
        assert row["bytes"] > row["floor_bytes"] > row["forwards"] * (HAND_WEIGHT_BYTES - BF16 * V * C)
        assert row["ms_per_step"]["h200"] <= row["ms_per_step"]["h100"]
        assert row["floor_ms_per_step"]["h100"] <= row["ms_per_step"]["h100"]
    # a cache shortens the window; Info-Gain's lookahead forwards N candidates and copies their cache
    assert rows["original", "prefix", 1, 1, "rest"]["flops"] < original["flops"]
    assert rows["info_gain", "prefix", 1, 4, "rest"]["bytes"] > rows["info_gain", "prefix", 1, 1, "rest"]["bytes"]
    assert rows["original", "prefix", 2, 1, "rest"]["flops"] == 2 * rows["original", "prefix", 1, 1, "rest"]["flops"]
    # the block lookahead forwards the candidates' block only: fewer FLOPs than the rest of the canvas
    assert rows["info_gain", "prefix", 1, 4, "block"]["flops"] < rows["info_gain", "prefix", 1, 4, "rest"]["flops"]


def test_a_resumed_run_in_two_processes_writes_what_one_serial_run_writes(tmp_path):
    grid = ["--modes", "original,info_gain", "--caches", "prefix", "--candidates", "4"]
    serial = run_cost_model(tmp_path / "serial", *grid, "--batches", "1,2")
    first = run_cost_model(tmp_path / "resumed", *grid, "--batches", "1")
    resumed = run_cost_model(tmp_path / "resumed", *grid, "--batches", "1,2", "--resume", "--jobs", "2")
    assert len(first["rows"]) == 3 and len(serial["rows"]) == 6 and resumed["complete"]
    # the kept rows, then the measured ones, in the grid's order, counted alike whatever the process counted
    # before (the fused floor tells storages apart by storage_number, not by an address a freed one leaves)
    assert resumed["rows"] == serial["rows"]
    changed = run_cost_model(tmp_path / "resumed", *grid, "--batches", "1", "--resume", "--steps", "4")
    assert changed["settings"]["steps"] == 4 and changed["rows"] != first["rows"]  # other settings: all measured


def test_cost_model_rejects_an_unknown_shape(tmp_path):
    result = subprocess.run([sys.executable, "bench/cost_model.py", "--shapes", "llada-70b"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--shapes='llada-70b' is invalid; allowed: llada-8b" in result.stderr.strip().splitlines()[-1]


def test_gpu_bench_command_runs_the_same_grid_on_a_tiny_shape(tmp_path):
    # `python bench/sampler.py --device cuda --shape llada-8b` on a GPU; here the same code on CPU.
    prediction = tmp_path / "cost.json"  # written by run_cost_model
    cell = ["--modes", "original,info_gain", "--caches", "prefix", "--batches", "2", "--candidates", "2"]
    run_cost_model(tmp_path, *cell)
    output = tmp_path / "bench.json"
    subprocess.run([sys.executable, "bench/sampler.py", "--device", "cpu", "--shape", "tiny", "--prompt", "16",
                    "--gen", "8", "--block", "4", "--steps", "8", *cell, "--prediction", str(prediction),
                    "--output", str(output)], cwd=ROOT, check=True, capture_output=True, text=True)
    report = json.loads(output.read_text())
    assert report["device"] == "cpu"
    check = report["fused_attention_check"]  # the split attention checked on the device before timing
    assert check["dtype"] == "bfloat16" and len(check["max_abs_error"]) == 4
    assert 0 < max(check["max_abs_error"].values()) <= check["tolerance"]
    assert [(r["mode"], r["candidates"], r["lookahead_window"]) for r in report["rows"]] == [
        ("original", 1, "rest"), ("info_gain", 2, "rest"), ("info_gain", 2, "block")]
    predicted = {(r["mode"], r["lookahead_window"]): r for r in json.loads(prediction.read_text())["rows"]}
    for row in report["rows"]:
        assert row["steps"] == 8 and row["ms_per_step"] > 0 and row["tok_per_s"] == round(2 * 8 / row["seconds"], 1)
        # not a device the cost model knows: its prediction on each of them
        assert row["predicted"]["ms_per_step"] == predicted[row["mode"], row["lookahead_window"]]["ms_per_step"]


def test_gpu_bench_command_on_cpu_needs_an_output(tmp_path):
    result = subprocess.run([sys.executable, "bench/sampler.py", "--device", "cpu", "--shape", "tiny"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "results/bench-gpu.json holds GPU runs only" in result.stderr


def test_the_gpu_bench_stops_when_the_fused_split_attention_is_off(monkeypatch):
    sampler = load_bench("sampler")
    fused = sampler.layers.attention_with_lse

    def off_by_a_little(*args):
        output, lse = fused(*args)
        return output, lse + 0.1

    monkeypatch.setattr(sampler.layers, "attention_with_lse", off_by_a_little)
    with pytest.raises(SystemExit, match="fused split attention on cpu .float32. is 0.1 off"):
        sampler.fused_attention_check("cpu", "float32")


def write_run(folder: Path, mode: str, gen_length: int, docs: dict[int, tuple[int, int]]) -> None:
    """A sampler's run folder as `--log_samples` with decode_stats leaves it: doc_id -> (nfe, tokens forwarded)."""
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "results_2026.json").write_text(json.dumps(
        {"config": {"sampler": {"mode": mode, "gen_length": gen_length}}}))
    (folder / "decode_stats.jsonl").write_text("".join(
        json.dumps({"doc_id": doc, "repeat": 0, "nfe": nfe, "tokens_forwarded": forwarded}) + "\n"
        for doc, (nfe, forwarded) in docs.items()))


def test_dynamic_steps_prices_each_run_by_its_measured_forwards_and_rows(tmp_path):
    """Canvas widths 100 and 50 (from the one-row run); the lookahead run forwards 1.5 and 2.5 rows a
    forward, 2 on average, over 10 and 20 forwards of 10 tokens: 1.5 forwards per token. Its 8B step
    costs 1/4 of the way from the 1-row step (4 ms) to the 5-row one (32 ms): 11 ms; a decode of 256
    tokens at 1.5 forwards per token: 256 / (384 x 0.011 s) tok/s."""
    write_run(tmp_path / "runs" / "fast_dllm", "fast_dllm", 10, {0: (4, 400), 1: (2, 100)})
    write_run(tmp_path / "runs" / "info_gain", "info_gain", 10, {0: (10, 1500), 1: (20, 2500)})
    cells = [{"model": "llada-8b", "mode": mode, "use_cache": "prefix", "batch": 1, "candidates": number,
              "ms_per_step": {"h100": ms, "h200": ms / 2}} for mode, number, ms in (("original", 1, 4.0),
                                                                                     ("info_gain", 5, 32.0))]
    (tmp_path / "cost.json").write_text(json.dumps({"rows": cells, "settings": {"gen_length": 256}}))
    printed = subprocess.run([sys.executable, str(ROOT / "bench" / "dynamic_steps.py"), str(tmp_path / "runs"),
                              "--cost", str(tmp_path / "cost.json"), "--candidates", "5"],
                             capture_output=True, text=True, check=True).stdout
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines() if line.startswith("| ")}
    assert rows["info_gain"][2:5] == ["1.500", "2.00", "11.0"]
    assert float(rows["info_gain"][6]) == round(256 / (384 * 0.011), 1)
    assert rows["fast_dllm"][2:5] == ["0.300", "1.00", "4.0"]
    # with the lookahead on every step the same forwards carry 5 rows: the 32 ms step
    assert float(rows["info_gain"][8].rstrip(" |")) == round(256 / (384 * 0.032), 1)
    assert rows["fast_dllm"][8].rstrip(" |") == "-"
    assert "calibration" not in printed  # no A100 prices in the cost file: no calibration line


def test_the_calibration_line_prices_fast_dllm_on_the_published_device(tmp_path):
    """fast_dllm at 0.3 forwards per token, a 4 ms A100 step: 256 / (76.8 x 0.004) tok/s beside 54.4; the step
    matches 54.4 tok/s at 1000 / (54.4 x 4) forwards per token."""
    write_run(tmp_path / "runs" / "fast_dllm", "fast_dllm", 10, {0: (3, 300)})
    cells = [{"model": "llada-8b", "mode": mode, "use_cache": "prefix", "batch": 1, "candidates": number,
              "ms_per_step": {"a100": ms, "h100": ms, "h200": ms}} for mode, number, ms in (("original", 1, 4.0),
                                                                                              ("info_gain", 8, 9.0))]
    (tmp_path / "cost.json").write_text(json.dumps({"rows": cells, "settings": {"gen_length": 256}}))
    printed = subprocess.run([sys.executable, str(ROOT / "bench" / "dynamic_steps.py"), str(tmp_path / "runs"),
                              "--cost", str(tmp_path / "cost.json")], capture_output=True, text=True, check=True).stdout
    line = printed.splitlines()[-1]
    assert line.startswith("calibration") and "published 54.4 tok/s" in line
    assert f"predicts {round(256 / (76.8 * 0.004), 1)} tok/s" in line
    assert f"at {1000 / (54.4 * 4):.2f} forwards/token" in line


def test_bench_readme_quotes_the_committed_cost_model_and_dynamic_steps_output():
    """The numbers bench/README.md gives are those its commands print from the committed files (the dynamic-steps
    scenario priced with the rerun cells of cost-8b-block.json)."""
    readme = (ROOT / "bench" / "README.md").read_text()
    rows = json.loads((ROOT / "results" / "cost-8b.json").read_text())["rows"]
    assert cost_model.markdown_table(rows) in readme
    for task, runs in (("sudoku_4x4", "tiny-llada-sudoku/sudoku_4x4"), ("countdown", "tiny-llada-countdown/countdown")):
        printed = subprocess.run([sys.executable, "bench/dynamic_steps.py", f"results/runs-parallel/{runs}", "--cost",
                                  "results/cost-8b-block.json"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout
        for line in printed.splitlines()[4:]:
            if line.startswith("calibration"):
                assert line in readme
                continue
            sampler, _, per_token, rows_per_forward, _, _, h100, h200, every_step = line.strip("| ").split(" | ")
            quoted = f"{per_token} | {rows_per_forward} | {h100} | {h200} | {every_step} |"
            assert any(row.startswith(f"| {task} | {sampler.split('_parallel')[0]}") and row.endswith(quoted)
                       for row in readme.splitlines()), (task, sampler, quoted)


BLOCK_LM_EVAL = """
import sys
class NoLmEval:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("lm_eval", "math_verify", "sqlitedict", "datasets", "evaluate"):
            raise ImportError(f"{name} is not on a bare GPU machine")
sys.meta_path.insert(0, NoLmEval())
sys.path.insert(0, "bench")
import sampler, cost_model, dynamic_steps
print("imported")
"""


def test_bench_runs_where_only_torch_and_transformers_are_installed():
    """A GPU machine may have torch and transformers but not lm-eval: bench/ must not need it."""
    result = subprocess.run([sys.executable, "-c", BLOCK_LM_EVAL], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("only", [[], ["--lookahead-only", "--threads", "1"]])
def test_cpu_bench_records_the_block_lookahead_beside_original(tmp_path, only):
    """`python bench/sampler.py` (the CPU ratios) on a very small model, whole or --lookahead-only: Info-Gain
    with lookahead_window=block is timed in the same run as original, and its ratio is the two medians'."""
    output = tmp_path / "bench.json"
    subprocess.run([sys.executable, "bench/sampler.py", "--layers", "1", "--hidden", "32", "--heads", "2",
                    "--vocab", "64", "--prompt", "8", "--gen", "8", "--block", "4", "--steps", "8", "--batch", "2",
                    "--repeats", "1", "--output", str(output), *only], cwd=ROOT, check=True, capture_output=True,
                   text=True)
    report = json.loads(output.read_text())
    block, original = report["info_gain_prefix_lookahead_block"], report["modes_prefix"]["original"]
    assert report["infogain_block_over_original"] == block["seconds"] / original["seconds"]
    assert block["nfe"] == report["modes_prefix"]["info_gain"]["nfe"] == 8  # one forward per step either way


def test_bench_readme_quotes_the_block_lookahead_counts():
    """bench/README.md's block-lookahead table and ratios are what `--print` gives for the committed file."""
    printed = subprocess.run([sys.executable, "bench/cost_model.py", "--print", "results/cost-8b-block.json"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "block: 1." in printed and printed.strip() in (ROOT / "bench" / "README.md").read_text()
