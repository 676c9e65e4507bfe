"""The decode order of one prompt: per generated position, the step that committed it and its entropy then.

    python -m lm_eval_infogain.trace --model_args pretrained=tiny-random-llada,gen_length=32,steps=32,block_length=16 \\
        --prompt "Solve: 1 2 3 4" --compare mode=original --out trace.png

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
from pathlib import Path

from lm_eval_infogain.leaderboard import sampler_label

SECOND_SAMPLER_ONLY = "--compare takes sampler keys only"


def decode_order(lm, sampler, prompt: str, seed: int, chat: bool = False) -> dict:
    """Decode `prompt` with `sampler` on the backend `lm`; its tokens, commit steps and entropies."""
    from lm_eval_infogain.sampling.loop import generate

    text = lm.apply_chat_template([{"role": "user", "content": prompt}]) if chat else prompt
    ids = lm.encode_prompt(text, sampler.gen_length)
    generated, stats = generate(lm.adapter, [ids], sampler, [seed], trace=True)
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
                       f"{trace['cumulative_entropy']:.2f}\n{settings_line(trace)}", fontsize=9)
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
    parser.add_argument("--model_args", required=True, help="the backend's model_args, e.g. pretrained=...,mode=...")
    parser.add_argument("--prompt", required=True, help="the prompt text")
    parser.add_argument("--compare", help="sampler keys overriding --model_args for a second panel, e.g. mode=original")
    parser.add_argument("--apply_chat_template", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--seed", type=int, default=0, help="seed of both decodes (0)")
    parser.add_argument("--out", type=Path, default=Path("trace.png"), help="PNG path; .html and .json go beside it")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    from lm_eval.utils import simple_parse_args_string

    from lm_eval_infogain.harness import SAMPLER_KEYS, MDMInfoGainLM

    model_args = simple_parse_args_string(args.model_args)
    overrides = simple_parse_args_string(args.compare) if args.compare else None
    if overrides is not None:
        others = sorted(set(overrides) - set(SAMPLER_KEYS))
        if others:
            raise ValueError(f"{SECOND_SAMPLER_ONLY} ({', '.join(SAMPLER_KEYS)}), got {', '.join(others)}")
    lm = MDMInfoGainLM(**model_args)
    samplers = [lm.sampler]
    if overrides is not None:
        samplers.append(compared_sampler(lm, overrides))
    traces = [decode_order(lm, sampler, args.prompt, args.seed, args.apply_chat_template) for sampler in samplers]
    if len(traces) == 2:
        traces[1]["differs"] = differing_settings(traces[0]["settings"], traces[1]["settings"])
    return traces


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
        traces = run(args)
    except ValueError as error:
        sys.exit(f"trace: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(traces, args.out)
    args.out.with_suffix(".html").write_text(page(traces, args.prompt), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"prompt": args.prompt, "seed": args.seed,
                                                         "traces": traces}, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}, {args.out.with_suffix('.html')}, {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
