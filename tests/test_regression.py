"""Regression floors for the bundled trained tiny models, and a smoke test of the training command.

tiny-llada-sudoku and tiny-llada-countdown are evaluated through the mdm_infogain backend on the first
test instances of their task (training never saw any of them), under the task metadata each was trained
with (its training_args.json) and the sampler settings its generation_config.json names, with
`original`, `random` and `info_gain`. The floors sit a few points below what results/tiny-models.md
records for the same settings; the orderings are the ones that make these models worth bundling:
informed orders beat a random one, and Info-Gain commits tokens at lower entropy than confidence order.
"""

import json
import shutil
import statistics

import pytest
import torch
from lm_eval.api.instance import Instance

from lm_eval_infogain import train_tiny
from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.registry import BUNDLED, checkpoint_sampler_defaults, load, short_name_arch
from lm_eval_infogain.tasks import countdown, sudoku

MODES = ("original", "random", "info_gain")
BATCH = 50  # prompts per canvas; outputs do not depend on it
# bundled model -> (task name, task module, the YAML's stop strings, instances)
SETTINGS = {
    "tiny-llada-sudoku": ("sudoku_4x4", sudoku, ["</answer>"], 100),
    "tiny-llada-countdown": ("countdown", countdown, ["Question:"], 100),
}
# model -> mode -> accuracy floor, a few points below the measured accuracy (results/tiny-models.md)
FLOORS = {
    "tiny-llada-sudoku": {"original": 0.42, "random": 0.07, "info_gain": 0.44},  # measured 0.47 / 0.11 / 0.49
    "tiny-llada-countdown": {"original": 0.03, "random": 0.0, "info_gain": 0.03},  # measured 0.06 / 0.01 / 0.06
}


def trained_metadata(model: str) -> dict:
    """The task metadata the bundled model was trained with (its evaluation data are that variant's)."""
    return json.loads((BUNDLED[model] / "training_args.json").read_text())["metadata"]


def evaluate(model: str, mode: str) -> dict:
    """Accuracy, mean NFE and mean cumulative entropy of one sampler on the task's first test instances, with
    the sampler settings of the model's generation_config.json."""
    task, module, until, limit = SETTINGS[model]
    lm = MDMInfoGainLM(pretrained=model, mode=mode, device="cpu", seed=0, batch_size=BATCH)
    docs = list(module.load_dataset(**trained_metadata(model))["test"].select(range(limit)))
    requests = [Instance("generate_until", doc, (module.doc_to_text(doc), {"until": until, "do_sample": False}),
                         idx=0, metadata=(task, doc_id, 1)) for doc_id, doc in enumerate(docs)]
    answers = lm.generate_until(requests, disable_tqdm=True)
    return {
        "acc": statistics.mean(module.process_results(doc, [answer])["acc"] for doc, answer in zip(docs, answers)),
        "nfe": statistics.mean(row["nfe"] for row in lm.decode_stats),
        "cumulative_entropy": statistics.mean(row["cumulative_entropy"] for row in lm.decode_stats),
    }


@pytest.fixture(scope="module", params=list(SETTINGS))
def measured(request):
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    return request.param, {mode: evaluate(request.param, mode) for mode in MODES}


def test_accuracy_floors(measured):
    model, results = measured
    accuracies = {mode: result["acc"] for mode, result in results.items()}
    assert all(accuracies[mode] >= FLOORS[model][mode] for mode in MODES), (model, accuracies)


def test_informed_orders_beat_random(measured):
    model, results = measured
    assert results["original"]["acc"] > results["random"]["acc"], (model, results)
    assert results["info_gain"]["acc"] > results["random"]["acc"], (model, results)


def test_info_gain_commits_at_lower_entropy_than_confidence_order(measured):
    model, results = measured
    entropy = {mode: result["cumulative_entropy"] for mode, result in results.items()}
    assert entropy["info_gain"] < entropy["original"] < entropy["random"], (model, entropy)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_trained_models_are_short_names_read_as_llada_from_their_config(name):
    assert short_name_arch(name) is None and BUNDLED[name].is_dir()
    adapter, tokenizer = load(name, device="cpu")
    assert adapter.model.config.model_type == "llada" and adapter.spec.mask_id == tokenizer.mask_token_id


# ---------------------------------------------------------------- train_tiny


@pytest.mark.parametrize("task,metadata", [("sudoku_4x4", {}), ("countdown", {}),
                                           ("countdown", {"countdown_max_number": 9, "countdown_max_target": 20})])
def test_training_data_never_holds_an_evaluation_instance(task, metadata):
    spec = train_tiny.TASKS[task]
    excluded = train_tiny.evaluation_keys(spec, metadata)
    test_keys = {spec.key(doc) for doc in spec.module.load_dataset(**metadata)["test"]}
    assert test_keys <= excluded and len(test_keys) == 500
    stream = train_tiny.training_docs(spec, seed=0, exclude=excluded, metadata=metadata)
    drawn = [next(stream) for _ in range(2000)]
    assert not {spec.key(doc) for doc in drawn} & excluded
    if metadata:  # the generator follows the metadata's ranges
        assert all(max(doc["numbers"]) <= 9 and doc["target"] <= 20 for doc in drawn)


@pytest.mark.parametrize("task", sorted(train_tiny.TASKS))
def test_training_text_is_the_task_prompt_then_its_answer_padded_with_eos(task):
    spec = train_tiny.TASKS[task]
    tokenizer = train_tiny.task_tokenizer(spec, seed=0)
    docs = list(spec.module.load_dataset()["train"].select(range(3)))
    ids, key_mask, answer_start = train_tiny.encode(spec, tokenizer, docs, spec.answer_length)
    assert ids.shape[1] == answer_start + spec.answer_length
    for row, doc in enumerate(docs):
        prompt = tokenizer.decode(ids[row, :answer_start][key_mask[row, :answer_start]])
        answer_ids = ids[row, answer_start:].tolist()
        assert prompt == spec.module.doc_to_text(doc)
        answer_end = answer_ids.index(tokenizer.eos_token_id)
        assert tokenizer.decode(answer_ids[:answer_end]) == spec.module.doc_to_target(doc)
        assert set(answer_ids[answer_end:]) == {tokenizer.eos_token_id}


def test_train_tiny_saves_a_model_the_backend_loads_and_runs(tmp_path):
    out = tmp_path / "tiny-sudoku"
    train_tiny.main(["--task", "sudoku_4x4", "--out", str(out), "--steps", "20", "--batch-size", "8",
                     "--layers", "1", "--hidden", "32", "--seed", "3", "--save-at", "5",
                     "--metadata", '{"sudoku_num_blanks": 11}'])
    # A run stopped early is the same model as the checkpoint saved at that step of the full run.
    train_tiny.main(["--task", "sudoku_4x4", "--out", str(tmp_path / "stopped"), "--steps", "20", "--batch-size", "8",
                     "--layers", "1", "--hidden", "32", "--seed", "3", "--stop-after", "5",
                     "--metadata", '{"sudoku_num_blanks": 11}'])
    stopped = load(str(tmp_path / "stopped"), device="cpu")[0].model.state_dict()
    adapter, tokenizer = load(str(out), device="cpu")
    assert adapter.model.config.model_type == "llada"
    assert {tokenizer.mask_token, tokenizer.eos_token, tokenizer.pad_token} <= set(tokenizer.get_vocab())
    assert tokenizer.chat_template and (out / "generation_config.json").is_file()
    early = load(str(out / "step-5"), device="cpu")[0].model.state_dict()
    final = adapter.model.state_dict()
    assert early.keys() == final.keys() and not all(torch.equal(early[key], final[key]) for key in final)
    assert all(torch.equal(early[key], stopped[key]) for key in final)
    record = json.loads((out / "training_args.json").read_text())
    assert (record["steps_done"], record["metadata"]) == (20, {"sudoku_num_blanks": 11})
    assert json.loads((out / "step-5" / "training_args.json").read_text())["steps_done"] == 5
    # The checkpoint's generation_config.json gives the backend its answer length as the default setting.
    defaults = MDMInfoGainLM(pretrained=str(out), device="cpu").sampler
    assert (defaults.gen_length, defaults.steps, defaults.block_length, defaults.use_cache) == (24, 24, 24, "none")
    lm = MDMInfoGainLM(pretrained=str(out), mode="info_gain", steps=12, device="cpu", seed=0)
    assert (lm.sampler.gen_length, lm.sampler.steps) == (24, 12)  # model_args win over the checkpoint's
    doc = sudoku.load_dataset(sudoku_num_blanks=11)["test"][0]
    request = Instance("generate_until", doc, (sudoku.doc_to_text(doc), {"until": ["</answer>"]}), idx=0,
                       metadata=("sudoku_4x4", 0, 1))
    [answer] = lm.generate_until([request], disable_tqdm=True)
    assert isinstance(answer, str)
    assert lm.decode_stats[0]["nfe"] >= 1


def test_sampler_defaults_come_only_from_their_own_generation_config_entry(tmp_path):
    checkpoint = tmp_path / "model"
    shutil.copytree(BUNDLED["tiny-random-llada"], checkpoint)
    path = checkpoint / "generation_config.json"
    generation = json.loads(path.read_text())
    path.write_text(json.dumps(generation | {"use_cache": True, "max_new_tokens": 7}))  # transformers' own keys
    assert checkpoint_sampler_defaults(str(checkpoint)) == {}
    path.write_text(json.dumps(generation | {"sampler_defaults": {"gen_length": 16, "block_length": 16}}))
    lm = MDMInfoGainLM(pretrained=str(checkpoint), device="cpu", steps=8)
    assert (lm.sampler.gen_length, lm.sampler.block_length, lm.sampler.steps) == (16, 16, 8)
    path.write_text(json.dumps(generation | {"sampler_defaults": {"gen_lenght": 16}}))
    with pytest.raises(ValueError, match="unknown key.*gen_lenght"):
        MDMInfoGainLM(pretrained=str(checkpoint), device="cpu")
