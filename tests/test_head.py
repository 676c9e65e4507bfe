"""sampling/head.py: the streamed head-plus-entropy against the full fp32 logits, the adapters' output heads
against their own heads, and the loop's entropies (H_next and the entropies after the step window) against
the chunked-logits path they replaced, in every cache mode of the tiny LLaDA, Dream and SDAR models.

Tolerance: the streamed sums run over the vocabulary in another order than log_softmax's (and rescale at each
slice), so in fp32 they agree to a few ulps of the sums: 1e-5 absolute on entropies of up to log V nats,
1e-5 relative on probabilities. Argmax tokens are equal."""

import pytest
import torch

from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling import head as head_module
from lm_eval_infogain.sampling.config import SamplerConfig, fit_to_model
from lm_eval_infogain.sampling.head import OutputHead, head_stats
from lm_eval_infogain.sampling.info_gain import entropy
from lm_eval_infogain.sampling.loop import Decoder, block_ranges, build_canvas

ENTROPY_TOLERANCE = dict(rtol=0, atol=1e-5)
PROBABILITY_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
SMALL = dict(gen_length=16, block_length=8, steps=8)
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Solve: 3 + 4 ="]


def full_logits_stats(logits: torch.Tensor, mask_id: int):
    """What the step computes from the whole fp32 logits [M, V]: entropy, top-1 probability, the argmax without
    the mask token and its probability."""
    probs = logits.softmax(-1)
    tokens = logits.index_fill(-1, torch.tensor([mask_id]), float("-inf")).argmax(-1)
    return entropy(logits), probs.amax(-1), tokens, probs.gather(-1, tokens[:, None]).squeeze(-1)


@pytest.mark.parametrize("vocab_chunk", [1000, 64, 7])
def test_streamed_stats_equal_the_full_logits_stats(monkeypatch, vocab_chunk):
    """A head with bias and scale, penalties on two tokens and a mask token that is many rows' favourite, in one
    slice of the vocabulary and in many (7: the last slice shorter)."""
    monkeypatch.setattr(head_module, "VOCAB_CHUNK", vocab_chunk)
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(1000, 16, generator=generator), torch.randn(1000, generator=generator)
    hidden = 3 * torch.randn(41, 16, generator=generator) + 2  # [M, C] about the direction of ones
    mask_id, eos_id = 100, 5
    weight[mask_id] = 1.5  # the mask token is the top prediction of many rows
    head = OutputHead(weight, bias, scale=0.5)
    stats = head_stats(hidden, head, ((eos_id, 3.0), (eos_id, 0.25)), mask_id=mask_id)
    logits = head.logits(hidden)
    logits[:, eos_id] -= 3.0
    logits[:, eos_id] -= 0.25
    expected_entropy, expected_top, expected_tokens, expected_confidence = full_logits_stats(logits, mask_id)
    assert (logits.argmax(-1) == mask_id).sum() > 5 and (expected_tokens != mask_id).all()
    torch.testing.assert_close(stats.entropy, expected_entropy, **ENTROPY_TOLERANCE)
    torch.testing.assert_close(stats.top_probability, expected_top, **PROBABILITY_TOLERANCE)
    torch.testing.assert_close(stats.confidence, expected_confidence, **PROBABILITY_TOLERANCE)
    assert torch.equal(stats.tokens, expected_tokens)


def test_a_near_certain_distribution_keeps_its_small_entropy():
    """log s - t / s with sums taken about the running maximum: no cancellation against the logits' size."""
    weight = torch.zeros(300, 4)
    weight[17, 0] = 1.0
    hidden = torch.tensor([[60.0, 0, 0, 0], [1000.0, 0, 0, 0]])  # logit 60 (or 1000) against 299 zeros
    stats = head_stats(hidden, OutputHead(weight))
    expected = entropy(OutputHead(weight).logits(hidden))
    torch.testing.assert_close(stats.entropy, expected, rtol=1e-4, atol=1e-30)
    assert stats.entropy[0] > 0 and stats.tokens.tolist() == [17, 17]


class SliceSpy(OutputHead):
    def logits(self, hidden, start=0, end=None):
        self.slices.append((start, end))
        return super().logits(hidden, start, end)


def test_the_head_is_read_once_a_slice_at_a_time(monkeypatch):
    """The vocabulary slices partition [0, V) (each row of the weight read once for all positions) and none is
    wider than VOCAB_CHUNK; with many positions a slice shrinks so that its fp32 logits stay within
    MAX_CHUNK_ELEMENTS."""
    monkeypatch.setattr(head_module, "VOCAB_CHUNK", 64)
    monkeypatch.setattr(head_module, "MAX_CHUNK_ELEMENTS", 40 * 50)
    spy = SliceSpy(torch.randn(300, 8))
    object.__setattr__(spy, "slices", [])
    head_stats(torch.randn(3, 8), spy)
    assert spy.slices == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
    spy.slices.clear()
    head_stats(torch.randn(40, 8), spy)  # 40 positions: slices of 50 rows
    assert spy.slices == [(start, min(start + 50, 300)) for start in range(0, 300, 50)]


@pytest.mark.parametrize("arch", ["llada", "mmada", "dream", "sdar", "trado"])
def test_each_output_head_gives_its_models_logits(arch):
    adapter, _ = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
    hidden = torch.randn(2, 5, adapter.output_head().weight.shape[1])
    assert torch.equal(adapter.output_head().logits(hidden), adapter.head(hidden))


def test_scaled_and_tied_llada_heads_give_its_logits():
    from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    config = LLaDAConfig(d_model=16, n_heads=2, n_layers=1, mlp_hidden_size=32, vocab_size=50, embedding_size=50,
                         scale_logits=True, weight_tying=True)
    model = LLaDAModelLM(config).to(torch.bfloat16)
    hidden = torch.randn(3, 16, dtype=torch.bfloat16)
    expected = (torch.nn.functional.linear(hidden, model.model.transformer.wte.weight) * (1 / 16 ** 0.5)).float()
    assert torch.equal(model.output_head().logits(hidden), expected)
    assert torch.equal(model.head_logits(hidden), expected)


def lookahead_decoders(arch: str, **settings):
    """(decoder with the adapter's output head, decoder without: the chunked-logits path) per cache mode and
    lookahead window, each at the first block's start of two prompts."""
    adapter, tokenizer = load(f"tiny-random-{arch}", dtype="float32", device="cpu")
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    for cache in adapter.spec.cache_modes:
        for window in ("rest", "block") if cache != "none" else ("rest",):
            given = dict(mode="info_gain", use_cache=cache, lookahead_window=window, **SMALL, **settings)
            config = fit_to_model(SamplerConfig(**given), set(given), adapter.spec)
            yield cache, window, tuple(start_of_first_block(model, prompts, config)
                                       for model in (adapter, WithoutOutputHead(adapter)))


class WithoutOutputHead:
    """The same adapter, but the sampler finds no output head: it computes entropies from logits in chunks."""

    def __init__(self, adapter):
        self.adapter, self.spec, self.device, self.dtype = adapter, adapter.spec, adapter.device, adapter.dtype

    def forward_hidden(self, *args):
        return self.adapter.forward_hidden(*args)

    def head(self, hidden):
        return self.adapter.head(hidden)

    def output_head(self):
        return None

    def new_cache(self, batch, length):
        return self.adapter.new_cache(batch, length)


def start_of_first_block(adapter, prompts, config):
    canvas = build_canvas(prompts, config.gen_length, adapter.spec, "cpu")
    decoder = Decoder(adapter, config, canvas, [torch.Generator().manual_seed(0) for _ in prompts])
    block_start, block_end = block_ranges(canvas.prompt_length, config.gen_length, config.block_length,
                                          adapter.spec.attention_block_size)[0]
    decoder.start_block(block_start, block_end, torch.tensor([True, True]))
    return decoder, block_start, block_end


@pytest.mark.parametrize("arch", ["llada", "dream", "sdar"])
@torch.no_grad()
def test_streamed_h_next_equals_the_chunked_logits_path_in_every_cache_mode(arch, monkeypatch):
    """Five candidates of two prompts, each committing two positions of the first block: H_next and the
    entropies the block-start forward keeps (after the step window) from the streamed head (in slices of 64
    of the tiny vocabulary, as an 8B one streams) and from the chunked logits agree within ENTROPY_TOLERANCE,
    in every cache mode and lookahead window of the model."""
    monkeypatch.setattr(head_module, "VOCAB_CHUNK", 64)
    checked = []
    for cache, window, ((streamed, block_start, block_end), (chunked, _, _)) in lookahead_decoders(arch):
        torch.testing.assert_close(streamed.unrefreshed_entropy, chunked.unrefreshed_entropy, **ENTROPY_TOLERANCE)
        rows = torch.tensor([0, 0, 0, 1, 1])
        ids = streamed.canvas.ids[rows].clone()  # [R, T]
        for candidate, offsets in enumerate([(0, 1), (2, 5), (1, 7), (0, 3), (4, 6)]):
            ids[candidate, [block_start + offset for offset in offsets]] = 10 + candidate
        means = []
        for decoder in (streamed, chunked):
            hidden = decoder.forward(ids, rows, decoder.lookahead_window(block_start, block_end),
                                     (block_start, decoder.logits_end(block_start, block_end)), share_cache=False)
            means.append(decoder.next_entropy_mean(ids, rows, hidden, block_start, torch.ones(5, dtype=torch.bool)))
        torch.testing.assert_close(means[0], means[1], **ENTROPY_TOLERANCE, msg=f"{cache} {window}")
        assert means[1].unique().numel() > 1  # the candidates' states differ
        checked.append(cache)
    assert set(checked) == {"none", "prefix", "dual"} if arch != "sdar" else {"none", "prefix"}


def test_penalties_enter_the_streamed_entropies(monkeypatch):
    """eos_penalty and pad_penalty change the distribution whose entropy H_next averages; both paths agree."""
    monkeypatch.setattr(head_module, "VOCAB_CHUNK", 64)
    for _, _, ((streamed, block_start, block_end), (chunked, _, _)) in lookahead_decoders(
            "llada", eos_penalty=5.0, pad_penalty=2.0):
        hidden = torch.randn(1, 6, streamed.adapter.output_head().weight.shape[1])
        torch.testing.assert_close(streamed.entropies(hidden), chunked.entropies(hidden), **ENTROPY_TOLERANCE)
        unpenalised = entropy(streamed.adapter.head(hidden))
        assert (streamed.entropies(hidden) - unpenalised).abs().max() > 1e-3
        break


def test_a_filter_over_the_whole_distribution_keeps_the_logits_path():
    """filter_scope=all with top_k: the entropies are those of the filtered logits, which need every position's
    whole distribution: the loop computes them from the logits, not from the streamed head."""
    for _, _, ((decoder, _, _), _) in lookahead_decoders("llada", top_k=3, filter_scope="all"):
        hidden = torch.randn(1, 6, decoder.adapter.output_head().weight.shape[1])
        filtered = entropy(decoder.logits(hidden))
        assert torch.equal(decoder.entropies(hidden), filtered)
        assert (filtered <= torch.log(torch.tensor(3.0)) + 1e-6).all()
        break


def test_cpu_bench_times_streamed_over_chunked_in_one_run(tmp_path):
    """`python bench/head.py` on a small head (a vocabulary of two slices): both paths timed in one run, the
    ratio the two medians'."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    output = tmp_path / "head.json"
    subprocess.run([sys.executable, "bench/head.py", "--vocab", "20000", "--hidden", "16", "--positions", "8",
                    "--repeats", "1", "--output", str(output)], cwd=Path(__file__).resolve().parent.parent,
                   check=True, capture_output=True, text=True)
    report = json.loads(output.read_text())
    medians = report["median_seconds"]
    assert report["streamed_over_chunked"] == round(medians["streamed"] / medians["chunked"], 3)
    assert report["settings"]["vocab"] > report["settings"]["vocab_chunk"]  # the streamed path, not one slice


def test_bench_readme_quotes_the_committed_head_bench():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    ratio = json.loads((root / "results" / "bench-head-cpu.json").read_text())["streamed_over_chunked"]
    assert f"{ratio}x the chunked logits' time" in " ".join((root / "bench" / "README.md").read_text().split())
