"""Build the bundled tiny random models: seeded weights, config and a small byte-level tokenizer.

`python -m lm_eval_infogain.models.tiny` rewrites lm_eval_infogain/assets/tiny-random-llada; the
result is committed so that `pretrained=tiny-random-llada` works offline like any checkpoint.
The tokenizer has what a real MDM checkpoint has: mask, EOS (= PAD), BOS, end-of-turn and a
LLaDA-style chat template.
"""

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "mask_token": "<|mdm_mask|>",
}
TURN_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
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


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(SPECIAL_TOKENS.values())) + TURN_TOKENS
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS,
                                        additional_special_tokens=TURN_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_random_llada(out_dir: Path, seed: int = 0, weight_std: float = 0.1) -> Path:
    tokenizer = build_tokenizer()
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128,
        vocab_size=len(tokenizer), rope_theta=10000.0, max_sequence_length=2048,
        mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, architectures=["LLaDAModelLM"],
    )
    torch.manual_seed(seed)
    model = LLaDAModelLM(config)
    # Weights far larger than a trained model's initialisation: a near-uniform random model gives
    # every masked position the same confidence up to float noise, which tests nothing about order.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=weight_std)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    generation_config = {"eos_token_id": [tokenizer.eos_token_id, end_of_turn], "pad_token_id": tokenizer.pad_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    return out_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS / "tiny-random-llada")
    parser.add_argument("--seed", type=int, default=0)
    print(build_tiny_random_llada(parser.parse_args().out, parser.parse_args().seed))


if __name__ == "__main__":
    main()
