"""Train a tiny LLaDA-architecture masked diffusion model on one of the project's generated tasks, on CPU.

    python -m lm_eval_infogain.train_tiny --task sudoku_4x4 --out /tmp/tiny-sudoku --steps 1500
    python -m lm_eval_infogain.train_tiny --task countdown --metadata '{"countdown_max_number": 9}' --out ...

Each training example is the task's lm-eval prompt followed by its reference answer, exactly as the
task formats them (`doc_to_text` + `doc_to_target`), the answer padded with EOS to a fixed length as
LLaDA's SFT does; so the saved model runs on the lm-eval task unchanged, with gen_length equal to
that answer length. Examples come from the task's own generator under a training seed, with the
generator settings of `--metadata` (the task's metadata keys, e.g. sudoku_num_blanks), and every
instance of the task's evaluation data under that metadata (its `test` split and few-shot pool) is
skipped; evaluate with the same metadata.

Objective (LLaDA SFT): per sequence draw t ~ U(0, 1) and mask each answer token with probability
p = (1 - eps) t + eps; the prompt stays clean. The loss is the cross-entropy on masked positions,
each weighted 1/p, summed and divided by the number of answer positions in the batch.

The output folder holds model.safetensors, config.json, the tokenizer (a byte-level BPE learnt from
the task's prompts, one token per digit, LLaDA's special tokens and chat template),
generation_config.json and training_args.json; `pretrained=<folder>` loads it. `--save-at 2000,2400`
also saves the model as it is after those steps, in <folder>/step-2000/ and so on (a less trained
model, on the same learning-rate schedule); `--stop-after 600` ends the run there, saving that model
in <folder> (the schedule still follows --steps).
"""

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lm_eval_infogain.models.llada import LLaDAConfig, LLaDAModelLM
from lm_eval_infogain.models.tiny import LLAMA3, build_tokenizer, special_ids
from lm_eval_infogain.tasks import countdown, sudoku


@dataclass(frozen=True)
class TrainTask:
    """A task as training sees it: its module (doc_to_text, doc_to_target, load_dataset, generator_options),
    a generator of one doc from a random.Random and the generator options, the key that tells two
    instances apart, and the answer length."""

    module: ModuleType
    draw: Callable[..., dict]
    key: Callable[[dict], Hashable]
    answer_length: int  # tokens of answer + EOS padding; the gen_length to evaluate with


TASKS = {
    "sudoku_4x4": TrainTask(sudoku, sudoku.make_puzzle, lambda doc: doc["Puzzle"], answer_length=24),
    "countdown": TrainTask(countdown, countdown.make_instance, countdown.instance_key, answer_length=64),
}
TOKENIZER_CORPUS_DOCS = 200  # prompts + answers the tokenizer learns its merges from
VOCAB_SIZE = 512


def evaluation_keys(task: TrainTask, metadata: dict | None = None) -> frozenset:
    """Keys of every instance the task evaluates under `metadata` (test split and few-shot pool)."""
    splits = task.module.load_dataset(**(metadata or {}))
    return frozenset(task.key(doc) for split in splits.values() for doc in split)


def training_docs(task: TrainTask, seed: int, exclude: frozenset, metadata: dict | None = None):
    """An endless stream of generated docs (generator settings from `metadata`) whose keys are not in `exclude`."""
    rng = random.Random(f"train-{seed}")
    options = task.module.generator_options(metadata or {})
    while True:
        doc = task.draw(rng, **options)
        if task.key(doc) not in exclude:
            yield doc


def task_tokenizer(task: TrainTask, seed: int, metadata: dict | None = None):
    rng = random.Random(f"tokenizer-{seed}")
    options = task.module.generator_options(metadata or {})
    docs = [task.draw(rng, **options) for _ in range(TOKENIZER_CORPUS_DOCS)]
    corpus = [task.module.doc_to_text(doc) + task.module.doc_to_target(doc) for doc in docs]
    return build_tokenizer(LLAMA3, VOCAB_SIZE, corpus=corpus, split_digits=True)


def encode(task: TrainTask, tokenizer, docs: list[dict], answer_length: int):
    """(ids [B, T], key_mask [B, T], answer_start): prompts left-padded as the sampler's canvas is,
    answers right-padded with EOS to `answer_length`."""
    prompts = [tokenizer(task.module.doc_to_text(doc), add_special_tokens=False)["input_ids"] for doc in docs]
    answers = [tokenizer(task.module.doc_to_target(doc), add_special_tokens=False)["input_ids"] for doc in docs]
    longest = max(len(answer) for answer in answers)
    if longest >= answer_length:
        raise ValueError(f"an answer has {longest} tokens; --answer-length={answer_length} leaves no room for EOS")
    prompt_length = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(docs), prompt_length + answer_length), tokenizer.eos_token_id)  # [B, T]
    key_mask = torch.ones_like(ids, dtype=torch.bool)  # [B, T]
    for row, (prompt, answer) in enumerate(zip(prompts, answers)):
        pad = prompt_length - len(prompt)
        ids[row, :pad] = tokenizer.pad_token_id
        key_mask[row, :pad] = False
        ids[row, pad:prompt_length + len(answer)] = torch.tensor(prompt + answer)
    return ids, key_mask, prompt_length


def masked_diffusion_loss(model, ids, key_mask, answer_start: int, mask_id: int, eps: float, generator):
    """LLaDA's SFT loss on one batch: random answer positions masked at a per-sequence rate, CE weighted 1/p."""
    batch, total = ids.shape
    t = torch.rand(batch, 1, generator=generator)  # [B, 1]
    p_mask = (1 - eps) * t + eps  # [B, 1]
    is_answer = torch.arange(total) >= answer_start  # [T]
    masked = (torch.rand(batch, total, generator=generator) < p_mask) & is_answer  # [B, T]
    noisy = torch.where(masked, mask_id, ids)  # [B, T]
    logits = model(noisy, key_mask)  # [B, T, V]
    token_loss = F.cross_entropy(logits[masked], ids[masked], reduction="none")  # [M]
    weights = 1.0 / p_mask.expand(batch, total)[masked]  # [M]
    return (token_loss * weights).sum() / (batch * (total - answer_start))


# Not transformers' get_cosine_with_min_lr_schedule_with_warmup: it starts the warm-up at 0 at step 0 where
# this one starts at peak/warmup, and the bundled tiny models were trained on this one (kept reproducible).
def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    answer_length = args.answer_length or task.answer_length
    tokenizer = task_tokenizer(task, args.seed, args.metadata)
    config = LLaDAConfig(d_model=args.hidden, n_heads=args.heads, n_kv_heads=args.heads, n_layers=args.layers,
                         mlp_hidden_size=args.mlp, vocab_size=len(tokenizer),
                         rope_theta=10000.0, max_sequence_length=1024, architectures=["LLaDAModelLM"],
                         **special_ids(tokenizer))
    model = LLaDAModelLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  betas=(0.9, 0.98))
    docs = training_docs(task, args.seed, evaluation_keys(task, args.metadata), args.metadata)
    generator = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 20)
    started = time.perf_counter()
    steps_done = args.stop_after or args.steps
    progress = tqdm(range(steps_done), desc=f"train {args.task}")
    running = None
    for step in progress:
        ids, key_mask, answer_start = encode(task, tokenizer, [next(docs) for _ in range(args.batch_size)],
                                             answer_length)
        loss = masked_diffusion_loss(model, ids, key_mask, answer_start, config.mask_token_id, args.eps, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        progress.set_postfix(loss=f"{running:.3f}")
        if step + 1 in args.save_at:
            save(model, tokenizer, args, args.out / f"step-{step + 1}", step + 1, answer_length,
                 time.perf_counter() - started, running)
    seconds = time.perf_counter() - started
    return save(model, tokenizer, args, args.out, steps_done, answer_length, seconds, running)


def save(model, tokenizer, args, out: Path, steps_done: int, answer_length: int, seconds: float,
         final_loss: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # The backend's sampler defaults for this checkpoint: the whole answer as one block, one token per
    # step, and no cache (a prefix cache would hold prompt keys computed beside a fully masked answer,
    # an approximation that costs a model this small accuracy for little time saved).
    generation_config = {"eos_token_id": tokenizer.convert_tokens_to_ids(LLAMA3.stop_tokens),
                         "pad_token_id": tokenizer.pad_token_id,
                         "sampler_defaults": {"gen_length": answer_length, "steps": answer_length,
                                              "block_length": answer_length, "use_cache": "none"}}
    (out / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    record = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
              if key != "out"}
    record |= {"save_at": sorted(args.save_at), "steps_done": steps_done, "answer_length": answer_length,
               "train_seconds": round(seconds, 1),
               "final_loss_ema": round(final_loss, 4)}
    (out / "training_args.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder to save the model in")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument("--save-at", default="", help="comma-separated steps after which to also save the model, "
                        "in <out>/step-<n>/")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="end the run after this many steps (the learning-rate schedule still spans --steps)")
    parser.add_argument("--metadata", type=json.loads, default={},
                        help="task metadata (JSON) for the generator and the excluded evaluation data, "
                             "e.g. '{\"sudoku_num_blanks\": 12}'; evaluate with the same")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=None, help="MLP width (default 2 x hidden)")
    parser.add_argument("--answer-length", type=int, default=None,
                        help="answer + EOS padding in tokens (default: the task's, 24 sudoku / 64 countdown)")
    parser.add_argument("--eps", type=float, default=1e-3, help="smallest masking rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for a model this small on a shared machine)")
    args = parser.parse_args(argv)
    for key in ("steps", "batch_size", "layers", "hidden", "heads", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)} is invalid; allowed: an integer >= 1")
    args.mlp = args.mlp or 2 * args.hidden
    try:
        args.save_at = {int(step) for step in args.save_at.split(",") if step.strip()}
    except ValueError:
        parser.error(f"--save-at={args.save_at!r} is invalid; allowed: comma-separated step numbers")
    if not all(1 <= step < args.steps for step in args.save_at):
        parser.error(f"--save-at={sorted(args.save_at)} is invalid; allowed: steps in 1..{args.steps - 1}")
    if args.stop_after is not None and not 1 <= args.stop_after <= args.steps:
        parser.error(f"--stop-after={args.stop_after} is invalid; allowed: 1..{args.steps}")
    if not isinstance(args.metadata, dict):
        parser.error(f"--metadata={args.metadata!r} is invalid; allowed: a JSON object")
    if args.hidden % args.heads:
        parser.error(f"--hidden={args.hidden} is invalid; allowed: a multiple of --heads={args.heads}")
    return args


def main(argv=None):
    print(train(parse_args(argv)))


if __name__ == "__main__":
    main()
