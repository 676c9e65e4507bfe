"""The decoding loop: schedule, cache exactness, batching invariance, invariants of every output."""

import pytest
import torch

from lm_eval_infogain.models.base import ModelAdapter
from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import block_ranges, build_canvas, generate, linear_schedule

MODES = ["original", "random", "entropy", "margin", "info_gain", "lookum", "fast_dllm", "fast_dllm_factor",
         "eb_sampler", "pc_sampler"]
DYNAMIC = {"fast_dllm", "fast_dllm_factor", "eb_sampler"}
CACHES = ["none", "prefix", "dual"]
SMALL = dict(gen_length=32, steps=16, block_length=16)


def mode_settings(mode: str, pc_baseline: str) -> dict:
    """SamplerConfig arguments of a mode name of this test file (fast_dllm_factor = fast_dllm's factor rule)."""
    if mode == "pc_sampler":
        return dict(mode=mode, pc_baseline=pc_baseline)
    if mode == "fast_dllm_factor":
        return dict(mode="fast_dllm", factor=1.0)
    if mode == "fast_dllm":
        return dict(mode=mode, threshold=0.3)
    if mode == "eb_sampler":
        return dict(mode=mode, gamma=1.0)
    return dict(mode=mode)


def test_linear_schedule_spreads_remainder_over_first_steps():
    assert linear_schedule(10, 4) == [3, 3, 2, 2]
    assert linear_schedule(32, 32) == [1] * 32
    assert linear_schedule(7, 7) == [1] * 7
    for masked in range(1, 40):
        for steps in range(1, masked + 1):
            counts = linear_schedule(masked, steps)
            assert sum(counts) == masked and max(counts) - min(counts) <= 1 and min(counts) >= 1


def test_block_ranges_cover_generation_with_short_last_block():
    assert block_ranges(0, 64, 32) == [(0, 32), (32, 64)]
    assert block_ranges(5, 40, 32) == [(5, 37), (37, 45)]


def test_block_ranges_follow_a_block_causal_models_blocks():
    # the prompt ends inside an attention block of 4: the first block only fills that block
    assert block_ranges(5, 16, 8, attention_block_size=4) == [(5, 8), (8, 16), (16, 21)]
    assert block_ranges(8, 16, 8, attention_block_size=4) == [(8, 16), (16, 24)]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("mode", ["original", "info_gain"])
def test_cache_agrees_with_no_cache_on_most_tokens(tiny, prompts, mode, cache):
    # Caching is an approximation for bidirectional models. Token agreement with `none` measured on
    # the bundled 2-layer random model with these settings: prefix 0.73 (original) / 0.77 (info_gain),
    # dual 0.29 / 0.61 (its stale suffix pulls this chaotic random model towards one token; the
    # one-layer test below shows the plumbing itself is exact).
    adapter, _ = tiny
    settings = dict(mode=mode, gen_length=64, steps=32, block_length=16)
    seeds = list(range(len(prompts)))
    exact, _ = generate(adapter, prompts, SamplerConfig(use_cache="none", **settings), seeds)
    cached, _ = generate(adapter, prompts, SamplerConfig(use_cache=cache, **settings), seeds)
    agree = sum(a == b for row_a, row_b in zip(exact, cached) for a, b in zip(row_a, row_b))
    floor = {"prefix": 0.6, "dual": 0.2}[cache]
    assert agree / sum(len(row) for row in exact) >= floor


@pytest.mark.parametrize("mode", MODES)
def test_caches_are_exact_for_a_one_layer_model(tiny, prompts, mode, pc_baseline_file):
    # With one layer a position's keys/values depend only on its token and position, so keys cached
    # from an older canvas are still right: every cache mode must reproduce `none` token for token.
    # (Info-Gain with `dual` is left out: its H_next takes the positions after the block as the
    # block-start forward saw them, where `none` recomputes them for every candidate.)
    adapter, _ = tiny
    config = LLaDAConfig(**{**adapter.model.config.to_dict(), "n_layers": 1})
    torch.manual_seed(0)
    model = LLaDAModelLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=0.1)
    one_layer = ModelAdapter(model, adapter.spec)
    settings = dict(gen_length=64, steps=32, block_length=16, **mode_settings(mode, pc_baseline_file))
    outputs = {cache: generate(one_layer, prompts, SamplerConfig(use_cache=cache, **settings), [0, 1, 2, 3])[0]
               for cache in CACHES}
    assert outputs["prefix"] == outputs["none"]
    if mode not in ("info_gain", "lookum"):
        assert outputs["dual"] == outputs["none"]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_one_by_one(tiny, prompts, mode, cache, pc_baseline_file):
    adapter, _ = tiny
    config = SamplerConfig(use_cache=cache, **mode_settings(mode, pc_baseline_file), **SMALL)
    seeds = [11, 22, 33, 44]
    batched, batched_stats = generate(adapter, prompts, config, seeds)
    for prompt, seed, row, row_stats in zip(prompts, seeds, batched, batched_stats):
        single, single_stats = generate(adapter, [prompt], config, [seed])
        assert single[0] == row
        assert single_stats[0]["nfe"] == row_stats["nfe"]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", MODES)
def test_output_is_complete_and_repeatable(tiny, prompts, mode, temperature, cache, pc_baseline_file):
    adapter, _ = tiny
    settings = mode_settings(mode, pc_baseline_file)
    config = SamplerConfig(temperature=temperature, use_cache=cache, **settings, **SMALL)
    generated, stats = generate(adapter, prompts, config, [1, 2, 3, 4])
    for row, row_stats in zip(generated, stats):
        assert len(row) == 32 and adapter.spec.mask_id not in row
        if mode in DYNAMIC:  # at least one token per step, at most a block's worth of steps per block
            assert 2 <= row_stats["nfe"] <= 32
        elif adapter.spec.eos_id in row:  # early stop: no forward once EOS filled the rest
            assert row_stats["nfe"] <= config.steps
        else:
            assert row_stats["nfe"] == config.steps  # one forward per step, lookahead included
        assert row_stats["cumulative_entropy"] > 0
    assert generate(adapter, prompts, config, [1, 2, 3, 4])[0] == generated


def test_prompt_is_never_changed(tiny, prompts, monkeypatch):
    from lm_eval_infogain.sampling import loop

    adapter, _ = tiny
    canvases = []
    original_build = loop.build_canvas
    monkeypatch.setattr(loop, "build_canvas", lambda *a: canvases.append(original_build(*a)) or canvases[-1])
    before = original_build(prompts, 32, adapter.spec, "cpu").ids[:, :-32].clone()
    generate(adapter, prompts, SamplerConfig(mode="info_gain", use_cache="dual", **SMALL), [5, 6, 7, 8])
    assert torch.equal(canvases[0].ids[:, :-32], before)


def test_seed_decides_random_order_and_repeats_exactly(tiny, prompts):
    adapter, _ = tiny
    config = SamplerConfig(mode="random", **SMALL)
    first, _ = generate(adapter, prompts, config, [1, 2, 3, 4])
    again, _ = generate(adapter, prompts, config, [1, 2, 3, 4])
    other, _ = generate(adapter, prompts, config, [9, 8, 7, 6])
    assert first == again and first != other


def test_shorter_generation_keeps_block_length(tiny, prompts):
    adapter, _ = tiny
    generated, stats = generate(adapter, prompts[:1], SamplerConfig(mode="original", **SMALL), [0], gen_length=20)
    assert len(generated[0]) == 20 and adapter.spec.mask_id not in generated[0]
    assert stats[0]["nfe"] == 8 + 4  # a full block of 8 steps, then min(8, 4) steps for the 4-token block


class EosLovingAdapter:
    """The bundled model with its EOS logit raised by 50, for every prompt or only for prompts of
    `length` tokens (told apart by their number of attendable keys): those want to end everywhere."""

    def __init__(self, adapter, length=None, generation_length=None):
        self.adapter, self.spec, self.device, self.dtype = adapter, adapter.spec, adapter.device, adapter.dtype
        self.length, self.generation_length = length, generation_length

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        logits = self.adapter.forward(input_ids, positions, key_mask, cache, window_start, logits_start, logits_end)
        loving = torch.ones(len(logits), dtype=torch.bool) if self.length is None else (
            key_mask.sum(-1) - self.generation_length == self.length)
        logits[loving, :, self.spec.eos_id] += 50
        return logits

    def forward_hidden(self, *args):  # the sampler's entry: this double's logits stand in for hidden states
        return self.forward(*args)

    def head(self, logits):
        return logits

    def output_head(self):
        return None  # its logits are not the bundled model's head's

    def new_cache(self, batch, length):
        return self.adapter.new_cache(batch, length)


@pytest.mark.parametrize("mode", ["original", "info_gain"])
def test_eos_penalty_applies_to_every_mode(tiny, prompts, mode):
    eos_loving = EosLovingAdapter(tiny[0])
    eos_id = eos_loving.spec.eos_id
    plain, _ = generate(eos_loving, prompts, SamplerConfig(mode=mode, **SMALL), [0, 1, 2, 3])
    penalised, _ = generate(eos_loving, prompts, SamplerConfig(mode=mode, eos_penalty=100, **SMALL), [0, 1, 2, 3])
    assert all(token == eos_id for row in plain for token in row)
    assert not any(token == eos_id for row in penalised for token in row)


class MaskLovingAdapter(EosLovingAdapter):
    """The bundled model with the mask token's logit raised by 50: its top prediction everywhere."""

    def forward(self, *args):
        logits = self.adapter.forward(*args)
        logits[..., self.spec.mask_id] += 50
        return logits


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", MODES)
def test_the_mask_token_is_never_committed(tiny, prompts, mode, temperature, pc_baseline_file):
    config = SamplerConfig(temperature=temperature, **mode_settings(mode, pc_baseline_file), **SMALL)
    generated, _ = generate(MaskLovingAdapter(tiny[0]), prompts, config, [0, 1, 2, 3])
    assert all(len(row) == SMALL["gen_length"] and tiny[0].spec.mask_id not in row for row in generated)


@pytest.mark.parametrize("mode", ["original", "info_gain", "fast_dllm"])
def test_early_stop_fills_after_eos_and_stops_forwarding(tiny, prompts, mode):
    eos_loving = EosLovingAdapter(tiny[0])
    stopped, stats = generate(eos_loving, prompts[:1], SamplerConfig(mode=mode, **SMALL), [0])
    assert all(token == eos_loving.spec.eos_id for token in stopped[0])
    assert stats[0]["nfe"] == 1  # the first forward commits an EOS; everything after it is filled
    _, full_stats = generate(eos_loving, prompts[:1], SamplerConfig(mode=mode, early_stop=False, **SMALL), [0])
    assert full_stats[0]["nfe"] > 1
    if mode == "info_gain":  # EOS is near certain everywhere: steps commit through the bypass
        assert 0 < full_stats[0]["bypass_tokens"] < SMALL["gen_length"]


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("mode", ["original", "info_gain"])
def test_a_prompt_that_stops_early_does_not_change_its_batch(tiny, prompts, mode, cache):
    eos_loving = EosLovingAdapter(tiny[0], length=len(prompts[1]), generation_length=SMALL["gen_length"])
    config = SamplerConfig(mode=mode, use_cache=cache, **SMALL)
    batched, batched_stats = generate(eos_loving, prompts, config, [1, 2, 3, 4])
    assert batched_stats[1]["nfe"] == 1 and batched_stats[0]["nfe"] == config.steps
    for index, (prompt, seed) in enumerate(zip(prompts, [1, 2, 3, 4])):
        single, single_stats = generate(eos_loving, [prompt], config, [seed])
        assert single[0] == batched[index]
        assert single_stats[0]["nfe"] == batched_stats[index]["nfe"]
        assert single_stats[0]["tokens_forwarded"] == batched_stats[index]["tokens_forwarded"]


class MemoryStarvedAdapter:
    """The bundled model, but a forward over more than `limit` sequences runs out of memory."""

    def __init__(self, adapter, limit):
        self.adapter, self.spec, self.device, self.dtype = adapter, adapter.spec, adapter.device, adapter.dtype
        self.limit = limit

    def forward_hidden(self, input_ids, *args):
        if len(input_ids) > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {len(input_ids)} sequences")
        return self.adapter.forward_hidden(input_ids, *args)

    def head(self, hidden):
        return self.adapter.head(hidden)

    def output_head(self):
        return self.adapter.output_head()

    def new_cache(self, batch, length):
        return self.adapter.new_cache(batch, length)


@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("mode", ["original", "info_gain"])
def test_out_of_memory_retries_in_smaller_chunks(tiny, prompts, mode, cache, caplog):
    config = SamplerConfig(mode=mode, use_cache=cache, threshold=0.99, **SMALL)
    expected, expected_stats = generate(tiny[0], prompts, config, [1, 2, 3, 4])
    starved, starved_stats = generate(MemoryStarvedAdapter(tiny[0], limit=3), prompts, config, [1, 2, 3, 4])
    assert starved == expected
    assert [s["nfe"] for s in starved_stats] == [s["nfe"] for s in expected_stats]
    assert "out of memory forwarding" in caplog.text


def test_out_of_memory_even_one_at_a_time_is_raised(tiny, prompts):
    with pytest.raises(torch.OutOfMemoryError):
        generate(MemoryStarvedAdapter(tiny[0], limit=0), prompts[:1], SamplerConfig(**SMALL), [0])


class CacheStarvedAdapter(MemoryStarvedAdapter):
    """The bundled model, but a cache for more than `limit` sequences does not fit."""

    def forward_hidden(self, input_ids, *args):
        return self.adapter.forward_hidden(input_ids, *args)

    def new_cache(self, batch, length):
        if batch > self.limit:
            raise torch.OutOfMemoryError(f"simulated: a cache of {batch} sequences")
        return self.adapter.new_cache(batch, length)


def same_outputs(actual, expected) -> None:
    (ids, stats), (expected_ids, expected_stats) = actual, expected
    assert ids == expected_ids
    for key in ("nfe", "tokens_forwarded", "bypass_tokens"):
        assert [row[key] for row in stats] == [row[key] for row in expected_stats]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", ["original", "random", "info_gain"])
def test_out_of_memory_mid_batch_splits_it_down_to_one_prompt(tiny, prompts, mode, temperature, monkeypatch, caplog):
    """An out-of-memory outside the forward (here the step's softmax), three steps into a batch of more
    than one prompt: the batch is split into halves until single prompts, which fit, with the same
    outputs as the whole batch (each half restarts from its seeds)."""
    from lm_eval_infogain.sampling import loop

    adapter, seeds = tiny[0], [1, 2, 3, 4]
    config = SamplerConfig(mode=mode, temperature=temperature, threshold=0.99, **SMALL)
    expected = generate(adapter, prompts, config, seeds)
    step_context = loop.Decoder.step_context

    def starved(self, logits, *args):
        if len(logits) > 1 and int(self.stats.nfe.max()) >= 3:
            raise torch.OutOfMemoryError("simulated: the step of a batch")
        return step_context(self, logits, *args)

    monkeypatch.setattr(loop.Decoder, "step_context", starved)
    same_outputs(generate(adapter, prompts, config, seeds), expected)
    assert "batch of 4 prompts; retrying as 2 and 2" in caplog.text
    assert "batch of 2 prompts; retrying as 1 and 1" in caplog.text


def test_out_of_memory_allocating_the_cache_splits_the_batch(tiny, prompts, caplog):
    config = SamplerConfig(mode="info_gain", use_cache="prefix", **SMALL)
    expected = generate(tiny[0], prompts, config, [1, 2, 3, 4])
    same_outputs(generate(CacheStarvedAdapter(tiny[0], limit=2), prompts, config, [1, 2, 3, 4]), expected)
    assert "batch of 4 prompts; retrying as 2 and 2" in caplog.text
    assert "batch of 2 prompts" not in caplog.text


# ---------------------------------------------------------------- every architecture

OTHER_ARCHS = ["mmada", "dream", "sdar", "trado"]  # LLaDA is the `tiny` fixture of the tests above


@pytest.fixture(scope="module")
def architectures():
    """The tiny models in float64: a batch's padding changes fp32 logits by ~1e-6 (other GEMM shapes),
    enough to flip a near-tie between two candidates now and then; in float64 the loop's exactness
    (batched == one by one) is what is tested, not the luck of rounding."""
    from lm_eval_infogain.models.registry import load

    models = {}
    for arch in OTHER_ARCHS:
        adapter, tokenizer = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
        adapter = ModelAdapter(adapter.model.double(), adapter.spec)
        texts = ["Solve: 1 2 3 4", "Write a story about a lighthouse.", "0123", "The answer is: 44-15=29"]
        models[arch] = adapter, [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    return models


def fitted(adapter, **settings) -> SamplerConfig:
    from lm_eval_infogain.sampling.config import fit_to_model

    return fit_to_model(SamplerConfig(**settings), set(settings), adapter.spec)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_every_mode_and_cache_on_every_architecture(architectures, arch, mode, pc_baseline_file, monkeypatch):
    """Completes with no mask left and the prompt intact, in every cache mode the model supports."""
    from lm_eval_infogain.sampling import loop

    adapter, prompts = architectures[arch]
    canvases = []
    monkeypatch.setattr(loop, "build_canvas", lambda *a: canvases.append(build_canvas(*a)) or canvases[-1])
    for cache in adapter.spec.cache_modes:
        config = fitted(adapter, use_cache=cache, **mode_settings(mode, pc_baseline_file), **SMALL)
        generated, _ = generate(adapter, prompts, config, [11, 22, 33, 44])
        for prompt, row in zip(prompts, generated):
            assert len(row) == SMALL["gen_length"] and adapter.spec.mask_id not in row
    for canvas in canvases:  # after decoding, every row still holds one of the prompts before its generation
        prompt_part, real = canvas.ids[:, :canvas.prompt_length], canvas.key_mask[:, :canvas.prompt_length]
        assert all(row[keep].tolist() in prompts for row, keep in zip(prompt_part, real))
        assert (prompt_part[~real] == adapter.spec.pad_id).all()


@pytest.mark.parametrize("mode", ["original", "random", "info_gain", "fast_dllm"])
@pytest.mark.parametrize("arch", OTHER_ARCHS)
def test_batched_equals_one_by_one_on_every_architecture(architectures, arch, mode):
    # Block-causal models included: their canvases group prompts by length modulo the block size.
    adapter, prompts = architectures[arch]
    for cache in adapter.spec.cache_modes:
        config = fitted(adapter, use_cache=cache, **mode_settings(mode, ""), **SMALL)
        batched, batched_stats = generate(adapter, prompts, config, [11, 22, 33, 44])
        for prompt, seed, row, row_stats in zip(prompts, [11, 22, 33, 44], batched, batched_stats):
            single, single_stats = generate(adapter, [prompt], config, [seed])
            assert single[0] == row and single_stats[0]["nfe"] == row_stats["nfe"]


@pytest.mark.parametrize("attention_block", ["decoding", "model"])
@pytest.mark.parametrize("mode", ["original", "random", "info_gain", "fast_dllm", "eb_sampler", "pc_sampler"])
def test_block_causal_prefix_cache_is_exact(architectures, mode, pc_baseline_file, attention_block):
    # A finished block's keys/values depend only on it and earlier blocks: caching them changes nothing,
    # whether the attention blocks are the decoding blocks (8 here) or the model's own (4).
    from lm_eval_infogain.models.base import with_attention_block

    adapter, prompts = architectures["sdar"]
    adapter, _ = with_attention_block(adapter, attention_block, block_length=8)
    settings = dict(gen_length=32, steps=32, block_length=8, **mode_settings(mode, pc_baseline_file))
    outputs = {cache: generate(adapter, prompts, fitted(adapter, use_cache=cache, **settings), [1, 2, 3, 4])
               for cache in ("none", "prefix")}
    assert outputs["prefix"][0] == outputs["none"][0]
    assert [s["nfe"] for s in outputs["prefix"][1]] == [s["nfe"] for s in outputs["none"][1]]
    # ... while forwarding far fewer tokens: the committed prefix is not recomputed at every step
    assert sum(s["tokens_forwarded"] for s in outputs["prefix"][1]) < \
        sum(s["tokens_forwarded"] for s in outputs["none"][1]) / 2


@pytest.mark.parametrize("mode", ["original", "info_gain", "fast_dllm"])
@pytest.mark.parametrize("arch", ["mmada", "dream"])
def test_caches_are_exact_for_one_layer_on_other_bidirectional_models(architectures, arch, mode):
    # As for LLaDA above; for Dream this also checks that cached windows start one position early
    # for its shifted logits.
    adapter, prompts = architectures[arch]
    model_cls = type(adapter.model)
    config = model_cls.config_class(**{**adapter.model.config.to_dict(), "n_layers": 1, "num_hidden_layers": 1})
    torch.manual_seed(0)
    model = model_cls(config).eval().double()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1 or name.endswith(".bias"):
                parameter.normal_(std=0.1)
    one_layer = ModelAdapter(model, adapter.spec)
    settings = dict(gen_length=64, steps=32, block_length=16, **mode_settings(mode, ""))
    outputs = {cache: generate(one_layer, prompts, SamplerConfig(use_cache=cache, **settings), [0, 1, 2, 3])[0]
               for cache in CACHES}
    assert outputs["prefix"] == outputs["none"]
    if mode != "info_gain":
        assert outputs["dual"] == outputs["none"]


# ---------------------------------------------------------------- dynamic rules, as their references

SUDOKU_GEN = 24  # tiny-llada-sudoku's generation_config.json: gen 24 in one block, no cache


@pytest.fixture(scope="module")
def sudoku_model():
    """The trained tiny-llada-sudoku and the token ids of the first sudoku_4x4 test prompts."""
    from lm_eval_infogain.models.registry import load
    from lm_eval_infogain.tasks import sudoku

    adapter, tokenizer = load("tiny-llada-sudoku", dtype="float32", device="cpu")
    docs = sudoku.load_dataset()["test"].select(range(6))
    return adapter, [tokenizer(sudoku.doc_to_text(doc), add_special_tokens=False)["input_ids"] for doc in docs]


def threshold_rule(threshold):
    """Fast-dLLM's threshold rule: every masked position with confidence >= threshold, at least the top one."""
    def rule(confidence: dict[int, float], entropy: dict[int, float]) -> set[int]:
        best = max(confidence, key=confidence.get)
        return {best} | {position for position, value in confidence.items() if value >= threshold}
    return rule


def factor_rule(factor):
    """Fast-dLLM's factor rule: the n most confident, n the largest with c(j) >= 1 - factor/(j+1) for j <= n."""
    def rule(confidence: dict[int, float], entropy: dict[int, float]) -> set[int]:
        ranked = sorted(confidence, key=confidence.get, reverse=True)
        n = 1
        while n < len(ranked) and confidence[ranked[n]] >= 1 - factor / (n + 2):  # ranked[n] is c(n + 1)
            n += 1
        return set(ranked[:n])
    return rule


def entropy_budget_rule(gamma):
    """EB-sampler: by ascending entropy, the longest prefix whose entropy sum minus its largest <= gamma."""
    def rule(confidence: dict[int, float], entropy: dict[int, float]) -> set[int]:
        ranked = sorted(entropy, key=entropy.get)
        n = 1
        while n < len(ranked) and sum(entropy[p] for p in ranked[:n + 1]) - entropy[ranked[n]] <= gamma:
            n += 1
        return set(ranked[:n])
    return rule


@torch.inference_mode()
def decode_by_hand(adapter, prompt: list[int], rule) -> tuple[list[int], int]:
    """A plain loop of a dynamic rule over one block covering the whole generation, no cache, no early
    stop: a full forward each step, then commit the positions the rule picks. Returns (tokens, forwards)."""
    mask_id = adapter.spec.mask_id
    ids = torch.tensor([prompt + [mask_id] * SUDOKU_GEN])  # [1, T]
    positions, key_mask = torch.arange(ids.shape[1])[None], torch.ones_like(ids, dtype=torch.bool)  # [1, T]
    forwards = 0
    while (ids == mask_id).any():
        logits = adapter.forward(ids, positions, key_mask, None, 0, len(prompt))[0].double()  # [G, V]
        forwards += 1
        probs = logits.softmax(-1)  # [G, V]
        confidence, entropy, tokens = {}, {}, {}
        for offset in range(SUDOKU_GEN):
            if ids[0, len(prompt) + offset] == mask_id:
                candidates = probs[offset].clone()
                candidates[mask_id] = -1  # the mask token is never a prediction
                tokens[offset] = int(candidates.argmax())
                confidence[offset] = float(probs[offset, tokens[offset]])
                entropy[offset] = float(-(probs[offset] * probs[offset].clamp(min=1e-300).log()).sum())
        for offset in rule(confidence, entropy):
            ids[0, len(prompt) + offset] = tokens[offset]
    return ids[0, len(prompt):].tolist(), forwards


@pytest.mark.parametrize("settings,rule", [
    (dict(mode="fast_dllm", threshold=0.9), threshold_rule(0.9)),
    (dict(mode="fast_dllm", factor=1.0), factor_rule(1.0)),
    (dict(mode="eb_sampler", gamma=0.01), entropy_budget_rule(0.01)),
], ids=["threshold", "factor", "eb_sampler"])
def test_dynamic_rules_parallelise_exactly_as_their_rule_applied_by_hand(sudoku_model, settings, rule):
    adapter, prompts = sudoku_model
    config = SamplerConfig(gen_length=SUDOKU_GEN, steps=SUDOKU_GEN, block_length=SUDOKU_GEN, use_cache="none",
                           early_stop=False, **settings)
    generated, stats = generate(adapter, prompts, config, list(range(len(prompts))))
    for prompt, row, row_stats in zip(prompts, generated, stats):
        tokens, forwards = decode_by_hand(adapter, prompt, rule)
        assert (row, row_stats["nfe"]) == (tokens, forwards)
    # several tokens per step: far fewer forwards than tokens
    assert sum(row["nfe"] for row in stats) < 0.75 * SUDOKU_GEN * len(prompts)


# ---------------------------------------------------------------- penalties and token filters


def first_logits(adapter, prompt, **settings) -> torch.Tensor:
    """The logits [16, V] of the first block that the loop's first forward hands to the strategies."""
    from lm_eval_infogain.sampling.loop import Decoder

    config = SamplerConfig(mode="original", use_cache="none", **SMALL, **settings)
    canvas = build_canvas([prompt], config.gen_length, adapter.spec, "cpu")
    decoder = Decoder(adapter, config, canvas, [torch.Generator().manual_seed(0)])
    return decoder.start_block(canvas.prompt_length, canvas.prompt_length + 16, torch.tensor([True]))[0]


class SpecAdapter(EosLovingAdapter):
    """The bundled model under another spec (e.g. a PAD id of its own)."""

    def __init__(self, adapter, **spec_changes):
        import dataclasses

        super().__init__(adapter)
        self.spec = dataclasses.replace(adapter.spec, **spec_changes)

    def forward(self, *args):
        return self.adapter.forward(*args)


def test_eos_and_pad_penalties_add_up_when_pad_is_eos(tiny, prompts):
    adapter = tiny[0]
    assert adapter.spec.pad_id == adapter.spec.eos_id  # as on LLaDA-8B-Instruct
    plain = first_logits(adapter, prompts[0])
    penalised = first_logits(adapter, prompts[0], eos_penalty=4.0, pad_penalty=4.0)
    torch.testing.assert_close(plain[:, adapter.spec.eos_id] - penalised[:, adapter.spec.eos_id],
                               torch.full((16,), 8.0))
    # with a PAD id of its own, each loses its own penalty
    separate = SpecAdapter(adapter, pad_id=3)
    plain = first_logits(separate, prompts[0])
    penalised = first_logits(separate, prompts[0], eos_penalty=4.0, pad_penalty=3.0)
    torch.testing.assert_close(plain[:, 1] - penalised[:, 1], torch.full((16,), 4.0))
    torch.testing.assert_close(plain[:, 3] - penalised[:, 3], torch.full((16,), 3.0))
    untouched = [token for token in range(plain.shape[1]) if token not in (1, 3)]
    torch.testing.assert_close(plain[:, untouched], penalised[:, untouched])


def test_top_k_and_top_p_filter_what_the_strategies_see(tiny, prompts):
    """With filter_scope=all (with the default, draw, they filter the drawn tokens alone: test_filter_scope.py)."""
    adapter = tiny[0]
    plain = first_logits(adapter, prompts[0])  # [G, V]
    assert torch.equal(first_logits(adapter, prompts[0], top_k=3), plain)  # filter_scope=draw
    top_3 = first_logits(adapter, prompts[0], top_k=3, filter_scope="all")
    assert ((top_3 > float("-inf")).sum(-1) == 3).all()
    kept = top_3 > float("-inf")
    torch.testing.assert_close(top_3[kept], plain[kept])
    assert torch.equal(kept, plain >= plain.topk(3).values[:, -1:])
    nucleus = first_logits(adapter, prompts[0], top_p=0.5, filter_scope="all")
    probs = plain.softmax(-1)  # [G, V]
    for position in range(16):  # the fewest most likely tokens whose probability exceeds 0.5
        ranked = probs[position].argsort(descending=True).tolist()
        size = next(n for n in range(1, len(ranked) + 1) if probs[position, ranked[:n]].sum() > 0.5)
        assert set((nucleus[position] > float("-inf")).nonzero().flatten().tolist()) == set(ranked[:size])


def test_top_k_one_makes_every_position_certain(tiny, prompts):
    # the renormalised distribution of one kept token has probability 1: fast_dllm commits a block per step
    adapter = tiny[0]
    for scope in ("all", "draw"):  # the drawn token's confidence is 1 either way; its entropy only with all
        config = SamplerConfig(mode="fast_dllm", threshold=0.99, top_k=1, filter_scope=scope, **SMALL)
        generated, stats = generate(adapter, prompts, config, [1, 2, 3, 4])
        assert [row["nfe"] for row in stats] == [2, 2, 2, 2]  # one forward per block of 16
        assert all((row["cumulative_entropy"] == 0) == (scope == "all") for row in stats)
        assert all(adapter.spec.mask_id not in row for row in generated)


@pytest.mark.parametrize("settings,message", [
    (dict(top_k=0), "top_k=0 is invalid; allowed: an integer >= 1"),
    (dict(top_k=2.5), "top_k=2.5 is invalid"),
    (dict(top_p=0), "top_p=0 is invalid; allowed: a probability in (0, 1]"),
    (dict(top_p=1.5), "top_p=1.5 is invalid"),
])
def test_bad_top_k_or_top_p_is_one_clear_line(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        SamplerConfig(**settings)


def test_top_k_and_top_p_from_model_args_and_gen_kwargs_reach_the_sampler(monkeypatch):
    from lm_eval.api.instance import Instance

    from lm_eval_infogain import harness

    lm = harness.MDMInfoGainLM.create_from_arg_string(
        "pretrained=tiny-random-llada,gen_length=16,steps=8,block_length=16,device=cpu,top_k=50,top_p=0.9")
    assert lm.get_model_info()["sampler"]["top_k"] == 50 and lm.get_model_info()["sampler"]["top_p"] == 0.9
    used = []
    real_generate = harness.generate
    monkeypatch.setattr(harness, "generate", lambda adapter, prompts, config, *rest: (
        used.append((config.top_k, config.top_p)) or real_generate(adapter, prompts, config, *rest)))

    def request(**gen_kwargs):
        return Instance("generate_until", {}, ("Solve: 1 2", {"until": [], **gen_kwargs}), idx=0,
                        metadata=("unit", 0, 1))

    lm.generate_until([request()])
    lm.generate_until([request(top_k=5, top_p=1.0)])
    assert used == [(50, 0.9), (5, 1.0)]
    with pytest.raises(ValueError, match=r"gen_kwargs top_k=0 is invalid"):
        lm.generate_until([request(top_k=0)])
    with pytest.raises(ValueError, match=r"gen_kwargs top_p=2 is invalid"):
        lm.generate_until([request(top_p=2)])
