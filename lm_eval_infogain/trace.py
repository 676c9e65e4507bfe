"""The decode order of one prompt: per generated position, the step that committed it and its entropy then.

    python -m lm_eval_infogain.trace --model_args pretrained=tiny-random-llada,gen_length=32,steps=32,block_length=16 \\
        --prompt "Solve: 1 2 3 4" --compare mode=original --out trace.png
    python -m lm_eval_infogain.trace --samples <run>/samples_sudoku_4x4_<date>.jsonl --doc_id 3 --compare mode=original
    python -m lm_eval_infogain.trace --model_args pretrained=tiny-llada-sudoku --task sudoku_4x4 --doc_id 3 \\
        --compare mode=original

A benchmark item (--samples or --task with --doc_id) is decoded as the backend decodes it in a run: the
task's prompt and gen_kwargs, and the request's own seed; with --samples also the run's model_args and
seed, so the first panel reproduces the logged answer (the JSON says whether it does).

--model_args are the backend's own (the keys `lm_eval --model mdm_infogain --model_args` takes).
--compare overrides sampler keys (mode, use_cache, steps, ...) for a second sampler on the same model,
drawn beside the first. Both decode the prompt with the same --seed.

Writes three files: the PNG (one panel per sampler: x the generated position, y the step that
committed it, colour its entropy in nats at that step; a grey cross marks a position filled by early
stop, EOS after EOS, which no strategy chose), an HTML page beside it (same name, `.html`: each
generated token coloured by its commit step, details on hover) and the raw trace (`.json`). Steps
count the loop's commits over all blocks, from 0 (see CommitTrace in sampling/loop.py).
"""

import argparse
import dataclasses
import html
import json
import sys
import textwrap
from pathlib import Path

from lm_eval_infogain.leaderboard import sampler_label

SECOND_SAMPLER_ONLY = "--compare takes sampler keys only"
LM_EVAL_DEFAULT_SEED = 1234  # lm_eval's --seed default, which seeds torch and so our run seed


def decode_order(lm, sampler, prompt: str, seed: int, chat: bool = False, gen_length: int | None = None) -> dict:
    """Decode `prompt` with `sampler` on the backend `lm`; its tokens, commit steps and entropies.
    gen_length: a request's own (a task's max_gen_toks may shorten the sampler's)."""
    from lm_eval_infogain.sampling.loop import generate

    gen_length = sampler.gen_length if gen_length is None else gen_length
    text = lm.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
    ids = lm.encode_prompt(text, gen_length)
    generated, stats = generate(lm.adapter, [ids], sampler, [seed], gen_length, trace=True)
    row = stats[0]
    return {"sampler": sampler_label({"sampler": dataclasses.asdict(sampler)}),
            "settings": dataclasses.asdict(sampler), "nfe": row["nfe"],
            "cumulative_entropy": row["cumulative_entropy"], "ids": generated[0],
            "tokens": [lm.tokenizer.decode([token]) for token in generated[0]],
            "commit_step": row["commit_step"], "commit_entropy": row["commit_entropy"]}


def settings_line(trace: dict) -> str:
    """What a panel states of its settings: all of them for the first, the differing ones for the other."""
    if "differs" in trace:
        changed = ", ".join(f"{key}={value}" for key, value in trace["differs"].items())
        return f"differs only in: {changed or 'nothing'}"
    keys = ("gen_length", "steps", "block_length", "use_cache", "temperature", "threshold", "candidate_number")
    return ", ".join(f"{key}={trace['settings'][key]}" for key in keys)


def plot(traces: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors, pyplot

    entropies = [e for trace in traces for e in trace["commit_entropy"] if e is not None]
    norm = colors.Normalize(vmin=min(entropies, default=0.0), vmax=max(entropies, default=1.0))
    width = max(6.0, len(traces[0]["tokens"]) * 0.12)
    figure, axes = pyplot.subplots(1, len(traces), figsize=(width * len(traces), 4.5), sharey=True,
                                   squeeze=False, layout="constrained")
    points = None
    for axis, trace in zip(axes.flat, traces):
        chosen = [(i, s, e) for i, (s, e) in enumerate(zip(trace["commit_step"], trace["commit_entropy"]))
                  if e is not None]
        filled = [(i, s) for i, (s, e) in enumerate(zip(trace["commit_step"], trace["commit_entropy"]))
                  if e is None and s >= 0]
        if chosen:
            x, y, c = zip(*chosen)
            points = axis.scatter(x, y, c=c, cmap="viridis", norm=norm, s=28)
        if filled:
            x, y = zip(*filled)
            axis.scatter(x, y, marker="x", color="grey", s=20, label="early stop (EOS fill)")
            axis.legend(fontsize=7, loc="upper left")
        axis.set_title(f"{trace['sampler']}: NFE {trace['nfe']}, cumulative entropy "
                       f"{trace['cumulative_entropy']:.2f}\n{textwrap.fill(settings_line(trace), 70)}", fontsize=9)
        axis.set_xlabel("generated position")
        axis.grid(alpha=0.3)
    axes.flat[0].set_ylabel("commit step")
    if points is not None:
        figure.colorbar(points, ax=list(axes.flat), label="entropy at commit (nats)")
    figure.savefig(path, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def page(traces: list[dict], prompt: str) -> str:
    """One HTML line of tokens per sampler, each token's background from blue (early) to red (late)."""
    parts = ["<!doctype html>", '<meta charset="utf-8">', "<title>decode order</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:1em auto}"
             ".tok{display:inline-block;margin:1px;padding:2px 3px;font-family:monospace;white-space:pre;"
             "border-radius:3px}.step{display:block;font-size:60%;color:#333}</style>",
             "<h1>Decode order</h1>", f"<p>prompt: <code>{html.escape(prompt)}</code></p>",
             "<p>Each generated token, coloured by the step that committed it (blue early, red late); "
             "the number under it is that step. Hover for the entropy at commit.</p>"]
    for trace in traces:
        last = max(max(trace["commit_step"]), 1)
        parts.append(f"<h2>{html.escape(trace['sampler'])}: NFE {trace['nfe']}, cumulative entropy "
                     f"{trace['cumulative_entropy']:.2f}</h2><p>{html.escape(settings_line(trace))}</p><div>")
        for position, (token, step, value) in enumerate(zip(trace["tokens"], trace["commit_step"],
                                                           trace["commit_entropy"])):
            hue = 240 - 240 * step / last
            detail = "early stop (EOS fill)" if value is None else f"entropy {value:.3f}"
            parts.append(f'<span class="tok" style="background:hsl({hue:.0f},70%,80%)" '
                         f'title="position {position}, step {step}, {detail}">{html.escape(token) or "&nbsp;"}'
                         f'<span class="step">{step}</span></span>')
        parts.append("</div>")
    return "\n".join(parts) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lm_eval_infogain.trace",
                                     description="Picture which step commits each generated position.")
    parser.add_argument("--model_args", default="",
                        help="the backend's model_args, e.g. pretrained=...,mode=... (with --samples: added to the "
                             "run's own, which they override)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="the prompt text")
    source.add_argument("--samples", type=Path,
                        help="a samples_<task>_*.jsonl of an lm-eval run (--log_samples): trace --doc_id of it with the "
                             "run's model_args, gen_kwargs and request seed, read from the results file beside it")
    source.add_argument("--task", help="an lm-eval task: trace its document --doc_id as the task builds the prompt")
    parser.add_argument("--doc_id", type=int, help="the document of --samples or --task")
    parser.add_argument("--metadata", default="{}", help="--task's lm-eval --metadata JSON (task variants)")
    parser.add_argument("--compare", help="sampler keys overriding --model_args for a second panel, e.g. mode=original")
    parser.add_argument("--apply_chat_template", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--seed", type=int, default=0, help="seed of both decodes of --prompt (0)")
    parser.add_argument("--out", type=Path, default=Path("trace.png"), help="PNG path; .html and .json go beside it")
    args = parser.parse_args(argv)
    if (args.samples or args.task) and args.doc_id is None:
        parser.error("--samples and --task need --doc_id")
    if not (args.samples or args.model_args):
        parser.error("--model_args is needed unless --samples gives the run's own")
    return args


def logged_request(samples: Path, doc_id: int) -> dict:
    """One document of an lm-eval samples file: its context and gen_kwargs as the model got them, the
    logged answer, and the run's model_args and seed from the results file written beside it."""
    from lm_eval.utils import get_file_datetime, get_file_task_name

    def read_json(path: Path, what: str):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{what} {path} cannot be read: {error}") from None

    lines = [line for line in (samples.read_text(encoding="utf-8").splitlines() if samples.is_file() else [])
             if line.strip()]
    found = [sample for sample in map(lambda line: samples_line(samples, line), lines) if sample.get("doc_id") == doc_id]
    if not found:
        raise ValueError(f"--doc_id {doc_id} is not in {samples}" if lines else f"--samples {samples} has no samples")
    sample = found[0]
    stamp = get_file_datetime(samples.name)
    results = read_json(samples.with_name(f"results_{stamp}.json"), "the run's results file")
    config = results.get("config", {})
    model_args = config.get("model_args") or {}
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        model_args = simple_parse_args_string(model_args)
    # the run's decode-stats file and device are its own: a trace neither appends to it nor needs that device
    model_args = {key: value for key, value in model_args.items() if key not in ("decode_stats", "device")}
    if config.get("seed") is not None:  # the seed the run drew (lm-eval's --seed), so the request seed matches
        model_args.setdefault("seed", config["seed"])
    request = sample["arguments"]["gen_args_0"]
    return {"task": get_file_task_name(samples.name), "doc_id": doc_id, "context": request["arg_0"],
            "gen_kwargs": request["arg_1"], "logged_answer": sample["resps"][0][0], "model_args": model_args}


def samples_line(samples: Path, line: str) -> dict:
    """One line of an lm-eval samples file (one JSON object a line), or an error naming the file."""
    try:
        sample = json.loads(line)
    except json.JSONDecodeError:
        sample = None
    if not isinstance(sample, dict):
        raise ValueError(f"--samples {samples} is not an lm-eval samples file (samples_<task>_<date>.jsonl of "
                         f"--log_samples, one JSON object a line): it holds {line[:40]!r}")
    return sample


def task_request(task_name: str, doc_id: int, metadata: dict, lm, chat: bool) -> dict:
    """Document doc_id of an lm-eval task, its prompt built as `lm_eval --tasks` builds it."""
    import difflib

    from lm_eval.tasks import TaskManager

    manager = TaskManager(metadata=metadata)
    if task_name not in manager.all_tasks:
        close = difflib.get_close_matches(task_name, manager.all_tasks, n=1)
        raise ValueError(f"--task {task_name!r} is not a task lm-eval knows"
                         + (f": did you mean {close[0]}?" if close else " (lm_eval ls tasks lists them)"))
    task = manager.load(task_name)["tasks"].get(task_name)
    if task is None:
        raise ValueError(f"--task {task_name} is not a single task (a group?); name one of its tasks")
    # limit, not samples=[doc_id]: lm-eval numbers the documents of `samples` from 0 again
    task.build_all_requests(limit=doc_id + 1, apply_chat_template=chat,
                            chat_template=lm.apply_chat_template if chat else None, tokenizer_name=lm.tokenizer_name)
    instances = [instance for instance in task.instances if instance.doc_id == doc_id]
    if not instances or instances[0].request_type != "generate_until":
        raise ValueError(f"--task {task_name} --doc_id {doc_id}: no generation request (a multiple-choice task, or "
                         "no such document)")
    context, gen_kwargs = instances[0].args
    return {"task": task_name, "doc_id": doc_id, "context": context, "gen_kwargs": gen_kwargs}


def run(args: argparse.Namespace) -> tuple[str, list[dict], dict | None]:
    """(prompt, one trace per sampler, the benchmark request traced or None)."""
    from lm_eval.utils import simple_parse_args_string

    from lm_eval_infogain.harness import SAMPLER_KEYS, MDMInfoGainLM

    model_args = simple_parse_args_string(args.model_args)
    request = logged_request(args.samples, args.doc_id) if args.samples else None
    if request is not None:
        model_args = request.pop("model_args") | model_args
    elif args.task:
        model_args.setdefault("seed", LM_EVAL_DEFAULT_SEED)  # the request seeds of a plain `lm_eval --tasks` run
    overrides = simple_parse_args_string(args.compare) if args.compare else None
    if overrides is not None:
        others = sorted(set(overrides) - set(SAMPLER_KEYS))
        if others:
            raise ValueError(f"{SECOND_SAMPLER_ONLY} ({', '.join(SAMPLER_KEYS)}), got {', '.join(others)}")
    lm = MDMInfoGainLM(**model_args)
    if args.task:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as error:
            raise ValueError(f"--metadata is not JSON: {error}") from None
        request = task_request(args.task, args.doc_id, metadata, lm, args.apply_chat_template)
    samplers = [lm.sampler]
    if overrides is not None:
        samplers.append(compared_sampler(lm, overrides))
    if request is None:
        traces = [decode_order(lm, sampler, args.prompt, args.seed, args.apply_chat_template) for sampler in samplers]
        prompt = args.prompt
    else:
        traces = [request_order(lm, sampler, request) for sampler in samplers]
        prompt = request["context"]
        request["answer"] = traces[0]["answer"]
        if "logged_answer" in request:
            request["reproduces_logged_answer"] = request["answer"] == request["logged_answer"]
    if len(traces) == 2:
        traces[1]["differs"] = differing_settings(traces[0]["settings"], traces[1]["settings"])
    return prompt, traces, request


def request_order(lm, sampler, request: dict) -> dict:
    """decode_order of a benchmark request as the backend decodes it: the task's gen_kwargs (stop strings,
    max_gen_toks, temperature) and the request's own seed (the run's seed, task, document, index 0)."""
    from types import SimpleNamespace

    from lm_eval_infogain.request_planning import request_seed

    until, gen_length, request_config = lm.request_sampler(request["gen_kwargs"])
    # the task's gen_kwargs win over this panel's sampler for what they set, as in a run
    sampler = dataclasses.replace(sampler, temperature=request_config.temperature, top_k=request_config.top_k,
                                  top_p=request_config.top_p)
    instance = SimpleNamespace(task_name=request["task"], doc_id=request["doc_id"], idx=0,
                               args=(request["context"], request["gen_kwargs"]))
    trace = decode_order(lm, sampler, request["context"], request_seed(lm.seed, instance, 0), gen_length=gen_length)
    return trace | {"answer": lm.decode_answer(trace["ids"], until)}


def compared_sampler(lm, overrides: dict):
    """The first panel's settings as they ran (model_args over the checkpoint's own defaults) with only
    the compared keys changed: a setting taken from the checkpoint stays, whatever the override says."""
    from lm_eval_infogain.harness import SAMPLER_KEYS, sampler_config
    from lm_eval_infogain.sampling.config import fit_to_model

    second = sampler_config(dataclasses.asdict(lm.sampler) | overrides)
    return fit_to_model(second, set(SAMPLER_KEYS), lm.adapter.spec)


def differing_settings(first: dict, second: dict) -> dict:
    """The settings of the second panel that are not those of the first, e.g. {"mode": "original"}."""
    return {key: value for key, value in second.items() if first.get(key) != value}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        prompt, traces, request = run(args)
    except ValueError as error:
        sys.exit(f"trace: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(traces, args.out)
    args.out.with_suffix(".html").write_text(page(traces, prompt), encoding="utf-8")
    record = {"prompt": prompt, "seed": args.seed if request is None else None, "request": request, "traces": traces}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}, {args.out.with_suffix('.html')}, {args.out.with_suffix('.json')}")
    if request is not None and "reproduces_logged_answer" in request:
        print(f"the first panel's answer {'equals' if request['reproduces_logged_answer'] else 'DIFFERS FROM'} "
              f"the answer logged in {args.samples}")


if __name__ == "__main__":
    main()
