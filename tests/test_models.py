"""The five architectures: official layouts, strict loading, the bundled tiny models, attention patterns,
Dream's shift, SDAR's block-causal cache, and loading through the harness (arch=, trust_remote_code, peft)."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lm_eval_infogain.harness import MDMInfoGainLM
from lm_eval_infogain.models.registry import ARCHITECTURES, BUNDLED, HUB_IDS, load, resolve_pretrained
from lm_eval_infogain.models.tiny import TINY_MODELS, build_tiny_random
from lm_eval_infogain.sampling.loop import build_canvas

ARCHS = list(TINY_MODELS)
BIDIRECTIONAL = ["llada", "mmada", "dream"]
QWEN_LAYER = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def official_keys(arch: str, layers: int) -> set[str]:
    """Parameter names of the released checkpoints (LLaDA/MMaDA: OLMo names; Dream: Qwen2; SDAR: Qwen3)."""
    if arch in ("llada", "mmada"):
        per_block = ["attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out"]
        keys = {f"model.transformer.blocks.{i}.{name}.weight" for i in range(layers) for name in per_block}
        return keys | {"model.transformer.wte.weight", "model.transformer.ln_f.weight",
                       "model.transformer.ff_out.weight"}
    per_layer = [f"{name}.weight" for name in QWEN_LAYER]
    if arch == "dream":
        per_layer += ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"]
    else:
        per_layer += ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
    keys = {f"model.layers.{i}.{name}" for i in range(layers) for name in per_layer}
    return keys | {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}


@pytest.fixture(scope="module")
def loaded():
    return {arch: load(f"tiny-random-{arch}", dtype="float32", device="cpu") for arch in ARCHS}


def text_ids(tokenizer, text="Solve: 1 2 3 4. The answer is: 44-15=29") -> torch.Tensor:
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, L]


# ---------------------------------------------------------------- layouts and loading


@pytest.mark.parametrize("arch", ARCHS)
def test_bundled_checkpoint_uses_official_parameter_names(arch):
    assert set(load_file(BUNDLED[f"tiny-random-{arch}"] / "model.safetensors")) == official_keys(arch, 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_official_state_dict_loads_strictly_through_the_harness(arch, tmp_path):
    # A state dict written under the official names (not by our save_pretrained) loads with nothing missing.
    source = BUNDLED[f"tiny-random-{arch}"]
    for name in source.iterdir():
        if name.name != "model.safetensors":
            shutil.copy(name, tmp_path / name.name)
    official = {key: torch.randn(tensor.shape) * 0.1 for key, tensor in load_file(source / "model.safetensors").items()}
    save_file(official, tmp_path / "model.safetensors", metadata={"format": "pt"})
    lm = MDMInfoGainLM(pretrained=str(tmp_path), device="cpu")
    loaded_weights = dict(lm.adapter.model.named_parameters())
    assert set(loaded_weights) == official_keys(arch, 2)
    assert all(torch.equal(loaded_weights[key].detach(), official[key]) for key in official)


@pytest.mark.parametrize("arch", ["llada", "dream", "sdar"])
def test_a_checkpoint_missing_a_weight_is_refused(arch, tmp_path):
    shutil.copytree(BUNDLED[f"tiny-random-{arch}"], tmp_path, dirs_exist_ok=True)
    weights = load_file(tmp_path / "model.safetensors")
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"lacks 1 weight.*{dropped}"):
        load(str(tmp_path))


@pytest.mark.parametrize("config_mask_id, message", [
    ({"mask_token_id": None}, r"has no mask token \(config.mask_token_id or tokenizer.mask_token\)"),
    # Absent from config.json, the mask id is LLaDA's own default (126336), far outside the tiny vocabulary.
    ({}, "the mask token id 126336 is outside the vocabulary .size 500.; set mask_token_id in config.json"),
])
def test_a_checkpoint_without_a_mask_token_is_refused(tmp_path, config_mask_id, message):
    shutil.copytree(BUNDLED["tiny-random-llada"], tmp_path, dirs_exist_ok=True)
    for name, key, replacement in (("tokenizer_config.json", "mask_token", {}),
                                   ("config.json", "mask_token_id", config_mask_id)):
        settings = json.loads((tmp_path / name).read_text())
        del settings[key]
        (tmp_path / name).write_text(json.dumps(settings | replacement))
    with pytest.raises(ValueError, match=message):
        MDMInfoGainLM(pretrained=str(tmp_path), device="cpu")


@pytest.mark.parametrize("arch", ARCHS)
def test_rebuilding_gives_the_committed_weights(arch, tmp_path: Path):
    build_tiny_random(arch, tmp_path)
    rebuilt = load_file(tmp_path / "model.safetensors")
    committed = load_file(BUNDLED[f"tiny-random-{arch}"] / "model.safetensors")
    assert rebuilt.keys() == committed.keys()
    assert all(torch.equal(rebuilt[key], committed[key]) for key in committed)
    files = sorted(path.name for path in BUNDLED[f"tiny-random-{arch}"].iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == files
    for name in files:  # every file, config.json too: bit-identical, whatever transformers version rebuilt it
        assert (tmp_path / name).read_bytes() == (BUNDLED[f"tiny-random-{arch}"] / name).read_bytes(), name


@pytest.mark.parametrize("arch, mask_token, turn_end", [
    ("llada", "<|mdm_mask|>", "<|eot_id|>"), ("mmada", "<|mdm_mask|>", "<|eot_id|>"),
    ("dream", "<|mask|>", None), ("sdar", "<|MASK|>", "<|im_end|>"), ("trado", "<|MASK|>", "<|im_end|>"),
])
def test_special_ids_come_from_the_checkpoint(loaded, arch, mask_token, turn_end):
    adapter, tokenizer = loaded[arch]
    assert tokenizer.convert_ids_to_tokens(adapter.spec.mask_id) == mask_token
    assert adapter.spec.eos_id == tokenizer.eos_token_id == adapter.spec.pad_id
    assert adapter.spec.eos_id in adapter.spec.stop_ids
    if turn_end is not None:
        assert tokenizer.convert_tokens_to_ids(turn_end) in adapter.spec.stop_ids


@pytest.mark.parametrize("arch, expected", [
    ("llada", "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("mmada", "<|startoftext|><|start_header_id|>user<|end_header_id|>\nhi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n"),
    ("dream", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
              "<|im_start|>assistant\n"),
    ("sdar", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
])
def test_chat_template_is_the_familys(loaded, arch, expected):
    _, tokenizer = loaded[arch]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == expected


def test_short_names_and_hub_aliases():
    assert resolve_pretrained("dream") == "Dream-org/Dream-v0-Instruct-7B"
    assert resolve_pretrained("trado") == "Gen-Verse/TraDo-8B-Instruct"
    assert set(HUB_IDS) == set(ARCHITECTURES)
    assert resolve_pretrained("tiny-random-sdar") == str(BUNDLED["tiny-random-sdar"])
    assert resolve_pretrained("/some/dir") == "/some/dir"


# ---------------------------------------------------------------- forward, attention, shift


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_gives_one_logit_row_per_position(loaded, arch):
    adapter, tokenizer = loaded[arch]
    ids = text_ids(tokenizer).repeat(2, 1)
    logits = adapter.model(ids)
    assert logits.shape == (2, ids.shape[1], adapter.spec.vocab_size) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", BIDIRECTIONAL)
def test_bidirectional_models_see_later_tokens(loaded, arch):
    adapter, tokenizer = loaded[arch]
    ids = text_ids(tokenizer)
    changed = ids.clone()
    changed[0, -1] = adapter.spec.mask_id
    assert not torch.allclose(adapter.model(ids)[0, 1], adapter.model(changed)[0, 1])


@pytest.mark.parametrize("arch", ["sdar", "trado"])
def test_sdar_attention_is_block_causal(loaded, arch):
    adapter, tokenizer = loaded[arch]
    size = adapter.spec.attention_block_size
    ids = text_ids(tokenizer)[:, :3 * size]  # three blocks
    logits = adapter.model(ids)
    later_block = ids.clone()
    later_block[0, 2 * size] = adapter.spec.mask_id  # first token of the third block
    changed = adapter.model(later_block)
    torch.testing.assert_close(changed[:, :2 * size], logits[:, :2 * size])  # earlier blocks cannot see it
    same_block = ids.clone()
    same_block[0, 2 * size - 1] = adapter.spec.mask_id  # last token of the second block
    assert not torch.allclose(adapter.model(same_block)[0, size], logits[0, size])  # its own block sees it


def test_dream_logits_are_shifted_by_one(loaded, monkeypatch):
    adapter, tokenizer = loaded["dream"]
    ids = text_ids(tokenizer)
    aligned = adapter.model(ids)
    monkeypatch.setattr(adapter.model, "logits_shift", 0)
    raw = adapter.model(ids)
    torch.testing.assert_close(aligned[:, 1:], raw[:, :-1])
    torch.testing.assert_close(aligned[:, 0], raw[:, 0])


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padding_does_not_change_the_real_positions(loaded, arch):
    adapter, tokenizer = loaded[arch]
    ids = text_ids(tokenizer)
    pad = adapter.spec.attention_block_size or 3  # a block-causal model's canvases pad whole blocks
    padded = torch.cat([torch.full((1, pad), adapter.spec.pad_id), ids], dim=1)
    key_mask = torch.cat([torch.zeros(1, pad, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)], dim=1)
    # A shifted model predicts the first real token from a pad: a prompt position, never read by the sampler.
    skip = adapter.spec.logits_shift
    torch.testing.assert_close(adapter.model(padded, key_mask)[:, pad + skip:], adapter.model(ids)[:, skip:],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_sliced_forward_against_a_cache_matches_the_full_forward(loaded, arch):
    # What each cache mode does right after the block-start forward: the loop's own windows.
    adapter, tokenizer = loaded[arch]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in ["Solve: 1 2 3 4", "Write it"]]
    size = adapter.spec.attention_block_size
    if size:  # one canvas holds prompts whose lengths agree modulo the block size (see loop.generate)
        prompts = [prompts[0], prompts[0][:len(prompts[0]) - size]]
    canvas = build_canvas(prompts, 32, adapter.spec, "cpu")
    batch, total = canvas.ids.shape
    canvas.ids[:, -32:-20] = torch.randint(10, 300, (batch, 12))  # some committed tokens, some masks
    full = adapter.forward(canvas.ids, canvas.positions, canvas.key_mask, None, 0, 0)  # [B, T, V]
    cache = adapter.new_cache(batch, total)
    adapter.forward(canvas.ids, canvas.positions, canvas.key_mask, cache, 0, 0)  # builds the cache
    shift = adapter.spec.logits_shift
    for start in (canvas.prompt_length, canvas.prompt_length + 16):
        for end in (start + 16, total):
            window_start = start - start % size if size else start - shift
            if size and end == total:
                continue  # a block-causal window ends with its block
            sliced = adapter.forward(canvas.ids[:, window_start:end], canvas.positions, canvas.key_mask, cache,
                                     window_start, start)
            torch.testing.assert_close(sliced, full[:, start:end], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the harness path


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_round_trip_through_the_harness(loaded, arch, tmp_path):
    adapter, tokenizer = loaded[arch]
    adapter.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    shutil.copy(BUNDLED[f"tiny-random-{arch}"] / "generation_config.json", tmp_path)
    lm = MDMInfoGainLM(pretrained=str(tmp_path), device="cpu", gen_length=16, steps=8, block_length=8)
    # a block-causal model attends in the decoding blocks (attention_block=decoding, the default)
    block_causal = adapter.spec.attention_block_size is not None
    assert lm.adapter.spec == dataclasses.replace(adapter.spec, attention_block_size=8 if block_causal else None)
    ids = text_ids(tokenizer)
    torch.testing.assert_close(lm.adapter.model(ids), adapter.model(ids))
    assert lm.get_model_info()["model_type"] == adapter.model.config.model_type


def test_block_causal_models_default_to_their_own_block(loaded):
    lm = MDMInfoGainLM(pretrained="tiny-random-sdar", device="cpu")
    assert lm.sampler.block_length == lm.adapter.spec.attention_block_size == 4
    assert MDMInfoGainLM(pretrained="tiny-random-sdar", device="cpu", block_length=8).sampler.block_length == 8


@pytest.mark.parametrize("args, message", [
    (dict(pretrained="tiny-random-sdar", use_cache="dual"), r"use_cache='dual' is invalid; allowed: none \| prefix"),
    (dict(pretrained="tiny-random-trado", block_length=6, gen_length=36, steps=36, attention_block="model"),
     "block_length=6 is invalid; allowed: a multiple of the model's attention block size 4"),
    (dict(pretrained="tiny-random-sdar", attention_block="config"), "attention_block='config' is invalid; allowed: "
                                                                    "decoding | model"),
    (dict(pretrained="tiny-random-llada", attention_block="model"), "attention_block='model' is invalid; allowed: "
                                                                    "unset for a bidirectional model"),
    (dict(pretrained="tiny-random-llada", arch="gpt2"), "arch='gpt2' is unknown; allowed: llada, mmada"),
    (dict(pretrained="tiny-random-llada", trust_remote_code="yes"), "trust_remote_code='yes' is invalid"),
])
def test_model_mismatches_are_refused_at_construction(args, message):
    with pytest.raises(ValueError, match=message):
        MDMInfoGainLM(device="cpu", **args)


def test_arch_overrides_detection(tmp_path):
    # A config.json with no model_type we know: detection fails, arch= names it.
    shutil.copytree(BUNDLED["tiny-random-dream"], tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="Dream", architectures=["SomethingElse"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert MDMInfoGainLM(pretrained=str(tmp_path), device="cpu").adapter.spec.logits_shift == 1
    config.update(model_type="my-dream", auto_map={"AutoModel": "modeling_dream.DreamModel"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert MDMInfoGainLM(pretrained=str(tmp_path), device="cpu").adapter.spec.logits_shift == 1  # from auto_map
    config.pop("auto_map")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type='my-dream', which is not a known architecture"):
        MDMInfoGainLM(pretrained=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="config.json lacks d_model, n_heads.*arch='llada'"):  # the wrong family
        MDMInfoGainLM(pretrained=str(tmp_path), device="cpu", arch="llada")


REMOTE_MODELING = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class ToyConfig(PretrainedConfig):
    model_type = "toy-mdm"

    def __init__(self, vocab_size=500, hidden=16, mask_token_id=1, eos_token_id=0, pad_token_id=0, **kwargs):
        self.vocab_size, self.hidden, self.mask_token_id = vocab_size, hidden, mask_token_id
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.head = torch.nn.Linear(config.hidden, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        return (self.head(hidden + hidden.mean(1, keepdim=True)),)
'''


def test_unknown_architecture_runs_its_own_code_when_trusted(tmp_path, loaded):
    _, tokenizer = loaded["sdar"]
    (tmp_path / "modeling_toy.py").write_text(REMOTE_MODELING)
    tokenizer.save_pretrained(tmp_path)
    config = {"model_type": "toy-mdm", "vocab_size": len(tokenizer), "hidden": 16,
              "mask_token_id": tokenizer.mask_token_id, "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id,
              "auto_map": {"AutoConfig": "modeling_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from transformers import AutoConfig, AutoModel

    toy = AutoModel.from_config(AutoConfig.from_pretrained(tmp_path, trust_remote_code=True), trust_remote_code=True)
    toy.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        MDMInfoGainLM(pretrained=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="use_cache='prefix' is invalid; allowed: none for this model"):
        MDMInfoGainLM(pretrained=str(tmp_path), device="cpu", trust_remote_code=True, use_cache="prefix")
    lm = MDMInfoGainLM(pretrained=str(tmp_path), device="cpu", trust_remote_code=True, gen_length=16, steps=8,
                       block_length=8)
    assert lm.sampler.use_cache == "none"
    from lm_eval_infogain.sampling.loop import generate

    prompt = tokenizer("Solve: 1 2", add_special_tokens=False)["input_ids"]
    generated, stats = generate(lm.adapter, [prompt], lm.sampler, [0])
    assert len(generated[0]) == 16 and lm.adapter.spec.mask_id not in generated[0] and stats[0]["nfe"] == 8


def test_peft_lora_adapter_is_merged(tmp_path, loaded):
    from peft import LoraConfig, get_peft_model

    adapter, tokenizer = loaded["llada"]
    base = type(adapter.model).from_pretrained(BUNDLED["tiny-random-llada"])
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path)
    ids = text_ids(tokenizer)
    expected = lora(ids)
    lm = MDMInfoGainLM(pretrained="tiny-random-llada", device="cpu", peft=str(tmp_path))
    merged = lm.adapter.model(ids)
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged, adapter.model(ids), atol=1e-3)
    assert not any("lora" in name for name, _ in lm.adapter.model.named_parameters())


# ---------------------------------------------------------------- config keys: honoured or refused


def with_config(arch: str, folder: Path, **changes) -> Path:
    """A copy of tiny-random-<arch> in `folder` whose config.json has `changes`."""
    shutil.copytree(BUNDLED[f"tiny-random-{arch}"], folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))
    return folder


def saved_model(arch: str, folder: Path, **changes) -> Path:
    """with_config, with weights built for the changed config (random, biases included) saved over the old ones."""
    with_config(arch, folder, **changes)
    model_cls = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = model_cls(model_cls.config_class.from_pretrained(folder))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.1)
    model.save_pretrained(folder)
    return folder


QWEN_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "max_position_embeddings",
               "tie_word_embeddings")


def qwen_logits(model, ids) -> torch.Tensor:
    """Logits of transformers' own Qwen2 (for Dream) or Qwen3 (for SDAR) model with the same config and
    weights: Dream attends to everything, SDAR in its config's blocks; Dream's logits are then shifted."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config = model.config
    dream = config.model_type == "Dream"
    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if dream else (Qwen3Config, Qwen3ForCausalLM)
    fields = {key: getattr(config, key) for key in QWEN_FIELDS} | ({} if dream else
                                                                   {"attention_bias": config.attention_bias})
    rope = dict(config.rope_scaling or {"rope_type": "default"}) | {"rope_theta": config.rope_theta}
    reference = model_cls(config_cls(**fields, rope_parameters=rope, attn_implementation="sdpa")).eval()
    reference.load_state_dict(model.state_dict(), strict=True)
    positions = torch.arange(ids.shape[1])[None]  # [1, L]
    blocks = positions[0] // (ids.shape[1] if dream else config.block_size)  # [L]
    mask = (blocks[None, :] <= blocks[:, None])[None, None]  # [1, 1, L, L] True = attend
    with torch.no_grad():
        logits = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1) if dream else logits


LONG_IDS = torch.arange(3, 43)[None]  # [1, 40]: positions far enough for a scaled RoPE to matter
ROPE_SCALINGS = {
    "none": None,
    "linear": {"type": "linear", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
    # transformers 5 (and the official code) take original_max_position_embeddings = max_position_embeddings
    "yarn_without_original": {"rope_type": "yarn", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16},
}


@pytest.mark.parametrize("scaling", ROPE_SCALINGS)
@pytest.mark.parametrize("arch", ["dream", "sdar"])
def test_rope_scaling_gives_transformers_own_logits(loaded, arch, scaling, tmp_path):
    model = load(str(with_config(arch, tmp_path, rope_scaling=ROPE_SCALINGS[scaling])))[0].model
    with torch.no_grad():
        logits = model(LONG_IDS)
        unscaled = loaded[arch][0].model(LONG_IDS)
    torch.testing.assert_close(logits, qwen_logits(model, LONG_IDS), atol=1e-5, rtol=1e-5)
    if scaling != "none":
        assert (logits - unscaled).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["dream", "sdar"])
def test_hidden_act_is_the_configs(loaded, arch, tmp_path):
    model = load(str(with_config(arch, tmp_path, hidden_act="gelu")))[0].model
    with torch.no_grad():
        logits = model(LONG_IDS)
        assert (logits - loaded[arch][0].model(LONG_IDS)).abs().max() > 1e-3
    torch.testing.assert_close(logits, qwen_logits(model, LONG_IDS), atol=1e-5, rtol=1e-5)


def test_sdar_attention_bias_gives_qkvo_biases_like_qwen3(tmp_path):
    folder = saved_model("sdar", tmp_path, attention_bias=True)
    model = load(str(folder))[0].model
    biases = {name for name, _ in model.named_parameters() if name.endswith(".bias")}
    assert biases == {f"model.layers.{i}.self_attn.{proj}.bias" for i in range(2)
                      for proj in ("q_proj", "k_proj", "v_proj", "o_proj")}
    torch.testing.assert_close(model(LONG_IDS), qwen_logits(model, LONG_IDS), atol=1e-5, rtol=1e-5)
    # The same weights under attention_bias false: 8 weights unused, which the official code would have used.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"attention_bias": False}))
    with pytest.raises(ValueError, match=r"model.safetensors holds 8 weight\(s\) the model does not use, e.g. "
                                         r"model.layers.0.self_attn.k_proj.bias"):
        load(str(folder))


def test_weights_the_official_code_ignores_too_are_allowed(loaded, tmp_path):
    shutil.copytree(BUNDLED["tiny-random-sdar"], tmp_path, dirs_exist_ok=True)
    weights = load_file(tmp_path / "model.safetensors")
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(16)  # saved by older checkpoints
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model = load(str(tmp_path))[0].model
    torch.testing.assert_close(model(LONG_IDS), loaded["sdar"][0].model(LONG_IDS))


def llada_logits(folder_or_name: str, ids=LONG_IDS, dtype="float32") -> torch.Tensor:
    with torch.no_grad():
        return load(folder_or_name, dtype=dtype)[0].model(ids)


def test_llada_scale_logits_divides_by_the_root_of_d_model(tmp_path):
    scaled = llada_logits(str(with_config("llada", tmp_path, scale_logits=True)))
    torch.testing.assert_close(scaled, llada_logits("tiny-random-llada") / 8.0)  # d_model 64


def test_llada_input_emb_norm_scales_the_embeddings(tmp_path):
    normed = llada_logits(str(with_config("llada", tmp_path / "normed", input_emb_norm=True)))
    shutil.copytree(BUNDLED["tiny-random-llada"], tmp_path / "scaled")
    weights = load_file(tmp_path / "scaled" / "model.safetensors")
    weights["model.transformer.wte.weight"] *= 64 ** 0.5  # the same scale, put into the weights instead
    save_file(weights, tmp_path / "scaled" / "model.safetensors", metadata={"format": "pt"})
    torch.testing.assert_close(normed, llada_logits(str(tmp_path / "scaled")), atol=1e-5, rtol=1e-5)


def test_llada_rope_full_precision_false_rotates_in_the_model_dtype(tmp_path):
    half = llada_logits(str(with_config("llada", tmp_path, rope_full_precision=False)), dtype="bfloat16")
    full = llada_logits("tiny-random-llada", dtype="bfloat16")
    assert not torch.equal(half, full)
    torch.testing.assert_close(half, full, atol=0.2, rtol=0.1)  # bf16 rounding of the rotation, nothing more


def test_llada_include_qkv_bias_adds_the_three_biases(tmp_path):
    model = load(str(saved_model("llada", tmp_path / "biased", include_qkv_bias=True)))[0].model
    biases = {name for name, _ in model.named_parameters() if name.endswith(".bias")}
    assert biases == {f"model.transformer.blocks.{i}.{proj}_proj.bias" for i in range(2) for proj in "qkv"}
    with pytest.raises(ValueError, match=r"lacks 6 weight\(s\).*q_proj.bias"):  # a checkpoint without them
        load(str(with_config("llada", tmp_path / "unbiased", include_qkv_bias=True)))


def test_llada_weight_tying_reads_the_embedding_as_head(tmp_path):
    folder = saved_model("llada", tmp_path, weight_tying=True)
    tied = load(str(folder))[0].model
    assert "model.transformer.ff_out.weight" not in load_file(folder / "model.safetensors")
    untied = type(tied)(type(tied.config)(**{**tied.config.to_dict(), "weight_tying": False}))
    state = tied.state_dict() | {"model.transformer.ff_out.weight": tied.model.transformer.wte.weight}
    untied.load_state_dict(state, strict=True)
    torch.testing.assert_close(tied(LONG_IDS), untied(LONG_IDS))


def test_llada_multi_query_attention_has_one_kv_head(tmp_path):
    adapter = load(str(saved_model("llada", tmp_path, multi_query_attention=True, n_kv_heads=None)))[0]
    assert adapter.model.model.transformer.blocks[0].k_proj.weight.shape == (16, 64)  # one head of 16
    assert adapter.model.cache_geometry() == (2, 1, 16)


@pytest.mark.parametrize("arch, changes, message", [
    ("llada", {"activation_type": "swiglu"}, "activation_type='swiglu' is invalid; allowed: \"silu\""),
    ("llada", {"block_type": "sequential"}, "block_type='sequential' is invalid; allowed: \"llama\""),
    ("llada", {"layer_norm_type": "default"}, "layer_norm_type='default' is invalid; allowed: \"rms\""),
    ("llada", {"layer_norm_with_affine": False}, "layer_norm_with_affine=False is invalid; allowed: true"),
    ("llada", {"bias_for_layer_norm": True}, "bias_for_layer_norm=True is invalid; allowed: null | false"),
    ("llada", {"attention_layer_norm": True}, "attention_layer_norm=True is invalid; allowed: false"),
    ("llada", {"include_bias": True}, "include_bias=True is invalid; allowed: false"),
    ("llada", {"include_qkv_bias": "yes"}, "include_qkv_bias='yes' is invalid; allowed: false | true"),
    ("llada", {"alibi": True}, "alibi=True is invalid; allowed: false"),
    ("llada", {"rope": False}, "rope=False is invalid; allowed: true"),
    ("llada", {"rope_full_precision": 1}, "rope_full_precision=1 is invalid; allowed: true | false"),
    ("llada", {"scale_logits": None}, "scale_logits=None is invalid; allowed: false | true"),
    ("llada", {"input_emb_norm": "no"}, "input_emb_norm='no' is invalid; allowed: false | true"),
    ("llada", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling=.* is invalid; allowed: null"),
    ("llada", {"multi_query_attention": True}, "n_kv_heads=4 is invalid; allowed: 1, which multi_query_attention"),
    ("mmada", {"activation_type": "gelu"}, "activation_type='gelu' is invalid"),
    ("dream", {"hidden_act": "no_such_act"}, "hidden_act='no_such_act' is invalid; allowed: an activation of"),
    ("dream", {"use_sliding_window": True}, "use_sliding_window=True is invalid; allowed: false"),
    ("dream", {"tie_word_embeddings": True}, "tie_word_embeddings=True is invalid; allowed: false"),
    ("dream", {"attention_bias": True}, "attention_bias=True is invalid; allowed: null | false"),
    ("dream", {"qk_norm": True}, "qk_norm=True is invalid; allowed: null | false"),
    ("dream", {"head_dim": 32}, "head_dim=32 is invalid; allowed: 16 .hidden_size / num_attention_heads"),
    ("dream", {"rope_scaling": {"type": "dynamic", "factor": 2.0}},
     "rope_scaling=.*dynamic.* is invalid; allowed: null or a dict whose type is one of linear, yarn, llama3"),
    ("sdar", {"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope_scaling=.*longrope.* is invalid"),
    ("sdar", {"rope_scaling": {"type": "linear"}}, r"rope_scaling=\{'type': 'linear'\} is invalid \(KeyError"),
    ("sdar", {"attention_bias": "true"}, "attention_bias='true' is invalid; allowed: false | true"),
    ("sdar", {"qk_norm": False}, "qk_norm=False is invalid; allowed: null | true"),
    ("sdar", {"use_sliding_window": True}, "use_sliding_window=True is invalid"),
    ("trado", {"hidden_act": "swish2"}, "hidden_act='swish2' is invalid"),
])
def test_a_config_value_not_implemented_stops_the_load_in_one_line(arch, changes, message, tmp_path):
    folder = with_config(arch, tmp_path, **changes)
    with pytest.raises(ValueError, match=f"^pretrained='{tmp_path}': config.json {message}") as error:
        MDMInfoGainLM(pretrained=str(folder), device="cpu")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- damaged checkpoints: one line naming the file


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])


def reshape_weight(folder: Path, name: str, rows: int) -> None:
    weights = load_file(folder / "model.safetensors")
    weights[name] = weights[name][:rows].clone()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def shard_index_naming_a_missing_shard(folder: Path) -> None:
    names = list(load_file(folder / "model.safetensors"))
    weight_map = {name: "model-00001-of-00002.safetensors" for name in names[:5]} | {
        name: "model-00002-of-00002.safetensors" for name in names[5:]}
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def shrink_vocabulary(folder: Path) -> None:  # a model whose embedding is smaller than its tokenizer
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"vocab_size": 300, "embedding_size": 300}))
    weights = load_file(folder / "model.safetensors")
    for name in ("model.transformer.wte.weight", "model.transformer.ff_out.weight"):
        weights[name] = weights[name][:300].clone()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


DAMAGES = {
    "truncated safetensors": (lambda folder: truncate(folder / "model.safetensors"),
                              "model.safetensors is not a readable safetensors file .*truncated"),
    "garbage safetensors": (lambda folder: (folder / "model.safetensors").write_bytes(b"\x00garbage" * 64),
                            "model.safetensors is not a readable safetensors file"),
    "no weights": (lambda folder: (folder / "model.safetensors").unlink(),
                   "model.safetensors is missing .and there is no model.safetensors.index.json."),
    "missing shard": (shard_index_naming_a_missing_shard, "model-00002-of-00002.safetensors is missing"),
    "wrong-shaped weight": (lambda folder: reshape_weight(folder, "model.transformer.blocks.1.q_proj.weight", 32),
                            r"model.safetensors holds model.transformer.blocks.1.q_proj.weight of shape \[32, 64\], "
                            r"but config.json makes it \[64, 64\]"),
    "vocabulary of another size": (lambda folder: reshape_weight(folder, "model.transformer.wte.weight", 400),
                                   r"model.safetensors holds model.transformer.wte.weight of shape \[400, 64\]"),
    "vocabulary smaller than the tokenizer": (shrink_vocabulary,
                                              "the tokenizer .tokenizer.json. has 500 tokens but the model has 300"),
    "missing tokenizer.json": (lambda folder: (folder / "tokenizer.json").unlink(),
                               "tokenizer.json is missing .* the folder has no tokenizer"),
    "corrupt tokenizer.json": (lambda folder: truncate(folder / "tokenizer.json"),
                               "tokenizer.json cannot be read as a tokenizer"),
    "tokenizer.json of another format": (lambda folder: (folder / "tokenizer.json").write_text('{"model": 3}'),
                                         "tokenizer.json cannot be read as a tokenizer"),
    "corrupt config.json": (lambda folder: truncate(folder / "config.json"), "config.json is not valid JSON"),
    "empty directory": (lambda folder: [file.unlink() for file in folder.iterdir()], "is an empty directory"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(damage, tmp_path):
    folder = tmp_path / "checkpoint"
    shutil.copytree(BUNDLED["tiny-random-llada"], folder)
    damage_folder, message = DAMAGES[damage]
    damage_folder(folder)
    with pytest.raises(ValueError, match=message) as error:
        MDMInfoGainLM(pretrained=str(folder), device="cpu")
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- bundled configs in the official layout

# The keys each official configuration class reads (ARCHITECTURES.md's config tables; the official
# configuration_llada.ModelConfig, Dream's Qwen2-derived DreamConfig, SDAR's Qwen3-derived SDARConfig).
LLADA_CONFIG_KEYS = {
    "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_ratio", "mlp_hidden_size", "activation_type", "block_type",
    "block_group_size", "alibi", "alibi_bias_max", "rope", "rope_full_precision", "flash_attention",
    "attention_dropout", "multi_query_attention", "attention_layer_norm", "residual_dropout", "embedding_dropout",
    "input_emb_norm", "layer_norm_type", "layer_norm_with_affine", "rms_norm_eps", "attention_layer_norm_with_affine",
    "max_sequence_length", "rope_theta", "include_qkv_bias", "include_bias", "bias_for_layer_norm", "scale_logits",
    "vocab_size", "embedding_size", "weight_tying", "eos_token_id", "pad_token_id", "mask_token_id", "init_device",
    "init_fn", "init_std", "init_cutoff_factor", "precision", "use_cache", "model_type", "architectures",
}
MMADA_CONFIG_KEYS = LLADA_CONFIG_KEYS | {"llm_vocab_size", "codebook_size", "num_vq_tokens", "new_vocab_size",
                                        "num_new_special_tokens"}
QWEN_CONFIG_KEYS = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache",
    "tie_word_embeddings", "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id", "model_type",
    "architectures",
}
OFFICIAL_CONFIG_KEYS = {"llada": LLADA_CONFIG_KEYS, "mmada": MMADA_CONFIG_KEYS, "dream": QWEN_CONFIG_KEYS,
                        "sdar": QWEN_CONFIG_KEYS | {"head_dim", "attention_bias", "block_size"}}
FAMILY = {"tiny-random-llada": "llada", "tiny-random-mmada": "mmada", "tiny-random-dream": "dream",
          "tiny-random-sdar": "sdar", "tiny-random-trado": "sdar", "tiny-llada-sudoku": "llada",
          "tiny-llada-countdown": "llada"}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_config_has_every_key_the_official_configuration_reads(name):
    config = json.loads((BUNDLED[name] / "config.json").read_text())
    assert OFFICIAL_CONFIG_KEYS[FAMILY[name]] - set(config) == set()


# ---------------------------------------------------------------- SDAR attention blocks: decoding or model


@pytest.mark.parametrize("reading, size", [(None, 8), ("decoding", 8), ("model", 4)])
def test_sdar_attention_blocks_follow_the_reading_and_are_recorded(reading, size, tmp_path):
    given = {} if reading is None else {"attention_block": reading}
    lm = MDMInfoGainLM(pretrained="tiny-random-sdar", device="cpu", block_length=8, gen_length=16, steps=16, **given)
    assert lm.adapter.spec.attention_block_size == size and lm.sampler.block_length == 8
    info = lm.get_model_info()
    assert (info["attention_block"], info["attention_block_size"]) == (reading or "decoding", size)
    assert lm.output_settings()["attention_block"] == (reading or "decoding")  # in the request-cache settings
    # The adapter attends in blocks of `size`: transformers' Qwen3 with that block-causal mask gives its logits.
    ids = LONG_IDS[:, :24]
    positions, key_mask = torch.arange(24)[None], torch.ones(1, 24, dtype=torch.bool)
    reference = load(str(with_config("sdar", tmp_path, block_size=size)))[0].model
    with torch.no_grad():
        logits = lm.adapter.forward(ids, positions, key_mask, None, 0, 0)
    torch.testing.assert_close(logits, qwen_logits(reference, ids), atol=1e-5, rtol=1e-5)


def test_sdar_default_block_length_makes_both_readings_agree():
    decoding = MDMInfoGainLM(pretrained="tiny-random-sdar", device="cpu")
    model = MDMInfoGainLM(pretrained="tiny-random-sdar", device="cpu", attention_block="model")
    assert decoding.adapter.spec == model.adapter.spec and decoding.sampler == model.sampler
