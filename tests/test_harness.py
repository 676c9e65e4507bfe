"""The mdm_infogain lm-eval backend: model_args validation, gen_kwargs, stop strings, seeds, results info."""

import dataclasses
import json
import logging

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.utils import simple_parse_args_string

import lm_eval_infogain
from lm_eval_infogain import batch_size_search, harness, request_planning
from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import generate, probe_batch

FAST = "pretrained=tiny-random-llada,gen_length=32,steps=16,block_length=16,device=cpu"


def make_lm(extra: str = "", **additional) -> MDMInfoGainLM:
    return MDMInfoGainLM.create_from_arg_string(FAST + ("," + extra if extra else ""), additional)


def request(context: str, doc_id: int = 0, **gen_kwargs) -> Instance:
    gen_kwargs.setdefault("until", [])
    return Instance("generate_until", {}, (context, gen_kwargs), idx=0, metadata=("unit", doc_id, 1))


@pytest.fixture(scope="module")
def lm():
    return make_lm("mode=info-gain")


@pytest.mark.parametrize("args, message", [
    ("use_cache=half", "use_cache='half'"),
    ("block_length=0", "block_length=0"),
    ("candidate_number=-1", "candidate_number=-1"),
    ("threshold=1.5", "threshold=1.5"),
    ("position_temperature=-0.1", "position_temperature=-0.1"),
    ("temperature=-1", "temperature=-1"),
    ("steps=0", "steps=0"),
    ("gen_length=abc", "gen_length='abc'"),
    ("mode=beam", "mode='beam'"),
    ("mode=pc_sampler", "pc_baseline=None is invalid; allowed: a token-frequency JSON file"),
    ("mode=pc_sampler,pc_baseline=/nonexistent/freq.json", "/nonexistent/freq.json"),
    ("factor=0", "factor=0"),
    ("gamma=-1", "gamma=-1"),
    ("eos_penalty=-2", "eos_penalty=-2"),
    ("variant=greedy", "variant='greedy'"),
    ("colour=red", "unknown model_args key(s) colour"),
    ("batch_size=0", "batch_size=0"),
    ("dtype=int8", "dtype='int8'"),
    ("seed=abc", "seed='abc'"),
    ("gen_length=30", "gen_length=30 is invalid; allowed: a multiple of block_length=16"),
    ("steps=15", "steps=15 is invalid; allowed: a multiple of the number of blocks"),
    ("steps=1", "steps=1 is invalid; allowed: a multiple of the number of blocks gen_length/block_length=2"),
    ("gen_length=2048,steps=128", "gen_length=2048 is invalid; allowed: fewer tokens than the model's max length 2048"),
    ("threshold=high", "threshold='high'"),
    ("candidate_number=2.5", "candidate_number=2.5"),
    ("early_stop=sometimes", "early_stop='sometimes'"),
    ("mc_num=0", "mc_num=0"),
    ("device=tpu", "device='tpu' is invalid; allowed: cpu | cuda"),
    ("device=mps", "device='mps' is invalid; allowed: cpu | cuda | cuda:N (N below the number of GPUs) | mps; mps is"),
    ("device=cpu:x", "device='cpu:x'"),
    ("pretrained=/nonexistent/checkpoint", "pretrained='/nonexistent/checkpoint': no config.json found"),
    ("max_new_tokens=64,gen_length=32", "disagree"),
    ("decode_stats=/nonexistent/dir/stats.jsonl", "decode_stats='/nonexistent/dir/stats.jsonl'"),
])
def test_bad_model_args_fail_at_construction_with_one_line(args, message):
    with pytest.raises(ValueError) as error:
        make_lm(args)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_pc_sampler_runs_with_a_baseline_file(pc_baseline_file):
    lm = make_lm(f"mode=pc_sampler,pc_baseline={pc_baseline_file}")
    assert lm.generate_until([request("The answer is")])[0] is not None


def test_mode_names_of_both_spellings_are_accepted():
    assert SamplerConfig(mode="info-gain").mode == "info_gain"
    assert SamplerConfig(mode="Info_Gain").mode == "info_gain"
    assert SamplerConfig(mode="lookum").variant == "lookum"
    assert SamplerConfig(mode="original").mode == SamplerConfig(mode="confidence").mode == "original"


def test_none_cache_and_max_new_tokens_alias():
    lm = make_lm("use_cache=none,max_new_tokens=32")  # lm-eval parses 'none' to None
    assert lm.sampler.use_cache == "none" and lm.sampler.gen_length == 32


def test_model_info_records_every_setting_and_version(lm):
    info = lm.get_model_info()
    assert info["sampler"] == dataclasses.asdict(lm.sampler)
    assert set(info["sampler"]) == {field.name for field in dataclasses.fields(SamplerConfig)}
    assert info["lm_eval_infogain_version"] == lm_eval_infogain.__version__
    assert info["model_type"] == "llada" and isinstance(info["seed"], int)


def test_stop_strings_and_stop_ids_cut_the_answer(lm, monkeypatch):
    tokenizer = lm.tokenizer
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    ids = tokenizer("first part STOP second", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(harness, "generate", lambda adapter, prompts, *a: (
        [ids + [eot] + ids] * len(prompts), [{"nfe": 1}] * len(prompts)))
    cut_by_string, cut_by_id = lm.generate_until([request("q", until=["STOP"]), request("r", doc_id=1)])
    assert cut_by_string == "first part "
    assert cut_by_id == "first part STOP second"


def test_max_gen_toks_caps_generation_length(lm, monkeypatch):
    lengths = []
    real_generate = harness.generate

    def spy(adapter, prompts, config, seeds, gen_length):
        lengths.append(gen_length)
        return real_generate(adapter, prompts, config, seeds, gen_length)

    monkeypatch.setattr(harness, "generate", spy)
    lm.generate_until([request("a", max_gen_toks=8), request("b", max_gen_toks=500)])
    assert sorted(lengths) == [8, 32]


def test_the_results_record_the_generation_length_and_steps_a_cap_left():
    """gen_length 32 in blocks of 16 with 8 steps each; max_gen_toks=4 leaves one block of 4 tokens: 4 steps."""
    lm = make_lm("mode=original")
    lm.generate_until([request("a", max_gen_toks=4)])
    assert lm.get_model_info()["sampler_per_task"] == {"unit": {"gen_length": 4, "steps": 4}}
    assert {row["nfe"] for row in lm.get_model_info()["decode_stats_per_request"]} == {4}
    lm.generate_until([request("a", max_gen_toks=24)])  # a block of 16 (8 steps), then one of 8 (8 steps)
    assert lm.get_model_info()["sampler_per_task"] == {"unit": {"gen_length": 24}}


def test_steps_beyond_the_generation_are_recorded_as_the_steps_that_run(caplog):
    with caplog.at_level(logging.WARNING):
        lm = make_lm("mode=original,steps=1000000000")
    assert lm.sampler.steps == 32 and lm.get_model_info()["sampler"]["steps"] == 32
    assert "steps=1000000000 exceeds gen_length=32: a step commits at least one token, so 32 steps run and are " \
           "recorded" in caplog.messages
    answers = lm.generate_until([request("Solve: 1 2 3 4")])
    assert answers == make_lm("mode=original,steps=32").generate_until([request("Solve: 1 2 3 4")])


@pytest.mark.parametrize("gen_kwargs, length", [
    ({"max_new_tokens": 8}, 8),
    ({"max_tokens": 4}, 4),
    ({"max_completion_tokens": 16}, 16),
    ({"max_gen_toks": 8, "max_new_tokens": 4}, 8),  # lm-eval's priority order
    ({"max_new_tokens": 500}, 32),  # capped by gen_length
])
def test_lm_evals_names_of_the_generation_length_are_honoured(lm, caplog, gen_kwargs, length):
    with caplog.at_level("WARNING"):
        assert lm.request_settings({"until": []} | gen_kwargs)[1] == length
    assert not any("are ignored" in message for message in caplog.messages)


def test_task_temperature_wins_and_do_sample_false_means_greedy(lm):
    assert lm.request_settings({"until": ["\n"], "temperature": 0.7})[2] == 0.7
    assert lm.request_settings({"until": [], "temperature": 0.7, "do_sample": False})[2] == 0.0
    assert lm.request_settings({"until": []})[2] == lm.sampler.temperature


def test_outputs_do_not_depend_on_batch_size_or_order():
    contexts = ["Solve: 1 2 3 4", "Write a story.", "0123 4321", "The answer is"]
    requests = [request(c, doc_id=i) for i, c in enumerate(contexts)]
    one_by_one = make_lm("mode=info_gain,batch_size=1").generate_until(requests)
    batched_reversed = make_lm("mode=info_gain,batch_size=3").generate_until(requests[::-1])
    assert one_by_one == batched_reversed[::-1]


# ---------------------------------------------------------------- batch_size=auto

AUTO_ARGS = "mode=info_gain,candidate_number=4,batch_size=auto"
AUTO_CONTEXTS = ["Solve: 1 2 3 4", "Write a story about a lighthouse.", "0123 4321", "The answer is", "Hi"]


def out_of_memory_above(monkeypatch, adapter, max_rows: int) -> list[int]:
    """Make the adapter's forward run out of memory on more than max_rows sequences (as a GPU would); the row
    counts it was called with."""
    real_forward, rows = adapter.forward_hidden, []

    def forward(ids, *args):  # ids [R, W]
        rows.append(ids.shape[0])
        if ids.shape[0] > max_rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {ids.shape[0]} GiB")
        return real_forward(ids, *args)

    monkeypatch.setattr(adapter, "forward_hidden", forward)
    return rows


def test_the_probe_raises_out_of_memory_that_decoding_would_split(monkeypatch):
    """A batch of 8 with 4 candidates forwards 32 lookahead rows: the loop retries them in halves, the probe must
    not (else every size would seem to fit)."""
    lm = make_lm("mode=info_gain,candidate_number=4")
    out_of_memory_above(monkeypatch, lm.adapter, 20)
    prompt = lm.encode("Solve: 1 2 3 4")
    generated, _ = generate(lm.adapter, [prompt] * 8, lm.sampler, list(range(8)))
    assert len(generated) == 8
    with pytest.raises(torch.OutOfMemoryError):
        probe_batch(lm.adapter, prompt, lm.sampler, lm.sampler.gen_length, 8)
    probe_batch(lm.adapter, prompt, lm.sampler, lm.sampler.gen_length, 4)  # 16 rows fit


def test_the_probe_raises_out_of_memory_that_decoding_would_split_into_halves(monkeypatch):
    """Out of memory outside a forward (here the cache of 8 prompts): decoding splits the batch, the probe
    must not."""
    lm = make_lm("mode=info_gain")
    real_new_cache = lm.adapter.new_cache

    def new_cache(batch: int, length: int):
        if batch > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_new_cache(batch, length)

    monkeypatch.setattr(lm.adapter, "new_cache", new_cache)
    prompt = lm.encode("Solve: 1 2 3 4")
    generated, _ = generate(lm.adapter, [prompt] * 8, lm.sampler, list(range(8)))
    assert len(generated) == 8
    with pytest.raises(torch.OutOfMemoryError):
        probe_batch(lm.adapter, prompt, lm.sampler, lm.sampler.gen_length, 8)


def forward_sizes(monkeypatch, adapter) -> list[tuple[int, int, int]]:
    """(rows, tokens forwarded, hidden states returned) of each forward of the adapter."""
    real_forward, sizes = adapter.forward_hidden, []

    def forward(ids, positions, key_mask, cache, window_start, logits_start, logits_end=None):  # ids [R, W]
        hidden = real_forward(ids, positions, key_mask, cache, window_start, logits_start, logits_end)  # [R, W', C]
        sizes.append((ids.shape[0], ids.numel(), hidden.shape[0] * hidden.shape[1]))
        return hidden

    monkeypatch.setattr(adapter, "forward_hidden", forward)
    return sizes


@pytest.mark.parametrize("arch, use_cache", [("llada", "none"), ("llada", "prefix"), ("llada", "dual"),
                                             ("dream", "prefix"), ("sdar", "none"), ("sdar", "prefix")])
def test_the_probe_reaches_the_largest_forwards_of_a_whole_decode(monkeypatch, arch, use_cache):
    """The probe runs a few steps, yet its largest forward (rows, tokens, hidden states) is at least the
    largest of the whole decode of the same batch: the costliest work a batch does."""
    lm = MDMInfoGainLM.create_from_arg_string(
        f"pretrained=tiny-random-{arch},gen_length=32,steps=16,block_length=8,device=cpu,mode=info_gain,"
        f"candidate_number=3,use_cache={use_cache}", {})
    sizes = forward_sizes(monkeypatch, lm.adapter)
    prompt = lm.encode("Write a story about a lighthouse.")
    generate(lm.adapter, [prompt] * 4, lm.sampler, list(range(4)))
    decode_sizes, sizes[:] = sizes[:], []
    probe_batch(lm.adapter, prompt, lm.sampler, lm.sampler.gen_length, 4)
    assert len(sizes) < len(decode_sizes)
    for measure in range(3):
        assert max(size[measure] for size in sizes) >= max(size[measure] for size in decode_sizes)
    assert max(size[0] for size in sizes) == 4 * 3  # every candidate of every row


def test_batch_size_auto_finds_the_largest_size_that_fits_and_keeps_it(monkeypatch, caplog):
    """Sizes 16 and 8 need 64 and 32 lookahead rows, above the 20 that fit: the search halves to 4 (the
    largest of max_batch_size's halves whose 16 rows fit), says and records it, and does not search again."""
    lm = make_lm(AUTO_ARGS + ",max_batch_size=16")
    rows = out_of_memory_above(monkeypatch, lm.adapter, 20)
    assert lm.generate_until([]) == [] and rows == []  # nothing to decode: nothing probed, nothing found
    assert lm.get_model_info()["batch_size_per_canvas"] is None
    requests = [request(context, doc_id=i) for i, context in enumerate(AUTO_CONTEXTS)]
    with caplog.at_level(logging.INFO, logger="lm_eval_infogain.batch_size_search"):
        answers = lm.generate_until(requests)
    assert max(rows) > 20  # the probe did reach sizes that do not fit
    said = [message for message in caplog.messages if message.startswith("batch_size=auto")]
    longest = max(len(lm.encode(context)) for context in AUTO_CONTEXTS)
    assert said == [f"batch_size=auto: 4 prompts per canvas (max_batch_size=16), the most that fit the longest "
                    f"request ({longest} prompt + 32 generated tokens)"]
    assert lm.batch_size_per_canvas == 4 and lm.batch_sizes == {0: 4}
    info = lm.get_model_info()
    assert info["batch_size_per_canvas"] == 4 and info["batch_size_auto"] is True
    assert answers == make_lm("mode=info_gain,candidate_number=4,batch_size=4").generate_until(requests)
    probes = []
    monkeypatch.setattr(batch_size_search, "probe_batch", lambda *args: probes.append(args))
    lm.generate_until(requests)
    assert probes == [] and lm.batch_size_per_canvas == 4


def test_batch_size_auto_is_bounded_by_max_batch_size():
    lm = make_lm(AUTO_ARGS + ",max_batch_size=3")
    lm.generate_until([request(context, doc_id=i) for i, context in enumerate(AUTO_CONTEXTS)])
    assert lm.batch_size_per_canvas == 3
    assert make_lm(AUTO_ARGS).max_batch_size == batch_size_search.DEFAULT_MAX_BATCH_SIZE == 64
    assert make_lm("batch_size=2").get_model_info()["batch_size_auto"] is False


def test_batch_size_auto_probes_the_longest_request_with_the_run_sampler(monkeypatch):
    lm = make_lm(AUTO_ARGS + ",max_batch_size=2")
    probes = []
    monkeypatch.setattr(batch_size_search, "probe_batch", lambda *args: probes.append(args))
    requests = [request("Hi", doc_id=0), request("a much longer prompt than the others", doc_id=1, max_gen_toks=16),
                request("a prompt of middling length", doc_id=2)]
    lm.generate_until(requests)
    (adapter, prompt, config, gen_length, batch_size), = probes
    assert prompt == lm.encode("a prompt of middling length") and gen_length == 32 and batch_size == 2
    assert config.candidate_number == 4 and config.mode == "info_gain"


def test_batch_size_auto_takes_the_smallest_size_of_all_processes(monkeypatch):
    lm = make_lm(AUTO_ARGS + ",max_batch_size=8")
    gathered = []

    def all_gather(size):  # this process found 8; the other one, 2
        gathered.append(size)
        return torch.cat([size, torch.tensor([2])])

    monkeypatch.setattr(lm, "_world_size", 2)
    monkeypatch.setattr(lm, "all_gather", all_gather)
    monkeypatch.setattr(lm, "gather_object", lambda rows, dst=0: [rows])
    lm.generate_until([request("Hi")])
    assert [int(size) for size in gathered] == [8] and lm.batch_size_per_canvas == 2


def test_batch_size_auto_decodes_one_per_canvas_when_nothing_fits(monkeypatch, caplog):
    lm = make_lm(AUTO_ARGS + ",max_batch_size=4")
    out_of_memory_above(monkeypatch, lm.adapter, 0)
    monkeypatch.setattr(harness, "generate", lambda adapter, prompts, *args: ([[]] * len(prompts), [{}] * len(prompts)))
    monkeypatch.setattr(lm, "record_stats", lambda rows: None)
    monkeypatch.setattr(lm, "gather_decode_stats", lambda rows: None)
    lm.generate_until([request("Hi")])
    assert lm.batch_size_per_canvas == 1
    assert any("even one prompt of the longest request" in message for message in caplog.messages)


@pytest.mark.parametrize("value", ["auto:4", "auto:0", "auto:x", "Auto", "automatic", "many"])
def test_batch_size_forms_other_than_auto_and_integers_are_one_line(value):
    with pytest.raises(UsageError) as error:
        make_lm(f"batch_size={value}")
    assert str(error.value) == f"batch_size={value!r} is invalid; allowed: {batch_size_search.BATCH_SIZE_ALLOWED}"


def test_seed_changes_info_gain_outputs_at_temperature_zero():
    requests = [request("Write a story about a lighthouse.", doc_id=i) for i in range(3)]
    first = make_lm("mode=info_gain,seed=1").generate_until(requests)
    assert make_lm("mode=info_gain,seed=1").generate_until(requests) == first
    assert make_lm("mode=info_gain,seed=2").generate_until(requests) != first


def test_lm_eval_seed_reaches_the_backend_through_torch():
    torch.manual_seed(5)  # what lm-eval's --seed does before it builds the model
    assert make_lm().seed == 5


def test_repeats_of_one_request_get_their_own_seeds():
    instance = request("Write a story.", doc_id=3)
    assert len({request_planning.request_seed(1, instance, repeat) for repeat in range(4)}) == 4


def test_chat_template_comes_from_the_tokenizer(lm):
    text = lm.apply_chat_template([{"role": "user", "content": "Solve it"}])
    assert text.startswith("<|startoftext|><|start_header_id|>user") and text.endswith("assistant<|end_header_id|>\n\n")
    assert lm.chat_template() == lm.tokenizer.chat_template


def test_chat_template_missing_is_a_clear_error(lm, monkeypatch):
    monkeypatch.setattr(lm.tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="has no chat template"):
        lm.apply_chat_template([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("gen_kwargs, message", [
    ({"until": 5}, "gen_kwargs until=5 is invalid; allowed: a string or a list of non-empty strings"),
    ({"until": ["ok", 3]}, "gen_kwargs until=['ok', 3]"),
    ({"until": [""]}, "gen_kwargs until=['']"),
    ({"until": ("a", "b")}, "gen_kwargs until=('a', 'b')"),
    ({"temperature": "hot"}, "gen_kwargs temperature='hot' is invalid; allowed: 0 (greedy) or a number in"),
    ({"temperature": -0.5}, "gen_kwargs temperature=-0.5"),
    ({"do_sample": "yes"}, "gen_kwargs do_sample='yes' is invalid; allowed: true | false"),
    ({"max_gen_toks": 0}, "gen_kwargs max_gen_toks=0 is invalid; allowed: an integer >= 1"),
    ({"max_gen_toks": "many"}, "gen_kwargs max_gen_toks='many'"),
    ({"max_new_tokens": 0}, "gen_kwargs max_new_tokens=0 is invalid; allowed: an integer >= 1"),
    ({"max_tokens": "lots"}, "gen_kwargs max_tokens='lots'"),
])
def test_bad_gen_kwargs_fail_before_any_request_is_decoded(lm, monkeypatch, gen_kwargs, message):
    decoded = []
    monkeypatch.setattr(harness, "generate", lambda adapter, prompts, *a: decoded.append(prompts))
    # The good request sorts first (longest prompt first), so it would be decoded before the bad one's turn.
    good, bad = request("a longer prompt that is decoded first"), request("short", doc_id=1, **gen_kwargs)
    with pytest.raises(ValueError) as error:
        lm.generate_until([good, bad])
    assert message in str(error.value) and "\n" not in str(error.value)
    assert decoded == []


def test_an_over_long_prompt_loses_its_start_with_one_warning(lm, monkeypatch, caplog):
    monkeypatch.setattr(lm.adapter, "spec", dataclasses.replace(lm.adapter.spec, max_length=40))
    prompted = []
    monkeypatch.setattr(harness, "generate", lambda adapter, prompts, config, seeds, gen_length: (
        prompted.extend(prompts) or [[lm.adapter.spec.eos_id] * gen_length] * len(prompts),
        [{"nfe": 1}] * len(prompts)))
    words = " ".join(f"w{i}" for i in range(60))
    with caplog.at_level("WARNING"):
        lm.generate_until([request(words), request(words + " again", doc_id=1)])
    full_ids = lm.encode(words)
    assert len(full_ids) > 40 - 32
    assert sorted(prompted) == sorted([full_ids[-8:], lm.encode(words + " again")[-8:]])
    assert [r.message for r in caplog.records].count(
        "prompts longer than 8 tokens are left-truncated (model max length 40 minus generation 32)") == 1


def test_empty_prompt_is_rejected(lm):
    with pytest.raises(ValueError, match="empty prompt"):
        lm.generate_until([request("")])


def test_decode_stats_are_appended_per_request_and_summarised_per_task(tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    lm = make_lm(f"mode=info_gain,decode_stats={stats_file}")
    lm.generate_until([request("Write a story.", doc_id=0), request("0123 4321", doc_id=1)])
    rows = [json.loads(line) for line in stats_file.read_text().splitlines()]
    assert sorted(row["doc_id"] for row in rows) == [0, 1]
    assert all(row["task"] == "unit" and row["nfe"] == 16 and row["seconds"] > 0 for row in rows)
    summary = lm.get_model_info()["decode_stats_mean"]["unit"]
    assert summary["requests"] == 2 and summary["nfe"] == 16
    assert summary["cumulative_entropy"] == sum(row["cumulative_entropy"] for row in rows) / 2


def test_results_record_each_request_the_device_used_and_what_a_task_changed(tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    lm = make_lm(f"mode=original,decode_stats={stats_file}")
    lm.generate_until([request("Write a story.", doc_id=0, temperature=0.7, do_sample=True),
                       request("0123 4321", doc_id=1, temperature=0.7, do_sample=True)])
    info = lm.get_model_info()
    logged = sorted((json.loads(line) for line in stats_file.read_text().splitlines()), key=lambda row: row["doc_id"])
    assert info["decode_stats_per_request"] == logged  # the results JSON joins with samples by doc_id
    assert info["sampler_per_task"] == {"unit": {"temperature": 0.7}} and info["sampler"]["temperature"] == 0.0
    assert info["device_used"] == "cpu"
    settings = lm.output_settings()  # none of these is a setting of the resume cache
    assert not {"decode_stats_per_request", "sampler_per_task", "device_used"} & settings.keys()


def test_a_model_built_in_python_is_evaluated_like_its_checkpoint():
    """HFLM's habit: pretrained=<a model object> with tokenizer=. One of our classes, or a peft model around
    one, decodes exactly as the same checkpoint loaded by name."""
    import peft

    from lm_eval_infogain.models.registry import load

    adapter, tokenizer = load("tiny-random-llada", dtype="float32", device="cpu")
    by_name = make_lm("mode=original").generate_until([request("Solve: 1 2 3 4")])
    settings = simple_parse_args_string(FAST) | {"mode": "original"}
    built = MDMInfoGainLM(**settings | {"pretrained": adapter.model, "tokenizer": tokenizer})
    assert built.generate_until([request("Solve: 1 2 3 4")]) == by_name
    assert built.get_model_info()["pretrained"].startswith("<in-memory LLaDAModelLM")
    lora = peft.get_peft_model(adapter.model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    wrapped = MDMInfoGainLM(**settings | {"pretrained": lora, "tokenizer": "tiny-random-llada"})
    assert wrapped.generate_until([request("Solve: 1 2 3 4")]) == by_name  # LoRA's B starts at zero


@pytest.mark.parametrize("kwargs, message", [
    ({"pretrained": torch.nn.Linear(2, 2), "tokenizer": "tiny-random-llada"}, "pretrained=Linear is invalid"),
    ({"pretrained": "BUILT", "tokenizer": None}, "was given as a built model without tokenizer="),
])
def test_a_built_model_that_is_not_ours_or_lacks_a_tokenizer_is_one_line(kwargs, message):
    from lm_eval_infogain.models.registry import load

    if kwargs["pretrained"] == "BUILT":
        kwargs["pretrained"] = load("tiny-random-llada", dtype="float32", device="cpu")[0].model
    with pytest.raises(UsageError, match=message):
        MDMInfoGainLM(device="cpu", **kwargs)
