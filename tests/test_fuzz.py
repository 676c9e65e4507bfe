"""Property tests of the decoding loop: random prompts, lengths, blocks, steps, batches, modes, cache
modes and temperatures on the bundled tiny models of each attention kind (bidirectional, shifted,
block-causal). Whatever is drawn, a decode ends with every position filled, the prompts untouched and
the forward count within what the mode allows (ALGORITHM.md):

- fixed-step modes: one forward at each block's start, then one per step but the last (a lookahead
  forwards all its candidates in that one call), so exactly min(steps per block, block width) per
  block; fewer only when early stop has filled the rest with EOS;
- dynamic modes (fast_dllm, eb_sampler): at least one token per step, so at most one forward per
  position of a block, and at least one per block still holding masks.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling import loop
from lm_eval_infogain.sampling.config import SamplerConfig, fit_to_model

ARCHS = ["llada", "dream", "sdar"]  # bidirectional, shifted logits, block-causal
FIXED_MODES = ["original", "random", "entropy", "margin", "info_gain", "lookum", "pc_sampler"]
DYNAMIC_MODES = ["fast_dllm", "fast_dllm_factor", "eb_sampler"]
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def models():
    return {arch: load(f"tiny-random-{arch}", dtype="float32", device="cpu")[0] for arch in ARCHS}


def mode_settings(draw, mode: str, pc_baseline: str) -> dict:
    if mode in ("info_gain", "lookum"):
        return dict(mode="info_gain", variant=mode, candidate_number=draw(st.integers(1, 4)),
                    position_temperature=draw(st.sampled_from([0.0, 0.2, 1.0])),
                    threshold=draw(st.sampled_from([0.05, 0.5, 1.0])))
    if mode == "fast_dllm":
        return dict(mode=mode, threshold=draw(st.sampled_from([0.05, 0.5, 0.99])))
    if mode == "fast_dllm_factor":
        return dict(mode="fast_dllm", factor=draw(st.sampled_from([0.5, 1.0, 4.0])))
    if mode == "eb_sampler":
        return dict(mode=mode, gamma=draw(st.sampled_from([0.001, 0.1, 10.0])))
    if mode == "pc_sampler":
        return dict(mode=mode, pc_baseline=pc_baseline)
    return dict(mode=mode)


@st.composite
def cases(draw, pc_baseline: str):
    """(arch, mode, SamplerConfig settings, generation length of the run, prompts)."""
    arch = draw(st.sampled_from(ARCHS))
    mode = draw(st.sampled_from(FIXED_MODES + DYNAMIC_MODES))
    block_length = draw(st.sampled_from([4, 8, 12]))
    num_blocks = draw(st.integers(1, 4))
    steps_per_block = draw(st.integers(1, block_length))
    gen_length = block_length * num_blocks
    config = dict(gen_length=gen_length, block_length=block_length, steps=steps_per_block * num_blocks,
                  temperature=draw(st.sampled_from([0.0, 1.0])), early_stop=draw(st.booleans()),
                  use_cache=draw(st.sampled_from(["none", "prefix", "dual"] if arch != "sdar" else ["none", "prefix"])),
                  **mode_settings(draw, mode, pc_baseline))
    run_length = draw(st.integers(1, gen_length))  # a task's max_gen_toks may cut the last block short
    token = st.integers(3, 400)  # ordinary tokens: below the vocabularies, above mask/EOS/PAD ids
    prompts = draw(st.lists(st.lists(token, min_size=1, max_size=20), min_size=1, max_size=4))
    return arch, mode, config, run_length, prompts


def block_widths(prompt_length: int, gen_length: int, block_length: int, attention_block: int | None) -> list[int]:
    """Widths of the semi-autoregressive blocks a prompt's generation is cut into (ALGORITHM.md), with a
    block-causal model's first block ending where the prompt's attention block ends."""
    first = 0
    if attention_block and prompt_length % attention_block:
        first = min(gen_length, attention_block - prompt_length % attention_block)
    rest = gen_length - first
    return ([first] if first else []) + [min(block_length, rest - start) for start in range(0, rest, block_length)]


def test_block_widths_oracle():
    assert block_widths(5, 10, 4, None) == [4, 4, 2]
    assert block_widths(5, 10, 4, 4) == [3, 4, 3]
    assert block_widths(8, 8, 8, 4) == [8]


BUILD_CANVAS = loop.build_canvas


def test_any_decode_terminates_fills_everything_and_keeps_to_its_forward_budget(models, pc_baseline_file):
    @FUZZ
    @given(case=cases(pc_baseline_file))
    def check(case):
        arch, mode, sampler_settings, run_length, prompts = case
        adapter = models[arch]
        spec = adapter.spec
        config = fit_to_model(SamplerConfig(**sampler_settings), set(sampler_settings), spec)
        canvases = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "build_canvas", lambda *args: canvases.append(BUILD_CANVAS(*args)) or canvases[-1])
            generated, stats = loop.generate(adapter, prompts, config, list(range(len(prompts))), run_length)
        for canvas in canvases:  # each canvas row still holds one of the prompts, left-padded
            real = canvas.key_mask[:, :canvas.prompt_length]
            rows = [row[keep].tolist() for row, keep in zip(canvas.ids[:, :canvas.prompt_length], real)]
            assert all(row in prompts for row in rows)
            assert (canvas.ids[:, :canvas.prompt_length][~real] == spec.pad_id).all()
        for prompt, row, row_stats in zip(prompts, generated, stats):
            assert len(row) == run_length and spec.mask_id not in row
            widths = block_widths(len(prompt), run_length, config.block_length, spec.attention_block_size)
            check_forward_count(mode, config, spec, widths, row, row_stats, len(prompt) + run_length)

    check()


def check_forward_count(mode, config, spec, widths, row, row_stats, canvas_length) -> None:
    nfe = row_stats["nfe"]
    stopped_early = config.early_stop and spec.eos_id in row
    if mode in DYNAMIC_MODES:
        assert (1 if stopped_early else len(widths)) <= nfe <= sum(widths)
    else:
        budget = sum(min(config.steps_per_block, width) for width in widths)
        assert nfe <= budget if stopped_early else nfe == budget
    # a forward pushes at most the whole canvas once per candidate (padding is not counted)
    candidates = config.candidate_number if config.mode == "info_gain" else 1
    assert 0 < row_stats["tokens_forwarded"] <= nfe * candidates * canvas_length
    assert row_stats["cumulative_entropy"] >= 0
