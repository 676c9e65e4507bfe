"""The streamed head-plus-entropy (sampling/head.py) against the chunked logits it replaced, on this CPU.

    python bench/head.py --output results/bench-head-cpu.json

Both compute the entropies of M positions' distributions from their hidden states [M, C] and a random head
[V, C]: `streamed` with head.head_stats (the vocabulary a slice at a time), `chunked` with
loop.entropy_in_chunks over fp32 logits of every position (the path before it). Timed alternately, `--repeats`
times each after one warm-up; the ratio is the two medians' (streamed / chunked), in one run. The two results
are checked equal within tests/test_head.py's tolerance before timing.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from lm_eval_infogain.sampling import head
from lm_eval_infogain.sampling.loop import entropy_in_chunks


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description="Streamed head-plus-entropy over chunked logits, CPU time ratio.")
    parser.add_argument("--positions", type=int, default=256, help="M: masked positions of all candidates")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    output_head = head.OutputHead(torch.randn(args.vocab, args.hidden, generator=generator) / args.hidden ** 0.5)
    hidden = torch.randn(args.positions, args.hidden, generator=generator)
    streamed = lambda: head.head_stats(hidden, output_head).entropy  # noqa: E731
    chunked = lambda: entropy_in_chunks(hidden[None], output_head.logits, args.vocab)[0]  # noqa: E731
    torch.testing.assert_close(streamed(), chunked(), rtol=0, atol=1e-5)
    times = {"streamed": [], "chunked": []}
    for _ in range(args.repeats):
        for name, function in (("streamed", streamed), ("chunked", chunked)):
            times[name].append(timed(function))
    medians = {name: statistics.median(values) for name, values in times.items()}
    report = {"command": "python bench/head.py" + (f" --output {args.output}" if args.output else ""),
              "settings": vars(args) | {"output": str(args.output), "vocab_chunk": head.VOCAB_CHUNK},
              "seconds": times, "median_seconds": medians,
              "streamed_over_chunked": round(medians["streamed"] / medians["chunked"], 3),
              "torch": torch.__version__, "machine": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({key: report[key] for key in ("median_seconds", "streamed_over_chunked")}))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
