"""The lookahead's candidates share their prompt's cache: outputs equal those of the copying lookahead.

Until commit 24b169f each lookahead candidate attended over its own copy of its prompt's cache
(`KVCache.select_rows`). tests/golden/lookahead_decodes.json holds whole decodes of that code, recorded
in float64 on every tiny random architecture, in every cache mode it supports: the shared-cache loop
must reproduce them token for token, with the same forward counts.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lm_eval_infogain.models import layers
from lm_eval_infogain.models.base import ModelAdapter
from lm_eval_infogain.sampling.config import SamplerConfig, fit_to_model
from lm_eval_infogain.sampling.loop import generate

GOLDEN = Path(__file__).parent / "golden" / "lookahead_decodes.json"
ARCHS = ["llada", "mmada", "dream", "sdar", "trado"]
TEXTS = ["Solve: 1 2 3 4", "Write a story about a lighthouse.", "0123", "The answer is: 44-15=29"]
SETTINGS = {  # name -> SamplerConfig arguments
    "info_gain": dict(mode="info_gain"),
    "lookum": dict(mode="lookum"),
    "info_gain_t1": dict(mode="info_gain", temperature=1.0),
    "original": dict(mode="original"),
    "fast_dllm": dict(mode="fast_dllm", threshold=0.3),
}
SMALL = dict(gen_length=32, steps=16, block_length=16)
SEEDS = [11, 22, 33, 44]


def float64_model(arch: str):
    """(adapter, prompts) of tiny-random-<arch> in float64 on CPU."""
    from lm_eval_infogain.models.registry import load

    adapter, tokenizer = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
    adapter = ModelAdapter(adapter.model.double(), adapter.spec)
    return adapter, [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


def decode_everything(arch: str) -> dict:
    """{"<setting>/<cache>": {"ids": [...], "stats": [...]}} of the four prompts in every setting and cache."""
    adapter, prompts = float64_model(arch)
    runs = {}
    for name, settings in SETTINGS.items():
        for cache in adapter.spec.cache_modes:
            given = {**settings, **SMALL, "use_cache": cache}
            config = fit_to_model(SamplerConfig(**given), set(given), adapter.spec)
            ids, stats = generate(adapter, prompts, config, SEEDS)
            runs[f"{name}/{cache}"] = {"ids": ids, "stats": stats}
    return runs


def record_golden() -> None:
    """Writes the golden file from the code checked out (run only on the copying lookahead's commit)."""
    torch.set_num_threads(1)
    GOLDEN.write_text(json.dumps({arch: decode_everything(arch) for arch in ARCHS}) + "\n")


if __name__ == "__main__":
    record_golden()


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_decodes_equal_the_copying_lookaheads_token_for_token(golden, arch):
    runs = decode_everything(arch)
    assert runs.keys() == golden[arch].keys()
    for run, expected in golden[arch].items():
        assert runs[run]["ids"] == expected["ids"], run
        for row, expected_row in zip(runs[run]["stats"], expected["stats"]):
            for key in ("nfe", "tokens_forwarded", "bypass_tokens"):
                assert row[key] == expected_row[key], (run, key)
            assert math.isclose(row["cumulative_entropy"], expected_row["cumulative_entropy"], rel_tol=1e-6), run


def copying_lookahead_logits(decoder, ids, rows, window, logits_range) -> torch.Tensor:
    """The logits [R, W, V] of candidate canvases ids [R, T] as the copying lookahead computed them:
    each candidate's own copy of its prompt's cache, its window written into that copy."""
    from lm_eval_infogain.sampling.cache import KVCache

    cache = decoder.cache and KVCache([k[rows].clone() for k in decoder.cache.keys],
                                      [v[rows].clone() for v in decoder.cache.values])
    window_start, window_end = window
    return decoder.adapter.forward(ids[:, window_start:window_end], decoder.canvas.positions[rows],
                                   decoder.canvas.key_mask[rows], cache, window_start, *logits_range)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_lookahead_logits_equal_the_copying_lookaheads(arch):
    """Two prompts with three and two candidates (uneven groups) or two each, at the start of the first
    block and of a later one, in every cache mode: the shared-cache forward gives the copying one's logits."""
    from lm_eval_infogain.sampling.loop import Decoder, block_ranges, build_canvas

    adapter, prompts = float64_model(arch)
    prompts = prompts[:2]
    for cache in adapter.spec.cache_modes:
        given = dict(mode="info_gain", use_cache=cache, **SMALL)
        config = fit_to_model(SamplerConfig(**given), set(given), adapter.spec)
        canvas = build_canvas(prompts, config.gen_length, adapter.spec, "cpu")
        decoder = Decoder(adapter, config, canvas, [torch.Generator().manual_seed(0) for _ in prompts])
        blocks = block_ranges(canvas.prompt_length, config.gen_length, config.block_length,
                              adapter.spec.attention_block_size)
        for block_start, block_end in (blocks[0], blocks[-1]):
            canvas.ids[:, canvas.prompt_length:block_start] = 7  # the blocks before are committed
            decoder.start_block(block_start, block_end, torch.tensor([True, True]))
            # uneven groups, then even ones (`SharedCache.dense`: no scatter into slots)
            for rows, offsets in (([0, 0, 0, 1, 1], [0, 1, 2, 0, 3]), ([0, 0, 1, 1], [0, 2, 1, 3])):
                rows = torch.tensor(rows)
                ids = canvas.ids[rows].clone()  # [R, T]
                for candidate, offset in enumerate(offsets):
                    ids[candidate, block_start + offset] = 10 + candidate
                window = decoder.step_window(block_start, block_end)
                logits_range = (block_start, decoder.logits_end(block_start, block_end))
                shared = decoder.logits(decoder.forward(ids, rows, window, logits_range, share_cache=False))
                expected = copying_lookahead_logits(decoder, ids, rows, window, logits_range)
                torch.testing.assert_close(shared, expected, rtol=1e-9, atol=1e-9,
                                           msg=f"{cache} {block_start} rows {rows.tolist()}")


def test_entropies_a_position_at_a_time_change_nothing(golden, monkeypatch):
    """H_next's entropies from logits in chunks of one position (the path of an adapter without an output
    head) give the decodes of the whole-window computation."""
    from lm_eval_infogain.sampling import loop

    monkeypatch.setattr(loop, "LOGITS_CHUNK_ELEMENTS", 1)
    adapter, prompts = float64_model("llada")
    monkeypatch.setattr(adapter, "output_head", lambda: None)
    for cache in ("prefix", "dual"):
        given = {**SETTINGS["info_gain"], **SMALL, "use_cache": cache}
        ids, _ = generate(adapter, prompts, SamplerConfig(**given), SEEDS)
        assert ids == golden["llada"][f"info_gain/{cache}"]["ids"]


def split_attention_inputs(dtype, device="cpu"):
    """Queries [2, 4, 5, 8] over 7 keys; the second row's third query sees no key at all."""
    generator = torch.Generator().manual_seed(0)
    queries, keys, values = (torch.randn(2, 4, width, 8, generator=generator, dtype=dtype).to(device)
                             for width in (5, 7, 7))
    mask = torch.rand(2, 1, 5, 7, generator=generator) > 0.4
    mask[:, :, :, 0] = True
    mask[1, 0, 2] = False
    return queries, keys, values, mask.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_attention_with_lse_path_gives_softmax_attention_and_its_log_sum_exp(dtype):
    queries, keys, values, mask = split_attention_inputs(dtype)
    scores = (queries @ keys.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask, float("-inf"))
    expected_lse = scores.logsumexp(-1, keepdim=True)  # [2, 4, 5, 1]
    expected = (scores - expected_lse).exp().nan_to_num(0.0) @ values
    sees_none = ~mask.any(-1, keepdim=True)
    for path in (layers.attention_with_lse,
                 lambda *args: layers.unfused_attention_with_lse(*args, sees_none)):
        output, lse = path(queries, keys, values, mask)
        tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(output, expected, **tolerance)
        torch.testing.assert_close(lse, expected_lse, **tolerance)
    assert lse[1, :, 2].eq(float("-inf")).all() and output[1, :, 2].eq(0).all()


def test_gpu_attention_with_lse_is_the_fused_kernel_with_an_aligned_bias():
    """On a GPU (and on meta, the cost model's stand-in) the split attention is one memory-efficient
    kernel that also returns the log-sum-exp, not the fp32 scores of the unfused maths; its bias rows are
    stored 8-aligned as that kernel needs, and its log-sum-exp padding is cut off."""
    queries, keys, values, mask = (t.to("meta") for t in split_attention_inputs(torch.bfloat16))
    calls = []

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(str(func))
            return func(*args, **(kwargs or {}))

    with Ops():
        output, lse = layers.attention_with_lse(queries, keys, values, mask)
    assert "aten._scaled_dot_product_efficient_attention.default" in calls
    assert not any(op in call for call in calls for op in ("bmm", "matmul", "logsumexp"))
    assert output.shape == (2, 4, 5, 8) and lse.shape == (2, 4, 5, 1) and lse.dtype == torch.float32
    bias = layers.additive_bias(split_attention_inputs(torch.float32)[3], torch.bfloat16, align=8)
    assert bias.shape == (2, 1, 5, 7) and all(stride % 8 == 0 for stride in bias.stride()[:-1])
    assert bias.isneginf().equal(~split_attention_inputs(torch.float32)[3]) and bias.eq(0).sum() > 0


# --- lookahead_window=block: candidates forward the block only -------------------------------------------

@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_block_lookahead_under_dual_is_what_dual_already_does(golden, arch):
    """Under `dual` every within-block forward already stops at the block's end: lookahead_window=block
    decodes exactly as `rest` (the copying lookahead's golden decodes), forward counts included."""
    adapter, prompts = float64_model(arch)
    for name in ("info_gain", "lookum"):
        ids, stats = generate(adapter, prompts, SamplerConfig(**SETTINGS[name], **SMALL, use_cache="dual",
                                                              lookahead_window="block"), SEEDS)
        expected = golden[arch][f"{name}/dual"]
        assert ids == expected["ids"]
        assert [row["tokens_forwarded"] for row in stats] == [row["tokens_forwarded"] for row in expected["stats"]]


def test_entropies_after_the_block_cannot_change_the_choice(golden, monkeypatch):
    """Why the block lookahead is exact for the argmax under `dual`: the positions after the block enter
    every candidate's H_next with the same entropies and the same count (each candidate commits k of the
    block's positions), so J(a) = -C(a) - (block part(a) + S) / n moves by the same S / n for all of them.
    Replacing those entropies by anything else leaves every decode as it was."""
    from lm_eval_infogain.sampling.loop import Decoder

    start_block = Decoder.start_block

    def scrambled_after_block(self, *args):
        logits = start_block(self, *args)
        self.unrefreshed_entropy = torch.rand_like(self.unrefreshed_entropy) * 100
        return logits

    monkeypatch.setattr(Decoder, "start_block", scrambled_after_block)
    adapter, prompts = float64_model("llada")
    for name in ("info_gain", "lookum"):
        ids, _ = generate(adapter, prompts, SamplerConfig(**SETTINGS[name], **SMALL, use_cache="dual"), SEEDS)
        assert ids == golden["llada"][f"{name}/dual"]["ids"], name


@pytest.fixture(scope="module")
def sudoku_model():
    """(adapter, 8 sudoku prompts) of tiny-llada-sudoku, float32: confident enough that most steps take the
    bypass (one candidate) while others look ahead, so batches mix the two."""
    from lm_eval_infogain.models.registry import load
    from lm_eval_infogain.tasks import sudoku

    adapter, tokenizer = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    return adapter, [tokenizer(sudoku.doc_to_text(doc), add_special_tokens=False)["input_ids"]
                     for doc in sudoku.load_dataset()["test"].select(range(8))]


SUDOKU_BLOCKS = dict(mode="info_gain", gen_length=24, steps=24, block_length=8, use_cache="prefix")


def test_block_lookahead_under_prefix_forwards_the_block_and_keeps_the_prompt_independent_of_its_batch(
        sudoku_model, monkeypatch):
    """Under `prefix` a lookahead's candidates forward the block only, a step with one candidate the rest of
    the canvas as before (writing its keys for the lookaheads after it, also from a batch where other rows
    look ahead: cache.RowsCache): the same number of forwards, fewer tokens forwarded, and each prompt
    decodes as it does alone."""
    from lm_eval_infogain.sampling import cache as cache_module

    written_rows = []
    write = cache_module.RowsCache.write
    monkeypatch.setattr(cache_module.RowsCache, "write",
                        lambda self, *args: written_rows.append(len(self.rows)) or write(self, *args))
    adapter, prompts = sudoku_model
    seeds = list(range(len(prompts)))
    rest, rest_stats = generate(adapter, prompts, SamplerConfig(**SUDOKU_BLOCKS), seeds)
    assert not written_rows
    block, block_stats = generate(adapter, prompts, SamplerConfig(**SUDOKU_BLOCKS, lookahead_window="block"), seeds)
    assert written_rows, "no batch mixed one-candidate rows with lookahead rows"
    assert [row["nfe"] for row in block_stats] == [row["nfe"] for row in rest_stats]
    assert sum(row["tokens_forwarded"] for row in block_stats) < sum(row["tokens_forwarded"] for row in rest_stats)
    assert all(adapter.spec.mask_id not in row for row in block)
    config = SamplerConfig(**SUDOKU_BLOCKS, lookahead_window="block")
    alone = [generate(adapter, [prompt], config, [seed]) for prompt, seed in zip(prompts, seeds)]
    assert [ids[0] for ids, _ in alone] == block
    counts = lambda rows: [(row["nfe"], row["tokens_forwarded"]) for row in rows]  # noqa: E731
    assert counts(stats[0] for _, stats in alone) == counts(block_stats)


@pytest.mark.parametrize("settings, message", [
    (dict(lookahead_window="window"), "lookahead_window='window' is invalid; allowed: rest | block"),
    (dict(mode="original", lookahead_window="block"),
     "lookahead_window='block' is invalid; allowed: rest for mode=original"),
    (dict(use_cache="none", lookahead_window="block"),
     "lookahead_window='block' is invalid; allowed: rest with use_cache=none"),
])
def test_bad_lookahead_window_is_one_clear_line(settings, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        SamplerConfig(**settings)


@pytest.mark.parametrize("runs, metric", [("tiny-llada-sudoku/sudoku_4x4", "acc"),
                                          ("oracle-sudoku/sudoku_4x4_many-b8-s12-noise0", "acc"),
                                          ("oracle-sudoku/sudoku_4x4_many-b8-s12-noise1", "acc"),
                                          ("oracle-hmm/oracle_hmm-b4-s4-noise0", "is_map"),
                                          ("oracle-hmm/oracle_hmm-b4-s4-noise1", "is_map")])
def test_the_readme_quotes_what_the_paired_comparison_prints(runs, metric):
    """The block lookahead's price, on tiny-llada-sudoku and on the exact models, as README.md and
    results/runs-lookahead state it, is what `bench/paired_runs.py` prints for the stored runs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    runs = f"results/runs-lookahead/{runs}"
    printed = subprocess.run([sys.executable, "bench/paired_runs.py", f"{runs}/rest", f"{runs}/block"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
    assert printed.strip() in (root / "results" / "runs-lookahead" / "README.md").read_text()
    lines = printed.splitlines()
    start = next(index for index, line in enumerate(lines) if line.split(",")[0].endswith(f" {metric}"))
    quoted = "\n".join(lines[start:start + 4])  # the metric's two runs, their difference and its interval
    numbers = re.findall(r": ([-+]?\d+\.\d+), mean NFE", quoted) + re.findall(r"second - first: ([-+]\d+\.\d+)", quoted)
    numbers.append(re.search(r"95% interval (\[[^]]+\])", quoted).group(1))
    readme_row = next(line for line in (root / "README.md").read_text().splitlines()
                      if line.startswith("| `lookahead_window`"))
    assert len(numbers) == 4 and all(number in readme_row for number in numbers), numbers


# --- H_next at the masked positions of lookahead rows only, the block's logits for the winner only ---------

@pytest.mark.parametrize("arch", ["llada", "dream", "sdar"])
@torch.no_grad()
def test_h_next_at_masked_positions_only_equals_the_whole_window_computation(arch):
    """H_next from the entropies of the still-masked positions alone (Decoder.next_entropy_mean) against the
    computation it replaced: fp32 logits of every position of the window, their entropies, the masked mean.
    Same hidden states, same fp32 entropy; only the head's matrix product runs over fewer rows, which may
    round differently: equal within 1e-6, in every cache mode and both lookahead windows."""
    from lm_eval_infogain.models.registry import load
    from lm_eval_infogain.sampling.info_gain import entropy
    from lm_eval_infogain.sampling.loop import Decoder, block_ranges, build_canvas

    adapter, tokenizer = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS[:2]]
    windows = ("rest", "block")
    for cache, window in [(cache, window) for cache in adapter.spec.cache_modes for window in windows
                          if cache != "none" or window == "rest"]:
        given = dict(mode="info_gain", use_cache=cache, lookahead_window=window, **SMALL)
        config = fit_to_model(SamplerConfig(**given), set(given), adapter.spec)
        canvas = build_canvas(prompts, config.gen_length, adapter.spec, "cpu")
        decoder = Decoder(adapter, config, canvas, [torch.Generator().manual_seed(0) for _ in prompts])
        block_start, block_end = block_ranges(canvas.prompt_length, config.gen_length, config.block_length,
                                              adapter.spec.attention_block_size)[0]
        decoder.start_block(block_start, block_end, torch.tensor([True, True]))
        rows = torch.tensor([0, 0, 0, 1, 1])
        ids = canvas.ids[rows].clone()  # [R, T]: each candidate commits two positions of the block
        for candidate, offsets in enumerate([(0, 1), (2, 5), (1, 7), (0, 3), (4, 6)]):
            ids[candidate, [block_start + offset for offset in offsets]] = 10 + candidate
        hidden = decoder.forward(ids, rows, decoder.lookahead_window(block_start, block_end),
                                 (block_start, decoder.logits_end(block_start, block_end)), share_cache=False)
        got = decoder.next_entropy_mean(ids, rows, hidden, block_start, torch.ones(len(rows), dtype=torch.bool))
        entropies = torch.cat([entropy(decoder.logits(hidden)), decoder.unrefreshed_entropy[rows]], dim=1)
        still_masked = ids[:, block_start:block_start + entropies.shape[1]] == adapter.spec.mask_id
        expected = (entropies * still_masked).sum(-1) / still_masked.sum(-1)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=f"{cache} {window}")
        assert expected.unique().numel() > 1  # the candidates' states differ


def test_steps_without_a_lookahead_compute_no_h_next(monkeypatch):
    """threshold=0: every step takes the bypass (one candidate per prompt), so no H_next is computed at all,
    in any cache mode; the decode is the same as with the lookahead impossible (position_temperature=0)."""
    from lm_eval_infogain.sampling.loop import Decoder

    calls = []
    next_entropy_mean = Decoder.next_entropy_mean
    monkeypatch.setattr(Decoder, "next_entropy_mean", lambda self, *args: calls.append(1)
                        or next_entropy_mean(self, *args))
    adapter, prompts = float64_model("llada")
    for cache in ("none", "prefix", "dual"):
        bypass, _ = generate(adapter, prompts, SamplerConfig(threshold=0.0, use_cache=cache, **SMALL), SEEDS)
        assert not calls, cache
        no_lookahead, _ = generate(adapter, prompts, SamplerConfig(position_temperature=0, threshold=1.0,
                                                                   use_cache=cache, **SMALL), SEEDS)
        assert not calls and bypass == no_lookahead, cache
