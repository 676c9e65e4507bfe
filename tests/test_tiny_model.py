"""The bundled tiny random LLaDA: official layout, strict loading, reproducible build, tokenizer facts."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.models.registry import BUNDLED, load
from lm_eval_infogain.models.tiny import build_tiny_random_llada

BUNDLED_DIR = BUNDLED["tiny-random-llada"]


def official_llada_keys(num_layers: int) -> set[str]:
    per_block = ["attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out"]
    keys = {f"model.transformer.blocks.{i}.{name}.weight" for i in range(num_layers) for name in per_block}
    return keys | {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"}


def test_checkpoint_uses_official_parameter_names():
    assert set(load_file(BUNDLED_DIR / "model.safetensors")) == official_llada_keys(2)


def test_official_state_dict_loads_strictly(tmp_path):
    config = LLaDAConfig(d_model=32, n_heads=4, n_layers=3, mlp_hidden_size=48, vocab_size=40,
                         mask_token_id=39, eos_token_id=38, pad_token_id=38)
    LLaDAModelLM(config).save_pretrained(tmp_path)
    _, info = LLaDAModelLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_rebuilding_gives_the_committed_weights(tmp_path: Path):
    build_tiny_random_llada(tmp_path)
    rebuilt, committed = load_file(tmp_path / "model.safetensors"), load_file(BUNDLED_DIR / "model.safetensors")
    assert rebuilt.keys() == committed.keys()
    assert all(torch.equal(rebuilt[key], committed[key]) for key in committed)


def test_tokenizer_has_mask_eos_pad_and_chat_template():
    adapter, tokenizer = load("tiny-random-llada")
    assert tokenizer.convert_ids_to_tokens(adapter.spec.mask_id) == "<|mdm_mask|>"
    assert adapter.spec.eos_id == tokenizer.eos_token_id == adapter.spec.pad_id
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in adapter.spec.stop_ids
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat == "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>" \
                   "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_model_is_bidirectional():
    adapter, _ = load("tiny-random-llada")
    ids = torch.arange(10, 30)[None]  # [1, 20]
    positions = torch.arange(20)[None]
    keys = torch.ones_like(ids, dtype=torch.bool)
    before = adapter.forward(ids, positions, keys, None, 0, 0)
    changed = ids.clone()
    changed[0, -1] = 5
    after = adapter.forward(changed, positions, keys, None, 0, 0)
    assert not torch.allclose(before[0, 0], after[0, 0])  # a later token changes the first position's logits
