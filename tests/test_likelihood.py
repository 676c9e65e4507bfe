"""loglikelihood: the Monte Carlo ELBO of sampling/likelihood.py, its wiring in the harness, and arc_easy_local."""

import dataclasses
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling.likelihood import ScoringRequest, elbo_rows, loglikelihoods, segment_bounds

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OFFLINE_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs" / "offline"
ARCHITECTURES = ("llada", "mmada", "dream", "sdar", "trado")


class FixedLogits:
    """An adapter whose logits ignore the input: 0 everywhere (uniform over V), plus `boost` on the
    tokens of `favoured` at the canvas's last len(favoured) positions (every continuation ends the
    canvas). With `confident_when_unmasked`, the boost is scaled by the share of unmasked tokens in
    the row, so a token's log p depends on the mask ratio, as in a real model."""

    def __init__(self, spec, favoured=(), boost=10.0, confident_when_unmasked=False):
        self.spec, self.favoured, self.boost = spec, list(favoured), boost
        self.confident_when_unmasked = confident_when_unmasked
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def forward(self, input_ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):
        batch, total = input_ids.shape
        width = (total if logits_end is None else logits_end) - logits_start
        logits = torch.zeros(batch, width, self.spec.vocab_size)  # [B, W, V]
        boost = torch.full((batch,), self.boost)  # [B]
        if self.confident_when_unmasked:
            unmasked = ((input_ids != self.spec.mask_id) & key_mask).sum(-1) / key_mask.sum(-1)  # [B]
            boost = boost * unmasked
        for offset, token in enumerate(reversed(self.favoured)):
            if offset < width:
                logits[:, width - 1 - offset, token] += boost
        return logits


@pytest.fixture(scope="module")
def lm():
    return MDMInfoGainLM(pretrained="tiny-random-llada", device="cpu", dtype="float32", mc_num=16, mc_batch_size=8)


@pytest.fixture(scope="module")
def models():
    return {arch: load(f"tiny-random-{arch}", dtype="float32", device="cpu") for arch in ARCHITECTURES}


def instance(context: str, continuation: str, doc_id: int = 0, idx: int = 0, kind: str = "loglikelihood"):
    arguments = (context, continuation) if kind == "loglikelihood" else (context,)
    return Instance(kind, {}, arguments, idx=idx, metadata=("unit", doc_id, 1))


def requests_of(tokenizer, pairs, seed=0):
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [ScoringRequest(encode(context), encode(continuation), seed + index)
            for index, (context, continuation) in enumerate(pairs)]


# Contexts whose lengths differ modulo 4 (the block-causal models' block size) and continuations of
# one to many tokens, so that a batch is padded and a continuation spans several attention blocks.
PAIRS = [("Question: which is a source of light?\nAnswer:", " the Sun"),
         ("Hi", " there, my friend, how are you today?"),
         ("2+2=", "4"),
         ("The answer is", " that the lighthouse keeper went home")]


# ---------------------------------------------------------------- exact values on fixed logits


@pytest.mark.parametrize("block_size", [None, 4])
@pytest.mark.parametrize("num_draws", [1, 5, 16])
def test_uniform_logits_give_minus_L_log_V_for_every_draw(models, block_size, num_draws):
    """log p of every token is -log V, so each draw, weighted L/l over l masked tokens, is -L log V."""
    spec = dataclasses.replace(models["llada"][0].spec, attention_block_size=block_size)
    adapter = FixedLogits(spec)
    requests = [ScoringRequest([5] * context, [7] * length, seed)
                for seed, (context, length) in enumerate([(1, 1), (3, 2), (6, 7), (2, 13)])]
    for request, (estimate, _) in zip(requests, loglikelihoods(adapter, requests, num_draws, 4)):
        assert estimate == pytest.approx(-len(request.continuation) * math.log(spec.vocab_size), rel=1e-6)


def test_one_token_continuation_is_its_exact_log_probability(models):
    """L = 1: every draw masks that token with weight 1, so the estimate is log softmax of the model."""
    adapter, tokenizer = models["llada"]
    (request,) = requests_of(tokenizer, [("The answer is", "4")])
    assert len(request.continuation) == 1
    ids = torch.tensor([request.context + [adapter.spec.mask_id]])
    logits = adapter.forward(ids, torch.arange(ids.shape[1])[None], torch.ones_like(ids, dtype=torch.bool),
                             None, 0, ids.shape[1] - 1)  # [1, 1, V]
    expected = torch.log_softmax(logits[0, 0].double(), -1)[request.continuation[0]].item()
    (estimate, greedy), = loglikelihoods(adapter, [request], 8, 8)
    assert estimate == pytest.approx(expected, abs=1e-5)
    assert greedy == (logits[0, 0].argmax().item() == request.continuation[0])


def test_block_causal_draws_mask_one_segment_and_leave_earlier_ones_clean():
    bounds = segment_bounds(context_length=6, continuation_length=7, block_size=4)
    assert bounds == [0, 2, 6, 7] and segment_bounds(8, 5, 4) == [0, 4, 5] and segment_bounds(3, 5, None) == [0, 5]
    rows = elbo_rows(0, 7, bounds, 64, torch.Generator().manual_seed(1))
    for row in rows:
        masked = row.masked.nonzero().squeeze(1).tolist()
        segment = next(s for s in range(3) if bounds[s] <= masked[0] < bounds[s + 1])
        assert all(bounds[segment] <= index < bounds[segment + 1] for index in masked)
        assert row.weight == 7 / len(masked)
    assert {len(row.masked.nonzero()) for row in rows} >= {1, 2, 3, 4}  # every ratio is drawn


# ---------------------------------------------------------------- variance


def estimates_over_seeds(adapter, request, num_draws, seeds, stratified=True) -> list[float]:
    requests = [dataclasses.replace(request, seed=seed) for seed in range(seeds)]
    return [estimate for estimate, _ in loglikelihoods(adapter, requests, num_draws, 256, stratified=stratified)]


def test_variance_falls_as_mc_num_grows(models):
    adapter, tokenizer = models["llada"]
    (request,) = requests_of(tokenizer, [PAIRS[1]])
    few, many = (statistics.variance(estimates_over_seeds(adapter, request, n, seeds=12)) for n in (2, 32))
    assert many < few / 4  # 1/n would give 16


def test_stratified_draws_have_lower_variance_than_iid(models):
    """On a model whose confidence grows with the unmasked share, the mask ratio drives the variance."""
    spec = models["llada"][0].spec
    continuation = list(range(10, 22))
    adapter = FixedLogits(spec, favoured=continuation, boost=12.0, confident_when_unmasked=True)
    request = ScoringRequest([5, 6, 7], continuation, 0)
    stratified = statistics.variance(estimates_over_seeds(adapter, request, 8, seeds=32))
    iid = statistics.variance(estimates_over_seeds(adapter, request, 8, seeds=32, stratified=False))
    assert stratified < iid / 4


# ---------------------------------------------------------------- every architecture, batching, seeds


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_gives_finite_estimates_that_batching_does_not_change(models, arch):
    adapter, tokenizer = models[arch]
    requests = requests_of(tokenizer, PAIRS)
    batched = loglikelihoods(adapter, requests, 6, 64)
    singles = [loglikelihoods(adapter, [request], 6, 4)[0] for request in requests]
    assert all(math.isfinite(estimate) and estimate < 0 for estimate, _ in batched)
    for (batched_estimate, batched_greedy), (single_estimate, single_greedy) in zip(batched, singles):
        assert batched_estimate == pytest.approx(single_estimate, rel=1e-5)
        assert batched_greedy == single_greedy
    assert loglikelihoods(adapter, requests, 6, 64) == batched  # the same seeds give the same draws


class MemoryStarved:
    """An adapter whose forward over more than `limit` rows runs out of memory."""

    def __init__(self, adapter, limit):
        self.adapter, self.spec, self.device, self.limit = adapter, adapter.spec, adapter.device, limit

    def forward(self, input_ids, *args):
        if len(input_ids) > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {len(input_ids)} rows")
        return self.adapter.forward(input_ids, *args)


def test_out_of_memory_scores_the_rows_in_halves_with_the_same_estimates(models, caplog):
    adapter, tokenizer = models["llada"]
    requests = requests_of(tokenizer, PAIRS)
    expected = loglikelihoods(adapter, requests, 6, 16)
    starved = loglikelihoods(MemoryStarved(adapter, limit=5), requests, 6, 16)
    for (estimate, greedy), (expected_estimate, expected_greedy) in zip(starved, expected):
        assert estimate == pytest.approx(expected_estimate, rel=1e-5) and greedy == expected_greedy
    assert "out of memory scoring 16 rows in one forward; retrying as 8 and 8" in caplog.text
    assert "scoring 8 rows in one forward; retrying as 4 and 4" in caplog.text
    with pytest.raises(torch.OutOfMemoryError):
        loglikelihoods(MemoryStarved(adapter, limit=0), requests[:1], 6, 16)


def test_seed_changes_the_draws(models):
    adapter, tokenizer = models["llada"]
    (request,) = requests_of(tokenizer, [PAIRS[3]])
    assert len(set(estimates_over_seeds(adapter, request, 4, seeds=4))) == 4


# ---------------------------------------------------------------- the harness


def test_the_right_choice_ranks_first_and_is_greedy(lm, monkeypatch):
    context, choices = "Which of these is a source of light?\nAnswer:", [" a rock", " the Sun", " a shadow"]
    right = lm.encode_pair(context, choices[1])[1]
    monkeypatch.setattr(lm, "adapter", FixedLogits(lm.adapter.spec, favoured=right))
    results = lm.loglikelihood([instance(context, choice, idx=index) for index, choice in enumerate(choices)])
    log_probs, greedy = zip(*results)
    assert max(range(3), key=log_probs.__getitem__) == 1
    assert greedy == (False, True, False)


def test_results_reach_lm_evals_cache_hook(lm, monkeypatch):
    seen = []

    class Hook:
        def add_partial(self, kind, arguments, result):
            seen.append((kind, arguments, result))

    monkeypatch.setattr(lm, "cache_hook", Hook())
    requests = [instance("2+2=", "4"), instance("2+2=", "5", idx=1)]
    results = lm.loglikelihood(requests)
    assert seen == [("loglikelihood", request.args, result) for request, result in zip(requests, results)]


def test_trailing_spaces_move_to_the_continuation_and_an_empty_context_is_the_prefix_token(lm):
    context, continuation = lm.encode_pair("Answer: ", "yes")
    assert (context, continuation) == (lm.encode("Answer:"), lm.encode("Answer: yes")[len(lm.encode("Answer:")):])
    assert lm.encode_pair("", "yes") == ([lm.prefix_token_id], lm.encode("yes"))


def test_rolling_scores_every_token_once_across_windows(lm, monkeypatch):
    """Uniform logits: each of the N tokens costs log V, whatever the windows (max length 8 forces several)."""
    spec = dataclasses.replace(lm.adapter.spec, max_length=8)
    monkeypatch.setattr(lm, "adapter", FixedLogits(spec))
    text = "The lighthouse keeper walked home along the cliff at dusk."
    (total,) = lm.loglikelihood_rolling([instance(text, "", kind="loglikelihood_rolling")])
    assert len(lm.encode(text)) > 8
    assert total == pytest.approx(-len(lm.encode(text)) * math.log(spec.vocab_size), rel=1e-6)


@pytest.mark.parametrize("args, message", [
    ({"mc_num": 0}, "mc_num=0 is invalid; allowed: an integer >= 1"),
    ({"mc_batch_size": "many"}, "mc_batch_size='many' is invalid; allowed: an integer >= 1"),
    ({"mc_num": 2.5}, "mc_num=2.5 is invalid"),
])
def test_bad_monte_carlo_args_fail_with_one_line(args, message):
    with pytest.raises(ValueError) as error:
        MDMInfoGainLM(pretrained="tiny-random-llada", device="cpu", **args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_model_info_records_the_monte_carlo_settings(lm):
    info = lm.get_model_info()
    assert (info["mc_num"], info["mc_batch_size"]) == (16, 8)


# ---------------------------------------------------------------- the stock CLI on a multiple-choice task


def test_arc_easy_local_reads_the_fixture_and_asks_for_a_train_file_before_shots():
    metadata = {"arc_easy_local_jsonl": str(FIXTURES / "arc_easy_test.jsonl")}
    manager = TaskManager(include_path=str(OFFLINE_CONFIGS), include_defaults=False, metadata=metadata)
    task = manager.load(["arc_easy_local"])["tasks"]["arc_easy_local"]
    docs = list(task.eval_docs)
    assert len(docs) == 6 and task.OUTPUT_TYPE == "multiple_choice"
    assert task.doc_to_choice(docs[0]) == ["a rock", "the Sun", "a shadow", "a cup of water"]
    assert task.doc_to_target(docs[0]) == 1
    assert task.fewshot_context(docs[0], num_fewshot=0).startswith("Question: Which of these")
    with pytest.raises(ValueError, match="ARC_EASY_LOCAL_TRAIN_JSONL"):
        task.fewshot_context(docs[0], num_fewshot=1)


def test_stock_cli_runs_arc_easy_local(tmp_path):
    metadata = json.dumps({"arc_easy_local_jsonl": str(FIXTURES / "arc_easy_test.jsonl")})
    command = [sys.executable, "-m", "lm_eval", "--model", "mdm_infogain",
               "--model_args", "pretrained=tiny-random-llada,mc_num=8", "--tasks", "arc_easy_local",
               "--limit", "4", "--metadata", metadata, "--output_path", str(tmp_path), "--log_samples"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    samples = [json.loads(line) for line in next(tmp_path.rglob("samples_arc_easy_local_*.jsonl")).open()]
    assert len(samples) == 4
    for sample in samples:
        log_probs = [float(response[0][0]) for response in sample["resps"]]  # lm-eval writes them as strings
        assert len(log_probs) == 4 and all(math.isfinite(value) and value < 0 for value in log_probs)
    for metric in ("acc", "acc_norm"):
        mean = statistics.fmean(sample[metric] for sample in samples)
        assert results["results"]["arc_easy_local"][f"{metric},none"] == pytest.approx(mean)
    assert results["config"]["mc_num"] == 8  # get_model_info's record of the setting
