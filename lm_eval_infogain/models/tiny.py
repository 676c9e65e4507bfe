"""Build the bundled tiny random models, one per architecture: seeded weights, a config with every key
of the official configuration (the released values, sizes scaled down) and a small byte-level tokenizer
with the special tokens and chat template of the family it imitates.

`python -m lm_eval_infogain.models.tiny` rewrites lm_eval_infogain/assets/tiny-random-<arch> for
llada, mmada, dream, sdar and trado, bit-identically (config.json leaves out the transformers version that
wrote it); the results are committed so that `pretrained=tiny-random-<arch>`
works offline like any checkpoint, through the same loading code as a real one.
"""

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lm_eval_infogain.models.dream import DreamConfig, DreamModel
from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.models.mmada import MMaDAConfig, MMadaModelLM
from lm_eval_infogain.models.sdar import SDARConfig, SDARForCausalLM

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# Text the byte-level BPE learns its merges from: task-like English, digits and markup.
CORPUS = [
    "Solve the following puzzle. Fill in the grid so that every row, every column and every box "
    "contains each digit exactly once. Give the answer between <answer> and </answer>.",
    "Use the numbers and the operations + - * / to reach the target. The answer is: 44-15=29,79-29=50",
    "Question: how many apples are left? Let's think step by step. The answer is 42.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "def solve(values):\n    return sorted(values)\n",
    "0123456789 1234 2143 3412 4321 0000 <answer>1234341221434321</answer>",
]
LLAMA3_TEMPLATE = (  # LLaDA's: BOS, header-wrapped roles, two newlines, <|eot_id|>
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (  # Qwen ChatML; Dream's adds Qwen2.5's default system prompt, SDAR's (Qwen3) does not
    "{% if default_system and messages[0]['role'] != 'system' %}<|im_start|>system\nDEFAULT<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Family:
    """A tokenizer family: its special tokens, extra turn tokens, chat template and stop tokens."""

    special_tokens: dict
    turn_tokens: list
    chat_template: str
    stop_tokens: list = field(default_factory=list)  # generation_config.json eos list


LLAMA3 = Family({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                 "mask_token": "<|mdm_mask|>"},
                ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], LLAMA3_TEMPLATE,
                ["<|endoftext|>", "<|eot_id|>"])
# MMaDA's text generation uses the LLaDA template with a single newline after the header.
MMADA = Family(LLAMA3.special_tokens, LLAMA3.turn_tokens, LLAMA3_TEMPLATE.replace("\n\n", "\n"),
               LLAMA3.stop_tokens)
DREAM = Family({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>"},
               ["<|im_start|>", "<|im_end|>", "<|beginoftext|>"],
               CHATML_TEMPLATE.replace("default_system", "true").replace("DEFAULT", "You are a helpful assistant."),
               ["<|endoftext|>"])
QWEN3 = Family({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|MASK|>"},
               ["<|im_start|>", "<|im_end|>", "<think>", "</think>"],
               CHATML_TEMPLATE.replace("default_system", "false"), ["<|im_end|>", "<|endoftext|>"])


def build_tokenizer(family: Family = LLAMA3, vocab_size: int = 512, corpus: list[str] | None = None,
                    split_digits: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE learnt from `corpus` (default CORPUS); split_digits keeps every digit a token of its own."""
    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                             if split_digits else byte_level)
    backend.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(family.special_tokens.values())) + family.turn_tokens
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 4 if corpus is None else corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **family.special_tokens,
                                        additional_special_tokens=family.turn_tokens)
    tokenizer.chat_template = family.chat_template
    return tokenizer


def special_ids(tokenizer) -> dict:
    return dict(mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def llada_config(tokenizer):
    return LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128,
                       vocab_size=len(tokenizer), rope_theta=10000.0, max_sequence_length=2048,
                       architectures=["LLaDAModelLM"], **special_ids(tokenizer))


def mmada_config(tokenizer):
    rows = len(tokenizer) + 16  # the text vocabulary, then a 16-code image codebook
    return MMaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128, vocab_size=rows,
                       embedding_size=rows, llm_vocab_size=len(tokenizer), codebook_size=16, new_vocab_size=rows,
                       num_vq_tokens=16, rope_theta=10000.0, max_sequence_length=2048,
                       architectures=["MMadaModelLM"], **special_ids(tokenizer))


def dream_config(tokenizer):
    return DreamConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                       max_position_embeddings=2048, max_window_layers=2, bos_token_id=tokenizer.eos_token_id,
                       architectures=["DreamModel"], **special_ids(tokenizer))


def sdar_config(tokenizer):
    # head_dim 32 != hidden/heads: like SDAR-4B, the width of q is not the hidden size
    return SDARConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
                      max_position_embeddings=2048, block_size=4, bos_token_id=tokenizer.eos_token_id,
                      architectures=["SDARForCausalLM"], **special_ids(tokenizer))


# arch -> (model class, config builder, tokenizer family, seed)
TINY_MODELS = {
    "llada": (LLaDAModelLM, llada_config, LLAMA3, 0),
    "mmada": (MMadaModelLM, mmada_config, MMADA, 1),
    "dream": (DreamModel, dream_config, DREAM, 2),
    "sdar": (SDARForCausalLM, sdar_config, QWEN3, 3),
    "trado": (SDARForCausalLM, sdar_config, QWEN3, 4),
}


def build_tiny_random(arch: str, out_dir: Path, weight_std: float = 0.1) -> Path:
    model_cls, make_config, family, seed = TINY_MODELS[arch]
    tokenizer = build_tokenizer(family)
    torch.manual_seed(seed)
    model = model_cls(make_config(tokenizer))
    # Weights far larger than a trained model's initialisation: a near-uniform random model gives
    # every masked position the same confidence up to float noise, which tests nothing about order.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1 or name.endswith(".bias"):
                parameter.normal_(std=weight_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    # without the writer's transformers_version, so that a rebuild under another transformers is bit-identical
    config_file = out_dir / "config.json"
    config = json.loads(config_file.read_text())
    config.pop("transformers_version", None)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out_dir)
    generation_config = {"eos_token_id": tokenizer.convert_tokens_to_ids(family.stop_tokens),
                         "pad_token_id": tokenizer.pad_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    return out_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(TINY_MODELS), nargs="*", default=sorted(TINY_MODELS))
    parser.add_argument("--out", type=Path, default=ASSETS, help="parent folder of the tiny-random-<arch> folders")
    args = parser.parse_args()
    for arch in args.arch:
        print(build_tiny_random(arch, args.out / f"tiny-random-{arch}"))


if __name__ == "__main__":
    main()
